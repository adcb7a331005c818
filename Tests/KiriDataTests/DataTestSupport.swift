import CZlib
import Foundation
import KiriTensor
import XCTest
@testable import KiriData

/// A test with a scratch folder of its own, and the files and datasets the KiriData tests make in it.
class DataTestCase: XCTestCase {
    var scratch: String!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-data-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    /// An IDX file's bytes: `magic` (default: unsigned bytes with one dimension per size), the sizes big-endian, `data`.
    func idx(_ sizes: [Int], _ data: [UInt8], magic: [UInt8]? = nil) -> [UInt8] {
        var bytes = magic ?? [0, 0, 0x08, UInt8(sizes.count)]
        for size in sizes { bytes += [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: size >> $0) } }
        return bytes + data
    }

    /// Writes `bytes` to `name` in the scratch folder, gzip-compressed (by zlib's gzwrite) or as they are; returns the path.
    @discardableResult
    func write(_ bytes: [UInt8], _ name: String, gzip: Bool = false) throws -> String {
        let path = scratch + "/" + name
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        guard gzip else {
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            return path
        }
        let file = try XCTUnwrap(gzopen(path, "wb"))
        let written = bytes.withUnsafeBytes { gzwrite(file, $0.baseAddress, UInt32($0.count)) }
        XCTAssertEqual(gzclose(file), Z_OK)
        XCTAssertEqual(Int(written), bytes.count)
        return path
    }

    /// The DataError `body` throws (a test failure if it throws nothing or something else).
    func dataError(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> DataError? {
        do {
            try body()
            XCTFail("no error", file: file, line: line)
        } catch let error as DataError {
            return error
        } catch {
            XCTFail("not a DataError: \(error)", file: file, line: line)
        }
        return nil
    }

    /// Asserts that `body` throws a DataError whose message contains every one of `parts`.
    func assertDataError(_ parts: [String], file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void) {
        guard let error = dataError(body, file: file, line: line) else { return }
        for part in parts {
            XCTAssert(error.message.contains(part), "'\(error.message)' does not say '\(part)'", file: file, line: line)
        }
    }

    /// A dataset of `count` distinct items whose rows are not mirror images of themselves: byte (c, y, x) of item i is
    /// (i · 7 + c · 5 + y · 3 + x² + 1) mod 256. Labels i mod `classes`, when given.
    func dataset(count: Int, channels: Int = 1, height: Int = 3, width: Int = 4, classes: Int? = nil) throws -> ImageDataset {
        let itemBytes = channels * height * width
        let pixels = try CountedBuffer<UInt8>(count: count * itemBytes, what: "pixels")
        for item in 0..<count {
            for c in 0..<channels {
                for y in 0..<height {
                    for x in 0..<width {
                        pixels.pointer[item * itemBytes + (c * height + y) * width + x] = UInt8((item * 7 + c * 5 + y * 3 + x * x + 1) % 256)
                    }
                }
            }
        }
        let labels = try classes.map { classes in
            let labels = try CountedBuffer<Int32>(count: count, what: "labels")
            for item in 0..<count { labels.pointer[item] = Int32(item % classes) }
            return labels
        }
        return ImageDataset(count: count, channels: channels, height: height, width: width,
                            classes: classes.map { (0..<$0).map { "class \($0)" } }, pixels: pixels, labels: labels)
    }
}

/// The bytes a [-1, 1] value came from: (x + 1) × 127.5, exact for the values ImageDataset makes.
func byte(_ value: Float) -> Int { Int(((value + 1) * 127.5).rounded()) }
