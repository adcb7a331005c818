import Foundation
import XCTest
@testable import KiriLua
import KiriTensor

/// Section F of /work/shared/security-cases.md (cases 37–39), for the Lua runtime: host calls obey the time limit
/// and stay stopped once it trips, totals are capped (strings handed to the host, bytes written), names with NUL
/// bytes are refused and messages carry no sandbox internals. Uses SandboxTests' harness. The engine's bindings
/// (models, images) are checked in KiriTests/EngineLimitTests.swift.
extension SandboxTests {

    // MARK: - F.38 Host calls and the time limit

    /// One sgemm of 8192² takes 5–8 s; the product is computed in panels (about 0.3 s each) that check the stop
    /// between them. The limit leaves room for allocating the operands, which takes 0.4–1.3 s on this VM.
    func testF38_ALongMatmulStopsAtTheDeadline() {
        let outcome = expectFailure("""
            local a, b = kiri.zeros(8192, 8192), kiri.zeros(8192, 8192)
            local c = a:matmul(b)
            print("finished", c:size(1))
            """, [.timeout], ["time limit exceeded"], timeout: 2, memory: 1 << 30)
        XCTAssertLessThan(outcome.seconds, 3.5)
        XCTAssertEqual(outcome.output, "")
        assertHostHealthy()
    }

    /// Parsing is C: a 60 MB chunk is parsed in pieces with the stop checked between them.
    func testF38_LoadingABigChunkStopsAtTheDeadline() {
        let outcome = expectFailure("""
            local source = string.rep("x = 1\\n", 10000000)
            local chunk = load(source)
            print("parsed")
            """, [.timeout], ["time limit exceeded"], timeout: 0.3, memory: 2 << 30)
        XCTAssertLessThan(outcome.seconds, 1.0)
        XCTAssertEqual(outcome.output, "")
    }

    /// A limit that trips inside a coroutine and is caught there: every later host call fails (print and
    /// write_text included) and the run fails, even though the script itself returns normally.
    func testF38_AStoppedRunStaysStoppedAndFails() throws {
        let out = try temporaryFolder()
        let files = FileAccess(outputDirectory: out)
        for source in [
            """
            local co = coroutine.create(function() while true do end end)
            local ok = coroutine.resume(co)
            kiri.write_text("after.txt", "written after the stop")
            """,
            """
            local co = coroutine.create(function() while true do end end)
            coroutine.resume(co)
            pcall(coroutine.close, co)
            """,
            """
            local co = coroutine.create(function() while true do end end)
            coroutine.resume(co)
            pcall(print, "printed after the stop")
            pcall(kiri.write_text, "after.txt", "written after the stop")
            """,
        ] {
            let outcome = expectFailure(source, [.timeout], ["time limit exceeded"], timeout: 0.2, files: files)
            XCTAssertEqual(outcome.output, "", source)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out), [])
    }

    /// A server cancels a job from another thread: the run stops at its next hook or kernel check.
    func testF38_ARunCancelledFromAnotherThreadStops() throws {
        let runtime = try LuaRuntime(limits: SandboxLimits(timeout: 30))
        defer { runtime.close() }
        let cancellation = runtime.cancellation
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.2) { cancellation.cancel() }
        let start = Date()
        XCTAssertThrowsError(try runtime.run(source: "while true do end", name: "job.lua")) { error in
            XCTAssertEqual((error as? ScriptFailure)?.kind, .cancelled)
            XCTAssertTrue("\(error)".contains("run cancelled"), "\(error)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 1)
    }

    /// Path handling is linear in the depth: a 500-folder path is written at once, and one past the length
    /// limit is refused before anything is made.
    func testF38_DeepPathsAreLinearAndBounded() throws {
        let out = try temporaryFolder()
        let files = FileAccess(outputDirectory: out)
        let deep = String(repeating: "a/", count: 500) + "f.txt"
        let outcome = run("kiri.write_text('\(deep)', 'deep')", files: files)
        XCTAssertNil(outcome.failure, outcome.failure?.message ?? "")
        XCTAssertLessThan(outcome.seconds, 0.5)
        XCTAssertEqual(try String(contentsOfFile: out + "/" + deep, encoding: .utf8), "deep")
        let tooLong = String(repeating: "b/", count: 600) + "f.txt"
        expectFailure("kiri.write_text('\(tooLong)', 'deep')", [.error], ["cannot write a path of 1205 bytes: give at most 1024"], files: files)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/b"))
    }

    // MARK: - F.37 Totals

    /// `--disk`: every byte a run writes counts, whichever file it goes to.
    func testF37_BytesWrittenAreCapped() throws {
        let out = try temporaryFolder()
        let runtime = try LuaRuntime(limits: SandboxLimits(timeout: 5, memory: 256 << 20, disk: 1 << 20),
                                     files: FileAccess(outputDirectory: out))
        defer { runtime.close() }
        XCTAssertThrowsError(try runtime.run(source: """
            local block = string.rep("x", 300000)
            for i = 1, 100 do kiri.write_text("part" .. i .. ".txt", block) end
            """, name: "fill.lua")) { error in
            XCTAssertTrue("\(error)".contains("fill.lua:2: cannot write 'part4.txt': its 300000 bytes would pass the run's disk cap of 1048576 bytes (--disk)"), "\(error)")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out).sorted(), ["part1.txt", "part2.txt", "part3.txt"])
        XCTAssertEqual(runtime.disk.used, 900_000)
    }

    // MARK: - F.39 Names and messages

    /// A NUL byte would cut the name short in the C calls below: the file touched would not be the one named.
    func testF39_NamesWithNulBytesAreRefused() throws {
        let out = try temporaryFolder()
        let files = FileAccess(readRoots: [out], outputDirectory: out)
        expectFailure("kiri.write_text('safe\\0.txt', 'x')", [.error], ["the name contains a NUL byte"], files: files)
        expectFailure("kiri.read_text('safe\\0.txt')", [.error], ["the name contains a NUL byte"], files: files)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out), [])
    }

    /// A C stack overflow inside one of the sandbox's own wrappers names the script's line, not the prelude's.
    func testF39_ErrorsShowNoSandboxInternals() {
        let outcome = expectFailure("""
            local function nest(n) return coroutine.wrap(function() return nest(n + 1)() end)() end
            nest(1)
            """, [.error], ["case.lua:", "C stack overflow"])
        XCTAssertFalse(outcome.failure?.message.contains("sandbox") ?? true, outcome.failure?.message ?? "")
    }

    /// `require` says where it looked without naming host folders.
    func testF39_RequireShowsNoHostFolders() throws {
        let folder = try temporaryFolder()
        let files = FileAccess(readRoots: [folder], moduleRoots: [folder])
        let outcome = expectFailure("require('missing.module')", [.error],
                                    ["module 'missing.module' not found: no 'missing/module.lua' in the recipe's folder or the plugin folders"],
                                    files: files)
        XCTAssertFalse(outcome.failure?.message.contains(folder) ?? true, outcome.failure?.message ?? "")
    }
}
