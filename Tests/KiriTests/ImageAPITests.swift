import Foundation
import KiriImage
import XCTest
import Kiri
@testable import KiriLua

/// `kiri.image.load` / `kiri.image.save` through the sandbox: round trips, text chunks, the run's provenance
/// text, the file rules (reads from read roots, writes under -o only), the memory cap, and lauxlib-style errors.
final class ImageAPITests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/images").path

    var scratch: String!
    var output: String { scratch + "/out" }

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-image-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    /// Runs `source` with the fixtures and the scratch folder readable and `output` as -o; `OUT` and `FIXTURES`
    /// are Lua globals naming those folders. Returns what it printed.
    func run(_ source: String, imageText: [(key: String, value: String)] = [], memory: Int = 256 << 20) throws -> String {
        var printed = ""
        let files = FileAccess(readRoots: [bundledPlugins, Self.fixtures, scratch], moduleRoots: [bundledPlugins],
                               outputDirectory: output)
        let runtime = try LuaRuntime.engine(limits: SandboxLimits(timeout: 20, memory: memory), files: files,
                                     plugins: PluginCatalog(folders: [.init(path: bundledPlugins, isBundled: true)]),
                                     imageText: imageText, output: { printed += $0 })
        defer { runtime.close() }
        let prologue = "local OUT, FIXTURES = \(quoted(output)), \(quoted(Self.fixtures))\n"
        try runtime.run(source: prologue + source, name: "test.lua")
        return printed
    }

    /// The first line of the error `source` raises, or a test failure if it runs to the end.
    func failure(_ source: String, memory: Int = 256 << 20, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            _ = try run(source, memory: memory)
            XCTFail("no error", file: file, line: line)
            return ""
        } catch {
            return String("\(error)".split(separator: "\n").first ?? "")
        }
    }

    func quoted(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    // MARK: - Round trips

    func testSaveThenLoadGivesTheQuantisedImageBack() throws {
        let printed = try run("""
            for _, shape in ipairs({{1, 4, 3}, {2, 5, 2}, {3, 6, 7}, {4, 2, 9}, {1, 3, 8, 5}}) do
                local x = kiri.rand(shape, 7) * 1.2 - 0.1             -- some values outside [0, 1]
                local written = kiri.image.save("sub/img.png", x)   -- img.png, then img-2.png, ...: never overwritten
                local y, text = kiri.image.load(OUT .. "/" .. written)
                local expected = (x * 255 + 0.5):clamp(0, 255):floor() / 255
                if #shape == 4 then expected = expected:squeeze(1) end
                local same = #y:shape() == 3 and y:shape()[1] == expected:shape()[1]
                    and y:shape()[2] == expected:shape()[2] and y:shape()[3] == expected:shape()[3]
                print(table.concat(shape, "x"), same, same and (y - expected):abs():max() or -1, next(text))
            end
            """)
        print(printed, terminator: "")
        let lines = printed.split(separator: "\n")
        XCTAssertEqual(lines.count, 5)
        for line in lines {
            let fields = line.split(separator: "\t")
            XCTAssertEqual(fields[1], "true", String(line))
            XCTAssertLessThanOrEqual(Double(fields[2]) ?? 1, 1e-7, String(line))
            XCTAssertEqual(fields[3], "nil", "no text chunks: \(line)")
        }
    }

    func testTextChunksComeBackAsATable() throws {
        let printed = try run("""
            local image, text = kiri.image.load(FIXTURES .. "/text.png")
            print(image:shape()[1], image:shape()[2], image:shape()[3], math.floor(image[1][2][2] * 255 + 0.5))
            for _, key in ipairs({"Title", "Größe", "Description", "Author"}) do print(key, text[key]) end
            print(#text.Comment, #text.Software)
            kiri.image.save("t.png", image, {["Größe"] = "groß", snow = "ＴＥＳＴ 雪", long = ("é"):rep(6000)})
            local _, back = kiri.image.load(OUT .. "/t.png")
            print(back["Größe"], back.snow, back.long == ("é"):rep(6000))
            """)
        XCTAssertEqual(printed, """
            1\t2\t2\t4
            Title\tcafé au lait
            Größe\t2x2
            Description\tＴＥＳＴ 雪
            Author\tafter the pixels
            340\t170
            groß\tＴＥＳＴ 雪\ttrue

            """)
    }

    func testTheRunsImageTextFollowsTheScriptsAndLosesToIt() throws {
        let provenance = [(key: "recipe", value: "txt2img.lua"), (key: "title", value: "engine"),
                          (key: "source", value: "print('雪')")]
        _ = try run("""
            kiri.image.save("p.png", kiri.zeros(3, 2, 2), {title = "mine", a = "first"})
            kiri.image.save("q.png", kiri.zeros(1, 1, 1))
            """, imageText: provenance)
        XCTAssertEqual(try PNGImage.read(path: output + "/p.png").text.map { [$0.key, $0.value] },
                       [["a", "first"], ["title", "mine"], ["recipe", "txt2img.lua"], ["source", "print('雪')"]])
        XCTAssertEqual(try PNGImage.read(path: output + "/q.png").text.map { [$0.key, $0.value] },
                       provenance.map { [$0.key, $0.value] })
    }

    // MARK: - Files

    func testSavingOutsideTheOutputFolderIsRefused() throws {
        let image = "kiri.zeros(1, 2, 2)"
        XCTAssertTrue(failure("kiri.image.save('../x.png', \(image))").contains(
            "cannot write '../x.png': give a relative path inside the output folder, without '..'"))
        XCTAssertTrue(failure("kiri.image.save(\(quoted(scratch + "/x.png")), \(image))").contains("give a relative path"))
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: scratch + "/elsewhere", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: output + "/link", withDestinationPath: scratch + "/elsewhere")
        XCTAssertTrue(failure("kiri.image.save('link/x.png', \(image))").contains("cannot write 'link/x.png': it leads out of the output folder"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch + "/elsewhere"), [])

        // A symlink as the file itself is never written through: it is kept, and the image takes the next free name.
        try Data("victim".utf8).write(to: URL(fileURLWithPath: scratch + "/victim.txt"))
        try FileManager.default.createSymbolicLink(atPath: output + "/evil.png", withDestinationPath: scratch + "/victim.txt")
        XCTAssertEqual(try run("print(kiri.image.save('evil.png', \(image)))"), "evil-2.png\n")
        XCTAssertEqual(try String(contentsOfFile: scratch + "/victim.txt", encoding: .utf8), "victim")
        XCTAssertEqual(try PNGImage.read(path: output + "/evil-2.png").pixels, [0, 0, 0, 0])
    }

    func testLoadingOutsideTheReadRootsIsRefused() throws {
        XCTAssertTrue(failure("kiri.image.load('/etc/passwd')").contains(
            "cannot read '/etc/passwd': outside the folders this run may read"))
        XCTAssertTrue(failure("kiri.image.load(FIXTURES .. '/../../Package.swift')").contains("outside the folders this run may read"))
        XCTAssertTrue(failure("kiri.image.load(FIXTURES .. '/missing.png')").contains("/missing.png': no such file"))
    }

    func testBrokenFilesAndTheMemoryCapGiveMessagesNamingThem() throws {
        let notPNG = failure("kiri.image.load(FIXTURES .. '/not_png.png')")
        XCTAssertTrue(notPNG.hasSuffix("\(Self.fixtures)/not_png.png': not a PNG file"), notPNG)
        XCTAssertTrue(failure("kiri.image.load(FIXTURES .. '/truncated.png')").contains("truncated.png': truncated or corrupt"))
        XCTAssertTrue(failure("kiri.image.load(FIXTURES .. '/huge_header.png')").contains("100000x100000 exceeds the 65536-pixel side limit"))
        let bomb = failure("kiri.image.load(FIXTURES .. '/too_many_bytes.png')")
        XCTAssertTrue(bomb.contains("too_many_bytes.png': its 14400000000 channel values take 67 GiB (as bytes, then float32), "
            + "but the run has "), bomb)
        XCTAssertTrue(bomb.hasSuffix("left of its 256 MiB memory cap (--memory)"), bomb)

        // 1000x1000 RGB fits a 64 MiB cap (15 MB), but not a 12 MiB one.
        let big = try PNGImage(width: 1000, height: 1000, channels: 3, pixels: [UInt8](repeating: 9, count: 3_000_000))
        try big.save(to: scratch + "/big.png")
        let load = "local x = kiri.image.load(\(quoted(scratch + "/big.png"))) print(x:shape()[1], math.floor(x:max() * 255 + 0.5))"
        XCTAssertEqual(try run(load, memory: 64 << 20), "3\t9\n")
        XCTAssertTrue(failure(load, memory: 12 << 20).contains("its 3000000 channel values take 14 MiB"))
    }

    // MARK: - Arguments

    func testBadArgumentsReadLikeLauxlib() throws {
        let image = "kiri.zeros(3, 2, 2)"
        let cases: [(String, String)] = [
            ("kiri.image.save()", "bad argument #1 to 'save' (string expected, got no value)"),
            ("kiri.image.save('x.png')", "bad argument #2 to 'save' (Tensor expected, got no value)"),
            ("kiri.image.save('x.png', 5)", "bad argument #2 to 'save' (Tensor expected, got number)"),
            ("kiri.image.save('x.png', kiri.zeros(2, 3, 4, 4))",
             "bad argument #2 to 'save' (expected an image of shape [C, H, W] or [1, C, H, W] with C from 1 to 4 and H, W at least 1, got [2, 3, 4, 4])"),
            ("kiri.image.save('x.png', kiri.zeros(5, 2, 2))", "got [5, 2, 2])"),
            ("kiri.image.save('x.png', \(image), 5)", "bad argument #3 to 'save' (table of strings expected, got number)"),
            ("kiri.image.save('x.png', \(image), {x = 1})", "bad argument #3 to 'save' (table of strings expected, key 'x' has a number)"),
            ("kiri.image.save('x.png', \(image), {'a'})", "bad argument #3 to 'save' (table of strings expected, key 1 is a number)"),
            ("kiri.image.save('x.png', \(image), {[true] = 'a'})", "bad argument #3 to 'save' (table of strings expected, a key is a boolean)"),
            ("kiri.image.save('x.png', \(image), {[' bad'] = 'v'})", "bad argument #3 to 'save' (text key ' bad' is not a PNG keyword"),
            ("kiri.image.save('x.png', \(image), {k = 'a\\0b'})", "bad argument #3 to 'save' (the value of text key 'k' contains a NUL byte)"),
            ("kiri.image.load()", "bad argument #1 to 'load' (string expected, got no value)"),
            ("kiri.image.load({})", "bad argument #1 to 'load' (string expected, got table)"),
            ("local kept do local t <close> = kiri.zeros(1, 2, 2) kept = t end kiri.image.save('x.png', kept)", "bad argument #2 to 'save' (Tensor expected, got closed Tensor)"),
        ]
        for (source, message) in cases {
            let error = failure(source)
            XCTAssertTrue(error.contains(message), "\(source)\n  gave: \(error)\n  want: \(message)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: output + "/x.png"), "no failed save left a file")
    }
}
