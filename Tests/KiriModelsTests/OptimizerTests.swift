import Foundation
import XCTest
@testable import KiriModels

/// Issue 15: three steps of clip_grad_norm_, AdamW and the EMA against torch's, from
/// Tests/Fixtures/training/optim.json (made by make_optim.py beside it).
final class OptimizerTests: XCTestCase {
    struct Fixture: Decodable {
        struct Options: Decodable {
            var lr: Double, beta1: Double, beta2: Double, eps: Double, weight_decay: Double, max_norm: Float, decay: Double
        }
        struct Step: Decodable {
            var grads: [[Float]], total_norm: Float, params: [[Float]], exp_avg: [[Float]], exp_avg_sq: [[Float]], ema: [[Float]]
        }
        var options: Options, initial: [[Float]], steps: [Step]
    }

    func testClipAdamWAndEMAEqualTorch() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/training/optim.json")
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
        let o = fixture.options
        let options = AdamWOptions(lr: o.lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay: o.weight_decay)
        var params = fixture.initial, ema = fixture.initial
        var expAvg = params.map { [Float](repeating: 0, count: $0.count) }, expAvgSq = expAvg
        var worst = 0.0
        func compare(_ ours: [[Float]], _ torch: [[Float]], _ what: String) {
            for (a, b) in zip(ours.joined(), torch.joined()) {
                let error = Double(abs(a - b)) / max(Double(abs(b)), 1e-3)
                worst = max(worst, error)
                XCTAssertLessThan(error, 1e-6, "\(what): \(a) against torch's \(b)")
            }
        }
        for (index, step) in fixture.steps.enumerated() {
            let buffers = step.grads.map { gradient in
                let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: gradient.count)
                _ = buffer.initialize(from: gradient)
                return buffer
            }
            defer { buffers.forEach { $0.deallocate() } }
            let total = clipGradNorm(buffers, maxNorm: o.max_norm)
            let grads = buffers.map { Array($0) }
            XCTAssertEqual(Double(total), Double(step.total_norm), accuracy: 1e-6 * Double(step.total_norm))
            for t in params.indices {
                adamwStep(&params[t], expAvg: &expAvg[t], expAvgSq: &expAvgSq[t], grad: grads[t], count: params[t].count,
                          step: index + 1, options)
                emaUpdate(&ema[t], params[t], count: params[t].count, decay: o.decay)
            }
            compare(params, step.params, "step \(index + 1) params")
            compare(expAvg, step.exp_avg, "step \(index + 1) exp_avg")
            compare(expAvgSq, step.exp_avg_sq, "step \(index + 1) exp_avg_sq")
            compare(ema, step.ema, "step \(index + 1) ema")
        }
        print(String(format: "clip_grad_norm_ + AdamW + EMA, 3 steps against torch: max relative error %.2e", worst))
    }
}
