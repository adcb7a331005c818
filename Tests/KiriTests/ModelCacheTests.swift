import Foundation
@testable import Kiri
import KiriImage
import XCTest

/// The model cache a server keeps between jobs: a model is loaded once, a run that merges a LoRA takes it out (so the
/// next run does not see the LoRA), the least recently used go when the memory limit needs room, and the images are
/// the bits of uncached runs.
final class ModelCacheTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/models").path
    static let model = fixtures + "/pipeline/tiny-sd"

    /// A kohya LoRA of rank 2 on the first self-attention's to_q of tiny-sd (16 wide).
    func writeLoRA() throws -> String {
        let path = NSTemporaryDirectory() + "kiri-cache-test-lora.safetensors"
        let module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
        let header = "{\"\(module).lora_down.weight\":{\"dtype\":\"F32\",\"shape\":[2,16],\"data_offsets\":[0,128]},"
            + "\"\(module).lora_up.weight\":{\"dtype\":\"F32\",\"shape\":[16,2],\"data_offsets\":[128,256]}}"
        var bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian, Array.init) + Array(header.utf8)
        let values = (0..<64).map { Float(($0 * 37) % 11) * 0.3 - 1.5 }
        bytes += values.withUnsafeBytes(Array.init)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Runs txt2img and returns the image's pixels.
    func generate(_ model: String, cache: ModelCache?, _ extra: [String] = []) throws -> [UInt8] {
        let folder = NSTemporaryDirectory() + "kiri-cache-test-\(UInt64.random(in: 0...UInt64.max))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var request = RunRequest(script: BundledFiles.scripts! + "/txt2img.lua",
                                 arguments: ["model=\(model)", "prompt=a red fox", "steps=2", "seed=5", "out=x.png"] + extra,
                                 outputDirectory: folder)
        request.modelCache = cache
        try RecipeRunner.run(request) { _ in }
        return try PNGImage.read(path: folder + "/x.png").pixels
    }

    func testModelsAreKeptAndLoRARunsTakeThemOut() throws {
        let cache = ModelCache(limit: 1 << 30)
        let uncached = try generate(Self.model, cache: nil)
        XCTAssertEqual(try generate(Self.model, cache: cache), uncached)
        XCTAssertEqual(cache.count, 1)
        let used = cache.budget.used
        XCTAssertGreaterThan(used, 0, "the model's tensors are charged to the cache")
        XCTAssertEqual(try generate(Self.model, cache: cache), uncached)
        XCTAssertEqual(cache.count, 1)
        XCTAssertEqual(cache.budget.used, used, "the second run loaded nothing")

        let withLoRA = try generate(Self.model, cache: cache, ["lora=\(try writeLoRA()):0.8"])
        XCTAssertNotEqual(withLoRA, uncached)
        XCTAssertEqual(cache.count, 0, "the LoRA run took its model out of the cache")
        XCTAssertEqual(try generate(Self.model, cache: cache), uncached, "no LoRA left behind")
    }

    /// A run that loads the same model twice gets two: a LoRA merged into one leaves the other as it was.
    func testTwoHandlesInOneRunAreTwoModels() throws {
        let folder = NSTemporaryDirectory() + "kiri-cache-test-\(UInt64.random(in: 0...UInt64.max))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let source = """
            local a, b = kiri.models.load(arg[1]), kiri.models.load(arg[1])
            local x, context = kiri.randn({1, 4, 8, 8}, 1), b:encode("a fox")
            local before = b:forward(x, 500, {context = context.context}):sum()
            a:apply_lora(arg[2], 1)
            print(before == b:forward(x, 500, {context = context.context}):sum(), before == a:forward(x, 500, {context = context.context}):sum())
            """
        var printed = ""
        var request = RunRequest(script: "two.lua", arguments: [Self.model, try writeLoRA()], outputDirectory: folder, source: source,
                                 allowedFiles: [Self.model, try writeLoRA()])
        request.modelCache = ModelCache(limit: 1 << 30)
        try RecipeRunner.run(request) { printed += $0 }
        XCTAssertEqual(printed, "true\tfalse\n")
    }

    func testTheLeastRecentlyUsedGoFirst() throws {
        let probe = ModelCache(limit: 1 << 30)
        _ = try generate(Self.model, cache: probe)
        let size = probe.budget.used
        // Room for one model and a half: loading the second evicts the first.
        let cache = ModelCache(limit: size * 3 / 2 + (1 << 20))
        // The same model at another path is another entry.
        let other = NSTemporaryDirectory() + "kiri-cache-test-other-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.copyItem(atPath: Self.model, toPath: other)
        defer { try? FileManager.default.removeItem(atPath: other) }
        _ = try generate(Self.model, cache: cache)
        _ = try generate(other, cache: cache)
        XCTAssertEqual(cache.count, 1)
        XCTAssertLessThanOrEqual(cache.budget.used, cache.budget.limit)
    }
}
