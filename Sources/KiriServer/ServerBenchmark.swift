import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Kiri
import Synchronization

/// Issue 16's benchmark: the API's latency overhead over running the same small job directly (txt2img on the default
/// model, as `kiri run` does it minus the process start, with the model kept loaded as the server keeps it), and as
/// `kiri run` itself; and with wrk, the requests per
/// second `/sdapi/v1/progress` answers while a job keeps both cores busy. Medians; all in one run.
public enum ServerBenchmark {
    public static func run(runs: Int, steps: Int, kiri: String, wrkSeconds: Int) async throws -> String {
        let scripts = try BundledFiles.scripts.orThrow("cannot find Kiri's Scripts folder (set KIRI_HOME)")
        let folder = NSTemporaryDirectory() + "kiri-serve-bench-\(JobQueue.newID())"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let arguments = ["prompt=sneaker", "steps=\(steps)", "cfg=4", "seed=1", "out=direct.png"]
        // With a model cache, as the server's jobs have: the difference is then the API's own work.
        var request = RunRequest(script: scripts + "/txt2img.lua", arguments: arguments, outputDirectory: folder, overwrite: true)
        request.modelCache = ModelCache(limit: 1 << 30)
        let runDirect: () throws -> Void = { [request] in _ = try RecipeRunner.run(request) { _ in } }
        let runProcess: () throws -> Void = {
            let run = Process()
            run.executableURL = URL(fileURLWithPath: kiri)
            run.arguments = ["run", "-q", "--overwrite", "-o", folder, scripts + "/txt2img.lua"] + arguments
            run.standardOutput = FileHandle.nullDevice
            try run.run()
            run.waitUntilExit()
        }

        var options = ServerOptions()
        (options.port, options.output) = (0, folder + "/served")
        let server = try KiriServer(options: options)
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let serving = Task { try await server.run(handleSignals: false) { continuation.yield($0) } }
        var iterator = ports.makeAsyncIterator()
        let port = try await iterator.next().orThrow("the server did not start")
        let body = try JSONSerialization.data(withJSONObject: ["prompt": "sneaker", "steps": steps, "cfg_scale": 4, "seed": 1,
                                                                "sampler_name": "DPM++ 2M", "scheduler": "Karras"])
        let runAPI: () async throws -> Void = {
            var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/sdapi/v1/txt2img")!)
            (request.httpMethod, request.httpBody) = ("POST", body)
            let (_, response) = try await URLSession.shared.data(for: request)
            guard (response as? HTTPURLResponse)?.statusCode == 200 else { throw ServerSetupError("txt2img failed: \(response)") }
        }
        // Interleaved, so that whatever else the machine does falls on all three alike; one untimed round first.
        var times: (direct: [Double], api: [Double], process: [Double]) = ([], [], [])
        for round in 0...runs {
            let direct = try seconds(runDirect), api = try await seconds(runAPI)
            let process = round % 4 == 1 ? try seconds(runProcess) : nil
            guard round > 0 else { continue }
            times.direct.append(direct)
            times.api.append(api)
            if let process { times.process.append(process) }
        }
        let (directMedian, apiMedian, processMedian) = (median(times.direct), median(times.api), median(times.process))
        var lines = [
            "small job: txt2img on the default model, \(steps) steps, batch 1; medians of \(runs) runs",
            String(format: "directly (RecipeRunner with a model cache: kiri run's work without starting a process): %.1f ms", directMedian * 1e3),
            String(format: "kiri run (a new process, every 4th round): %.1f ms", processMedian * 1e3),
            String(format: "POST /sdapi/v1/txt2img: %.1f ms: %.1f ms over the direct run, %.1f ms under kiri run", apiMedian * 1e3,
                   (apiMedian - directMedian) * 1e3, (processMedian - apiMedian) * 1e3),
        ]
        if let wrk = ["/usr/bin/wrk", "/usr/local/bin/wrk"].first(where: FileManager.default.isExecutableFile) {
            lines.append(try progressUnderLoad(wrk: wrk, port: port, seconds: wrkSeconds))
        } else {
            lines.append("wrk is not installed (Debian's wrk): /sdapi/v1/progress not measured")
        }
        await server.shutdown()
        try await serving.value
        return lines.joined(separator: "\n")
    }

    /// wrk against /sdapi/v1/progress (2 threads, 32 connections) while a long job runs.
    static func progressUnderLoad(wrk: String, port: Int, seconds: Int) throws -> String {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/kiri/v1/jobs")!)
        request.httpMethod = "POST"
        request.httpBody = try JSONSerialization.data(withJSONObject: ["recipe": "txt2img", "arguments": ["steps": 1000, "batch": 64]])
        let created = Mutex<String?>(nil)
        let done = DispatchSemaphore(value: 0)
        URLSession.shared.dataTask(with: request) { data, _, _ in
            created.withLock { $0 = data.flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }?["id"] as? String }
            done.signal()
        }.resume()
        done.wait()
        let id = try created.withLock { $0 }.orThrow("the long job was not accepted")
        Thread.sleep(forTimeInterval: 1)   // let it start
        let run = Process()
        run.executableURL = URL(fileURLWithPath: wrk)
        run.arguments = ["-t2", "-c32", "-d\(seconds)s", "http://127.0.0.1:\(port)/sdapi/v1/progress"]
        let pipe = Pipe()
        run.standardOutput = pipe
        try run.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        run.waitUntilExit()
        var cancel = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/kiri/v1/jobs/\(id)")!)
        cancel.httpMethod = "DELETE"
        URLSession.shared.dataTask(with: cancel).resume()
        let rate = output.split(separator: "\n").first { $0.hasPrefix("Requests/sec:") }?.split(separator: " ").last.map(String.init) ?? "?"
        let latency = output.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("Latency") }
            .map { $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().prefix(3).joined(separator: " ") } ?? "?"
        return "GET /sdapi/v1/progress under wrk (2 threads, 32 connections, \(seconds) s) while a job of 64 images runs: "
            + "\(rate) requests/s (latency mean, stdev, max: \(latency))"
    }

    static func seconds(_ body: () throws -> Void) throws -> Double {
        let start = Date()
        try body()
        return Date().timeIntervalSince(start)
    }

    static func seconds(_ body: () async throws -> Void) async throws -> Double {
        let start = Date()
        try await body()
        return Date().timeIntervalSince(start)
    }

    static func median(_ times: [Double]) -> Double { times.sorted()[times.count / 2] }
}

private extension Optional {
    func orThrow(_ message: String) throws -> Wrapped {
        guard let self else { throw ServerSetupError(message) }
        return self
    }
}
