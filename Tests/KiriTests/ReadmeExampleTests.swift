import Foundation
import Kiri
import KiriImage
import XCTest

/// The README's Lua examples, run as a reader would: the recipe, and the sampler dropped into a plugin folder.
final class ReadmeExampleTests: XCTestCase {
    func testReadmeRecipeAndPluginRun() throws {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("README.md")
        let blocks = try String(contentsOf: readme, encoding: .utf8).components(separatedBy: "```lua\n").dropFirst()
            .map { $0.components(separatedBy: "```")[0] }
        XCTAssertEqual(blocks.count, 2, "the README's Lua examples: a recipe and a sampler plugin")
        guard blocks.count == 2, let scripts = BundledFiles.scripts else { return }

        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-readme-\(UUID().uuidString)")
        let plugins = folder.appendingPathComponent("plugins/samplers")
        try FileManager.default.createDirectory(at: plugins, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let recipe = folder.appendingPathComponent("my_recipe.lua")
        try blocks[0].write(to: recipe, atomically: true, encoding: .utf8)
        // The plugin block starts with a comment naming its file.
        let plugin = blocks[1].split(separator: "\n", maxSplits: 1)[1]
        try plugin.write(to: plugins.appendingPathComponent("euler_half.lua"), atomically: true, encoding: .utf8)

        let out = folder.appendingPathComponent("out").path
        try RecipeRunner.run(RunRequest(script: recipe.path, arguments: ["steps=8"], outputDirectory: out), output: { _ in })
        let grid = try PNGImage.read(path: out + "/sneakers.png")
        XCTAssertEqual([grid.width, grid.height], [8 * 56 + 9 * 2, 56 + 2 * 2])

        try RecipeRunner.run(RunRequest(script: scripts + "/txt2img.lua", arguments: ["sampler=euler_half", "steps=8"],
                                        outputDirectory: out, pluginDirectories: [folder.appendingPathComponent("plugins").path]),
                             output: { _ in })
        XCTAssertTrue(try PNGImage.read(path: out + "/txt2img.png").text.contains { $0.value.contains("Sampler: euler_half") })
    }
}
