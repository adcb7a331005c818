import Foundation
import KiriImage
import Kiri

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
