import Foundation
import KiriTensor
import XCTest
@testable import KiriData

/// The data order and batches: DataOrder against an independent Python model of its layout, batches that depend on
/// (seed, step) alone, epochs covered exactly once, batches that straddle two epochs, mirrored images, and the
/// batch's argument errors.
final class BatchTests: DataTestCase {
    static let reference = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/data/data_order_reference.txt").path

    func testPermutationsAndFlipsEqualThePythonReference() throws {
        let lines = try String(contentsOfFile: Self.reference, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("#") }
        var checked = (permutations: 0, flips: 0)
        for line in lines {
            let fields = line.split(separator: " ").map(String.init)
            if fields[0] == "permutation" {
                let (count, seed, epoch) = (Int(fields[1])!, UInt64(fields[2])!, UInt64(fields[3])!)
                var order = [Int32](repeating: -1, count: count)
                order.withUnsafeMutableBufferPointer { DataOrder.permutation(count: count, seed: seed, epoch: epoch, into: $0.baseAddress!) }
                XCTAssertEqual(order.map(String.init), Array(fields[4...]), String(line.prefix(40)))
                checked.permutations += 1
            } else {
                let (seed, epoch) = (UInt64(fields[1])!, UInt64(fields[2])!)
                let flips = (0..<64).map { DataOrder.flips(seed: seed, epoch: epoch, position: $0) ? "1" : "0" }.joined()
                XCTAssertEqual(flips, fields[3], String(line.prefix(40)))
                checked.flips += 1
            }
        }
        XCTAssertEqual(checked.permutations, 8)
        XCTAssertEqual(checked.flips, 3)
    }

    /// The item of `dataset` an image of a batch is, and whether it is mirrored (nil: none).
    func identify(_ image: ArraySlice<Float>, in dataset: ImageDataset) throws -> (index: Int, flipped: Bool)? {
        let width = dataset.width
        for index in 0..<dataset.count {
            let item = try dataset.item(index).image.values
            if Array(image) == item { return (index, false) }
            let mirrored = (0..<item.count).map { item[($0 / width) * width + width - 1 - $0 % width] }
            if Array(image) == mirrored { return (index, true) }
        }
        return nil
    }

    func indices(_ dataset: ImageDataset, size: Int, seed: UInt64, step: Int, flip: Bool = false) throws -> [Int] {
        let images = try dataset.batch(size: size, seed: seed, step: step, flip: flip).images.values
        let itemSize = dataset.itemBytes
        return try (0..<size).map { slot in
            try XCTUnwrap(identify(images[(slot * itemSize)..<((slot + 1) * itemSize)], in: dataset)).index
        }
    }

    func testTheSameSeedAndStepGiveTheSameBytesAndOthersDiffer() throws {
        let first = try dataset(count: 40, channels: 3, classes: 4), second = try dataset(count: 40, channels: 3, classes: 4)
        let a = try first.batch(size: 8, seed: 7, step: 5, flip: true)
        _ = try second.batch(size: 8, seed: 99, step: 0)     // another order cached first changes nothing
        let b = try second.batch(size: 8, seed: 7, step: 5, flip: true)
        XCTAssertEqual(a.images.shape, [8, 3, 3, 4])
        XCTAssertEqual(a.images.values.map(\.bitPattern), b.images.values.map(\.bitPattern))
        XCTAssertEqual(try XCTUnwrap(a.labels).values, try XCTUnwrap(b.labels).values)
        XCTAssertNotEqual(try first.batch(size: 8, seed: 7, step: 6, flip: true).images.values, a.images.values)
        XCTAssertNotEqual(try first.batch(size: 8, seed: 8, step: 5, flip: true).images.values, a.images.values)
        // Labels follow their images.
        for (slot, label) in try XCTUnwrap(a.labels).values.enumerated() {
            let index = try XCTUnwrap(identify(a.images.values[(slot * 36)..<(slot * 36 + 36)], in: first)).index
            XCTAssertEqual(Int(label), index % 4)
        }
    }

    func testTheBatchesOfAnEpochCoverEveryItemOnceAndTheNextEpochIsAnotherOrder() throws {
        for (count, size) in [(12, 4), (10, 3), (7, 7), (9, 1)] {
            let data = try dataset(count: count)
            let batches = (count + size - 1) / size
            let taken = try (0..<batches).flatMap { try indices(data, size: size, seed: 3, step: $0) }
            XCTAssertEqual(Array(taken.prefix(count)).sorted(), Array(0..<count), "\(count) items in batches of \(size)")
            var order = [Int32](repeating: 0, count: count)
            order.withUnsafeMutableBufferPointer { DataOrder.permutation(count: count, seed: 3, epoch: 0, into: $0.baseAddress!) }
            XCTAssertEqual(Array(taken.prefix(count)), order.map(Int.init))
            // Epoch 1, which the last of these batches enters when size does not divide count: its own permutation.
            let next = try (batches..<(batches + batches)).flatMap { try indices(data, size: size, seed: 3, step: $0) }
            let epochOne = Array((taken + next)[count..<(2 * count)])
            XCTAssertEqual(epochOne.sorted(), Array(0..<count))
            order.withUnsafeMutableBufferPointer { DataOrder.permutation(count: count, seed: 3, epoch: 1, into: $0.baseAddress!) }
            XCTAssertEqual(epochOne, order.map(Int.init))
            if count > 2 { XCTAssertNotEqual(epochOne, Array(taken.prefix(count)), "epoch 1 repeats epoch 0's order") }
        }
    }

    func testABatchStraddlingTwoEpochsTakesTheEndOfOneAndTheStartOfTheNext() throws {
        let data = try dataset(count: 10)
        var epochs = [[Int32]](repeating: [Int32](repeating: 0, count: 10), count: 3)
        for epoch in 0..<3 {
            epochs[epoch].withUnsafeMutableBufferPointer { DataOrder.permutation(count: 10, seed: 11, epoch: UInt64(epoch), into: $0.baseAddress!) }
        }
        // Batch 6 of 3 takes positions 18, 19 (epoch 1) and 20 (epoch 2): asked for first, with nothing cached.
        XCTAssertEqual(try indices(data, size: 3, seed: 11, step: 6), [epochs[1][8], epochs[1][9], epochs[2][0]].map(Int.init))
        // A batch as large as the dataset, straddling: positions 15 ..< 25.
        XCTAssertEqual(try indices(data, size: 10, seed: 11, step: 1).count, 10)
        XCTAssertEqual(try indices(data, size: 5, seed: 11, step: 3), (epochs[1][5...9]).map(Int.init))
    }

    func testFlipMirrorsExactlyTheItemsDataOrderSays() throws {
        let data = try dataset(count: 64, channels: 2, height: 2, width: 5)
        let itemSize = data.itemBytes
        var mirrored = 0
        for step in 0..<3 {
            let images = try data.batch(size: 48, seed: 5, step: step, flip: true).images.values
            for slot in 0..<48 {
                let found = try XCTUnwrap(identify(images[(slot * itemSize)..<((slot + 1) * itemSize)], in: data))
                let position = step * 48 + slot
                XCTAssertEqual(found.flipped, DataOrder.flips(seed: 5, epoch: UInt64(position / 64), position: position % 64))
                if found.flipped { mirrored += 1 }
            }
            let plain = try data.batch(size: 48, seed: 5, step: step, flip: false).images.values
            for slot in 0..<48 { XCTAssertEqual(try identify(plain[(slot * itemSize)..<((slot + 1) * itemSize)], in: data)?.flipped, false) }
        }
        XCTAssert((40...104).contains(mirrored), "\(mirrored) of 144 mirrored")
        // The dataset's own setting is the default.
        data.flip = true
        XCTAssertEqual(try data.batch(size: 48, seed: 5, step: 1).images.values, try data.batch(size: 48, seed: 5, step: 1, flip: true).images.values)
    }

    func testBytesBecomeMinusOneToOneAsTorchvisionNormalisesThem() throws {
        let pixels = try CountedBuffer<UInt8>(count: 4, what: "pixels")
        for (i, value) in [0, 128, 255, 51].enumerated() { pixels.pointer[i] = UInt8(value) }
        let data = ImageDataset(count: 1, channels: 1, height: 2, width: 2, classes: nil, pixels: pixels, labels: nil)
        let (image, label) = try data.item(0)
        XCTAssertNil(label)
        // torchvision: ToTensor (x / 255 in float32), then Normalize(0.5, 0.5).
        XCTAssertEqual(image.values, [-1, (Float(128) / 255 - 0.5) / 0.5, 1, (Float(51) / 255 - 0.5) / 0.5])
        XCTAssertNil(try data.batch(size: 1, seed: 0, step: 0).labels)
    }

    func testBadBatchArgumentsNameTheArgumentAndTheNumbers() throws {
        let data = try dataset(count: 10)
        let tooLarge = dataError { _ = try data.batch(size: 11, seed: 0, step: 0) }
        XCTAssertEqual(tooLarge?.argument, 1)
        XCTAssertEqual(tooLarge?.message, "a batch of 11 is larger than the dataset's 10 items")
        XCTAssertEqual(dataError { _ = try data.batch(size: 0, seed: 0, step: 0) }?.argument, 1)
        XCTAssertEqual(dataError { _ = try data.batch(size: 2, seed: 0, step: -1) }?.message, "step must be 0 or more, got -1")
        XCTAssertEqual(dataError { _ = try data.batch(size: 2, seed: 0, step: Int.max / 2 + 1) }?.argument, 3)
        XCTAssertEqual(try data.batch(size: 2, seed: 0, step: Int.max / 2 - 1).images.shape, [2, 1, 3, 4])
    }
}
