import Foundation
import XCTest

/// Every bundled Lua file (plugins, recipes, the preludes, the benchmarks, the LuaLS stubs) passes luacheck with the
/// checkout's .luacheckrc, which knows what the sandbox gives a recipe or a plugin: a global it does not have is a
/// warning here rather than a nil at run time. setup.sh installs Debian's lua-check, so CI runs this.
final class LuaLintTests: XCTestCase {
    static let checkout = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The Lua files Kiri ships or runs, relative to the checkout.
    static func bundledLua() -> [String] {
        let folders = ["Plugins", "Scripts", "Sources", "Tests/Benchmarks", "docs/luals"]
        return folders.flatMap { folder in
            (FileManager.default.enumerator(atPath: checkout.appendingPathComponent(folder).path)?.compactMap { $0 as? String } ?? [])
                .filter { $0.hasSuffix(".lua") }.map { "\(folder)/\($0)" }
        }.sorted()
    }

    func testAllBundledLuaPassesLuacheck() throws {
        guard let luacheck = ["/usr/bin/luacheck", "/usr/local/bin/luacheck"].first(where: FileManager.default.isExecutableFile) else {
            throw XCTSkip("luacheck is not installed (setup.sh installs lua-check)")
        }
        let files = Self.bundledLua()
        XCTAssert(files.contains("Sources/KiriLua/Preludes/sandbox.lua") && files.contains("Sources/Kiri/Bindings/Preludes/models.lua"),
                  "the preludes were not found")
        XCTAssertGreaterThan(files.filter { $0.hasPrefix("Plugins/") }.count, 80)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: luacheck)
        process.currentDirectoryURL = Self.checkout
        // The files by name, so that the total names how many were checked.
        process.arguments = ["--no-color", "--codes", "--config", ".luacheckrc"] + files
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let report = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let total = report.split(separator: "\n").last.map(String.init) ?? ""
        print(total)
        XCTAssertEqual(total, "Total: 0 warnings / 0 errors in \(files.count) files", report)
        XCTAssertEqual(process.terminationStatus, 0, report)
    }
}
