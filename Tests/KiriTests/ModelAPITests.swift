import Foundation
import KiriModels
import KiriTensor
import XCTest
import Kiri
@testable import KiriLua

/// `kiri.models` (issue 4, item 4): loading through the sandbox's file access, `m.info`, `m:forward` against
/// diffusers' outputs (Tests/Fixtures/models/parity), `m:denoiser()` as kiri.models.wrap's formula, and errors.
final class ModelAPITests: XCTestCase {
    static let parity = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/models/parity").path

    var scratch: String!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-models-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    /// A runtime as `kiri run` makes one, which may also read `roots` (the fixtures and the scratch folder by default).
    func run(_ source: String, roots: [String]? = nil, memory: Int = 1 << 30) throws -> String {
        try runEngine(source, roots: roots ?? [Self.parity, scratch], memory: memory)
    }

    /// The message of the error `source` raises (nil if none).
    func failure(_ source: String, roots: [String]? = nil, memory: Int = 1 << 30) -> String? {
        do {
            _ = try run(source, roots: roots, memory: memory)
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// A Lua expression for `tensor`, exact: %.9g round-trips float32.
    func literal(_ tensor: Tensor) -> String {
        let values = tensor.values.map { String(format: "%.9g", $0) }.joined(separator: ",")
        return "kiri.tensor({\(values)}):reshape({\(tensor.shape.map(String.init).joined(separator: ", "))})"
    }

    func quoted(_ path: String) -> String { luaString(path) }

    // MARK: - Parity with diffusers

    /// m:forward on the fixture's inputs against diffusers' output: max|kiri - diffusers| / max|diffusers|.
    func parityError(_ name: String, timesteps: String? = nil) throws -> Double {
        let io = try SafetensorsFile(path: "\(Self.parity)/\(name)/io.safetensors")
        var extra: [String] = []
        if io.info("class_labels") != nil { extra.append("class = \(literal(try io.tensor("class_labels"))):totable()") }
        if io.info("encoder_hidden_states") != nil { extra.append("context = \(literal(try io.tensor("encoder_hidden_states")))") }
        let output = try run("""
            local m = kiri.models.load(\(quoted("\(Self.parity)/\(name)")))
            local x = \(literal(try io.tensor("x")))
            local y = m:forward(x, \(timesteps ?? literal(try io.tensor("timesteps"))), {\(extra.joined(separator: ", "))})
            local reference = \(literal(try io.tensor("output")))
            assert(#y:shape() == 4 and y:shape()[2] == reference:shape()[2], "shape")
            print((y - reference):abs():max() / reference:abs():max())
            """)
        let error = try XCTUnwrap(printedNumbers(output).first, output)
        print("parity \(name): max-abs relative error \(error)")
        return error
    }

    func testUNet2DWithoutAttention() throws {
        XCTAssertLessThanOrEqual(try parityError("unet2d"), 1e-4)
    }

    func testUNet2DWithAttentionAndClassLabels() throws {
        XCTAssertLessThanOrEqual(try parityError("unet2d_attention_class"), 1e-4)
    }

    func testUNet2DResNetResampling() throws {
        XCTAssertLessThanOrEqual(try parityError("unet2d_resnet_resampling"), 1e-4)
    }

    func testUNet2DConditionWithCrossAttention() throws {
        XCTAssertLessThanOrEqual(try parityError("unet2d_condition"), 1e-4)
    }

    func testF16Weights() throws {
        XCTAssertLessThanOrEqual(try parityError("unet2d_condition_f16"), 1e-4)
    }

    func testBF16Weights() throws {
        XCTAssertLessThanOrEqual(try parityError("unet2d_condition_bf16"), 1e-4)
    }

    /// t as a Lua list, as a 1-D tensor, or one number for the whole batch.
    func testTimestepForms() throws {
        XCTAssertLessThanOrEqual(try parityError("unet2d", timesteps: "{37, 801.25}"), 1e-4)
        let output = try run("""
            local m = kiri.models.load(\(quoted("\(Self.parity)/unet2d")))
            local x = kiri.randn({2, 3, 16, 16}, 5)
            local one, each = m:forward(x, 500), m:forward(x, {500, 500})
            print((one - each):abs():max())
            -- Samples are independent: the second alone is the second of the pair.
            local pair = m:forward(x, {20, 700})
            local second = m:forward(x:narrow(1, 2, 1), 700)
            print((pair:narrow(1, 2, 1) - second):abs():max() / second:abs():max())
            """)
        let numbers = printedNumbers(output)
        XCTAssertEqual(numbers.count, 2, output)
        XCTAssertEqual(numbers.first, 0)
        XCTAssertLessThanOrEqual(numbers.last ?? 1, 1e-5)
    }

    // MARK: - m.info

    func testInfo() throws {
        let output = try run("""
            local function show(name)
                local m = kiri.models.load(\(quoted(Self.parity)) .. "/" .. name)
                local i = m.info
                print(name, i.architecture, i.parameters, i.dtype, i.prediction, i.prediction_type,
                    table.concat(i.sample_size, "x"), i.in_channels, i.out_channels, tostring(i.num_class_embeds),
                    tostring(i.cross_attention_dim), i.schedule.beta_schedule, i.schedule.beta_start,
                    i.schedule.beta_end, i.schedule.num_train_timesteps, tostring(i.schedule.rescale_zero_snr))
            end
            for _, name in ipairs({"unet2d", "unet2d_attention_class", "unet2d_condition_f16", "unet2d_condition_bf16"}) do
                show(name)
            end
            print(tostring(kiri.models.load(\(quoted("\(Self.parity)/unet2d")))))
            """)
        let lines = output.split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
        let expected: [[String]] = [
            ["unet2d", "UNet2DModel", "160275", "F32", "eps", "epsilon", "16x16", "3", "3", "nil", "nil", "linear", "0.0001", "0.02", "1000", "false"],
            ["unet2d_attention_class", "UNet2DModel", "252865", "F32", "eps", "epsilon", "16x16", "1", "1", "5", "nil", "linear", "0.0001", "0.02", "1000", "false"],
            ["unet2d_condition_f16", "UNet2DConditionModel", "201924", "F16", "eps", "epsilon", "16x16", "4", "4", "nil", "24", "linear", "0.0001", "0.02", "1000", "false"],
            ["unet2d_condition_bf16", "UNet2DConditionModel", "201924", "BF16", "eps", "epsilon", "16x16", "4", "4", "nil", "24", "linear", "0.0001", "0.02", "1000", "false"],
            ["Model: UNet2DModel, 160275 parameters"],
        ]
        XCTAssertEqual(lines, expected, output)
        // The parameter counts are torch's, as the generator recorded them.
        for name in ["unet2d", "unet2d_attention_class", "unet2d_condition_f16"] {
            let metadata = try SafetensorsFile(path: "\(Self.parity)/\(name)/io.safetensors").metadata
            XCTAssertTrue(output.contains("\t\(metadata["parameters"] ?? "?")\t"), name)
        }
    }

    // MARK: - m:denoiser()

    /// diffusers' DDPM schedule (linear betas 1e-4..0.02 over 1000 steps) in float64, and k-diffusion's
    /// DiscreteSchedule.sigma_to_t: the fractional timestep interpolated in log sigma.
    func ddpmTimestep(_ sigma: Double) -> Double {
        var product = 1.0
        let logSigmas = (0..<1000).map { i -> Double in
            product *= 1 - (0.0001 + (0.02 - 0.0001) * Double(i) / 999)
            return log(((1 - product) / product).squareRoot())
        }
        let target = log(sigma)
        let low = min(logSigmas.lastIndex { $0 <= target } ?? 0, 998)
        let weight = (logSigmas[low] - target) / (logSigmas[low] - logSigmas[low + 1])
        return Double(low) + min(1, max(0, weight))
    }

    /// D(x, sigma) = x - sigma * network(x / sqrt(sigma^2 + 1), t(sigma)) for an eps model (k-diffusion
    /// DiscreteEpsDDPMDenoiser), with t from the scheduler config's schedule.
    func testDenoiserIsWrapsEpsFormula() throws {
        let output = try run("""
            local m = kiri.models.load(\(quoted("\(Self.parity)/unet2d_attention_class")))
            local D = m:denoiser()
            print(D.prediction, D.sigma_min, D.sigma_max)
            local x = kiri.randn({2, 1, 16, 16}, 7) * 3
            local extra = {class = {1, 4}}
            for _, sigma in ipairs({0.05, 0.5, 2, 30, 150}) do
                local t = D.sigma_to_t(sigma)
                local expected = x - m:forward(x * (1 / math.sqrt(sigma ^ 2 + 1)), t, extra) * sigma
                local denoised = D(x, sigma, extra)
                print(sigma, t, (denoised - expected):abs():max() / expected:abs():max())
            end
            """)
        let lines = output.split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
        XCTAssertEqual(lines.first?.first, "eps", output)
        // diffusers' DDPMScheduler: sigma_max = sqrt((1 - alphas_cumprod[999]) / alphas_cumprod[999]) ≈ 157.4.
        XCTAssertEqual(Double(lines[0][2]) ?? 0, 157.4, accuracy: 0.05, output)
        for line in lines.dropFirst() {
            let numbers = line.compactMap(Double.init)
            XCTAssertEqual(numbers.count, 3, output)
            XCTAssertEqual(numbers[1], ddpmTimestep(numbers[0]), accuracy: 2e-3, "t of sigma \(numbers[0])")
            XCTAssertLessThanOrEqual(numbers[2], 1e-6, "sigma \(numbers[0])")
        }
    }

    /// Copies the pipeline fixture with another scheduler config.
    func pipeline(scheduler: String) throws -> String {
        let folder = scratch + "/pipeline"
        try FileManager.default.createDirectory(atPath: folder + "/scheduler", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "\(Self.parity)/unet2d_attention_class/unet", toPath: folder + "/unet")
        try scheduler.write(toFile: folder + "/scheduler/scheduler_config.json", atomically: true, encoding: .utf8)
        return folder
    }

    /// A v-prediction model with Stable Diffusion's schedule: D = c_skip x + c_out network(c_in x, t) with
    /// c_skip = 1/(s^2+1), c_out = -s/sqrt(s^2+1), c_in = 1/sqrt(s^2+1) (k-diffusion DiscreteVDDPMDenoiser).
    func testDenoiserFollowsThePredictionTypeAndSchedule() throws {
        let folder = try pipeline(scheduler: """
            {"_class_name": "EulerDiscreteScheduler", "prediction_type": "v_prediction", "beta_schedule": "scaled_linear",
             "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000}
            """)
        let output = try run("""
            local m = kiri.models.load(\(quoted(folder)))
            print(m.info.prediction, m.info.prediction_type, m.info.schedule.beta_schedule)
            local D = m:denoiser()
            print(D.prediction, D.sigma_max)
            local x = kiri.randn({2, 1, 16, 16}, 3) * 2
            local sigma = 1.5
            local c_in = 1 / math.sqrt(sigma ^ 2 + 1)
            local network = m:forward(x * c_in, D.sigma_to_t(sigma), {class = 2})
            local expected = network * (-sigma * c_in) + x * (1 / (sigma ^ 2 + 1))
            print((D(x, sigma, {class = 2}) - expected):abs():max() / expected:abs():max())
            """)
        let lines = output.split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
        XCTAssertEqual(lines.first, ["v", "v_prediction", "scaled_linear"], output)
        XCTAssertEqual(lines[1].first, "v", output)
        XCTAssertEqual(Double(lines[1][1]) ?? 0, 14.6146, accuracy: 1e-3, output)   // Stable Diffusion's sigma_max
        XCTAssertLessThanOrEqual(Double(lines[2][0]) ?? 1, 1e-5, output)
    }

    /// Explicit trained_betas reach wrap as alphas_cumprod.
    func testTrainedBetas() throws {
        let folder = try pipeline(scheduler: """
            {"_class_name": "DDPMScheduler", "num_train_timesteps": 4, "trained_betas": [0.1, 0.2, 0.3, 0.4]}
            """)
        let output = try run("""
            local m = kiri.models.load(\(quoted(folder)))
            print(table.concat(m.info.schedule.alphas_cumprod, " "))
            local D = m:denoiser()
            print(D.sigmas[1], D.sigmas[4])
            """)
        let numbers = printedNumbers(output)
        XCTAssertEqual(numbers.count, 6, output)
        for (got, expected) in zip(numbers, [0.9, 0.72, 0.504, 0.3024]) { XCTAssertEqual(got, expected, accuracy: 1e-12) }
        XCTAssertEqual(numbers[4], (0.1 / 0.9).squareRoot(), accuracy: 1e-6)
        XCTAssertEqual(numbers[5], (0.6976 / 0.3024).squareRoot(), accuracy: 1e-6)
    }

    // MARK: - Lifetime and memory

    func testCloseFreesTheNetwork() throws {
        let output = try run("""
            do
                local m <close> = kiri.models.load(\(quoted("\(Self.parity)/unet2d")))
                m:forward(kiri.zeros(1, 3, 16, 16), 1)
            end
            local m = kiri.models.load(\(quoted("\(Self.parity)/unet2d")))
            m:close()
            print(pcall(m.forward, m, kiri.zeros(1, 3, 16, 16), 1))
            """)
        XCTAssertTrue(output.contains("false\tthe model is closed"), output)
    }

    func testWeightsCountAgainstTheMemoryCap() throws {
        // unet2d holds 160 275 float32 parameters, 626 KiB: over a 600 KiB cap before anything is converted.
        let message = failure("kiri.models.load(\(quoted("\(Self.parity)/unet2d")))", memory: 600 << 10)
        XCTAssertTrue(message?.contains("memory cap") ?? false, message ?? "loaded")
        XCTAssertTrue(message?.contains("unet2d") ?? false, message ?? "loaded")
        // Twenty loads (12.5 MB of weights) fit in a 4 MiB cap when each is closed.
        _ = try run("""
            for i = 1, 20 do
                local m <close> = kiri.models.load(\(quoted("\(Self.parity)/unet2d")))
            end
            """, memory: 4 << 20)
    }

    /// Security case 36 through `kiri.models.load`: sizes past a config field's maximum are refused naming the file
    /// and the field, under a --memory-like cap, where they used to trap, abort or allocate gigabytes.
    func testOversizedConfigsAreRefused() throws {
        let cases: [(String, Any, String)] = [
            ("downsample_padding", 1 << 31, "'downsample_padding' is 2147483648, above the maximum of 1"),
            ("block_out_channels", [1 << 62, 32], "'block_out_channels[0]' is 4611686018427387904, above the maximum of 65536"),
            ("layers_per_block", 1 << 40, "'layers_per_block' is 1099511627776, above the maximum of 64"),
            ("layers_per_block", 1 << 31, "'layers_per_block' is 2147483648, above the maximum of 64"),
        ]
        for (field, value, expected) in cases {
            let folder = scratch + "/oversized"
            try? FileManager.default.removeItem(atPath: folder)
            try FileManager.default.copyItem(atPath: "\(Self.parity)/unet2d", toPath: folder)
            let url = URL(fileURLWithPath: folder + "/config.json")
            var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            config[field] = value
            try JSONSerialization.data(withJSONObject: config).write(to: url)
            let message = failure("kiri.models.load(\(quoted(folder)))", memory: 64 << 20)
            XCTAssertTrue(message?.contains("oversized/config.json: field \(expected)") ?? false, message ?? "loaded")
        }
    }

    /// An input too large for the memory cap is refused before the forward pass runs, naming its shape and the cap.
    func testForwardOverTheMemoryCapIsRefused() throws {
        let message = failure("""
            local m = kiri.models.load(\(quoted("\(Self.parity)/unet2d")))
            m:forward(kiri.zeros(1, 3, 1024, 1024), 1)
            """, memory: 64 << 20)
        XCTAssertTrue(message?.contains("test.lua:2: bad argument #1 to 'forward' (x of shape [1, 3, 1024, 1024] needs at least") ?? false,
                      message ?? "ran")
        XCTAssertTrue(message?.contains("left of its 64 MiB memory cap") ?? false, message ?? "ran")
    }

    // MARK: - Bad input

    func testMissingPathAndPickleNameTheFile() throws {
        let missing = failure("kiri.models.load(\(quoted(scratch + "/absent.safetensors")))")
        XCTAssertTrue(missing?.contains("test.lua:1:") ?? false, missing ?? "loaded")
        XCTAssertTrue(missing?.contains("absent.safetensors") ?? false, missing ?? "loaded")
        XCTAssertTrue(missing?.contains("no such file") ?? false, missing ?? "loaded")

        try Data([0x80, 0x02, 0x7d, 0x71]).write(to: URL(fileURLWithPath: scratch + "/model.ckpt"))
        let pickle = failure("kiri.models.load(\(quoted(scratch + "/model.ckpt")))")
        XCTAssertTrue(pickle?.contains("model.ckpt") ?? false, pickle ?? "loaded")
        XCTAssertTrue(pickle?.contains("pickle") ?? false, pickle ?? "loaded")

        let folder = scratch + "/empty"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let notModel = failure("kiri.models.load(\(quoted(folder)))")
        XCTAssertTrue(notModel?.contains("not a model folder") ?? false, notModel ?? "loaded")

        let argument = failure("kiri.models.load()")
        XCTAssertTrue(argument?.contains("bad argument #1 to 'load' (string expected, got no value)") ?? false, argument ?? "loaded")
    }

    /// The sandbox's read roots apply to the model and to the config found beside it.
    func testReadRootsApply() throws {
        let outside = failure("kiri.models.load(\(quoted("\(Self.parity)/unet2d")))", roots: [scratch])
        XCTAssertTrue(outside?.contains("outside the folders this run may read") ?? false, outside ?? "loaded")

        // Only the weights file named (as `kiri run` does for a file on the command line): its config.json is not.
        let folder = scratch + "/single"
        try FileManager.default.copyItem(atPath: "\(Self.parity)/unet2d", toPath: folder)
        let weights = folder + "/diffusion_pytorch_model.safetensors"
        let config = failure("kiri.models.load(\(quoted(weights)))", roots: [weights])
        XCTAssertTrue(config?.contains("config.json") ?? false, config ?? "loaded")
        XCTAssertTrue(config?.contains("outside the folders") ?? false, config ?? "loaded")
        XCTAssertNil(failure("kiri.models.load(\(quoted(weights)))", roots: [folder]))

        // A link inside a readable folder that leads out of it is refused.
        let linked = scratch + "/linked"
        try FileManager.default.createDirectory(atPath: linked, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "\(Self.parity)/unet2d/diffusion_pytorch_model.safetensors",
                                         toPath: linked + "/diffusion_pytorch_model.safetensors")
        try FileManager.default.createSymbolicLink(atPath: linked + "/config.json", withDestinationPath: "\(Self.parity)/unet2d/config.json")
        let link = failure("kiri.models.load(\(quoted(linked)))", roots: [linked])
        XCTAssertTrue(link?.contains("outside the folders") ?? false, link ?? "loaded")
    }

    func testForwardArgumentErrors() throws {
        let unet2d = "local m = kiri.models.load(\(quoted("\(Self.parity)/unet2d")))\n"
        let classes = "local m = kiri.models.load(\(quoted("\(Self.parity)/unet2d_attention_class")))\n"
        let condition = "local m = kiri.models.load(\(quoted("\(Self.parity)/unet2d_condition")))\n"
        let cases: [(String, String)] = [
            (unet2d + "m:forward(nil, 1)", "test.lua:2: bad argument #1 to 'forward' (Tensor expected, got nil)"),
            (unet2d + "m:forward(kiri.zeros(2, 1, 16, 16), 1)", "bad argument #1 to 'forward' (expected a [batch, 3, height, width] sample, got shape [2, 1, 16, 16])"),
            (unet2d + "m:forward(kiri.zeros(2, 3, 16, 16), {1, 2, 3})", "bad argument #2 to 'forward' (t has 3 values but the batch has 2 samples)"),
            (unet2d + "m:forward(kiri.zeros(1, 3, 16, 16), 0/0)", "bad argument #2 to 'forward' (t must be finite, got nan)"),
            (unet2d + "m:forward(kiri.zeros(1, 3, 16, 16), 'x')", "bad argument #2 to 'forward' (t: number, list or Tensor expected, got string)"),
            (unet2d + "m:forward(kiri.zeros(1, 3, 16, 16), 1, {class = 1})", "bad argument #3 to 'forward' (class given, but this model has no class embedding"),
            (unet2d + "m:forward(kiri.zeros(1, 3, 16, 16), 1, {klass = 1})", "bad argument #3 to 'forward' (unknown field 'klass'"),
            (unet2d + "m:forward(kiri.zeros(1, 3, 16, 16), 1, 5)", "bad argument #3 to 'forward' (table or nil expected, got number)"),
            (unet2d + "m.forward(kiri.zeros(1, 3, 16, 16), 1)", "bad self for 'forward'"),
            (classes + "m:forward(kiri.zeros(1, 1, 16, 16), 1)", "bad argument #3 to 'forward' (this model needs class labels"),
            (classes + "m:forward(kiri.zeros(1, 1, 16, 16), 1, {class = 5})", "bad argument #3 to 'forward' (class 5 out of range: labels are integers from 0 to 4)"),
            (classes + "m:forward(kiri.zeros(1, 1, 16, 16), 1, {class = 1.5})", "class 1.5 out of range"),
            (condition + "m:forward(kiri.zeros(1, 4, 16, 16), 1)", "bad argument #3 to 'forward' (this model needs a context: {context = Tensor of shape [1, tokens, 24]})"),
            (condition + "m:forward(kiri.zeros(1, 4, 16, 16), 1, {context = kiri.zeros(1, 7, 23)})", "context must have shape [1, tokens, 24], got [1, 7, 23]"),
            (condition + "m:denoiser()(kiri.zeros(1, 4, 16, 16), 1)", "this model needs a context"),
        ]
        for (source, expected) in cases {
            let message = failure(source)
            XCTAssertTrue(message?.contains(expected) ?? false, "\(source)\n→ \(message ?? "no error")")
        }
    }
}
