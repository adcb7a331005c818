import Foundation
import XCTest
import Kiri
import KiriLua

/// lib/prompt.lua's schedules with a real model's `encode` (the default model): the Lua side is tested in
/// KiriLuaTests/PromptScheduleTests.swift.
final class PromptScheduleModelTests: XCTestCase {
    /// A runtime as `kiri run` makes one, with the default model this checkout ships.
    func runWithDefaultModel(_ source: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        let model = URL(fileURLWithPath: bundledPlugins).deletingLastPathComponent()
            .appendingPathComponent("Sources/Kiri/Resources/models/fashion-mnist").path
        var printed = ""
        do {
            let runtime = try LuaRuntime.engine(
                limits: SandboxLimits(timeout: 60, memory: 1 << 30),
                files: FileAccess(readRoots: [bundledPlugins, model], moduleRoots: [bundledPlugins]),
                plugins: PluginCatalog(folders: [PluginCatalog.Folder(path: bundledPlugins, isBundled: true)]),
                bundledModels: ["fashion-mnist": model], output: { printed += $0 })
            defer { runtime.close() }
            try runtime.run(source: source, name: "test.lua")
        } catch {
            XCTFail("script failed: \(error)", file: file, line: line)
        }
        return printed
    }

    func testScheduleEncodesWithTheDefaultModel() {
        let printed = runWithDefaultModel("""
            local prompt = require "lib.prompt"
            local model <close> = kiri.models.fashion_mnist()
            local calls = 0
            local cond = prompt.schedule("[sneaker:sandal:0.5]", 10, function(text)
                calls = calls + 1
                return model:encode(text)
            end)
            local classes = {}
            for step = 1, 10 do
                local parts = cond(step, 10)
                classes[step] = #parts .. ":" .. parts[1].extra.class .. ":" .. parts[1].weight
            end
            print(calls, table.concat(classes, " "))
            local default <close> = kiri.models.default()
            local composed = prompt.schedule("sneaker :0.7 AND sandal :0.3", 10, function(text) return default:encode(text) end)
            for _, step in ipairs({1, 10}) do
                local parts = composed(step, 10)
                print(#parts, parts[1].weight, parts[1].extra.class, parts[2].weight, parts[2].extra.class)
            end
            """)
        // Fashion-MNIST labels: sneaker 7, sandal 5. Two distinct texts, so two encodes.
        XCTAssertEqual(printed, "2\t" + Array(repeating: "1:7:1.0", count: 5).joined(separator: " ") + " "
            + Array(repeating: "1:5:1.0", count: 5).joined(separator: " ") + "\n"
            + "2\t0.7\t7\t0.3\t5\n2\t0.7\t7\t0.3\t5\n")
    }
}
