import Foundation
import XCTest
import KiriTensor
@testable import KiriModels

/// Security cases 36 and 38 for models: every size a config sets has a maximum, a network or a forward pass too
/// large for the run's memory cap is refused before it allocates, and a forward pass stops with its run.
final class LimitTests: ModelFileTestCase {
    /// A copy of the parity fixture `name` in the temporary folder, its config.json edited by `edit`.
    /// The tiny UNet2DConditionModel of the parity fixtures, loaded.
    func conditionNetwork() throws -> UNet {
        let files = try model("unet2d_condition")
        return try UNet(config: try UNetConfig(path: files.config), weights: try SafetensorsFile(path: files.weights))
    }

    func model(_ name: String, _ edit: (inout [String: Any]) -> Void = { _ in }) throws -> ModelFiles {
        let source = (UNetParityTests.parity as NSString).appendingPathComponent(name)
        let target = (folder as NSString).appendingPathComponent(name)
        try? FileManager.default.removeItem(atPath: target)
        try FileManager.default.copyItem(atPath: source, toPath: target)
        let files = try ModelFiles.locate(target), config = URL(fileURLWithPath: files.config)
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: config)) as! [String: Any]
        edit(&json)
        try JSONSerialization.data(withJSONObject: json).write(to: config)
        return files
    }

    /// The reproductions of security-cases.md 36, which loaded, trapped or allocated gigabytes before the maximums.
    static let oversized: [(field: String, value: any Sendable, message: String)] = [
        ("downsample_padding", 1 << 31, "field 'downsample_padding' is 2147483648, above the maximum of 1"),
        ("block_out_channels", [1 << 62, 32], "field 'block_out_channels[0]' is 4611686018427387904, above the maximum of 65536"),
        ("layers_per_block", 1 << 40, "field 'layers_per_block' is 1099511627776, above the maximum of 64"),
        ("layers_per_block", 1 << 31, "field 'layers_per_block' is 2147483648, above the maximum of 64"),
    ]

    func testCase36OversizedConfigIsRefusedByTheLoaderAndTheSummary() throws {
        for (field, value, message) in Self.oversized {
            let files = try model("unet2d") { $0[field] = value }
            assertModelFileError(files.config, [message]) { try UNetConfig(path: files.config) }
            assertModelFileError(files.config, [message]) { try ModelSummary(files: PipelineFiles(layout: .network(files))) }   // kiri info
        }
    }

    func testCase36EveryIntegerFieldHasAMaximum() throws {
        let conditional: [(String, Any, String)] = [
            ("in_channels", 65537, "field 'in_channels' is 65537, above the maximum of 65536"),
            ("out_channels", 1 << 20, "field 'out_channels' is 1048576, above the maximum of 65536"),
            ("block_out_channels", Array(repeating: 16, count: 9), "field 'block_out_channels' has 9 values, above the maximum of 8"),
            ("layers_per_block", [1, 65], "field 'layers_per_block[1]' is 65, above the maximum of 64"),
            ("transformer_layers_per_block", 1 << 33, "field 'transformer_layers_per_block' is 8589934592, above the maximum of 64"),
            ("attention_head_dim", [2, 1 << 17], "field 'attention_head_dim[1]' is 131072, above the maximum of 65536"),
            ("cross_attention_dim", 1 << 40, "field 'cross_attention_dim' is 1099511627776, above the maximum of 65536"),
            ("norm_num_groups", 1 << 17, "field 'norm_num_groups' is 131072, above the maximum of 65536"),
            ("sample_size", [16, 1 << 17], "field 'sample_size[1]' is 131072, above the maximum of 65536"),
            ("sample_size", 1 << 17, "field 'sample_size' is 131072, above the maximum of 65536"),
            ("num_class_embeds", 100_001, "field 'num_class_embeds' is 100001, above the maximum of 100000"),
        ]
        for (field, value, message) in conditional {
            let files = try model("unet2d_condition") { $0[field] = value }
            assertModelFileError(files.config, [message]) { try UNetConfig(path: files.config) }
        }
        let files = try model("unet2d_attention_class") { $0["attn_norm_num_groups"] = 1 << 17 }
        assertModelFileError(files.config, ["field 'attn_norm_num_groups' is 131072, above the maximum of 65536"]) {
            try UNetConfig(path: files.config)
        }
        for (text, message) in [("{\"num_train_timesteps\": 1000000}", "field 'num_train_timesteps' is 1000000, above the maximum of 100000"),
                                ("{\"steps_offset\": 4294967296}", "field 'steps_offset' is 4294967296, above the maximum of 100000")] {
            let path = try write(text, "scheduler_config.json")
            assertModelFileError(path, [message]) { try SchedulerConfig(path: path) }
        }
    }

    /// The loader checks its size (weights as stored) against the run's budget before converting anything, and
    /// stays within that size while it loads.
    func testCase36NetworkOverTheMemoryCapIsRefusedBeforeLoading() throws {
        for name in ["unet2d", "unet2d_condition_f16"] {
            let files = try model(name)
            let config = try UNetConfig(path: files.config), weights = try SafetensorsFile(path: files.weights)
            let bytes = loadingBytes(weights)
            let short = MemoryBudget(limit: bytes - 1)
            let message = assertModelFileError(files.weights, ["loading the network takes", "memory cap"]) {
                try MemoryBudget.$current.withValue(short) { try UNet(config: config, weights: weights) }
            }
            print(message)
            XCTAssertEqual(short.peak, 0, "allocated before refusing")
            let enough = MemoryBudget(limit: bytes)
            let network = try MemoryBudget.$current.withValue(enough) { try UNet(config: config, weights: weights) }
            print("\(name): loading checks \(bytes) bytes; the network holds \(enough.used), \(enough.peak) at the peak")
            // Weights stay in the file's dtype.
            XCTAssertGreaterThanOrEqual(enough.used, network.parameterCount * (weights.storageDType == .f32 ? 4 : 2))
        }
    }

    /// x whose skip connections alone pass the cap is refused before any work, naming its shape and the cap; one
    /// that runs out midway says so too; either way the pooled storage goes back to the budget.
    func testCase36ForwardOverTheMemoryCapIsRefused() throws {
        let files = try model("unet2d")
        let network = try UNet(config: try UNetConfig(path: files.config), weights: try SafetensorsFile(path: files.weights))
        let x = try Tensor.zeros([1, 3, 512, 512])
        let budget = MemoryBudget(limit: 8 << 20)
        assertInputError(["x of shape [1, 3, 512, 512] needs at least 47 MiB for the network's activations",
                          "the run has 8.0 MiB left of its 8.0 MiB memory cap"]) {
            try MemoryBudget.$current.withValue(budget) { try network.forward(x, timesteps: [1]) }
        }
        XCTAssertEqual(budget.peak, 0)

        let skips = network.skipBytes(batch: 1, height: 512, width: 512)
        let tight = MemoryBudget(limit: skips)
        assertInputError(["x of shape [1, 3, 512, 512] needs more memory for the network's activations than the run has",
                          "memory cap"]) {
            try MemoryBudget.$current.withValue(tight) { try network.forward(x, timesteps: [1]) }
        }
        XCTAssertGreaterThan(tight.peak, 0)
        XCTAssertEqual(tight.used, 0, "the pooled storage is freed")
        XCTAssertEqual(network.skipBytes(batch: 1 << 30, height: 1 << 30, width: 1 << 30), Int.max)
    }

    func assertInputError(_ fragments: [String], file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Tensor) {
        do {
            _ = try body()
            XCTFail("no error; expected one containing \(fragments)", file: file, line: line)
        } catch let error as TensorError {
            XCTAssertEqual(error.argument, 1, "\(error)", file: file, line: line)
            for fragment in fragments {
                XCTAssertTrue(error.message.contains(fragment), "'\(error.message)' lacks '\(fragment)'", file: file, line: line)
            }
        } catch {
            XCTFail("expected a TensorError, got \(error)", file: file, line: line)
        }
    }

    // MARK: Case 38: a stopped run

    /// Self-attention over the 65 536 tokens of a 256² input takes minutes (130 s measured on two busy cores); a
    /// stop 0.2 s in ends the forward pass within a second of it, with the cancellation's error.
    func testCase38ForwardStopsSoonAfterTheDeadline() throws {
        let network = try conditionNetwork()
        let x = try Tensor.randn([1, 4, 256, 256], seed: 1), context = try Tensor.randn([1, 7, 24], seed: 2)
        let cancellation = Cancellation(timeout: 0.2)
        cancellation.start()
        let start = DispatchTime.now().uptimeNanoseconds
        XCTAssertThrowsError(try Cancellation.$current.withValue(cancellation) {
            try network.forward(x, timesteps: [500], context: context)
        }) { error in
            XCTAssertEqual(error as? TensorError, cancellation.error)
        }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        print("a forward pass with a 0.2 s limit stopped after \(elapsed) s")
        XCTAssertLessThan(elapsed, 1.2)
        XCTAssertEqual(cancellation.reason, .timeLimit)
    }

    /// A run that can be stopped splits its kernels into more pieces; the output stays the same.
    func testCase38ForwardUnderALiveCancellationGivesTheSameOutput() throws {
        let network = try conditionNetwork()
        let x = try Tensor.randn([2, 4, 96, 80], seed: 3), context = try Tensor.randn([2, 7, 24], seed: 4)
        let cancellation = Cancellation(timeout: 600)
        cancellation.start()
        func forward() throws -> [Float] { try network.forward(x, timesteps: [10, 900], context: context).values }
        let free = try forward()
        let stoppable = try Cancellation.$current.withValue(cancellation) { try forward() }
        let error = relativeError(stoppable, free)
        print("stoppable against free forward: \(error)")
        XCTAssertLessThanOrEqual(error, 1e-6)
    }

    /// The cost of stoppable pieces: the best times of a small forward pass with and without a cancellation,
    /// taken in turns so that the machine's other load falls on both alike.
    func testCase38CancellationCostsLittle() throws {
        let network = try conditionNetwork()
        let x = try Tensor.randn([1, 4, 64, 64], seed: 5), context = try Tensor.randn([1, 7, 24], seed: 6)
        let cancellation = Cancellation(timeout: 600)
        cancellation.start()
        func milliseconds(_ cancellation: Cancellation?) throws -> Double {
            try Cancellation.$current.withValue(cancellation) {
                let start = DispatchTime.now().uptimeNanoseconds
                _ = try network.forward(x, timesteps: [500], context: context)
                return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
            }
        }
        var (free, stoppable) = (Double.infinity, Double.infinity)
        for _ in 0..<10 {
            free = min(free, try milliseconds(nil))
            stoppable = min(stoppable, try milliseconds(cancellation))
        }
        print(String(format: "forward [1, 4, 64, 64]: best %.2f ms without a cancellation, %.2f ms with one", free, stoppable))
        XCTAssertLessThan(stoppable, free * 1.5)
    }

    /// Loading converts tensor by tensor, each in pieces that stop with the run.
    func testCase38LoadingStopsWithTheRun() throws {
        let files = try model("unet2d_condition_f16")
        let config = try UNetConfig(path: files.config), weights = try SafetensorsFile(path: files.weights)
        let cancellation = Cancellation()
        cancellation.cancel()
        assertModelFileError(files.weights, ["tensor 'conv_in.weight': run cancelled"]) {
            try Cancellation.$current.withValue(cancellation) { try weights.tensor("conv_in.weight") }
        }
        assertModelFileError(files.weights, ["run cancelled"]) {
            try Cancellation.$current.withValue(cancellation) { try UNet(config: config, weights: weights) }
        }
    }
}
