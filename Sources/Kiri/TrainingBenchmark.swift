import Foundation
import KiriModels
import KiriTensor

/// Issue 15's benchmark: one training step of a UNet (forward, MSE gradient, backward, clipping, AdamW) at a
/// batch size, timed in this process, against PyTorch on the same config (Tests/Benchmarks/torch_train_bench.py,
/// run by `python` in the same run when given), with each process's peak RSS, and Kiri's activation memory.
public enum TrainingBenchmark {
    public static func run(config path: String, batch: Int, runs: Int, gradientCheckpointing: Bool, python: String?) throws -> String {
        let config = try UNetConfig(path: path)
        let network = try TrainableUNet(config: config, seed: 0)
        network.gradientCheckpointing = gradientCheckpointing
        let optimizer = try AdamW(network.parameters, AdamWOptions())
        let size = config.sampleSize ?? [32, 32]
        let x = try Tensor.randn([batch, config.inChannels] + size, seed: 1), target = try Tensor.randn(x.shape, seed: 2)
        let timesteps = (0..<batch).map { Float($0 * 997 % 1000) }
        let labels = config.numClassEmbeds.map { classes in (0..<batch).map { $0 % classes } }
        let context = try config.crossAttentionDim.map { try Tensor.randn([batch, 77, $0[0]], seed: 3) }
        let gradient = try Tensor(shape: x.shape)
        let times = try (0..<(runs + 2)).map { _ in
            try UNetBenchmark.seconds {
                let output = try network.forward(x, timesteps: timesteps, classLabels: labels, context: context)
                for i in 0..<output.count { gradient.data[i] = 2 * (output.data[i] - target.data[i]) / Float(output.count) }
                _ = try network.backward(gradient)
                _ = clipGradNorm(network.parameters, maxNorm: 1)
                optimizer.step()
                network.zeroGrad()
            }
        }.dropFirst(2).sorted()
        let kiri = times[times.count / 2] * 1e3
        var lines = [String(format: "Kiri: %@ (%.2f M parameters), batch %d, %d timed steps after 2%@", config.architecture.rawValue,
                            Double(network.parameterCount) / 1e6, batch, runs, gradientCheckpointing ? ", gradient checkpointing" : ""),
                     String(format: "batch %d: median %.1f ms (min %.1f); peak RSS %.0f MiB, of which activations %.0f MiB", batch, kiri,
                            times[0] * 1e3, UNetBenchmark.peakResidentMiB(), Double(network.activationPeakBytes) / 1048576)]
        if let python {
            let text = try UNetBenchmark.output(python: python, script: "torch_train_bench.py",
                                                arguments: [path, "--batch", "\(batch)", "--runs", "\(runs)"]
                                                    + (gradientCheckpointing ? ["--gradient-checkpointing"] : []))
            lines += text.split(separator: "\n").map { "PyTorch: " + $0 }
            if let reference = UNetBenchmark.batchTimes(text).medians[batch] {
                lines.append(String(format: "batch %d: PyTorch %.1f ms, Kiri %.1f ms: %.2f× PyTorch's time", batch, reference, kiri,
                                    kiri / reference))
            }
        }
        return lines.joined(separator: "\n")
    }
}
