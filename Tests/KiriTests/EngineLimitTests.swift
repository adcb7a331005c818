import Foundation
import XCTest
import Kiri
import KiriLua

/// Section F of /work/shared/security-cases.md (cases 37–39) for the engine's bindings, which the Lua runtime's own
/// tests (KiriLuaTests/HostLimitTests.swift) cannot reach: a model's forward pass obeys the time limit, strings
/// handed to `kiri.image.save` count against the memory cap, and image names with NUL bytes are refused.
final class EngineLimitTests: XCTestCase {
    struct Outcome { var failure: ScriptFailure?; var output: String; var seconds: Double; var peak: Int }

    func run(_ source: String, timeout: Double, wallTimeout: Double = .infinity, memory: Int, files: FileAccess) throws -> Outcome {
        var printed = ""
        let limits = SandboxLimits(timeout: timeout, wallTimeout: wallTimeout, memory: memory)
        let runtime = try LuaRuntime.engine(limits: limits, files: files,
                                            output: { printed += $0 })
        defer { runtime.close() }
        let start = DispatchTime.now()
        var failure: ScriptFailure?
        do { try runtime.run(source: source, name: "case.lua") } catch let error as ScriptFailure { failure = error }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        return Outcome(failure: failure, output: printed, seconds: seconds, peak: runtime.budget.peak)
    }

    func temporaryFolder() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-limits-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return FileAccess.realPath(path) ?? path
    }

    static let parityUNet = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/models/parity/unet2d_condition").path

    /// Self-attention over a 256² latent's 65 536 tokens takes minutes; the kernels check the stop between tiles.
    /// Model evaluations are off the script clock, so it is the wall clock that stops this one.
    func testF38_AModelForwardStopsAtTheWallDeadline() throws {
        let model = Self.parityUNet
        let outcome = try run("""
            local m = kiri.models.load("\(model)")
            local y = m:forward(kiri.randn({1, 4, 256, 256}, 1), 500, {context = kiri.randn({1, 7, 24}, 2)})
            print("finished")
            """, timeout: 60, wallTimeout: 0.5, memory: 2 << 30, files: FileAccess(readRoots: [model]))
        XCTAssertEqual(outcome.failure?.kind, .timeout, outcome.failure?.message ?? "no failure")
        XCTAssertEqual(outcome.failure?.stoppedBy, .wallTimeLimit)
        XCTAssertTrue(outcome.failure?.message.contains("wall-clock time limit exceeded (0.5 s") ?? false)
        XCTAssertLessThan(outcome.seconds, 1.5)
        XCTAssertEqual(outcome.output, "")
    }

    /// Issue 14, 1: a long generation is legitimate, so time inside model evaluations does not count against the
    /// script's limit; a runaway loop in the recipe's own Lua is still stopped, after the limit's worth of it.
    func testModelEvaluationsAreOffTheScriptClock() throws {
        let model = Self.parityUNet
        let outcome = try run("""
            local m = kiri.models.load("\(model)")
            local x, context = kiri.randn({2, 4, 64, 64}, 1), kiri.randn({2, 7, 24}, 2)
            local started = kiri.clock()
            repeat x = m:forward(x, 500, {context = context}) until kiri.clock() - started > 1.2
            print("forwards done")
            while true do end
            """, timeout: 0.4, memory: 2 << 30, files: FileAccess(readRoots: [model]))
        XCTAssertEqual(outcome.output, "forwards done\n")
        XCTAssertEqual(outcome.failure?.stoppedBy, .timeLimit, outcome.failure?.message ?? "no failure")
        XCTAssertTrue(outcome.failure?.message.contains("time limit exceeded (0.4 s of script time") ?? false)
        // The forwards ran three times the whole limit, and the loop after them still had most of it to run.
        XCTAssertGreaterThan(outcome.seconds, 1.2 + 0.3)
    }

    /// One big string used as the value of many keys: each copy the host makes counts against the memory cap.
    func testF37_StringsHandedToTheHostCountAgainstTheMemoryCap() throws {
        let out = try temporaryFolder()
        let outcome = try run("""
            local big = string.rep("x", 24 << 20)
            local text = {}
            for i = 1, 12 do text["key" .. i] = big end
            kiri.image.save("bomb.png", kiri.zeros(1, 2, 2), text)
            """, timeout: 10, memory: 128 << 20, files: FileAccess(outputDirectory: out))
        XCTAssertEqual(outcome.failure?.kind, .error)
        XCTAssertTrue(outcome.failure?.message.hasPrefix("case.lua:4:") ?? false, outcome.failure?.message ?? "")
        XCTAssertTrue(outcome.failure?.message.contains("not enough memory") ?? false, outcome.failure?.message ?? "")
        XCTAssertLessThanOrEqual(outcome.peak, 128 << 20)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/bomb.png"))
    }

    /// A NUL byte would cut the name short in the C calls below: the file touched would not be the one named.
    func testF39_ImageNamesWithNulBytesAreRefused() throws {
        let out = try temporaryFolder()
        let outcome = try run("kiri.image.save('safe\\0.png', kiri.zeros(1, 2, 2))", timeout: 10, memory: 128 << 20,
                              files: FileAccess(readRoots: [out], outputDirectory: out))
        XCTAssertTrue(outcome.failure?.message.contains("the name contains a NUL byte") ?? false, outcome.failure?.message ?? "")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out), [])
    }
}
