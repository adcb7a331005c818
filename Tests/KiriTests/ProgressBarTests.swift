import XCTest
@testable import Kiri

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
}
