import Foundation
import XCTest
import KiriTensor
@testable import KiriModels

/// The trainable UNet against PyTorch autograd on diffusers' models: one backward pass of the parity UNets
/// (Tests/Fixtures/training/gradients, by make_gradients.py) and 20 steps of v-prediction training with clipping,
/// AdamW and an EMA (Tests/Fixtures/training/steps). Errors are max |Δ| / max |reference| per tensor.
final class TrainableUNetTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").path

    func load(_ name: String) throws -> (config: UNetConfig, weights: SafetensorsFile) {
        let files = try ModelFiles.locate("\(Self.fixtures)/models/parity/\(name)")
        return (try UNetConfig(path: files.config), try SafetensorsFile(path: files.weights))
    }

    func inputs(_ io: SafetensorsFile) throws -> (x: Tensor, timesteps: [Float], labels: [Int]?, context: Tensor?) {
        (try io.tensor("x"), try io.tensor("timesteps").values,
         io.info("class_labels") != nil ? try io.tensor("class_labels").values.map { Int($0) } : nil,
         io.info("encoder_hidden_states") != nil ? try io.tensor("encoder_hidden_states") : nil)
    }

    /// Every parameter's gradient, x's and the context's for case `name`, each within 1e-4 of autograd's.
    func checkGradients(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let (config, weights) = try load(name)
        let network = try TrainableUNet(config: config, weights: weights)
        let io = try SafetensorsFile(path: "\(Self.fixtures)/models/parity/\(name)/io.safetensors")
        let reference = try SafetensorsFile(path: "\(Self.fixtures)/training/gradients/\(name).safetensors")
        let (x, timesteps, labels, context) = try inputs(io)

        let output = try network.forward(x, timesteps: timesteps, classLabels: labels, context: context)
        XCTAssertLessThanOrEqual(relativeError(output.values, try reference.tensor("output").values), 1e-5, "\(name) output",
                                 file: file, line: line)
        let (dInput, dContext) = try network.backward(try reference.tensor("grad_output"))
        var worst: (error: Float, name: String) = (0, "")
        // A gradient that is zero in exact arithmetic (to_k's bias: softmax ignores a shift shared by all of a
        // query's scores) is rounding noise in both, so each tensor's scale is at least 1e-3 of the largest.
        let largest = try reference.names.filter { $0.hasPrefix("grad/") }.map { try reference.tensor($0).values.map(abs).max() ?? 0 }.max()!
        func compare(_ actual: Tensor, _ key: String) throws {
            let expected = try reference.tensor(key)
            XCTAssertEqual(actual.shape, expected.shape, key, file: file, line: line)
            let difference = zip(actual.values, expected.values).map { abs($0 - $1) }.max()!
            let error = difference / max(expected.values.map(abs).max()!, 1e-3 * largest)
            if error > worst.error || error.isNaN { worst = (error, key) }
            XCTAssertLessThanOrEqual(error, 1e-4, "\(name): \(key)", file: file, line: line)
        }
        try compare(dInput, "x.grad")
        if let dContext { try compare(dContext, "encoder_hidden_states.grad") }
        XCTAssertEqual(dContext == nil, reference.info("encoder_hidden_states.grad") == nil, file: file, line: line)
        for parameter in network.parameters { try compare(parameter.grad, "grad/\(parameter.name)") }
        XCTAssertEqual(network.parameters.count, Int(reference.metadata["parameters"] ?? ""), "parameter tensors", file: file, line: line)
        XCTAssertEqual(network.parameterCount, config.parameterCount, file: file, line: line)
        print("\(name): \(network.parameters.count) parameter tensors, worst gradient \(worst.name): \(worst.error)")
    }

    func testGradientsOfUNet2DWithAsymmetricDownsampling() throws { try checkGradients("unet2d") }

    func testGradientsOfUNet2DResamplingInsideResnetsWithAttention() throws { try checkGradients("unet2d_resnet_resampling") }

    func testGradientsOfUNet2DConditionCrossAttentionLayers() throws { try checkGradients("unet2d_condition_layers") }

    /// Gradient checkpointing runs each block's forward again before its backward: the same output and gradients to
    /// the bit, with less activation memory held at the peak.
    func testGradientCheckpointingGivesTheSameGradientsInLessMemory() throws {
        for name in ["unet2d", "unet2d_resnet_resampling", "unet2d_condition_layers"] {
            let (config, weights) = try load(name)
            let io = try SafetensorsFile(path: "\(Self.fixtures)/models/parity/\(name)/io.safetensors")
            let (x, timesteps, labels, context) = try inputs(io)
            let gradOutput = try SafetensorsFile(path: "\(Self.fixtures)/training/gradients/\(name).safetensors").tensor("grad_output")
            func pass(checkpointing: Bool) throws -> (values: [[Float]], peak: Int) {
                let network = try TrainableUNet(config: config, weights: weights)
                network.gradientCheckpointing = checkpointing
                network.resetActivationPeak()
                let output = try network.forward(x, timesteps: timesteps, classLabels: labels, context: context)
                let (dInput, dContext) = try network.backward(gradOutput)
                let values = [output.values, dInput.values, dContext?.values ?? []] + network.parameters.map(\.grad.values)
                return (values, network.activationPeakBytes)
            }
            let (plain, checkpointed) = (try pass(checkpointing: false), try pass(checkpointing: true))
            XCTAssertEqual(plain.values, checkpointed.values, "\(name): output and gradients")
            print("\(name): activation peak \(plain.peak) bytes, \(checkpointed.peak) with gradient checkpointing")
            XCTAssertLessThan(Double(checkpointed.peak), 0.8 * Double(plain.peak), name)
        }
    }

    /// A second training step of the same shapes takes all its storage from the first's: no allocation, no page faults.
    func testASecondStepAllocatesNothing() throws {
        let (config, weights) = try load("unet2d_condition_layers")
        let io = try SafetensorsFile(path: "\(Self.fixtures)/models/parity/unet2d_condition_layers/io.safetensors")
        let (x, timesteps, labels, context) = try inputs(io)
        let network = try TrainableUNet(config: config, weights: weights)
        var counts: [Int] = []
        for _ in 0..<3 {
            let output = try network.forward(x, timesteps: timesteps, classLabels: labels, context: context)
            _ = try network.backward(output)
            counts.append(network.workspaceAllocations)
        }
        print("workspace allocations after each of three steps: \(counts)")
        XCTAssertGreaterThan(counts[0], 0)
        XCTAssertEqual(counts[1], counts[0], "the second step")
        XCTAssertEqual(counts[2], counts[0], "the third step")
    }

    /// The training forward is the inference network's forward: the same output on every parity case.
    func testTrainingForwardMatchesTheInferenceNetwork() throws {
        for name in ["unet2d_attention_class", "unet2d_condition", "unet2d_condition_sd2"] {
            let (config, weights) = try load(name)
            let io = try SafetensorsFile(path: "\(Self.fixtures)/models/parity/\(name)/io.safetensors")
            let (x, timesteps, labels, context) = try inputs(io)
            let output = try TrainableUNet(config: config, weights: weights).forward(x, timesteps: timesteps, classLabels: labels,
                                                                                    context: context)
            let error = relativeError(output.values, try io.tensor("output").values)
            print("\(name): training forward against diffusers \(error)")
            XCTAssertLessThanOrEqual(error, 1e-4, name)
        }
    }

    /// 20 steps of v-prediction MSE training, clip_grad_norm_ 1.0, AdamW (lr 1e-3, weight decay 1e-2) and an EMA
    /// of 0.99, on the data torch drew: each step's loss and gradient norm, then the weights and their average.
    func testTwentyTrainingStepsMatchPyTorch() throws {
        let (config, weights) = try load("unet2d_attention_class")
        let network = try TrainableUNet(config: config, weights: weights)
        let steps = try SafetensorsFile(path: "\(Self.fixtures)/training/steps/unet2d_attention_class.safetensors")
        let optimizer = try AdamW(network.parameters, AdamWOptions(lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2))
        let average = try ExponentialMovingAverage(network.parameters, decay: 0.99)
        var worstLoss: Float = 0
        for step in 0..<20 {
            let xt = try steps.tensor("step.\(step).x_t"), target = try steps.tensor("step.\(step).target").values
            let prediction = try network.forward(xt, timesteps: try steps.tensor("step.\(step).timesteps").values,
                                                 classLabels: try steps.tensor("step.\(step).labels").values.map { Int($0) })
            let difference = zip(prediction.values, target).map { $0 - $1 }
            let loss = difference.reduce(0) { $0 + Double($1) * Double($1) } / Double(difference.count)
            let expected = try steps.tensor("step.\(step).loss").values[0]
            worstLoss = max(worstLoss, abs(Float(loss) - expected) / abs(expected))
            XCTAssertEqual(Float(loss), expected, accuracy: 1e-4 * abs(expected), "loss at step \(step)")
            let gradient = try Tensor(shape: prediction.shape)
            for (i, d) in difference.enumerated() { gradient.data[i] = 2 * d / Float(difference.count) }
            network.zeroGrad()
            _ = try network.backward(gradient)
            let norm = clipGradNorm(network.parameters, maxNorm: 1)
            let expectedNorm = try steps.tensor("step.\(step).grad_norm").values[0]
            XCTAssertEqual(norm, expectedNorm, accuracy: 1e-4 * expectedNorm, "gradient norm at step \(step)")
            optimizer.step()
            average.update()
        }
        // to_k's bias has a gradient of zero in exact arithmetic, so Adam's normalised step follows the rounding noise
        // of each implementation there; elsewhere the normalisation amplifies the rounding of small gradients too,
        // hence 1e-3 for the weights where the losses agree to 1e-4.
        var worstWeight: Float = 0, worstAverage: Float = 0
        for (parameter, averaged) in zip(network.parameters, average.averages) where !parameter.name.hasSuffix("to_k.bias") {
            worstWeight = max(worstWeight, relativeError(parameter.value.values, try steps.tensor("final/\(parameter.name)").values))
            worstAverage = max(worstAverage, relativeError(averaged.values, try steps.tensor("ema/\(parameter.name)").values))
        }
        print("20 steps: worst loss \(worstLoss), weights \(worstWeight), EMA \(worstAverage)")
        XCTAssertLessThanOrEqual(worstWeight, 1e-3)
        XCTAssertLessThanOrEqual(worstAverage, 1e-3)
    }

    /// A backward pass needs the forward before it, once.
    func testBackwardWithoutForwardIsAnError() throws {
        let (config, weights) = try load("unet2d")
        let network = try TrainableUNet(config: config, weights: weights)
        XCTAssertThrowsError(try network.backward(try Tensor.zeros([2, 3, 16, 16]))) {
            XCTAssertTrue("\($0)".contains("needs a forward pass"), "\($0)")
        }
        let x = try Tensor.randn([1, 3, 16, 16], seed: 1)
        _ = try network.forward(x, timesteps: [10])
        XCTAssertThrowsError(try network.backward(try Tensor.zeros([2, 3, 16, 16]))) {
            XCTAssertTrue("\($0)".contains("output's shape [1, 3, 16, 16]"), "\($0)")
        }
    }

    /// A new network has the checkpoint's keys and shapes, torch.nn's initial statistics, and the same draw for the
    /// same seed.
    func testNewNetworkIsInitialisedAsTorchDoes() throws {
        let (config, weights) = try load("unet2d_attention_class")
        let network = try TrainableUNet(config: config, seed: 7)
        XCTAssertEqual(network.parameters.map(\.name).sorted(), weights.names.sorted())
        for parameter in network.parameters { XCTAssertEqual(parameter.value.shape, weights.shape(parameter.name), parameter.name) }
        let conv = try XCTUnwrap(network.parameters.first { $0.name == "down_blocks.1.resnets.0.conv1.weight" })
        let bound = 1 / Float(conv.value.shape[1] * 9).squareRoot(), values = conv.value.values
        XCTAssertLessThanOrEqual(values.map(abs).max()!, bound)
        XCTAssertGreaterThan(values.map(abs).max()!, 0.95 * bound)
        let mean = values.reduce(0, +) / Float(values.count)
        XCTAssertEqual(mean, 0, accuracy: 4 * bound / Float(values.count).squareRoot())
        XCTAssertEqual(try XCTUnwrap(network.parameters.first { $0.name == "conv_norm_out.weight" }).value.values, Array(repeating: 1, count: 16))
        let again = try TrainableUNet(config: config, seed: 7), other = try TrainableUNet(config: config, seed: 8)
        XCTAssertEqual(again.parameters[3].value.values, network.parameters[3].value.values)
        XCTAssertNotEqual(other.parameters[3].value.values, network.parameters[3].value.values)
    }

    /// The weights a trained network saves read back as diffusers reads them: float32 exactly, float16 and bfloat16
    /// rounded as torch rounds (the parity fixtures' f16 and bf16 files are torch's roundings of these weights).
    func testSavedWeightsReadBackInEveryFormat() throws {
        let (config, weights) = try load("unet2d_condition")
        let network = try TrainableUNet(config: config, weights: weights)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-save-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for (format, fixture) in [(WeightFormat.f32, "unet2d_condition"), (.f16, "unet2d_condition_f16"), (.bf16, "unet2d_condition_bf16")] {
            let path = "\(folder)/\(format.rawValue).safetensors"
            try Data(safetensorsBytes(network.parameters.map { ($0.name, $0.value) }, format: format)).write(to: URL(fileURLWithPath: path))
            let saved = try SafetensorsFile(path: path)
            let reference = try SafetensorsFile(path: "\(Self.fixtures)/models/parity/\(fixture)/diffusion_pytorch_model.safetensors")
            XCTAssertEqual(saved.storageDType, reference.storageDType, format.rawValue)
            for parameter in network.parameters {
                XCTAssertEqual(try saved.tensor(parameter.name).values, try reference.tensor(parameter.name).values, parameter.name)
            }
        }
    }
}
