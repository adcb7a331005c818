import Foundation
import XCTest
@testable import KiriLua

/// The checkout's bundled `Plugins/` folder.
let bundledPlugins = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Plugins").path

/// A runtime as `kiri run` makes one: bundled plugins (after any `userPlugins`), and modules from
/// the plugin folders.
func makeRuntime(limits: SandboxLimits = SandboxLimits(timeout: 20, memory: 1 << 30), userPlugins: [String] = [],
                 output: @escaping (String) -> Void) throws -> LuaRuntime {
    let folders = userPlugins.map { PluginCatalog.Folder(path: $0, isBundled: false) }
        + [PluginCatalog.Folder(path: bundledPlugins, isBundled: true)]
    let roots = folders.map(\.path)
    return try LuaRuntime(limits: limits, files: FileAccess(readRoots: roots, moduleRoots: roots),
                          plugins: PluginCatalog(folders: folders), output: output)
}

/// Runs `source` in a fresh runtime and returns what it printed; fails the test on a script error.
func runLua(_ source: String, limits: SandboxLimits = SandboxLimits(timeout: 20, memory: 1 << 30),
            file: StaticString = #filePath, line: UInt = #line) -> String {
    var printed = ""
    do {
        let runtime = try makeRuntime(limits: limits, output: { printed += $0 })
        defer { runtime.close() }
        try runtime.run(source: source, name: "test.lua")
    } catch {
        XCTFail("script failed: \(error)", file: file, line: line)
    }
    return printed
}

/// Runs a Lua check that prints what it measured and a `FAIL ...` line for each assertion that failed;
/// each such line fails the test, so a test log shows the numbers either way.
func checkLua(_ source: String, limits: SandboxLimits, file: StaticString = #filePath, line: UInt = #line) {
    let output = runLua(source, limits: limits, file: file, line: line)
    print(output, terminator: "")
    for failure in output.split(separator: "\n") where failure.hasPrefix("FAIL") {
        XCTFail(String(failure), file: file, line: line)
    }
    XCTAssertFalse(output.isEmpty, "the script printed nothing", file: file, line: line)
}

/// The message of the error `source` raises, or nil if it ran to the end.
func luaError(_ source: String, limits: SandboxLimits = SandboxLimits(timeout: 20, memory: 1 << 30)) -> ScriptFailure? {
    do {
        let runtime = try makeRuntime(limits: limits, output: { _ in })
        defer { runtime.close() }
        try runtime.run(source: source, name: "test.lua")
        return nil
    } catch let failure as ScriptFailure {
        return failure
    } catch {
        return ScriptFailure(kind: .setup, message: "\(error)")
    }
}

/// Numbers printed by a script, one or more per line, separated by white space.
func printedNumbers(_ text: String) -> [Double] {
    text.split(whereSeparator: { $0 == "\n" || $0 == "\t" || $0 == " " }).compactMap { Double($0) }
}
