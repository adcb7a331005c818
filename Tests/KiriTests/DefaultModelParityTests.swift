import Foundation
import Kiri
import KiriModels
import XCTest

/// The shipped default model in Kiri against diffusers' forward pass on the same float16 weights, at a high, a
/// middle and a low timestep, with a class and the null class (Tools/train_default_model.py parity).
final class DefaultModelParityTests: XCTestCase {
    func testShippedModelMatchesDiffusers() throws {
        let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/fashion-mnist-parity.safetensors").path
        let folder = try XCTUnwrap(BundledFiles.models["fashion-mnist"], "the bundled default model")
        let files = try ModelFiles.locate(folder)
        let network = try UNet(config: try UNetConfig(path: files.config), weights: try SafetensorsFile(path: files.weights))
        let io = try SafetensorsFile(path: fixture)
        let output = try network.forward(try io.tensor("x"), timesteps: try io.tensor("timesteps").values,
                                         classLabels: try io.tensor("class_labels").values.map { Int($0) }, context: nil)
        let expected = try io.tensor("output").values, actual = output.values
        XCTAssertEqual(actual.count, expected.count)
        let largest = expected.map(abs).max() ?? 1
        let error = zip(actual, expected).map { abs($0 - $1) }.max() ?? .infinity
        print("default model: max |Δ| / max |reference| = \(error / largest)")
        XCTAssertLessThanOrEqual(error / largest, 1e-4)
    }
}
