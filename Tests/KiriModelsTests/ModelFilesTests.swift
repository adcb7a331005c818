import Foundation
import XCTest
@testable import KiriModels

/// Security cases 31 (missing or misshapen tensors) and 32 (pickles), and finding a model's files from a path.
final class ModelFilesTests: ModelFileTestCase {
    /// F32 tensors filled with 0, 1, 2, ... in header order.
    func weights(_ tensors: [(String, [Int])]) -> [UInt8] {
        var entries: [String] = []
        var data: [UInt8] = []
        for (name, shape) in tensors {
            let count = shape.reduce(1, *)
            entries.append("\"\(name)\":{\"dtype\":\"F32\",\"shape\":\(shape),\"data_offsets\":[\(data.count),\(data.count + 4 * count)]}")
            data += bytes((0..<count).map(Float.init))
        }
        return safetensors("{" + entries.joined(separator: ",") + "}", data: data)
    }

    let tinyConfig = """
        {"_class_name": "UNet2DModel", "in_channels": 1, "out_channels": 1, "block_out_channels": [8, 16],
         "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
         "layers_per_block": 1, "norm_num_groups": 4, "num_class_embeds": 3}
        """

    // MARK: Case 31: a tensor the model needs is missing or misshapen

    func testCase31MissingTensorIsNamed() throws {
        let path = try write(weights([("conv_in.weight", [8, 1, 3, 3])]))
        let file = try SafetensorsFile(path: path)
        assertModelFileError(path, ["missing tensor 'down_blocks.0.resnets.0.conv1.weight'"]) {
            try file.requireTensor("down_blocks.0.resnets.0.conv1.weight", shape: [8, 8, 3, 3])
        }
        assertModelFileError(path, ["missing tensor 'conv_out.bias'"]) { try file.tensor("conv_out.bias") }
        XCTAssertNil(file.info("conv_out.bias"))
    }

    func testCase31WrongShapeNamesTheKeyAndBothShapes() throws {
        let path = try write(weights([("down_blocks.0.resnets.0.conv1.weight", [8, 4, 3, 3])]))
        let file = try SafetensorsFile(path: path)
        assertModelFileError(path, ["tensor 'down_blocks.0.resnets.0.conv1.weight' has shape [8, 4, 3, 3] but the model needs [8, 8, 3, 3]"]) {
            try file.requireTensor("down_blocks.0.resnets.0.conv1.weight", shape: [8, 8, 3, 3])
        }
        let right = try file.requireTensor("down_blocks.0.resnets.0.conv1.weight", shape: [8, 4, 3, 3])
        XCTAssertEqual(right.shape, [8, 4, 3, 3])
        XCTAssertEqual(right.values.last, 287)
    }

    // MARK: Case 32: pickles are refused with a hint

    func testCase32PickleCheckpointsAreRefusedUnopened() throws {
        // Protocol-2 pickle opcodes; the content must never be looked at.
        for name in ["model.ckpt", "model.pt", "model.pth", "diffusion_pytorch_model.bin", "MODEL.CKPT"] {
            let path = try write([0x80, 0x02, 0x63, 0x6F, 0x73, 0x0A], name)
            let message = assertModelFileError(path, ["PyTorch pickles", "can run arbitrary code", "Kiri does not open them",
                                                      "from safetensors.torch import save_file",
                                                      "weights_only=True", "save_pretrained(folder, safe_serialization=True)"]) {
                try SafetensorsFile(path: path)
            }
            XCTAssertTrue(message.contains("torch.load('\(name)'"), message)
            assertModelFileError(path, ["PyTorch pickles"]) { try ModelFiles.locate(path) }
        }
    }

    func testCase32DiffusersFolderWithOnlyAPickleIsRefused() throws {
        try write(tinyConfig, "pipeline/unet/config.json")
        let pickle = try write([0x80, 0x02], "pipeline/unet/diffusion_pytorch_model.bin")
        assertModelFileError(pickle, ["PyTorch pickles", "diffusion_pytorch_model.safetensors"]) {
            try ModelFiles.locate((folder as NSString).appendingPathComponent("pipeline"))
        }
    }

    // MARK: Layouts

    func testDiffusersFolderResolvesFromTheFolderTheSubfolderOrTheFile() throws {
        let root = (folder as NSString).appendingPathComponent("pipeline")
        let weightsPath = try write(weights([("conv_in.weight", [8, 1, 3, 3])]), "pipeline/unet/diffusion_pytorch_model.safetensors")
        let config = try write(tinyConfig, "pipeline/unet/config.json")
        let scheduler = try write("{\"_class_name\": \"DDPMScheduler\", \"prediction_type\": \"v_prediction\"}", "pipeline/scheduler/scheduler_config.json")
        // A half-precision variant beside the main file does not make the choice ambiguous.
        try write(weights([]), "pipeline/unet/diffusion_pytorch_model.fp16.safetensors")
        let expected = ModelFiles(weights: weightsPath, config: config, schedulerConfig: scheduler)
        XCTAssertEqual(try ModelFiles.locate(root), expected)
        XCTAssertEqual(try ModelFiles.locate(root + "/unet"), expected)
        XCTAssertEqual(try ModelFiles.locate(weightsPath), expected)

        // Everything a model load needs, end to end.
        let files = try ModelFiles.locate(root)
        let unet = try UNetConfig(path: files.config)
        XCTAssertEqual(unet.numClassEmbeds, 3)
        XCTAssertEqual(try SchedulerConfig(path: files.schedulerConfig!).predictionType, .vPrediction)
        let file = try SafetensorsFile(path: files.weights)
        XCTAssertEqual(try file.requireTensor("conv_in.weight", shape: [unet.blockOutChannels[0], unet.inChannels, 3, 3]).count, 72)
    }

    func testSingleFileWithConfigBeside() throws {
        let weightsPath = try write(weights([("conv_in.weight", [8, 1, 3, 3])]), "mnist/mnist.safetensors")
        let config = try write(tinyConfig, "mnist/config.json")
        XCTAssertEqual(try ModelFiles.locate(weightsPath), ModelFiles(weights: weightsPath, config: config, schedulerConfig: nil))
        // A folder with config.json and one weight file, whatever its name.
        XCTAssertEqual(try ModelFiles.locate((folder as NSString).appendingPathComponent("mnist")).weights, weightsPath)
        // A scheduler config beside the weights is found too.
        let scheduler = try write("{}", "mnist/scheduler_config.json")
        XCTAssertEqual(try ModelFiles.locate(weightsPath).schedulerConfig, scheduler)
    }

    func testLayoutErrorsSayWhatIsMissing() throws {
        let lone = try write(weights([]), "lone/model.safetensors")
        assertModelFileError(lone, ["no config.json beside the weights"]) { try ModelFiles.locate(lone) }

        let absent = (folder as NSString).appendingPathComponent("nothing")
        assertModelFileError(absent, ["no such file or folder"]) { try ModelFiles.locate(absent) }

        let empty = (folder as NSString).appendingPathComponent("empty")
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        assertModelFileError(empty, ["not a model folder"]) { try ModelFiles.locate(empty) }

        let text = try write("hello", "notes/readme.txt")
        assertModelFileError(text, ["not a .safetensors file"]) { try ModelFiles.locate(text) }

        try write(tinyConfig, "two/config.json")
        try write(weights([]), "two/a.safetensors")
        try write(weights([]), "two/b.safetensors")
        let two = (folder as NSString).appendingPathComponent("two")
        assertModelFileError(two, ["several weight files (a.safetensors, b.safetensors)"]) { try ModelFiles.locate(two) }

        let unet = (folder as NSString).appendingPathComponent("configless/unet")
        try write(weights([]), "configless/unet/diffusion_pytorch_model.safetensors")
        assertModelFileError(unet, ["missing config.json"]) { try ModelFiles.locate((folder as NSString).appendingPathComponent("configless")) }

        try write(tinyConfig, "noweights/config.json")
        let noWeights = (folder as NSString).appendingPathComponent("noweights")
        assertModelFileError(noWeights, ["no .safetensors weights"]) { try ModelFiles.locate(noWeights) }
    }
}
