import Foundation
import KiriImage
import KiriLua
import Kiri
import XCTest

/// Runs Lua `source` as `kiri run` runs a recipe file (from a temporary file) and returns what it printed;
/// a script error is thrown.
func runRecipe(_ source: String) throws -> String {
    let script = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-test-\(UUID().uuidString).lua")
    try source.write(to: script, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(at: script) }
    var printed = ""
    try RecipeRunner.run(RunRequest(script: script.path), output: { printed += $0 })
    return printed
}

extension PNGImage {
    /// Writes the encoded image to `path`, for fixtures made inside a test.
    func save(to path: String) throws { try Data(encoded()).write(to: URL(fileURLWithPath: path)) }
}

/// The checkout's bundled `Plugins/` folder.
let bundledPlugins = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Plugins").path

/// Numbers printed by a script, separated by white space.
func printedNumbers(_ text: String) -> [Double] { text.split(whereSeparator: \.isWhitespace).compactMap { Double($0) } }

/// Runs Lua `source` in an engine runtime as `kiri run` makes one, which may read the bundled plugins and `roots`
/// and write under `outputDirectory`, and returns what it printed; a script error is thrown.
func runEngine(_ source: String, roots: [String], outputDirectory: String? = nil, memory: Int = 1 << 30) throws -> String {
    var printed = ""
    let folders = [PluginCatalog.Folder(path: bundledPlugins, isBundled: true)]
    let files = FileAccess(readRoots: [bundledPlugins] + roots, moduleRoots: [bundledPlugins], outputDirectory: outputDirectory)
    let runtime = try LuaRuntime.engine(limits: SandboxLimits(timeout: 60, memory: memory), files: files,
                                        plugins: PluginCatalog(folders: folders), output: { printed += $0 })
    defer { runtime.close() }
    try runtime.run(source: source, name: "test.lua")
    return printed
}

/// `text` as a Lua string literal.
func luaString(_ text: String) -> String {
    "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
}

extension XCTestCase {
    /// A new empty folder under the temporary directory, removed when the test ends.
    func temporaryFolder(_ prefix: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }
}
