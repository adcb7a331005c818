import Foundation
import Kiri
import XCTest

/// Every guidance plugin, prompt schedules and the sampler hooks on the default model, through
/// lib/generate.lua as the recipes use it: each run stays finite, gives bit-identical samples when
/// repeated, and changes the sample relative to plain CFG where the method should.
final class GuidanceEndToEndTests: XCTestCase {
    static let prelude = #"""
    local generate = require "lib.generate"
    local function params(overrides)
        local p = {prompt = "coat", negative = "", steps = 6, cfg = 5.0, sampler = "dpmpp_2m", schedule = "karras",
            seed = 11, batch = 2, model = "default"}
        for key, value in pairs(overrides or {}) do p[key] = value end
        return p
    end
    local function finite(x)
        local total = x:sum()
        return total == total and total ~= math.huge and total ~= -math.huge
    end
    local function fail(message) print("FAIL " .. message) end

    """#

    func check(_ source: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let printed = try runRecipe(Self.prelude + source)
        print(printed, terminator: "")
        for failure in printed.split(separator: "\n") where failure.hasPrefix("FAIL") {
            XCTFail(String(failure), file: file, line: line)
        }
        XCTAssertFalse(printed.isEmpty, "the script printed nothing", file: file, line: line)
    }

    func testEveryGuidancePluginRunsFiniteAndDeterministic() throws {
        try check(#"""
        local plain = generate.sample(params())
        local cases = {
            {"cfg", {}},
            {"rescale_cfg", {guidance = "rescale_cfg"}},
            {"rescale_cfg eps", {}, {patches = {kiri.guidance.rescale_cfg{space = "eps", multiplier = 0.5}}}},
            {"dynamic_thresholding", {cfg = 12.0}, {patches = {kiri.guidance.dynamic_thresholding{ratio = 0.9, max = 1.2}}}},
            {"perp_neg", {negative = "pullover", guidance = "perp_neg"}},
            {"apg", {guidance = "apg"}},
            {"interval", {}, {patches = {kiri.guidance.interval{lo = 1, hi = 20}}}},
            {"dual_cfg", {}, {patches = {kiri.guidance.dual_cfg{middle = "pullover", middle_scale = 2}}}},
            {"scale_schedule", {guidance = "scale_schedule"}},
            {"euler_cfg_pp", {sampler = "euler_cfg_pp", cfg = 1.0}},
            {"dpmpp_2m_cfg_pp", {sampler = "dpmpp_2m_cfg_pp", cfg = 1.0}},
            {"prompt editing", {prompt = "[coat:sandal:0.5]"}},
            {"alternation", {prompt = "[coat|sandal]"}},
            {"composable", {prompt = "coat :0.7 AND sandal :0.3"}},
        }
        for _, case in ipairs(cases) do
            local name, overrides, hooks = case[1], case[2], case[3]
            local first = generate.sample(params(overrides), nil, hooks)
            local second = generate.sample(params(overrides), nil, hooks)
            local change = (first - plain):abs():max()
            print(string.format("%-20s finite %s, repeat max |diff| %g, max |change| vs plain CFG %.4f", name,
                tostring(finite(first)), (first - second):abs():max(), change))
            if not finite(first) then fail(name .. ": not finite") end
            if (first - second):abs():max() ~= 0 then fail(name .. ": not deterministic") end
            if name ~= "cfg" and change == 0 then fail(name .. ": no effect") end
            if name == "cfg" and change ~= 0 then fail("cfg differs from plain CFG") end
        end
        """#)
    }

    func testPromptScheduleSwitchesTheConditioningAtTheStep() throws {
        try check(#"""
        local seen = {}
        generate.sample(params{prompt = "[coat:sandal:0.5]", steps = 8, sampler = "euler", batch = 1}, nil, {
            post_cfg = function(args) seen[#seen + 1] = args.step .. ":" .. args.cond.class; return args.denoised end})
        local text = table.concat(seen, ",")
        print(text)
        if text ~= "1:4,2:4,3:4,4:4,5:5,6:5,7:5,8:5" then fail("classes by step: " .. text) end
        """#)
    }

    func testOnStepStopsEarlyAndTheNoiseSamplerIsReplaceable() throws {
        try check(#"""
        local steps, draws = {}, 0
        local p = params{sampler = "euler_ancestral", steps = 8}
        local x = generate.sample(p, nil, {
            on_step = function(info) steps[#steps + 1] = info.i .. "/" .. info.steps; if info.i == 3 then return "stop" end end,
            noise_sampler = function(sigma, sigma_next) draws = draws + 1; return kiri.zeros({2, 1, 28, 28}) end,
        })
        print(table.concat(steps, ","), "noise draws " .. draws)
        if table.concat(steps, ",") ~= "1/8,2/8,3/8" then fail("on_step saw " .. table.concat(steps, ",")) end
        if draws ~= 2 then fail("the replaced noise sampler drew " .. draws .. " times, 2 expected") end
        local deterministic = generate.sample(params{sampler = "euler", steps = 8}, nil, {
            on_step = function(info) if info.i == 3 then return "stop" end end})
        if not finite(x) or not finite(deterministic) then fail("stopped samples are not finite") end
        """#)
    }

    func testBadGuidanceNamesAndPromptsSayWhatIsWrong() {
        let cases: [(String, String)] = [
            ("generate.sample(params{guidance = 'cfg_pp'})", ".lua:13: guidance 'cfg_pp' with its defaults: cfg_pp is not "
                + "a patch but samplers: choose sampler=euler_cfg_pp or sampler=dpmpp_2m_cfg_pp"),
            ("generate.sample(params{guidance = 'dual_cfg'})",
             "guidance 'dual_cfg' with its defaults: dual_cfg: middle (the second prompt, or its extra) is required"),
            ("generate.sample(params{guidance = 'cfg'})", "guidance 'cfg' with its defaults: bad argument #2 to 'cfg'"),
            ("generate.sample(params{negative = 'coat AND sandal'})", "negative prompt: it cannot be composed with AND"),
            ("generate.sample(params{prompt = '[coat:sandal'})", "column"),
        ]
        for (source, message) in cases {
            XCTAssertThrowsError(try runRecipe(Self.prelude + source)) { error in
                XCTAssertTrue("\(error)".contains(message), "\(source): \(error)")
            }
        }
    }
}
