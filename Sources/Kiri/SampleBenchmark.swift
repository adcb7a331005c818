import Foundation
import KiriLua

/// The default model's txt2img loop (20 dpmpp_2m steps, Karras sigmas, CFG 4) at batch 1 and 8: the Lua
/// pipeline (Tests/Benchmarks/sample_bench.lua) against diffusers' DPMSolverMultistepScheduler on the same
/// weights (torch_sample_bench.py), both measured in this run.
public enum SampleBenchmark {
    public static func run(runs: Int, python: String?) throws -> String {
        guard let model = BundledFiles.models["fashion-mnist"] else { throw UNetBenchmark.BenchmarkError("no bundled default model") }
        var printed = ""
        try RecipeRunner.run(RunRequest(script: UNetBenchmark.benchmarks.appendingPathComponent("sample_bench.lua").path,
                                        arguments: ["\(runs)"], limits: SandboxLimits(timeout: 3600)),
                             output: { printed += $0 })
        var lines = ["Kiri (Lua samplers, \(runs) timed runs):"] + printed.split(separator: "\n").map { "  " + $0 }
        guard let python else { return lines.joined(separator: "\n") }
        let kiri = UNetBenchmark.batchTimes(printed).medians
        let torch = try UNetBenchmark.torchTimes(python: python, script: "torch_sample_bench.py", arguments: [model, "--runs", "\(runs)"])
        lines.append(torch.banner)
        for batch in torch.medians.keys.sorted() {
            guard let reference = torch.medians[batch], let ours = kiri[batch] else { continue }
            lines.append(String(format: "batch %d: PyTorch %.1f ms, Kiri %.1f ms: %.2f× PyTorch's time", batch, reference, ours, ours / reference))
        }
        return lines.joined(separator: "\n")
    }
}
