import XCTest
@testable import KiriTensor

final class MemoryTests: XCTestCase {
    func testBudgetCounts() {
        let budget = MemoryBudget(limit: 100)
        XCTAssertEqual([budget.counter[0], budget.counter[1], budget.counter[2]], [0, 0, 100])
        XCTAssertTrue(budget.reserve(60))
        XCTAssertFalse(budget.reserve(41), "60 + 41 passes the limit")
        XCTAssertEqual(budget.used, 60, "a refused reservation charges nothing")
        XCTAssertTrue(budget.reserve(40))
        XCTAssertEqual(budget.used, 100)
        XCTAssertFalse(budget.reserve(-1))
        budget.release(70)
        XCTAssertEqual(budget.used, 30)
        XCTAssertEqual(budget.peak, 100)
        budget.resetPeak()
        XCTAssertEqual(budget.peak, 30)
        // The raw counter is the same memory a C allocator would update.
        budget.counter[0] += 5
        XCTAssertEqual(budget.used, 35)
        XCTAssertFalse(budget.reserve(Int.max), "no overflow on huge requests")
    }

    func testTensorsChargeAndRefund() throws {
        let budget = MemoryBudget(limit: 1000)
        try MemoryBudget.$current.withValue(budget) {
            let before = budget.used
            var kept: Tensor? = try Tensor.zeros([100])
            XCTAssertEqual(budget.used, before + 400)
            XCTAssertThrowsError(try Tensor.zeros([200])) { XCTAssertEqual($0 as? TensorError, .outOfMemory) }
            XCTAssertEqual(budget.used, before + 400, "the refused tensor charged nothing")
            // Results of operations are charged the same way, and refused the same way.
            XCTAssertThrowsError(try kept!.repeated([2])) { XCTAssertEqual($0 as? TensorError, .outOfMemory) }
            let sum = try kept!.binary(.add, 1)
            XCTAssertEqual(budget.used, before + 800)
            XCTAssertEqual(sum.values.first, 1)
            // A reshape view shares its storage and costs nothing.
            let view = try sum.reshape([10, 10])
            XCTAssertEqual(budget.used, before + 800)
            withExtendedLifetime(view) {}
            kept = nil
            XCTAssertEqual(budget.used, before + 400)
            withExtendedLifetime(sum) {}
        }
        XCTAssertEqual(budget.used, 0, "everything refunded once the tensors are gone")
        XCTAssertEqual(budget.peak, 800)
    }

    func testNoBudgetIsUnlimited() throws {
        XCTAssertNil(MemoryBudget.current)
        XCTAssertEqual(try Tensor.ones([1000]).count, 1000)
    }

    func testReleaseFreesEarly() throws {
        let budget = MemoryBudget(limit: 1 << 20)
        try MemoryBudget.$current.withValue(budget) {
            let tensor = try Tensor.ones([2, 3])
            let view = try tensor.reshape([6])
            XCTAssertEqual(budget.used, 24)
            XCTAssertEqual(tensor.storage.count, 6)
            XCTAssertFalse(tensor.isReleased)
            view.storage.release()
            XCTAssertEqual(budget.used, 0)
            XCTAssertTrue(tensor.isReleased, "the view and its base share one storage")
            XCTAssertEqual(tensor.storage.count, 0)
            tensor.storage.release()
            XCTAssertEqual(budget.used, 0, "a second release refunds nothing")
            XCTAssertThrowsError(try tensor.binary(.add, 1))
        }
        XCTAssertEqual(budget.used, 0, "deinit after release refunds nothing either")
    }

    func testStorageAlignment() throws {
        for count in [0, 1, 3, 1000] {
            XCTAssertEqual(Int(bitPattern: try TensorStorage(count: count).pointer) % 64, 0)
        }
        XCTAssertThrowsError(try TensorStorage(count: -1))
    }
}
