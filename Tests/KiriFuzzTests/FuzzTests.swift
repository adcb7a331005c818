import CZlib
import Foundation
@testable import KiriData
import KiriImage
@testable import KiriLua
import KiriModels
import KiriTensor
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// One harness per parser of untrusted bytes, each through the entry point the loader or a recipe uses: model files
/// as `kiri.models.load` reads them, PNGs as `kiri.image.load` and `kiri run --from` do, IDX files (gzip'd or not) as
/// `kiri.data.fashion_mnist` does, prompts through the Lua
/// runtime as recipes call Plugins/lib/prompt.lua. Seeds are in Tests/Fixtures/fuzz (make_corpus.py), with the
/// fixtures of the parsers' own tests. See FuzzEngine.swift for what counts as a finding and the environment knobs.
final class FuzzTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").path
    static let bundledPlugins = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Plugins").path

    var scratch = ""

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-fuzz-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    // MARK: - safetensors (security cases 22–30)

    func testSafetensors() {
        let path = scratch + "/model.safetensors"
        let target = FuzzTarget(
            name: "safetensors",
            dictionary: [#""dtype":"F16""#, #""dtype":"BF16""#, #""dtype":"F32""#, #""dtype":"I64""#, #""shape":[]"#,
                         #""shape":[0]"#, #""data_offsets":[0,0]"#, #""__metadata__":{}"#, #"{"x":{}}"#, "{", "}", "[", "]",
                         "\"", ",", ":", "null", "\\u0000", "\\ud800", "   "].map { Array($0.utf8) },
            structural: [Self.corruptLengthPrefix],
            repair: Self.fitLengthPrefix
        ) { bytes in try Self.load(path, bytes) }
        _ = fuzz(target)
    }

    /// What the loader does with a model file: open (which validates the whole header), then read its tensors.
    static func load(_ path: String, _ bytes: [UInt8]) throws {
        try writeFile(path, bytes)
        let file = try SafetensorsFile(path: path)
        _ = (file.parameterCount, file.storageDType, file.metadata)
        for name in file.names where file.info(name)!.count <= 1 << 20 {
            _ = try file.tensor(name)
        }
    }

    // MARK: - GGUF (stable-diffusion.cpp's files, the same checks)

    func testGGUF() {
        let path = scratch + "/model.gguf"
        // Counts, lengths, dimensions, ggml types and offsets next to the checks, as little-endian u32 and u64.
        let numbers: [UInt64] = [0, 1, 2, 3, 4, 5, 8, 9, 12, 30, 31, 32, 33, 64, 99, 1 << 20, 1 << 31, 1 << 32, 1 << 63, UInt64.max]
        let target = FuzzTarget(
            name: "gguf",
            dictionary: numbers.flatMap { n in [withUnsafeBytes(of: n.littleEndian, Array.init),
                                                withUnsafeBytes(of: UInt32(truncatingIfNeeded: n).littleEndian, Array.init)] }
                + ["GGUF", "general.alignment", "general.name"].map { Array($0.utf8) }
        ) { bytes in try Self.load(path, bytes) }
        _ = fuzz(target)
    }

    /// The 8-byte little-endian header length, set to a value next to a check.
    static func corruptLengthPrefix(_ bytes: inout [UInt8], _ random: inout FuzzRandom) {
        guard bytes.count >= 8 else { return }
        let real = UInt64(bytes.count - 8)
        let value = random.pick([0, 1, 2, real, real &- 1, real + 1, 1 << 31, 100_000_000, 100_000_001, 1 << 63,
                                 UInt64.max, UInt64.max - 7, UInt64(random.below(bytes.count))])
        for k in 0..<8 { bytes[k] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(k))) }
    }

    /// Most of the time, the length prefix made to end the header at its closing brace again, so mutations of the
    /// JSON reach the header's checks rather than the length's.
    static func fitLengthPrefix(_ bytes: inout [UInt8], _ random: inout FuzzRandom) {
        guard bytes.count > 8, random.chance(0.7) else { return }
        var depth = 0, inString = false, escaped = false
        for index in 8..<bytes.count {
            let byte = bytes[index]
            if inString {
                if escaped { escaped = false } else if byte == 0x5c { escaped = true } else if byte == 0x22 { inString = false }
            } else if byte == 0x22 {
                inString = true
            } else if byte == 0x7b || byte == 0x5b {
                depth += 1
            } else if byte == 0x7d || byte == 0x5d {
                depth -= 1
                if depth == 0 {
                    let length = UInt64(index - 7)
                    for k in 0..<8 { bytes[k] = UInt8(truncatingIfNeeded: length >> (8 * UInt64(k))) }
                    return
                }
            }
        }
    }

    // MARK: - config.json and scheduler_config.json (case 33, 36)

    /// Each input is the UNet config (beside a valid scheduler config) or, when it reads like one, the scheduler
    /// config (beside a valid UNet config), in a diffusers model folder with a header-only weights file; it goes
    /// through ModelFiles.locate, ModelSummary and the UNet's construction, as `kiri.models.load` and `kiri info` do.
    func testConfigs() throws {
        let model = scratch + "/model", unet = model + "/unet", scheduler = model + "/scheduler"
        try FileManager.default.createDirectory(atPath: unet, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: scheduler, withIntermediateDirectories: true)
        try writeFile(unet + "/diffusion_pytorch_model.safetensors", [2, 0, 0, 0, 0, 0, 0, 0] + Array("{}".utf8))
        let validUNet = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "/fuzz/config/unet2d_small.json")))
        let validScheduler = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "/models/sd15_scheduler_config.json")))
        let modelConfigs = ((try? FileManager.default.contentsOfDirectory(atPath: Self.fixtures + "/models")) ?? [])
            .filter { $0.hasSuffix(".json") }.sorted()
            .compactMap { FileManager.default.contents(atPath: Self.fixtures + "/models/" + $0).map { [UInt8]($0) } }

        let target = FuzzTarget(
            name: "config",
            extraSeeds: modelConfigs,
            dictionary: [#""_class_name":"UNet2DConditionModel""#, #""_class_name":"PNDMScheduler""#, #""block_out_channels":[1]"#,
                         #""layers_per_block":[1,1]"#, #""attention_head_dim":null"#, #""cross_attention_dim":8"#,
                         #""trained_betas":[0.5]"#, #""num_train_timesteps":1"#, #""mid_block_type":null"#,
                         #""sample_size":[1,1]"#, #""norm_num_groups":1"#, "CrossAttnDownBlock2D", "AttnUpBlock2D", "null",
                         "true", "[]", "{}", "\"", ",", ":", "[", "]", "\\u0000"].map { Array($0.utf8) }
        ) { bytes in
            let isScheduler = String(decoding: bytes, as: UTF8.self).contains("beta") || String(decoding: bytes, as: UTF8.self).contains("Scheduler")
            try writeFile(unet + "/config.json", isScheduler ? validUNet : bytes)
            try writeFile(scheduler + "/scheduler_config.json", isScheduler ? bytes : validScheduler)
            let files = try ModelFiles.locate(model)
            let summary = try ModelSummary(files: PipelineFiles(layout: .network(files)))
            _ = (summary.text, summary.info.count, summary.schedule.count)
            _ = try UNet(config: summary.config, weights: SafetensorsFile(path: files.weights))
        }
        _ = fuzz(target)
    }

    // MARK: - PNG pixels and text chunks (cases 34, 37)

    func testPNG() {
        let path = scratch + "/image.png"
        let images = ((try? FileManager.default.contentsOfDirectory(atPath: Self.fixtures + "/images")) ?? [])
            .filter { $0.hasSuffix(".png") }.sorted()
            .compactMap { FileManager.default.contents(atPath: Self.fixtures + "/images/" + $0).map { [UInt8]($0) } }
        let target = FuzzTarget(
            name: "png",
            extraSeeds: images,
            dictionary: ["IHDR", "PLTE", "IDAT", "IEND", "tEXt", "zTXt", "iTXt", "tRNS", "sPLT", "pCAL", "sCAL", "iCCP", "eXIf",
                         "sBIT", "gAMA", "cHRM", "pHYs", "tIME", "bKGD", "hIST", "kiri.recipe\0"].map { Array($0.utf8) },
            structural: [PNGMutations.corruptLength, PNGMutations.duplicateChunk, PNGMutations.dropChunk,
                         PNGMutations.insertText, PNGMutations.corruptHeader],
            repair: { bytes, random in if random.chance(0.9) { PNGMutations.fixCRCs(&bytes) } },
            maximumLength: 1 << 20
        ) { bytes in
            try writeFile(path, bytes)
            // As `kiri run --from` reads a PNG (text only), then as `kiri.image.load` does (pixels and text).
            let text = try PNGImage.readText(path: path, byteLimit: 64 << 20)
            let image = try PNGImage.read(path: path, byteLimit: 64 << 20)
            XCTAssertEqual(image.text, text, "the two readers disagree on the text")
        }
        _ = fuzz(target)
    }

    // MARK: - IDX files (kiri.data.fashion_mnist; cases 36, 37)

    /// Each input is read as images (rank 3) and as labels (rank 1), gzip'd or plain as gzread takes it, under a
    /// 256 MiB memory cap: whatever its header declares, the reader must refuse or read it without a crash, a slow
    /// input or more memory than the cap, and every error must name the file.
    func testIDX() throws {
        let path = scratch + "/data.idx"
        func bigEndian(_ size: Int) -> [UInt8] { [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: size >> $0) } }
        func idx(_ sizes: [Int], _ data: [UInt8]) -> [UInt8] { [0, 0, 8, UInt8(sizes.count)] + sizes.flatMap(bigEndian) + data }
        func gzip(_ bytes: [UInt8]) throws -> [UInt8] {
            let packed = scratch + "/seed.gz"
            guard let file = gzopen(packed, "wb") else { throw CocoaError(.fileWriteUnknown) }
            _ = bytes.withUnsafeBytes { gzwrite(file, $0.baseAddress, UInt32($0.count)) }
            gzclose(file)
            return [UInt8](try Data(contentsOf: URL(fileURLWithPath: packed)))
        }
        let plain = [idx([2, 3, 4], (0..<24).map { UInt8($0 * 10) }), idx([5], [0, 9, 3, 3, 1]),
                     idx([1, 28, 28], (0..<784).map { UInt8(truncatingIfNeeded: $0 * 7) })]
        let sizes: [Int] = [0, 1, 2, 28, 60000, 65536, 65537, 1 << 30, (1 << 31) - 1, 1 << 31, (1 << 32) - 1]
        let target = FuzzTarget(
            name: "idx",
            extraSeeds: try plain + plain.map(gzip),
            dictionary: [[0, 0, 8, 1], [0, 0, 8, 3], [0, 0, 0x0D, 3], [0x1f, 0x8b, 8, 0]] + sizes.map(bigEndian)
        ) { bytes in
            try writeFile(path, bytes)
            var failures: [Error] = []
            try MemoryBudget.$current.withValue(MemoryBudget(limit: 256 << 20)) {
                for rank in [3, 1] {
                    do {
                        _ = try IDXFile.read(path: path, name: "data.idx", rank: rank)
                    } catch let error as DataError {
                        XCTAssert(error.message.contains("'data.idx'"), "an error that does not name the file: \(error)")
                        failures.append(error)
                    }
                }
            }
            if failures.count == 2 { throw failures[0] }   // parsed when read as one of the two
        }
        _ = fuzz(target)
    }

    /// Tests/Fixtures/fuzz/regressions: the minimised findings of earlier runs now fail at once, with an error
    /// naming what is wrong and without the memory they once took.
    func testRegressionsFailAtOnce() throws {
        let folder = fuzzFixtures + "/regressions"
        for kind in ["tEXt", "zTXt", "iTXt", "sPLT", "pCAL", "sCAL"] {
            let path = folder + "/png_\(kind)_length_2gib.png"
            let baseline = PeakMemory.resetAndRead()
            for read in [{ _ = try PNGImage.read(path: path, byteLimit: 64 << 20) },
                         { _ = try PNGImage.readText(path: path, byteLimit: 64 << 20) }] as [() throws -> Void] {
                XCTAssertThrowsError(try read()) { XCTAssertTrue("\($0)".contains("but only"), "\($0)") }
            }
            XCTAssertLessThan(PeakMemory.read() - baseline, 16 << 20, kind)
        }
        XCTAssertThrowsError(try PNGImage.readText(path: folder + "/png_ztxt_total_112mib.png", byteLimit: 64 << 20)) {
            XCTAssertTrue("\($0)".contains("text chunks take more than the limit of 67108864 bytes"), "\($0)")
        }
        let model = scratch + "/model"
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: folder + "/config_block_out_channels_2pow62.json", toPath: model + "/config.json")
        try writeFile(model + "/diffusion_pytorch_model.safetensors", [2, 0, 0, 0, 0, 0, 0, 0] + Array("{}".utf8))
        XCTAssertThrowsError(try ModelSummary(files: PipelineFiles.locate(model))) {
            XCTAssertTrue("\($0)".contains("field 'block_out_channels[0]' is 4611686018427387904, above the maximum"), "\($0)")
        }
    }

    // MARK: - Prompt parser (Plugins/lib/prompt.lua)

    /// Each prompt is parsed, scheduled and expanded at every step in a fresh runtime, as a recipe does, with a
    /// timeout and memory cap well above what any prompt of a few kilobytes needs: hitting either is a finding.
    func testPrompt() {
        let source = """
            local prompt = require "lib.prompt"
            local hex, steps = ...
            local text = hex:gsub("%x%x", function(byte) return string.char(tonumber(byte, 16)) end)
            steps = tonumber(steps)
            local parsed = prompt.parse(text)
            prompt.changes(parsed, steps)
            for _, part in ipairs(prompt.parts(parsed)) do
                for step = 1, steps do prompt.text_at(part, step, steps) end
            end
            local cond = prompt.schedule(text, steps, function(t) return t end)
            for step = 1, steps do cond(step, steps) end
            """
        let folders = [PluginCatalog.Folder(path: Self.bundledPlugins, isBundled: true)]
        let access = FileAccess(readRoots: [Self.bundledPlugins], moduleRoots: [Self.bundledPlugins])
        let limits = SandboxLimits(timeout: 1, memory: 64 << 20)
        let target = FuzzTarget(
            name: "prompt",
            dictionary: ["[", "]", ":", "|", "\\", " AND ", "AND", "(", ")", ":0.5", "::", ":-1", ":1e308", "[[[[", "]]]]",
                         "[a|b]", "[a:b:2]", "é", "\u{1F45F}", "\u{FF}", "\0", ":nan", ":0x10", ".5", "1e9"].map { Array($0.utf8) },
            maximumLength: 4096,
            slowSeconds: 0.5
        ) { bytes in
            let steps = [1, 2, 3, 7, 20, 50][Int(fnv1a(String(decoding: bytes, as: UTF8.self)) % 6)]
            let hex = bytes.map { String(format: "%02x", $0) }.joined()
            let runtime = try LuaRuntime(limits: limits, files: access, plugins: PluginCatalog(folders: folders), output: { _ in })
            defer { runtime.close() }
            do {
                try runtime.run(source: source, name: "prompt_fuzz.lua", arguments: [hex, String(steps)])
            } catch let failure as ScriptFailure where failure.kind == .timeout || failure.kind == .memory {
                XCTFail("prompt of \(bytes.count) bytes, \(steps) steps, hit the \(failure.kind) limit: \(hex)")
                throw failure
            }
        }
        _ = fuzz(target)
    }

    /// Each input as an AUTOMATIC1111 `parameters` text, which `kiri run --from` hands to lib/recipe.lua's
    /// from_parameters from someone else's PNG: long lines, quotes and escapes must neither hit a limit nor trip the
    /// sandbox's pattern-cost check (which an earlier version of the reader did on a 4.6 KB line).
    func testA1111Parameters() {
        let source = """
            local recipe = require "lib.recipe"
            local hex = ...
            local fields, ignored = recipe.from_parameters((hex:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end)))
            assert(type(fields.prompt) == "string" and type(ignored) == "table")
            """
        let folders = [PluginCatalog.Folder(path: Self.bundledPlugins, isBundled: true)]
        let access = FileAccess(readRoots: [Self.bundledPlugins], moduleRoots: [Self.bundledPlugins])
        let limits = SandboxLimits(timeout: 1, memory: 64 << 20)
        let seed = "a fox\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, "
            + "Size: 512x512, Lora hashes: \"a: 1, b\\\"c\", Version: v1.10.1"
        let target = FuzzTarget(
            name: "a1111",
            extraSeeds: [Array(seed.utf8)],
            dictionary: [", ", ": ", "\"", "\\", "\n", "Negative prompt:", "Steps: ", "Sampler: ", "Size: ", "x", "Karras",
                         "Schedule type: ", "CFG scale: ", "Seed: ", "Clip skip: ", "Variation seed strength: "].map { Array($0.utf8) },
            maximumLength: 16384,
            slowSeconds: 0.5
        ) { bytes in
            let hex = bytes.map { String(format: "%02x", $0) }.joined()
            let runtime = try LuaRuntime(limits: limits, files: access, plugins: PluginCatalog(folders: folders), output: { _ in })
            defer { runtime.close() }
            do {
                try runtime.run(source: source, name: "a1111_fuzz.lua", arguments: [hex])
            } catch let failure as ScriptFailure {
                XCTFail("parameters text of \(bytes.count) bytes failed (\(failure.kind)): \(failure.message.prefix(200)) \(hex.prefix(400))")
                throw failure
            }
        }
        _ = fuzz(target)
    }

    /// Each input, as a prompt, through the CLIP tokenizer and A1111's emphasis parser and chunking, as m:encode
    /// takes a prompt before the text encoder: a malformed one must be a PromptError, never a crash or a hang.
    func testEmphasisAndTokenizer() throws {
        let tokenizer = try CLIPTokenizer(folder: Self.fixtures + "/models/tokenizer/small")
        let target = FuzzTarget(
            name: "emphasis",
            extraSeeds: ["a (red:1.2) fox, [snow] BREAK \\(x\\) ((deep))", "<lora:x:0.5> (a:-1) [[b]]", "é 👟🏽‍♀️ \u{7}"]
                .map { Array($0.utf8) },
            dictionary: ["(", ")", "[", "]", ":", ":1.3", "\\", " BREAK ", "BREAK", ",", "<|endoftext|>", "<|startoftext|>",
                         "'s", "\u{301}", "\u{1F45F}", "\u{200D}", "\u{85}", "\u{0}", "((((", "))))"].map { Array($0.utf8) },
            maximumLength: 4096,
            slowSeconds: 0.5
        ) { bytes in
            let text = String(decoding: bytes, as: UTF8.self)
            _ = tokenizer.tokenize(text)
            _ = try PromptWeighting.chunks(text, tokenizer: tokenizer)
        }
        _ = fuzz(target)
    }
}

/// Writes `bytes` to `path` with one open and write, which the harnesses do per input.
func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard descriptor >= 0 else { throw CocoaError(.fileWriteUnknown) }
    defer { close(descriptor) }
    let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    guard written == bytes.count else { throw CocoaError(.fileWriteUnknown) }
}

/// Mutations that know PNG's chunk layout: length (4, big-endian), type (4), data, CRC-32 of type and data (4).
enum PNGMutations {
    /// (offset of the length field, data length) of each chunk that fits in the file.
    static func chunks(_ bytes: [UInt8]) -> [(offset: Int, length: Int)] {
        var result: [(Int, Int)] = []
        var offset = 8
        while offset + 12 <= bytes.count {
            let length = Int(bytes[offset]) << 24 | Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            guard offset + 12 + length <= bytes.count else { break }
            result.append((offset, length))
            offset += 12 + length
        }
        return result
    }

    static func corruptLength(_ bytes: inout [UInt8], _ random: inout FuzzRandom) {
        guard let (offset, length) = chunks(bytes).randomElement(using: &random) else { return }
        let value = random.pick([0, 1, UInt32(length) &+ 1, UInt32(length) &- 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 1 << 24])
        for k in 0..<4 { bytes[offset + k] = UInt8(truncatingIfNeeded: value >> (24 - 8 * UInt32(k))) }
    }

    static func duplicateChunk(_ bytes: inout [UInt8], _ random: inout FuzzRandom) {
        let all = chunks(bytes)
        guard let (offset, length) = all.randomElement(using: &random) else { return }
        let copy = Array(bytes[offset..<offset + 12 + length])
        let at = random.pick(all.map(\.offset) + [all.last!.offset + 12 + all.last!.length])
        for _ in 0..<(random.chance(0.1) ? 64 : 1) { bytes.insert(contentsOf: copy, at: at) }
    }

    static func dropChunk(_ bytes: inout [UInt8], _ random: inout FuzzRandom) {
        guard let (offset, length) = chunks(bytes).randomElement(using: &random) else { return }
        bytes.removeSubrange(offset..<offset + 12 + length)
    }

    /// A tEXt, zTXt or iTXt chunk with a mutated key or value, compressed ones as zlib streams of stored blocks (no
    /// compressor needed), placed before any chunk.
    static func insertText(_ bytes: inout [UInt8], _ random: inout FuzzRandom) {
        guard let (offset, _) = chunks(bytes).randomElement(using: &random) else { return }
        let keys = ["kiri.recipe", "parameters", "", String(repeating: "k", count: 80), "a\u{7f}b", " lead", "kiri.args"]
        let key = Array(random.pick(keys).utf8)
        var value = (0..<random.pick([0, 1, 16, 300, 70_000])).map { _ in UInt8(truncatingIfNeeded: random.next() % 96 + 32) }
        if random.chance(0.2) { value.append(random.pick([0, 0xff, 0xc3, 0x80])) }
        let kind: [UInt8], data: [UInt8]
        switch random.below(3) {
        case 0: (kind, data) = (Array("tEXt".utf8), key + [0] + value)
        case 1: (kind, data) = (Array("zTXt".utf8), key + [0, random.pick([0, 1])] + storedZlib(value, random: &random))
        default:
            let compressed = random.chance(0.5)
            (kind, data) = (Array("iTXt".utf8), key + [0, compressed ? 1 : 0, 0] + Array("en".utf8) + [0, 0]
                            + (compressed ? storedZlib(value, random: &random) : value))
        }
        bytes.insert(contentsOf: bigEndian(UInt32(data.count)) + kind + data + bigEndian(crc32(kind + data)), at: offset)
    }

    /// IHDR's width, height, bit depth or colour type set to an edge value.
    static func corruptHeader(_ bytes: inout [UInt8], _ random: inout FuzzRandom) {
        guard bytes.count >= 29 else { return }
        switch random.below(3) {
        case 0: bytes.replaceSubrange(16..<20, with: bigEndian(random.pick([0, 1, 65536, 65537, 0x7fff_ffff, 0xffff_ffff])))
        case 1: bytes.replaceSubrange(20..<24, with: bigEndian(random.pick([0, 1, 65536, 65537, 0x7fff_ffff, 0xffff_ffff])))
        default: bytes[24 + random.below(5)] = random.pick([0, 1, 2, 3, 4, 6, 7, 8, 16, 255])
        }
    }

    static func fixCRCs(_ bytes: inout [UInt8]) {
        for (offset, length) in chunks(bytes) {
            bytes.replaceSubrange(offset + 8 + length..<offset + 12 + length, with: bigEndian(crc32(Array(bytes[offset + 4..<offset + 8 + length]))))
        }
    }

    /// A zlib stream (RFC 1950) of stored deflate blocks (RFC 1951 3.2.4), sometimes cut short or with a wrong
    /// Adler-32.
    static func storedZlib(_ data: [UInt8], random: inout FuzzRandom) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]
        var start = 0
        repeat {
            let end = min(data.count, start + 65535)
            let length = UInt16(end - start)
            out += [end == data.count ? 1 : 0, UInt8(length & 0xff), UInt8(length >> 8), UInt8(~length & 0xff), UInt8(~length >> 8)]
            out += data[start..<end]
            start = end
        } while start < data.count
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in data { a = (a + UInt32(byte)) % 65521; b = (b + a) % 65521 }
        out += bigEndian(random.chance(0.95) ? b << 16 | a : 0)
        if random.chance(0.05) { out.removeLast(random.below(out.count)) }
        return out
    }

    static func bigEndian(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * UInt32($0))) } }

    static let crcTable: [UInt32] = (0..<256).map { n in
        (0..<8).reduce(UInt32(n)) { c, _ in c & 1 != 0 ? 0xedb8_8320 ^ (c >> 1) : c >> 1 }
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        ~bytes.reduce(UInt32.max) { crcTable[Int(($0 ^ UInt32($1)) & 0xff)] ^ ($0 >> 8) }
    }
}

extension Array {
    fileprivate func randomElement(using random: inout FuzzRandom) -> Element? { isEmpty ? nil : self[random.below(count)] }

}
