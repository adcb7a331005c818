import Foundation
import XCTest
import KiriTensor
@testable import KiriModels

/// The networks' behaviour beyond parity: loading errors name the tensor, input errors name the argument, batch
/// elements do not mix, and a warmed-up forward pass allocates nothing.
final class UNetTests: ModelFileTestCase {
    func fixture(_ name: String) throws -> (config: UNetConfig, weights: SafetensorsFile, io: SafetensorsFile) {
        let folder = (UNetParityTests.parity as NSString).appendingPathComponent(name)
        let files = try ModelFiles.locate(folder)
        return (try UNetConfig(path: files.config), try SafetensorsFile(path: files.weights),
                try SafetensorsFile(path: (folder as NSString).appendingPathComponent("io.safetensors")))
    }

    /// Every tensor of `file` as float32, renamed or dropped by `transform` (nil drops), written to a new file.
    func rewrite(_ file: SafetensorsFile, _ transform: (String, Tensor) throws -> (String, Tensor)?) throws -> SafetensorsFile {
        var header: [String] = [], data: [UInt8] = []
        for name in file.names {
            guard let (key, tensor) = try transform(name, try file.tensor(name)) else { continue }
            let bytes = self.bytes(tensor.values)
            header.append("\"\(key)\": {\"dtype\": \"F32\", \"shape\": \(tensor.shape), \"data_offsets\": [\(data.count), \(data.count + bytes.count)]}")
            data += bytes
        }
        return try SafetensorsFile(path: try write(safetensors("{" + header.joined(separator: ", ") + "}", data: data)))
    }

    func testSecondForwardAllocatesNothingAndGivesTheSameOutput() throws {
        let (config, weights, io) = try fixture("unet2d_condition")
        let network = try UNet(config: config, weights: weights)
        let x = try io.tensor("x"), context = try io.tensor("encoder_hidden_states"), t = try io.tensor("timesteps").values
        let first = try network.forward(x, timesteps: t, context: context)
        let allocations = network.workspaceAllocations
        let second = try network.forward(x, timesteps: t, context: context)
        print("workspace allocations: \(allocations) in the first pass, \(network.workspaceAllocations - allocations) in the second")
        XCTAssertEqual(network.workspaceAllocations, allocations)
        XCTAssertEqual(first.values, second.values)
        network.releaseBuffers()
        XCTAssertEqual(try network.forward(x, timesteps: t, context: context).values, first.values)
    }

    /// Batch element b of a batch-2 call equals a batch-1 call on element b alone.
    func testBatchElementsAreIndependent() throws {
        for name in ["unet2d_attention_class", "unet2d_condition"] {
            let (config, weights, io) = try fixture(name)
            let network = try UNet(config: config, weights: weights)
            let x = try io.tensor("x"), t = try io.tensor("timesteps").values
            let labels = io.info("class_labels") != nil ? try io.tensor("class_labels").values.map { Int($0) } : nil
            let context = io.info("encoder_hidden_states") != nil ? try io.tensor("encoder_hidden_states") : nil
            let both = try network.forward(x, timesteps: t, classLabels: labels, context: context).values
            for b in 0..<2 {
                func slice(_ tensor: Tensor) throws -> Tensor {
                    let size = tensor.count / 2
                    return try Tensor(shape: [1] + tensor.shape.dropFirst(), values: Array(tensor.values[b * size..<(b + 1) * size]))
                }
                let one = try network.forward(try slice(x), timesteps: [t[b]], classLabels: labels.map { [$0[b]] },
                                              context: try context.map(slice)).values
                let error = relativeError(one, Array(both[b * one.count..<(b + 1) * one.count]))
                print("\(name) element \(b) alone against the batch: \(error)")
                XCTAssertLessThan(error, 1e-6)
            }
        }
    }

    /// Checkpoints saved before diffusers 0.14 call the attention projections query, key, value and proj_attn.
    func testLegacyAttentionNamesLoad() throws {
        let (config, weights, io) = try fixture("unet2d_attention_class")
        let renames = ["to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"]
        let legacy = try rewrite(weights) { name, tensor in
            var key = name
            for (new, old) in renames where name.contains(".attentions.") { key = key.replacingOccurrences(of: ".\(new).", with: ".\(old).") }
            return (key, tensor)
        }
        XCTAssertTrue(legacy.names.contains("mid_block.attentions.0.proj_attn.weight"))
        let x = try io.tensor("x"), t = try io.tensor("timesteps").values, labels = try io.tensor("class_labels").values.map { Int($0) }
        XCTAssertEqual(try UNet(config: config, weights: legacy).forward(x, timesteps: t, classLabels: labels).values,
                       try UNet(config: config, weights: weights).forward(x, timesteps: t, classLabels: labels).values)
    }

    func testMissingOrMisshapenTensorIsNamed() throws {
        let (config, weights, _) = try fixture("unet2d_condition")
        let key = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
        let missing = try rewrite(weights) { name, tensor in name == key ? nil : (name, tensor) }
        assertModelFileError(missing.path, ["missing tensor '\(key)'"]) { try UNet(config: config, weights: missing) }

        let misshapen = try rewrite(weights) { name, tensor in
            name == "conv_in.weight" ? (name, try Tensor(shape: [16, 4, 3, 2], values: Array(tensor.values.prefix(384)))) : (name, tensor)
        }
        assertModelFileError(misshapen.path, ["tensor 'conv_in.weight' has shape [16, 4, 3, 2] but the model needs [16, 4, 3, 3]"]) {
            try UNet(config: config, weights: misshapen)
        }
    }

    /// A config whose weights belong to another config fails on the first tensor that differs.
    func testWeightsOfAnotherConfigAreRefused() throws {
        let (_, weights, _) = try fixture("unet2d")
        let (config, _, _) = try fixture("unet2d_attention_class")
        assertModelFileError(weights.path, ["conv_in.weight", "[16, 3, 3, 3]", "[16, 1, 3, 3]"]) { try UNet(config: config, weights: weights) }
    }

    func assertInputError(_ argument: Int, _ fragment: String, file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Tensor) {
        do {
            _ = try body()
            XCTFail("no error; expected one containing '\(fragment)'", file: file, line: line)
        } catch let error as TensorError {
            XCTAssertEqual(error.argument, argument, "\(error)", file: file, line: line)
            XCTAssertTrue(error.message.contains(fragment), "'\(error.message)' lacks '\(fragment)'", file: file, line: line)
        } catch {
            XCTFail("expected a TensorError, got \(error)", file: file, line: line)
        }
    }

    func testInputErrorsNameTheArgument() throws {
        let (config, weights, io) = try fixture("unet2d_attention_class")
        let network = try UNet(config: config, weights: weights)
        let x = try io.tensor("x")
        let t: [Float] = [1, 2], labels = [0, 4]
        assertInputError(1, "expected [batch, 1, height, width], got [2, 3, 16, 16]") {
            try network.forward(try Tensor.zeros([2, 3, 16, 16]), timesteps: t, classLabels: labels)
        }
        assertInputError(1, "multiples of 2") { try network.forward(try Tensor.zeros([2, 1, 16, 15]), timesteps: t, classLabels: labels) }
        assertInputError(2, "expected 1 or 2 timesteps") { try network.forward(x, timesteps: [1, 2, 3], classLabels: labels) }
        assertInputError(2, "timestep 2 is nan") { try network.forward(x, timesteps: [1, .nan], classLabels: labels) }
        assertInputError(3, "class labels are required") { try network.forward(x, timesteps: t) }
        assertInputError(3, "class label 5 is outside 0..<5") { try network.forward(x, timesteps: t, classLabels: [0, 5]) }
        assertInputError(3, "expected 2 class labels") { try network.forward(x, timesteps: t, classLabels: [0]) }
        assertInputError(3, "takes no context") {
            try network.forward(x, timesteps: t, classLabels: labels, context: try Tensor.zeros([2, 3, 4]))
        }
        // One timestep serves the whole batch.
        XCTAssertEqual(try network.forward(x, timesteps: [7], classLabels: labels).values,
                       try network.forward(x, timesteps: [7, 7], classLabels: labels).values)

        let condition = try fixture("unet2d_condition")
        let crossAttention = try UNet(config: condition.config, weights: condition.weights)
        let latent = try condition.io.tensor("x")
        assertInputError(3, "a context [2, length, 24] is required") { try crossAttention.forward(latent, timesteps: t) }
        assertInputError(3, "context must be [2, length, 24], got [2, 7, 16]") {
            try crossAttention.forward(latent, timesteps: t, context: try Tensor.zeros([2, 7, 16]))
        }
        assertInputError(3, "no class embedding") {
            try crossAttention.forward(latent, timesteps: t, classLabels: [0, 1], context: try Tensor.zeros([2, 7, 24]))
        }
    }

    /// UNet2DConditionModel up-samples to the skip connection's size when a side does not halve evenly
    /// (diffusers' forward_upsample_size), so any latent size runs.
    func testConditionModelTakesSidesThatDoNotHalve() throws {
        let (config, weights, _) = try fixture("unet2d_condition")
        let network = try UNet(config: config, weights: weights)
        let out = try network.forward(try Tensor.randn([1, 4, 11, 7], seed: 1), timesteps: [500], context: try Tensor.randn([1, 3, 24], seed: 2))
        XCTAssertEqual(out.shape, [1, 4, 11, 7])
        XCTAssertFalse(out.values.contains { !$0.isFinite })
    }
}
