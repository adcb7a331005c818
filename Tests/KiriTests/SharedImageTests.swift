import Foundation
import Kiri
import KiriImage
import XCTest

/// Shared PNGs and recipes as an attacker makes them (security-cases.md, 35 and 39): `kiri run --from` grants
/// nothing from the PNG and says what it runs; recipe names carry no host folder; terminals get no raw control
/// sequences from a script.
final class SharedImageTests: CLITestCase {
    /// A 2x2 grey PNG carrying `text`, as a hostile user would share it.
    func shareImage(_ name: String, recipe: String, source: String, arguments: [String]) throws {
        let encoded = String(decoding: try JSONEncoder().encode(arguments), as: UTF8.self)
        let image = try PNGImage(width: 2, height: 2, channels: 1, pixels: [0, 64, 128, 255], text: [
            .init(key: RecipeProvenance.recipeKey, value: recipe), .init(key: RecipeProvenance.argumentsKey, value: encoded),
            .init(key: RecipeProvenance.sourceKey, value: source),
        ])
        try image.save(to: folder.appendingPathComponent(name).path)
    }

    /// Findings 1 and 2: the recorded recipe path (absolute, or one letter) and paths among the recorded arguments,
    /// folders and files alike, grant neither reads nor modules; only --allow does.
    func testRunFromAPNGGrantsNothingFromIt() throws {
        _ = try write("secret.txt", "the victim's secret")
        _ = try write("stolen.lua", "return 'a module from the victim's folder'")
        let source = """
            for _, path in ipairs({"/etc/passwd", "/proc/self/environ", "secret.txt", "./secret.txt", "/etc"}) do
                print(path, (pcall(kiri.read_text, path)))
            end
            print("require", (pcall(require, "stolen")))
            """
        let expected = ["/etc/passwd\tfalse", "/proc/self/environ\tfalse", "secret.txt\tfalse", "./secret.txt\tfalse",
                        "/etc\tfalse", "require\tfalse"].joined(separator: "\n") + "\n"
        for recipe in ["/x.lua", "a", folder.path + "/x.lua", "./x.lua"] {
            try shareImage("evil.png", recipe: recipe, source: source,
                           arguments: ["/etc", "/etc/passwd", "secret.txt", "init=secret.txt", folder.path, NSHomeDirectory()])
            let run = try kiri(["run", "--from", "evil.png"])
            XCTAssertEqual(run.status, 0, run.stderr)
            XCTAssertEqual(run.stdout, expected, recipe)
        }
        let allowed = try kiri(["run", "--from", "evil.png", "--allow", "secret.txt"])
        XCTAssertTrue(allowed.stdout.contains("secret.txt\ttrue"), allowed.stdout)
        XCTAssertTrue(allowed.stdout.contains("/etc/passwd\tfalse"), allowed.stdout)
        // --allow grants regular files only, never a folder.
        let folderAllowed = try kiri(["run", "--from", "evil.png", "--allow", "/etc", "--allow", "."])
        XCTAssertEqual(folderAllowed.stdout, expected)
    }

    /// Finding 2: before running, Kiri names the recipe, where its source comes from and the source's SHA-256, and
    /// says when the embedded source is not the bundled recipe of that name.
    func testRunFromSaysWhatItRuns() throws {
        let forged = "print('not the bundled txt2img')"
        try shareImage("forged.png", recipe: "/home/someone/kiri/Scripts/txt2img.lua", source: forged, arguments: ["seed=1"])
        let run = try kiri(["run", "--from", "forged.png"])
        XCTAssertEqual(run.stdout, "not the bundled txt2img\n")
        let bundled = try String(contentsOfFile: GenerationCLITests.scripts + "/txt2img.lua", encoding: .utf8)
        XCTAssertTrue(run.stderr.hasPrefix("kiri: running txt2img.lua from the source embedded in forged.png (sha256 "
            + "\(try sha256sum(forged))); it DIFFERS from the bundled txt2img.lua (sha256 \(try sha256sum(bundled)))\n"
            + "  with the arguments stored there: seed=1\n"), run.stderr)

        try shareImage("own.png", recipe: "mine.lua", source: "print('mine')", arguments: [])
        let own = try kiri(["run", "--from", "own.png"])
        XCTAssertEqual(own.stderr, "kiri: running mine.lua from the source embedded in own.png (sha256 "
            + "\(try sha256sum("print('mine')"))); no bundled recipe has its name\n")

        XCTAssertEqual(try kiri(["sample", "--steps", "2", "-o", ".", "--name", "real.png"]).status, 0)
        let real = try kiri(["run", "--from", "real.png", "-o", "again"])
        XCTAssertEqual(real.status, 0, real.stderr)
        XCTAssertTrue(real.stderr.hasPrefix("kiri: running the bundled recipe txt2img.lua (sha256 \(try sha256sum(bundled)), "
            + "the source embedded in real.png)"), real.stderr)
    }

    /// Finding 3: a one-character recipe path, as a file in the working folder or recorded in a PNG.
    func testOneCharacterRecipePathsRun() throws {
        _ = try write("y", "print('ran', arg[0])")
        let run = try kiri(["run", "y"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertEqual(run.stdout, "ran\ty\n")
        try shareImage("a.png", recipe: "a", source: "print('ran', arg[0])", arguments: [])
        let from = try kiri(["run", "--from", "a.png"])
        XCTAssertEqual(from.status, 0, from.stderr)
        XCTAssertEqual(from.stdout, "ran\ta\n")
        XCTAssertEqual(try kiri(["sample", "--steps", "2", "-o", "s"]).status, 0)
    }

    /// Finding 13: scripts and the PNGs they write see a recipe by its file name and files by their path under
    /// the output folder; an absolute host path reaches neither.
    func testNoHostPathReachesAScriptOrAPNG() throws {
        let recipe = try write("deep/inside/recipe.lua", """
            print(arg[0])
            print(kiri.image.save("x.png", kiri.zeros(1, 2, 2)))
            print(select(2, pcall(require, "missing")))
            print(select(2, pcall(function() return kiri.samplers.euler(nil) end)))
            """)
        let absoluteOut = folder.appendingPathComponent("absolute-out").path
        let run = try kiri(["run", "-o", absoluteOut, folder.appendingPathComponent(recipe).path])
        XCTAssertFalse(run.stdout.contains(folder.path), run.stdout)
        XCTAssertFalse(run.stderr.contains(folder.path), run.stderr)
        XCTAssertTrue(run.stdout.hasPrefix("recipe.lua\nx.png\n"), run.stdout)
        let saved = try PNGImage.readText(path: absoluteOut + "/x.png", byteLimit: 1 << 20)
        XCTAssertEqual(saved.first { $0.key == RecipeProvenance.recipeKey }?.value, "recipe.lua")
        XCTAssertFalse(saved.contains { $0.value.contains(folder.path) || $0.value.contains("/work") })
    }

    /// Finding 12: printed text and error messages reach a terminal with their control characters escaped (OSC 52
    /// would write the clipboard); piped output keeps the script's bytes.
    func testControlSequencesAreEscapedOnATerminal() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/script") else { throw XCTSkip("no script(1) for a terminal") }
        let recipe = try write("osc.lua", #"print("\27]52;c;cHduZWQ=\7 copied") error("\27[2J\u{9B} cleared")"#)
        let terminal = try run("/usr/bin/script", ["-qec", "\(Self.binary.path) run \(recipe)", "/dev/null"])
        XCTAssertTrue(terminal.contains(#"\x1b]52;c;cHduZWQ=\x07 copied"#), terminal)
        XCTAssertTrue(terminal.contains(#"\x1b[2J\u{9b} cleared"#), terminal)
        XCTAssertFalse(terminal.unicodeScalars.contains { $0.value == 0x1B || $0.value == 0x07 || $0.value == 0x9B }, terminal)
        let piped = try kiri(["run", recipe])
        XCTAssertTrue(piped.stdout.hasPrefix("\u{1b}]52;c;cHduZWQ=\u{07} copied"), piped.stdout)
    }
}
