import XCTest
@testable import KiriTensor

/// Behaviour the numpy fixtures cannot show: aliasing, views, in-place forms, the vectorised paths' tails, RNG
/// wiring and printing.
final class TensorTests: XCTestCase {
    private func tensor(_ shape: [Int], _ values: [Float]) throws -> Tensor { try Tensor(shape: shape, values: values) }

    func testBasics() throws {
        let t = try tensor([2, 3], [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(t.rank, 2)
        XCTAssertEqual(t.count, 6)
        XCTAssertEqual(try Tensor.full([], 7).item(), 7)
        XCTAssertEqual(try Tensor.full([], 7).count, 1)
        XCTAssertEqual(try Tensor.zeros([2, 0]).count, 0)
        XCTAssertEqual(try tensor([1, 1], [5]).item(), 5)
        XCTAssertEqual(try Tensor.ones([2]).values, [1, 1])
    }

    func testReshapeIsAView() throws {
        let t = try tensor([2, 3], [1, 2, 3, 4, 5, 6])
        let view = try t.reshape([3, -1])
        XCTAssertEqual(view.shape, [3, 2])
        XCTAssertTrue(view.storage === t.storage)
        view.fill(0)
        XCTAssertEqual(t.values, [0, 0, 0, 0, 0, 0])
        XCTAssertEqual(try Tensor.zeros([0, 3]).reshape([3, 0, 5]).shape, [3, 0, 5])
    }

    func testOtherShapeOperationsCopy() throws {
        let t = try tensor([2, 3], [1, 2, 3, 4, 5, 6])
        for result in [try t.narrow(0, start: 0, length: 1), try t.select(0, index: 0), try t.clone(),
                       try t.permute([0, 1]), try t.expand([2, 3]), try t.repeated([1, 1])] {
            XCTAssertFalse(result.storage === t.storage)
        }
        let clone = try t.clone()
        clone.fill(9)
        XCTAssertEqual(t.values, [1, 2, 3, 4, 5, 6])
    }

    func testAliasedResults() throws {
        let x = try tensor([2, 2], [1, 2, 3, 4]), y = try tensor([2], [10, 20])
        XCTAssertTrue(try x.binary(.add, y, into: x) === x)
        XCTAssertEqual(x.values, [11, 22, 13, 24])
        let end = try tensor([2, 2], [0, 0, 0, 0])
        _ = try x.lerp(end, weight: 0.5, into: end)
        XCTAssertEqual(end.values, [5.5, 11, 6.5, 12])
        let weight = try tensor([2, 2], [0, 1, 0, 1])
        _ = try x.lerp(end, weight: weight, into: weight)
        XCTAssertEqual(weight.values, [11, 11, 13, 12])
        let condition = try tensor([2, 2], [1, 0, 0, 1])
        _ = try Tensor.where(condition, x, end, into: condition)
        XCTAssertEqual(condition.values, [11, 11, 6.5, 24])
        _ = try x.unary(.neg, into: x)
        XCTAssertEqual(x.values, [-11, -22, -13, -24])
        // A view of the result's own storage as an operand.
        let flat = try x.reshape([4])
        _ = try flat.binary(.mul, scalarOnLeft: -1, into: flat)
        XCTAssertEqual(x.values, [11, 22, 13, 24])
    }

    func testMatmulIntoAnOperand() throws {
        let a = try tensor([2, 2], [1, 2, 3, 4]), b = try tensor([2, 2], [5, 6, 7, 8])
        let expected = try a.matmul(b).values
        XCTAssertEqual(expected, [19, 22, 43, 50])
        XCTAssertTrue(try a.matmul(b, into: a) === a)
        XCTAssertEqual(a.values, expected)
        let c = try tensor([2, 2], [1, 2, 3, 4])
        _ = try c.matmul(c, into: c)
        XCTAssertEqual(c.values, [7, 10, 15, 22])
        let viewOfB = try b.reshape([2, 2])
        _ = try c.matmul(b, into: viewOfB)
        XCTAssertEqual(b.values, [105, 122, 229, 266], "[[7, 10], [15, 22]] · [[5, 6], [7, 8]]")
    }

    func testInPlaceForms() throws {
        let t = try tensor([2, 3], [1, 2, 3, 4, 5, 6])
        XCTAssertTrue(try t.binaryInPlace(.sub, try tensor([3], [1, 1, 1])) === t)
        XCTAssertEqual(t.values, [0, 1, 2, 3, 4, 5])
        try t.binaryInPlace(.mul, 2)
        XCTAssertEqual(t.values, [0, 2, 4, 6, 8, 10])
        try t.axpy(0.5, try tensor([2, 1], [2, 4]))
        XCTAssertEqual(t.values, [1, 3, 5, 8, 10, 12])
        try t.axpy(-1, t)
        XCTAssertEqual(t.values, [0, 0, 0, 0, 0, 0])
        try t.copy(from: try tensor([3], [7, 8, 9]))
        XCTAssertEqual(t.values, [7, 8, 9, 7, 8, 9])
        try t.copy(from: try Tensor.full([], 4))
        XCTAssertEqual(t.values, [4, 4, 4, 4, 4, 4])
        try t.unaryInPlace(.sqrt)
        XCTAssertEqual(t.values, [2, 2, 2, 2, 2, 2])
        XCTAssertTrue(t.fill(3) === t)
        XCTAssertEqual(t.values, [3, 3, 3, 3, 3, 3])
    }

    func testSetSlice() throws {
        let t = try Tensor.zeros([2, 4])
        try t.setSlice(1, start: 1, try tensor([2, 2], [1, 2, 3, 4]))
        XCTAssertEqual(t.values, [0, 1, 2, 0, 0, 3, 4, 0])
        try t.setSlice(-2, start: -1, try tensor([1, 4], [5, 6, 7, 8]))
        XCTAssertEqual(t.values, [0, 1, 2, 0, 5, 6, 7, 8])
        try t.setSlice(1, start: 4, try Tensor.zeros([2, 0]))
        XCTAssertEqual(t.values, [0, 1, 2, 0, 5, 6, 7, 8])
    }

    /// Lengths around the vector width, every broadcast fast path and the strided fallback, against a scalar loop.
    func testKernelPathsAndTails() throws {
        for length in [1, 3, 4, 7, 8, 9, 15, 16, 17, 33, 1027] {
            let a = try Tensor.randn([2, length], seed: 1), b = try Tensor.randn([2, length], seed: 2)
            let column = try Tensor.randn([2, 1], seed: 3), row = try Tensor.randn([length], seed: 4)
            let (x, y, c, r) = (a.values, b.values, column.values, row.values)
            let index = Array(0..<(2 * length))
            XCTAssertEqual(try a.binary(.sub, b).values, index.map { x[$0] - y[$0] })
            XCTAssertEqual(try a.binary(.sub, column).values, index.map { x[$0] - c[$0 / length] })
            XCTAssertEqual(try column.binary(.sub, a).values, index.map { c[$0 / length] - x[$0] })
            XCTAssertEqual(try a.binary(.sub, row).values, index.map { x[$0] - r[$0 % length] })
            XCTAssertEqual(try column.binary(.sub, row).values, index.map { c[$0 / length] - r[$0 % length] })
            XCTAssertEqual(try a.binary(.sub, 0.5).values, x.map { $0 - 0.5 })
            XCTAssertEqual(try a.binary(.div, scalarOnLeft: 2).values, x.map { 2 / $0 })
            XCTAssertEqual(try Tensor.where(column, a, row).values,
                           index.map { c[$0 / length] != 0 ? x[$0] : r[$0 % length] })
            XCTAssertEqual(try a.transpose(0, 1).values, (0..<(2 * length)).map { x[($0 % 2) * length + $0 / 2] })
            XCTAssertEqual(try a.reduce(.sum, dim: 1).values.map(Double.init),
                           [x[..<length], x[length...]].map { $0.reduce(0.0) { $0 + Double($1) } }.map { Double(Float($0)) })
        }
    }

    func testReductionEdgeCases() throws {
        let empty = try Tensor.zeros([0, 3])
        XCTAssertEqual(try empty.reduce(.sum).item(), 0)
        XCTAssertTrue(try empty.reduce(.mean).item().isNaN, "numpy: mean of nothing is NaN")
        XCTAssertEqual(try empty.reduce(.sum, dim: 0).values, [0, 0, 0])
        XCTAssertEqual(try empty.reduce(.max, dim: 1).shape, [0], "no lines to reduce is not an error")
        let one = try Tensor.full([1], 5)
        XCTAssertTrue(try one.reduce(.variance(unbiased: true)).item().isNaN, "n − 1 = 0")
        XCTAssertEqual(try one.reduce(.variance(unbiased: false)).item(), 0)
        let t = try tensor([2, 2], [1, -2, 3, -4])
        XCTAssertEqual(try t.reduce(.sum, keepDim: true).shape, [1, 1])
        XCTAssertEqual(try t.reduce(.norm(p: 0)).item(), 4)
        // Large sums stay accurate because they accumulate in Double.
        let big = try Tensor.full([1 << 20], 0.1)
        XCTAssertEqual(try big.reduce(.sum).item(), Float(Double(Float(0.1)) * Double(1 << 20)), accuracy: 1e-3)
        XCTAssertEqual(try big.reduce(.variance(unbiased: true)).item(), 0)
    }

    func testRandomIsPhiloxAndSeeded() throws {
        let normal = try Tensor.randn([3, 5], seed: 42)
        var expected = [Float](repeating: 0, count: 15)
        Philox.fillNormal(&expected, count: 15, seed: 42)
        XCTAssertEqual(normal.values, expected)
        XCTAssertEqual(try Tensor.randn([15], seed: 42).values, expected)
        XCTAssertNotEqual(try Tensor.randn([15], seed: 43).values, expected)
        let uniform = try Tensor.rand([10_000], seed: 7)
        XCTAssertTrue(uniform.values.allSatisfy { $0 >= 0 && $0 < 1 })
        XCTAssertEqual(try uniform.reduce(.mean).item(), 0.5, accuracy: 0.02)
        Philox.fillUniform(&expected, count: 15, seed: 7)
        XCTAssertEqual(Array(uniform.values.prefix(15)), expected)
    }

    func testDescription() throws {
        XCTAssertEqual(try tensor([2, 3], [1, 2, 3, 4, 5, -6]).description, "  1  2  3\n  4  5 -6\n[Tensor of size 2x3]")
        XCTAssertEqual(try tensor([3], [0.5, -1.25, 2]).description, "  0.5000\n -1.2500\n  2.0000\n[Tensor of size 3]")
        XCTAssertEqual(try tensor([2, 1, 2], [1, 2, 3, 4]).description,
                       "(1,.,.) = \n 1 2\n\n(2,.,.) = \n 3 4\n[Tensor of size 2x1x2]")
        XCTAssertEqual(try Tensor.arange(0, 10, 1).reshape([1, 10]).description, " 0 1 2 ... 7 8 9\n[Tensor of size 1x10]")
        XCTAssertEqual(try Tensor.arange(0, 10, 1).reshape([10, 1]).description.components(separatedBy: "\n"),
                       [" 0", " 1", " 2", "...", " 7", " 8", " 9", "[Tensor of size 10x1]"])
        XCTAssertEqual(try Tensor.arange(0, 8, 1).reshape([8, 1, 1]).description.components(separatedBy: "\n").filter { $0.hasPrefix("(") },
                       ["(1,.,.) = ", "(2,.,.) = ", "(3,.,.) = ", "(6,.,.) = ", "(7,.,.) = ", "(8,.,.) = "])
        XCTAssertEqual(try Tensor.full([], -0.0).description, " 0\n[Tensor with no dimension]")
        XCTAssertEqual(try tensor([2], [1e6, 0.5]).description, " 1.0000e+06\n 5.0000e-01\n[Tensor of size 2]")
        XCTAssertEqual(try Tensor.zeros([2, 0]).description, "[Tensor of size 2x0]")
    }
}
