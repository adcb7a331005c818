import Foundation
import KiriModels
import KiriTensor

/// Issue 4's benchmark: the forward pass of a UNet at batch 1 and 2, timed in this process, against
/// diffusers on the same weights (Tests/Benchmarks/torch_unet_bench.py, run by `python` in the same
/// run when given), with the OpenBLAS sgemm rate measured alongside and the peak RSS.
public enum UNetBenchmark {
    public static func run(model path: String, runs: Int, python: String?) throws -> String {
        let files = try ModelFiles.locate(path)
        let network = try UNet(config: try UNetConfig(path: files.config), weights: try SafetensorsFile(path: files.weights))
        let config = network.config
        var lines = [String(format: "Kiri: %@ (%.2f M parameters), %d timed runs after 5 warm-up runs",
                            config.architecture.rawValue, Double(network.parameterCount) / 1e6, runs)]
        var kiri: [Int: Double] = [:]
        for batch in [1, 2] {
            let size = config.sampleSize ?? [32, 32]
            let x = try Tensor.randn([batch, config.inChannels] + size, seed: 0)
            let timesteps = (0..<batch).map { Float(999 - 998 * $0 / max(batch - 1, 1)) }
            let labels = config.numClassEmbeds.map { classes in (0..<batch).map { $0 % classes } }
            let times = try (0..<(runs + 5)).map { _ in
                try seconds { _ = try network.forward(x, timesteps: timesteps, classLabels: labels) }
            }.dropFirst(5).sorted()
            kiri[batch] = times[times.count / 2] * 1e3
            lines.append(String(format: "batch %d: median %.2f ms (min %.2f)", batch, kiri[batch]!, times[0] * 1e3))
        }
        let peak = try sgemmRate()
        lines.append(String(format: "OpenBLAS sgemm 1024³: %.0f GFLOP/s; peak RSS %.0f MiB", peak, peakResidentMiB()))
        if let python {
            let torch = try torchTimes(python: python, script: "torch_unet_bench.py",
                                       arguments: [(files.config as NSString).deletingLastPathComponent, "--runs", "\(runs)"])
            lines.append(torch.banner)
            for batch in [1, 2] {
                guard let reference = torch.medians[batch], let ours = kiri[batch] else { continue }
                var line = String(format: "batch %d: PyTorch %.2f ms, Kiri %.2f ms: %.2f× PyTorch's time", batch, reference, ours, ours / reference)
                if let flops = torch.flops[batch] {
                    let rate = flops / (ours / 1e3) / 1e9
                    line += String(format: "; Kiri %.0f GFLOP/s (%.0f%% of sgemm)", rate, 100 * rate / peak)
                }
                lines.append(line)
            }
        }
        return lines.joined(separator: "\n")
    }

    static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    /// The BLAS ceiling the convolutions run against: the best of five 1024³ products.
    static func sgemmRate() throws -> Double {
        let a = try Tensor.randn([1024, 1024], seed: 1), b = try Tensor.randn([1024, 1024], seed: 2)
        let best = try (0..<5).map { _ in try seconds { _ = try a.matmul(b) } }.min()!
        return 2 * pow(1024, 3) / best / 1e9
    }

    static func peakResidentMiB() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_maxrss) / 1024   // KiB on Linux
    }

    /// Runs a committed PyTorch script of Tests/Benchmarks and reads its "batch N: median X ms" lines.
    static func torchTimes(python: String, script name: String, arguments: [String]) throws
        -> (banner: String, medians: [Int: Double], flops: [Int: Double]) {
        let text = try output(python: python, script: name, arguments: arguments)
        let (medians, flops) = batchTimes(text)
        return ("PyTorch: " + (text.split(separator: "\n").first.map(String.init) ?? ""), medians, flops)
    }

    /// The standard output of a committed script of Tests/Benchmarks run by `python`.
    static func output(python: String, script name: String, arguments: [String]) throws -> String {
        let script = benchmarks.appendingPathComponent(name).path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try executable(python))
        process.arguments = [script] + arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw BenchmarkError("\(python) \(script) failed with status \(process.terminationStatus)")
        }
        return text
    }

    /// A program as a shell finds it: a name without a '/' (`python3`) is looked up in PATH.
    static func executable(_ program: String) throws -> String {
        if program.contains("/") { return program }
        let folders = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":")
        guard let found = folders.map({ "\($0)/\(program)" }).first(where: FileManager.default.isExecutableFile) else {
            throw BenchmarkError("--python \(program): no such program in PATH")
        }
        return found
    }

    /// Tests/Benchmarks in the checkout this binary was built from.
    static let benchmarks = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Tests/Benchmarks")

    /// The "batch N: median X ms ... [flops F]" lines of a benchmark's output.
    static func batchTimes(_ text: String) -> (medians: [Int: Double], flops: [Int: Double]) {
        var medians: [Int: Double] = [:], flops: [Int: Double] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("batch ") {
            let fields = line.split(separator: " ")
            guard fields.count > 3, let batch = Int(fields[1].dropLast()) else { continue }
            medians[batch] = Double(fields[3])
            flops[batch] = fields.firstIndex(of: "flops").flatMap { $0 + 1 < fields.count ? Double(fields[$0 + 1]) : nil }
        }
        return (medians, flops)
    }

    struct BenchmarkError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}
