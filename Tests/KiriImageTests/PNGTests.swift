import Foundation
import KiriImage
import KiriTensor
import XCTest

/// PNG reading against fixtures from an encoder of our own (Tests/Fixtures/images/make_images.py, no libpng),
/// writing read back and parsed chunk by chunk, tensor conversion as torchvision does it, and failures that
/// name their file and leave nothing behind.
final class PNGTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/images").path

    var scratch: String!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-png-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    func expected() throws -> (good: [String: [String: Any]], broken: [String: String]) {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "/expected.json"))
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        return (try XCTUnwrap(json["good"] as? [String: [String: Any]]), try XCTUnwrap(json["broken"] as? [String: String]))
    }

    /// The ImageError `body` throws; a test failure if it throws nothing or something else.
    func imageError(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> ImageError? {
        do {
            try body()
            XCTFail("no error", file: file, line: line)
        } catch let error as ImageError {
            return error
        } catch {
            XCTFail("not an ImageError: \(error)", file: file, line: line)
        }
        return nil
    }

    // MARK: - Reading

    func testEveryFixtureDecodesToTheExpectedPixelsAndText() throws {
        let (good, _) = try expected()
        XCTAssertGreaterThanOrEqual(good.count, 12)
        for (name, fixture) in good.sorted(by: { $0.key < $1.key }) {
            let image = try PNGImage.read(path: Self.fixtures + "/" + name)
            XCTAssertEqual(image.width, fixture["width"] as? Int, name)
            XCTAssertEqual(image.height, fixture["height"] as? Int, name)
            XCTAssertEqual(image.channels, fixture["channels"] as? Int, name)
            let pixels = try XCTUnwrap(fixture["pixels"] as? [Int], name).map(UInt8.init)
            let differing = zip(image.pixels, pixels).filter { $0 != $1 }.count
            XCTAssertEqual(image.pixels.count, pixels.count, name)
            XCTAssertEqual(differing, 0, "\(name): \(differing) of \(pixels.count) bytes differ")
            let text = try XCTUnwrap(fixture["text"] as? [[String]], name).map { PNGImage.TextChunk(key: $0[0], value: $0[1]) }
            XCTAssertEqual(image.text, text, name)
            print("\(name): \(image.width)x\(image.height)x\(image.channels), \(image.text.count) text chunks, \(differing) bytes differ")
        }
    }

    func testBrokenFilesGiveAnErrorNamingTheFile() throws {
        let (_, broken) = try expected()
        XCTAssertGreaterThanOrEqual(broken.count, 6)
        for (name, fragment) in broken.sorted(by: { $0.key < $1.key }) {
            let path = Self.fixtures + "/" + name
            let error = imageError { _ = try PNGImage.read(path: path) }
            XCTAssertTrue(error?.message.hasPrefix("'\(path)': ") == true, "\(name): \(error?.message ?? "")")
            XCTAssertTrue(error?.message.contains(fragment) == true, "\(name): '\(error?.message ?? "")' lacks '\(fragment)'")
            print("\(name): \(error?.message ?? "")")
        }
        let missing = imageError { _ = try PNGImage.read(path: scratch + "/missing.png", name: "missing.png") }
        XCTAssertEqual(missing?.message, "'missing.png': cannot open: No such file or directory")
        let folder = imageError { _ = try PNGImage.read(path: scratch, name: "folder") }
        XCTAssertEqual(folder?.message, "'folder': cannot read: Is a directory")
    }

    func testTheByteLimitIsCheckedBeforeDecoding() throws {
        let path = Self.fixtures + "/rgb.png"   // 5x6 RGB: 90 bytes
        XCTAssertEqual(try PNGImage.read(path: path, byteLimit: 90).pixels.count, 90)
        let error = imageError { _ = try PNGImage.read(path: path, byteLimit: 89, name: "rgb.png") }
        XCTAssertEqual(error?.pixelBytes, 90)
        XCTAssertEqual(error?.message, "'rgb.png': 5x6 with 3 channels needs 90 bytes, over the limit of 89")
        let bomb = imageError { _ = try PNGImage.read(path: Self.fixtures + "/too_many_bytes.png") }
        XCTAssertEqual(bomb?.pixelBytes, 60000 * 60000 * 4)
        XCTAssertNil(imageError { _ = try PNGImage.read(path: Self.fixtures + "/huge_header.png") }?.pixelBytes)
    }

    // MARK: - Writing

    /// Text of every kind the writer distinguishes: short ASCII and Latin-1 (tEXt), long Latin-1 (zTXt), UTF-8
    /// (iTXt) and long UTF-8 (compressed iTXt), an empty value, and a Latin-1 key.
    static let text: [PNGImage.TextChunk] = [
        .init(key: "ascii", value: "plain text, with\nnewlines"),
        .init(key: "latin", value: "café crème, 1½ °C"),
        .init(key: "Größe", value: "Ä"),
        .init(key: "utf8", value: "ＴＥＳＴ 雪 ☃"),
        .init(key: "empty", value: ""),
        .init(key: "long latin", value: String(repeating: "Crème brûlée ", count: 800)),   // 10.4 KB
        .init(key: "long utf8", value: String(repeating: "雪だるま ☃ ", count: 600)),       // 10.2 KB of UTF-8
    ]

    /// The chunks of a PNG file in order, read by hand, each whole: length, type, data and CRC.
    static func chunks(_ file: [UInt8]) -> [(type: String, bytes: [UInt8])] {
        var chunks: [(type: String, bytes: [UInt8])] = [], offset = 8
        while offset + 12 <= file.count {
            let length = file[offset..<offset + 4].reduce(0) { $0 << 8 | Int($1) }
            chunks.append((String(decoding: file[offset + 4..<offset + 8], as: UTF8.self), Array(file[offset..<offset + 12 + length])))
            offset += 12 + length
        }
        return chunks
    }

    /// The chunk types of a PNG in file order; iTXt as "iTXt+z" when compressed (the flag after its keyword's NUL).
    func chunkTypes(_ path: String) throws -> [String] {
        Self.chunks([UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))).map { chunk in
            guard chunk.type == "iTXt", let end = chunk.bytes.dropFirst(8).firstIndex(of: 0), chunk.bytes[end + 1] == 1 else {
                return chunk.type
            }
            return "iTXt+z"
        }
    }

    func testWrittenImagesReadBackWithTheirText() throws {
        for channels in 1...4 {
            let (width, height) = (7, 5)
            let pixels = (0..<width * height * channels).map { UInt8(($0 * 37 + channels) % 256) }
            let image = try PNGImage(width: width, height: height, channels: channels, pixels: pixels, text: Self.text)
            let bytes = try image.encoded()
            XCTAssertEqual(Array(bytes.prefix(8)), Self.signature)
            let path = scratch + "/c\(channels).png"
            try Self.save(bytes, path)
            let back = try PNGImage.read(path: path)
            XCTAssertEqual(back, image, "\(channels) channels")
            XCTAssertEqual(try chunkTypes(path), ["IHDR", "tEXt", "tEXt", "tEXt", "iTXt", "tEXt", "zTXt", "iTXt+z", "IDAT", "IEND"])
        }
    }

    func testTextThatCannotBeWrittenIsRefused() throws {
        var badKey = try PNGImage(width: 2, height: 1, channels: 1, pixels: [1, 2])
        badKey.text = [.init(key: " leading space", value: "x")]
        let refused = imageError { _ = try badKey.encoded() }
        XCTAssertTrue(refused?.message.hasPrefix("text key ' leading space' is not a PNG keyword") == true, refused?.message ?? "")
        var nul = badKey
        nul.text = [.init(key: "k", value: "a\0b")]
        XCTAssertEqual(imageError { _ = try nul.encoded() }?.message, "the value of text key 'k' contains a NUL byte")
    }

    func testKeysMustBePNGKeywords() throws {
        for key in ["", " x", "x ", "a  b", "tab\there", "雪", String(repeating: "k", count: 80)] {
            XCTAssertThrowsError(try PNGImage.TextChunk(key: key, value: "v").validate(), "key '\(key)'")
        }
        for key in ["a b", "Größe", String(repeating: "k", count: 79), "~!"] {
            XCTAssertNoThrow(try PNGImage.TextChunk(key: key, value: "any ☃ value").validate(), "key '\(key)'")
        }
    }

    func testSizesOutsidePNGsLimitsAreRefused() throws {
        XCTAssertEqual(imageError { _ = try PNGImage(width: 2, height: 2, channels: 5, pixels: []) }?.message,
                       "an image has 1 to 4 channels (grey, grey+alpha, RGB, RGBA), got 5")
        XCTAssertEqual(imageError { _ = try PNGImage(width: 2, height: 2, channels: 3, pixels: [0]) }?.message,
                       "1 bytes do not fill a 2x2 image with 3 channels")
        let wide = try PNGImage(width: 70000, height: 1, channels: 1, pixels: [UInt8](repeating: 0, count: 70000))
        XCTAssertEqual(imageError { _ = try wide.encoded() }?.message,
                       "cannot write a 70000x1 image (each side must be 1 to 65536 pixels)")
        let empty = try PNGImage(width: 0, height: 3, channels: 1, pixels: [])
        XCTAssertEqual(imageError { _ = try empty.encoded() }?.message,
                       "cannot write a 0x3 image (each side must be 1 to 65536 pixels)")
    }

    // MARK: - Tensors

    func testTensorsMapToBytesAsTorchvisionSaveImage() throws {
        // One row of 8 grey pixels: clamp(x * 255 + 0.5, 0, 255) truncated, NaN to 0.
        let values: [Float] = [0.5, -0.2, 1.7, .nan, 0, 1, 0.998, .infinity]
        let image = try PNGImage(tensor: try Tensor(shape: [1, 1, 8], values: values))
        XCTAssertEqual(image.pixels, [128, 0, 255, 0, 0, 255, 254, 255])
        XCTAssertEqual([image.width, image.height, image.channels], [8, 1, 1])

        // [1, C, H, W] as well, channels interleaved into pixels.
        let planes = try Tensor(shape: [1, 3, 1, 2], values: [0, 1, 0.2, 0.4, 0.6, 0.8])
        XCTAssertEqual(try PNGImage(tensor: planes).pixels, [0, 51, 153, 255, 102, 204])
    }

    func testImagesBecomeChannelHeightWidthTensorsOfByteOver255() throws {
        let image = try PNGImage(width: 2, height: 1, channels: 3, pixels: [0, 51, 153, 255, 102, 204])
        let tensor = try image.tensor()
        XCTAssertEqual(tensor.shape, [3, 1, 2])
        XCTAssertEqual(tensor.values, [0, 255, 51, 102, 153, 204].map { Float($0) / 255 })   // float32 division, as torch's
        // Every byte survives a round trip through the tensor.
        let all = try PNGImage(width: 256, height: 1, channels: 1, pixels: (0...255).map(UInt8.init))
        XCTAssertEqual(try PNGImage(tensor: try all.tensor()).pixels, all.pixels)
    }

    func testTensorShapesThatAreNotImagesAreRefused() throws {
        for shape in [[2, 3, 4, 4], [5, 2, 2], [3, 4], [3, 0, 2], [1, 1, 1, 1, 1]] {
            let tensor = try Tensor.zeros(shape)
            let error = imageError { _ = try PNGImage(tensor: tensor) }
            XCTAssertEqual(error?.message, "expected an image of shape [C, H, W] or [1, C, H, W] with C from 1 to 4 and H, W "
                + "at least 1, got \(shapeString(shape))")
        }
    }
}
