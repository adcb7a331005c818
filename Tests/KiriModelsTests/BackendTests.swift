import Foundation
import XCTest
import KiriTensor
@testable import KiriModels

/// CPUBackend's kernels against ReferenceBackend's plain loops, whole networks at a time, on every instruction set
/// this CPU has: the tiny SD pipeline's UNet, VAE and text encoder, with the weights as stored and quantised to
/// q8_0 (both backends read the same stored weights). Each parity test also runs on the reference backend against
/// diffusers and transformers themselves (UNetParityTests, VAEParityTests, CLIPTextParityTests).
final class BackendTests: XCTestCase {
    static let pipeline = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/models/pipeline/tiny-sd").path

    func path(_ relative: String) -> String { (Self.pipeline as NSString).appendingPathComponent(relative) }

    /// Deterministic values in [-scale, scale).
    func random(_ shape: [Int], seed: UInt64, scale: Float = 1) throws -> Tensor {
        var state = seed &* 6364136223846793005 &+ 1442695040888963407
        return try Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
        })
    }

    /// The outputs of the three networks built on `backend` from weights in `format` (nil: as stored).
    func outputs(_ backend: any Backend, format: WeightFormat?) throws -> [(String, Tensor)] {
        func source(_ file: String) throws -> any TensorSource {
            let stored = try SafetensorsFile(path: path(file))
            return format.map { ReformattedSource(stored, format: $0) } ?? stored
        }
        return try onBackend(backend) {
            let unet = try UNet(config: try UNetConfig(path: path("unet/config.json")),
                                weights: try source("unet/diffusion_pytorch_model.safetensors"))
            let vae = try AutoencoderKL(config: try AutoencoderKLConfig(path: path("vae/config.json")),
                                        weights: try source("vae/diffusion_pytorch_model.safetensors"))
            let clip = try CLIPTextModel(config: try CLIPTextConfig(path: path("text_encoder/config.json")),
                                         weights: try source("text_encoder/model.safetensors"))
            // Odd tile counts and a context shorter than the 77 positions.
            let denoised = try unet.forward(try random([2, 4, 10, 14], seed: 1), timesteps: [999, 10],
                                            context: try random([2, 7, 32], seed: 2))
            let decoded = try vae.decode(try random([1, 4, 6, 10], seed: 3, scale: 4))
            let encoded = try vae.encode(try random([1, 3, 48, 40], seed: 4))
            let text = try clip.forward([[5, 320, 1125, 2513, 2, 0, 7], [1, 2, 3, 4, 5, 6, 7]], pooled: true)
            return [("UNet", denoised), ("VAE decode", decoded), ("VAE encode", encoded), ("CLIP", text.hiddenStates),
                    ("CLIP pooled", text.pooled!)]
        }
    }

    func testCPUMatchesTheReferenceOnEveryInstructionSet() throws {
        let active = KernelISA.active
        defer { try? KernelISA.select(active) }
        for format in [nil, WeightFormat.q8_0] {
            let reference = try outputs(ReferenceBackend(), format: format)
            for isa in KernelISA.available {
                try KernelISA.select(isa)
                for ((name, actual), (_, expected)) in zip(try outputs(CPUBackend(), format: format), reference) {
                    XCTAssertEqual(actual.shape, expected.shape, name)
                    let error = relativeError(actual.values, expected.values)
                    print("\(name), \(format?.rawValue ?? "stored") weights, \(isa): max |Δ| / max |reference| = \(error)")
                    XCTAssertLessThanOrEqual(error, 1e-5, "\(name), \(format?.rawValue ?? "stored") weights, \(isa)")
                }
            }
        }
    }
}
