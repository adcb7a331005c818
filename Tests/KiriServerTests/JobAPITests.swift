import Foundation
import KiriImage
@testable import KiriServer
import XCTest

/// Kiri's recipe jobs, the queue and the server's guards.
final class JobAPITests: XCTestCase {
    /// A bundled recipe as a job: 202 with its id, its events as Server-Sent Events (state, steps with previews,
    /// output, done), its state and its output by name; nothing else in its folder is reachable.
    func testBundledRecipeJobWithEventsAndOutputs() async throws {
        let server = try await RunningServer.start()
        let created = try await server.call("POST", "/kiri/v1/jobs", json: ["recipe": "txt2img",
                                                                           "arguments": ["prompt": "bag", "steps": 5, "seed": 4]])
        XCTAssertEqual(created.status, 202, created.text)
        let id = try XCTUnwrap(created.object["id"] as? String)
        let events = try await server.call("GET", "/kiri/v1/jobs/\(id)/events").text
        XCTAssertTrue(events.contains("event: step\ndata: {"), events)
        XCTAssertTrue(events.contains("\"preview\":\"data:image/png;base64,"), "a step event carries a preview")
        XCTAssertTrue(events.contains("event: output\ndata: {\"file\":\"txt2img.png\""), events)
        XCTAssertTrue(events.hasSuffix("\n\n") && events.contains("event: done"), events)
        let job = try await server.call("GET", "/kiri/v1/jobs/\(id)").object
        XCTAssertEqual(job["status"] as? String, "succeeded")
        XCTAssertEqual(job["outputs"] as? [String], ["txt2img.png"])
        XCTAssertEqual(job["progress"] as? Double, 1)
        let output = try await server.call("GET", "/kiri/v1/jobs/\(id)/outputs/txt2img.png")
        XCTAssertEqual(output.headers["content-type"], "image/png")
        let image = try ServerState.decodePNG([UInt8](output.body), name: "output", byteLimit: 1 << 24)
        XCTAssertTrue(image.text.contains { $0.key == "parameters" && $0.value.hasPrefix("bag\n") })
        for path in ["/kiri/v1/jobs/\(id)/outputs/..%2F..%2Fetc%2Fpasswd", "/kiri/v1/jobs/\(id)/outputs/x.png", "/kiri/v1/jobs/nope"] {
            let reply = try await server.call("GET", path)
            XCTAssertEqual(reply.status, 404, path)
        }
        try await server.stop()
    }

    /// Recipe source only with --allow-recipes; it runs in the sandbox (no file outside the job's folder) and what
    /// it prints is the job's log.
    func testRecipeSourceIsOptInAndSandboxed() async throws {
        let closed = try await RunningServer.start()
        let nul = try await closed.call("POST", "/kiri/v1/jobs", json: ["recipe": "txt2img", "arguments": ["prompt": "bag\u{0}x"]])
        XCTAssertEqual(nul.status, 422, nul.text)
        // A key is a name, never parsed: `[` is reported as it is.
        let bracket = try await closed.call("POST", "/kiri/v1/jobs", json: ["recipe": "txt2img", "arguments": ["[": [1]]])
        XCTAssertEqual(bracket.status, 422, bracket.text)
        XCTAssertEqual((bracket.object["detail"] as? [[String: Any]])?.first?["loc"] as? [String], ["body", "arguments", "["])
        let refused = try await closed.call("POST", "/kiri/v1/jobs", json: ["source": "print('hi')"])
        XCTAssertEqual(refused.status, 403)
        XCTAssertTrue(refused.text.contains("--allow-recipes"), refused.text)
        try await closed.stop()

        let open = try await RunningServer.start { $0.allowRecipes = true }
        let job = try await finished(open, ["source": "print('hi ' .. arg[1]); kiri.write_text('note.txt', 'x')", "arguments": ["there"]])
        XCTAssertEqual(job["status"] as? String, "succeeded", "\(job)")
        XCTAssertEqual(job["log"] as? [String], ["hi there"])
        XCTAssertEqual(job["outputs"] as? [String], ["note.txt"])
        let chatty = try await finished(open, ["source": "for i = 1, 300 do print(i) end print(string.rep('x', 100000))"])
        let log = chatty["log"] as? [String] ?? []
        XCTAssertEqual(log.count, Job.logLines, "the last lines are kept")
        XCTAssertEqual(log.first, "102")
        XCTAssertEqual(log.last?.utf8.count, Job.logLineBytes + "…".utf8.count, "a long line is cut")
        // An output larger than a read chunk comes whole.
        let big = try await finished(open, ["source": "kiri.write_text('big.txt', string.rep('ab', 1500000))"])
        let download = try await open.call("GET", "/kiri/v1/jobs/\(XCTUnwrap(big["id"] as? String))/outputs/big.txt")
        XCTAssertEqual(download.body.count, 3_000_000)
        XCTAssertEqual(download.body.suffix(2), Data("ab".utf8))
        let escape = try await finished(open, ["source": "kiri.write_text('../../escape.txt', 'x')"])
        XCTAssertEqual(escape["status"] as? String, "failed")
        XCTAssertFalse(FileManager.default.fileExists(atPath: open.output + "/escape.txt"))
        let reader = try await finished(open, ["source": "kiri.image.load('/etc/passwd')"])
        XCTAssertEqual(reader["status"] as? String, "failed")
        try await open.stop()
    }

    /// A full queue answers 503 with Retry-After; a job stopped by its --timeout fails alone and the next one runs;
    /// a running job is cancelled by DELETE.
    func testQueueTimeoutAndCancel() async throws {
        let server = try await RunningServer.start {
            $0.allowRecipes = true
            $0.queue = 1
            $0.limits.timeout = 0.5
        }
        let spin = ["source": "while true do end"]
        let first = try await server.call("POST", "/kiri/v1/jobs", json: spin).object
        let second = try await server.call("POST", "/kiri/v1/jobs", json: ["recipe": "txt2img", "arguments": ["steps=2"]]).object
        let third = try await server.call("POST", "/kiri/v1/jobs", json: spin)
        XCTAssertEqual(third.status, 503)
        XCTAssertEqual(third.headers["retry-after"], "5")
        let timedOut = try await wait(server, XCTUnwrap(first["id"] as? String))
        XCTAssertEqual(timedOut["status"] as? String, "failed")
        XCTAssertTrue((timedOut["error"] as? String ?? "").contains("time limit exceeded"), "\(timedOut)")
        let next = try await wait(server, XCTUnwrap(second["id"] as? String))
        XCTAssertEqual(next["status"] as? String, "succeeded", "\(next)")

        let cancelled = try await server.call("POST", "/kiri/v1/jobs", json: ["source": "local x = 0; while true do x = x + 1 end"])
        let id = try XCTUnwrap(cancelled.object["id"] as? String)
        try await Task.sleep(nanoseconds: 100_000_000)
        _ = try await server.call("DELETE", "/kiri/v1/jobs/\(id)")
        let stopped = try await wait(server, id)
        XCTAssertEqual(stopped["status"] as? String, "cancelled", "\(stopped)")
        try await server.stop()
    }

    /// With --token every API request needs it; the page does not. Beyond loopback a token is required.
    func testTokenAndBind() async throws {
        let server = try await RunningServer.start { $0.token = "s3cret" }
        let lowercase = try await server.call("GET", "/sdapi/v1/samplers", headers: ["Authorization": "bearer s3cret"], authorized: false)
        XCTAssertEqual(lowercase.status, 200, "the scheme's name is case-insensitive")
        let wrong = try await server.call("GET", "/sdapi/v1/samplers", headers: ["Authorization": "Bearer s3cre"], authorized: false)
        XCTAssertEqual(wrong.status, 401)
        let anonymous = try await server.call("GET", "/sdapi/v1/samplers", authorized: false)
        XCTAssertEqual(anonymous.status, 401)
        XCTAssertEqual(anonymous.headers["www-authenticate"], "Bearer")
        let page = try await server.call("GET", "/", authorized: false)
        XCTAssertEqual(page.status, 200)
        let authorized = try await server.call("GET", "/sdapi/v1/samplers")
        XCTAssertEqual(authorized.status, 200)
        let basic = try await server.call("GET", "/sdapi/v1/samplers", headers: ["Authorization": "Basic " + Data("any:s3cret".utf8).base64EncodedString()],
                                          authorized: false)
        XCTAssertEqual(basic.status, 200, "A1111's --api-auth clients send Basic with the token as password")
        try await server.stop()

        // Without a token only loopback names are answered, and not a page from another site.
        let open = try await RunningServer.start()
        let rebound = try await open.call("GET", "/sdapi/v1/options", headers: ["Host": "evil.example:\(open.port)"])
        XCTAssertEqual(rebound.status, 403, rebound.text)
        let crossSite = try await open.call("POST", "/sdapi/v1/interrupt", headers: ["Origin": "https://evil.example"])
        XCTAssertEqual(crossSite.status, 403, crossSite.text)
        let samePage = try await open.call("POST", "/sdapi/v1/interrupt", headers: ["Origin": "http://localhost:\(open.port)"])
        XCTAssertEqual(samePage.status, 200, samePage.text)
        try await open.stop()

        var options = ServerOptions()
        options.host = "0.0.0.0"
        XCTAssertThrowsError(try options.validate()) { XCTAssertTrue("\($0)".contains("--token"), "\($0)") }
        options.token = "t"
        XCTAssertNoThrow(try options.validate())
    }

    /// A body over --max-body is refused with 413 (saying why) before it is read whole.
    func testBodyLimit() async throws {
        let server = try await RunningServer.start { $0.maxBodyBytes = 1000 }
        let reply = try await server.call("POST", "/sdapi/v1/txt2img", json: ["prompt": String(repeating: "a", count: 5000)])
        XCTAssertEqual(reply.status, 413)
        XCTAssertTrue((reply.object["error"] as? String ?? "").contains("--max-body"), reply.text)
        try await server.stop()
    }

    /// --wall-timeout counts the whole job, not each of its runs; --queue 0 still runs a job on an idle server.
    func testWallTimeoutCountsTheJobAndQueueZeroRuns() async throws {
        let server = try await RunningServer.start {
            $0.queue = 0
            $0.limits.wallTimeout = 1.5
        }
        let reply = try await server.call("POST", "/sdapi/v1/txt2img", json: ["steps": 300, "n_iter": 40, "sampler_name": "Euler"])
        XCTAssertEqual(reply.status, 500, reply.text)
        XCTAssertTrue((reply.object["error"] as? String ?? "").contains("wall"), reply.text)
        let jobs = try await server.call("GET", "/kiri/v1/jobs").json as? [[String: Any]] ?? []
        XCTAssertEqual(jobs.first?["error_kind"] as? String, "time")
        XCTAssertLessThan(jobs.first?["run"] as? Int ?? 40, 40)
        try await server.stop()
    }

    /// Shutting down cancels the running job and the waiting ones, and `run` returns.
    func testShutdownCancelsJobs() async throws {
        let server = try await RunningServer.start { $0.allowRecipes = true }
        let running = try await server.call("POST", "/kiri/v1/jobs", json: ["source": "while true do end"]).object
        let waiting = try await server.call("POST", "/kiri/v1/jobs", json: ["source": "print(1)"]).object
        let queue = server.server.state.queue
        try await server.stop()
        for reply in [running, waiting] {
            let job = try XCTUnwrap(queue.job(XCTUnwrap(reply["id"] as? String)))
            XCTAssertEqual(job.status, .cancelled)
        }
    }

    private func finished(_ server: RunningServer, _ body: [String: Any]) async throws -> [String: Any] {
        let created = try await server.call("POST", "/kiri/v1/jobs", json: body)
        XCTAssertEqual(created.status, 202, created.text)
        return try await wait(server, XCTUnwrap(created.object["id"] as? String))
    }

    /// The job once finished (its event stream ends then).
    private func wait(_ server: RunningServer, _ id: String) async throws -> [String: Any] {
        _ = try await server.call("GET", "/kiri/v1/jobs/\(id)/events")
        return try await server.call("GET", "/kiri/v1/jobs/\(id)").object
    }
}
