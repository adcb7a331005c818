import Foundation
import Kiri
import KiriImage
import XCTest

/// The README's Lua examples, run as a reader would: the recipe, the sampler and the guidance method dropped
/// into a plugin folder, and the recipe that uses hooks, the user's patch and post-processing.
final class ReadmeExampleTests: XCTestCase {
    func testReadmeRecipesAndPluginsRun() throws {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("README.md")
        let blocks = try String(contentsOf: readme, encoding: .utf8).components(separatedBy: "```lua\n").dropFirst()
            .map { $0.components(separatedBy: "```")[0] }
        XCTAssertEqual(blocks.count, 4, "the README's Lua examples: a recipe, a sampler plugin, a guidance plugin, a recipe with hooks")
        guard blocks.count == 4, let scripts = BundledFiles.scripts else { return }

        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-readme-\(UUID().uuidString)")
        let plugins = folder.appendingPathComponent("plugins")
        defer { try? FileManager.default.removeItem(at: folder) }
        // Each plugin block starts with a comment naming its file, ~/kiri-plugins/DOMAIN/NAME.lua.
        for block in [blocks[1], blocks[2]] {
            let lines = block.split(separator: "\n", maxSplits: 1)
            let name = String(lines[0].dropFirst("-- ~/kiri-plugins/".count))
            let file = plugins.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try lines[1].write(to: file, atomically: true, encoding: .utf8)
        }
        let recipe = folder.appendingPathComponent("my_recipe.lua"), styled = folder.appendingPathComponent("styled.lua")
        try blocks[0].write(to: recipe, atomically: true, encoding: .utf8)
        try blocks[3].write(to: styled, atomically: true, encoding: .utf8)

        let out = folder.appendingPathComponent("out").path
        try RecipeRunner.run(RunRequest(script: recipe.path, arguments: ["steps=8"], outputDirectory: out), output: { _ in })
        let grid = try PNGImage.read(path: out + "/sneakers.png")
        XCTAssertEqual([grid.width, grid.height], [8 * 56 + 9 * 2, 56 + 2 * 2])

        func txt2img(_ arguments: [String]) throws -> [PNGImage.TextChunk] {
            try RecipeRunner.run(RunRequest(script: scripts + "/txt2img.lua", arguments: arguments + ["steps=8"],
                                            outputDirectory: out, pluginDirectories: [plugins.path], overwrite: true), output: { _ in })
            return try PNGImage.read(path: out + "/txt2img.png").text
        }
        XCTAssertTrue(try txt2img(["sampler=euler_half"]).contains { $0.value.contains("Sampler: euler_half") })
        XCTAssertTrue(try txt2img(["guidance=cfg_zero_star"]).contains { $0.value.contains("Guidance: cfg_zero_star") })

        try RecipeRunner.run(RunRequest(script: styled.path, outputDirectory: out, pluginDirectories: [plugins.path]),
                             output: { _ in })
        let image = try PNGImage.read(path: out + "/styled.png")
        XCTAssertEqual([image.width, image.height], [56, 56])
    }
}
