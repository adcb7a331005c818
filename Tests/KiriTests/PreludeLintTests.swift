import Foundation
import XCTest

/// The Lua preludes are plain .lua files so that they can be linted: every one of them passes luacheck with the
/// checkout's .luacheckrc (setup.sh installs Debian's lua-check).
final class PreludeLintTests: XCTestCase {
    func testPreludesPassLuacheck() throws {
        let checkout = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        guard let luacheck = ["/usr/bin/luacheck", "/usr/local/bin/luacheck"].first(where: FileManager.default.isExecutableFile) else {
            throw XCTSkip("luacheck is not installed (setup.sh installs lua-check)")
        }
        let sources = checkout.appendingPathComponent("Sources")
        let preludes = FileManager.default.enumerator(atPath: sources.path)!.compactMap { $0 as? String }
            .filter { $0.contains("Preludes/") && $0.hasSuffix(".lua") }.sorted()
        XCTAssertGreaterThanOrEqual(preludes.count, 2, "the sandbox's and the models' preludes")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: luacheck)
        process.currentDirectoryURL = checkout
        process.arguments = ["--no-color", "--codes"] + preludes.map { "Sources/" + $0 }
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let report = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        print(report.split(separator: "\n").last ?? "")
        XCTAssertEqual(process.terminationStatus, 0, report)
    }
}
