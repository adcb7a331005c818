#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension Tensor {
    /// Comparisons give 1 or 0. minimum and maximum propagate NaN, as numpy's do.
    public enum BinaryOp: Sendable, CaseIterable {
        case add, sub, mul, div, pow, minimum, maximum, equal, less, lessEqual, greater, greaterEqual
    }

    /// round is half-to-even, as in numpy and torch.
    public enum UnaryOp: Sendable, CaseIterable {
        case neg, abs, sqrt, exp, log, tanh, sigmoid, silu, sign, floor, ceil, round, square, reciprocal
    }

    /// The one place an op becomes a loop: each case hands its formula to the always-inlined `map2`.
    private static func run(_ op: BinaryOp, _ shape: [Int], _ out: UnsafeMutablePointer<Float>, _ a: Strided, _ b: Strided) {
        switch op {
        case .add: map2(shape, out, a, b) { $0 + $1 }
        case .sub: map2(shape, out, a, b) { $0 - $1 }
        case .mul: map2(shape, out, a, b) { $0 * $1 }
        case .div: map2(shape, out, a, b) { $0 / $1 }
        case .pow: map2(shape, out, a, b) { powf($0, $1) }
        case .minimum: map2(shape, out, a, b) { $0 <= $1 || $0.isNaN ? $0 : $1 }
        case .maximum: map2(shape, out, a, b) { $0 >= $1 || $0.isNaN ? $0 : $1 }
        case .equal: map2(shape, out, a, b) { $0 == $1 ? 1 : 0 }
        case .less: map2(shape, out, a, b) { $0 < $1 ? 1 : 0 }
        case .lessEqual: map2(shape, out, a, b) { $0 <= $1 ? 1 : 0 }
        case .greater: map2(shape, out, a, b) { $0 > $1 ? 1 : 0 }
        case .greaterEqual: map2(shape, out, a, b) { $0 >= $1 ? 1 : 0 }
        }
    }

    private static func run(_ op: UnaryOp, _ out: UnsafeMutablePointer<Float>, _ x: UnsafeMutablePointer<Float>, _ count: Int) {
        switch op {
        case .neg: map1(out, x, count) { -$0 }
        case .abs: map1(out, x, count) { $0.magnitude }
        case .sqrt: map1(out, x, count) { $0.squareRoot() }
        case .exp: map1(out, x, count) { expf($0) }
        case .log: map1(out, x, count) { logf($0) }
        case .tanh: map1(out, x, count) { tanhf($0) }
        case .sigmoid: map1(out, x, count) { 1 / (1 + expf(-$0)) }
        case .silu: map1(out, x, count) { $0 / (1 + expf(-$0)) }
        case .sign: map1(out, x, count) { $0 > 0 ? 1 : $0 < 0 ? -1 : $0 == 0 ? 0 : $0 }  // ±0 gives +0, NaN stays
        case .floor: map1(out, x, count) { floorValue($0) }
        case .ceil: map1(out, x, count) { -floorValue(-$0) }
        case .round: map1(out, x, count) { roundedToEven($0) }
        case .square: map1(out, x, count) { $0 * $0 }
        case .reciprocal: map1(out, x, count) { 1 / $0 }
        }
    }

    private func broadcastShape(with other: Tensor, argument: Int) throws -> [Int] {
        guard let shape = KiriTensor.broadcastShape(shape, other.shape) else {
            throw TensorError(argument: argument, "shapes \(shapeString(shape)) and \(shapeString(other.shape)) cannot be broadcast")
        }
        return shape
    }

    /// For in-place operations: `other` must broadcast to this tensor's shape exactly.
    private func requireBroadcastable(_ other: Tensor, argument: Int) throws {
        guard other.shape == shape || KiriTensor.broadcastShape(shape, other.shape) == shape else {
            throw TensorError(argument: argument, "shape \(shapeString(other.shape)) cannot be broadcast to \(shapeString(shape))")
        }
    }

    /// Runs `body` with a scalar seen as a stride-0 operand of `shape`, so scalars share the broadcast kernels.
    private static func withScalar<R>(_ value: Float, _ shape: [Int], _ body: (Strided) throws -> R) rethrows -> R {
        var value = value
        return try withUnsafeMutablePointer(to: &value) { pointer in
            try body(Strided(pointer: pointer, strides: Array(repeating: 0, count: shape.count)))
        }
    }

    // MARK: Results in a new (or given) tensor

    /// self op other with numpy broadcasting. `into` may be self or other (x = x + y in place).
    public func binary(_ op: BinaryOp, _ other: Tensor, into: Tensor? = nil) throws -> Tensor {
        try requireLive(argument: 1)
        try other.requireLive(argument: 2)
        let shape = try broadcastShape(with: other, argument: 2)
        let out = try Tensor.result(shape, into: into)
        Tensor.run(op, shape, out.data, strided(to: shape), other.strided(to: shape))
        return out
    }

    /// self op scalar.
    public func binary(_ op: BinaryOp, _ scalar: Float, into: Tensor? = nil) throws -> Tensor {
        try requireLive(argument: 1)
        let out = try Tensor.result(shape, into: into)
        Tensor.withScalar(scalar, shape) { Tensor.run(op, shape, out.data, strided(to: shape), $0) }
        return out
    }

    /// scalar op self, for 2 - t and 2 / t.
    public func binary(_ op: BinaryOp, scalarOnLeft scalar: Float, into: Tensor? = nil) throws -> Tensor {
        try requireLive(argument: 1)
        let out = try Tensor.result(shape, into: into)
        Tensor.withScalar(scalar, shape) { Tensor.run(op, shape, out.data, $0, strided(to: shape)) }
        return out
    }

    public func unary(_ op: UnaryOp, into: Tensor? = nil) throws -> Tensor {
        try requireLive(argument: 1)
        let out = try Tensor.result(shape, into: into)
        Tensor.run(op, out.data, data, count)
        return out
    }

    /// Bounds left nil are open. NaN elements stay NaN.
    public func clamp(min: Float?, max: Float?, into: Tensor? = nil) throws -> Tensor {
        try requireLive(argument: 1)
        let out = try Tensor.result(shape, into: into)
        let (low, high) = (min ?? -.infinity, max ?? .infinity)
        map1(out.data, data, count) { value in
            let raised = value < low ? low : value
            return raised > high ? high : raised
        }
        return out
    }

    /// self + weight·(end − self).
    public func lerp(_ end: Tensor, weight: Float, into: Tensor? = nil) throws -> Tensor {
        try requireLive(argument: 1)
        try end.requireLive(argument: 2)
        let shape = try broadcastShape(with: end, argument: 2)
        let out = try Tensor.result(shape, into: into)
        map2(shape, out.data, strided(to: shape), end.strided(to: shape)) { $0 + weight * ($1 - $0) }
        return out
    }

    /// self + weight·(end − self), all three broadcast.
    public func lerp(_ end: Tensor, weight: Tensor, into: Tensor? = nil) throws -> Tensor {
        try requireLive(argument: 1)
        try end.requireLive(argument: 2)
        try weight.requireLive(argument: 3)
        let pair = try broadcastShape(with: end, argument: 2)
        guard let shape = KiriTensor.broadcastShape(pair, weight.shape) else {
            throw TensorError(argument: 3, "shapes \(shapeString(pair)) and \(shapeString(weight.shape)) cannot be broadcast")
        }
        let out = try Tensor.result(shape, into: into)
        map3(shape, out.data, strided(to: shape), end.strided(to: shape), weight.strided(to: shape)) { $0 + $2 * ($1 - $0) }
        return out
    }

    /// condition != 0 ? a : b elementwise (NaN counts as true, as in numpy), all three broadcast.
    public static func `where`(_ condition: Tensor, _ a: Tensor, _ b: Tensor, into: Tensor? = nil) throws -> Tensor {
        try condition.requireLive(argument: 1)
        try a.requireLive(argument: 2)
        try b.requireLive(argument: 3)
        let pair = try condition.broadcastShape(with: a, argument: 2)
        guard let shape = KiriTensor.broadcastShape(pair, b.shape) else {
            throw TensorError(argument: 3, "shapes \(shapeString(pair)) and \(shapeString(b.shape)) cannot be broadcast")
        }
        let out = try Tensor.result(shape, into: into)
        map3(shape, out.data, condition.strided(to: shape), a.strided(to: shape), b.strided(to: shape)) { $0 != 0 ? $1 : $2 }
        return out
    }

    // MARK: In place

    /// self = self op other; other must broadcast to self's shape.
    @discardableResult
    public func binaryInPlace(_ op: BinaryOp, _ other: Tensor) throws -> Tensor {
        try requireLive(argument: 1)
        try other.requireLive(argument: 2)
        try requireBroadcastable(other, argument: 2)
        Tensor.run(op, shape, data, strided(to: shape), other.strided(to: shape))
        return self
    }

    @discardableResult
    public func binaryInPlace(_ op: BinaryOp, _ scalar: Float) throws -> Tensor {
        try binary(op, scalar, into: self)
    }

    @discardableResult
    public func unaryInPlace(_ op: UnaryOp) throws -> Tensor {
        try unary(op, into: self)
    }

    /// self += alpha·x in one pass with no temporary; x broadcast to self's shape.
    @discardableResult
    public func axpy(_ alpha: Float, _ x: Tensor) throws -> Tensor {
        try requireLive(argument: 1)
        try x.requireLive(argument: 3)
        try requireBroadcastable(x, argument: 3)
        map2(shape, data, strided(to: shape), x.strided(to: shape)) { $0 + alpha * $1 }
        return self
    }

    /// Writes `source`, broadcast to self's shape, into self.
    @discardableResult
    public func copy(from source: Tensor) throws -> Tensor {
        try requireLive(argument: 1)
        try source.requireLive(argument: 2)
        try requireBroadcastable(source, argument: 2)
        stridedCopy(shape, to: Strided(pointer: data, strides: contiguousStrides(shape)), from: source.strided(to: shape))
        return self
    }

    /// Does nothing to a released tensor (there is nothing left to fill).
    @discardableResult
    public func fill(_ value: Float) -> Tensor {
        if !isReleased { data.update(repeating: value, count: count) }
        return self
    }
}

/// Round half to even without libm: adding and subtracting 2^23 leaves float32 no fraction bits, and IEEE
/// arithmetic rounds half to even. Baseline x86-64 (SSE2) has no vector floor, so `rounded(_:)` would call floorf
/// per element; this keeps floor/ceil/round loops vectorised. |x| ≥ 2^23, ±∞ and NaN are already integral.
@inline(__always)
private func roundedToEven(_ x: Float) -> Float {
    x.magnitude < 0x1p23 ? Float(signOf: x, magnitudeOf: x.magnitude + 0x1p23 - 0x1p23) : x
}

/// Largest integer ≤ x (keeps -0 as -0, so ceil(x) = -floor(-x) gives numpy's signed zeros).
@inline(__always)
private func floorValue(_ x: Float) -> Float {
    let nearest = roundedToEven(x)
    return nearest > x ? nearest - 1 : nearest
}

/// out = f(x) over `count` contiguous elements; like `map2`, always inlined so each formula gets its own
/// vectorised loop, and safe when out == x.
@inline(__always)
func map1(_ out: UnsafeMutablePointer<Float>, _ x: UnsafeMutablePointer<Float>, _ count: Int, _ f: (Float) -> Float) {
    if out == x {
        for i in 0..<count { out[i] = f(out[i]) }
    } else {
        for i in 0..<count { out[i] = f(x[i]) }
    }
}
