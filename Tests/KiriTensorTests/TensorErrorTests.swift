import XCTest
@testable import KiriTensor

/// Every invalid input throws (never traps), naming the documented argument and both shapes where two meet.
final class TensorErrorTests: XCTestCase {
    private func assertThrows<T>(_ expression: @autoclosure () throws -> T, argument: Int?, _ message: String,
                                 file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try expression(), file: file, line: line) { error in
            XCTAssertEqual(error as? TensorError, TensorError(argument: argument, message), file: file, line: line)
        }
    }

    private func tensor(_ shape: [Int]) throws -> Tensor { try Tensor.zeros(shape) }

    func testDescription() {
        XCTAssertEqual(TensorError(argument: 2, "shapes [2, 3] and [4] cannot be broadcast").description,
                       "bad argument #2 (shapes [2, 3] and [4] cannot be broadcast)")
        XCTAssertEqual(TensorError.outOfMemory.description, "not enough memory")
        XCTAssertNil(TensorError.outOfMemory.argument)
        XCTAssertEqual(shapeString([2, 3]), "[2, 3]")
        XCTAssertEqual(shapeString([]), "[]")
    }

    func testBroadcastFailures() throws {
        let a = try tensor([2, 3]), b = try tensor([4])
        for op in Tensor.BinaryOp.allCases {
            assertThrows(try a.binary(op, b), argument: 2, "shapes [2, 3] and [4] cannot be broadcast")
        }
        assertThrows(try a.lerp(b, weight: 0.5), argument: 2, "shapes [2, 3] and [4] cannot be broadcast")
        assertThrows(try a.lerp(a, weight: b), argument: 3, "shapes [2, 3] and [4] cannot be broadcast")
        assertThrows(try Tensor.where(a, b, a), argument: 2, "shapes [2, 3] and [4] cannot be broadcast")
        assertThrows(try Tensor.where(a, a, b), argument: 3, "shapes [2, 3] and [4] cannot be broadcast")
    }

    func testResultShapeMismatch() throws {
        let a = try tensor([2, 3]), wrong = try tensor([3])
        assertThrows(try a.binary(.add, a, into: wrong), argument: 1, "result shape [3] does not match [2, 3]")
        assertThrows(try a.binary(.mul, 2, into: wrong), argument: 1, "result shape [3] does not match [2, 3]")
        assertThrows(try a.binary(.sub, scalarOnLeft: 2, into: wrong), argument: 1, "result shape [3] does not match [2, 3]")
        assertThrows(try a.unary(.exp, into: wrong), argument: 1, "result shape [3] does not match [2, 3]")
        assertThrows(try a.clamp(min: 0, max: 1, into: wrong), argument: 1, "result shape [3] does not match [2, 3]")
        assertThrows(try a.lerp(a, weight: 0.5, into: wrong), argument: 1, "result shape [3] does not match [2, 3]")
        assertThrows(try Tensor.where(a, a, a, into: wrong), argument: 1, "result shape [3] does not match [2, 3]")
        assertThrows(try a.matmul(try tensor([3, 4]), into: wrong), argument: 1, "result shape [3] does not match [2, 4]")
    }

    func testInPlaceShapeMismatch() throws {
        let small = try tensor([3]), large = try tensor([2, 3])
        assertThrows(try small.binaryInPlace(.add, large), argument: 2, "shape [2, 3] cannot be broadcast to [3]")
        assertThrows(try small.axpy(2, large), argument: 3, "shape [2, 3] cannot be broadcast to [3]")
        assertThrows(try small.copy(from: large), argument: 2, "shape [2, 3] cannot be broadcast to [3]")
        assertThrows(try large.copy(from: try tensor([2])), argument: 2, "shape [2] cannot be broadcast to [2, 3]")
    }

    func testDimensionsOutOfRange() throws {
        let a = try tensor([2, 3])
        assertThrows(try a.reduce(.sum, dim: 2), argument: 2, "dimension 2 out of range for a rank-2 tensor")
        assertThrows(try a.reduce(.mean, dim: -3), argument: 2, "dimension -3 out of range for a rank-2 tensor")
        assertThrows(try a.argmax(dim: 3), argument: 2, "dimension 3 out of range for a rank-2 tensor")
        assertThrows(try a.narrow(2, start: 0, length: 1), argument: 2, "dimension 2 out of range for a rank-2 tensor")
        assertThrows(try a.select(-3, index: 0), argument: 2, "dimension -3 out of range for a rank-2 tensor")
        assertThrows(try a.transpose(0, 2), argument: 3, "dimension 2 out of range for a rank-2 tensor")
        assertThrows(try a.transpose(5, 0), argument: 2, "dimension 5 out of range for a rank-2 tensor")
        assertThrows(try a.permute([0, 2]), argument: 2, "dimension 2 out of range for a rank-2 tensor")
        assertThrows(try Tensor.cat([a, a], dim: 2), argument: 2, "dimension 2 out of range for a rank-2 tensor")
        assertThrows(try Tensor.stack([a, a], dim: 3), argument: 2, "dimension 3 out of range for stacking rank-2 tensors")
        assertThrows(try Tensor.stack([a, a], dim: -4), argument: 2, "dimension -4 out of range for stacking rank-2 tensors")
        assertThrows(try a.setSlice(2, start: 0, a), argument: 2, "dimension 2 out of range for a rank-2 tensor")
        assertThrows(try Tensor.full([], 1).reduce(.sum, dim: 0), argument: 2, "dimension 0 out of range for a rank-0 tensor")
    }

    func testRanges() throws {
        let a = try tensor([2, 3])
        assertThrows(try a.narrow(1, start: 4, length: 0), argument: 3, "start 4 out of range for dimension 1 of size 3")
        assertThrows(try a.narrow(1, start: -4, length: 1), argument: 3, "start -4 out of range for dimension 1 of size 3")
        assertThrows(try a.narrow(1, start: 1, length: 3), argument: 4,
                     "length 3 out of range: dimension 1 has size 3 and the slice starts at 1")
        assertThrows(try a.narrow(1, start: 0, length: -1), argument: 4,
                     "length -1 out of range: dimension 1 has size 3 and the slice starts at 0")
        assertThrows(try a.select(0, index: 2), argument: 3, "index 2 out of range for dimension 0 of size 2")
        assertThrows(try a.select(1, index: -4), argument: 3, "index -4 out of range for dimension 1 of size 3")
        assertThrows(try a.setSlice(1, start: 2, try tensor([2, 2])), argument: 3,
                     "slice of 2 starting at 2 overruns dimension 1 of size 3")
        assertThrows(try a.setSlice(1, start: 0, try tensor([3, 1])), argument: 4, "cannot write [3, 1] into dimension 1 of [2, 3]")
        assertThrows(try a.setSlice(1, start: 0, try tensor([3])), argument: 4, "cannot write [3] into dimension 1 of [2, 3]")
    }

    func testReshape() throws {
        let a = try tensor([2, 3])
        assertThrows(try a.reshape([4]), argument: 2, "cannot reshape [2, 3] (6 elements) to [4] (4 elements)")
        assertThrows(try a.reshape([4, -1]), argument: 2, "cannot reshape [2, 3] (6 elements) to [4, -1]")
        assertThrows(try a.reshape([-1, -1]), argument: 2, "only one size may be -1, got [-1, -1]")
        assertThrows(try a.reshape([-2, -3]), argument: 2, "negative size -2 in [-2, -3]")
        assertThrows(try tensor([0, 3]).reshape([0, -1]), argument: 2, "cannot reshape [0, 3] (0 elements) to [0, -1]")
        assertThrows(try a.reshape([1, 1, 1, 1, 2, 3]), argument: 2, "rank 6 exceeds the maximum of 5")
    }

    func testCatStackMismatch() throws {
        let a = try tensor([2, 3]), b = try tensor([2, 4])
        assertThrows(try Tensor.cat([a, b], dim: 0), argument: 1, "shapes [2, 3] and [2, 4] cannot be concatenated along dimension 0")
        assertThrows(try Tensor.cat([a, try tensor([3])], dim: 0), argument: 1, "shapes [2, 3] and [3] cannot be concatenated along dimension 0")
        assertThrows(try Tensor.stack([a, b], dim: 0), argument: 1, "shapes [2, 3] and [2, 4] cannot be stacked")
        assertThrows(try Tensor.cat([], dim: 0), argument: 1, "cat needs at least one tensor")
        assertThrows(try Tensor.stack([], dim: 0), argument: 1, "stack needs at least one tensor")
        assertThrows(try Tensor.stack([try tensor([1, 1, 1, 1, 1])], dim: 0), argument: 1,
                     "stacking rank-5 tensors would exceed the maximum rank of 5")
    }

    func testMatmul() throws {
        assertThrows(try tensor([2, 3]).matmul(try tensor([4, 5])), argument: 2, "shapes [2, 3] and [4, 5] cannot be multiplied (3 ≠ 4)")
        assertThrows(try tensor([3]).matmul(try tensor([4])), argument: 2, "shapes [3] and [4] cannot be multiplied (3 ≠ 4)")
        assertThrows(try tensor([2, 2, 3]).matmul(try tensor([3, 3, 4])), argument: 2,
                     "batch dimensions of [2, 2, 3] and [3, 3, 4] cannot be broadcast")
        assertThrows(try tensor([]).matmul(try tensor([3])), argument: 1, "matmul needs at least one dimension, got a rank-0 tensor")
        assertThrows(try tensor([3]).matmul(try tensor([])), argument: 2, "matmul needs at least one dimension, got a rank-0 tensor")
    }

    func testShapeValidationBeforeAllocating() throws {
        let budget = MemoryBudget(limit: 1 << 40)
        try MemoryBudget.$current.withValue(budget) {
            assertThrows(try Tensor(shape: [2, -1]), argument: 1, "negative size -1 in [2, -1]")
            assertThrows(try Tensor.zeros([1, 1, 1, 1, 1, 1]), argument: 1, "rank 6 exceeds the maximum of 5")
            assertThrows(try Tensor(shape: [1 << 16, 1 << 16]), argument: 1, "shape [65536, 65536] exceeds 2147483648 elements")
            assertThrows(try Tensor(shape: [Int.max, 2]), argument: 1, "shape [9223372036854775807, 2] exceeds 2147483648 elements")
            assertThrows(try Tensor(shape: [0, Int.max]), argument: 1, "shape [0, 9223372036854775807] exceeds 2147483648 elements")
            assertThrows(try Tensor(shape: [2, 3], values: [1, 2]), argument: 2, "2 values do not fill [2, 3] (6 elements)")
            // Broadcasting two legal shapes into an illegal one is refused by the result's validation.
            let column = try Tensor.zeros([1 << 16, 1]), row = try Tensor.zeros([1, 1 << 16])
            assertThrows(try column.binary(.add, row), argument: nil, "shape [65536, 65536] exceeds 2147483648 elements")
            assertThrows(try row.expand([1 << 16, -1]), argument: 2, "shape [65536, 65536] exceeds 2147483648 elements")
            assertThrows(try row.repeated([1 << 16, 1]), argument: 2, "shape [65536, 65536] exceeds 2147483648 elements")
            assertThrows(try row.repeated([Int.max, Int.max]), argument: 2, "repeating [1, 65536] by [9223372036854775807, 9223372036854775807] is too large")
            XCTAssertEqual(budget.peak, 2 * (1 << 16) * 4, "only the two legal operands were ever allocated")
        }
    }

    func testConstructorArguments() throws {
        assertThrows(try Tensor.arange(0, .nan, 1), argument: 2, "end must be finite, got nan")
        assertThrows(try Tensor.arange(.infinity, 1, 1), argument: 1, "start must be finite, got inf")
        assertThrows(try Tensor.arange(0, 1, 0), argument: 3, "step must be finite and non-zero, got 0.0")
        assertThrows(try Tensor.arange(0, 1e300, 1), argument: 3, "arange(0.0, 1e+300, 1.0) exceeds 2147483648 elements")
        assertThrows(try Tensor.arange(-1e308, 1e308, 1), argument: 3, "arange(-1e+308, 1e+308, 1.0) exceeds 2147483648 elements")
        XCTAssertEqual(try Tensor.arange(1e308, -1e308, 1).shape, [0], "end − start overflows to −∞: empty, no trap")
        assertThrows(try Tensor.linspace(0, 1, -1), argument: 3, "count must be non-negative, got -1")
        assertThrows(try Tensor.linspace(0, 1, Int.max), argument: 3, "shape [9223372036854775807] exceeds 2147483648 elements")
    }

    func testOtherInvalidArguments() throws {
        let a = try tensor([2, 3])
        assertThrows(try a.item(), argument: 1, "item() needs a one-element tensor, got [2, 3]")
        assertThrows(try a.permute([0, 0]), argument: 2, "permutation [0, 0] repeats a dimension")
        assertThrows(try a.permute([-1, 1]), argument: 2, "permutation [-1, 1] repeats a dimension")
        assertThrows(try a.permute([0]), argument: 2, "permutation [0] has 1 dimensions, the tensor 2")
        assertThrows(try a.expand([4, 3]), argument: 2, "cannot expand [2, 3] to [4, 3]")
        assertThrows(try a.expand([3]), argument: 2, "cannot expand [2, 3] to [3]")
        assertThrows(try a.expand([-1, 2, 3]), argument: 2, "cannot expand [2, 3] to [-1, 2, 3]")
        assertThrows(try a.expand([2, -2]), argument: 2, "negative size -2 in [2, -2]")
        assertThrows(try a.repeated([2]), argument: 2, "1 repeat counts for a rank-2 tensor")
        assertThrows(try a.repeated([2, -1]), argument: 2, "negative repeat count in [2, -1]")
        assertThrows(try tensor([2, 0]).reduce(.max, dim: 1), argument: 2, "cannot reduce the empty dimension 1 of [2, 0]")
        assertThrows(try tensor([0]).reduce(.min), argument: 1, "cannot reduce an empty tensor [0]")
        assertThrows(try tensor([0, 2]).argmax(dim: 0), argument: 2, "cannot reduce the empty dimension 0 of [0, 2]")
        assertThrows(try Tensor(shape: [4], storage: a.storage), argument: 2, "storage of 6 elements does not fit [4] (4 elements)")
    }

    func testReleasedTensorsThrow() throws {
        let live = try tensor([2, 3]), dead = try tensor([2, 3])
        dead.storage.release()
        let message = "tensor has been released"
        assertThrows(try dead.binary(.add, live), argument: 1, message)
        assertThrows(try live.binary(.add, dead), argument: 2, message)
        assertThrows(try live.binary(.add, live, into: dead), argument: 1, message)
        assertThrows(try dead.unary(.exp), argument: 1, message)
        assertThrows(try live.lerp(live, weight: dead), argument: 3, message)
        assertThrows(try Tensor.where(live, live, dead), argument: 3, message)
        assertThrows(try live.axpy(1, dead), argument: 3, message)
        assertThrows(try live.copy(from: dead), argument: 2, message)
        assertThrows(try dead.reduce(.sum), argument: 1, message)
        assertThrows(try dead.argmax(dim: 0), argument: 1, message)
        assertThrows(try live.matmul(dead), argument: 2, message)
        assertThrows(try dead.reshape([6]), argument: 1, message)
        assertThrows(try dead.permute([1, 0]), argument: 1, message)
        assertThrows(try dead.narrow(0, start: 0, length: 1), argument: 1, message)
        assertThrows(try Tensor.cat([live, dead], dim: 0), argument: 1, message)
        assertThrows(try Tensor.stack([live, dead], dim: 0), argument: 1, message)
        assertThrows(try live.setSlice(0, start: 0, dead), argument: 4, message)
        assertThrows(try dead.clone(), argument: 1, message)
        assertThrows(try dead.item(), argument: 1, message)
        assertThrows(try Tensor(shape: [6], storage: dead.storage), argument: 2, "storage has been released")
        XCTAssertTrue(dead.fill(1) === dead, "fill on released storage is a no-op")
        XCTAssertEqual(dead.values, [])
        XCTAssertEqual(dead.description, "[released Tensor of size 2x3]")
    }
}
