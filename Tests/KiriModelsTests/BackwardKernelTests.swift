import Foundation
import XCTest
@testable import KiriModels
import KiriTensor

/// Issue 15's first backward kernels, each against central finite differences of a Double forward written here
/// (L = Σ dOut · forward(…), so ∂L/∂θ is the gradient the kernel must give), printing the largest relative error.
final class BackwardKernelTests: XCTestCase {
    /// Reproducible values in [-1, 1).
    func values(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed &* 0x9E3779B97F4A7C15 | 1
        return (0..<count).map { _ in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Float(state >> 40) / Float(1 << 23) - 1
        }
    }

    /// ∂/∂p[i] of `loss` by central differences in Double, for every i.
    func numericalGradient(_ p: [Double], step: Double = 1e-5, _ loss: ([Double]) -> Double) -> [Double] {
        (0..<p.count).map { i in
            var plus = p, minus = p
            plus[i] += step
            minus[i] -= step
            return (loss(plus) - loss(minus)) / (2 * step)
        }
    }

    /// The largest |a − b| over the largest |b| (at least 1e-3), printed with `what`.
    @discardableResult
    func assertClose(_ a: [Float], _ b: [Double], _ what: String, tolerance: Double) -> Double {
        XCTAssertEqual(a.count, b.count, what)
        let scale = max(b.map(abs).max() ?? 0, 1e-3)
        let error = zip(a, b).map { abs(Double($0) - $1) }.max() ?? 0
        print(String(format: "%@: max relative error %.2e", what, error / scale))
        XCTAssertLessThan(error / scale, tolerance, what)
        return error / scale
    }

    func testLinearBackward() {
        let (rows, inFeatures, outFeatures) = (5, 7, 6)
        let x = values(rows * inFeatures, seed: 1), w = values(outFeatures * inFeatures, seed: 2)
        let b = values(outFeatures, seed: 3), dOut = values(rows * outFeatures, seed: 4)
        func loss(_ x: [Double], _ w: [Double], _ b: [Double]) -> Double {   // Σ dOut · (x · wᵀ + b)
            var total = 0.0
            for r in 0..<rows {
                for o in 0..<outFeatures {
                    var y = b[o]
                    for i in 0..<inFeatures { y += x[r * inFeatures + i] * w[o * inFeatures + i] }
                    total += Double(dOut[r * outFeatures + o]) * y
                }
            }
            return total
        }
        let (xd, wd, bd) = (x.map(Double.init), w.map(Double.init), b.map(Double.init))
        // Parameter gradients accumulate: start from a previous call's.
        let previousW = values(outFeatures * inFeatures, seed: 5), previousB = values(outFeatures, seed: 6)
        var dX = [Float](repeating: .nan, count: x.count), dW = previousW, dB = previousB
        linearBackward(dInput: &dX, dWeight: &dW, dBias: &dB, dOut: dOut, input: x, weight: w,
                       rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
        assertClose(dX, numericalGradient(xd) { loss($0, wd, bd) }, "linear dInput", tolerance: 1e-5)
        assertClose(dW, zip(numericalGradient(wd) { loss(xd, $0, bd) }, previousW).map { $0 + Double($1) },
                    "linear dWeight", tolerance: 1e-5)
        assertClose(dB, zip(numericalGradient(bd) { loss(xd, wd, $0) }, previousB).map { $0 + Double($1) },
                    "linear dBias", tolerance: 1e-5)
    }

    func testActivationBackward() {
        // Away from relu's kink at 0, where a finite difference straddles it.
        let x = values(64, seed: 7).map { $0 * 6 }.map { abs($0) < 0.01 ? $0 + 0.1 : $0 }
        let dOut = values(64, seed: 8)
        let forwards: [(Activation, (Double) -> Double)] = [
            (.silu, { $0 / (1 + exp(-$0)) }),
            (.gelu, { $0 * 0.5 * (1 + erf($0 / 2.0.squareRoot())) }),
            (.quickGelu, { $0 / (1 + exp(-1.702 * $0)) }),
            (.mish, { $0 * tanh(log1p(exp($0))) }),
            (.relu, { max($0, 0) }),
        ]
        for (activation, forward) in forwards {
            var dX = [Float](repeating: .nan, count: x.count)
            activationBackward(&dX, dOut: dOut, input: x, activation, count: x.count)
            let expected = numericalGradient(x.map(Double.init)) { p in zip(p, dOut).map { forward($0) * Double($1) }.reduce(0, +) }
            assertClose(dX, expected, "\(activation) dInput", tolerance: 1e-5)
        }
    }

    func testGroupNormBackward() {
        let (batch, channels, spatial, groups) = (2, 6, 5, 3)
        let count = batch * channels * spatial, eps = 1e-5
        // A large common offset: the statistics must not lose the group's spread to it.
        let x = values(count, seed: 9).map { $0 * 2 + 3 }, w = values(channels, seed: 10).map { $0 + 1.5 }
        let b = values(channels, seed: 11), dOut = values(count, seed: 12)
        func loss(_ x: [Double], _ w: [Double], _ b: [Double]) -> Double {   // Σ dOut · group_norm(x) (torch's, in double)
            let perGroup = channels / groups, n = perGroup * spatial
            var total = 0.0
            for item in 0..<batch * groups {
                let group = x[item * n..<(item + 1) * n]
                let mean = group.reduce(0, +) / Double(n)
                let variance = group.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(n)
                for i in 0..<n {
                    let channel = item % groups * perGroup + i / spatial
                    let y = (x[item * n + i] - mean) / (variance + eps).squareRoot() * w[channel] + b[channel]
                    total += Double(dOut[item * n + i]) * y
                }
            }
            return total
        }
        let (xd, wd, bd) = (x.map(Double.init), w.map(Double.init), b.map(Double.init))
        var dX = [Float](repeating: .nan, count: count)
        var dW = [Float](repeating: 0, count: channels), dB = [Float](repeating: 0, count: channels)
        groupNormBackward(dInput: &dX, dWeight: &dW, dBias: &dB, dOut: dOut, input: x, weight: w, eps: Float(eps),
                          batch: batch, channels: channels, spatial: spatial, groups: groups)
        assertClose(dX, numericalGradient(xd) { loss($0, wd, bd) }, "group norm dInput", tolerance: 1e-4)
        assertClose(dW, numericalGradient(wd) { loss(xd, $0, bd) }, "group norm dWeight", tolerance: 1e-5)
        assertClose(dB, numericalGradient(bd) { loss(xd, wd, $0) }, "group norm dBias", tolerance: 1e-5)
    }

    /// A 3×3 conv with padding 1, Downsample2D's stride-2 conv with padding (0, 1), and a 1×1 conv; the 3×3 convs with
    /// padding 1 also by Winograd (odd sides, eight tiles side by side, one pass or a pass per tile row).
    func testConv2dBackward() {
        let shapes = [
            ConvolutionShape(batch: 2, inChannels: 3, height: 5, width: 6, outChannels: 4, kernel: 3, padding: 1, paddingEnd: 1),
            ConvolutionShape(batch: 2, inChannels: 3, height: 5, width: 19, outChannels: 4, kernel: 3, padding: 1, paddingEnd: 1),
            ConvolutionShape(batch: 1, inChannels: 2, height: 6, width: 5, outChannels: 3, kernel: 3, stride: 2, padding: 0, paddingEnd: 1),
            ConvolutionShape(batch: 2, inChannels: 3, height: 3, width: 4, outChannels: 2, kernel: 1),
        ]
        for (index, shape) in shapes.enumerated() {
            let (k, taps) = (shape.kernel, shape.inChannels * shape.kernel * shape.kernel)
            let positions = shape.outHeight * shape.outWidth
            let x = values(shape.batch * shape.inChannels * shape.height * shape.width, seed: 20 + UInt64(index))
            let w = values(shape.outChannels * taps, seed: 30 + UInt64(index)), b = values(shape.outChannels, seed: 40)
            let dOut = values(shape.batch * shape.outChannels * positions, seed: 50 + UInt64(index))
            func loss(_ x: [Double], _ w: [Double], _ b: [Double]) -> Double {   // Σ dOut · conv2d(x, w) + b, zero padded
                var total = 0.0
                for image in 0..<shape.batch {
                    for o in 0..<shape.outChannels {
                        for oy in 0..<shape.outHeight {
                            for ox in 0..<shape.outWidth {
                                var y = b[o]
                                for c in 0..<shape.inChannels {
                                    for ky in 0..<k {
                                        for kx in 0..<k {
                                            let iy = oy * shape.stride - shape.padding + ky, ix = ox * shape.stride - shape.padding + kx
                                            guard iy >= 0, iy < shape.height, ix >= 0, ix < shape.width else { continue }
                                            y += x[((image * shape.inChannels + c) * shape.height + iy) * shape.width + ix]
                                                * w[((o * shape.inChannels + c) * k + ky) * k + kx]
                                        }
                                    }
                                }
                                total += Double(dOut[((image * shape.outChannels + o) * shape.outHeight + oy) * shape.outWidth + ox]) * y
                            }
                        }
                    }
                }
                return total
            }
            let (xd, wd, bd) = (x.map(Double.init), w.map(Double.init), b.map(Double.init))
            var dX = [Float](repeating: .nan, count: x.count)
            var dW = [Float](repeating: 0, count: w.count), dB = [Float](repeating: 0, count: b.count)
            // Two threads: the second's sums of dWeight and dBias join the first's.
            var scratch = [Float](repeating: .nan, count: conv2dBackwardScratch(shape, threads: 2))
            conv2dBackward(dInput: &dX, dWeight: &dW, dBias: &dB, dOut: dOut, input: x, weight: w, shape, scratch: &scratch, threads: 2)
            assertClose(dX, numericalGradient(xd) { loss($0, wd, bd) }, "conv \(index) dInput", tolerance: 1e-5)
            let (expectedW, expectedB) = (numericalGradient(wd) { loss(xd, $0, bd) }, numericalGradient(bd) { loss(xd, wd, $0) })
            assertClose(dW, expectedW, "conv \(index) dWeight", tolerance: 1e-5)
            assertClose(dB, expectedB, "conv \(index) dBias", tolerance: 1e-5)
            guard k == 3, shape.stride == 1, shape.padding == 1, shape.paddingEnd == 1 else { continue }
            let tiling = WinogradTiling(batch: shape.batch, height: shape.height, width: shape.width)
            for passRows in [nil, 1] {
                var dW = [Float](repeating: 0, count: w.count), dB = [Float](repeating: 0, count: b.count)
                var scratch = [Float](repeating: .nan, count: winogradWeightBackwardScratch(
                    inChannels: shape.inChannels, outChannels: shape.outChannels, tiling, tileRowsPerPass: passRows))
                winogradConv2dWeightBackward(&dW, dBias: &dB, dOut: dOut, input: x, scratch: &scratch, tileRowsPerPass: passRows,
                                             batch: shape.batch, inChannels: shape.inChannels, outChannels: shape.outChannels,
                                             height: shape.height, width: shape.width)
                let passes = passRows.map { "passes of \($0) tile row" } ?? "one pass"
                assertClose(dW, expectedW, "conv \(index) Winograd dWeight, \(passes)", tolerance: 1e-5)
                assertClose(dB, expectedB, "conv \(index) Winograd dBias, \(passes)", tolerance: 1e-5)
            }
        }
    }

    func testLayerNormBackward() {
        let (rows, features, eps) = (4, 9, 1e-5)
        let x = values(rows * features, seed: 60).map { $0 * 3 - 2 }, w = values(features, seed: 61).map { $0 + 1.2 }
        let b = values(features, seed: 62), dOut = values(rows * features, seed: 63)
        func loss(_ x: [Double], _ w: [Double], _ b: [Double]) -> Double {   // Σ dOut · layer_norm(x) in double
            var total = 0.0
            for r in 0..<rows {
                let line = x[r * features..<(r + 1) * features]
                let mean = line.reduce(0, +) / Double(features)
                let variance = line.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(features)
                for i in 0..<features {
                    total += Double(dOut[r * features + i]) * ((x[r * features + i] - mean) / (variance + eps).squareRoot() * w[i] + b[i])
                }
            }
            return total
        }
        let (xd, wd, bd) = (x.map(Double.init), w.map(Double.init), b.map(Double.init))
        var dX = [Float](repeating: .nan, count: x.count)
        var dW = [Float](repeating: 0, count: features), dB = [Float](repeating: 0, count: features)
        layerNormBackward(dInput: &dX, dWeight: &dW, dBias: &dB, dOut: dOut, input: x, weight: w, eps: Float(eps),
                          rows: rows, features: features)
        assertClose(dX, numericalGradient(xd) { loss($0, wd, bd) }, "layer norm dInput", tolerance: 1e-4)
        assertClose(dW, numericalGradient(wd) { loss(xd, $0, bd) }, "layer norm dWeight", tolerance: 1e-5)
        assertClose(dB, numericalGradient(bd) { loss(xd, wd, $0) }, "layer norm dBias", tolerance: 1e-5)
    }

    func testGegluBackward() {
        let (rows, features) = (3, 5)
        let x = values(rows * 2 * features, seed: 70).map { $0 * 3 }, dOut = values(rows * features, seed: 71)
        func loss(_ x: [Double]) -> Double {   // Σ dOut · a · GELU(gate), [a | gate] per row
            var total = 0.0
            for r in 0..<rows {
                for i in 0..<features {
                    let a = x[r * 2 * features + i], gate = x[r * 2 * features + features + i]
                    total += Double(dOut[r * features + i]) * a * gate * 0.5 * (1 + erf(gate / 2.0.squareRoot()))
                }
            }
            return total
        }
        var dX = [Float](repeating: .nan, count: x.count)
        gegluBackward(&dX, dOut: dOut, input: x, rows: rows, features: features)
        assertClose(dX, numericalGradient(x.map(Double.init), loss), "geglu dInput", tolerance: 1e-5)
    }

    /// Scaled dot-product attention with 2 heads over strided, fused operands ([q | k | v] per token), with more keys
    /// than queries and a chunk of queries smaller than all of them.
    func testAttentionBackward() {
        let (batch, queries, keys, heads, dimension) = (2, 5, 7, 2, 3)
        let inner = heads * dimension, scale = 1 / Double(dimension).squareRoot()
        let q = values(batch * queries * inner, seed: 31), k = values(batch * keys * inner, seed: 32)
        let v = values(batch * keys * inner, seed: 33), dOut = values(batch * queries * inner, seed: 34)
        func loss(_ q: [Double], _ k: [Double], _ v: [Double]) -> Double {   // Σ dOut · softmax(q·kᵀ·scale)·v
            var total = 0.0
            for b in 0..<batch {
                for h in 0..<heads {
                    for i in 0..<queries {
                        let row = (b * queries + i) * inner + h * dimension
                        let scores = (0..<keys).map { j in
                            (0..<dimension).reduce(0.0) { $0 + q[row + $1] * k[(b * keys + j) * inner + h * dimension + $1] } * scale
                        }
                        let largest = scores.max()!, weights = scores.map { exp($0 - largest) }, sum = weights.reduce(0, +)
                        for d in 0..<dimension {
                            let y = (0..<keys).reduce(0.0) { $0 + weights[$1] / sum * v[(b * keys + $1) * inner + h * dimension + d] }
                            total += Double(dOut[row + d]) * y
                        }
                    }
                }
            }
            return total
        }
        var dQ = [Float](repeating: .nan, count: q.count), dK = [Float](repeating: .nan, count: k.count)
        var dV = [Float](repeating: .nan, count: v.count), scores = [Float](repeating: 0, count: 2 * 2 * keys * 2)
        q.withUnsafeBufferPointer { qp in k.withUnsafeBufferPointer { kp in v.withUnsafeBufferPointer { vp in
            dOut.withUnsafeBufferPointer { gp in
                dQ.withUnsafeMutableBufferPointer { dq in dK.withUnsafeMutableBufferPointer { dk in dV.withUnsafeMutableBufferPointer { dv in
                    func operand(_ p: UnsafePointer<Float>) -> AttentionOperand { AttentionOperand(base: p, stride: inner) }
                    // 2 threads of 2·2·Nk floats each: chunks of 2 queries.
                    attentionBackward(dQ: operand(dq.baseAddress!), dK: operand(dk.baseAddress!), dV: operand(dv.baseAddress!),
                                      dOut: operand(gp.baseAddress!), operand(qp.baseAddress!), operand(kp.baseAddress!),
                                      operand(vp.baseAddress!), scores: &scores, scoresPerThread: 2 * 2 * keys, threads: 2,
                                      scale: Float(scale), batch: batch, queries: queries, keys: keys, heads: heads, headDimension: dimension)
                }}}
            }
        }}}
        let (qd, kd, vd) = (q.map(Double.init), k.map(Double.init), v.map(Double.init))
        assertClose(dQ, numericalGradient(qd) { loss($0, kd, vd) }, "attention dQ", tolerance: 1e-5)
        assertClose(dK, numericalGradient(kd) { loss(qd, $0, vd) }, "attention dK", tolerance: 1e-5)
        assertClose(dV, numericalGradient(vd) { loss(qd, kd, $0) }, "attention dV", tolerance: 1e-5)
    }

    /// Nearest up-sampling to twice the size and to an uneven size (UNet2DConditionModel's upsample_size), 2×2
    /// average pooling of an odd-sized plane, and the channel concatenation of an up block.
    func testResamplingAndConcatenationBackward() {
        for (height, width, outHeight, outWidth) in [(3, 4, 6, 8), (3, 5, 5, 9)] {
            let x = values(2 * height * width, seed: 41), dOut = values(2 * outHeight * outWidth, seed: 42)
            func loss(_ x: [Double]) -> Double {
                var total = 0.0
                for plane in 0..<2 {
                    for oy in 0..<outHeight {
                        for ox in 0..<outWidth {
                            let iy = min(Int(Float(oy) * (Float(height) / Float(outHeight))), height - 1)
                            let ix = min(Int(Float(ox) * (Float(width) / Float(outWidth))), width - 1)
                            total += Double(dOut[(plane * outHeight + oy) * outWidth + ox]) * x[(plane * height + iy) * width + ix]
                        }
                    }
                }
                return total
            }
            var dX = [Float](repeating: .nan, count: x.count)
            upsampleNearestBackward(&dX, dOut: dOut, planes: 2, height: height, width: width, outHeight: outHeight, outWidth: outWidth)
            assertClose(dX, numericalGradient(x.map(Double.init), loss), "upsample \(height)×\(width) → \(outHeight)×\(outWidth)",
                        tolerance: 1e-6)
        }
        let (height, width) = (5, 7)
        let x = values(3 * height * width, seed: 43), dOut = values(3 * (height / 2) * (width / 2), seed: 44)
        func pooled(_ x: [Double]) -> Double {
            var total = 0.0
            for plane in 0..<3 {
                for oy in 0..<height / 2 {
                    for ox in 0..<width / 2 {
                        let at = { (y: Int, xx: Int) in x[(plane * height + y) * width + xx] }
                        let mean = (at(2 * oy, 2 * ox) + at(2 * oy, 2 * ox + 1) + at(2 * oy + 1, 2 * ox) + at(2 * oy + 1, 2 * ox + 1)) / 4
                        total += Double(dOut[(plane * (height / 2) + oy) * (width / 2) + ox]) * mean
                    }
                }
            }
            return total
        }
        var dX = [Float](repeating: .nan, count: x.count)
        averagePoolBackward(&dX, dOut: dOut, planes: 3, height: height, width: width)
        assertClose(dX, numericalGradient(x.map(Double.init), pooled), "average pool 5×7", tolerance: 1e-6)

        let joined = values(2 * 5 * 4, seed: 45)
        var dA = [Float](repeating: .nan, count: 2 * 2 * 4), dB = [Float](repeating: .nan, count: 2 * 3 * 4)
        concatenateChannelsBackward(dA: &dA, dB: &dB, dOut: joined, batch: 2, channelsA: 2, channelsB: 3, spatial: 4)
        XCTAssertEqual(dA, Array(joined[0..<8]) + Array(joined[20..<28]))
        XCTAssertEqual(dB, Array(joined[8..<20]) + Array(joined[28..<40]))
    }
}
