import Foundation
import KiriImage
import KiriTensor
import XCTest
@testable import KiriData

/// Folders of PNGs as datasets: classes from sorted subfolder names, what is skipped, channel conversion, images of
/// another size handed out for resizing, and the bad folders (no images, mixed sizes or colours, a broken PNG, an
/// empty class, loose images beside classes), each an error naming the file or folder.
final class ImageFolderTests: DataTestCase {
    /// Writes a `width`×`height` PNG with `channels` channels whose bytes are `fill(byte index)`.
    func png(_ name: String, width: Int = 4, height: Int = 3, channels: Int = 1, fill: (Int) -> Int = { $0 }) throws {
        let image = try PNGImage(width: width, height: height, channels: channels,
                                 pixels: (0..<(width * height * channels)).map { UInt8(truncatingIfNeeded: fill($0)) })
        try write(try image.encoded(), name)
    }

    func folder(_ name: String = "images", channels: Int? = nil, size: (Int, Int)? = nil,
                resolve: (String) throws -> String = { $0 }) throws -> ImageFolder {
        try ImageFolder(path: scratch + "/" + name, name: name, channels: channels, size: size.map { (height: $0.0, width: $0.1) },
                        resolve: { path in try resolve(path.replacingOccurrences(of: name, with: self.scratch + "/" + name)) })
    }

    func testSubfoldersAreClassesInNameOrderAndOthersAreSkipped() throws {
        try png("images/sneaker/b.png", fill: { _ in 3 })
        try png("images/sneaker/a.PNG", fill: { _ in 2 })
        try png("images/bag/z.png", fill: { _ in 1 })
        try png("images/bag/.hidden.png", fill: { _ in 9 })
        try png("images/bag/deeper/x.png", fill: { _ in 9 })     // one level only
        try write(Array("not an image".utf8), "images/bag/notes.txt")
        try png("images/.git/x.png", fill: { _ in 9 })
        let folder = try self.folder()
        XCTAssertEqual(folder.classes, ["bag", "sneaker"])
        let dataset = folder.dataset()
        XCTAssertEqual(dataset.count, 3)
        XCTAssertEqual(try (0..<3).map { try dataset.item($0).label }, [0, 1, 1])
        XCTAssertEqual(try (0..<3).map { try dataset.item($0).image.values.map(byte)[0] }, [1, 2, 3])   // z, a, b
        XCTAssertEqual([dataset.channels, dataset.height, dataset.width], [1, 3, 4])
    }

    func testImagesDirectlyInTheFolderHaveNoLabels() throws {
        for i in 0..<3 { try png("images/\(i).png", fill: { $0 + i }) }
        let dataset = try folder().dataset()
        XCTAssertNil(dataset.classes)
        XCTAssertNil(try dataset.item(2).label)
        XCTAssertEqual(try dataset.item(2).image.values.map(byte), (0..<12).map { $0 + 2 })
    }

    func testChannelsAreConvertedAsPillowDoesAndAlphaIsDropped() throws {
        // RGBA pixel k: (10k, 20k, 30k, 255 - k); its grey is Pillow's convert("L"): (19595 R + 38470 G + 7471 B + 0x8000) >> 16.
        try png("images/rgba.png", width: 2, height: 1, channels: 4, fill: { [0, 0, 0, 255, 90, 180, 250, 7][$0] })
        let grey = try folder(channels: 1).dataset()
        XCTAssertEqual(try grey.item(0).image.values.map(byte), [0, (19595 * 90 + 38470 * 180 + 7471 * 250 + 0x8000) >> 16])
        let rgb = try folder().dataset()
        XCTAssertEqual(rgb.channels, 3)
        XCTAssertEqual(try rgb.item(0).image.values.map(byte), [0, 90, 0, 180, 0, 250])   // planes R, G, B
        try FileManager.default.removeItem(atPath: scratch + "/images/rgba.png")
        try png("images/grey-alpha.png", width: 2, height: 1, channels: 2, fill: { [40, 255, 60, 0][$0] })
        XCTAssertEqual(try folder(channels: 3).dataset().item(0).image.values.map(byte), [40, 60, 40, 60, 40, 60])
    }

    func testBadFoldersAreErrorsThatNameTheFile() throws {
        try FileManager.default.createDirectory(atPath: scratch + "/images", withIntermediateDirectories: true)
        assertDataError(["'images' has no PNG images"]) { _ = try folder() }
        try write(Array("text".utf8), "images/readme.txt")
        assertDataError(["'images' has no PNG images"]) { _ = try folder() }

        try png("images/a/1.png")
        try png("images/a/2.png", width: 5)
        assertDataError(["'images/a/2.png' is 5×3", "'images/a/1.png' is 4×3", "give size"]) { _ = try folder() }
        try png("images/a/2.png", channels: 3)
        assertDataError(["'images/a/2.png' is RGB", "'images/a/1.png' is grey", "channels = 1 or 3"]) { _ = try folder() }
        XCTAssertEqual(try folder(channels: 3).dataset().channels, 3)
        try write(Array("\u{89}PNG but not really".utf8), "images/a/2.png")
        guard let broken = dataError({ _ = try folder() }) else { return }
        XCTAssert(broken.message.contains("images/a/2.png"), broken.message)

        try FileManager.default.removeItem(atPath: scratch + "/images/a/2.png")
        try FileManager.default.createDirectory(atPath: scratch + "/images/b", withIntermediateDirectories: true)
        assertDataError(["the class folder 'images/b' has no PNG images"]) { _ = try folder() }
        try png("images/b/1.png")
        try png("images/loose.png")
        assertDataError(["'images' has both class subfolders and images outside them", "'images/loose.png'"]) { _ = try folder() }
    }

    func testEveryFileGoesThroughResolve() throws {
        try png("images/a/1.png")
        try png("images/a/2.png")
        var resolved: [String] = []
        _ = try folder(resolve: { resolved.append($0); return $0 })
        XCTAssertEqual(resolved.map { String($0.dropFirst(scratch.count + 1)) }, ["images/a", "images/a/1.png", "images/a/2.png"])
        struct Refused: Error {}
        XCTAssertThrowsError(try folder(resolve: { if $0.hasSuffix("2.png") { throw Refused() }; return $0 })) {
            XCTAssert($0 is Refused)
        }
    }

    func testImagesOfAnotherSizeAreHandedOutBySizeForResizing() throws {
        try png("images/0.png", width: 2, height: 2, fill: { _ in 10 })
        try png("images/1.png", width: 3, height: 1, fill: { _ in 20 })
        try png("images/2.png", width: 4, height: 3, fill: { _ in 30 })
        try png("images/3.png", width: 3, height: 1, fill: { _ in 40 })
        let folder = try self.folder(size: (3, 4))
        var groups: [[Int]] = []
        while let images = try folder.nextGroup(floats: 5) {   // one 1×3 image at a time (two would take 6 floats)
            XCTAssertEqual(images.shape[1], 1)
            groups.append(images.shape)
            let values = images.values
            XCTAssertEqual(Set(values.map { Int(($0 * 255).rounded()) }).count, images.shape[0], "one value per image")
            XCTAssertThrowsError(try folder.store(try Tensor.zeros([images.shape[0], 1, 3, 3]), resizer: "the resizer")) {
                XCTAssert("\($0)".contains("the resizer returned shape [\(images.shape[0]), 1, 3, 3]"), "\($0)")
            }
            // A stand-in resize: each image's first value everywhere.
            let resized = try Tensor.zeros([images.shape[0], 1, 3, 4])
            let plane = images.shape[2] * images.shape[3]
            for slot in 0..<images.shape[0] {
                for i in 0..<12 { resized.data[slot * 12 + i] = values[slot * plane] }
            }
            try folder.store(resized, resizer: "the resizer")
        }
        XCTAssertEqual(groups, [[1, 1, 1, 3], [1, 1, 1, 3], [1, 1, 2, 2]])   // by size, (1, 3) before (2, 2)
        let dataset = folder.dataset()
        XCTAssertEqual(try (0..<4).map { try dataset.item($0).image.values.map(byte) }, [10, 20, 30, 40].map { Array(repeating: $0, count: 12) })
    }

    func testTheImagesCountAgainstTheMemoryCap() throws {
        for i in 0..<20 { try png("images/\(i).png", width: 64, height: 64, channels: 3) }
        let budget = MemoryBudget(limit: 200_000)
        MemoryBudget.$current.withValue(budget) {
            assertDataError(["20 images of 3×64×64 bytes", "240 KiB", "memory cap"]) { _ = try folder() }
        }
        XCTAssertEqual(budget.used, 0)
    }
}
