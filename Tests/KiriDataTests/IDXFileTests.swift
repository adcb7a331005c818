import Foundation
import KiriTensor
import XCTest
@testable import KiriData

/// The IDX reader on hostile files the test writes: every lie a header can tell (magic, type, rank, sizes), files
/// shorter or longer than declared, damaged gzip streams, images and labels that disagree, and the memory cap, each
/// an error that names the file.
final class IDXFileTests: DataTestCase {
    let pixels: [UInt8] = (0..<24).map { UInt8($0 * 10) }   // 2 images of 3×4

    func read(_ path: String, rank: Int = 3) throws -> (sizes: [Int], bytes: CountedBuffer<UInt8>) {
        try IDXFile.read(path: path, name: "images.idx", rank: rank)
    }

    func testAGoodFileReadsTheSameGzippedOrPlain() throws {
        for gzip in [false, true] {
            let (sizes, bytes) = try read(try write(idx([2, 3, 4], pixels), "a\(gzip).idx", gzip: gzip))
            XCTAssertEqual(sizes, [2, 3, 4])
            XCTAssertEqual(Array(bytes.buffer), pixels)
        }
    }

    func testAWrongMagicNumberIsRefused() throws {
        let notIDX = try write([0x12, 0x34, 0x56, 0x78] + pixels, "not.idx")
        assertDataError(["'images.idx'", "not an IDX file", "0x12345678", "expected 0x00000803"]) { _ = try read(notIDX) }
        let notGzip = try write([0x1f, 0x8b, 0x08, 0x00] + pixels, "not.gz")   // gzip's magic number, then no gzip stream
        assertDataError(["'images.idx'", "corrupt or truncated"]) { _ = try read(notGzip) }
        let floats = try write(idx([2, 3, 4], pixels, magic: [0, 0, 0x0D, 3]), "floats.idx")
        assertDataError(["'images.idx'", "type 0x0D", "unsigned bytes"]) { _ = try read(floats) }
        let labels = try write(idx([24], pixels), "labels.idx")
        assertDataError(["'images.idx'", "1 dimensions, expected 3"]) { _ = try read(labels) }
        let empty = try write([], "empty.idx")
        assertDataError(["'images.idx'", "0 bytes, too short"]) { _ = try read(empty) }
    }

    func testSizesOutOfBoundsAreRefusedBeforeAllocating() throws {
        let budget = MemoryBudget(limit: 1 << 20)
        try MemoryBudget.$current.withValue(budget) {
            let none = try write(idx([0, 3, 4], []), "none.idx")
            assertDataError(["'images.idx'", "0 items"]) { _ = try read(none) }
            let flat = try write(idx([2, 0, 4], []), "flat.idx")
            assertDataError(["'images.idx'", "images of 0×4 pixels", "outside 1 to 65536"]) { _ = try read(flat) }
            let huge = try write(idx([1 << 30, 65536, 65536], pixels), "huge.idx")
            assertDataError(["'images.idx'", "more than the 2.0 GiB"]) { _ = try read(huge) }
            // Declares 10000 images of 28×28 (7.5 MiB): over the 1 MiB cap, refused before any byte is inflated.
            let big = try write(idx([10000, 28, 28], pixels), "big.idx", gzip: true)
            assertDataError(["'images.idx'", "7.5 MiB", "memory cap"]) { _ = try read(big) }
        }
        XCTAssertEqual(budget.used, 0)
        XCTAssertLessThanOrEqual(budget.peak, 1 << 10, "something was allocated for a refused file")
    }

    func testTheBytesCountAgainstTheCapWhileKept() throws {
        let budget = MemoryBudget(limit: 1 << 20)
        try MemoryBudget.$current.withValue(budget) {
            let path = try write(idx([2, 3, 4], pixels), "a.idx", gzip: true)
            var kept: CountedBuffer<UInt8>? = try read(path).bytes
            XCTAssertEqual(budget.used, 24)
            kept = nil
            XCTAssertNil(kept)
            XCTAssertEqual(budget.used, 0)
        }
    }

    func testATruncatedFileIsRefused() throws {
        let short = try write(idx([2, 3, 4], Array(pixels.prefix(20))), "short.idx")
        assertDataError(["'images.idx'", "truncated", "20 of the 24 bytes", "2×3×4"]) { _ = try read(short) }
        let header = try write(Array(idx([2, 3, 4], []).prefix(10)), "header.idx")
        assertDataError(["'images.idx'", "truncated in its header"]) { _ = try read(header) }
        // A gzip stream cut in the middle of its data, and one whose CRC trailer was cut off.
        let long: [UInt8] = (0..<(4 * 64 * 64)).map { UInt8(truncatingIfNeeded: $0 * 7919 >> 3) }
        let whole = try Data(contentsOf: URL(fileURLWithPath: try write(idx([4, 64, 64], long), "whole.gz", gzip: true)))
        let cut = try write(Array(whole.prefix(whole.count / 2)), "cut.gz")
        assertDataError(["'images.idx'", "corrupt or truncated", "unexpected end of file", "of the 16384 bytes"]) { _ = try read(cut) }
        let noTrailer = try write(Array(whole.prefix(whole.count - 8)), "notrailer.gz")
        assertDataError(["'images.idx'", "corrupt or truncated", "unexpected end of file"]) { _ = try read(noTrailer) }
    }

    func testADamagedGzipStreamIsRefused() throws {
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try write(idx([2, 3, 4], pixels), "a.gz", gzip: true))))
        bytes[bytes.count - 8] ^= 0xFF    // the CRC-32 of the data
        let badCRC = try write(bytes, "crc.gz")
        assertDataError(["'images.idx'", "corrupt or truncated: incorrect data check"]) { _ = try read(badCRC) }
        // The same for a stream too long to be inflated at once: its data comes, then the check fails.
        let long: [UInt8] = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 * 7919 >> 5) }
        var longBytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try write(idx([1, 1024, 1024], long), "long.gz", gzip: true))))
        longBytes[longBytes.count - 8] ^= 0xFF
        let longBadCRC = try write(longBytes, "longcrc.gz")
        assertDataError(["'images.idx'", "corrupt or truncated: incorrect data check"]) { _ = try read(longBadCRC) }
        // No message shows the host path zlib puts before its own.
        for path in [badCRC, longBadCRC] {
            XCTAssertFalse(dataError { _ = try read(path) }?.message.contains(scratch) ?? true)
        }
    }

    func testAFileLongerThanItsHeaderSaysIsRefused() throws {
        for gzip in [false, true] {
            let long = try write(idx([2, 3, 4], pixels + [1]), "long\(gzip).idx", gzip: gzip)
            assertDataError(["'images.idx'", "longer than its header declares", "2×3×4 = 24 bytes"]) { _ = try read(long) }
        }
    }

    func testImagesAndLabelsMustAgree() throws {
        let images = try write(idx([2, 3, 4], pixels), "images.idx", gzip: true)
        let three = try write(idx([3], [1, 2, 0]), "three.idx", gzip: true)
        let classes = ["a", "b", "c"]
        assertDataError(["'three-labels'", "3 labels for the 2 images of 'the-images'"]) {
            _ = try IDXFile.dataset(images: (images, "the-images"), labels: (three, "three-labels"), classes: classes)
        }
        let outOfRange = try write(idx([2], [1, 3]), "range.idx")
        assertDataError(["'range-labels'", "item 2 has label 3", "0 to 2"]) {
            _ = try IDXFile.dataset(images: (images, "the-images"), labels: (outOfRange, "range-labels"), classes: classes)
        }
        let good = try write(idx([2], [2, 0]), "good.idx")
        let dataset = try IDXFile.dataset(images: (images, "the-images"), labels: (good, "good-labels"), classes: classes)
        XCTAssertEqual(try dataset.item(0).label, 2)
        XCTAssertEqual(try dataset.item(1).label, 0)
        XCTAssertEqual(try dataset.item(1).image.values.map(byte), pixels[12...].map(Int.init))
    }
}
