import Foundation
import KiriLua

/// Issue 13's benchmark: a full-size SD pipeline's load, prompt encoding, CFG step, VAE decode and whole txt2img,
/// Kiri (Tests/Benchmarks/sd_pipeline_bench.lua, in this process) against diffusers (sd_pipeline_bench.py) and
/// stable-diffusion.cpp (sdcpp_bench.py) on the same weights, one after the other in one run so that none slows
/// another, each with its own process's peak RSS; the step's rate against the sgemm rate measured here and the
/// CPU's fp32 limit.
public enum PipelineBenchmark {
    public struct Options {
        public var model: String
        public var runs = 3, steps = 20, txt2imgRuns = 1
        public var weights: String?
        /// A Python with torch and diffusers.
        public var python: String?
        /// A Python with stable-diffusion-cpp-python, and the single-file checkpoint (or GGUF) it loads.
        public var sdcppPython: String?, singleFile: String?
        public var sdcppTypes = "f16"

        public init(model: String) { self.model = model }
    }

    /// This CPU's fp32 limit as the issue measured it: OpenBLAS sgemm with its AVX-512 kernels.
    static let fp32Limit = 460.0

    public static func run(_ options: Options) throws -> String {
        let sgemm = try UNetBenchmark.sgemmRate()
        var arguments = ["model=\(options.model)", "runs=\(options.runs)", "steps=\(options.steps)",
                         "txt2img_runs=\(options.txt2imgRuns)"]
        if let weights = options.weights { arguments.append("weights=\(weights)") }
        var printed = ""
        try RecipeRunner.run(RunRequest(script: UNetBenchmark.benchmarks.appendingPathComponent("sd_pipeline_bench.lua").path,
                                        arguments: arguments, limits: SandboxLimits(timeout: 24 * 3600, memory: Int.max / 2)),
                             output: { printed += $0 })
        var columns = [("Kiri" + (options.weights.map { " \($0)" } ?? ""), figures(printed).merging(["peak RSS": UNetBenchmark.peakResidentMiB()]) { $1 })]
        var banners = ["Kiri: \(printed.split(separator: "\n").dropFirst().first ?? "")"]
        if let python = options.python {
            let output = try UNetBenchmark.output(python: python, script: "sd_pipeline_bench.py", arguments: [
                "--model", options.model, "--runs", "\(options.runs)", "--steps", "\(options.steps)",
                "--txt2img-runs", "\(options.txt2imgRuns)"])
            banners.append("diffusers: " + (output.split(separator: "\n").first.map(String.init) ?? ""))
            columns.append(("diffusers", figures(output)))
        }
        if let python = options.sdcppPython {
            guard let file = options.singleFile else { throw UNetBenchmark.BenchmarkError("--sdcpp-python needs --single-file") }
            var sdcppArguments = ["--model", file, "--types", options.sdcppTypes, "--runs", "1", "--steps", "\(options.steps)"]
            if options.txt2imgRuns > 0 { sdcppArguments.append("--txt2img") }
            let output = try UNetBenchmark.output(python: python, script: "sdcpp_bench.py", arguments: sdcppArguments)
            banners.append("sd.cpp: " + (output.split(separator: "\n").first.map(String.init) ?? ""))
            for type in options.sdcppTypes.split(separator: ",") {
                columns.append(("sd.cpp \(type)", figures(output, prefix: "\(type) ")))
            }
        }
        return banners.joined(separator: "\n") + "\n" + table(columns, steps: options.steps, sgemm: sgemm)
    }

    /// The "NAME: [median] X ..." lines of a benchmark's output (only those starting with `prefix`, which is
    /// dropped), by the names the table uses.
    static func figures(_ text: String, prefix: String = "") -> [String: Double] {
        var result: [String: Double] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix(prefix) {
            let parts = line.dropFirst(prefix.count).split(separator: ":", maxSplits: 1)
            guard parts.count == 2, let value = parts[1].split(separator: " ").lazy.compactMap({ Double($0) }).first else { continue }
            result[parts[0].replacingOccurrences(of: " (both prompts)", with: "")] = value
        }
        return result
    }

    /// Rows of figures (those some engine measured), a column per engine, then Kiri's ratio to each other engine.
    static func table(_ columns: [(name: String, figures: [String: Double])], steps: Int, sgemm: Double) -> String {
        let rows = [("load", "load", "s"), ("encode", "encode", "s"), ("step", "step, CFG, 512²", "s"), ("decode", "decode, 512²", "s"),
                    ("txt2img \(steps) steps", "txt2img, \(steps) steps", "s"), ("peak RSS", "peak RSS", "MiB")]
        let others = columns.dropFirst().map(\.name)
        var lines = ["| figure | " + (columns.map(\.name) + others.map { "Kiri / \($0)" }).joined(separator: " | ") + " |",
                     "|" + String(repeating: " --- |", count: 1 + columns.count + others.count)]
        for (key, label, unit) in rows where columns.contains(where: { $0.figures[key] != nil }) {
            let kiri = columns[0].figures[key]
            let values = columns.map { $0.figures[key].map { String(format: unit == "s" ? "%.2f s" : "%.0f MiB", $0) } ?? "" }
            let ratios = columns.dropFirst().map { column in
                column.figures[key].flatMap { other in kiri.map { String(format: "%.2f×", $0 / other) } } ?? ""
            }
            lines.append("| \(label) | " + (values + ratios).joined(separator: " | ") + " |")
        }
        // The step's work as torch counts it (diffusers' run), done in Kiri's time.
        if let step = columns[0].figures["step"], let flops = columns.lazy.compactMap({ $0.figures["step FLOP"] }).first {
            let rate = flops / step / 1e9
            lines.append(String(format: "Kiri's step: %.3g TFLOP by torch's count in %.2f s, %.0f GFLOP/s: %.0f%% of the %.0f GFLOP/s sgemm measured here, %.0f%% of the %.0f GFLOP/s fp32 limit",
                                flops / 1e12, step, rate, 100 * rate / sgemm, sgemm, 100 * rate / fp32Limit, fp32Limit))
        }
        return lines.joined(separator: "\n")
    }
}
