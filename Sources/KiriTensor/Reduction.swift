#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension Tensor {
    /// Every reduction accumulates in Double. variance and std are two-pass (mean, then squared deviations), and
    /// divide by n − 1 when unbiased. norm(p:) follows numpy: p = ∞ is max |x|, −∞ min |x|, 0 counts non-zeros.
    /// min and max propagate NaN.
    public enum Reduction: Sendable, Equatable {
        case sum, mean, variance(unbiased: Bool), std(unbiased: Bool), min, max, norm(p: Double)
    }

    /// Reduces along `dim` (0-based, negative from the end; argument 2), or over all elements when nil, which
    /// gives a rank-0 tensor. keepDim leaves the reduced dimension (all of them, for nil) with size 1.
    public func reduce(_ reduction: Reduction, dim: Int? = nil, keepDim: Bool = false) throws -> Tensor {
        try requireLive(argument: 1)
        let lines = try lineLayout(dim: dim, keepDim: keepDim)
        if lines.length == 0 {
            switch reduction {
            case .min, .max: throw emptyReductionError(dim: dim)
            case .norm(let p) where p == -.infinity: throw emptyReductionError(dim: dim)
            default: break
            }
        }
        let out = try Tensor(shape: lines.shape)
        lines.forEach(UnsafePointer(data), out.data) { line in
            Float(Tensor.fold(reduction, line, lines.length, stride: lines.inner))
        }
        return out
    }

    /// Index (0-based, as a Float) of the first maximum along `dim`; the first NaN wins, as in numpy.
    public func argmax(dim: Int, keepDim: Bool = false) throws -> Tensor {
        try requireLive(argument: 1)
        let lines = try lineLayout(dim: dim, keepDim: keepDim)
        guard lines.length > 0 else { throw emptyReductionError(dim: dim) }
        let out = try Tensor(shape: lines.shape)
        lines.forEach(UnsafePointer(data), out.data) { line in
            var best = line[0], index = 0, position = 1
            while position < lines.length, !best.isNaN {
                let value = line[position &* lines.inner]
                if value > best || value.isNaN { (best, index) = (value, position) }
                position += 1
            }
            return Float(index)
        }
        return out
    }

    private func emptyReductionError(dim: Int?) -> TensorError {
        guard let dim else { return TensorError(argument: 1, "cannot reduce an empty tensor \(shapeString(shape))") }
        return TensorError(argument: 2, "cannot reduce the empty dimension \(dim) of \(shapeString(shape))")
    }

    /// A reduction seen as `outer × inner` lines of `length` elements, each `inner` apart: the line for output
    /// (o, j) starts at o·length·inner + j.
    private struct LineLayout {
        var outer: Int, length: Int, inner: Int
        var shape: [Int]

        @inline(__always)
        func forEach(_ input: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ body: (UnsafePointer<Float>) -> Float) {
            for o in 0..<outer {
                let block = input + o &* length &* inner
                let results = out + o &* inner
                for j in 0..<inner { results[j] = body(block + j) }
            }
        }
    }

    private func lineLayout(dim: Int?, keepDim: Bool) throws -> LineLayout {
        guard let dim else {
            return LineLayout(outer: 1, length: count, inner: 1, shape: keepDim ? Array(repeating: 1, count: rank) : [])
        }
        let d = try normalizedDim(dim, argument: 2)
        var reduced = shape
        if keepDim { reduced[d] = 1 } else { reduced.remove(at: d) }
        return LineLayout(outer: shape[..<d].reduce(1, *), length: shape[d],
                          inner: shape[(d + 1)...].reduce(1, *), shape: reduced)
    }

    private static func fold(_ reduction: Reduction, _ line: UnsafePointer<Float>, _ length: Int, stride: Int) -> Double {
        let n = Double(length)
        switch reduction {
        case .sum:
            return foldLine(line, length, stride, 0, { $0 + Double($1) }, +)
        case .mean:
            return foldLine(line, length, stride, 0, { $0 + Double($1) }, +) / n
        case .variance(let unbiased):
            return variance(line, length, stride, unbiased: unbiased)
        case .std(let unbiased):
            return variance(line, length, stride, unbiased: unbiased).squareRoot()
        case .min:
            return foldLine(line, length, stride, .infinity, { nanMin($0, Double($1)) }, nanMin)
        case .max:
            return foldLine(line, length, stride, -.infinity, { nanMax($0, Double($1)) }, nanMax)
        case .norm(let p) where p == .infinity:
            return foldLine(line, length, stride, 0, { nanMax($0, Double($1.magnitude)) }, nanMax)
        case .norm(let p) where p == -.infinity:
            return foldLine(line, length, stride, .infinity, { nanMin($0, Double($1.magnitude)) }, nanMin)
        case .norm(let p) where p == 0:
            return foldLine(line, length, stride, 0, { $0 + ($1 != 0 ? 1 : 0) }, +)
        case .norm(let p) where p == 1:
            return foldLine(line, length, stride, 0, { $0 + Double($1.magnitude) }, +)
        case .norm(let p) where p == 2:
            return foldLine(line, length, stride, 0, { $0 + Double($1) * Double($1) }, +).squareRoot()
        case .norm(let p):
            return pow(foldLine(line, length, stride, 0, { $0 + pow(Double($1.magnitude), p) }, +), 1 / p)
        }
    }

    private static func variance(_ line: UnsafePointer<Float>, _ length: Int, _ stride: Int, unbiased: Bool) -> Double {
        let mean = foldLine(line, length, stride, 0, { $0 + Double($1) }, +) / Double(length)
        let squares = foldLine(line, length, stride, 0, { accumulated, value in
            let deviation = Double(value) - mean
            return accumulated + deviation * deviation
        }, +)
        return squares / Double(unbiased ? length - 1 : length)
    }
}

/// Folds `length` floats, `stride` apart, into a Double. Contiguous lines run four independent accumulators, which
/// keeps the adds pipelined without reassociating a single running sum; they are merged in a fixed order, so
/// results do not depend on anything but the input.
@inline(__always)
private func foldLine(_ line: UnsafePointer<Float>, _ length: Int, _ stride: Int, _ initial: Double,
                      _ step: (Double, Float) -> Double, _ merge: (Double, Double) -> Double) -> Double {
    var lanes = (initial, initial, initial, initial)
    var position = 0
    if stride == 1 {
        while position &+ 4 <= length {
            lanes.0 = step(lanes.0, line[position])
            lanes.1 = step(lanes.1, line[position &+ 1])
            lanes.2 = step(lanes.2, line[position &+ 2])
            lanes.3 = step(lanes.3, line[position &+ 3])
            position &+= 4
        }
    }
    var tail = initial
    while position < length {
        tail = step(tail, line[position &* stride])
        position &+= 1
    }
    return merge(merge(merge(lanes.0, lanes.1), merge(lanes.2, lanes.3)), tail)
}

/// min and max that let NaN win, as numpy's reductions do.
private func nanMin(_ a: Double, _ b: Double) -> Double { b < a || b.isNaN ? b : a }
private func nanMax(_ a: Double, _ b: Double) -> Double { b > a || b.isNaN ? b : a }
