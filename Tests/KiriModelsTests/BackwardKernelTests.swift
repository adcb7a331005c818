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

    /// A 3×3 conv with padding 1, Downsample2D's stride-2 conv with padding (0, 1), and a 1×1 conv.
    func testConv2dBackward() {
        let shapes = [
            ConvolutionShape(batch: 2, inChannels: 3, height: 5, width: 6, outChannels: 4, kernel: 3, padding: 1, paddingEnd: 1),
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
            var columns = [Float](repeating: 0, count: taps * positions)
            conv2dBackward(dInput: &dX, dWeight: &dW, dBias: &dB, dOut: dOut, input: x, weight: w, shape, columns: &columns)
            assertClose(dX, numericalGradient(xd) { loss($0, wd, bd) }, "conv \(index) dInput", tolerance: 1e-5)
            assertClose(dW, numericalGradient(wd) { loss(xd, $0, bd) }, "conv \(index) dWeight", tolerance: 1e-5)
            assertClose(dB, numericalGradient(bd) { loss(xd, wd, $0) }, "conv \(index) dBias", tolerance: 1e-5)
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
}
