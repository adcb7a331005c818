import XCTest
@testable import Kiri

/// The CLIP merges ship as a package resource and are found the way the bundled models are.
final class BundledTokenizerTests: XCTestCase {
    func testTheBundledCLIPTokenizerLoads() throws {
        let tokenizer = try BundledFiles.clipTokenizer()
        // openai/clip-vit-large-patch14's ids, as every SD1 pipeline gets them.
        XCTAssertEqual(tokenizer.tokenize("a photo of a cat"), [49406, 320, 1125, 539, 320, 2368, 49407])
        XCTAssertEqual(try BundledFiles.clipTokenizer(padToken: "!").window("a cat", length: 6), [49406, 320, 2368, 49407, 0, 0])
    }
}
