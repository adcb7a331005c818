import Foundation
import XCTest

/// `kiri info PATH` (issue 4, item 4): the fields of Lua's `m.info`, from the model's files.
extension CLITests {
    static let parity = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/models/parity").path

    func testInfoOfAPipelineFolder() throws {
        let result = try kiri(["info", "\(Self.parity)/unet2d_attention_class"])
        XCTAssertEqual(result.status, 0, result.stderr)
        for line in [
            "weights: \(Self.parity)/unet2d_attention_class/unet/diffusion_pytorch_model.safetensors",
            "scheduler_config: \(Self.parity)/unet2d_attention_class/scheduler/scheduler_config.json",
            "architecture: UNet2DModel", "parameters: 252865", "dtype: F32", "prediction: eps",
            "prediction_type: epsilon", "sample_size: {16, 16}", "in_channels: 1", "num_class_embeds: 5",
            "cross_attention_dim: nil", "schedule.beta_schedule: linear", "schedule.num_train_timesteps: 1000",
        ] {
            XCTAssertTrue(result.stdout.contains(line + "\n"), "missing '\(line)' in\n\(result.stdout)")
        }
    }

    func testInfoOfASingleFile() throws {
        let result = try kiri(["info", "\(Self.parity)/unet2d_condition_bf16/diffusion_pytorch_model.safetensors"])
        XCTAssertEqual(result.status, 0, result.stderr)
        for line in ["architecture: UNet2DConditionModel", "parameters: 201924", "dtype: BF16", "cross_attention_dim: 24",
                     "scheduler_config: none (diffusers' defaults)"] {
            XCTAssertTrue(result.stdout.contains(line + "\n"), "missing '\(line)' in\n\(result.stdout)")
        }
    }

    /// A one-character folder name (Foundation's deletingLastPathComponent traps on one on Linux).
    func testInfoOfAOneLetterFolder() throws {
        try FileManager.default.copyItem(atPath: "\(Self.parity)/unet2d_condition_bf16", toPath: folder.appendingPathComponent("m").path)
        let result = try kiri(["info", "m"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stdout.contains("architecture: UNet2DConditionModel\n"), result.stdout)
    }

    func testInfoOfBadPaths() throws {
        let missing = try kiri(["info", "absent/model.safetensors"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertEqual(missing.stdout, "")
        XCTAssertTrue(missing.stderr.contains("absent/model.safetensors: no such file"), missing.stderr)

        _ = try write("old.ckpt", "not really a pickle")
        let pickle = try kiri(["info", "old.ckpt"])
        XCTAssertEqual(pickle.status, 1)
        XCTAssertTrue(pickle.stderr.hasPrefix("kiri: old.ckpt: .ckpt files are PyTorch pickles"), pickle.stderr)
        XCTAssertTrue(pickle.stderr.contains("old.safetensors"), pickle.stderr)   // the conversion hint

        _ = try write("broken/config.json", "{\"_class_name\": \"UNet2DModel\"")
        _ = try write("broken/diffusion_pytorch_model.safetensors", "")
        let config = try kiri(["info", "broken"])
        XCTAssertEqual(config.status, 1)
        XCTAssertTrue(config.stderr.contains("broken/config.json: config is not valid JSON"), config.stderr)
    }

    /// Security case 36: `kiri info` refuses the sizes `kiri.models.load` refuses, with the same message.
    func testInfoRefusesOversizedConfigs() throws {
        let weights = try Data(contentsOf: URL(fileURLWithPath: "\(Self.parity)/unet2d/diffusion_pytorch_model.safetensors"))
        let config = try String(contentsOfFile: "\(Self.parity)/unet2d/config.json", encoding: .utf8)
        for (field, value, message) in [("downsample_padding", "2147483648", "above the maximum of 1"),
                                        ("layers_per_block", "1099511627776", "above the maximum of 64")] {
            _ = try write("\(field)/config.json", config.replacingOccurrences(
                of: #"("\#(field)": )[^,\n]+"#, with: "$1\(value)", options: .regularExpression))
            try weights.write(to: folder.appendingPathComponent(field).appendingPathComponent("diffusion_pytorch_model.safetensors"))
            let result = try kiri(["info", field])
            XCTAssertEqual(result.status, 1)
            XCTAssertTrue(result.stderr.contains("\(field)/config.json: field '\(field)' is \(value), \(message)"), result.stderr)
        }
    }
}
