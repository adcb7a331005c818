import Foundation
import XCTest
import KiriTensor
@testable import KiriModels

/// PromptWeighting and PromptEncoder against Tests/Fixtures/models/prompt (see its README): parse goldens from
/// AUTOMATIC1111's own parse_prompt_attention, and pieces, chunks and encodings from make_prompt_weighting.py's
/// implementation of A1111's algorithm over a tiny transformers CLIPTextModel.
final class PromptWeightingTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/models").path
    static let prompt = fixtures + "/prompt"
    static let tokenizerFolder = fixtures + "/tokenizer/small"

    static func json(_ name: String) throws -> JSONValue {
        try StrictJSONParser.parse(Array(Data(contentsOf: URL(fileURLWithPath: prompt + "/" + name))))
    }

    static func string(_ value: JSONValue?) -> String {
        guard case .string(let text)? = value else { fatalError("\(String(describing: value)) is not a string") }
        return text
    }

    static func pieces(_ value: JSONValue?) -> [PromptPiece] {
        guard case .array(let entries)? = value else { return [] }
        return entries.map { entry in
            guard case .array(let pair) = entry, case .string(let text) = pair[0] else { return PromptPiece("?", .nan) }
            return PromptPiece(text, pair[1].double!)
        }
    }

    /// The small tokenizer padding with `pad`: "!" as its files say (SD2's way), or `<|endoftext|>` (SD1's), for
    /// which the files are read without the special-tokens map, so `!` is ordinary text as in SD1.
    static func tokenizer(pad: String) throws -> CLIPTokenizer {
        if pad == "!" { return try CLIPTokenizer(folder: tokenizerFolder) }
        let read = { (name: String) in Array(try Data(contentsOf: URL(fileURLWithPath: tokenizerFolder + "/" + name))) }
        return try CLIPTokenizer(vocabularyJSON: read("vocab.json"), merges: read("merges.txt"))
    }

    static func textModel() throws -> CLIPTextModel {
        try CLIPTextModel(config: CLIPTextConfig(path: prompt + "/text_model/config.json"),
                          weights: SafetensorsFile(path: prompt + "/text_model/model.safetensors"))
    }

    struct Case {
        var prompt: String, pad: String, clipSkip: Int, pieces: [PromptPiece], chunks: [PromptChunk]
    }

    static func cases() throws -> [Case] {
        guard case .array(let entries)? = try json("cases.json")["cases"] else { throw XCTSkip("cases.json has no cases") }
        return entries.map { entry in
            guard case .array(let chunks)? = entry["chunks"] else { fatalError("malformed case \(entry)") }
            return Case(prompt: string(entry["prompt"]), pad: string(entry["pad"]), clipSkip: entry["clip_skip"]!.integer!,
                        pieces: pieces(entry["pieces"]),
                        chunks: chunks.map { chunk in
                            guard case .array(let tokens)? = chunk["tokens"], case .array(let weights)? = chunk["weights"] else {
                                fatalError("malformed chunk \(chunk)")
                            }
                            return PromptChunk(tokens: tokens.map { $0.integer! }, weights: weights.map { $0.double! })
                        })
        }
    }

    // MARK: Parsing

    func testParserMatchesA1111() throws {
        guard case .array(let cases)? = try Self.json("a1111_parse.json")["cases"] else { return XCTFail("no cases") }
        XCTAssertGreaterThanOrEqual(cases.count, 200)
        var identical = 0
        for entry in cases {
            guard case .array(let pair) = entry, case .string(let prompt) = pair[0] else { return XCTFail("malformed \(entry)") }
            let expected = Self.pieces(pair[1])
            let pieces = try PromptWeighting.parse(prompt)
            if pieces == expected { identical += 1 } else { XCTFail("\(prompt.debugDescription): \(pieces), A1111 \(expected)") }
        }
        print("A1111 parse_prompt_attention goldens: \(identical)/\(cases.count) identical")
        XCTAssertEqual(identical, cases.count)
    }

    func testErrorsNameTheColumn() {
        let deep = String(repeating: "(", count: 65) + "a" + String(repeating: ")", count: 65)
        let cases: [(String, Int, String)] = [
            ("a cat (photo", 7, "unbalanced '(' at column 7"),
            ("a cat) b", 6, "unbalanced ')' at column 6"),
            ("[a", 1, "unbalanced '[' at column 1"),
            ("a] (b)", 2, "unbalanced ']' at column 2"),
            ("(a:1.5) b:2)", 12, "unbalanced ')' at column 12"),
            ("(a\\)", 1, "unbalanced '(' at column 1"),
            ("x [a (b]", 6, "unbalanced '(' at column 6"),
            ("(a [b) c", 4, "unbalanced '[' at column 4"),
            // A1111's own doctest, which it closes silently.
            ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", 3, "unbalanced '(' at column 3"),
            // Columns count Unicode scalars: 猫 is one, e + U+0301 two.
            ("猫(a", 2, "unbalanced '(' at column 2"),
            ("e\u{301}(a", 3, "unbalanced '(' at column 3"),
            (deep, 65, "brackets nested deeper than 64 at column 65"),
            ("(a:1.2.3)", 4, "weight '1.2.3' at column 4 is not a number"),
            ("(a: -.)", 5, "weight '-.' at column 5 is not a number"),
        ]
        for (prompt, column, message) in cases {
            XCTAssertThrowsError(try PromptWeighting.parse(prompt), prompt.debugDescription) { error in
                XCTAssertEqual(error as? PromptError, PromptError(column: column, message))
                XCTAssertEqual("\(error)", "prompt: \(message)")
            }
        }
        let nested64 = String(repeating: "[", count: 32) + String(repeating: "(", count: 32) + "a"
            + String(repeating: ")", count: 32) + String(repeating: "]", count: 32)
        XCTAssertEqual(try PromptWeighting.parse(nested64).map(\.text), ["a"])
    }

    /// Linear in the prompt: a megabyte of weighted words, BREAKs, escapes and commas parses and chunks in bounded
    /// time, and a megabyte of open brackets fails at the 65th.
    func testMegabytePromptIsBounded() throws {
        let unit = "(masterpiece:1.2), [blurry] BREAK a \\(cat\\) on a ((mat)), "
        let prompt = String(repeating: unit, count: (1 << 20) / unit.utf8.count + 1)
        let tokenizer = try Self.tokenizer(pad: "<|endoftext|>")
        let start = Date()
        let pieces = try PromptWeighting.parse(prompt)
        let chunks = PromptWeighting.chunks(pieces, tokenizer: tokenizer)
        let seconds = Date().timeIntervalSince(start)
        print("\(prompt.utf8.count) bytes: \(pieces.count) pieces, \(chunks.count) chunks in \(String(format: "%.2f", seconds)) s")
        XCTAssertEqual(chunks.count, prompt.components(separatedBy: "BREAK").count)
        XCTAssertLessThan(seconds, 20)
        let open = String(repeating: "(", count: 1 << 20)
        XCTAssertThrowsError(try PromptWeighting.parse(open)) { XCTAssertEqual(($0 as? PromptError)?.column, 65) }
    }

    // MARK: Chunking and encoding

    func testPiecesAndChunksMatchTheReference() throws {
        let cases = try Self.cases()
        let tokenizers = try ["<|endoftext|>", "!"].reduce(into: [String: CLIPTokenizer]()) { $0[$1] = try Self.tokenizer(pad: $1) }
        var chunkCount = 0
        for item in cases {
            XCTAssertEqual(try PromptWeighting.parse(item.prompt), item.pieces, item.prompt.debugDescription)
            let chunks = try PromptWeighting.chunks(item.prompt, tokenizer: tokenizers[item.pad]!)
            XCTAssertEqual(chunks.map(\.tokens), item.chunks.map(\.tokens), item.prompt.debugDescription)
            XCTAssertEqual(chunks.map(\.weights), item.chunks.map(\.weights), item.prompt.debugDescription)
            XCTAssertTrue(chunks.allSatisfy { $0.tokens.count == 77 && $0.weights.count == 77 })
            chunkCount += chunks.count
        }
        print("reference chunks: \(cases.count) prompts, \(chunkCount) chunks compared")
    }

    func testEncodingsMatchTheReference() throws {
        let model = try Self.textModel()
        let embeddings = try SafetensorsFile(path: Self.prompt + "/embeddings.safetensors")
        var worst: Float = 0
        for (index, item) in try Self.cases().enumerated() {
            let encoder = try PromptEncoder(tokenizer: Self.tokenizer(pad: item.pad), textModel: model, clipSkip: item.clipSkip)
            let output = try encoder.encode(prompt: item.prompt)
            let expected = try embeddings.tensor("case_\(index)")
            XCTAssertEqual(output.shape, expected.shape, item.prompt.debugDescription)
            let error = relativeError(output.values, expected.values)
            XCTAssertLessThanOrEqual(error, 1e-4, item.prompt.debugDescription)
            worst = max(worst, error)
        }
        print("reference encodings: max |Δ| / max |reference| = \(worst)")
    }

    /// With every weight 1 the emphasis is a no-op, so a short prompt's encoding is the text model's output on its
    /// 77-token window, bit for bit, for either padding.
    func testUnweightedPromptIsTheTextModelWindow() throws {
        let model = try Self.textModel()
        for pad in ["<|endoftext|>", "!"] {
            let tokenizer = try Self.tokenizer(pad: pad)
            let prompt = "a photo of a cat, wow!"
            let output = try PromptEncoder(tokenizer: tokenizer, textModel: model, clipSkip: 2).encode(prompt: prompt)
            let expected = try model.forward([tokenizer.window(prompt)], clipSkip: 2).hiddenStates
            XCTAssertEqual(output.shape, expected.shape)
            XCTAssertEqual(output.values, expected.values, pad)
        }
    }

    /// A batch pads the shorter prompt with encodings of the empty chunk; every row is its prompt's own encoding.
    func testBatchPadsWithEmptyChunks() throws {
        let model = try Self.textModel()
        let encoder = try PromptEncoder(tokenizer: Self.tokenizer(pad: "<|endoftext|>"), textModel: model)
        let long = "(masterpiece:1.2), " + String(repeating: "a b c d e, ", count: 20), short = "a [cat]"
        XCTAssertEqual(try encoder.chunks(long).count, 2)
        let batch = try encoder.encode(prompts: [long, short])
        let width = model.config.hiddenSize
        XCTAssertEqual(batch.shape, [2, 154, width])
        let rows = batch.values
        let expected = try encoder.encode(prompt: long).values + encoder.encode(prompt: short).values + encoder.encode(prompt: "").values
        let error = relativeError(rows, expected)
        print("batch of 2 against single prompts: max |Δ| / max |reference| = \(error)")
        XCTAssertLessThanOrEqual(error, 1e-5)
        XCTAssertThrowsError(try encoder.encode(prompts: ["(unclosed"])) { XCTAssertEqual(($0 as? PromptError)?.column, 1) }
    }
}
