import Foundation
import XCTest
import KiriTensor
@testable import KiriModels

/// CLIPTextModel against transformers' own forward pass on the same weights and ids: the clip_text_* fixtures in
/// Tests/Fixtures/models/parity, written by make_clip_text.py there (see its README); and the errors a wrong file,
/// config or input gives.
final class CLIPTextParityTests: ModelFileTestCase {
    static let parity = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/models/parity").path

    func fixture(_ name: String) -> String { (Self.parity as NSString).appendingPathComponent(name) }

    /// The case's config and weights, by the names transformers' save_pretrained gives them.
    func files(_ name: String) -> (config: String, weights: String) {
        (fixture("\(name)/config.json"), fixture("\(name)/model.safetensors"))
    }

    func load(_ name: String) throws -> CLIPTextModel {
        let files = files(name)
        return try CLIPTextModel(config: try CLIPTextConfig(path: files.config), weights: try SafetensorsFile(path: files.weights))
    }

    /// The fixture's ids as [[Int]], its first `length` tokens of each sequence when given.
    func tokens(_ io: SafetensorsFile, length: Int? = nil) throws -> [[Int]] {
        let ids = try io.tensor("input_ids")
        let (batch, width) = (ids.shape[0], ids.shape[1])
        let values = ids.values.map { Int($0) }
        return (0..<batch).map { Array(values[$0 * width..<$0 * width + (length ?? width)]) }
    }

    /// Runs case `name` for the last layer with the pooled output and for clip skip 2, printing the error of each.
    func check(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let network = try load(name)
        let io = try SafetensorsFile(path: (fixture(name) as NSString).appendingPathComponent("io.safetensors"))
        XCTAssertEqual(network.parameterCount, Int(io.metadata["parameters"]!), "parameter count", file: file, line: line)
        let ids = try tokens(io)
        let last = try network.forward(ids, pooled: true)
        let skipped = try network.forward(ids, clipSkip: 2)
        XCTAssertNil(skipped.pooled)
        for (output, key) in [(last.hiddenStates, "last_hidden_state"), (last.pooled!, "pooled"), (skipped.hiddenStates, "clip_skip_2")] {
            let expected = try io.tensor(key)
            XCTAssertEqual(output.shape, expected.shape, key, file: file, line: line)
            let error = relativeError(output.values, expected.values)
            print("\(name) \(key) \(shapeString(output.shape)): \(network.parameterCount) parameters, max |Δ| / max |reference| = \(error)")
            XCTAssertLessThanOrEqual(error, 1e-4, "\(name) \(key)", file: file, line: line)
        }
    }

    /// SD1.x-like (quick_gelu, keys under `text_model.`, legacy eos_token_id 2): a batch of 2 × 77 tokens padded with
    /// the end token.
    func testSD1LikeWithTextModelPrefix() throws { try check("clip_text_sd1") }

    /// SD2.x-like (gelu, 4 heads, keys as transformers 5 saves them, eos_token_id the end token): a batch of 2 × 9
    /// tokens, fewer than the 16 positions, padded with 0.
    func testSD2LikeWithoutPrefix() throws { try check("clip_text_sd2") }

    /// Both cases on the plain loops of ReferenceBackend (causal attention, quick_gelu and gelu included).
    func testReferenceBackend() throws {
        try onBackend(ReferenceBackend()) {
            try check("clip_text_sd1")
            try check("clip_text_sd2")
        }
    }

    /// Attention is causal, so the first T tokens of a sequence encode as they do inside the longer one: 12 of the
    /// fixture's 77 must give the reference's first 12 rows.
    func testShorterInputMatchesThePrefixOfTheLongerOne() throws {
        let network = try load("clip_text_sd1")
        let io = try SafetensorsFile(path: (fixture("clip_text_sd1") as NSString).appendingPathComponent("io.safetensors"))
        let output = try network.forward(try tokens(io, length: 12)).hiddenStates
        XCTAssertEqual(output.shape, [2, 12, 32])
        let reference = try io.tensor("last_hidden_state").values
        let (positions, width) = (77, 32)
        let expected: [Float] = (0..<2).flatMap { b in reference[b * positions * width..<(b * positions + 12) * width] }
        let error = relativeError(output.values, expected)
        print("clip_text_sd1 first 12 tokens: max |Δ| / max |reference| = \(error)")
        XCTAssertLessThanOrEqual(error, 1e-4)
    }

    func testInputErrors() throws {
        let network = try load("clip_text_sd2")
        let cases: [([[Int]], Int, Int, String)] = [
            (Array(repeating: Array(repeating: 1, count: 17), count: 2), 1, 1, "17 tokens are more than the 16 positions of this text encoder (max_position_embeddings)"),
            ([[62, 1, 63], [62, 63]], 1, 1, "sequence 2 has 2 tokens but sequence 1 has 3"),
            ([], 1, 1, "at least one sequence"),
            ([[62, 64, 63]], 1, 1, "token 64 (sequence 1, position 2) is outside the vocabulary of 64"),
            ([[62, 1, 63]], 3, 2, "clip skip must be between 1 (the last layer) and 2, got 3"),
            ([[62, 1, 63]], 0, 2, "got 0"),
        ]
        for (tokens, clipSkip, argument, fragment) in cases {
            XCTAssertThrowsError(try network.forward(tokens, clipSkip: clipSkip)) { error in
                let error = error as? TensorError
                XCTAssertEqual(error?.argument, argument, "\(String(describing: error))")
                XCTAssertTrue(error?.message.contains(fragment) ?? false, "'\(String(describing: error))' lacks '\(fragment)'")
            }
        }
    }

    /// The SD2-like fixture's config with `changes` applied, written to this test's folder.
    func config(_ changes: [String: Any]) throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: fixture("clip_text_sd2/config.json")))
        var object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        object.merge(changes) { $1 }
        return try write(Array(try JSONSerialization.data(withJSONObject: object)), "config.json")
    }

    func testConfigErrorsNameTheField() throws {
        let cases: [([String: Any], [String])] = [
            (["hidden_size": 1 << 20], ["field 'hidden_size' is 1048576, above the maximum of 65536"]),
            (["num_hidden_layers": 0], ["field 'num_hidden_layers' must be at least 1, got 0"]),
            (["max_position_embeddings": 1 << 20], ["field 'max_position_embeddings'", "above the maximum"]),
            (["vocab_size": -1], ["field 'vocab_size' must be at least 1"]),
            (["num_attention_heads": 5], ["field 'num_attention_heads' (5) does not divide hidden_size (12)"]),
            (["hidden_act": "relu"], ["field 'hidden_act' has unknown value 'relu' (Kiri supports quick_gelu, gelu)"]),
            (["architectures": ["CLIPVisionModel"]], ["field 'architectures[0]' has unknown model class 'CLIPVisionModel'"]),
            (["model_type": "clip_vision_model"], ["field 'model_type' is 'clip_vision_model'"]),
            (["eos_token_id": [2, 3]], ["field 'eos_token_id' must be an integer"]),
            (["layer_norm_eps": 0], ["field 'layer_norm_eps' must be positive"]),
        ]
        for (changes, fragments) in cases {
            let path = try config(changes)
            assertModelFileError(path, fragments) { try CLIPTextConfig(path: path) }
        }
        let path = try config(["architectures": ["CLIPTextModelWithProjection"], "hidden_act": "quick_gelu"])
        let parsed = try CLIPTextConfig(path: path)
        XCTAssertEqual(parsed.architecture, .textModelWithProjection)
        XCTAssertEqual(parsed.hiddenAct, .quickGelu)
    }

    /// The SD2-like fixture's tensors rewritten as float32, with `replace` deciding each one's name and shape (nil
    /// drops it) and `extra` tensors added.
    func rewrite(_ replace: (String, [Int]) -> (String, [Int])?, extra: [(String, [Int])] = []) throws -> String {
        let source = try SafetensorsFile(path: fixture("clip_text_sd2/model.safetensors"))
        var entries: [(String, [Int], [Float])] = []
        for name in source.names {
            guard let (key, shape) = replace(name, source.info(name)!.shape) else { continue }
            let values = try source.tensor(name).values
            entries.append((key, shape, shape.reduce(1, *) == values.count ? values : Array(repeating: 0.5, count: shape.reduce(1, *))))
        }
        entries += extra.map { ($0.0, $0.1, Array(repeating: 0.25, count: $0.1.reduce(1, *))) }
        var header: [String] = [], data: [UInt8] = []
        for (key, shape, values) in entries {
            let begin = data.count
            data += bytes(values)
            header.append("\"\(key)\":{\"dtype\":\"F32\",\"shape\":\(shape),\"data_offsets\":[\(begin),\(data.count)]}")
        }
        return try write(safetensors("{" + header.joined(separator: ",") + "}", data: data))
    }

    func testMisshapenOrMissingWeightNamesTheKey() throws {
        let config = try CLIPTextConfig(path: fixture("clip_text_sd2/config.json"))
        let misshapen = try rewrite { name, shape in name == "encoder.layers.1.mlp.fc1.weight" ? (name, [28, 11]) : (name, shape) }
        assertModelFileError(misshapen, ["tensor 'encoder.layers.1.mlp.fc1.weight' has shape [28, 11] but the model needs [28, 12]"]) {
            try CLIPTextModel(config: config, weights: try SafetensorsFile(path: misshapen))
        }
        let missing = try rewrite { name, shape in name == "final_layer_norm.bias" ? nil : (name, shape) }
        assertModelFileError(missing, ["missing tensor 'final_layer_norm.bias'"]) {
            try CLIPTextModel(config: config, weights: try SafetensorsFile(path: missing))
        }
    }

    /// CLIPTextModelWithProjection's layout (every key under `text_model.`, a text_projection beside) and a float
    /// position_ids buffer load, and give the same output as the unprefixed file.
    func testPrefixedKeysWithProjectionAndPositionIDs() throws {
        let path = try rewrite({ name, shape in ("text_model." + name, shape) },
                               extra: [("text_projection.weight", [8, 12]), ("text_model.embeddings.position_ids", [1, 16])])
        let config = try CLIPTextConfig(path: fixture("clip_text_sd2/config.json"))
        let prefixed = try CLIPTextModel(config: config, weights: try SafetensorsFile(path: path))
        let plain = try load("clip_text_sd2")
        XCTAssertEqual(prefixed.parameterCount, plain.parameterCount)
        let ids = [[62, 5, 9, 63, 0]]
        XCTAssertEqual(try prefixed.forward(ids, pooled: true).pooled!.values, try plain.forward(ids, pooled: true).pooled!.values)
    }

    func testLoadingOverTheMemoryCapIsRefused() throws {
        let files = files("clip_text_sd1")
        let config = try CLIPTextConfig(path: files.config), weights = try SafetensorsFile(path: files.weights)
        let bytes = loadingBytes(weights)
        let short = MemoryBudget(limit: bytes - 1)
        assertModelFileError(files.weights, ["loading the text encoder takes", "memory cap"]) {
            try MemoryBudget.$current.withValue(short) { try CLIPTextModel(config: config, weights: weights) }
        }
        XCTAssertEqual(short.peak, 0, "allocated before refusing")
        let enough = MemoryBudget(limit: bytes)
        let network = try MemoryBudget.$current.withValue(enough) { try CLIPTextModel(config: config, weights: weights) }
        XCTAssertGreaterThanOrEqual(enough.used, network.parameterCount * 4)

        let budget = MemoryBudget(limit: 1 << 16)
        XCTAssertThrowsError(try MemoryBudget.$current.withValue(budget) {
            try network.forward(Array(repeating: Array(repeating: 1, count: 77), count: 8))
        }) { error in
            XCTAssertTrue("\(error)".contains("8 sequences of 77 tokens need"), "\(error)")
        }
        XCTAssertEqual(budget.peak, 0)
    }

    func testStoppedRunFailsWithTheCancellationError() throws {
        let network = try load("clip_text_sd2")
        let cancellation = Cancellation()
        cancellation.cancel()
        XCTAssertThrowsError(try Cancellation.$current.withValue(cancellation) { try network.forward([[62, 1, 63]]) }) { error in
            XCTAssertEqual(error as? TensorError, cancellation.error)
        }
        XCTAssertEqual(try network.forward([[62, 1, 63]]).hiddenStates.shape, [1, 3, 12], "usable afterwards")
    }
}
