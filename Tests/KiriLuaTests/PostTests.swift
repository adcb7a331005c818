import Foundation
import XCTest
@testable import KiriLua

/// The post-processing plugins (Plugins/post: resize, sharpen, contrast, levels, clamp) and lib.filter,
/// against references from Pillow 13, scipy and numpy on the same inputs (Tests/Fixtures/post, README there).
/// Each check prints the largest error it measured and a `FAIL` line for each case above tolerance.
/// Tolerances are float32's: the plugins compute in float32 (sgemm), the references in float64 (Pillow's
/// sums, scipy) and round once; 1e-5 leaves ~40x headroom over the ~2.4e-7 measured, and nearest is exact.
final class PostTests: XCTestCase {
    static let limits = SandboxLimits(timeout: 120, memory: 1 << 30)

    static let fixtureFile = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/post/post.json")

    /// Lua helpers for every check: `inputs` (the fixture's input tensors), `expect`, and `max_error`,
    /// the largest |got - expected| (math.huge, with a FAIL line, when the shapes differ).
    static let helpers = #"""
    local inputs = {}
    for name, values in pairs(data.inputs) do inputs[name] = kiri.tensor(values) end
    local function expect(ok, message, ...)
        if not ok then print("FAIL " .. string.format(message, ...)) end
    end
    local function shape_text(t) return "[" .. table.concat(t:shape(), ",") .. "]" end
    local function max_error(got, expected)
        if type(expected) == "table" then expected = kiri.tensor(expected) end
        if shape_text(got) ~= shape_text(expected) then
            print("FAIL shape " .. shape_text(got) .. ", expected " .. shape_text(expected))
            return math.huge
        end
        return (got - expected):abs():max()
    end

    """#

    /// Runs `source` after the helpers, with `data` holding the fixture's inputs and its `section` list.
    func check(_ section: String, _ source: String, file: StaticString = #filePath, line: UInt = #line) {
        let data: SamplerTests.JSONValue
        do {
            data = try JSONDecoder().decode(SamplerTests.JSONValue.self, from: Data(contentsOf: Self.fixtureFile))
        } catch {
            return XCTFail("cannot read \(Self.fixtureFile.path): \(error)", file: file, line: line)
        }
        guard case .object(let root) = data, let inputs = root["inputs"], case .array(let cases)? = root[section],
              !cases.isEmpty else {
            return XCTFail("post.json has no inputs or no '\(section)' cases", file: file, line: line)
        }
        let subset = SamplerTests.JSONValue.object(["inputs": inputs, section: .array(cases)])
        checkLua("local data = " + subset.lua + "\n" + Self.helpers + source, limits: Self.limits, file: file, line: line)
    }

    // MARK: - Parity with the references

    /// Pillow's Image.resize on mode "F" images, up, down and mixed, for every mode; also on the same image
    /// as an [N, C, H, W] batch of two and, for the first channel, as an [H, W] plane.
    func testResizeMatchesPillow() {
        check("resize", #"""
        local worst, cases = {}, {}
        for _, case in ipairs(data.resize) do
            local image, expected = inputs[case.input], kiri.tensor(case.expected)
            local opts = {width = case.width, height = case.height, mode = case.mode}
            local batch = kiri.post.resize(kiri.stack({image, image}), opts)
            local err = math.max(max_error(kiri.post.resize(image, opts), expected),
                                 max_error(batch:select(1, 1), expected), max_error(batch:select(1, 2), expected),
                                 max_error(kiri.post.resize(image:select(1, 1), opts), expected:select(1, 1)))
            local tolerance = case.mode == "nearest" and 0 or 1e-5
            expect(err <= tolerance, "resize %s %s [%s] -> %dx%d: max error %.3g > %g", case.mode, case.input,
                   table.concat(image:shape(), ","), case.width, case.height, err, tolerance)
            worst[case.mode] = math.max(worst[case.mode] or 0, err)
            cases[case.mode] = (cases[case.mode] or 0) + 1
        end
        for _, mode in ipairs({"nearest", "bilinear", "bicubic", "lanczos"}) do
            print(string.format("resize %-8s %d cases, max error vs Pillow %.3g", mode, cases[mode] or 0, worst[mode] or 0))
            expect((cases[mode] or 0) >= 4, "resize %s: %d cases in post.json", mode, cases[mode] or 0)
        end
        """#)
    }

    /// lib.filter's Gaussian blur against scipy.ndimage.gaussian_filter (mode "nearest", truncate 4, one
    /// case with a radius beyond the image), and the unsharp mask built on it, with and without a threshold.
    func testSharpenMatchesScipyUnsharpMask() {
        check("sharpen", #"""
        local filter = require "lib.filter"
        local worst_blur, worst_sharpen = 0, 0
        for _, case in ipairs(data.sharpen) do
            local image, o = inputs[case.input], case.options
            local blur_error = max_error(filter.gaussian_blur(image, o.sigma), case.blurred)
            local err = math.max(max_error(kiri.post.sharpen(image, o), case.expected),
                                 max_error(kiri.post.sharpen(image:unsqueeze(1), o):select(1, 1), case.expected))
            expect(blur_error <= 1e-5, "blur sigma %g: max error %.3g", o.sigma, blur_error)
            expect(err <= 1e-5, "sharpen %s sigma %g amount %g threshold %g: max error %.3g", case.input, o.sigma,
                   o.amount, o.threshold, err)
            worst_blur, worst_sharpen = math.max(worst_blur, blur_error), math.max(worst_sharpen, err)
        end
        print(string.format("gaussian blur max error vs scipy %.3g; sharpen %.3g", worst_blur, worst_sharpen))
        -- The defaults are sigma 1, amount 1, threshold 0: the first case.
        local first = data.sharpen[1]
        expect(max_error(kiri.post.sharpen(inputs[first.input]), first.expected) <= 1e-5, "sharpen's defaults")
        """#)
    }

    /// ImageEnhance.Contrast's formula: RGB, grey and a batch (a mean per image), factors 0, 0.5, > 1.
    func testContrastMatchesPILFormula() {
        check("contrast", #"""
        local worst = 0
        for _, case in ipairs(data.contrast) do
            local err = max_error(kiri.post.contrast(inputs[case.input], case.factor), case.expected)
            expect(err <= 1e-6, "contrast %s factor %g: max error %.3g", case.input, case.factor, err)
            worst = math.max(worst, err)
        end
        -- An [H, W] plane is its own grey.
        local grey = data.contrast[4]
        local plane = max_error(kiri.post.contrast(inputs[grey.input]:select(1, 1), grey.factor), kiri.tensor(grey.expected):select(1, 1))
        expect(plane <= 1e-6, "contrast on [H, W]: max error %.3g", plane)
        print(string.format("contrast max error %.3g", math.max(worst, plane)))
        """#)
    }

    /// The Levels formula: defaults (the identity), every option, gamma < 1, and an inverted output range.
    func testLevelsMatchesFormula() {
        check("levels", #"""
        local worst = 0
        for i, case in ipairs(data.levels) do
            local err = max_error(kiri.post.levels(inputs[case.input], case.options), case.expected)
            expect(err <= 1e-6, "levels case %d: max error %.3g", i, err)
            worst = math.max(worst, err)
        end
        expect(max_error(kiri.post.levels(inputs.a), inputs.a) == 0, "levels without options is not the identity")
        print(string.format("levels max error %.3g", worst))
        """#)
    }

    /// numpy.clip, exactly; a new tensor, the input left alone; lo and hi default to 0 and 1.
    func testClampMatchesNumpyAndKeepsItsInput() {
        check("clamp", #"""
        local worst = 0
        local image = inputs.wide
        local before = image:clone()
        for _, case in ipairs(data.clamp) do
            local err = max_error(kiri.post.clamp(image, case.low, case.high), case.expected)
            expect(err == 0, "clamp to [%g, %g]: max error %.3g", case.low, case.high, err)
            worst = math.max(worst, err)
        end
        expect(max_error(image, before) == 0, "clamp changed its input")
        expect(max_error(kiri.post.clamp(image), data.clamp[1].expected) == 0, "clamp's defaults are not [0, 1]")
        print(string.format("clamp max error %.3g", worst))
        """#)
    }

    // MARK: - Shapes

    func testResizeShapesAspectRatioAndSameSize() {
        XCTAssertEqual(runLua("""
        local function shape(t) print(table.concat(t:shape(), " ")) end
        shape(kiri.post.resize(kiri.zeros({3, 4, 6}), {width = 9}))                       -- height 6 by the ratio
        shape(kiri.post.resize(kiri.zeros({2, 1, 4, 6}), {height = 2, mode = "lanczos"})) -- width 3
        shape(kiri.post.resize(kiri.zeros({4, 6}), {width = 1, height = 7, mode = "nearest"}))
        shape(kiri.post.resize(kiri.zeros({1, 100, 2}), {width = 1, mode = "bicubic"}))   -- height 50
        shape(kiri.post.resize(kiri.zeros({1, 2, 100}), {width = 3}))                     -- height 2 * 3 / 100 rounds to 0: 1
        """), "3 6 9\n2 1 2 3\n7 1\n1 50 1\n1 1 3\n")
        // The same size in every mode is a copy (Pillow's resize returns image.copy()), not the input itself.
        checkLua("""
        local image = kiri.rand({2, 5, 7}, 3)
        for _, mode in ipairs({"nearest", "bilinear", "bicubic", "lanczos"}) do
            local same = kiri.post.resize(image, {width = 7, height = 5, mode = mode})
            local difference = (same - image):abs():max()
            print(string.format("resize %s to its own size: max difference %.3g", mode, difference))
            if difference ~= 0 then print("FAIL resize " .. mode .. " to the same size changed the image") end
            same:fill_(2)
            if image:max() > 1 then print("FAIL resize " .. mode .. " to the same size returned its input") end
        end
        """, limits: Self.limits)
    }

    /// A recipe's post-processing chain runs on a [1, 3, H, W] batch, keeps its shape and stays in [0, 1].
    func testRecipeChainKeepsShape() {
        checkLua("""
        local x = kiri.randn({1, 3, 24, 32}, 7)
        local image = kiri.post.to_image(x)
        local out = kiri.post.resize(image, {width = 48, height = 36, mode = "lanczos"})
        out = kiri.post.sharpen(out, {sigma = 1.2, amount = 0.8, threshold = 0.01})
        out = kiri.post.contrast(out, 1.15)
        out = kiri.post.levels(out, {in_black = 0.02, in_white = 0.98, gamma = 1.1})
        out = kiri.post.clamp(out)
        local shape = table.concat(out:shape(), " ")
        print(string.format("chain: shape %s, range [%.3g, %.3g]", shape, out:min(), out:max()))
        if shape ~= "1 3 36 48" then print("FAIL chain shape " .. shape .. ", expected 1 3 36 48") end
        if out:min() < 0 or out:max() > 1 then print("FAIL chain left [0, 1]") end
        if table.concat(image:shape(), " ") ~= "1 3 24 32" then print("FAIL the chain changed its input's shape") end
        """, limits: Self.limits)
    }

    // MARK: - Errors

    func testErrorsNameWhatIsWrong() {
        let cases: [(String, String)] = [
            ("kiri.post.resize()", "bad argument #1 to 'resize' (Tensor expected, got nil)"),
            ("kiri.post.resize(a)", "bad argument #2 to 'resize' (table expected, got nil)"),
            ("kiri.post.resize(a, {width = 4, mode = 'foo'})",
             "bad argument #2 to 'resize' (unknown mode 'foo' (nearest, bilinear, bicubic or lanczos))"),
            ("kiri.post.resize(a, {width = 0, height = 2})", "bad argument #2 to 'resize' (width must be a positive integer, got 0)"),
            ("kiri.post.resize(a, {width = 4, height = 2.5})", "bad argument #2 to 'resize' (height must be a positive integer, got 2.5)"),
            ("kiri.post.resize(a, {width = '4'})", "bad argument #2 to 'resize' (width must be a positive integer, got '4')"),
            ("kiri.post.resize(a, {mode = 'nearest'})", "bad argument #2 to 'resize' (width or height expected)"),
            ("kiri.post.resize(kiri.zeros({5}), {width = 2})",
             "bad argument #1 to 'resize' (image [H,W], [C,H,W] or [N,C,H,W] expected, got shape [5])"),
            ("kiri.post.sharpen('a')", "bad argument #1 to 'sharpen' (Tensor expected, got string)"),
            ("kiri.post.sharpen(a, 1)", "bad argument #2 to 'sharpen' (table expected, got number)"),
            ("kiri.post.sharpen(a, {sigma = 0})", "bad argument #2 to 'sharpen' (sigma must be a positive number, got 0)"),
            ("kiri.post.sharpen(a, {amount = 'lots'})", "bad argument #2 to 'sharpen' (amount must be a number, got 'lots')"),
            ("kiri.post.sharpen(a, {threshold = -0.1})", "bad argument #2 to 'sharpen' (threshold must be a number >= 0, got -0.1)"),
            ("kiri.post.contrast(a)", "bad argument #2 to 'contrast' (finite number expected, got nil)"),
            ("kiri.post.contrast(a, 1/0)", "bad argument #2 to 'contrast' (finite number expected, got inf)"),
            ("kiri.post.contrast({}, 1)", "bad argument #1 to 'contrast' (Tensor expected, got table)"),
            ("kiri.post.contrast(kiri.zeros({2, 4, 4}), 1)", "bad argument #1 to 'contrast' (1 or 3 channels expected, got shape [2,4,4])"),
            ("kiri.post.levels(a, {in_black = 0.6, in_white = 0.4})",
             "bad argument #2 to 'levels' (in_white must be greater than in_black (0.6), got 0.4)"),
            ("kiri.post.levels(a, {gamma = 0})", "bad argument #2 to 'levels' (gamma must be a positive number, got 0)"),
            ("kiri.post.levels(a, {out_black = true})", "bad argument #2 to 'levels' (out_black must be a number, got true)"),
            ("kiri.post.levels(a, 'x')", "bad argument #2 to 'levels' (table expected, got string)"),
            ("kiri.post.clamp(nil)", "bad argument #1 to 'clamp' (Tensor expected, got nil)"),
            ("kiri.post.clamp(a, '0')", "bad argument #2 to 'clamp' (lo must be a number, got '0')"),
            ("kiri.post.clamp(a, 0.8, 0.2)", "bad argument #3 to 'clamp' (hi must be >= lo (0.8), got 0.2)"),
        ]
        for (call, message) in cases {
            // Raised at the caller: the message names test.lua:1.
            let failure = luaError("local a = kiri.zeros({3, 8, 8}); local x = \(call)")
            XCTAssertTrue(failure?.message.contains("test.lua:1: " + message) ?? false, "\(call): \(failure?.message ?? "no error")")
        }
    }
}
