import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import XCTest

/// `kiri serve` as its own process: under load (200 jobs from 8 concurrent clients, twice: every job is either
/// refused with 503 or runs exactly once with its own arguments, and the server's RSS after the second round is
/// where it was after the first), and stopped by a signal.
final class ServerLoadTests: XCTestCase {
    static let binary: URL = {
        var folder = Bundle(for: ServerLoadTests.self).bundleURL
        while !FileManager.default.fileExists(atPath: folder.appendingPathComponent("kiri").path) && folder.path != "/" {
            folder.deleteLastPathComponent()
        }
        return folder.appendingPathComponent("kiri")
    }()

    func testJobsFromConcurrentClientsAreNeitherLostNorDuplicated() async throws {
        let output = NSTemporaryDirectory() + "kiri-load-test-\(UInt64.random(in: 0...UInt64.max))"
        defer { try? FileManager.default.removeItem(atPath: output) }
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = ["serve", "--port", "0", "--queue", "40", "--allow-recipes", "-o", output]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        let port = try Self.port(from: pipe)

        var rss: [Int] = []
        for round in 0..<2 {
            let (accepted, refused) = try await Self.submit(port: port, clients: 8, jobsEach: 25, round: round)
            XCTAssertEqual(accepted.count + refused, 200)
            XCTAssertEqual(Set(accepted.map(\.id)).count, accepted.count, "job ids are unique")
            var seen: [String: Int] = [:]
            for job in accepted {
                let state = try await Self.finished(port: port, id: job.id)
                XCTAssertEqual(state["status"] as? String, "succeeded", "\(state)")
                let log = state["log"] as? [String] ?? []
                XCTAssertEqual(log.count, 1, "\(state)")
                XCTAssertTrue(log.first?.hasPrefix("job \(job.marker) ") ?? false, "job \(job.id) ran its own arguments: \(log)")
                seen[job.marker, default: 0] += 1
            }
            XCTAssertTrue(seen.values.allSatisfy { $0 == 1 }, "no job ran twice")
            rss.append(try Self.residentBytes(process.processIdentifier))
            print("round \(round + 1): \(accepted.count) jobs ran, \(refused) refused with 503; server RSS \(rss.last! >> 20) MiB")
        }
        XCTAssertLessThan(rss[1] - rss[0], 24 << 20, "RSS stays flat: \(rss.map { $0 >> 20 }) MiB")

        process.interrupt()   // SIGINT: a graceful stop, exit 0
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
    }

    /// SIGTERM cancels the running job, answers the request waiting on it, and exits 0.
    func testSIGTERMCancelsTheRunningJobAndExitsZero() async throws {
        let output = NSTemporaryDirectory() + "kiri-sigterm-test-\(UInt64.random(in: 0...UInt64.max))"
        defer { try? FileManager.default.removeItem(atPath: output) }
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = ["serve", "--port", "0", "-o", output]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        defer { if process.isRunning { process.interrupt() } }
        let port = try Self.port(from: pipe)
        async let waiting = Self.request(port: port, "POST", "/sdapi/v1/txt2img", json: ["steps": 1000, "batch_size": 64])
        var running = false
        for _ in 0..<500 where !running {
            let progress = try await Self.request(port: port, "GET", "/sdapi/v1/progress").1
            running = ((progress["state"] as? [String: Any])?["sampling_step"] as? Int ?? 0) > 0
            if !running { try await Task.sleep(nanoseconds: 10_000_000) }
        }
        XCTAssertTrue(running, "the job started")
        let start = Date()
        process.terminate()
        let (status, body) = try await waiting
        process.waitUntilExit()
        XCTAssertEqual(status, 503, "\(body)")
        XCTAssertEqual(process.terminationReason, .exit)
        XCTAssertEqual(process.terminationStatus, 0)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10, "the job was cancelled, not finished")
    }

    struct Submitted { var id: String; var marker: String }

    /// Each client submits its jobs one after another as fast as the server answers; 503s are counted, not retried.
    static func submit(port: Int, clients: Int, jobsEach: Int, round: Int) async throws -> ([Submitted], Int) {
        try await withThrowingTaskGroup(of: ([Submitted], Int).self) { group in
            for client in 0..<clients {
                group.addTask {
                    var accepted: [Submitted] = [], refused = 0
                    for index in 0..<jobsEach {
                        let marker = "\(round)-\(client)-\(index)"
                        let source = "local x = kiri.randn({1, 1, 28, 28}, \(index)); print('job ' .. arg[1] .. ' ' .. x:sum())"
                        let (status, body) = try await request(port: port, "POST", "/kiri/v1/jobs",
                                                               json: ["source": source, "arguments": [marker]])
                        if status == 503 {
                            refused += 1
                        } else {
                            guard status == 202, let id = body["id"] as? String else { throw LoadError(message: "\(status): \(body)") }
                            accepted.append(Submitted(id: id, marker: marker))
                        }
                    }
                    return (accepted, refused)
                }
            }
            var all: [Submitted] = [], refused = 0
            for try await (accepted, count) in group {
                all += accepted
                refused += count
            }
            return (all, refused)
        }
    }

    struct LoadError: Error { var message: String }

    static func finished(port: Int, id: String) async throws -> [String: Any] {
        _ = try await request(port: port, "GET", "/kiri/v1/jobs/\(id)/events")   // ends with the job
        return try await request(port: port, "GET", "/kiri/v1/jobs/\(id)").1
    }

    static func request(port: Int, _ method: String, _ path: String, json: Any? = nil) async throws -> (Int, [String: Any]) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        request.timeoutInterval = 120
        if let json { request.httpBody = try JSONSerialization.data(withJSONObject: json) }
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as! HTTPURLResponse).statusCode, (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:])
    }

    /// The port from the server's "listening on http://127.0.0.1:PORT" line.
    static func port(from pipe: Pipe) throws -> Int {
        var text = ""
        while !text.contains("\n") {
            let data = pipe.fileHandleForReading.availableData
            guard !data.isEmpty else { throw LoadError(message: "the server exited: \(text)") }
            text += String(decoding: data, as: UTF8.self)
        }
        guard let port = Int(text.split(separator: "\n")[0].split(separator: ":").last ?? "") else {
            throw LoadError(message: "no port in '\(text)'")
        }
        return port
    }

    static func residentBytes(_ pid: Int32) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) << 10
    }
}
