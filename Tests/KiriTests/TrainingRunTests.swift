import Foundation
import KiriImage
import XCTest
@testable import Kiri
@testable import KiriLua

/// Scripts/train.lua end to end, as `kiri train` runs it, on a toy set small enough for CI: four 8×8 patterns, one
/// class each. A tiny class-conditional UNet trained for a few hundred steps must then draw each class's pattern
/// (its samples nearest that pattern, and close to it), a run resumed from a checkpoint must end with the same bytes
/// as the run that went straight through, and bad input must stop with a clear message.
final class TrainingRunTests: XCTestCase {
    var scratch: String!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-train-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    static let scripts = URL(fileURLWithPath: bundledPlugins).deletingLastPathComponent().appendingPathComponent("Scripts").path

    /// The four classes' patterns, 0 or 255 per pixel: left half, top half, the main diagonal band, 2×2 checks.
    static let patterns: [[UInt8]] = [
        (0..<64).map { $0 % 8 < 4 ? 255 : 0 },
        (0..<64).map { $0 / 8 < 4 ? 255 : 0 },
        (0..<64).map { abs($0 % 8 - $0 / 8) <= 1 ? 255 : 0 },
        (0..<64).map { ($0 % 8 / 2 + $0 / 8 / 2) % 2 == 0 ? 255 : 0 },
    ]

    /// The data folder: `copies` PNGs of each pattern in its class's subfolder.
    func makeData(copies: Int = 4) throws -> String {
        let folder = scratch + "/toy"
        for (index, pattern) in Self.patterns.enumerated() {
            let classFolder = "\(folder)/\(index)-\(["left", "top", "diagonal", "checks"][index])"
            try FileManager.default.createDirectory(atPath: classFolder, withIntermediateDirectories: true)
            for copy in 0..<copies {
                try PNGImage(width: 8, height: 8, channels: 1, pixels: pattern).save(to: "\(classFolder)/\(copy).png")
            }
        }
        return folder
    }

    /// A UNet2DModel of two blocks (the second with attention), 5 class embeddings (4 and the null class).
    func makeConfig() throws -> String {
        let path = scratch + "/tiny.json"
        try """
            {"_class_name": "UNet2DModel", "sample_size": 8, "in_channels": 1, "out_channels": 1, "layers_per_block": 1,
             "block_out_channels": [16, 32], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
             "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 8, "norm_num_groups": 8,
             "num_class_embeds": 5}
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Runs the bundled train.lua with `arguments` into `output`, returning what it printed.
    @discardableResult
    func train(_ arguments: [String], output: String) throws -> String {
        var printed = ""
        var request = RunRequest(script: Self.scripts + "/train.lua", arguments: arguments,
                                 limits: SandboxLimits(timeout: .infinity, memory: 2 << 30, disk: 1 << 30), outputDirectory: output)
        request.overwrite = false
        try RecipeRunner.run(request, output: { printed += $0 })
        return printed
    }

    func trainingArguments(_ data: String, _ config: String, steps: Int) -> [String] {
        ["data=\(data)", "config=\(config)", "steps=\(steps)", "batch=16", "lr=3e-3", "weight_decay=0", "ema=0.95",
         "checkpoint_every=100", "sample_every=\(steps)", "log_every=100", "sample_steps=10", "seed=7"]
    }

    /// 400 steps, then 8 samples per class from the saved (EMA) model with guidance: every sample must be nearest
    /// its own class's pattern, within an RMS of 0.2 (in [0, 1]); chance would put a quarter of them there.
    func testATinyModelLearnsEachClasssPattern() throws {
        let (data, config, output) = (try makeData(), try makeConfig(), scratch + "/run")
        let printed = try train(trainingArguments(data, config, steps: 400), output: output)
        XCTAssertTrue(printed.contains("step 400/400"), printed)
        let losses = try String(contentsOfFile: output + "/train/loss.csv", encoding: .utf8).split(separator: "\n").dropFirst()
            .compactMap { Double($0.split(separator: ",")[1]) }
        XCTAssertEqual(losses.count, 400)
        let early = losses.prefix(20).reduce(0, +) / 20, late = losses.suffix(50).reduce(0, +) / 50
        print("toy training: mean loss \(early) over the first 20 steps, \(late) over the last 50")
        XCTAssertLessThan(late, early / 3)

        // Sampling in Lua from the saved model as any model is loaded, judged here.
        let judge = scratch + "/judge.lua"
        try """
            local m = kiri.models.load("\(output)/train/model")
            local D = m:denoiser()
            local sigmas = kiri.schedules.karras{n = 20, sigmas = D.sigmas}
            local labels, nulls = {}, {}
            for i = 1, 32 do labels[i], nulls[i] = (i - 1) // 8, 4 end
            local guided = function(x, sigma)
                local cond, uncond = D(x, sigma, {class = labels}), D(x, sigma, {class = nulls})
                return uncond + (cond - uncond) * 2
            end
            local x = kiri.samplers.dpmpp_2m(guided, kiri.randn({32, 1, 8, 8}, 11) * sigmas[1], sigmas)
            for _, value in ipairs(((x + 1) / 2):clamp(0, 1):reshape(32 * 64):totable()) do print(value) end
            """.write(toFile: judge, atomically: true, encoding: .utf8)
        var sampled = ""
        try RecipeRunner.run(RunRequest(script: judge, outputDirectory: output), output: { sampled += $0 })
        let values = printedNumbers(sampled).map(Float.init)
        XCTAssertEqual(values.count, 32 * 64)
        var worst: Float = 0, wrong = 0
        for sample in 0..<32 {
            let pixels = values[sample * 64..<(sample + 1) * 64]
            let distances = Self.patterns.map { pattern in
                (zip(pixels, pattern).map { ($0 - Float($1) / 255) * ($0 - Float($1) / 255) }.reduce(0, +) / 64).squareRoot()
            }
            let own = distances[sample / 8]
            if distances.enumerated().min(by: { $0.element < $1.element })!.offset != sample / 8 { wrong += 1 }
            worst = max(worst, own)
        }
        print("toy training: \(wrong) of 32 samples nearest another class's pattern, worst RMS to its own \(worst)")
        XCTAssertEqual(wrong, 0)
        XCTAssertLessThan(worst, 0.2)
    }

    /// Stopped at step 20 and resumed to 40, a run ends with the bytes of one that went straight to 40: model, EMA,
    /// optimiser state and losses. The resumed half runs with gradient checkpointing, which changes no bit either.
    func testAResumedRunEndsBitForBitAsAnUninterruptedOne() throws {
        let (data, config) = (try makeData(), try makeConfig())
        var arguments = trainingArguments(data, config, steps: 40)
        arguments = arguments.map { $0.hasPrefix("checkpoint_every=") ? "checkpoint_every=20" : $0 }
        try train(arguments, output: scratch + "/straight")
        try train(arguments.map { $0.hasPrefix("steps=") ? "steps=20" : $0 }, output: scratch + "/first")
        try train(arguments.filter { !$0.hasPrefix("config=") }
                    + ["resume=\(scratch!)/first/train/checkpoint-000020", "gradient_checkpointing=true"],
                  output: scratch + "/resumed")
        for file in ["model/diffusion_pytorch_model.safetensors", "checkpoint-000040/state.safetensors",
                     "checkpoint-000040/model/diffusion_pytorch_model.safetensors", "loss.csv"] {
            let straight = try Data(contentsOf: URL(fileURLWithPath: scratch + "/straight/train/" + file))
            let resumed = try Data(contentsOf: URL(fileURLWithPath: scratch + "/resumed/train/" + file))
            XCTAssertEqual(straight, resumed, file)
        }
    }

    func failure(_ arguments: [String]) -> String {
        do {
            try train(arguments, output: scratch + "/failed")
            XCTFail("no error")
            return ""
        } catch {
            return "\(error)"
        }
    }

    func testBadInputStopsWithAClearMessage() throws {
        let (data, config) = (try makeData(copies: 1), try makeConfig())
        XCTAssertTrue(failure(["data=\(data)", "config=\(config)", "batch=8"]).contains("batch=8: the data set has only 4 images"))
        try FileManager.default.createDirectory(atPath: scratch + "/empty", withIntermediateDirectories: true)
        let empty = failure(["data=\(scratch!)/empty", "config=\(config)"])
        XCTAssertTrue(empty.contains("no PNG images"), empty)
        try PNGImage(width: 4, height: 4, channels: 1, pixels: Array(repeating: 0, count: 16)).save(to: data + "/0-left/small.png")
        XCTAssertTrue(failure(["data=\(data)", "config=\(config)", "batch=2"]).contains("small.png"))
        try FileManager.default.removeItem(atPath: data + "/0-left/small.png")
        // A checkpoint of another run's seed.
        let arguments = trainingArguments(data, config, steps: 2).map { $0.hasPrefix("batch=") ? "batch=2" : $0 }
            .map { $0.hasPrefix("checkpoint_every=") ? "checkpoint_every=1" : $0 }
        try train(arguments, output: scratch + "/short")
        let resuming = arguments.filter { !$0.hasPrefix("config=") } + ["resume=\(scratch!)/short/train/checkpoint-000001"]
        let message = failure(resuming.map { $0 == "seed=7" ? "seed=8" : $0 })
        XCTAssertTrue(message.contains("resume: that run's seed was 7"), message)
        let withConfig = failure(arguments + ["resume=\(scratch!)/short/train/checkpoint-000001"])
        XCTAssertTrue(withConfig.contains("resume= continues the checkpoint's own network"), withConfig)
        // A learning rate that makes the loss overflow stops at that step and says which checkpoint to go back to.
        let diverging = failure(trainingArguments(data, config, steps: 50).map { $0.hasPrefix("batch=") ? "batch=2" : $0 }
            .map { $0.hasPrefix("lr=") ? "lr=1e30" : $0 }.map { $0.hasPrefix("checkpoint_every=") ? "checkpoint_every=1" : $0 })
        XCTAssertTrue(diverging.contains("the loss is not finite at step"), diverging)
        XCTAssertTrue(diverging.contains("checkpoint-"), diverging)
    }
}
