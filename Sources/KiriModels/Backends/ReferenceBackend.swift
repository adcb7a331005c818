import Foundation
import KiriTensor

/// Every operation as the plain loops of its definition, summed in Double, one thread, weights widened to float32
/// per call: slow, and the oracle that CPUBackend's kernels (and any backend's) are tested against, whole networks
/// at a time. Re-sampling and concatenation are the protocol's plain copies, which the CPU backend uses too.
final class ReferenceBackend: Backend {
    func conv2d(_ conv: Conv2d, into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ shape: ConvolutionShape,
                upsampled: Bool, normalizedBy normalization: InputNormalization?, extraBias: UnsafePointer<Float>?,
                accumulate: Bool, _ workspace: Workspace) throws {
        let s = shape, (sourceHeight, sourceWidth) = upsampled ? (s.height / 2, s.width / 2) : (s.height, s.width)
        var x = Array(UnsafeBufferPointer(start: input, count: s.batch * s.inChannels * sourceHeight * sourceWidth))
        if let map = normalization?.map {
            x.withUnsafeMutableBufferPointer { normalize(into: $0.baseAddress!, $0.baseAddress!, map, batch: s.batch,
                                                         spatial: sourceHeight * sourceWidth) }
        }
        if upsampled {
            var larger = [Float](repeating: 0, count: s.batch * s.inChannels * s.height * s.width)
            upsampleNearest(into: &larger, x, planes: s.batch * s.inChannels, height: sourceHeight, width: sourceWidth,
                            outHeight: s.height, outWidth: s.width)
            x = larger
        }
        let weight = try conv.weight.tensor()
        let (k, w) = (s.kernel, weight.data)
        for b in 0..<s.batch {
            for o in 0..<s.outChannels {
                let offset = Double(conv.bias.data[o]) + Double(extraBias?[b * s.outChannels + o] ?? 0)
                for oy in 0..<s.outHeight {
                    for ox in 0..<s.outWidth {
                        var total = offset
                        for c in 0..<s.inChannels {
                            for ky in 0..<k {
                                for kx in 0..<k {
                                    let iy = oy * s.stride - s.padding + ky, ix = ox * s.stride - s.padding + kx
                                    guard iy >= 0, iy < s.height, ix >= 0, ix < s.width else { continue }
                                    total += Double(w[((o * s.inChannels + c) * k + ky) * k + kx])
                                        * Double(x[((b * s.inChannels + c) * s.height + iy) * s.width + ix])
                                }
                            }
                        }
                        let target = out + ((b * s.outChannels + o) * s.outHeight + oy) * s.outWidth + ox
                        target.pointee = Float((accumulate ? Double(target.pointee) : 0) + total)
                    }
                }
            }
        }
    }

    func linear(_ linear: Linear, into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ layout: LinearLayout,
                accumulate: Bool, _ workspace: Workspace) throws {
        let weight = try linear.weight.tensor()
        let (inFeatures, outFeatures, w) = (linear.inFeatures, linear.outFeatures, weight.data)
        // Input feature i of row r, and where output feature o of row r goes, for each layout.
        let rows: Int, inputAt: (Int, Int) -> Float, outputAt: (Int, Int) -> UnsafeMutablePointer<Float>
        switch layout {
        case .rows(let count):
            rows = count
            inputAt = { input[$0 * inFeatures + $1] }
            outputAt = { out + $0 * outFeatures + $1 }
        case .tokensFromChannels(let batch, let tokens):
            rows = batch * tokens
            inputAt = { input[($0 / tokens * inFeatures + $1) * tokens + $0 % tokens] }
            outputAt = { out + $0 * outFeatures + $1 }
        case .channelsFromTokens(let batch, let tokens):
            rows = batch * tokens
            inputAt = { input[$0 * inFeatures + $1] }
            outputAt = { out + ($0 / tokens * outFeatures + $1) * tokens + $0 % tokens }
        }
        for row in 0..<rows {
            for o in 0..<outFeatures {
                var total = Double(linear.bias?.data[o] ?? 0)
                for i in 0..<inFeatures { total += Double(w[o * inFeatures + i]) * Double(inputAt(row, i)) }
                let target = outputAt(row, o)
                target.pointee = Float((accumulate ? Double(target.pointee) : 0) + total)
            }
        }
    }

    func groupNormStatistics(_ norm: GroupNorm, mean: UnsafeMutablePointer<Float>, scale: UnsafeMutablePointer<Float>,
                             _ input: UnsafePointer<Float>, batch: Int, spatial: Int) {
        let perGroup = norm.channels / norm.groups, count = perGroup * spatial
        for item in 0..<batch * norm.groups {
            let values = UnsafeBufferPointer(start: input + item * count, count: count)
            let (average, deviation) = Self.moments(values, eps: norm.eps)
            for c in 0..<perGroup {
                mean[item * perGroup + c] = Float(average)
                scale[item * perGroup + c] = Float(Double(norm.weight.data[item % norm.groups * perGroup + c]) / deviation)
            }
        }
    }

    func normalize(into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, _ map: ChannelNormalization, batch: Int,
                   spatial: Int) {
        for item in 0..<batch * map.channels {
            let channel = item % map.channels
            let (mean, scale, shift) = (Double(map.mean[item]), Double(map.scale[item]), Double(map.shift[channel]))
            for i in item * spatial..<(item + 1) * spatial {
                let y = (Double(input[i]) - mean) * scale + shift
                out[i] = Float(map.activation.map { Self.activation($0, y) } ?? y)
            }
        }
    }

    func layerNorm(_ norm: LayerNorm, into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, rows: Int) {
        let features = norm.features
        for row in 0..<rows {
            let values = UnsafeBufferPointer(start: input + row * features, count: features)
            let (mean, deviation) = Self.moments(values, eps: norm.eps)
            for i in 0..<features {
                let y = (Double(values[i]) - mean) / deviation * Double(norm.weight.data[i]) + Double(norm.bias.data[i])
                out[row * features + i] = Float(y)
            }
        }
    }

    func attention(into out: UnsafeMutablePointer<Float>, outStride: Int, query: AttentionOperand, key: AttentionOperand,
                   value: AttentionOperand, batch: Int, queries: Int, keys: Int, heads: Int, headDimension: Int, causal: Bool,
                   _ workspace: Workspace) throws {
        let scale = 1 / Double(headDimension).squareRoot()
        var weights = [Double](repeating: 0, count: keys)
        for b in 0..<batch {
            for h in 0..<heads {
                let column = h * headDimension
                for t in 0..<queries {
                    let q = query.base + (b * queries + t) * query.stride + column
                    let seen = causal ? t + 1 : keys
                    for j in 0..<seen {
                        let k = key.base + (b * keys + j) * key.stride + column
                        weights[j] = (0..<headDimension).reduce(0.0) { $0 + Double(q[$1]) * Double(k[$1]) } * scale
                    }
                    let largest = weights[..<seen].max() ?? 0
                    for j in 0..<seen { weights[j] = exp(weights[j] - largest) }
                    let total = weights[..<seen].reduce(0, +)
                    let target = out + (b * queries + t) * outStride + column
                    for d in 0..<headDimension {
                        var sum = 0.0
                        for j in 0..<seen { sum += weights[j] * Double(value.base[(b * keys + j) * value.stride + column + d]) }
                        target[d] = Float(sum / total)
                    }
                }
            }
        }
    }

    func geglu(into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, rows: Int, features: Int) {
        for row in 0..<rows {
            for i in 0..<features {
                let a = Double(input[row * 2 * features + i]), gate = Double(input[row * 2 * features + features + i])
                out[row * features + i] = Float(a * Self.activation(.gelu, gate))
            }
        }
    }

    func activation(_ activation: Activation, into out: UnsafeMutablePointer<Float>, _ input: UnsafePointer<Float>, count: Int) {
        for i in 0..<count { out[i] = Float(Self.activation(activation, Double(input[i]))) }
    }

    /// (mean, √(biased variance + eps)) by two passes in Double.
    private static func moments(_ values: UnsafeBufferPointer<Float>, eps: Float) -> (mean: Double, deviation: Double) {
        let mean = values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
        let variance = values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(values.count)
        return (mean, (variance + Double(eps)).squareRoot())
    }

    /// The activations' definitions (diffusers' get_activation, transformers' ACT2FN); softplus is x past 20, as torch's.
    private static func activation(_ activation: Activation, _ x: Double) -> Double {
        switch activation {
        case .silu, .swish: x / (1 + exp(-x))
        case .gelu: x / 2 * (1 + erf(x / 2.0.squareRoot()))
        case .mish: x * tanh(x > 20 ? x : log1p(exp(x)))
        case .relu: max(x, 0)
        case .quickGelu: x / (1 + exp(-1.702 * x))
        }
    }
}
