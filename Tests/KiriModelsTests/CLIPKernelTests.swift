import Foundation
import XCTest
@testable import KiriModels

/// The kernels CLIPTextModel added, against references computed in Double: masked softmax(q·kᵀ/√d)·v written out,
/// and the activations' closed forms. Each prints its largest difference.
final class CLIPKernelTests: XCTestCase {
    /// Deterministic values in [-scale, scale) (KernelTests' generator).
    func values(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var state = seed &* 6364136223846793005 &+ 1442695040888963407
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
    }

    func assertClose(_ actual: [Float], _ expected: [Double], _ tolerance: Double, _ label: String) {
        XCTAssertEqual(actual.count, expected.count, label)
        var worst = actual.contains { $0.isNaN } ? Double.nan : 0
        for (a, e) in zip(actual, expected) { worst = max(worst, abs(Double(a) - e)) }
        print("\(label): max |Δ| = \(worst)")
        XCTAssertLessThanOrEqual(worst, tolerance, label)
    }

    /// Fused [q | k | v] rows as CLIPEncoderLayer gives them, over chunks of 1, 3 and all 13 queries (so chunks
    /// end mid-sequence and one is shorter), on one thread and on three.
    func testCausalAttention() {
        let (batch, tokens, heads, headDimension) = (2, 13, 3, 5)
        let width = heads * headDimension
        let qkv = values(batch * tokens * 3 * width, seed: 41, scale: 2)
        let scale = 1 / Double(headDimension).squareRoot()
        var expected = [Double](repeating: 0, count: batch * tokens * width)
        for b in 0..<batch {
            for h in 0..<heads {
                func element(_ part: Int, _ t: Int, _ i: Int) -> Double {
                    Double(qkv[(b * tokens + t) * 3 * width + part * width + h * headDimension + i])
                }
                for query in 0..<tokens {
                    let logits = (0...query).map { key in (0..<headDimension).reduce(0.0) { $0 + element(0, query, $1) * element(1, key, $1) } * scale }
                    let largest = logits.max()!
                    let weights = logits.map { Foundation.exp($0 - largest) }
                    let total = weights.reduce(0, +)
                    for i in 0..<headDimension {
                        expected[(b * tokens + query) * width + h * headDimension + i] =
                            (0...query).reduce(0.0) { $0 + weights[$1] * element(2, $1, i) } / total
                    }
                }
            }
        }
        for (chunk, threads) in [(1, 1), (3, 3), (tokens, 1), (tokens, 3)] {
            let perThread = chunk * (tokens + 1)
            var scores = [Float](repeating: .nan, count: threads * perThread)
            var out = [Float](repeating: .nan, count: batch * tokens * width)
            qkv.withUnsafeBufferPointer { fused in
                let base = fused.baseAddress!
                attentionForward(&out, outStride: width, AttentionOperand(base: base, stride: 3 * width),
                                 AttentionOperand(base: base + width, stride: 3 * width),
                                 AttentionOperand(base: base + 2 * width, stride: 3 * width), scores: &scores,
                                 scoresPerThread: perThread, threads: threads, scale: Float(scale), batch: batch,
                                 queries: tokens, keys: tokens, heads: heads, headDimension: headDimension, causal: true)
            }
            assertClose(out, expected, 1e-5, "causal attention, chunks of \(chunk), \(threads) threads")
        }
    }

    func testTransformersActivations() {
        let xs = stride(from: -30.0, through: 30.0, by: 0.01).map { Float($0) }
        let formulas: [(Activation, (Double) -> Double)] = [
            (.quickGelu, { $0 / (1 + Foundation.exp(-1.702 * $0)) }),
            (.gelu, { 0.5 * $0 * (1 + Foundation.erf($0 / 2.0.squareRoot())) }),
        ]
        for (activation, formula) in formulas {
            var out = [Float](repeating: .nan, count: xs.count)
            activationForward(&out, xs, activation, count: xs.count)
            assertClose(out, xs.map { formula(Double($0)) }, 1e-5, "\(activation.rawValue) on [-30, 30]")
        }
    }
}
