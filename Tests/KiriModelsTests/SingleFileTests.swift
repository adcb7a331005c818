import Foundation
import XCTest
import KiriTensor
@testable import KiriModels

/// Single-file checkpoints (Tests/Fixtures/models/singlefile, made by make_single_file.py and checked there with
/// diffusers' from_single_file): each mapped component equals the diffusers folder it came from, tensor for tensor
/// and bit for bit, and the inferred configs equal the folder's.
final class SingleFileTests: ModelFileTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/models/singlefile").path

    func fixture(_ flavour: String) -> (file: String, folder: String) {
        ("\(Self.fixtures)/\(flavour).safetensors", "\(Self.fixtures)/\(flavour)/diffusers")
    }

    // MARK: Tensors

    /// Every key of the folder's component is in the map with the same shape and bits, and the map has no other.
    func assertSameTensors(_ map: TensorMap, _ path: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let folder = try SafetensorsFile(path: path)
        XCTAssertEqual(Set(map.names), Set(folder.names), "keys differ from \(path)", file: file, line: line)
        var elements = 0
        for name in folder.names {
            let expected = try folder.tensor(name)
            let actual = try map.requireTensor(name, shape: expected.shape)
            let same = (0..<expected.count).allSatisfy { actual.data[$0].bitPattern == expected.data[$0].bitPattern }
            XCTAssertTrue(same, "'\(name)' differs from \(path)", file: file, line: line)
            elements += expected.count
        }
        print("\((path as NSString).lastPathComponent) in \(((path as NSString).deletingLastPathComponent as NSString).lastPathComponent): \(folder.names.count) tensors, \(elements) elements identical")
    }

    func testSD1ComponentsEqualTheFolder() throws {
        let (path, folder) = fixture("sd1")
        let checkpoint = try SingleFileCheckpoint(path: path)
        try assertSameTensors(checkpoint.unet, "\(folder)/unet/diffusion_pytorch_model.safetensors")
        try assertSameTensors(checkpoint.vae, "\(folder)/vae/diffusion_pytorch_model.safetensors")
        try assertSameTensors(checkpoint.textEncoder, "\(folder)/text_encoder/model.safetensors")
    }

    func testSD2ComponentsEqualTheFolder() throws {
        let (path, folder) = fixture("sd2")
        let checkpoint = try SingleFileCheckpoint(path: path)
        try assertSameTensors(checkpoint.unet, "\(folder)/unet/diffusion_pytorch_model.safetensors")
        try assertSameTensors(checkpoint.vae, "\(folder)/vae/diffusion_pytorch_model.safetensors")
        try assertSameTensors(checkpoint.textEncoder, "\(folder)/text_encoder/model.safetensors")
        // q, k and v are row ranges of the fused in_proj, read in place.
        let query = try XCTUnwrap(checkpoint.textEncoder.entry("text_model.encoder.layers.1.self_attn.v_proj.weight"))
        XCTAssertEqual(query.source, "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight")
        XCTAssertEqual(query.elements, 2 * 32 * 32..<3 * 32 * 32)
    }

    /// Older SD 1.x files keep CLIP's modules directly under `cond_stage_model.transformer.`.
    func testSD1WithoutTextModelLevel() throws {
        let (path, folder) = fixture("sd1")
        let old = try rewrite(path) { name, tensor in
            [(name.replacingOccurrences(of: "cond_stage_model.transformer.text_model.", with: "cond_stage_model.transformer."), tensor)]
        }
        let checkpoint = try SingleFileCheckpoint(path: old)
        XCTAssertEqual(checkpoint.family, .sd1)
        try assertSameTensors(checkpoint.textEncoder, "\(folder)/text_encoder/model.safetensors")
    }

    /// A transformers file saved with its `text_model.` wrapper, seen without it (transformers 5 saves it flat).
    func testPrefixView() throws {
        let file = try SafetensorsFile(path: "\(fixture("sd1").folder)/text_encoder/model.safetensors")
        let flat = TensorMap(file, removingPrefix: "text_model.")
        XCTAssertEqual(flat.names.count, file.names.count)
        XCTAssertEqual(flat.shape("embeddings.token_embedding.weight"), [64, 32])
        XCTAssertNil(flat.shape("text_model.embeddings.token_embedding.weight"))
        let (mapped, original) = (try flat.tensor("final_layer_norm.bias"), try file.tensor("text_model.final_layer_norm.bias"))
        XCTAssertEqual(Array(UnsafeBufferPointer(start: mapped.data, count: mapped.count)),
                       Array(UnsafeBufferPointer(start: original.data, count: original.count)))
    }

    /// The UNet network loads from the map, every tensor with the shape the inferred config implies.
    func testUNetLoadsFromTheMap() throws {
        for flavour in ["sd1", "sd2"] {
            let (path, folder) = fixture(flavour)
            let checkpoint = try SingleFileCheckpoint(path: path)
            let mapped = try UNet(config: checkpoint.unetConfig, weights: checkpoint.unet)
            let original = try UNet(config: try UNetConfig(path: "\(folder)/unet/config.json"),
                                    weights: try SafetensorsFile(path: "\(folder)/unet/diffusion_pytorch_model.safetensors"))
            XCTAssertEqual(mapped.parameterCount, original.parameterCount, flavour)
            print("\(flavour) UNet from the single file: \(mapped.parameterCount) parameters")
        }
    }

    // MARK: Configs and detection

    /// The folder's value of each field equals the inferred one (numbers as numbers).
    func assertSameFields(_ inferred: String, _ path: String, _ fields: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let expected = try StrictJSONParser.parse(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
        let actual = try StrictJSONParser.parse(Array(inferred.utf8))
        for field in fields {
            let (left, right) = (actual[field], expected[field])
            if let left = left?.double, let right = right?.double {
                XCTAssertEqual(left, right, "\(field) in \(path)", file: file, line: line)
            } else {
                XCTAssertEqual(left, right, "\(field) in \(path)", file: file, line: line)
            }
        }
    }

    static let vaeFields = ["_class_name", "in_channels", "out_channels", "latent_channels", "block_out_channels",
                            "layers_per_block", "down_block_types", "up_block_types", "norm_num_groups", "act_fn",
                            "scaling_factor", "mid_block_add_attention", "use_quant_conv", "use_post_quant_conv"]
    static let textFields = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                             "max_position_embeddings", "vocab_size", "hidden_act", "layer_norm_eps", "bos_token_id",
                             "eos_token_id", "pad_token_id"]

    func testConfigsEqualTheFolders() throws {
        for (flavour, family, prediction) in [("sd1", SingleFileCheckpoint.Family.sd1, SchedulerConfig.PredictionType.epsilon),
                                               ("sd2", .sd2, .vPrediction)] {
            let (path, folder) = fixture(flavour)
            let checkpoint = try SingleFileCheckpoint(path: path)
            XCTAssertEqual(checkpoint.family, family)
            XCTAssertEqual(checkpoint.predictionType, prediction)
            XCTAssertEqual(checkpoint.unetConfig, try UNetConfig(path: "\(folder)/unet/config.json"), flavour)
            XCTAssertEqual(checkpoint.schedulerConfig, try SchedulerConfig(path: "\(folder)/scheduler/scheduler_config.json"), flavour)
            try assertSameFields(checkpoint.vaeConfigText, "\(folder)/vae/config.json", Self.vaeFields)
            try assertSameFields(checkpoint.textEncoderConfigText, "\(folder)/text_encoder/config.json", Self.textFields)
        }
    }

    func testInpaintingUNetHasNineInputChannelsAndPredictsEpsilon() throws {
        for flavour in ["sd1", "sd2"] {
            let inpainting = try rewrite(fixture(flavour).file) { name, tensor in
                guard name == "model.diffusion_model.input_blocks.0.0.weight" else { return [(name, tensor)] }
                return [(name, try Tensor(shape: [32, 9, 3, 3], values: Array(repeating: 0.1, count: 32 * 9 * 9)))]
            }
            let checkpoint = try SingleFileCheckpoint(path: inpainting)
            XCTAssertEqual(checkpoint.unetConfig.inChannels, 9)
            // ComfyUI: SD 2.x inpainting UNets are not v-prediction, whatever the bias.
            XCTAssertEqual(checkpoint.predictionType, .epsilon, flavour)
        }
    }

    func testSD2PredictionFollowsComfyUIsTest() throws {
        let key = "model.diffusion_model.output_blocks.1.1.transformer_blocks.0.norm1.bias"
        let quiet = try rewrite(fixture("sd2").file) { name, tensor in
            guard name == key else { return [(name, tensor)] }
            return [(name, try Tensor(shape: tensor.shape, values: (0..<tensor.count).map { $0 % 2 == 0 ? 0.05 : -0.05 }))]
        }
        XCTAssertEqual(try SingleFileCheckpoint(path: quiet).predictionType, .epsilon)
        let marked = try rewrite(quiet) { name, tensor in
            name == key ? [(name, tensor), ("v_pred", try Tensor(shape: [], values: [0]))] : [(name, tensor)]
        }
        XCTAssertEqual(try SingleFileCheckpoint(path: marked).predictionType, .vPrediction)
        XCTAssertEqual(try SingleFileCheckpoint(path: fixture("sd1").file).predictionType, .epsilon)
        let values: [Float] = [-0.15, -0.05, 0.05, 0.15]
        values.withUnsafeBufferPointer { XCTAssertEqual(SingleFileCheckpoint.standardDeviation($0), 0.0125.squareRoot(), accuracy: 1e-7) }
    }

    // MARK: Refusals

    func testMissingKeyIsNamed() throws {
        for key in ["model.diffusion_model.out.2.weight", "first_stage_model.decoder.conv_in.weight",
                    "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"] {
            let path = try rewrite(fixture("sd1").file) { name, tensor in name == key ? [] : [(name, tensor)] }
            assertModelFileError(path, ["missing tensor '\(key)'"]) { try SingleFileCheckpoint(path: path) }
        }
    }

    func testOtherFamiliesAreNamed() throws {
        let sdxl = "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_proj.bias"
        let withSDXL = try rewrite(fixture("sd1").file) { name, tensor in
            name == "betas" ? [(name, tensor), (sdxl, tensor)] : [(name, tensor)]
        }
        assertModelFileError(withSDXL, ["unsupported model family", sdxl]) { try SingleFileCheckpoint(path: withSDXL) }

        let noText = try rewrite(fixture("sd1").file) { name, tensor in name.hasPrefix("cond_stage_model.") ? [] : [(name, tensor)] }
        let message = assertModelFileError(noText, ["unsupported model family", "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "width of 32"]) {
            try SingleFileCheckpoint(path: noText)
        }
        print(message)

        let vaeOnly = try rewrite(fixture("sd1").file) { name, tensor in name.hasPrefix("first_stage_model.") ? [(name, tensor)] : [] }
        assertModelFileError(vaeOnly, ["not a Stable Diffusion single-file checkpoint", "'model.diffusion_model.*'"]) {
            try SingleFileCheckpoint(path: vaeOnly)
        }
    }

    func testTruncatedFileAndPickleAreRefused() throws {
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: fixture("sd1").file)))
        let truncated = try write(Array(bytes.prefix(bytes.count / 2)), "truncated.safetensors")
        assertModelFileError(truncated, ["out of bounds"]) { try SingleFileCheckpoint(path: truncated) }
        let pickle = try write([0x80, 0x02], "v1-5-pruned-emaonly.ckpt")
        assertModelFileError(pickle, ["PyTorch pickles", "v1-5-pruned-emaonly.safetensors"]) { try SingleFileCheckpoint(path: pickle) }
    }
}
