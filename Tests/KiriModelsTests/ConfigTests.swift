import Foundation
import XCTest
@testable import KiriModels

/// diffusers configs from Tests/Fixtures/models, and security case 33: malformed configs name the field.
final class ConfigTests: ModelFileTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/models").path

    func fixture(_ name: String) -> String { (Self.fixtures as NSString).appendingPathComponent(name) }

    // MARK: Real configs

    func testStableDiffusion15UNetConfig() throws {
        let config = try UNetConfig(path: fixture("sd15_unet_config.json"))
        XCTAssertEqual(config.architecture, .unet2DCondition)
        XCTAssertEqual(config.sampleSize, [64, 64])
        XCTAssertEqual(config.inChannels, 4)
        XCTAssertEqual(config.outChannels, 4)
        XCTAssertEqual(config.blockOutChannels, [320, 640, 1280, 1280])
        XCTAssertEqual(config.downBlockTypes, [.crossAttentionDownBlock2D, .crossAttentionDownBlock2D, .crossAttentionDownBlock2D, .downBlock2D])
        XCTAssertEqual(config.upBlockTypes, [.upBlock2D, .crossAttentionUpBlock2D, .crossAttentionUpBlock2D, .crossAttentionUpBlock2D])
        // Absent from a diffusers 0.6 save, so the class default applies.
        XCTAssertEqual(config.midBlockType, .midBlock2DCrossAttention)
        XCTAssertEqual(config.layersPerBlock, [2, 2, 2, 2])
        XCTAssertEqual(config.attentionHeadDim, [8, 8, 8, 8])
        XCTAssertEqual(config.crossAttentionDim, [768, 768, 768, 768])
        XCTAssertEqual(config.transformerLayersPerBlock, [1, 1, 1, 1])
        XCTAssertEqual(config.normNumGroups, 32)
        XCTAssertEqual(config.normEps, 1e-5)
        XCTAssertTrue(config.flipSinToCos)
        XCTAssertEqual(config.freqShift, 0)
        XCTAssertEqual(config.activation, .silu)
        XCTAssertEqual(config.downsamplePadding, 1)
        XCTAssertNil(config.numClassEmbeds)
        XCTAssertFalse(config.useLinearProjection)
    }

    func testStableDiffusion15SchedulerConfig() throws {
        let scheduler = try SchedulerConfig(path: fixture("sd15_scheduler_config.json"))
        XCTAssertEqual(scheduler.className, "PNDMScheduler")
        XCTAssertEqual(scheduler.numTrainTimesteps, 1000)
        XCTAssertEqual(scheduler.betaStart, 0.00085)
        XCTAssertEqual(scheduler.betaEnd, 0.012)
        XCTAssertEqual(scheduler.betaSchedule, .scaledLinear)
        XCTAssertNil(scheduler.trainedBetas)
        XCTAssertEqual(scheduler.predictionType, .epsilon)
        XCTAssertEqual(scheduler.timestepSpacing, .leading)
        XCTAssertEqual(scheduler.stepsOffset, 1)
    }

    func testStableDiffusion21UNetConfig() throws {
        let config = try UNetConfig(path: fixture("sd21_unet_config.json"))
        XCTAssertEqual(config.sampleSize, [96, 96])
        XCTAssertEqual(config.attentionHeadDim, [5, 10, 20, 20], "heads, each of 64 channels")
        XCTAssertEqual(config.crossAttentionDim, [1024, 1024, 1024, 1024])
        XCTAssertTrue(config.useLinearProjection)
        XCTAssertTrue(config.upcastAttention)
        XCTAssertEqual(config.onlyCrossAttention, [false, false, false, false])
        XCTAssertEqual(config.midBlockType, .midBlock2DCrossAttention)
    }

    /// diffusers' counts, from `with torch.device("meta"): UNet2DConditionModel(**config)` (diffusers 0.42.1).
    func testFullSizeParameterCountsMatchDiffusers() throws {
        XCTAssertEqual(try UNetConfig(path: fixture("sd15_unet_config.json")).parameterCount, 859_520_964)
        XCTAssertEqual(try UNetConfig(path: fixture("sd21_unet_config.json")).parameterCount, 865_910_724)
    }

    func testStableDiffusion21SchedulerConfig() throws {
        let scheduler = try SchedulerConfig(path: fixture("sd21_scheduler_config.json"))
        XCTAssertEqual(scheduler.className, "DDIMScheduler")
        XCTAssertEqual(scheduler.predictionType, .vPrediction)
        XCTAssertEqual(scheduler.betaSchedule, .scaledLinear)
        XCTAssertEqual(scheduler.timestepSpacing, .leading)
        XCTAssertEqual(scheduler.stepsOffset, 1)
    }

    func testPerBlockOnlyCrossAttentionAndTransformerLayers() throws {
        let path = try editedConfig {
            $0["only_cross_attention"] = [true, false, true, false]
            $0["transformer_layers_per_block"] = [1, 2, 10, 1]
            $0["mid_block_only_cross_attention"] = true
        }
        let config = try UNetConfig(path: path)
        XCTAssertEqual(config.onlyCrossAttention, [true, false, true, false])
        XCTAssertEqual(config.transformerLayersPerBlock, [1, 2, 10, 1])
        let single = try UNetConfig(path: editedConfig { $0["only_cross_attention"] = true })
        XCTAssertEqual(single.onlyCrossAttention, [true, true, true, true])
    }

    func testPixelSpaceUNet2DConfig() throws {
        let config = try UNetConfig(path: fixture("ddpm_cifar10_unet_config.json"))
        XCTAssertEqual(config.architecture, .unet2D)
        XCTAssertNil(config.attentionHeadDim, "null: one head over all channels")
        XCTAssertEqual(config.midBlockType, .midBlock2D)
        XCTAssertFalse(config.flipSinToCos)
        XCTAssertEqual(config.freqShift, 1)
        XCTAssertEqual(config.downsamplePadding, 0)
        XCTAssertEqual(config.normEps, 1e-6)
        XCTAssertNil(config.crossAttentionDim)
    }

    func testBenchmarkReferenceConfigWithEveryField() throws {
        let config = try UNetConfig(path: fixture("reference_unet2d_config.json"))
        XCTAssertEqual(config.inChannels, 1)
        XCTAssertEqual(config.numClassEmbeds, 11)
        XCTAssertEqual(config.blockOutChannels, [64, 128, 256])
        XCTAssertEqual(config.downBlockTypes, [.downBlock2D, .attentionDownBlock2D, .attentionDownBlock2D])
        XCTAssertEqual(config.upBlockTypes, [.attentionUpBlock2D, .attentionUpBlock2D, .upBlock2D])
        XCTAssertEqual(config.attentionHeadDim, [8, 8, 8])
        XCTAssertEqual(config.downsampleType, .conv)
        XCTAssertTrue(config.addAttention)
        XCTAssertNil(config.attentionNormNumGroups)
    }

    func testConditionalConfigWithEveryFieldAndListForms() throws {
        let config = try UNetConfig(path: fixture("tiny_unet2d_condition_config.json"))
        XCTAssertEqual(config.sampleSize, [16, 24])
        XCTAssertEqual(config.attentionHeadDim, [2, 4])
        XCTAssertEqual(config.layersPerBlock, [1, 2])
        XCTAssertEqual(config.crossAttentionDim, [16, 16])
        XCTAssertTrue(config.useLinearProjection)
    }

    func testSchedulerDefaultsFollowTheSchedulerClass() throws {
        let euler = try SchedulerConfig(json: .object([JSONMember(key: "_class_name", value: .string("EulerDiscreteScheduler"))]), path: "s.json")
        XCTAssertEqual(euler.timestepSpacing, .linspace)
        let ddim = try SchedulerConfig(json: .object([JSONMember(key: "_class_name", value: .string("DDIMScheduler"))]), path: "s.json")
        XCTAssertEqual(ddim.timestepSpacing, .leading)
        XCTAssertEqual(ddim, SchedulerConfig().with { $0.className = "DDIMScheduler" })
    }

    // MARK: Case 33: malformed config.json

    /// The SD 1.5 config with `edit` applied, written to a temporary config.json.
    func editedConfig(_ edit: (inout [String: Any]) -> Void) throws -> String {
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: fixture("sd15_unet_config.json")))) as! [String: Any]
        edit(&json)
        return try write(Array(JSONSerialization.data(withJSONObject: json)), "config.json")
    }

    func assertConfigRefused(_ fragments: [String], file: StaticString = #filePath, line: UInt = #line,
                             _ edit: (inout [String: Any]) -> Void) throws {
        let path = try editedConfig(edit)
        assertModelFileError(path, fragments, file: file, line: line) { try UNetConfig(path: path) }
    }

    func testCase33MissingFieldIsNamed() throws {
        for field in ["_class_name", "in_channels", "out_channels", "block_out_channels", "down_block_types", "up_block_types", "layers_per_block"] {
            try assertConfigRefused(["missing field '\(field)'"]) { $0[field] = nil }
        }
        try assertConfigRefused(["field 'in_channels' is null"]) { $0["in_channels"] = NSNull() }
    }

    func testCase33UnknownBlockTypeIsNamed() throws {
        try assertConfigRefused(["field 'down_block_types[1]' has unknown block type 'SkipDownBlock2D'",
                                 "Kiri supports DownBlock2D, AttnDownBlock2D, CrossAttnDownBlock2D"]) {
            $0["down_block_types"] = ["CrossAttnDownBlock2D", "SkipDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
        }
        try assertConfigRefused(["field 'up_block_types[3]' has unknown block type 'CrossAttnUpBlock3D'"]) {
            $0["up_block_types"] = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock3D"]
        }
        try assertConfigRefused(["field 'mid_block_type' has unknown block type 'UNetMidBlock2DSimpleCrossAttn'"]) {
            $0["mid_block_type"] = "UNetMidBlock2DSimpleCrossAttn"
        }
        try assertConfigRefused(["field '_class_name' has unknown model class 'AutoencoderKL'"]) { $0["_class_name"] = "AutoencoderKL" }
        try assertConfigRefused(["field 'act_fn' has unknown value 'tanh'"]) { $0["act_fn"] = "tanh" }
    }

    func testCase33WrongTypesAndInconsistentSizesAreNamed() throws {
        try assertConfigRefused(["field 'layers_per_block' must be an integer or a list of 4 integers, got 'two'"]) { $0["layers_per_block"] = "two" }
        try assertConfigRefused(["field 'block_out_channels[2]' must be an integer, got 12.5"]) { $0["block_out_channels"] = [320, 640, 12.5, 1280] as [Any] }
        try assertConfigRefused(["field 'in_channels' must be at least 1, got 0"]) { $0["in_channels"] = 0 }
        try assertConfigRefused(["field 'down_block_types' has 3 blocks but 'block_out_channels' has 4"]) {
            $0["down_block_types"] = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
        }
        try assertConfigRefused(["field 'attention_head_dim' has 2 values but the model has 4 down blocks"]) { $0["attention_head_dim"] = [5, 10] }
        try assertConfigRefused(["field 'only_cross_attention' has 2 values but the model has 4 down blocks"]) {
            $0["only_cross_attention"] = [true, false]
        }
        try assertConfigRefused(["field 'only_cross_attention[0]' must be true or false, got 1"]) { $0["only_cross_attention"] = [1, 0, 0, 0] }
        try assertConfigRefused(["field 'only_cross_attention' must be true or false, got 'yes'"]) { $0["only_cross_attention"] = "yes" }
        try assertConfigRefused(["field 'transformer_layers_per_block[0]' must be an integer, got an array"]) {
            $0["transformer_layers_per_block"] = [[1, 1], [2, 2], [1, 1], [1, 1]]
        }
        try assertConfigRefused(["field 'norm_num_groups' (48) does not divide block_out_channels[0] (320)"]) { $0["norm_num_groups"] = 48 }
        try assertConfigRefused(["field 'flip_sin_to_cos' must be true or false, got 1"]) { $0["flip_sin_to_cos"] = 1 }
        try assertConfigRefused(["field 'down_block_types[0]' is CrossAttnDownBlock2D, which needs a UNet2DConditionModel"]) {
            $0["_class_name"] = "UNet2DModel"
        }
    }

    func testCase33UnsupportedFeaturesAreNamed() throws {
        // SDXL's added time/text embedding.
        try assertConfigRefused(["field 'addition_embed_type' is 'text_time', which Kiri does not support (it needs null)"]) {
            $0["addition_embed_type"] = "text_time"
        }
        try assertConfigRefused(["field 'time_embedding_type' is 'fourier'"]) { $0["time_embedding_type"] = "fourier" }
        try assertConfigRefused(["field 'resnet_time_scale_shift' is 'scale_shift'"]) { $0["resnet_time_scale_shift"] = "scale_shift" }
        try assertConfigRefused(["field 'conv_in_kernel' is 7"]) { $0["conv_in_kernel"] = 7 }
        try assertConfigRefused(["field 'conv_out_kernel' is 1"]) { $0["conv_out_kernel"] = 1 }
        try assertConfigRefused(["field 'num_attention_heads' is 8, which diffusers' UNet2DConditionModel refuses too",
                                 "attention_head_dim gives the number of heads"]) { $0["num_attention_heads"] = 8 }
        try assertConfigRefused(["field 'dual_cross_attention' is true, which Kiri does not support (it needs false)"]) {
            $0["dual_cross_attention"] = true
        }
        try assertConfigRefused(["field 'class_embed_type' is 'timestep', which Kiri does not support (it needs null)"]) {
            $0["class_embed_type"] = "timestep"
        }
        try assertConfigRefused(["field 'time_cond_proj_dim' is 256"]) { $0["time_cond_proj_dim"] = 256 }
        try assertConfigRefused(["field 'reverse_transformer_layers_per_block' is an array"]) {
            $0["reverse_transformer_layers_per_block"] = [[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]]
        }
        // Defaults written out explicitly are accepted.
        let path = try editedConfig {
            $0["resnet_out_scale_factor"] = 1.0; $0["resnet_time_scale_shift"] = "default"; $0["conv_in_kernel"] = 3
            $0["class_embed_type"] = NSNull(); $0["num_attention_heads"] = NSNull(); $0["dual_cross_attention"] = false
        }
        XCTAssertNoThrow(try UNetConfig(path: path))
    }

    func testCase33SchedulerConfigFieldsAreNamed() throws {
        func refused(_ text: String, _ fragments: [String], line: UInt = #line) throws {
            let path = try write(text, "scheduler_config.json")
            assertModelFileError(path, fragments, line: line) { try SchedulerConfig(path: path) }
        }
        try refused("{\"beta_schedule\": \"sigmoid\"}", ["field 'beta_schedule' has unknown value 'sigmoid' (Kiri supports linear, scaled_linear, squaredcos_cap_v2)"])
        try refused("{\"prediction_type\": \"flow\"}", ["field 'prediction_type' has unknown value 'flow'"])
        try refused("{\"timestep_spacing\": 3}", ["field 'timestep_spacing' must be a string, got 3"])
        try refused("{\"num_train_timesteps\": 0}", ["field 'num_train_timesteps' must be at least 1, got 0"])
        try refused("{\"num_train_timesteps\": 2, \"trained_betas\": [0.1]}", ["field 'trained_betas' has 1 values but num_train_timesteps is 2"])
        try refused("{\"num_train_timesteps\": 2, \"trained_betas\": [0.1, 1.5]}", ["field 'trained_betas[1]' must be in [0, 1), got 1.5"])
        try refused("{\"beta_end\": 1e999}", ["field 'beta_end' must be a finite number, got 1e999"])
    }

    func testCase33ConfigNotJSONOrNotAnObject() throws {
        let broken = try write("{\"_class_name\": \"UNet2DModel\",", "config.json")
        assertModelFileError(broken, ["config is not valid JSON: unexpected end of JSON"]) { try UNetConfig(path: broken) }
        let duplicate = try write("{\"in_channels\": 4, \"in_channels\": 9}", "duplicate.json")
        assertModelFileError(duplicate, ["duplicate key 'in_channels'"]) { try UNetConfig(path: duplicate) }
        let list = try write("[1]", "list.json")
        assertModelFileError(list, ["config is an array, not a JSON object"]) { try UNetConfig(path: list) }
        let missing = (folder as NSString).appendingPathComponent("absent.json")
        assertModelFileError(missing, ["cannot open: No such file or directory"]) { try UNetConfig(path: missing) }
    }
}

extension SchedulerConfig {
    func with(_ change: (inout SchedulerConfig) -> Void) -> SchedulerConfig {
        var copy = self
        change(&copy)
        return copy
    }
}
