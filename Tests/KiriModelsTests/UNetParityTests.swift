import Foundation
import XCTest
import KiriTensor
@testable import KiriModels

/// Each network against diffusers' own forward pass on the same weights and inputs: the fixtures in
/// Tests/Fixtures/models/parity, written by make_parity.py there (see its README). The error is the largest absolute
/// difference over the largest absolute reference value.
final class UNetParityTests: XCTestCase {
    static let parity = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/models/parity").path

    /// Loads case `name` (its model from `model` when the weights live elsewhere), runs it on the fixture's inputs,
    /// and returns the network.
    @discardableResult
    func check(_ name: String, model: String? = nil, tolerance: Float = 1e-4,
               file: StaticString = #filePath, line: UInt = #line) throws -> UNet {
        let folder = (Self.parity as NSString).appendingPathComponent(name)
        let files = try ModelFiles.locate(model ?? folder)
        let config = try UNetConfig(path: files.config)
        let weights = try SafetensorsFile(path: files.weights)
        let network = try UNet(config: config, weights: weights)
        let io = try SafetensorsFile(path: (folder as NSString).appendingPathComponent("io.safetensors"))
        if let parameters = io.metadata["parameters"] {
            XCTAssertEqual(network.parameterCount, Int(parameters), "parameter count", file: file, line: line)
        }
        XCTAssertEqual(config.parameterCount, network.parameterCount, "parameter count from the config", file: file, line: line)
        let x = try io.tensor("x")
        let timesteps = try io.tensor("timesteps").values
        let classLabels = io.info("class_labels") != nil ? try io.tensor("class_labels").values.map { Int($0) } : nil
        let context = io.info("encoder_hidden_states") != nil ? try io.tensor("encoder_hidden_states") : nil
        let expected = try io.tensor("output")
        let output = try network.forward(x, timesteps: timesteps, classLabels: classLabels, context: context)
        XCTAssertEqual(output.shape, expected.shape, file: file, line: line)
        let error = relativeError(output.values, expected.values)
        print("\(name): \(config.architecture.rawValue), \(network.parameterCount) parameters, \(weights.storageDType?.rawValue ?? "-"), max |Δ| / max |reference| = \(error)")
        XCTAssertLessThanOrEqual(error, tolerance, "\(name)", file: file, line: line)
        return network
    }

    func testUNet2DWithoutAttention() throws { try check("unet2d") }

    func testUNet2DWithAttentionAndClassLabels() throws { try check("unet2d_attention_class") }

    func testUNet2DResamplingInsideResnets() throws { try check("unet2d_resnet_resampling") }

    func testUNet2DConditionCrossAttention() throws { try check("unet2d_condition") }

    func testUNet2DConditionFloat16Weights() throws { try check("unet2d_condition_f16") }

    func testUNet2DConditionBFloat16Weights() throws { try check("unet2d_condition_bf16") }

    /// SD 2.x: Linear proj_in/proj_out, a head count per block (reversed for the up blocks), upcast_attention.
    func testUNet2DConditionStableDiffusion2Options() throws {
        let network = try check("unet2d_condition_sd2")
        XCTAssertTrue(network.config.useLinearProjection)
        XCTAssertEqual(network.config.attentionHeadDim, [2, 4])
    }

    /// transformer_layers_per_block [1, 2], only_cross_attention [true, false], layers_per_block [1, 2],
    /// cross_attention_dim [20, 20] and center_input_sample.
    func testUNet2DConditionPerBlockLists() throws {
        let network = try check("unet2d_condition_layers")
        XCTAssertEqual(network.config.onlyCrossAttention, [true, false])
        XCTAssertEqual(network.config.transformerLayersPerBlock, [1, 2])
    }

    /// The default model as shipped (Sources/Kiri/Resources/models/fashion-mnist, float16), at timesteps 999, 500
    /// and 3 with a class and the null class (Tests/Fixtures/make_fashion_fixtures.py parity).
    func testShippedDefaultModel() throws {
        let sources = URL(fileURLWithPath: Self.parity).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Sources")
        try check("fashion-mnist", model: sources.appendingPathComponent("Kiri/Resources/models/fashion-mnist").path)
    }

    /// The same cases on the plain loops of ReferenceBackend: the oracle the kernels are checked against agrees with
    /// diffusers on its own.
    func testEveryCaseOnTheReferenceBackend() throws {
        try onBackend(ReferenceBackend()) {
            for name in ["unet2d", "unet2d_attention_class", "unet2d_resnet_resampling", "unet2d_condition", "unet2d_condition_f16",
                         "unet2d_condition_sd2", "unet2d_condition_layers"] { try check(name) }
        }
    }

    /// The same cases with every 3×3 conv by im2col instead of Winograd.
    func testEveryCaseWithoutWinograd() throws {
        Conv2d.winograd = false
        defer { Conv2d.winograd = true }
        for name in ["unet2d", "unet2d_attention_class", "unet2d_resnet_resampling", "unet2d_condition", "unet2d_condition_sd2",
                     "unet2d_condition_layers"] { try check(name) }
    }
}

/// Runs `body` with the networks it builds on `backend`.
func onBackend<T>(_ backend: any Backend, _ body: () throws -> T) rethrows -> T {
    let previous = defaultBackend
    defaultBackend = backend
    defer { defaultBackend = previous }
    return try body()
}

/// max |actual - expected| / max |expected|; infinite when the counts differ or a value is NaN.
func relativeError(_ actual: [Float], _ expected: [Float]) -> Float {
    var difference: Float = 0, scale: Float = 0
    for (a, e) in zip(actual, expected) {
        difference = max(difference, abs(a - e))
        scale = max(scale, abs(e))
    }
    return actual.count == expected.count && !difference.isNaN ? difference / scale : .infinity
}
