import Foundation
import XCTest
import KiriTensor
@testable import KiriModels

/// A single-file checkpoint and the diffusers folder it was converted from give the same image: the pipeline
/// loaded from the single file (keys mapped, configs inferred, as `kiri.models.load` does) against the folder's
/// networks built from their own files, on the same latents, timesteps and context, through a few Euler steps and
/// the VAE's decode. Bit for bit: the weights are the same numbers and the networks the same code.
final class SingleFileImageTests: XCTestCase {
    func testSingleFileAndFolderGiveTheSameImage() throws {
        for flavour in ["sd1", "sd2"] {
            let single = "\(SingleFileTests.fixtures)/\(flavour).safetensors", folder = "\(SingleFileTests.fixtures)/\(flavour)/diffusers"
            // Any tokenizer will do: the test gives the text encoder token ids itself.
            let tokenizerFolder = URL(fileURLWithPath: SingleFileTests.fixtures).deletingLastPathComponent()
                .appendingPathComponent("tokenizer/small").path
            let pipeline = try DiffusionPipeline(files: PipelineFiles.locate(single)) { _ in try CLIPTokenizer(folder: tokenizerFolder) }
            let unet = try UNet(config: UNetConfig(path: folder + "/unet/config.json"),
                                weights: SafetensorsFile(path: folder + "/unet/diffusion_pytorch_model.safetensors"))
            let vae = try AutoencoderKL(config: AutoencoderKLConfig(path: folder + "/vae/config.json"),
                                        weights: SafetensorsFile(path: folder + "/vae/diffusion_pytorch_model.safetensors"))
            let textEncoder = try CLIPTextModel(config: CLIPTextConfig(path: folder + "/text_encoder/config.json"),
                                                weights: SafetensorsFile(path: folder + "/text_encoder/model.safetensors"))
            XCTAssertEqual(pipeline.family?.rawValue, flavour)
            let tokens = [[0, 5, 9, 2] + Array(repeating: 1, count: 12)]
            let context = try textEncoder.forward(tokens).hiddenStates
            XCTAssertEqual(try pipeline.textEncoder!.forward(tokens).hiddenStates.values, context.values, flavour)
            /// Euler steps on the network's eps output: x ← x + (σ_next − σ)·eps at a few timesteps.
            func image(_ unet: UNet, _ vae: AutoencoderKL) throws -> [Float] {
                let x = try Tensor.randn([1, 4, 8, 8], seed: 7)
                for (t, step) in [(900, -0.5), (500, -0.3), (100, -0.1)] as [(Float, Float)] {
                    let eps = try unet.forward(x, timesteps: [t], context: context)
                    for i in 0..<x.count { x.data[i] += step * eps.data[i] }
                }
                return try vae.decode(x).values
            }
            let fromFile = try image(pipeline.unet, pipeline.vae!), fromFolder = try image(unet, vae)
            XCTAssertEqual(fromFile, fromFolder, "\(flavour): the single file's image differs from the folder's")
            XCTAssertFalse(fromFile.contains { !$0.isFinite })
        }
    }
}
