import Foundation
import XCTest
@testable import KiriModels

/// Each kernel against an independent reference computed in Double in the test: a direct convolution, two-pass
/// statistics, naive softmax(q·kᵀ/√d)·v, closed forms. Every test prints its largest difference.
final class KernelTests: XCTestCase {
    /// Deterministic values in [-scale, scale).
    func values(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var state = seed &* 6364136223846793005 &+ 1442695040888963407
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
    }

    /// Largest |actual - expected|, printed with `label`, and checked against `tolerance`.
    func assertClose(_ actual: [Float], _ expected: [Double], _ tolerance: Double, _ label: String,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, label, file: file, line: line)
        var worst = 0.0
        for (a, e) in zip(actual, expected) { worst = max(worst, abs(Double(a) - e)) }
        if actual.contains(where: { $0.isNaN }) { worst = .nan }
        print("\(label): max |Δ| = \(worst)")
        XCTAssertLessThanOrEqual(worst, tolerance, label, file: file, line: line)
    }

    // MARK: Convolution

    /// torch.nn.functional.conv2d written out: every output sums weight × input over the taps inside the image.
    func directConvolution(_ input: [Float], _ weight: [Float], _ bias: [Float], _ s: ConvolutionShape) -> [Double] {
        var out = [Double](repeating: 0, count: s.batch * s.outChannels * s.outHeight * s.outWidth)
        for b in 0..<s.batch {
            for o in 0..<s.outChannels {
                for oy in 0..<s.outHeight {
                    for ox in 0..<s.outWidth {
                        var total = Double(bias[o])
                        for c in 0..<s.inChannels {
                            for ky in 0..<s.kernel {
                                for kx in 0..<s.kernel {
                                    let iy = oy * s.stride - s.padding + ky, ix = ox * s.stride - s.padding + kx
                                    guard iy >= 0, iy < s.height, ix >= 0, ix < s.width else { continue }
                                    total += Double(weight[((o * s.inChannels + c) * s.kernel + ky) * s.kernel + kx])
                                        * Double(input[((b * s.inChannels + c) * s.height + iy) * s.width + ix])
                                }
                            }
                        }
                        out[((b * s.outChannels + o) * s.outHeight + oy) * s.outWidth + ox] = total
                    }
                }
            }
        }
        return out
    }

    func runConvolution(_ plan: ConvolutionPlan, input: [Float], _ weight: WeightChunks, bias: [Float], extraBias: [Float]? = nil,
                        initial: [Float]? = nil) -> [Float] {
        let s = plan.shape
        var out = initial ?? [Float](repeating: .nan, count: s.batch * s.outChannels * s.outHeight * s.outWidth)
        var columns = [Float](repeating: .nan, count: max(1, plan.columnsCount(weight)))
        conv2dForward(&out, input, weight, bias, extraBias: extraBias, accumulate: initial != nil, columns: &columns, plan)
        return out
    }

    /// `values` [rows, columns] in `format`, and the float32 values it holds (which the references use).
    func matrix(_ values: [Float], rows: Int, format: WeightFormat) throws -> (WeightMatrix, [Float]) {
        let matrix = try values.withUnsafeBufferPointer {
            try WeightMatrix($0.baseAddress!, rows: rows, columns: values.count / rows, format: format)
        }
        let stored = try matrix.tensor()
        return (matrix, Array(UnsafeBufferPointer(start: stored.data, count: stored.count)))
    }

    func testConv2dMatchesDirectConvolution() throws {
        let shapes = [
            // 3×3 "same" (conv_in, ResNet convs), odd sizes.
            ConvolutionShape(batch: 2, inChannels: 3, height: 7, width: 6, outChannels: 5, kernel: 3, padding: 1, paddingEnd: 1),
            // Downsample2D: stride 2, padding 1, even and odd sides.
            ConvolutionShape(batch: 2, inChannels: 4, height: 8, width: 8, outChannels: 4, kernel: 3, stride: 2, padding: 1, paddingEnd: 1),
            ConvolutionShape(batch: 1, inChannels: 2, height: 5, width: 7, outChannels: 3, kernel: 3, stride: 2, padding: 1, paddingEnd: 1),
            // Downsample2D with padding 0: F.pad (0, 1, 0, 1), then no padding.
            ConvolutionShape(batch: 2, inChannels: 3, height: 8, width: 6, outChannels: 2, kernel: 3, stride: 2, padding: 0, paddingEnd: 1),
            // conv_shortcut and 1×1 proj_in: no im2col.
            ConvolutionShape(batch: 2, inChannels: 6, height: 3, width: 5, outChannels: 4, kernel: 1),
            // A 3×3 conv on a 1×1 image: every tap but the centre in the padding.
            ConvolutionShape(batch: 1, inChannels: 3, height: 1, width: 1, outChannels: 2, kernel: 3, padding: 1, paddingEnd: 1),
        ]
        for (index, s) in shapes.enumerated() {
            let input = values(s.batch * s.inChannels * s.height * s.width, seed: 1)
            let bias = values(s.outChannels, seed: 3)
            for format in WeightFormat.allCases {
                let (weight, stored) = try matrix(values(s.outChannels * s.inChannels * s.kernel * s.kernel, seed: 2),
                                                  rows: s.outChannels, format: format)
                let expected = directConvolution(input, stored, bias, s)
                // One thread over whole images, and two threads over bands of two rows that straddle images; the
                // weight whole, and in chunks of two rows.
                for (plan, chunkRows) in [(ConvolutionPlan(s, threads: 1), nil), (ConvolutionPlan(s, threads: 2, bandRows: 2), 2)] {
                    let out = runConvolution(plan, input: input, WeightChunks(weight, rows: chunkRows), bias: bias)
                    assertClose(out, expected, 1e-5, "conv2d case \(index) \(s.kernel)×\(s.kernel) stride \(s.stride) padding (\(s.padding), \(s.paddingEnd)) → \(s.outHeight)×\(s.outWidth), \(format) weights, \(plan.threads) threads, bands of \(plan.bandRows)")
                }
            }
        }
    }

    /// ResnetBlock2D's two fusions: conv1 with the time embedding as a per-image bias, conv2 added onto the shortcut.
    func testConv2dPerImageBiasAndAccumulation() throws {
        let s = ConvolutionShape(batch: 2, inChannels: 3, height: 4, width: 5, outChannels: 4, kernel: 3, padding: 1, paddingEnd: 1)
        let input = values(2 * 3 * 4 * 5, seed: 4), weight = values(4 * 3 * 9, seed: 5), bias = values(4, seed: 6)
        let extra = values(2 * 4, seed: 7), initial = values(2 * 4 * 4 * 5, seed: 8)
        let direct = directConvolution(input, weight, bias, s)
        let expected = direct.indices.map { i in direct[i] + Double(extra[i / 20]) + Double(initial[i]) }
        let (matrix, _) = try matrix(weight, rows: 4, format: .f32)
        let out = runConvolution(ConvolutionPlan(s, threads: 2, bandRows: 3), input: input, WeightChunks(matrix),
                                 bias: bias, extraBias: extra, initial: initial)
        assertClose(out, expected, 1e-5, "conv2d + per-image bias, accumulated")
    }

    /// Winograd F(2×2, 3×3) for 3×3 stride-1 padding-1 convs: even and odd sides, tiles split into several passes,
    /// more than eight tiles in a row, a 1×1 image, the per-image bias and accumulation.
    func testWinogradConvolutionMatchesDirectConvolution() throws {
        let cases: [(batch: Int, inChannels: Int, height: Int, width: Int, outChannels: Int, passRows: Int?, accumulate: Bool)] = [
            (2, 3, 8, 8, 5, nil, false), (1, 4, 7, 5, 3, nil, false), (2, 2, 5, 21, 4, 2, true), (3, 5, 6, 19, 2, 4, false),
            (1, 3, 1, 1, 2, nil, true), (2, 6, 2, 3, 7, 1, false),
        ]
        for (index, c) in cases.enumerated() {
            let s = ConvolutionShape(batch: c.batch, inChannels: c.inChannels, height: c.height, width: c.width,
                                     outChannels: c.outChannels, kernel: 3, padding: 1, paddingEnd: 1)
            let input = values(c.batch * c.inChannels * c.height * c.width, seed: 30)
            let bias = values(c.outChannels, seed: 32)
            let extra = values(c.batch * c.outChannels, seed: 33)
            let initial = c.accumulate ? values(c.batch * c.outChannels * c.height * c.width, seed: 34)
                                       : [Float](repeating: .nan, count: c.batch * c.outChannels * c.height * c.width)
            // float32 with its transforms kept, and float16 made per call in chunks of two output channels (more
            // than one when there are three or more).
            let format: WeightFormat = index % 2 == 0 ? .f32 : .f16
            let (weight, stored) = try matrix(values(c.outChannels * c.inChannels * 9, seed: 31), rows: c.outChannels, format: format)
            let filters = try WinogradWeight(weight, chunkRows: 2)
            let tiling = WinogradTiling(batch: c.batch, height: c.height, width: c.width)
            var scratch = [Float](repeating: .nan, count: filters.scratchCount(tiling, tileRowsPerPass: c.passRows))
            var out = initial
            winogradConv2dForward(&out, input, filters, bias, extraBias: extra, accumulate: c.accumulate, scratch: &scratch,
                                  tileRowsPerPass: c.passRows, batch: c.batch, height: c.height, width: c.width)
            let direct = directConvolution(input, stored, bias, s)
            let plane = c.height * c.width
            let expected = direct.indices.map { i in
                direct[i] + Double(extra[i / plane]) + (c.accumulate ? Double(initial[i]) : 0)
            }
            assertClose(out, expected, 2e-5, "Winograd conv case \(index) [\(c.batch), \(c.inChannels), \(c.height), \(c.width)] → \(c.outChannels) channels, \(format) weights in chunks of \(filters.chunks.rows)\(c.passRows.map { ", passes of \($0) tile rows" } ?? "")\(c.accumulate ? ", accumulated" : "")")
        }
    }

    /// Upsample2D fused into the Winograd conv: reading the 2× nearest up-sampling of the input in the transform
    /// gives the same bits as up-sampling it first, with even and odd input sides and several passes.
    func testWinogradReadsANearestUpsamplingInPlace() throws {
        for (batch, inChannels, height, width, outChannels, passRows) in [(2, 3, 4, 4, 5, nil), (1, 2, 3, 5, 3, 2), (2, 4, 1, 1, 2, nil)] {
            let input = values(batch * inChannels * height * width, seed: 40), bias = values(outChannels, seed: 42)
            let (weight, _) = try matrix(values(outChannels * inChannels * 9, seed: 41), rows: outChannels, format: .f16)
            let filters = try WinogradWeight(weight)
            let tiling = WinogradTiling(batch: batch, height: 2 * height, width: 2 * width)
            var scratch = [Float](repeating: .nan, count: filters.scratchCount(tiling, tileRowsPerPass: passRows))
            var upsampled = [Float](repeating: .nan, count: 4 * input.count)
            upsampleNearestForward(&upsampled, input, planes: batch * inChannels, height: height, width: width,
                                   outHeight: 2 * height, outWidth: 2 * width)
            var expected = [Float](repeating: .nan, count: batch * outChannels * 4 * height * width), fused = expected
            winogradConv2dForward(&expected, upsampled, filters, bias, scratch: &scratch, tileRowsPerPass: passRows, batch: batch,
                                  height: 2 * height, width: 2 * width)
            winogradConv2dForward(&fused, input, filters, bias, scratch: &scratch, tileRowsPerPass: passRows, batch: batch,
                                  height: 2 * height, width: 2 * width, upsampled: true)
            XCTAssertEqual(fused.map(\.bitPattern), expected.map(\.bitPattern), "[\(batch), \(inChannels), \(height), \(width)] up-sampled")
        }
    }

    /// GroupNorm + SiLU fused into the Winograd conv (ResnetBlock2D's conv1 and conv2, conv_out): mapping each input
    /// row as the transform reads it gives the same bits as normalising the whole input first, over several images,
    /// passes of tile rows, chunks of output channels, odd sides and the 2× up-sampling.
    func testWinogradReadsAGroupNormInPlace() throws {
        let cases: [(batch: Int, channels: Int, height: Int, width: Int, outChannels: Int, passRows: Int?, upsampled: Bool)] = [
            (2, 4, 6, 6, 5, nil, false), (3, 6, 5, 9, 3, 2, false), (1, 4, 7, 3, 4, 1, false), (2, 4, 3, 5, 3, 2, true),
            (2, 2, 1, 1, 2, nil, true),
        ]
        for c in cases {
            let input = values(c.batch * c.channels * c.height * c.width, seed: 50).map { $0 * 2 + 0.3 }
            let gamma = values(c.channels, seed: 51).map { 1 + $0 }, beta = values(c.channels, seed: 52), bias = values(c.outChannels, seed: 53)
            let (weight, _) = try matrix(values(c.outChannels * c.channels * 9, seed: 54), rows: c.outChannels, format: .f16)
            let filters = try WinogradWeight(weight, chunkRows: 2)
            let (height, width) = c.upsampled ? (2 * c.height, 2 * c.width) : (c.height, c.width)
            let tiling = WinogradTiling(batch: c.batch, height: height, width: width)
            var scratch = [Float](repeating: .nan, count: filters.scratchCount(tiling, tileRowsPerPass: c.passRows))
            var normalized = [Float](repeating: .nan, count: input.count)
            groupNormForward(&normalized, input, gamma, beta, eps: 1e-6, activation: .silu, batch: c.batch, channels: c.channels,
                             spatial: c.height * c.width, groups: 2)
            var expected = [Float](repeating: .nan, count: c.batch * c.outChannels * height * width), fused = expected
            var upsampled = [Float](repeating: .nan, count: 4 * input.count)
            if c.upsampled {
                upsampleNearestForward(&upsampled, normalized, planes: c.batch * c.channels, height: c.height, width: c.width,
                                       outHeight: height, outWidth: width)
            }
            winogradConv2dForward(&expected, c.upsampled ? upsampled : normalized, filters, bias, scratch: &scratch,
                                  tileRowsPerPass: c.passRows, batch: c.batch, height: height, width: width)
            var mean = [Float](repeating: .nan, count: c.batch * c.channels), scale = mean
            groupNormStatistics(mean: &mean, scale: &scale, input, gamma, eps: 1e-6, batch: c.batch, channels: c.channels,
                                spatial: c.height * c.width, groups: 2)
            mean.withUnsafeBufferPointer { m in
                scale.withUnsafeBufferPointer { s in
                    beta.withUnsafeBufferPointer { b in
                        let map = ChannelNormalization(mean: m.baseAddress!, scale: s.baseAddress!, shift: b.baseAddress!,
                                                       channels: c.channels, activation: .silu)
                        winogradConv2dForward(&fused, input, filters, bias, scratch: &scratch, tileRowsPerPass: c.passRows,
                                              batch: c.batch, height: height, width: width, upsampled: c.upsampled,
                                              normalization: map)
                    }
                }
            }
            XCTAssertFalse(fused.contains { $0.isNaN })
            XCTAssertEqual(fused.map(\.bitPattern), expected.map(\.bitPattern),
                           "[\(c.batch), \(c.channels), \(c.height), \(c.width)] normalised\(c.upsampled ? ", up-sampled" : "")")
        }
    }

    // MARK: Normalisation

    /// out[B, C, S] = GroupNorm(groups, C, eps)(input) with affine weight and bias, then `activation`, as the networks
    /// run it: groupNormStatistics, then the map (CPUBackend's two kernels).
    func groupNormForward(_ out: inout [Float], _ input: [Float], _ weight: [Float], _ bias: [Float], eps: Float,
                          activation: Activation? = nil, batch: Int, channels: Int, spatial: Int, groups: Int) {
        var mean = [Float](repeating: .nan, count: batch * channels), scale = mean
        groupNormStatistics(mean: &mean, scale: &scale, input, weight, eps: eps, batch: batch, channels: channels, spatial: spatial,
                            groups: groups)
        mean.withUnsafeBufferPointer { m in
            scale.withUnsafeBufferPointer { s in
                bias.withUnsafeBufferPointer { b in
                    let map = ChannelNormalization(mean: m.baseAddress!, scale: s.baseAddress!, shift: b.baseAddress!,
                                                   channels: channels, activation: activation)
                    channelNormalizationForward(&out, input, map, batch: batch, spatial: spatial)
                }
            }
        }
    }

    func testGroupNormMatchesTwoPassDouble() {
        for (batch, channels, spatial, groups, activation) in [(2, 8, 13, 4, nil), (1, 6, 64, 1, UNetConfig.Activation.silu),
                                                               (2, 4, 3, 4, nil), (3, 16, 40, 8, .silu)] {
            let input = values(batch * channels * spatial, seed: 9).map { $0 * 3 + 0.5 }
            let weight = values(channels, seed: 10).map { 1 + $0 }, bias = values(channels, seed: 11)
            let eps: Float = 1e-5
            var out = [Float](repeating: .nan, count: input.count)
            groupNormForward(&out, input, weight, bias, eps: eps, activation: activation, batch: batch, channels: channels,
                             spatial: spatial, groups: groups)
            var expected = [Double](repeating: 0, count: input.count)
            let size = channels / groups * spatial
            for item in 0..<batch * groups {
                let slice = (item * size..<(item + 1) * size).map { Double(input[$0]) }
                let mean = slice.reduce(0, +) / Double(size)
                let variance = slice.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(size)
                for i in 0..<size {
                    let channel = (item % groups) * (channels / groups) + i / spatial
                    var y = (slice[i] - mean) / (variance + Double(eps)).squareRoot() * Double(weight[channel]) + Double(bias[channel])
                    if activation == .silu { y = y / (1 + Foundation.exp(-y)) }
                    expected[item * size + i] = y
                }
            }
            assertClose(out, expected, 2e-6, "group norm [\(batch), \(channels), \(spatial)] / \(groups) groups\(activation == nil ? "" : " + SiLU")")
        }
    }

    /// A group with a large mean and a small spread: the two-pass variance keeps its digits.
    func testGroupNormLargeOffset() {
        let count = 4096
        let input = values(count, seed: 12).map { 1000 + $0 * 0.01 }
        var out = [Float](repeating: .nan, count: count)
        groupNormForward(&out, input, [1], [0], eps: 1e-5, batch: 1, channels: 1, spatial: count, groups: 1)
        let data = input.map(Double.init)
        let mean = data.reduce(0, +) / Double(count)
        let variance = data.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(count)
        assertClose(out, data.map { ($0 - mean) / (variance + 1e-5).squareRoot() }, 5e-3, "group norm of 1000 ± 0.01")
    }

    func testLayerNormMatchesTwoPassDouble() {
        for (rows, features) in [(5, 32), (3, 13), (2, 1)] {
            let input = values(rows * features, seed: 13).map { $0 * 2 - 0.3 }
            let weight = values(features, seed: 14).map { 1 + $0 }, bias = values(features, seed: 15)
            var out = [Float](repeating: .nan, count: input.count)
            layerNormForward(&out, input, weight, bias, eps: 1e-5, rows: rows, features: features)
            var expected: [Double] = []
            for row in 0..<rows {
                let x = (0..<features).map { Double(input[row * features + $0]) }
                let mean = x.reduce(0, +) / Double(features)
                let variance = x.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(features)
                for i in 0..<features {
                    expected.append((x[i] - mean) / (variance + 1e-5).squareRoot() * Double(weight[i]) + Double(bias[i]))
                }
            }
            assertClose(out, expected, 2e-6, "layer norm [\(rows), \(features)]")
        }
    }

    // MARK: Linear layers

    /// The three layouts, for every weight format, with the weight whole and in chunks of one row.
    func testLinearLayouts() throws {
        let (batch, tokens, inFeatures, outFeatures) = (2, 5, 64, 3)
        let bias = values(outFeatures, seed: 17)
        let tokenInput = values(batch * tokens * inFeatures, seed: 18)
        for format in WeightFormat.allCases {
            let (matrix, weight) = try matrix(values(outFeatures * inFeatures, seed: 16), rows: outFeatures, format: format)
            for chunks in [WeightChunks(matrix), WeightChunks(matrix, rows: 1)] {
                let label = "\(format) weights in chunks of \(chunks.rows)"
                var scratch = [Float](repeating: .nan, count: max(1, chunks.scratchCount))
                func reference(_ b: Int, _ t: Int, _ o: Int, _ x: (Int, Int, Int) -> Float) -> Double {
                    (0..<inFeatures).reduce(Double(bias[o])) { $0 + Double(weight[o * inFeatures + $1]) * Double(x(b, t, $1)) }
                }

                var out = [Float](repeating: .nan, count: batch * tokens * outFeatures)
                linearForward(&out, tokenInput, chunks, bias, rows: batch * tokens, scratch: &scratch)
                var expected: [Double] = []
                for b in 0..<batch { for t in 0..<tokens { for o in 0..<outFeatures {
                    expected.append(reference(b, t, o) { tokenInput[($0 * tokens + $1) * inFeatures + $2] })
                } } }
                assertClose(out, expected, 1e-5, "linear [B·T, I] → [B·T, O], \(label)")

                let initial = values(out.count, seed: 19)
                var accumulated = initial
                linearForward(&accumulated, tokenInput, chunks, bias, accumulate: true, rows: batch * tokens, scratch: &scratch)
                assertClose(accumulated, expected.indices.map { expected[$0] + Double(initial[$0]) }, 1e-5, "linear, accumulated, \(label)")

                // Channels first [B, I, T] in, tokens out.
                let channelInput = values(batch * inFeatures * tokens, seed: 20)
                linearFromChannelsForward(&out, channelInput, chunks, bias, batch: batch, tokens: tokens, scratch: &scratch)
                expected = []
                for b in 0..<batch { for t in 0..<tokens { for o in 0..<outFeatures {
                    expected.append(reference(b, t, o) { channelInput[($0 * inFeatures + $2) * tokens + $1] })
                } } }
                assertClose(out, expected, 1e-5, "linear [B, I, T] → [B, T, O], \(label)")

                // Tokens in, channels first [B, O, T] out, added to what is there.
                var channelsOut = initial
                linearToChannelsForward(&channelsOut, tokenInput, chunks, bias, accumulate: true, batch: batch, tokens: tokens,
                                        scratch: &scratch)
                expected = []
                for b in 0..<batch { for o in 0..<outFeatures { for t in 0..<tokens {
                    expected.append(Double(initial[(b * outFeatures + o) * tokens + t])
                        + reference(b, t, o) { tokenInput[($0 * tokens + $1) * inFeatures + $2] })
                } } }
                assertClose(channelsOut, expected, 1e-5, "linear [B, T, I] → [B, O, T], accumulated, \(label)")
            }
        }
    }

    // MARK: Activations

    func testVectorExpAndErf() {
        let xs = stride(from: -87.0, through: 88.0, by: 0.01).map { Float($0) }
        var out = [Float](repeating: .nan, count: xs.count)
        vectorMap(&out, xs, xs.count) { vectorExp($0) }
        var worst = 0.0
        for (x, y) in zip(xs, out) { worst = max(worst, abs(Double(y) / Foundation.exp(Double(x)) - 1)) }
        print("exp on [-87, 88]: max relative error = \(worst)")
        XCTAssertLessThan(worst, 3e-7)

        let ys = stride(from: -6.0, through: 6.0, by: 0.001).map { Float($0) }
        out = [Float](repeating: .nan, count: ys.count)
        vectorMap(&out, ys, ys.count) { vectorErf($0) }
        assertClose(out, ys.map { Foundation.erf(Double($0)) }, 4e-7, "erf on [-6, 6]")
    }

    func testActivationsMatchTheirFormulas() {
        let xs = stride(from: -30.0, through: 30.0, by: 0.013).map { Float($0) } + [-100, 100, 0]
        let formulas: [(UNetConfig.Activation, (Double) -> Double, Double)] = [
            (.silu, { $0 / (1 + Foundation.exp(-$0)) }, 4e-6),
            (.gelu, { 0.5 * $0 * (1 + Foundation.erf($0 / 2.0.squareRoot())) }, 4e-6),
            (.mish, { $0 * Foundation.tanh(Foundation.log1p(Foundation.exp($0))) }, 4e-6),
            (.relu, { max($0, 0) }, 0),
        ]
        for (activation, formula, tolerance) in formulas {
            var out = [Float](repeating: .nan, count: xs.count)
            activationForward(&out, xs, activation, count: xs.count)
            assertClose(out, xs.map { formula(Double($0)) }, tolerance, "\(activation) on [-30, 30]")
        }
        // Relative accuracy near zero, where the absolute bound says little.
        let small = stride(from: -1.0, through: 1.0, by: 0.001).map { Float($0) }
        var out = [Float](repeating: .nan, count: small.count)
        activationForward(&out, small, .gelu, count: small.count)
        assertClose(out, small.map { 0.5 * Double($0) * (1 + Foundation.erf(Double($0) / 2.0.squareRoot())) }, 2e-7, "GELU on [-1, 1]")
    }

    func testGEGLU() {
        let (rows, features) = (3, 11)
        let input = values(rows * 2 * features, seed: 21, scale: 3)
        var out = [Float](repeating: .nan, count: rows * features)
        gegluForward(&out, input, rows: rows, features: features)
        var expected: [Double] = []
        for row in 0..<rows {
            for i in 0..<features {
                let a = Double(input[row * 2 * features + i]), gate = Double(input[row * 2 * features + features + i])
                expected.append(a * 0.5 * gate * (1 + Foundation.erf(gate / 2.0.squareRoot())))
            }
        }
        assertClose(out, expected, 2e-6, "GEGLU [3, 2·11] → [3, 11]")
    }

    // MARK: Attention

    func naiveAttention(q: [Float], k: [Float], v: [Float], batch: Int, queries: Int, keys: Int, heads: Int, d: Int,
                        qStride: Int, kStride: Int, vStride: Int) -> [Double] {
        var out = [Double](repeating: 0, count: batch * queries * heads * d)
        for b in 0..<batch {
            for h in 0..<heads {
                for i in 0..<queries {
                    var logits = (0..<keys).map { j in
                        (0..<d).reduce(0.0) {
                            $0 + Double(q[(b * queries + i) * qStride + h * d + $1]) * Double(k[(b * keys + j) * kStride + h * d + $1])
                        } / Double(d).squareRoot()
                    }
                    let maximum = logits.max()!
                    logits = logits.map { Foundation.exp($0 - maximum) }
                    let total = logits.reduce(0, +)
                    for c in 0..<d {
                        out[(b * queries + i) * heads * d + h * d + c] = (0..<keys).reduce(0.0) {
                            $0 + logits[$1] / total * Double(v[(b * keys + $1) * vStride + h * d + c])
                        }
                    }
                }
            }
        }
        return out
    }

    func testAttentionMatchesNaiveSoftmax() {
        // Self-attention on fused [q | k | v] rows, on two threads whose scores hold two rows each: seven chunks per head.
        let (batch, tokens, heads, d) = (2, 13, 3, 4)
        let inner = heads * d
        let qkv = values(batch * tokens * 3 * inner, seed: 22, scale: 2)
        var out = [Float](repeating: .nan, count: batch * tokens * inner)
        var scores = [Float](repeating: .nan, count: 4 * (tokens + 1))
        qkv.withUnsafeBufferPointer { p in
            let base = p.baseAddress!
            attentionForward(&out, outStride: inner, AttentionOperand(base: base, stride: 3 * inner),
                             AttentionOperand(base: base + inner, stride: 3 * inner),
                             AttentionOperand(base: base + 2 * inner, stride: 3 * inner), scores: &scores, scoresPerThread: 2 * (tokens + 1),
                             threads: 2, scale: 1 / Float(d).squareRoot(), batch: batch, queries: tokens, keys: tokens, heads: heads,
                             headDimension: d)
        }
        let q = qkv, k = Array(qkv.dropFirst(inner)) + [Float](repeating: 0, count: inner),
            v = Array(qkv.dropFirst(2 * inner)) + [Float](repeating: 0, count: 2 * inner)
        assertClose(out, naiveAttention(q: q, k: k, v: v, batch: batch, queries: tokens, keys: tokens, heads: heads, d: d,
                                        qStride: 3 * inner, kStride: 3 * inner, vStride: 3 * inner), 2e-6,
                    "self-attention 2×13 tokens, 3 heads of 4, chunks of 2 rows on 2 threads")

        // Cross-attention: 7 keys from a context, [k | v] fused.
        let keys = 7
        let query = values(batch * tokens * inner, seed: 23, scale: 2), keyValue = values(batch * keys * 2 * inner, seed: 24, scale: 2)
        keyValue.withUnsafeBufferPointer { p in
            query.withUnsafeBufferPointer { qp in
                attentionForward(&out, outStride: inner, AttentionOperand(base: qp.baseAddress!, stride: inner),
                                 AttentionOperand(base: p.baseAddress!, stride: 2 * inner),
                                 AttentionOperand(base: p.baseAddress! + inner, stride: 2 * inner), scores: &scores,
                                 scoresPerThread: 4 * (tokens + 1), threads: 1, scale: 1 / Float(d).squareRoot(), batch: batch,
                                 queries: tokens, keys: keys, heads: heads, headDimension: d)
            }
        }
        assertClose(out, naiveAttention(q: query, k: keyValue, v: Array(keyValue.dropFirst(inner)) + [Float](repeating: 0, count: inner),
                                        batch: batch, queries: tokens, keys: keys, heads: heads, d: d, qStride: inner,
                                        kStride: 2 * inner, vStride: 2 * inner), 2e-6, "cross-attention 13 queries × 7 keys")
    }

    func testSoftmaxOfLargeLogits() {
        let row: [Float] = [1000, 999, 998, -1000, 1000, 0, 0, 0, 0, 0, 3]
        var x = row
        softmaxForward(&x, rows: 1, columns: row.count)
        let e = row.map { Foundation.exp(Double($0) - 1000) }
        let total = e.reduce(0, +)
        assertClose(x, e.map { $0 / total }, 1e-7, "softmax of logits near 1000")
    }

    // MARK: Resampling

    func testNearestUpsamplingPoolingAndConcatenation() {
        let (planes, height, width) = (3, 3, 5)
        let input = values(planes * height * width, seed: 25)
        var up = [Float](repeating: .nan, count: planes * 6 * 10)
        upsampleNearestForward(&up, input, planes: planes, height: height, width: width, outHeight: 6, outWidth: 10)
        var expected: [Double] = []
        for p in 0..<planes { for y in 0..<6 { for x in 0..<10 { expected.append(Double(input[(p * height + y / 2) * width + x / 2])) } } }
        assertClose(up, expected, 0, "nearest 2× [3, 3, 5] → [3, 6, 10]")

        // A size that is not a multiple: ⌊i · in / out⌋, as F.interpolate(size=...).
        var odd = [Float](repeating: .nan, count: planes * 5 * 7)
        upsampleNearestForward(&odd, input, planes: planes, height: height, width: width, outHeight: 5, outWidth: 7)
        expected = []
        for p in 0..<planes { for y in 0..<5 { for x in 0..<7 {
            expected.append(Double(input[(p * height + y * 3 / 5) * width + x * 5 / 7]))
        } } }
        assertClose(odd, expected, 0, "nearest [3, 3, 5] → [3, 5, 7]")

        var pooled = [Float](repeating: .nan, count: planes * 1 * 2)
        averagePoolForward(&pooled, input, planes: planes, height: height, width: width)
        expected = []
        for p in 0..<planes { for x in 0..<2 {
            let at = { (y: Int, x: Int) in Double(input[(p * height + y) * width + x]) }
            expected.append((at(0, 2 * x) + at(0, 2 * x + 1) + at(1, 2 * x) + at(1, 2 * x + 1)) / 4)
        } }
        assertClose(pooled, expected, 1e-7, "average pool 2×2 [3, 3, 5] → [3, 1, 2]")

        let a = values(2 * 3 * 4, seed: 26), b = values(2 * 2 * 4, seed: 27)
        var joined = [Float](repeating: .nan, count: 2 * 5 * 4)
        concatenateChannelsForward(&joined, a, b, batch: 2, channelsA: 3, channelsB: 2, spatial: 4)
        expected = []
        for n in 0..<2 { expected += a[n * 12..<(n + 1) * 12].map(Double.init) + b[n * 8..<(n + 1) * 8].map(Double.init) }
        assertClose(joined, expected, 0, "cat([2, 3, 4], [2, 2, 4], dim=1)")
    }

    // MARK: Timestep embedding

    func testTimestepEmbeddingClosedForm() {
        for (dimension, flip, shift) in [(16, true, 0.0), (16, false, 1.0), (7, true, 0.0)] {
            let timesteps: [Float] = [0, 1, 37, 801.25]
            var out = [Float](repeating: .nan, count: timesteps.count * dimension)
            timestepEmbeddingForward(&out, timesteps, dimension: dimension, flipSinToCos: flip, frequencyShift: shift)
            let half = dimension / 2
            var expected: [Double] = []
            for t in timesteps {
                let arguments = (0..<half).map { Double(t) * Foundation.exp(-Foundation.log(10000) * Double($0) / (Double(half) - shift)) }
                let sines = arguments.map(Foundation.sin), cosines = arguments.map(Foundation.cos)
                expected += flip ? cosines + sines : sines + cosines
                if dimension % 2 == 1 { expected.append(0) }
            }
            // float32 rounding of t·f, up to 801 radians, moves the sine by up to ~1e-4 (torch rounds the same way).
            assertClose(out, expected, 2e-4, "timestep embedding dim \(dimension) flip \(flip) shift \(shift)")
            XCTAssertEqual(out[flip ? 0 : half], 1, "cos(0) at t = 0")
        }
    }
}
