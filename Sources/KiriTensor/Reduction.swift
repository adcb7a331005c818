#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension Tensor {
    /// Every reduction accumulates in Double. variance and std are two-pass (mean, then squared deviations) and
    /// divide by n − 1 when unbiased (NaN for a single element, as in numpy and torch). norm(p:) follows numpy:
    /// p = ∞ is max |x|, −∞ min |x|, 0 counts non-zeros. min and max propagate NaN.
    public enum Reduction: Sendable, Equatable {
        case sum, mean, variance(unbiased: Bool), std(unbiased: Bool), min, max, norm(p: Double)
    }

    /// Reduces along `dim` (0-based, negative from the end; argument 2), or over all elements when nil, which
    /// gives a rank-0 tensor. keepDim leaves the reduced dimension (all of them, for nil) with size 1.
    public func reduce(_ reduction: Reduction, dim: Int? = nil, keepDim: Bool = false) throws -> Tensor {
        try requireLive(argument: 1)
        let layout = try reductionLayout(dim: dim, keepDim: keepDim)
        if layout.length == 0 {
            switch reduction {
            case .min, .max: throw emptyReductionError(dim: dim)
            case .norm(let p) where p == -.infinity: throw emptyReductionError(dim: dim)
            default: break
            }
        }
        let out = try Tensor(shape: layout.shape)
        let (length, inner) = (layout.length, layout.inner)
        let columnsPerPanel = 256
        withUnsafeTemporaryAllocation(of: Double.self, capacity: 2 * columnsPerPanel) { scratch in
            let accumulators = scratch.baseAddress!, parameters = accumulators + columnsPerPanel
            parameters.initialize(repeating: 0, count: columnsPerPanel)
            for o in 0..<layout.outer {
                let block = UnsafePointer(data) + o * length * inner, results = out.data + o * inner
                if inner == 1 {
                    Tensor.reduce(reduction, .line(block, length: length), length: length, accumulators, parameters, results)
                } else {
                    for column in stride(from: 0, to: inner, by: columnsPerPanel) {
                        let panel = Panel.columns(block + column, rows: length, width: min(columnsPerPanel, inner - column),
                                                  rowStride: inner)
                        Tensor.reduce(reduction, panel, length: length, accumulators, parameters, results + column)
                    }
                }
            }
        }
        return out
    }

    /// Index (0-based, as a Float) of the first maximum along `dim`; the first NaN wins, as in numpy.
    public func argmax(dim: Int, keepDim: Bool = false) throws -> Tensor {
        try requireLive(argument: 1)
        let layout = try reductionLayout(dim: dim, keepDim: keepDim)
        guard layout.length > 0 else { throw emptyReductionError(dim: dim) }
        let out = try Tensor(shape: layout.shape)
        let (length, inner) = (layout.length, layout.inner)
        for o in 0..<layout.outer {
            for j in 0..<inner {
                let line = data + o * length * inner + j
                var best = line[0], index = 0, position = 1
                while position < length, !best.isNaN {
                    let value = line[position * inner]
                    if value > best || value.isNaN { (best, index) = (value, position) }
                    position += 1
                }
                out.data[o * inner + j] = Float(index)
            }
        }
        return out
    }

    private func emptyReductionError(dim: Int?) -> TensorError {
        guard let dim else { return TensorError(argument: 1, "cannot reduce an empty tensor \(shapeString(shape))") }
        return TensorError(argument: 2, "cannot reduce the empty dimension \(dim) of \(shapeString(shape))")
    }

    /// The tensor seen as [outer, length, inner] with `length` the reduced dimension, and the result's shape.
    private func reductionLayout(dim: Int?, keepDim: Bool) throws -> (outer: Int, length: Int, inner: Int, shape: [Int]) {
        guard let dim else { return (1, count, 1, keepDim ? Array(repeating: 1, count: rank) : []) }
        let d = try normalizedDim(dim, argument: 2)
        var reduced = shape
        if keepDim { reduced[d] = 1 } else { reduced.remove(at: d) }
        return (shape[..<d].reduce(1, *), shape[d], shape[(d + 1)...].reduce(1, *), reduced)
    }

    /// Folds one panel and writes its outputs. Steps get (accumulator, element, parameter of the column); only the
    /// variance's second pass uses the parameter, the mean of the column's output.
    private static func reduce(_ reduction: Reduction, _ panel: Panel, length: Int, _ accumulators: UnsafeMutablePointer<Double>,
                               _ parameters: UnsafeMutablePointer<Double>, _ results: UnsafeMutablePointer<Float>) {
        let n = Double(length)
        @inline(__always) func fold(_ initial: Double, _ step: (Double, Float, Double) -> Double,
                                    _ merge: (Double, Double) -> Double, _ finish: (Double) -> Double) {
            panel.fold(accumulators, parameters, initial, step, merge)
            for j in 0..<panel.outputs { results[j] = Float(finish(accumulators[j])) }
        }
        switch reduction {
        case .sum:
            fold(0, { a, x, _ in a + Double(x) }, +, { $0 })
        case .mean:
            fold(0, { a, x, _ in a + Double(x) }, +, { $0 / n })
        case .variance(let unbiased), .std(let unbiased):
            panel.fold(accumulators, parameters, 0, { a, x, _ in a + Double(x) }, +)
            for j in 0..<panel.outputs { parameters[j] = accumulators[j] / n }
            let divisor = unbiased ? max(n - 1, 0) : n
            let root = if case .std = reduction { true } else { false }
            fold(0, { a, x, mean in a + (Double(x) - mean) * (Double(x) - mean) }, +) { squares in
                root ? (squares / divisor).squareRoot() : squares / divisor
            }
        case .min:
            fold(.infinity, { a, x, _ in nanMin(a, Double(x)) }, nanMin, { $0 })
        case .max:
            fold(-.infinity, { a, x, _ in nanMax(a, Double(x)) }, nanMax, { $0 })
        case .norm(let p) where p == .infinity:
            fold(0, { a, x, _ in nanMax(a, Double(x.magnitude)) }, nanMax, { $0 })
        case .norm(let p) where p == -.infinity:
            fold(.infinity, { a, x, _ in nanMin(a, Double(x.magnitude)) }, nanMin, { $0 })
        case .norm(let p) where p == 0:
            fold(0, { a, x, _ in a + (x != 0 ? 1 : 0) }, +, { $0 })
        case .norm(let p) where p == 1:
            fold(0, { a, x, _ in a + Double(x.magnitude) }, +, { $0 })
        case .norm(let p) where p == 2:
            fold(0, { a, x, _ in a + Double(x) * Double(x) }, +, { $0.squareRoot() })
        case .norm(let p):
            fold(0, { a, x, _ in a + pow(Double(x.magnitude), p) }, +, { pow($0, 1 / p) })
        }
    }
}

/// Part of a reduction, laid out so that its loop vectorises without reassociating any one sum.
private enum Panel {
    /// `rows` rows of `width` contiguous floats, `rowStride` apart: reducing along an outer dimension, column j is
    /// output j, and each row updates all the columns' accumulators at once.
    case columns(UnsafePointer<Float>, rows: Int, width: Int, rowStride: Int)
    /// One contiguous line making one output (reducing the last dimension, or everything). It is cut into rows of
    /// eight whose columns are partial results in registers, merged in a fixed order at the end, so the result is
    /// deterministic without one long serial chain of adds.
    case line(UnsafePointer<Float>, length: Int)

    var outputs: Int {
        switch self {
        case .columns(_, _, let width, _): width
        case .line: 1
        }
    }

    /// Leaves output j's value in accumulators[j]. parameters[j] is passed to every step of output j.
    @inline(__always)
    func fold(_ accumulators: UnsafeMutablePointer<Double>, _ parameters: UnsafePointer<Double>, _ initial: Double,
              _ step: (Double, Float, Double) -> Double, _ merge: (Double, Double) -> Double) {
        switch self {
        case .columns(let base, let rows, let width, let rowStride):
            accumulators.update(repeating: initial, count: width)
            for row in 0..<rows {
                let values = base + row &* rowStride
                for j in 0..<width { accumulators[j] = step(accumulators[j], values[j], parameters[j]) }
            }
        case .line(let base, let length):
            var partial = SIMD8<Double>(repeating: initial)
            let parameter = parameters[0], rows = length / 8
            for row in 0..<rows {
                let values = base + row &* 8
                for j in 0..<8 { partial[j] = step(partial[j], values[j], parameter) }
            }
            let tail = base + rows &* 8
            for j in 0..<length % 8 { partial[j] = step(partial[j], tail[j], parameter) }
            var result = partial[0]
            for j in 1..<8 { result = merge(result, partial[j]) }
            accumulators[0] = result
        }
    }
}

/// min and max that let NaN win, as numpy's do. `b != b` tests for NaN because, on Double, `isNaN` keeps these loops
/// from vectorising (measured; on Float it does not).
@inline(__always) private func nanMin(_ a: Double, _ b: Double) -> Double { b < a || b != b ? b : a }
@inline(__always) private func nanMax(_ a: Double, _ b: Double) -> Double { b > a || b != b ? b : a }
