import Foundation
import XCTest
@testable import KiriLua

/// The guider's hook points (Plugins/guidance/cfg.lua) and every guidance plugin's arithmetic, against
/// Tests/Fixtures/guidance/guidance.json: diffusers' own guiders and scheduler where diffusers has the
/// method, ComfyUI's and A1111's functions re-implemented in Python otherwise (make_fixtures.py). All
/// run on one toy denoiser, affine in x per class label, that the Lua side rebuilds from the fixture.
final class GuidanceTests: XCTestCase {
    static let limits = SandboxLimits(timeout: 60, memory: 1 << 30)
    static let fixtureFile = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/guidance/guidance.json")

    /// Lua that defines `data` (the fixture), `toy` (the denoiser; it records each call's labels in
    /// `calls`), `T` (a flat list as a fixture-shaped tensor), `compare` and the labels' extras.
    static func prelude() throws -> String {
        let data = try JSONDecoder().decode(SamplerTests.JSONValue.self, from: Data(contentsOf: fixtureFile))
        return "local data = " + data.lua + "\n" + #"""
        local shape = data.shape
        local W = kiri.tensor(data.w):reshape({5, shape[2], shape[3], shape[4]})
        local B = kiri.tensor(data.b):reshape({5, shape[2], shape[3], shape[4]})
        local calls = {}
        local function toy(x, sigma, extra)
            local rows, labels = {}, {}
            for n = 1, x:size(1) do
                labels[n] = type(extra.class) == "number" and extra.class or extra.class[n]
                local k = labels[n] + 1
                rows[n] = x:narrow(1, n, 1) * W:narrow(1, k, 1) / (1 + sigma) + B:narrow(1, k, 1)
            end
            calls[#calls + 1] = table.concat(labels, ",")
            return kiri.cat(rows, 1)
        end
        local function T(list) return kiri.tensor(list):reshape(shape) end
        local function compare(name, got, want, tolerance)
            local reference = kiri.tensor(want):reshape(got:shape())
            local err = (got - reference):abs():max() / reference:abs():max()
            print(string.format("%s: max |error| / max |reference| = %.3g", name, err))
            if not (err <= (tolerance or 2e-6)) then print(string.format("FAIL %s: error %.3g", name, err)) end
        end
        local function expect(name, ok, detail)
            if not ok then print("FAIL " .. name .. (detail and (": " .. detail) or "")) end
        end
        local C, U, E, M, C2 = {class = 0}, {class = 1}, {class = 2}, {class = 3}, {class = 4}
        local cases = data.cases
        local function guided(case, extra_opts)
            local opts = {cond = C, uncond = U, scale = case.scale}
            for key, value in pairs(extra_opts or {}) do opts[key] = value end
            return kiri.guidance.cfg(toy, opts)
        end

        """#
    }

    func check(_ source: String, file: StaticString = #filePath, line: UInt = #line) throws {
        checkLua(try Self.prelude() + source, limits: Self.limits, file: file, line: line)
    }

    func testCFGWithANegativePromptMatchesDiffusers() throws {
        try check(#"""
        local c = cases.cfg
        compare("cfg", guided(c)(T(c.x), c.sigma), c.expected)
        expect("one batched call of cond and uncond", #calls == 1 and calls[1] == "0,0,1,1", calls[1])
        calls = {}
        local unguided = guided(c, {scale = 1})(T(c.x), c.sigma)
        expect("scale 1 skips the uncond", #calls == 1 and calls[1] == "0,0", calls[1])
        compare("scale 1 is the cond", unguided, toy(T(c.x), c.sigma, {class = {0, 0}}):reshape({-1}):totable())
        """#)
    }

    func testRescaleCFGMatchesDiffusersInEpsAndComfyUIInV() throws {
        try check(#"""
        local c = cases.rescale_cfg_eps
        compare("rescale_cfg eps (diffusers guidance_rescale)",
            guided(c, {patches = {kiri.guidance.rescale_cfg{multiplier = c.multiplier, space = "eps"}}})(T(c.x), c.sigma), c.expected)
        c = cases.rescale_cfg_v
        compare("rescale_cfg v (ComfyUI RescaleCFG)",
            guided(c, {patches = {kiri.guidance.rescale_cfg{multiplier = c.multiplier}}})(T(c.x), c.sigma), c.expected)
        """#)
    }

    func testDynamicThresholdingMatchesDiffusersThresholdSample() throws {
        try check(#"""
        local c = cases.dynamic_thresholding
        local patch = kiri.guidance.dynamic_thresholding{ratio = c.ratio, max = c.max}
        compare("dynamic_thresholding", guided(c, {patches = {patch}})(T(c.x), c.sigma), c.expected)
        """#)
    }

    func testPerpNegMatchesComfyUI() throws {
        try check(#"""
        local c = cases.perp_neg
        local patch = kiri.guidance.perp_neg{neg_scale = c.neg_scale, empty = E}
        compare("perp_neg", guided(c, {patches = {patch}})(T(c.x), c.sigma), c.expected)
        expect("cond, negative and empty in one call", #calls == 1 and calls[1] == "0,0,1,1,2,2", calls[1])
        """#)
    }

    func testAPGMatchesDiffusersNormalizedGuidanceWithMomentum() throws {
        try check(#"""
        local c = cases.apg
        local denoiser = guided(c, {patches = {kiri.guidance.apg{eta = c.eta, norm_threshold = c.norm_threshold, momentum = c.momentum}}})
        for i, sigma in ipairs(c.sigmas) do
            compare("apg call " .. i, denoiser(T(c.x[i]), sigma), c.expected[i])
        end
        -- a rising sigma starts a new run: the momentum restarts, so call 1 comes out the same again
        compare("apg restarted", denoiser(T(c.x[1]), c.sigmas[1]), c.expected[1])
        c = cases.apg_plain
        compare("apg without momentum or threshold", guided(c, {patches = {kiri.guidance.apg{eta = c.eta,
            norm_threshold = c.norm_threshold, momentum = c.momentum}}})(T(c.x), c.sigma), c.expected)
        """#)
    }

    func testDualCFGMatchesComfyUIRegularAndNested() throws {
        try check(#"""
        for _, name in ipairs({"dual_cfg", "dual_cfg_nested"}) do
            local c = cases[name]
            local patch = kiri.guidance.dual_cfg{middle = M, middle_scale = c.middle_scale, nested = name == "dual_cfg_nested"}
            compare(name, guided(c, {patches = {patch}})(T(c.x), c.sigma), c.expected)
        end
        """#)
    }

    func testComposablePromptsMatchA1111CombineDenoised() throws {
        try check(#"""
        local c = cases.composable
        local cond = function() return {{extra = C, weight = c.weights[1]}, {extra = C2, weight = c.weights[2]}} end
        compare("composable", guided(c, {cond = cond})(T(c.x), c.sigma), c.expected)
        expect("both parts and the uncond in one call", #calls == 1 and calls[1] == "0,0,4,4,1,1", calls[1])
        """#)
    }

    func testGuidanceIntervalAppliesCFGOnlyInsideAndSkipsTheUncondOutside() throws {
        try check(#"""
        local c = cases.interval
        local denoiser = guided(c, {patches = {kiri.guidance.interval{lo = c.lo, hi = c.hi}}})
        for i, sigma in ipairs(c.sigmas) do
            calls = {}
            compare("interval at sigma " .. sigma, denoiser(T(c.x[i]), sigma), c.expected[i])
            local inside = sigma >= c.lo and sigma <= c.hi
            expect("uncond evaluated only inside, sigma " .. sigma, calls[1] == (inside and "0,0,1,1" or "0,0"), calls[1])
        end
        """#)
    }

    func testScaleSchedulesRampOverTheSteps() throws {
        try check(#"""
        local c = cases.scale_schedule
        local sigmas = {}
        for i = 1, c.steps do sigmas[i] = 2 ^ (c.steps - i) end
        sigmas[c.steps + 1] = 0
        for shape, expected in pairs(c.expected) do
            local seen = {}
            local denoiser = kiri.guidance.cfg(toy, {cond = C, uncond = U, scale = c.to, sigmas = sigmas,
                patches = {kiri.guidance.scale_schedule{shape = shape, from = c.from}},
                post_cfg = function(args) seen[args.step] = args.scale; return args.denoised end})
            for i = 1, c.steps do denoiser(T(data.cases.cfg.x), sigmas[i]) end
            compare("scale_schedule " .. shape, kiri.tensor(seen), expected, 1e-12)
        end
        local message = select(2, pcall(kiri.guidance.cfg(toy, {cond = C, uncond = U, scale = 2,
            patches = {kiri.guidance.scale_schedule{}}}), T(data.cases.cfg.x), 1))
        expect("without sigmas it says what is missing", tostring(message):find("scale_schedule needs the step", 1, true), message)
        """#)
    }

    func testCFGPlusPlusSamplersMatchComfyUI() throws {
        try check(#"""
        for _, name in ipairs({"euler_cfg_pp", "dpmpp_2m_cfg_pp"}) do
            local c = cases[name]
            local x = kiri.samplers[name](guided(c), T(c.x), c.sigmas)
            compare(name, x, c.expected, 5e-6)
            calls = {}
            kiri.samplers[name](guided(c, {scale = 1}), T(c.x), c.sigmas)
            expect(name .. " keeps the uncond at scale 1", calls[1] == "0,0,1,1", calls[1])
            expect("kiri.guidance.cfg_pp names " .. name, kiri.guidance.cfg_pp((name:gsub("_cfg_pp$", ""))) == kiri.samplers[name])
            local ok, message = pcall(kiri.samplers[name], toy, T(c.x), c.sigmas, {extra = C})
            expect(name .. " refuses a plain model", not ok and message:find(name .. " needs the unconditional prediction", 1, true), message)
        end
        """#)
    }

    /// A recording hook at every point proves the order README.md documents: scale patches, one model
    /// call, pre_cfg, cfg, post_cfg (the guider's own, then its patches', then the sampler's), then the
    /// sampler's on_step; and that each hook sees the documented fields.
    func testHooksRunInTheDocumentedOrder() throws {
        try check(#"""
        local log = {}
        local function note(entry) log[#log + 1] = entry end
        local sigmas = {4, 2, 1, 0}
        local function recording(x, sigma, extra) note("model"); return toy(x, sigma, extra) end
        local function pre(name) return function(args) note(name); return args.cond_denoised, args.uncond_denoised end end
        local function post(name) return function(args) note(name); return args.denoised end end
        local fields
        local denoiser = kiri.guidance.cfg(recording, {cond = C, uncond = U, scale = 3, sigmas = sigmas,
            pre_cfg = {pre("pre_cfg 1"), pre("pre_cfg 2")},
            cfg = function(args)
                note("cfg")
                fields = args
                return args.uncond_denoised + (args.cond_denoised - args.uncond_denoised) * args.scale
            end,
            post_cfg = {post("post_cfg 1"), post("post_cfg 2")},
            patches = {{scale = function(args) note("scale"); return args.scale end, post_cfg = post("patch post_cfg")}}})
        local x = kiri.samplers.euler(denoiser, T(data.cases.cfg.x) * 4, sigmas, {callback = function(info)
            note("on_step " .. info.i .. "/" .. info.steps)
        end})
        local step = "scale,model,pre_cfg 1,pre_cfg 2,cfg,post_cfg 1,post_cfg 2,patch post_cfg,on_step %d/3"
        local expected = {}
        for i = 1, 3 do expected[i] = step:format(i) end
        expected = table.concat(expected, ",")
        expect("order", table.concat(log, ",") == expected, table.concat(log, ","))
        print(table.concat(log, ","))
        for _, key in ipairs({"x", "sigma", "step", "steps", "scale", "cond", "uncond", "cond_denoised", "uncond_denoised"}) do
            expect("args." .. key, fields[key] ~= nil)
        end
        expect("step and steps", fields.step == 3 and fields.steps == 3 and fields.sigma == 1, fields.step .. "/" .. fields.steps)
        expect("cond info", fields.cond.class == 0 and fields.uncond.class == 1)
        """#)
    }

    func testOnStepCanStopTheRunWithThatStepsDenoised() throws {
        try check(#"""
        local c = cases.cfg
        local sigmas = {8, 4, 2, 1, 0}
        local kept, evaluations = nil, 0
        local function counted(x, sigma, extra) evaluations = evaluations + 1; return toy(x, sigma, extra) end
        local x = kiri.samplers.heun(kiri.guidance.cfg(counted, {cond = C, uncond = U, scale = 2}), T(c.x) * 8, sigmas, {
            callback = function(info)
                if info.i == 2 then kept = info.denoised:clone(); return "stop" end
            end})
        expect("returns the denoised of the stopping step", (x - kept):abs():max() == 0)
        expect("no evaluation after the stop (heun: 2 per step)", evaluations == 3, tostring(evaluations))
        print("stopped at step 2 after " .. evaluations .. " model evaluations")
        local ok, message = pcall(kiri.samplers.euler, toy, T(c.x), sigmas, {extra = C, callback = function() error("boom") end})
        expect("other errors pass through", not ok and message:find("boom", 1, true), tostring(message))
        """#)
    }

    /// The README's example user plugin (CFG-Zero*'s optimised scale), loaded from a user plugin folder as
    /// `--plugins` does, against diffusers' ClassifierFreeZeroStarGuidance.
    func testReadmeGuidancePluginMatchesDiffusersZeroStar() throws {
        let readme = URL(fileURLWithPath: bundledPlugins).deletingLastPathComponent().appendingPathComponent("README.md")
        let block = try XCTUnwrap(try String(contentsOf: readme, encoding: .utf8).components(separatedBy: "```lua\n")
            .map { $0.components(separatedBy: "```")[0] }
            .first { $0.hasPrefix("-- ~/kiri-plugins/guidance/cfg_zero_star.lua\n") })
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kiri-zero-star-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("guidance"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try String(block.split(separator: "\n", maxSplits: 1)[1])
            .write(to: folder.appendingPathComponent("guidance/cfg_zero_star.lua"), atomically: true, encoding: .utf8)

        var printed = ""
        let runtime = try makeRuntime(limits: Self.limits, userPlugins: [folder.path], output: { printed += $0 })
        defer { runtime.close() }
        try runtime.run(source: try Self.prelude() + #"""
            local c = cases.cfg_zero_star
            compare("README cfg_zero_star", guided(c, {patches = {kiri.guidance.cfg_zero_star()}})(T(c.x), c.sigma), c.expected)
            """#, name: "test.lua")
        print(printed, terminator: "")
        XCTAssertTrue(printed.hasPrefix("README cfg_zero_star: max |error|"), printed)
        XCTAssertFalse(printed.contains("FAIL"), printed)
    }

    func testBadOptionsNameWhatIsWrong() {
        let cases: [(String, String)] = [
            ("kiri.guidance.rescale_cfg{space = 'x0'}", "rescale_cfg: unknown space 'x0' (v or eps)"),
            ("kiri.guidance.dynamic_thresholding{ratio = 2}", "dynamic_thresholding: ratio must be a number in [0, 1], got 2"),
            ("kiri.guidance.dynamic_thresholding{max = 0.5}", "dynamic_thresholding: max must be a number >= 1, got 0.5"),
            ("kiri.guidance.apg{eta = 'high'}", "apg: eta must be a number, got string"),
            ("kiri.guidance.interval{lo = 3, hi = 1}", "interval: lo and hi must be numbers with lo <= hi, got 3 and 1"),
            ("kiri.guidance.scale_schedule{shape = 'step'}", "scale_schedule: unknown shape 'step' (constant, linear or cosine)"),
            ("kiri.guidance.dual_cfg{}", "dual_cfg: middle (the second prompt, or its extra) is required"),
            ("kiri.guidance.perp_neg{neg_scale = {}}", "perp_neg: neg_scale must be a number, got table"),
            ("kiri.guidance.cfg(function() end, 4)", "bad argument #2 to 'cfg' (table expected, got number)"),
            ("kiri.guidance.cfg(function() end, {patches = {kiri.guidance.perp_neg{}}})",
             "cfg: patches[1] conditions 'empty' on the prompt ''; give the guider encode = function(prompt) -> extra"),
        ]
        for (source, message) in cases {
            let failure = luaError("\n" + source)
            XCTAssertEqual(failure?.message.components(separatedBy: "\n").first, "test.lua:2: " + message, source)
        }
    }
}
