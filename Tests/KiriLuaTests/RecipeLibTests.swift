import XCTest
@testable import KiriLua

/// The Lua pieces the recipes are built from: parameters, A1111 metadata text, batched CFG and inpainting.
final class RecipeLibTests: XCTestCase {
    func testParamsTakeTheTypesOfTheirDefaults() {
        let printed = runLua("""
            local recipe = require "lib.recipe"
            local p = recipe.params({"steps=12", "cfg=7.5", "prompt=ankle boot", "quiet=true", "negative="},
                {steps = 20, cfg = 4.0, prompt = "sneaker", negative = "bag", quiet = false, seed = 3})
            print(math.type(p.steps), p.steps, math.type(p.cfg), p.cfg, p.prompt, p.quiet, "[" .. p.negative .. "]", p.seed)
            local list = recipe.values("steps", "5, 10,20", 1)
            print(#list, list[1], list[2], list[3], math.type(list[3]))
            """)
        XCTAssertEqual(printed, "integer\t12\tfloat\t7.5\tankle boot\ttrue\t[]\t3\n3\t5\t10\t20\tinteger\n")
    }

    func testParamErrorsNameTheKeyAndListTheKeys() {
        // Input errors (issue 14, 2 and 4): the argument as the user wrote it, no position in the recipe, no traceback.
        let defaults = "{steps = 20, cfg = 4.0, prompt = 'sneaker', batch = 1, strength = 0.75, width = 0}"
        let cases: [(String, String)] = [
            ("{'stpes=3'}", "argument 1: unknown key 'stpes'; keys: batch, cfg, prompt, steps, strength, width"),
            ("{'steps=2.5'}", "steps=2.5: steps must be an integer"),
            ("{'cfg=high'}", "cfg=high: cfg must be a number"),
            ("{'sneaker'}", "argument 1 ('sneaker'): key=value expected; keys: batch, cfg, prompt, steps, strength, width"),
            ("{'--steps'}", "argument 1 ('--steps'): key=value expected (kiri's own options go before the recipe's FILE); "
                + "keys: batch, cfg, prompt, steps, strength, width"),
            ("{'steps=0'}", "steps=0: steps must be at least 1"),
            ("{'steps=-3'}", "steps=-3: steps must be at least 1"),
            ("{'cfg=-1'}", "cfg=-1: cfg must be at least 0"),
            ("{'batch=1000'}", "batch=1000: batch must be at most 64"),
            ("{'strength=0'}", "strength=0: strength must be more than 0"),
            ("{'strength=1.5'}", "strength=1.5: strength must be at most 1"),
            ("{'width=100'}", "width=100: width must be a multiple of 8"),
        ]
        for (arguments, expected) in cases {
            let failure = luaError("require('lib.recipe').params(\(arguments), \(defaults))")
            XCTAssertEqual(failure?.message, expected)
        }
        XCTAssertEqual(luaError("require('lib.recipe').values('steps', '5,0', 1)")?.message, "steps: must be at least 1, got 0")
        XCTAssertTrue(luaError("require('lib.recipe').values('steps', '5,x', 1)")?.message
            .contains("steps: every value must be an integer, got 'x'") ?? false)
    }

    /// Issue 14, 8: A1111's parameters text read back as modules/infotext_utils.py parse_generation_parameters reads
    /// it: a multi-line prompt and negative prompt, quoted values with JSON escapes, keys with underscores, segments
    /// that are not `key: value` skipped, A1111's older "DPM++ 2M Karras", and a last line of fewer than three pairs
    /// kept as prompt.
    func testParametersTextIsReadBackAsA1111ReadsIt() {
        let printed = runLua(#"""
            local recipe = require "lib.recipe"
            local function show(text)
                local fields, ignored = recipe.from_parameters(text)
                local keys = {}
                for key in pairs(fields) do keys[#keys + 1] = key end
                table.sort(keys)
                for _, key in ipairs(keys) do print(key, (tostring(fields[key]):gsub("\n", "|"))) end
                print("ignored", table.concat(ignored, " ; "))
            end
            show('a fox\nin snow\nNegative prompt: blurry\nlowres\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7.5, '
                .. 'Seed: 42, Size: 512x768, Downcast alphas_cumprod: True, Lora hashes: "a: 1, b\\"c\\\\nd", '
                .. 'garbage without colon, Clip skip: 2, Version: v1.10.1')
            show("just words: here\nSteps: 5, Seed: 1")
            -- A long line (Lora hashes, extensions' fields) is read with plain searches, not refused as a costly pattern.
            local long = {"Steps: 20", "Sampler: Euler", "Seed: 3", "Size: " .. string.rep("9", 5000)}
            for i = 1, 300 do long[#long + 1] = "Extra " .. i .. ": " .. i end
            local fields, ignored = recipe.from_parameters("x\n" .. table.concat(long, ", "))
            print(fields.steps, fields.sampler, fields.seed, #ignored)
            """#)
        XCTAssertEqual(printed, #"""
            cfg	7.5
            clip_skip	2
            height	768
            negative	blurry|lowres
            prompt	a fox|in snow
            sampler	dpmpp_2m
            schedule	karras
            seed	42
            steps	30
            width	512
            ignored	Downcast alphas_cumprod: True ; Lora hashes: a: 1, b"c\nd
            negative	
            prompt	just words: here|Steps: 5, Seed: 1
            ignored	
            20	euler	3	301

            """#)
    }

    /// The layout of stable-diffusion-webui's create_infotext, which A1111, ComfyUI and civitai parse.
    func testParametersTextIsA1111s() {
        let printed = runLua("""
            local recipe = require "lib.recipe"
            print(recipe.parameters_text{prompt = "sneaker", negative = "bag", steps = 20, sampler = "dpmpp_2m",
                schedule = "karras", cfg = 4.0, seed = 7, size = "28x28", model = "default"})
            print(recipe.parameters_text{prompt = "coat", negative = "", steps = 4, sampler = "euler,heun", seed = 1})
            print(recipe.parameters_text{prompt = "fox", steps = 25, sampler = "euler_ancestral", schedule = "sgm_uniform",
                cfg = 7.5, seed = 3, subseed = 9, subseed_strength = 0.25, strength = 0.75, clip_skip = 2,
                model = "/home/me/models/sd15-pruned.safetensors", version = "kiri 0.1.0"})
            print(recipe.parameters_text{prompt = "fox", sampler = "my_sampler", schedule = "my_schedule", cfg = 0.1 + 0.2,
                subseed = 9, subseed_strength = 0})
            """)
        // Issue 14, 8: A1111's display names (Sampler: DPM++ 2M, Schedule type: Karras) and number format (CFG scale: 4;
        // 0.1 + 0.2 as Python's repr writes it), variation seeds only when in use, no host folder.
        XCTAssertEqual(printed, """
            sneaker
            Negative prompt: bag
            Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 4, Seed: 7, Size: 28x28, Model: default
            coat
            Steps: 4, Sampler: "euler,heun", Seed: 1
            fox
            Steps: 25, Sampler: Euler a, Schedule type: SGM Uniform, CFG scale: 7.5, Seed: 3, Model: sd15-pruned, \
            Variation seed: 9, Variation seed strength: 0.25, Denoising strength: 0.75, Clip skip: 2, Version: kiri 0.1.0
            fox
            Sampler: my_sampler, Schedule type: my_schedule, CFG scale: 0.30000000000000004

            """)
    }

    /// A stand-in network whose output is its class label, so cond, uncond and the batching are visible:
    /// CFG must give uncond + scale * (cond - uncond) per sample, from one call on twice the batch.
    func testCFGBatchesBothBranchesAndCombinesThem() {
        let printed = runLua("""
            local calls, batch = 0, nil
            local function model(x, sigma, extra)
                calls = calls + 1
                batch = x:size(1)
                local labels = {}
                local classes = extra.class
                if type(classes) == "number" then classes = {classes, classes} end
                for i, label in ipairs(classes) do labels[i] = {{label + sigma}} end
                return kiri.tensor(labels):reshape({#labels, 1, 1, 1}) + x * 0
            end
            local D = kiri.guidance.cfg(model, {cond = {class = {7, 2, 5}}, uncond = {class = 3}, scale = 2.5})
            local out = D(kiri.zeros({3, 1, 1, 1}), 0.5)
            print(calls, batch, out:reshape({3}):totable()[1], out:reshape({3}):totable()[2], out:reshape({3}):totable()[3])
            calls = 0
            local one = kiri.guidance.cfg(model, {cond = {class = 7}, uncond = {class = 3}, scale = 1})
            print(calls, one(kiri.zeros({2, 1, 1, 1}), 0):sum())
            print(calls)
            """)
        // 3.5 + 2.5 * (7.5 - 3.5) = 13.5; 3.5 + 2.5 * (2.5 - 3.5) = 1; 3.5 + 2.5 * (5.5 - 3.5) = 8.5.
        XCTAssertEqual(printed, "1\t6\t13.5\t1.0\t8.5\n0\t14.0\n1\n")
    }

    /// KSamplerX0Inpaint: the model sees the known region re-noised to sigma, and its result there is the image.
    func testInpaintBlendsTheKnownRegionAtEveryCall() {
        let printed = runLua("""
            local seen
            local function model(x, sigma) seen = x:clone(); return x * 0 + 100 end
            local image = kiri.tensor({{{{1, 2}}}})
            local mask = kiri.tensor({{{{0, 1}}}})
            local noise = kiri.tensor({{{{10, 20}}}})
            local D = kiri.models.inpaint(model, {image = image, mask = mask, noise = noise})
            local out = D(kiri.tensor({{{{-5, -6}}}}), 0.5)
            print(table.concat(seen:reshape({2}):totable(), " "), table.concat(out:reshape({2}):totable(), " "))
            """)
        // known = image + noise * 0.5 = {6, 12}; x seen = {6, -6}; out = {1, 100}.
        XCTAssertEqual(printed, "6.0 -6.0\t1.0 100.0\n")
    }
}
