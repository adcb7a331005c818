import Foundation
import Kiri
import KiriImage
import KiriTensor
import XCTest

/// The default model end to end, as a user runs it: `kiri sample`, the recipes in Scripts/, the metadata the
/// PNGs carry, and `kiri run --from`.
final class GenerationCLITests: CLITestCase {
    static let scripts = BundledFiles.scripts ?? "Scripts"

    func png(_ name: String) throws -> PNGImage {
        try PNGImage.read(path: folder.appendingPathComponent(name).path)
    }

    func text(_ image: PNGImage, _ key: String) -> String? {
        image.text.first { $0.key == key }?.value
    }

    func testSampleWritesAPNGWithItsParametersAndRunFromReproducesItBitForBit() throws {
        let made = try kiri(["sample", "--prompt", "sneaker", "--negative", "", "--steps", "20", "--cfg", "4",
                             "--sampler", "dpmpp_2m", "--schedule", "karras", "--seed", "7", "-o", ".", "--name", "sneaker.png"])
        XCTAssertEqual(made.status, 0, made.stderr)
        XCTAssertEqual(made.stdout, "wrote sneaker.png\n")
        XCTAssertFalse(made.stderr.contains("step "), "no progress bar when stderr is not a terminal: \(made.stderr)")
        let image = try png("sneaker.png")
        XCTAssertEqual([image.width, image.height, image.channels], [28, 28, 1])
        XCTAssertEqual(text(image, "parameters"),
                       "sneaker\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 4, Seed: 7, Size: 28x28, Model: default, "
                       + "Version: kiri \(KiriVersion.string)")
        XCTAssertEqual(text(image, RecipeProvenance.recipeKey), "txt2img.lua", "the file name, not a host path")
        XCTAssertEqual(text(image, RecipeProvenance.sourceKey), try String(contentsOfFile: Self.scripts + "/txt2img.lua", encoding: .utf8))

        let again = try kiri(["run", "--from", "sneaker.png", "-o", "again"])
        XCTAssertEqual(again.status, 0, again.stderr)
        let original = try Data(contentsOf: folder.appendingPathComponent("sneaker.png"))
        XCTAssertEqual(try Data(contentsOf: folder.appendingPathComponent("again/sneaker.png")), original)

        // A different seed gives a different image, so the comparison above can fail.
        XCTAssertEqual(try kiri(["sample", "--prompt", "sneaker", "--seed", "8", "-o", ".", "--name", "other.png"]).status, 0)
        XCTAssertNotEqual(try Data(contentsOf: folder.appendingPathComponent("other.png")), original)
    }

    func testSampleWithGuidancePatchesAndAPromptScheduleRecordsAndReproducesThem() throws {
        let made = try kiri(["sample", "--prompt", "[coat:sandal:0.5]", "--guidance", "rescale_cfg,apg", "--steps", "8",
                             "--cfg", "6", "--seed", "2", "-o", ".", "--name", "styled.png"])
        XCTAssertEqual(made.status, 0, made.stderr)
        XCTAssertEqual(text(try png("styled.png"), "parameters"), "[coat:sandal:0.5]\nSteps: 8, Sampler: DPM++ 2M, "
            + "Schedule type: Karras, CFG scale: 6, Guidance: \"rescale_cfg,apg\", Seed: 2, Size: 28x28, Model: default, "
            + "Version: kiri \(KiriVersion.string)")
        XCTAssertEqual(try kiri(["run", "--from", "styled.png", "-o", "again"]).status, 0)
        XCTAssertEqual(try Data(contentsOf: folder.appendingPathComponent("again/styled.png")),
                       try Data(contentsOf: folder.appendingPathComponent("styled.png")))
        XCTAssertEqual(try kiri(["sample", "--prompt", "[coat:sandal:0.5]", "--steps", "8", "--cfg", "6", "--seed", "2",
                                 "-o", ".", "--name", "plain.png"]).status, 0)
        XCTAssertNotEqual(try png("plain.png").pixels, try png("styled.png").pixels, "the patches change the image")

        let bad = try kiri(["sample", "--prompt", "coat AND [sandal", "-o", ".", "--name", "bad.png"])
        XCTAssertEqual(bad.status, 1)
        XCTAssertEqual(bad.stderr, "kiri: prompt: column 17: '[' at column 10 is never closed\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("bad.png").path))
    }

    func testSampleWithoutArgumentsSaysWhatItDid() throws {
        let result = try kiri(["sample"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stderr.contains("no --prompt given, so drawing a sneaker"), result.stderr)
        XCTAssertTrue(result.stdout.contains("wrote out/00000-0.png"), result.stdout)
        XCTAssertEqual(try png("out/00000-0.png").width, 28)
        // Issue 14, 7 and 12: A1111's numbering goes on, nothing is overwritten, and -q silences the note.
        let again = try kiri(["sample", "-q"])
        XCTAssertEqual(again.stderr, "")
        XCTAssertTrue(again.stdout.contains("wrote out/00001-0.png"), again.stdout)
        XCTAssertEqual(try png("out/00000-0.png").pixels, try png("out/00001-0.png").pixels)
    }

    /// Issue 14, 8: a PNG from AUTOMATIC1111 (its `parameters` text only) runs the bundled txt2img.lua with the settings
    /// Kiri has, says which it cannot honour, and makes what the same settings typed as txt2img.lua arguments make;
    /// key=value arguments after --from IMAGE change them.
    func testRunFromAnA1111PNG() throws {
        let parameters = "coat\nNegative prompt: bag\nSteps: 3, Sampler: Euler a, Schedule type: Karras, CFG scale: 5, "
            + "Seed: 11, Size: 28x28, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Hires upscale: 2, Version: v1.10.1"
        try PNGImage(tensor: try Tensor(shape: [1, 28, 28]).fill(0.5), text: [PNGImage.TextChunk(key: "parameters", value: parameters)])
            .save(to: folder.appendingPathComponent("a1111.png").path)
        let run = try kiri(["run", "--from", "a1111.png", "out=from.png"])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stderr.contains("a1111.png has A1111's parameters and no Kiri recipe"), run.stderr)
        XCTAssertTrue(run.stdout.contains("A1111 settings Kiri does not honour: Model hash: 6ce0161689; "
            + "Model: v1-5-pruned-emaonly; Hires upscale: 2"), run.stdout)
        let typed = try kiri(["run", GenerationCLITests.scripts + "/txt2img.lua", "prompt=coat", "negative=bag", "steps=3",
                              "sampler=euler_ancestral", "schedule=karras", "cfg=5", "seed=11", "out=typed.png"])
        XCTAssertEqual(typed.status, 0, typed.stderr)
        let from = try png("out/from.png")
        XCTAssertEqual(from.pixels, try png("out/typed.png").pixels)
        XCTAssertTrue(text(from, "parameters")?.hasPrefix("coat\nNegative prompt: bag\nSteps: 3, Sampler: Euler a, "
            + "Schedule type: Karras, CFG scale: 5, Seed: 11,") ?? false, text(from, "parameters") ?? "")

        for (setting, message) in [("Steps: 0", "A1111 parameters: steps must be at least 1, got 0"),
                                   ("CFG scale: -5", "A1111 parameters: cfg must be at least 0, got -5.0")] {
            let bad = parameters.replacingOccurrences(of: setting.hasPrefix("Steps") ? "Steps: 3" : "CFG scale: 5", with: setting)
            try PNGImage(tensor: try Tensor(shape: [1, 28, 28]).fill(0.5), text: [PNGImage.TextChunk(key: "parameters", value: bad)])
                .save(to: folder.appendingPathComponent("bad.png").path)
            let refused = try kiri(["run", "--from", "bad.png"])
            XCTAssertEqual(refused.status, 1)
            XCTAssertTrue(refused.stderr.hasSuffix("kiri: \(message)\n"), refused.stderr)
        }
        let changed = try kiri(["run", "--from", "a1111.png", "steps=2", "out=changed.png"])
        XCTAssertEqual(changed.status, 0, changed.stderr)
        XCTAssertTrue(text(try png("out/changed.png"), "parameters")?.contains("Steps: 2,") ?? false)
    }

    /// Issue 14, 6: image k of a batch has seed + k - 1, for its starting noise and its sampler's noise (ancestral
    /// Gaussian draws and SDE Brownian trees alike), so it is bit for bit the image that seed makes alone, and its
    /// PNG says so.
    func testEachImageOfABatchIsItsOwnSeed() throws {
        let txt2img = GenerationCLITests.scripts + "/txt2img.lua"
        for sampler in ["euler_ancestral", "dpmpp_2m_sde"] {
            let batch = try kiri(["run", txt2img, "prompt=coat", "steps=4", "sampler=\(sampler)", "seed=7", "batch=3",
                                  "out=\(sampler).png"])
            XCTAssertEqual(batch.status, 0, batch.stderr)
            let alone = try kiri(["run", txt2img, "prompt=coat", "steps=4", "sampler=\(sampler)", "seed=8",
                                  "out=\(sampler)-alone.png"])
            XCTAssertEqual(alone.status, 0, alone.stderr)
            let second = try png("out/\(sampler)-2.png"), single = try png("out/\(sampler)-alone.png")
            XCTAssertEqual(second.pixels, single.pixels, sampler)
            XCTAssertNotEqual(try png("out/\(sampler)-1.png").pixels, single.pixels, "the seeds differ, so this can fail")
            XCTAssertTrue(text(second, "parameters")?.contains("Seed: 8,") ?? false, text(second, "parameters") ?? "")
            // The image's own arguments make it alone again.
            let again = try kiri(["run", "--from", "out/\(sampler)-2.png", "-o", "again"])
            XCTAssertEqual(again.status, 0, again.stderr)
            XCTAssertEqual(try png("again/\(sampler).png").pixels, single.pixels)
        }
    }

    /// Issue 14, 6: as in A1111, seed -1 picks a seed at random, says which, and names and records the image by it.
    func testSeedMinusOnePicksOneAndSaysWhich() throws {
        let result = try kiri(["sample", "--seed", "-1", "--steps", "2"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let said = result.stderr.components(separatedBy: "--seed -1: using seed ").dropFirst().first?
            .prefix { $0.isNumber }
        let seed = try XCTUnwrap(said.flatMap { Int($0) }, result.stderr)
        XCTAssertTrue(text(try png("out/00000-\(seed).png"), "parameters")?.contains("Seed: \(seed),") ?? false)
        // A1111's seeds reach 2^32 - 1: the name holds all of the seed.
        XCTAssertEqual(try kiri(["sample", "--seed", "4294967295", "--steps", "2"]).status, 0)
        XCTAssertTrue(text(try png("out/00001-4294967295.png"), "parameters")?.contains("Seed: 4294967295,") ?? false)
    }

    /// Issue 14, 6: A1111's variation seed. Strength 0 is the seed's image, strength 1 the subseed's (slerp's ends are
    /// exact), and in between something else; the PNG records both seeds only when one is in use.
    func testVariationSeeds() throws {
        let txt2img = GenerationCLITests.scripts + "/txt2img.lua"
        func make(_ name: String, _ arguments: [String]) throws -> PNGImage {
            let result = try kiri(["run", txt2img, "prompt=bag", "steps=3", "out=\(name).png"] + arguments)
            XCTAssertEqual(result.status, 0, result.stderr)
            return try png("out/\(name).png")
        }
        let seed = try make("seed", ["seed=5"]), subseed = try make("subseed", ["seed=9"])
        let none = try make("none", ["seed=5", "subseed=9", "subseed_strength=0"])
        let all = try make("all", ["seed=5", "subseed=9", "subseed_strength=1"])
        let half = try make("half", ["seed=5", "subseed=9", "subseed_strength=0.5"])
        XCTAssertEqual(none.pixels, seed.pixels)
        XCTAssertEqual(all.pixels, subseed.pixels)
        XCTAssertNotEqual(half.pixels, seed.pixels)
        XCTAssertNotEqual(half.pixels, subseed.pixels)
        XCTAssertFalse(text(none, "parameters")?.contains("Variation seed") ?? true)
        XCTAssertTrue(text(half, "parameters")?.contains("Seed: 5, Size: 28x28, Model: default, Variation seed: 9, "
            + "Variation seed strength: 0.5") ?? false, text(half, "parameters") ?? "")
    }

    /// Issue 14, 2: a schedule plugin that returns increasing sigmas is blamed by its file, not the recipe.
    func testABadSchedulePluginIsNamed() throws {
        _ = try write("plugins/schedules/rising.lua", "return function(opts) return kiri.tensor({1, 2, 0}) end\n")
        let result = try kiri(["run", "--plugins", "plugins", GenerationCLITests.scripts + "/txt2img.lua", "schedule=rising"])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("schedules/rising.lua: the schedule's sigmas must not increase, "
            + "got sigmas[2] = 2 after sigmas[1] = 1"), result.stderr)
    }

    /// Issue 14, 5: a PNG records each plugin that made it (origin and SHA-256), and `--from` says which user plugin
    /// it lacks and which one differs, instead of only failing with "unknown schedule".
    func testRunFromSaysWhichPluginsItNeeds() throws {
        let source = "return function(opts) return kiri.schedules.karras(opts) * 0.9 end\n"
        _ = try write("mine/schedules/gentle.lua", source)
        let made = try kiri(["run", "--plugins", "mine", GenerationCLITests.scripts + "/txt2img.lua", "schedule=gentle",
                             "steps=3", "out=gentle.png"])
        XCTAssertEqual(made.status, 0, made.stderr)
        let recorded = try JSONDecoder().decode([RecipeProvenance.Plugin].self,
                                                 from: Data((text(try png("out/gentle.png"), "kiri-plugins") ?? "").utf8))
        XCTAssertTrue(recorded.contains(RecipeProvenance.Plugin(plugin: "schedules/gentle.lua", origin: "user",
                                                                sha256: try sha256sum(source))), "\(recorded)")
        XCTAssertTrue(recorded.contains { $0.plugin == "samplers/dpmpp_2m.lua" && $0.origin == "bundled" }, "\(recorded)")

        let without = try kiri(["run", "--from", "out/gentle.png", "-o", "again"])
        XCTAssertEqual(without.status, 1)
        XCTAssertTrue(without.stderr.contains("it used the user plugin schedules/gentle.lua (sha256 \(try sha256sum(source))), "
            + "which no plugin folder here has: pass the folder that holds it with --plugins"), without.stderr)
        let with = try kiri(["run", "--from", "out/gentle.png", "--plugins", "mine", "-o", "again"])
        XCTAssertEqual(with.status, 0, with.stderr)
        XCTAssertFalse(with.stderr.contains("gentle.lua"), with.stderr)
        XCTAssertEqual(try png("again/gentle.png").pixels, try png("out/gentle.png").pixels)
        _ = try write("mine/schedules/gentle.lua", source.replacingOccurrences(of: "0.9", with: "0.8"))
        let changed = try kiri(["run", "--from", "out/gentle.png", "--plugins", "mine", "-o", "again"])
        XCTAssertTrue(changed.stderr.contains("its user plugin schedules/gentle.lua (sha256 \(try sha256sum(source))) DIFFERS from "
            + "mine/schedules/gentle.lua"), changed.stderr)
    }

    /// Issue 14, 5: a misspelt plugin folder is an error, and a user plugin that replaces a bundled one says so.
    func testPluginFoldersAreCheckedAndOverridesAnnounced() throws {
        let misspelt = try kiri(["run", "--plugins", "plugnis", GenerationCLITests.scripts + "/txt2img.lua"])
        XCTAssertNotEqual(misspelt.status, 0)
        XCTAssertTrue(misspelt.stderr.contains("--plugins 'plugnis': no such folder"), misspelt.stderr)
        _ = try write("plugins/schedules/karras.lua", "return function(opts) return kiri.tensor({14, 1, 0}) end\n")
        let override = try kiri(["sample", "--plugins", "plugins", "--steps", "2"])
        XCTAssertEqual(override.status, 0, override.stderr)
        XCTAssertTrue(override.stderr.contains("note: the user plugin plugins/schedules/karras.lua replaces the bundled "
            + "schedules/karras.lua"), override.stderr)
        XCTAssertFalse(try kiri(["sample", "--plugins", "plugins", "--steps", "2", "-q"]).stderr.contains("note:"))
    }

    /// Issue 14, 2: an unknown class in the negative prompt says it was the negative prompt, with no traceback.
    func testInputErrorsNameTheUsersInput() throws {
        let negative = try kiri(["sample", "--prompt", "coat", "--negative", "horse"])
        XCTAssertEqual(negative.status, 1)
        XCTAssertTrue(negative.stderr.hasPrefix("kiri: negative prompt: the default model knows no 'horse'"), negative.stderr)
        XCTAssertFalse(negative.stderr.contains("traceback"), negative.stderr)
        XCTAssertFalse(negative.stderr.contains(".lua:"), negative.stderr)
        // An error that quotes a long prompt is shortened with plain searches, never a pattern the sandbox refuses.
        let long = try kiri(["sample", "--prompt", "coat", "--negative", String(repeating: "horse ", count: 8000)])
        XCTAssertTrue(long.stderr.hasPrefix("kiri: negative prompt: the default model knows no 'horse horse"), String(long.stderr.prefix(300)))

        let run = try kiri(["run", GenerationCLITests.scripts + "/txt2img.lua", "steps=0"])
        XCTAssertEqual(run.status, 1)
        XCTAssertEqual(run.stderr, "kiri: steps=0: steps must be at least 1\n")
        // Issue 14, 4: negative values reach the validation, which names the option.
        for (option, value, message) in [("--cfg", "-1", "--cfg must be a number from 0 up, got -1.0"),
                                         ("--steps", "-3", "--steps must be at least 1, got -3"),
                                         ("--steps", "0", "--steps must be at least 1, got 0")] {
            let result = try kiri(["sample", option, value])
            XCTAssertNotEqual(result.status, 0)
            XCTAssertTrue(result.stderr.contains(message), result.stderr)
        }
        XCTAssertEqual(try kiri(["run", GenerationCLITests.scripts + "/txt2img.lua", "cfg=-1"]).stderr,
                       "kiri: cfg=-1: cfg must be at least 0\n")
    }

    /// Issue 14, 3 and 7: a missing file named on the command line is "no such file"; -o is a folder for both
    /// commands, and a name Kiri cannot write is refused.
    func testMissingFilesAndOutputNames() throws {
        let missing = try kiri(["run", GenerationCLITests.scripts + "/img2img.lua", "init=nonexistent.png"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.stderr.contains("cannot read 'nonexistent.png': no such file"), missing.stderr)
        let jpeg = try kiri(["sample", "--name", "out.jpg"])
        XCTAssertNotEqual(jpeg.status, 0)
        XCTAssertTrue(jpeg.stderr.contains("Kiri writes PNG files"), jpeg.stderr)
        for output in ["sneaker.png", "out.jpg"] {
            let file = try kiri(["sample", "-o", output])
            XCTAssertNotEqual(file.status, 0)
            XCTAssertTrue(file.stderr.contains("-o names the output folder"), file.stderr)
            XCTAssertNotEqual(try kiri(["run", "-o", output, GenerationCLITests.scripts + "/txt2img.lua"]).status, 0)
            XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent(output).path))
        }
        // A batch from kiri sample is numbered on per image, each with its own seed, as A1111 names them.
        XCTAssertEqual(try kiri(["sample", "--batch", "2", "--seed", "4", "--steps", "2", "-o", "batch"]).status, 0)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent("batch").path).sorted(),
                       ["00000-4.png", "00001-5.png"])
        let recipe = try kiri(["run", GenerationCLITests.scripts + "/txt2img.lua", "out=x.jpg"])
        XCTAssertTrue(recipe.stderr.contains("Kiri writes PNG files: give a name ending in .png, got 'x.jpg'"), recipe.stderr)
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("existing"), withIntermediateDirectories: true)
        XCTAssertEqual(try kiri(["sample", "-o", "existing", "--name", "a.png", "--steps", "2"]).status, 0)
        XCTAssertEqual(try png("existing/a.png").width, 28)
    }

    func testUnknownPromptListsTheClasses() throws {
        let result = try kiri(["sample", "--prompt", "giraffe"])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("the default model knows no 'giraffe'"), result.stderr)
        XCTAssertTrue(result.stderr.contains("t-shirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot"), result.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("out").path))
    }

    func testRunFromAPNGWithoutARecipeFails() throws {
        try PNGImage(tensor: try Tensor(shape: [1, 2, 2]).fill(0.5), text: []).save(to: folder.appendingPathComponent("plain.png").path)
        let result = try kiri(["run", "--from", "plain.png"])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("'plain.png' has no 'kiri-recipe' text chunk"), result.stderr)
        let missing = try kiri(["run", "--from", "missing.png"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.stderr.contains("missing.png"), missing.stderr)
    }

    func testProgressBarOnATerminalOnly() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/script") else { throw XCTSkip("no script(1) for a terminal") }
        let command = "\(Self.binary.path) sample --prompt bag --steps 6 -o . --name bag.png --overwrite"
        let terminal = try run("/usr/bin/script", ["-qec", command, "/dev/null"])
        XCTAssertTrue(terminal.contains("step 6/6 [####################]"), terminal)
        XCTAssertTrue(terminal.contains("it/s") || terminal.contains("s/it"), terminal)
        let quiet = try run("/usr/bin/script", ["-qec", command + " --quiet", "/dev/null"])
        XCTAssertFalse(quiet.contains("step "), quiet)
    }

    func testImg2ImgKeepsTheImageAtLowStrength() throws {
        XCTAssertEqual(try kiri(["sample", "--prompt", "dress", "--seed", "3", "-o", ".", "--name", "dress.png"]).status, 0)
        func distance(_ strength: Double) throws -> Double {
            let result = try kiri(["run", Self.scripts + "/img2img.lua", "init=dress.png", "strength=\(strength)",
                                   "prompt=bag", "seed=5", "out=img2img-\(strength).png"])
            XCTAssertEqual(result.status, 0, result.stderr)
            XCTAssertEqual(result.stdout, "wrote out/img2img-\(strength).png\n")
            let a = try png("dress.png").pixels, b = try png("out/img2img-\(strength).png").pixels
            return zip(a, b).map { abs(Double($0) - Double($1)) }.reduce(0, +) / Double(a.count) / 255
        }
        let low = try distance(0.2), high = try distance(1.0)
        print(String(format: "img2img mean |change| at strength 0.2: %.3f, at 1.0: %.3f", low, high))
        XCTAssertLessThan(low, 0.08)
        XCTAssertGreaterThan(high, 2 * low)
    }

    func testInpaintKeepsTheUnmaskedPixelsExactly() throws {
        XCTAssertEqual(try kiri(["sample", "--prompt", "coat", "--seed", "4", "-o", ".", "--name", "coat.png"]).status, 0)
        // Repaint the right half.
        let mask = try Tensor(shape: [1, 28, 28])
        for y in 0..<28 { for x in 0..<28 { mask.data[y * 28 + x] = x < 14 ? 0 : 1 } }
        try PNGImage(tensor: mask, text: []).save(to: folder.appendingPathComponent("mask.png").path)
        let result = try kiri(["run", Self.scripts + "/inpaint.lua", "init=coat.png", "mask=mask.png", "prompt=bag", "seed=9"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let before = try png("coat.png").pixels, after = try png("out/inpaint.png").pixels
        var keptEqual = true, paintedChanged = 0
        for y in 0..<28 {
            for x in 0..<28 {
                let index = y * 28 + x
                if x < 14 { keptEqual = keptEqual && before[index] == after[index] } else if before[index] != after[index] { paintedChanged += 1 }
            }
        }
        XCTAssertTrue(keptEqual, "the black half of the mask must keep the image's pixels")
        XCTAssertGreaterThan(paintedChanged, 28 * 14 / 4, "the white half must be repainted")
    }

    /// Scripts/postprocess.lua: at neutral settings it writes the pixels it read; each step it is given
    /// changes them; a resize to twice the width keeps the aspect ratio.
    func testPostprocessRecipeChainsThePlugins() throws {
        XCTAssertEqual(try kiri(["sample", "--prompt", "bag", "--seed", "5", "-o", ".", "--name", "bag.png"]).status, 0)
        let neutral = try kiri(["run", Self.scripts + "/postprocess.lua", "init=bag.png", "out=same.png"])
        XCTAssertEqual(neutral.status, 0, neutral.stderr)
        let original = try png("bag.png").pixels
        XCTAssertEqual(try png("out/same.png").pixels, original)
        for (step, name) in [("sharpen=0.8", "sharp.png"), ("contrast=1.5", "contrast.png"), ("black=0.1", "levels.png")] {
            XCTAssertEqual(try kiri(["run", Self.scripts + "/postprocess.lua", "init=bag.png", step, "out=" + name]).status, 0)
            XCTAssertNotEqual(try png("out/" + name).pixels, original, step)
        }
        let resized = try kiri(["run", Self.scripts + "/postprocess.lua", "init=bag.png", "width=56", "mode=bicubic", "out=big.png"])
        XCTAssertEqual(resized.stdout, "wrote out/big.png (56x56)\n", resized.stderr)
        XCTAssertEqual([try png("out/big.png").width, try png("out/big.png").height], [56, 56])
    }

    func testGridRecipeWritesOneLabelledImage() throws {
        let result = try kiri(["run", Self.scripts + "/grid.lua", "x=sampler", "xs=euler,heun", "y=steps", "ys=4,8", "scale=1"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let image = try png("out/grid.png")
        XCTAssertGreaterThan(image.width, 2 * 28)
        XCTAssertGreaterThan(image.height, 2 * 28)
        // The first cell's parameters, and the axes as A1111's X/Y/Z plot writes them.
        XCTAssertEqual(text(image, "parameters"), "sneaker\nSteps: 4, Sampler: Euler, Schedule type: Karras, CFG scale: 4, "
            + "Seed: 0, Size: 28x28, Model: default, X Type: Sampler, X Values: \"euler,heun\", Y Type: Steps, Y Values: \"4,8\", "
            + "Version: kiri \(KiriVersion.string)")
    }

    /// ys=classes takes every class of the model the grid opened.
    func testGridOverTheModelsClasses() throws {
        let result = try kiri(["run", Self.scripts + "/grid.lua", "x=seed", "xs=1", "y=prompt", "ys=classes", "steps=1", "scale=1"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(result.stdout, "wrote out/grid.png: 1 x 10 images (seed by prompt)\n")
    }
}
