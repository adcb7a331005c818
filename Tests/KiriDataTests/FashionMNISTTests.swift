import Foundation
import XCTest
@testable import KiriData

/// The IDX reader on Debian's Fashion-MNIST (dataset-fashion-mnist, which setup.sh installs) against facts computed
/// independently, with Python's gzip and numpy rather than zlib through Kiri:
///
///     /work/venv/bin/python Tests/Fixtures/data/fashion_mnist_facts.py
///
/// printed the numbers below (the train split first, then t10k).
final class FashionMNISTTests: XCTestCase {
    static let folder = "/usr/share/datasets/fashion-mnist"

    struct Facts {
        var items: Int
        var histogram: [Int]
        var firstLabels: [Int]
        var lastLabel: Int
        var firstImageSum: Int
        var firstImageNonzero: Int
        var firstImageCentre: Int
        var firstImageRowSums: [Int]
        var lastImageSum: Int
        var pixelSum: Int
    }

    static let train = Facts(
        items: 60000, histogram: Array(repeating: 6000, count: 10), firstLabels: [9, 0, 0, 3, 0, 2, 7, 2, 5, 5],
        lastLabel: 5, firstImageSum: 76247, firstImageNonzero: 433, firstImageCentre: 217,
        firstImageRowSums: [0, 0, 0, 94, 429, 934, 1690, 2296, 2842, 3069, 2964, 3019, 3088, 3076, 3240, 3646, 4405, 5485,
                            5355, 5318, 5712, 5380, 5053, 4702, 4157, 293, 0, 0],
        lastImageSum: 16684, pixelSum: 3_431_114_169)

    static let test = Facts(
        items: 10000, histogram: Array(repeating: 1000, count: 10), firstLabels: [9, 2, 1, 1, 6, 1, 4, 6, 5, 7],
        lastLabel: 5, firstImageSum: 33456, firstImageNonzero: 267, firstImageCentre: 110,
        firstImageRowSums: [0, 0, 0, 0, 0, 0, 0, 48, 244, 563, 1548, 1692, 1757, 1860, 2076, 2257, 2608, 3173, 3507, 3880,
                            5010, 3233, 0, 0, 0, 0, 0, 0],
        lastImageSum: 24390, pixelSum: 573_469_082)

    func load(_ prefix: String) throws -> ImageDataset {
        guard FileManager.default.fileExists(atPath: Self.folder) else {
            throw XCTSkip("\(Self.folder) is missing: install Debian's dataset-fashion-mnist (./setup.sh does)")
        }
        let images = "\(prefix)-images-idx3-ubyte.gz", labels = "\(prefix)-labels-idx1-ubyte.gz"
        return try IDXFile.dataset(images: (Self.folder + "/" + images, images), labels: (Self.folder + "/" + labels, labels),
                                   classes: (0..<10).map { "class \($0)" })
    }

    func check(_ dataset: ImageDataset, against facts: Facts) throws {
        XCTAssertEqual(dataset.count, facts.items)
        XCTAssertEqual([dataset.channels, dataset.height, dataset.width], [1, 28, 28])
        let labels = try XCTUnwrap(dataset.labels)
        var histogram = Array(repeating: 0, count: 10)
        for item in 0..<dataset.count { histogram[Int(labels.pointer[item])] += 1 }
        XCTAssertEqual(histogram, facts.histogram)
        XCTAssertEqual((0..<10).map { Int(labels.pointer[$0]) }, facts.firstLabels)
        XCTAssertEqual(Int(labels.pointer[dataset.count - 1]), facts.lastLabel)

        let pixels = dataset.pixels.buffer
        let first = pixels[0..<784].map(Int.init)
        XCTAssertEqual(first.reduce(0, +), facts.firstImageSum)
        XCTAssertEqual(first.filter { $0 > 0 }.count, facts.firstImageNonzero)
        XCTAssertEqual(first[14 * 28 + 14], facts.firstImageCentre)
        XCTAssertEqual((0..<28).map { row in first[(row * 28)..<(row * 28 + 28)].reduce(0, +) }, facts.firstImageRowSums)
        XCTAssertEqual(pixels[(pixels.count - 784)...].reduce(0) { $0 + Int($1) }, facts.lastImageSum)
        XCTAssertEqual(pixels.reduce(0) { $0 + Int($1) }, facts.pixelSum)

        // ds:get's view of the same item: bytes scaled to [-1, 1].
        let (image, label) = try dataset.item(0)
        XCTAssertEqual(image.shape, [1, 28, 28])
        XCTAssertEqual(label, facts.firstLabels[0])
        XCTAssertEqual(image.values.map(byte), first)
    }

    func testTheTrainingSplitHasSixtyThousandItemsSixThousandPerClassAndAnAnkleBootFirst() throws {
        try check(try load("train"), against: Self.train)
    }

    func testTheTestSplitHasTenThousandItems() throws {
        try check(try load("t10k"), against: Self.test)
    }
}
