import Foundation
import XCTest
@testable import KiriModels

/// CLIPTokenizer against transformers 5.24's CLIPTokenizer: golden ids written by
/// Tests/Fixtures/models/tokenizer/make_tokenizer_fixtures.py (see the README there), the three ways of loading a
/// vocabulary, malformed files, and a megabyte prompt.
final class TokenizerTests: ModelFileTestCase {
    static let checkout = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixtures = checkout.appendingPathComponent("Tests/Fixtures/models/tokenizer").path
    static let bundledMerges = checkout.appendingPathComponent("Sources/Kiri/Resources/clip/merges.txt").path

    /// The tokenizer Kiri bundles for single-file SD1/SD2 checkpoints, its vocabulary derived from the merges.
    static func bundled() throws -> CLIPTokenizer {
        try CLIPTokenizer(derivingVocabularyFromMerges: Array(Data(contentsOf: URL(fileURLWithPath: bundledMerges))), path: bundledMerges)
    }

    /// The cases of a golden file: text and the ids transformers gives, start and end included.
    static func cases(_ name: String) throws -> [(text: String, ids: [Int])] {
        let json = try StrictJSONParser.parse(Array(Data(contentsOf: URL(fileURLWithPath: fixtures + "/" + name))))
        guard case .array(let cases)? = json["cases"] else { throw XCTSkip("\(name) has no cases") }
        return try cases.map { entry in
            guard case .array(let pair) = entry, pair.count == 2, case .string(let text) = pair[0], case .array(let ids) = pair[1] else {
                throw ModelFileError(name, "malformed case \(entry)")
            }
            return (text, ids.compactMap(\.integer))
        }
    }

    /// Asserts every case and prints the agreement, e.g. "1136/1136 identical".
    func assertAgrees(_ tokenizer: CLIPTokenizer, _ cases: [(text: String, ids: [Int])], _ label: String,
                      file: StaticString = #filePath, line: UInt = #line) {
        var identical = 0
        for (text, expected) in cases {
            let ids = tokenizer.tokenize(text)
            if ids == expected {
                identical += 1
            } else if cases.count - identical <= 10 + identical {
                XCTFail("\(label): \(text.unicodeScalars.map { $0.escaped(asASCII: true) }.joined()) gives \(ids), transformers \(expected)",
                        file: file, line: line)
            }
        }
        print("\(label): \(identical)/\(cases.count) identical")
        XCTAssertEqual(identical, cases.count, "\(label): \(cases.count - identical) cases differ", file: file, line: line)
    }

    func testGoldenIdsFromTheBundledMerges() throws {
        let cases = try Self.cases("golden.json")
        XCTAssertGreaterThanOrEqual(cases.count, 1000)
        let tokenizer = try Self.bundled()
        XCTAssertEqual([tokenizer.startToken, tokenizer.endToken, tokenizer.padToken, tokenizer.vocabularySize], [49406, 49407, 49407, 49408])
        assertAgrees(tokenizer, cases, "bundled merges")
    }

    /// vocab.json + merges.txt, tokenizer.json (with pair merges as transformers 5 writes, and with "a b" strings as
    /// older tokenizers did) and a vocabulary derived from merges.txt give the same ids.
    func testTheFileFormatsAgree() throws {
        let cases = try Self.cases("small_golden.json")
        let folder = Self.fixtures + "/small", jsonFolder = Self.fixtures + "/small-json"
        let fromVocabulary = try CLIPTokenizer(folder: folder)
        let fromTokenizerJSON = try CLIPTokenizer(folder: jsonFolder)
        let derived = try CLIPTokenizer(derivingVocabularyFromMerges: Array(Data(contentsOf: URL(fileURLWithPath: folder + "/merges.txt"))),
                                        path: "merges.txt", padToken: "!")
        let stringMerges = try CLIPTokenizer(tokenizerJSON: tokenizerJSONWithStringMerges(folder), padToken: "!")
        for (tokenizer, label) in [(fromVocabulary, "vocab.json + merges.txt"), (fromTokenizerJSON, "tokenizer.json"),
                                   (derived, "derived from merges.txt"), (stringMerges, "tokenizer.json, string merges")] {
            assertAgrees(tokenizer, cases, label)
            XCTAssertEqual([tokenizer.startToken, tokenizer.endToken, tokenizer.padToken, tokenizer.vocabularySize], [2512, 2513, 0, 2514], label)
        }
    }

    /// A tokenizer.json holding the folder's vocab.json and its merges as `"a b"` strings.
    func tokenizerJSONWithStringMerges(_ folder: String) throws -> [UInt8] {
        let vocabulary = try String(contentsOfFile: folder + "/vocab.json", encoding: .utf8)
        let merges = try String(contentsOfFile: folder + "/merges.txt", encoding: .utf8).split(separator: "\n").dropFirst()
        let quoted = merges.map { "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
        return Array("{\"model\": {\"type\": \"BPE\", \"vocab\": \(vocabulary), \"merges\": [\(quoted.joined(separator: ","))]}}".utf8)
    }

    /// SD2's `!` padding comes from special_tokens_map.json over tokenizer_config.json, as transformers reads them.
    func testWindowsPadAndTruncateAsDiffusers() throws {
        let json = try StrictJSONParser.parse(Array(Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "/small_golden.json"))))
        guard case .array(let padded)? = json["padded"], case .string(let text) = padded[0], case .array(let ids) = padded[1] else {
            return XCTFail("small_golden.json has no 'padded' case")
        }
        XCTAssertEqual(try CLIPTokenizer(folder: Self.fixtures + "/small").window(text, length: 8), ids.compactMap(\.integer))

        let tokenizer = try Self.bundled()
        guard let long = try Self.cases("golden.json").first(where: { $0.ids.count > 160 }) else { throw XCTSkip("no case past two windows") }
        let content = Array(long.ids.dropFirst().dropLast())
        XCTAssertEqual(tokenizer.window(long.text), [49406] + content.prefix(75) + [49407])
        let windows = tokenizer.windows(content)
        XCTAssertEqual(windows.count, (content.count + 74) / 75)
        XCTAssertEqual(windows.flatMap { $0.dropFirst().prefix(75) }.filter { $0 != 49407 }, content.filter { $0 != 49407 })
        XCTAssertTrue(windows.allSatisfy { $0.count == 77 && $0.first == 49406 && $0.last == 49407 })
        XCTAssertEqual(tokenizer.windows([]), [[49406] + Array(repeating: 49407, count: 76)])
    }

    func testMalformedFilesNameTheFileAndTheFault() throws {
        let vocabulary = try write(Array(Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "/small/vocab.json"))), "good/vocab.json")
        let merges = try write(Array(Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "/small/merges.txt"))), "good/merges.txt")
        let goodVocabulary = try Array(Data(contentsOf: URL(fileURLWithPath: vocabulary)))
        let goodMerges = try Array(Data(contentsOf: URL(fileURLWithPath: merges)))

        let notJSON = try write("{\"a\": 1,", "bad/vocab.json")
        assertModelFileError(notJSON, ["not valid JSON"]) {
            try CLIPTokenizer(vocabularyJSON: Array("{\"a\": 1,".utf8), merges: goodMerges, vocabularyPath: notJSON)
        }
        assertModelFileError("vocab.json", ["token 'x'", "not an integer"]) {
            try CLIPTokenizer(vocabularyJSON: Array("{\"x\": \"1\"}".utf8), merges: goodMerges)
        }
        assertModelFileError("vocab.json", ["an array, not an object"]) {
            try CLIPTokenizer(vocabularyJSON: Array("[]".utf8), merges: goodMerges)
        }
        assertModelFileError("vocab.json", ["not valid UTF-8"]) {
            try CLIPTokenizer(vocabularyJSON: [0x7B, 0xFF, 0x7D], merges: goodMerges)
        }
        assertModelFileError("merges.txt", ["line 3", "'i n t'", "two symbols"]) {
            try CLIPTokenizer(vocabularyJSON: goodVocabulary, merges: Array("#version: 0.2\ni n\ni n t\n".utf8))
        }
        assertModelFileError("merges.txt", ["merge 0", "no 'q\\u{2603}'"]) {
            try CLIPTokenizer(vocabularyJSON: goodVocabulary, merges: Array("q\u{2603} n\n".utf8))
        }
        let withoutEnd = Array(String(decoding: goodVocabulary, as: UTF8.self).replacingOccurrences(of: "<|endoftext|>", with: "<|end|>").utf8)
        assertModelFileError("vocab.json", ["no '<|endoftext|>'"]) {
            try CLIPTokenizer(vocabularyJSON: withoutEnd, merges: goodMerges)
        }
        assertModelFileError("vocab.json", ["no '<pad>'"]) {
            try CLIPTokenizer(vocabularyJSON: goodVocabulary, merges: goodMerges, padToken: "<pad>")
        }

        assertModelFileError("tokenizer.json", ["no 'model' object"]) { try CLIPTokenizer(tokenizerJSON: Array("{}".utf8)) }
        assertModelFileError("tokenizer.json", ["'model.type'", "\"BPE\""]) {
            try CLIPTokenizer(tokenizerJSON: Array("{\"model\": {\"type\": \"WordPiece\"}}".utf8))
        }
        assertModelFileError("tokenizer.json", ["'model.merges'", "missing"]) {
            try CLIPTokenizer(tokenizerJSON: Array("{\"model\": {\"vocab\": {}}}".utf8))
        }
        assertModelFileError("tokenizer.json", ["merge 1", "a number"]) {
            try CLIPTokenizer(tokenizerJSON: Array("{\"model\": {\"vocab\": {}, \"merges\": [\"a b\", 7]}}".utf8))
        }

        let folder = (vocabulary as NSString).deletingLastPathComponent
        let specialTokens = try write("{\"pad_token\": 0}", "good/special_tokens_map.json")
        assertModelFileError(specialTokens, ["'pad_token'", "0"]) { try CLIPTokenizer(folder: folder) }
        try write("{\"pad_token\": {\"content\": \"<|endoftext|>\"}}", "good/special_tokens_map.json")
        XCTAssertEqual(try CLIPTokenizer(folder: folder).padToken, 2513)
        let missing = folder + "/nowhere"
        assertModelFileError(missing + "/vocab.json", ["cannot open"]) { try CLIPTokenizer(folder: missing) }
    }

    /// A hostile prompt's cost is bounded (the merges of an n-byte word are O(n log n)): a megabyte of words, a
    /// megabyte without a space and a megabyte of one repeated emoji all finish, with the ids they should have.
    func testMegabytePromptsFinish() throws {
        let tokenizer = try Self.bundled()
        let words = tokenizer.encode(String(repeating: "a cat ", count: 175_000))
        XCTAssertEqual(words.count, 350_000)
        XCTAssertEqual(Set(words), [320, 2368])

        let start = Date()
        let word = tokenizer.encode(String(repeating: "cat", count: 350_000))
        XCTAssertFalse(word.isEmpty)
        XCTAssertTrue(word.allSatisfy { (0..<49406).contains($0) })
        let emoji = tokenizer.encode(String(repeating: "👍🏽", count: 130_000))
        XCTAssertTrue(emoji.allSatisfy { (0..<49406).contains($0) })
        print("one word of 1.05 MB and 1.04 MB of emoji: \(Int(Date().timeIntervalSince(start) * 1000)) ms")
    }
}
