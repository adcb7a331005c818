import Foundation
import XCTest
import Kiri
import KiriLua

/// Section F of /work/shared/security-cases.md (cases 37–39) for the engine's bindings, which the Lua runtime's own
/// tests (KiriLuaTests/HostLimitTests.swift) cannot reach: a model's forward pass obeys the time limit, strings
/// handed to `kiri.image.save` count against the memory cap, and image names with NUL bytes are refused.
final class EngineLimitTests: XCTestCase {
    struct Outcome { var failure: ScriptFailure?; var output: String; var seconds: Double; var peak: Int }

    func run(_ source: String, timeout: Double, memory: Int, files: FileAccess) throws -> Outcome {
        var printed = ""
        let runtime = try LuaRuntime.engine(limits: SandboxLimits(timeout: timeout, memory: memory), files: files,
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

    /// Self-attention over a 256² latent's 65 536 tokens takes minutes; the kernels check the stop between tiles.
    func testF38_AModelForwardStopsAtTheDeadline() throws {
        let model = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/models/parity/unet2d_condition").path
        let outcome = try run("""
            local m = kiri.models.load("\(model)")
            local y = m:forward(kiri.randn({1, 4, 256, 256}, 1), 500, {context = kiri.randn({1, 7, 24}, 2)})
            print("finished")
            """, timeout: 0.5, memory: 2 << 30, files: FileAccess(readRoots: [model]))
        XCTAssertEqual(outcome.failure?.kind, .timeout, outcome.failure?.message ?? "no failure")
        XCTAssertTrue(outcome.failure?.message.contains("time limit exceeded") ?? false)
        XCTAssertLessThan(outcome.seconds, 1.5)
        XCTAssertEqual(outcome.output, "")
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
