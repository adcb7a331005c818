import Foundation
import Kiri
import KiriImage
import XCTest

/// The README's Lua examples, run as a reader would: the recipe, the sampler and the guidance method dropped
/// into a plugin folder, the recipe that uses hooks, the user's patch and post-processing, and the training loop.
final class ReadmeExampleTests: XCTestCase {
    static func blocks() throws -> [String] {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("README.md")
        return try String(contentsOf: readme, encoding: .utf8).components(separatedBy: "```lua\n").dropFirst()
            .map { $0.components(separatedBy: "```")[0] }
    }

    func testReadmeRecipesAndPluginsRun() throws {
        let blocks = try Self.blocks()
        XCTAssertEqual(blocks.count, 5, "the README's Lua examples: a recipe, a sampler plugin, a guidance plugin, a recipe with hooks, "
            + "a training loop")
        guard blocks.count == 5, let scripts = BundledFiles.scripts else { return }

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

    /// The training loop, a few steps of it: it prints its first loss and saves a model kiri.models.load reads.
    func testReadmeTrainingLoopRuns() throws {
        let blocks = try Self.blocks()
        guard blocks.count == 5 else { return XCTFail("no training loop in the README") }
        let folder = URL(fileURLWithPath: try temporaryFolder("kiri-readme"))
        let script = folder.appendingPathComponent("my_train.lua"), check = folder.appendingPathComponent("check.lua")
        try blocks[4].write(to: script, atomically: true, encoding: .utf8)
        try """
            local m = kiri.models.load(arg[1] .. "/my_model")
            print(m.info.architecture, m.info.num_class_embeds, m:forward(kiri.zeros(2, 1, 28, 28), 10, {class = {0, 9}}):numel())
            """.write(to: check, atomically: true, encoding: .utf8)
        let out = folder.appendingPathComponent("out").path
        var printed = ""
        try RecipeRunner.run(RunRequest(script: script.path, arguments: ["steps=2", "batch=4"], outputDirectory: out),
                             output: { printed += $0 })
        let first = printed.split(separator: "\n").first.map { printedNumbers(String($0)) } ?? []
        XCTAssertEqual(first.count, 2, printed)
        XCTAssertEqual(first.first, 0)
        XCTAssertTrue(first.last.map { $0.isFinite && $0 > 0 } ?? false, printed)
        printed = ""
        try RecipeRunner.run(RunRequest(script: check.path, arguments: [out], outputDirectory: out), output: { printed += $0 })
        XCTAssertEqual(printed, "UNet2DModel\t10\t1568\n")
    }
}
