import XCTest
@testable import Kiri
import KiriLua

/// The bar's frames, and what it writes for a run of steps.
final class ProgressBarTests: XCTestCase {
    func testFrames() {
        XCTAssertEqual(ProgressBar.line(step: 0, of: 20, elapsed: 0), "step 0/20 [....................]")
        // 7 steps in 2 s: 3.5 it/s, 13 steps left take 3.7 s, shown rounded up.
        XCTAssertEqual(ProgressBar.line(step: 7, of: 20, elapsed: 2), "step 7/20 [#######.............] 3.5 it/s ETA 0:04")
        XCTAssertEqual(ProgressBar.line(step: 1, of: 4, elapsed: 8), "step 1/4 [#####...............] 8.0 s/it ETA 0:24")
        XCTAssertEqual(ProgressBar.line(step: 4, of: 4, elapsed: 1), "step 4/4 [####################] 4.0 it/s ETA 0:00")
        XCTAssertEqual(ProgressBar.clock(3725), "1:02:05")
    }

    func testARunDrawsInPlaceAndEndsWithANewline() {
        var written = ""
        let bar = ProgressBar { written += $0 }
        bar.step(0, of: 3)
        for step in 1...3 { bar.step(step, of: 3) }
        bar.end()
        bar.end()   // a second end (the sampler failed after finishing) writes nothing
        let frames = written.components(separatedBy: "\r").dropFirst()
        XCTAssertTrue(frames.first?.hasPrefix("step 0/3 [") ?? false, written)
        XCTAssertTrue(frames.last?.hasPrefix("step 3/3 [####################]") ?? false, written)
        XCTAssertTrue(written.hasSuffix("\u{1B}[K\n"), written)
        XCTAssertEqual(written.filter { $0 == "\n" }.count, 1)
    }

    /// Issue 14, 1: a sampler stopped by the time limit (whose cleanup in Lua cannot run then) still ends the bar's
    /// line, so the error starts on a line of its own.
    func testARunStoppedInASamplerEndsTheBar() throws {
        var written = ""
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-bar-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let script = folder.appendingPathComponent("stuck.lua").path
        try """
            local function model(x) while true do end end
            kiri.samplers.euler(model, kiri.zeros(1, 2, 2), kiri.tensor({1, 0.5, 0}))
            """.write(toFile: script, atomically: true, encoding: .utf8)
        let request = RunRequest(script: script, limits: SandboxLimits(timeout: 0.3), outputDirectory: folder.path,
                                 progress: ProgressBar { written += $0 })
        XCTAssertThrowsError(try RecipeRunner.run(request, output: { _ in }))
        XCTAssertTrue(written.hasPrefix("\rstep 0/2 ["), written)
        XCTAssertTrue(written.hasSuffix("\n"), written)
    }

    /// A recipe's own loop (kiri.progress): a bar that starts past 0 (a resumed training run) counts its rate from
    /// there, carries the note after the ETA, ends at the total, and kiri.progress() ends it before a printed line.
    func testARecipesLoopDrawsItsNote() throws {
        XCTAssertEqual(ProgressBar.line(step: 260, of: 2500, elapsed: 5, first: 250),
                       "step 260/2500 [##..................] 2.0 it/s ETA 18:40")
        var written = ""
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-bar-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let script = folder.appendingPathComponent("loop.lua").path
        try """
            kiri.progress(3, 5, "loss 0.5")
            kiri.progress()
            kiri.progress(5, 5, "loss 0.25")
            assert(not pcall(kiri.progress, 6, 5))
            local ok, message = pcall(kiri.progress, 1, 5, 7)
            print(message)
            """.write(toFile: script, atomically: true, encoding: .utf8)
        var printed = ""
        try RecipeRunner.run(RunRequest(script: script, outputDirectory: folder.path, progress: ProgressBar { written += $0 }),
                             output: { printed += $0 })
        XCTAssertTrue(printed.contains("bad argument #3 to 'progress' (string or nil expected, got number)"), printed)
        let lines = written.split(separator: "\n")
        XCTAssertEqual(lines.count, 2, written)
        XCTAssertTrue(lines[0].hasPrefix("\rstep 3/5 [############........]") && lines[0].contains(" loss 0.5\u{1B}[K"), written)
        XCTAssertTrue(lines[1].hasPrefix("\rstep 5/5 [####################]") && lines[1].contains(" loss 0.25"), written)
    }
}
