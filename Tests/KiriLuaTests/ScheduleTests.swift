import Foundation
import XCTest
@testable import KiriLua

/// Schedules (Plugins/schedules), their shared maths (Plugins/lib/schedule.lua), the model wrapper
/// (Plugins/models/wrap.lua) and the forward process (Plugins/noise): parity with the references in
/// Tests/Fixtures/sampling/schedules.json (k-diffusion 0.1.1, diffusers 0.42, float64 ports of
/// ComfyUI; see its README.md), and closed forms derived independently of those files.
final class ScheduleTests: XCTestCase {
    /// Numbers printed by `source`, which must run without error.
    func numbers(_ source: String, file: StaticString = #filePath, line: UInt = #line) -> [Double] {
        printedNumbers(runLua(source, file: file, line: line))
    }

    /// The largest relative error of `got` against `want`; a wanted 0 must be met exactly.
    func worstRelativeError(_ got: [Double], _ want: [Double]) -> Double {
        guard got.count == want.count else { return .infinity }
        return zip(got, want).map { got, want in
            want == 0 ? (got == 0 ? 0 : .infinity) : abs(got - want) / abs(want)
        }.max() ?? 0
    }

    func assertClose(_ got: [Double], _ want: [Double], relative tolerance: Double, _ message: String = "",
                     file: StaticString = #filePath, line: UInt = #line) {
        let worst = worstRelativeError(got, want)
        XCTAssertLessThanOrEqual(worst, tolerance, "\(message): got \(got), want \(want)", file: file, line: line)
    }

    /// Lua that prints every entry of the 1-D tensor or list `expression`, one per line, exactly.
    func printing(_ expression: String) -> String {
        "do local v = \(expression); for i = 1, #v do print(string.format('%.17g', v[i])) end end\n"
    }

    // MARK: - Parity with the fixtures

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/sampling/schedules.json")

    /// A value of the fixture file. JSONDecoder keeps booleans and numbers apart on every platform.
    enum JSON: Decodable {
        case bool(Bool), number(Double), text(String), list([JSON]), table([String: JSON]), null

        init(from decoder: Decoder) throws {
            let value = try decoder.singleValueContainer()
            if value.decodeNil() { self = .null }
            else if let bool = try? value.decode(Bool.self) { self = .bool(bool) }
            else if let number = try? value.decode(Double.self) { self = .number(number) }
            else if let text = try? value.decode(String.self) { self = .text(text) }
            else if let list = try? value.decode([JSON].self) { self = .list(list) }
            else { self = .table(try value.decode([String: JSON].self)) }
        }

        /// The value as a Lua literal.
        var lua: String {
            switch self {
            case .bool(let bool): return bool ? "true" : "false"
            case .number(let number): return String(format: "%.17g", number)
            case .text(let text): return "\"\(text)\""
            case .list(let list): return "{" + list.map(\.lua).joined(separator: ", ") + "}"
            case .table(let table): return "{" + table.keys.sorted().map { "\($0) = \(table[$0]!.lua)" }.joined(separator: ", ") + "}"
            case .null: return "nil"
            }
        }

        var numbers: [Double] {
            guard case .list(let list) = self else { return [] }
            return list.compactMap { if case .number(let number) = $0 { return number } else { return nil } }
        }
    }

    static func loadFixtures() throws -> [[String: JSON]] {
        try JSONDecoder().decode([[String: JSON]].self, from: Data(contentsOf: fixtures))
    }

    /// One fixture case as (the Kiri name it tests, a Lua expression giving Kiri's values, the reference values).
    static func parityCase(_ fixture: [String: JSON]) -> (schedule: String, expression: String, want: [Double])? {
        guard case .text(let name)? = fixture["name"], case .table(var params)? = fixture["params"] else { return nil }
        params["model_sampling"] = nil   // always Stable Diffusion's table, Kiri's default
        params["table"] = nil
        let sigmas = fixture["sigmas"]?.numbers ?? []
        let options = JSON.table(params).lua
        switch name {
        case "karras", "exponential", "polyexponential", "vp", "discrete", "normal", "sgm_uniform", "simple",
             "ddim_uniform", "beta", "linear_quadratic", "kl_optimal":
            return (name, "kiri.schedules.\(name)\(options)", sigmas)
        case "discrete_zsnr":
            params["zsnr"] = nil
            params["rescale_zero_snr"] = .bool(true)
            return ("discrete rescale_zero_snr", "kiri.schedules.discrete\(JSON.table(params).lua)", sigmas)
        case "ays":
            params["model"] = params.removeValue(forKey: "model_type")
            return (name, "kiri.schedules.ays\(JSON.table(params).lua)", sigmas)
        case "laplace":
            // ComfyUI returns the n sigmas alone; Kiri's schedules all end in 0
            return (name, "kiri.schedules.laplace\(options)", fixture["sigmas_with_zero"]?.numbers ?? [])
        case "flow_shift":
            return ("flow", "kiri.schedules.flow\(options)", sigmas)
        case "flow_simple_comfy":
            // ComfyUI's ModelSamplingDiscreteFlow table handed to simple as the model's sigmas
            let shift = params["shift"]?.lua ?? "nil", steps = params["n"]?.lua ?? "nil"
            return ("simple on a flow table", """
                (function() local t = {} for i = 1, 1000 do local s = i / 1000; t[i] = \(shift) * s / (1 + (\(shift) - 1) * s) end
                return kiri.schedules.simple{n = \(steps), sigmas = t} end)()
                """, sigmas)
        case "alphas_cumprod":
            return ("alphas_cumprod (float32)", "require('lib.schedule').alphas_cumprod(\(options), require('lib.schedule').f32)",
                    fixture["alphas_cumprod"]?.numbers ?? [])
        default:
            return nil   // zsnr tables tested through discrete, ComfyUI's own zero-SNR rescale is not a Kiri schedule
        }
    }

    /// diffusers keeps the zero-SNR rescale in float32, and the torch that made the fixture does not
    /// round float32 square roots correctly: its sigma table is 1 ulp off at 15% of the timesteps even
    /// where alphas_cumprod is bit-identical to Kiri's, its first zero-SNR sigma is 4096 where
    /// sqrt(2^24 - 1) rounds to 4095.9998, and replaying its rescale needs sqrt(alphas_cumprod) rounded
    /// the other way wherever the exact root lies more than ~0.26 ulp from the nearest float32. The
    /// rescale's cancellation (sqrt(acp) - sqrt(acp_T)) magnifies those last-ulp differences: diffusers'
    /// float32 table is itself 2.8e-6 away from exact arithmetic (the fixture's float64 replica). Kiri
    /// mirrors diffusers' float32 steps with correctly rounded arithmetic and stays within 1.3e-6 of it;
    /// that case alone gets 2e-6.
    static func tolerance(_ schedule: String) -> Double {
        schedule == "discrete rescale_zero_snr" ? 2e-6 : 1e-6
    }

    func testEveryScheduleMatchesItsReference() throws {
        let cases = try Self.loadFixtures().compactMap(Self.parityCase)
        XCTAssertGreaterThan(cases.count, 80)
        var worst: [String: Double] = [:]
        for (schedule, expression, want) in cases {
            let got = numbers("print(#(\(expression)))\n" + printing(expression))
            guard let count = got.first else { continue }
            XCTAssertEqual(Int(count), want.count, "\(expression): length")
            let error = worstRelativeError(Array(got.dropFirst()), want)
            worst[schedule] = max(worst[schedule] ?? 0, error)
            XCTAssertLessThanOrEqual(error, Self.tolerance(schedule), "\(expression)")
        }
        for name in ["karras", "exponential", "polyexponential", "vp", "discrete", "discrete rescale_zero_snr", "normal",
                     "sgm_uniform", "simple", "ddim_uniform", "beta", "linear_quadratic", "kl_optimal", "ays", "laplace", "flow"] {
            XCTAssertNotNil(worst[name], "no fixture case for \(name)")
        }
        for (name, error) in worst.sorted(by: { $0.key < $1.key }) {
            print(String(format: "schedule parity %-28@ max relative error %.2e", name as NSString, error))
        }
    }

    func testBetaQuantilesMatchScipy() throws {
        let betaCases = try Self.loadFixtures().filter { if case .text("beta")? = $0["name"] { return true } else { return false } }
        XCTAssertFalse(betaCases.isEmpty)
        for fixture in betaCases {
            guard case .table(let params)? = fixture["params"], let steps = params["n"]?.lua,
                  let alpha = params["alpha"]?.lua, let beta = params["beta"]?.lua else { return XCTFail("beta case") }
            let want = fixture["ppf"]?.numbers ?? []
            let got = numbers("""
                local S = require "lib.schedule"
                \(printing("(function() local r = {} for i, f in ipairs(S.linspace(0, 1, \(steps), false)) do r[i] = S.beta_ppf(1 - f, \(alpha), \(beta)) end return r end)()"))
                """)
            XCTAssertEqual(got.count, want.count)
            XCTAssertFalse(want.isEmpty)
            for (g, w) in zip(got, want) { XCTAssertEqual(g, w, accuracy: 1e-9, "scipy.stats.beta.ppf") }
        }
    }

    // MARK: - Closed forms

    func testKarrasEndpointsAndFormula() {
        let got = numbers(printing("kiri.schedules.karras{n = 6, sigma_min = 0.1, sigma_max = 20, rho = 5}"))
        let want = (0..<6).map { i -> Double in
            let ramp = Double(i) / 5
            return pow(pow(20, 1.0 / 5) + ramp * (pow(0.1, 1.0 / 5) - pow(20, 1.0 / 5)), 5)
        } + [0]
        assertClose(got, want, relative: 1e-6, "karras")
        XCTAssertEqual(got.first!, 20, accuracy: 20 * 1e-7)
        XCTAssertEqual(got[5], 0.1, accuracy: 0.1 * 1e-7)
    }

    func testExponentialIsGeometricAndPolyexponentialOfRhoOneEqualsIt() {
        let exponential = numbers(printing("kiri.schedules.exponential{n = 5, sigma_min = 0.5, sigma_max = 8}"))
        assertClose(exponential, [8, 4, 2, 1, 0.5, 0], relative: 1e-6, "exponential")
        let poly = numbers(printing("kiri.schedules.polyexponential{n = 5, sigma_min = 0.5, sigma_max = 8, rho = 1}"))
        assertClose(poly, exponential, relative: 1e-6, "polyexponential rho = 1")
        let square = numbers(printing("kiri.schedules.polyexponential{n = 3, sigma_min = 1, sigma_max = 16, rho = 2}"))
        // log2 sigma = 4 * ramp^2 with ramp = 1, 1/2, 0
        assertClose(square, [16, 2, 1, 0], relative: 1e-6, "polyexponential rho = 2")
    }

    func testContinuousRangeDefaultsToStableDiffusionsDiscreteModel() {
        let sd = numbers(printing("kiri.schedules.karras{n = 4}"))
        let table = numbers(printing("require('lib.schedule').model{}.sigmas"))
        XCTAssertEqual(table.count, 1000)
        // sigma_t = sqrt((1 - acp_t) / acp_t) of SD's scaled_linear betas; beta_0 = 0.00085
        XCTAssertEqual(table[0], sqrt(0.00085 / (1 - 0.00085)), accuracy: 1e-7 * table[0])
        XCTAssertEqual(sd.first!, table.last!)
        XCTAssertEqual(sd[3], table[0])
    }

    func testVariancePreservingEndpoints() {
        let got = numbers(printing("kiri.schedules.vp{n = 3}"))
        let sigma = { (t: Double) in sqrt(exp(19.9 * t * t / 2 + 0.1 * t) - 1) }
        assertClose(got, [sigma(1), sigma((1 + 1e-3) / 2), sigma(1e-3), 0], relative: 1e-6, "vp")
    }

    func testDiscreteSpacingsPickTheirTimesteps() {
        // leading with 1000 / 4: timesteps 750, 500, 250, 0 (+ steps_offset), read straight from the table
        let table = numbers(printing("require('lib.schedule').sigmas_from_alphas_cumprod(require('lib.schedule').alphas_cumprod({}, require('lib.schedule').f32), require('lib.schedule').f32)"))
        let leading = numbers(printing("kiri.schedules.discrete{n = 4, spacing = 'leading', steps_offset = 1}"))
        XCTAssertEqual(leading, [table[751], table[501], table[251], table[1], 0])
        let trailing = numbers(printing("kiri.schedules.discrete{n = 4, spacing = 'trailing'}"))
        XCTAssertEqual(trailing, [table[999], table[749], table[499], table[249], 0])
        // linspace of 999 over 3 steps: 999, 499.5, 0; the middle one interpolated linearly in sigma
        let linspace = numbers(printing("kiri.schedules.discrete{n = 3, spacing = 'linspace'}"))
        XCTAssertEqual(linspace[0], table[999])
        XCTAssertEqual(linspace[1], (table[499] + table[500]) / 2, accuracy: 1e-6 * linspace[1])
        XCTAssertEqual(linspace[2], table[0])
        // diffusers keeps betas and alphas in float32: 1 - alpha_0 is then 0.00085002 rather than
        // 0.00085, which moves sigma_0 by 1.3e-5 from the exact 0.0291672 (ComfyUI's, in float64)
        let root = Float(0.00085.squareRoot()), alpha = 1 - root * root
        XCTAssertEqual(table[0], Double(((1 - alpha) / alpha).squareRoot()), accuracy: 1e-6 * table[0])
        XCTAssertGreaterThan(abs(table[0] - sqrt(0.00085 / (1 - 0.00085))), 1e-5 * table[0])
    }

    func testZeroTerminalSNRStartsAtTheLargestFiniteSigmaOfDiffusers() {
        let got = numbers(printing("kiri.schedules.discrete{n = 10, spacing = 'trailing', rescale_zero_snr = true}"))
        // alphas_cumprod[N-1] = 2^-24, so sigma = sqrt(2^24 - 1)
        XCTAssertEqual(got[0], sqrt(16777215), accuracy: 1e-6 * 4096)
        let plain = numbers(printing("kiri.schedules.discrete{n = 10, spacing = 'trailing'}"))
        XCTAssertEqual(got.last!, 0)
        XCTAssertGreaterThan(got[1], plain[1], "rescaling raises the noise of late timesteps")
    }

    func testFlowWithoutShiftIsLinearAndShiftMapsEachSigma() {
        let plain = numbers(printing("kiri.schedules.flow{n = 4}"))
        let bottom = Double(Float(0.001))
        assertClose(plain, [1, 1 - (1 - bottom) / 3, 1 - 2 * (1 - bottom) / 3, bottom, 0], relative: 1e-6, "flow shift = 1")
        let shifted = numbers(printing("kiri.schedules.flow{n = 4, shift = 3}"))
        let shift = { (s: Double) in 3 * s / (1 + 2 * s) }
        let low = shift(bottom)
        let base = [1, 1 - (1 - low) / 3, 1 - 2 * (1 - low) / 3, low]
        assertClose(shifted, base.map(shift) + [0], relative: 1e-6, "flow shift = 3 (diffusers shifts sigma_min twice)")
        let dynamic = numbers(printing("kiri.schedules.flow{n = 2, mu = 1.15}"))
        assertClose(dynamic, [1, exp(1.15) / (exp(1.15) + 1 / bottom - 1), 0], relative: 1e-6, "flow mu")
    }

    func testAlignYourStepsKeepsTheTableAtTenStepsAndInterpolatesLogLinearly() {
        let ten = numbers(printing("kiri.schedules.ays{n = 10, model = 'sdxl'}"))
        assertClose(ten, [14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141,
                          0.5550693289, 0.3798540708, 0.2332364134, 0.1114188177, 0], relative: 1e-6, "ays sdxl")
        // 20 steps: every other value is the geometric mean of its table neighbours
        let twenty = numbers(printing("kiri.schedules.ays{n = 20}"))
        XCTAssertEqual(twenty.count, 21)
        XCTAssertEqual(twenty[1], sqrt(14.6146412293 * 6.4745760956), accuracy: 1e-6 * twenty[1])
        XCTAssertEqual(twenty[2], 6.4745760956, accuracy: 1e-6 * twenty[2])
    }

    func testKLOptimalIsEvenInArctangent() {
        let got = numbers(printing("kiri.schedules.kl_optimal{n = 3, sigma_min = 0.5, sigma_max = 10}"))
        assertClose(got, [10, tan((atan(0.5) + atan(10)) / 2), 0.5, 0], relative: 1e-6, "kl_optimal")
    }

    func testLaplaceIsSymmetricInLogSigmaAndClamped() {
        let got = numbers(printing("kiri.schedules.laplace{n = 5, sigma_min = 0.01, sigma_max = 100, mu = 0, beta = 0.5}"))
        // x = 0, 1/4, 1/2, 3/4, 1: log sigma = -/+ 0.5 log(1 - 2|0.5 - x| + 1e-5)
        let quarter = exp(-0.5 * log(0.5 + 1e-5))
        assertClose(got, [100, quarter, 1, 1 / quarter, 0.01, 0], relative: 1e-6, "laplace")
    }

    func testComfySchedulesReadTheModelTable() {
        let table = numbers(printing("require('lib.schedule').model{}.sigmas"))
        let simple = numbers(printing("kiri.schedules.simple{n = 4}"))
        XCTAssertEqual(simple, [table[999], table[749], table[499], table[249], 0])
        let ddim = numbers(printing("kiri.schedules.ddim_uniform{n = 4}"))
        XCTAssertEqual(ddim, [table[751], table[501], table[251], table[1], 0])
        let normal = numbers(printing("kiri.schedules.normal{n = 4}"))
        XCTAssertEqual(normal[0], table[999], accuracy: 1e-6 * table[999])
        XCTAssertEqual(normal[1], table[666], accuracy: 1e-6 * table[666])
        XCTAssertEqual(normal[3], table[0], accuracy: 1e-6 * table[0])
        let sgm = numbers(printing("kiri.schedules.sgm_uniform{n = 4}"))
        // 5 timesteps 999, 749.25, 499.5, 249.75, 0; the last one dropped
        XCTAssertEqual(sgm[3], exp(0.25 * log(table[249]) + 0.75 * log(table[250])), accuracy: 1e-6 * sgm[3])
        XCTAssertEqual(sgm.last!, 0)
        let custom = numbers(printing("kiri.schedules.simple{n = 2, sigmas = {4, 3, 2, 1}}"))
        XCTAssertEqual(custom, [4, 2, 0], "a model table given as sigmas=, in either order")
        let linear = numbers(printing("kiri.schedules.linear_quadratic{n = 2}"))
        XCTAssertEqual(linear, [table[999], Double(Float(Float(1 - 0.025) * Float(table[999]))), 0])
    }

    func testBetaQuantileClosedForms() {
        let got = numbers("""
            local S = require "lib.schedule"
            for _, q in ipairs{0.1, 0.37, 0.5, 0.9} do
                print(S.beta_ppf(q, 1, 1), S.beta_ppf(q, 1, 3), S.beta_ppf(q, 2.5, 1), S.beta_ppf(q, 0.5, 0.5))
            end
            """)
        XCTAssertEqual(got.count, 16)
        for (row, q) in [0.1, 0.37, 0.5, 0.9].enumerated() {
            let values = Array(got[(row * 4)..<(row * 4 + 4)])
            XCTAssertEqual(values[0], q, accuracy: 1e-12, "uniform")
            XCTAssertEqual(values[1], 1 - pow(1 - q, 1.0 / 3), accuracy: 1e-12, "I_x(1, b) = 1 - (1 - x)^b")
            XCTAssertEqual(values[2], pow(q, 1 / 2.5), accuracy: 1e-12, "I_x(a, 1) = x^a")
            XCTAssertEqual(values[3], pow(sin(Double.pi * q / 2), 2), accuracy: 1e-12, "arcsine distribution")
        }
    }

    // MARK: - User lists

    func testAUserListBecomesASchedule() {
        XCTAssertEqual(numbers(printing("require('lib.schedule').as_sigmas{3, 2, 2, 0.5, 0}")), [3, 2, 2, 0.5, 0])
        XCTAssertEqual(numbers(printing("require('lib.schedule').as_sigmas(kiri.tensor{1, 0})")), [1, 0])
        let rejected: [(String, String)] = [
            ("{1, 2, 0}", "larger than sigmas[1]"),
            ("{2, 1}", "the last sigma must be 0"),
            ("{2, 0/0, 0}", "not finite"),
            ("{math.huge, 1, 0}", "not finite"),
            ("{0}", "at least 2 values"),
            ("{2, 0, 0}", "only the last sigma may be 0"),
            ("{2, 'a', 0}", "entry 2 is string"),
            ("'x'", "a list of numbers or a 1-D tensor expected"),
        ]
        for (list, message) in rejected {
            let failure = luaError("require('lib.schedule').as_sigmas(\(list))")
            XCTAssertNotNil(failure, list)
            XCTAssertTrue(failure.map { "\($0)".contains(message) } ?? false, "\(list): \(String(describing: failure))")
            XCTAssertTrue(failure.map { "\($0)".contains("test.lua:1") } ?? false, "the error points at the caller")
        }
        XCTAssertTrue(luaError("kiri.schedules.karras{n = 0}").map { "\($0)".contains("n must be a positive integer") } ?? false)
        XCTAssertTrue(luaError("kiri.schedules.discrete{n = 3, spacing = 'odd'}").map { "\($0)".contains("unknown spacing") } ?? false)
    }

    // MARK: - Model wrappers

    /// A recipe prefix: Gaussian data N(m, s^2) with its exact denoiser, a noised point, and the
    /// posterior means E[x0 | x] and E[eps | x] at sigma, from which each raw network is built.
    let gaussian = """
        local m, s = 0.7, 1.3
        local function exact(x, sigma) return (x - m) * (s ^ 2 / (s ^ 2 + sigma ^ 2)) + m end
        local x0 = kiri.tensor{{0.2, -1.5}, {2.0, 0.4}}
        local noise = kiri.tensor{{1.1, -0.3}, {-0.8, 0.5}}
        local function worst(a, b) return ((a - b):abs():max()) / (b:abs():max()) end

        """

    func testEachPredictionTypeGivesTheExactDenoiserFromItsExactNetwork() {
        let got = numbers(gaussian + """
            for _, sigma in ipairs{0.05, 0.9, 7.5} do
                local x = kiri.noise.add(x0, sigma, noise)
                local want = exact(x, sigma)
                local eps_model
                eps_model = kiri.models.wrap{prediction = "eps", network = function(x_in, t)
                    -- VP form: x_in = x / sqrt(1 + sigma^2); the network knows sigma only through t
                    local sg = eps_model.t_to_sigma(t)
                    local xs = x_in * math.sqrt(1 + sg ^ 2)
                    return (xs - exact(xs, sg)) / sg
                end}
                local v_model
                v_model = kiri.models.wrap{prediction = "v", network = function(x_in, t)
                    -- v = sqrt(acp) eps - sqrt(1 - acp) x0 with acp = 1 / (1 + sigma^2) (Salimans & Ho 2022)
                    local sg = v_model.t_to_sigma(t)
                    local xs = x_in * math.sqrt(1 + sg ^ 2)
                    local x0_hat = exact(xs, sg)
                    local acp = 1 / (1 + sg ^ 2)
                    return (xs - x0_hat) / sg * math.sqrt(acp) - x0_hat * math.sqrt(1 - acp)
                end}
                local x0_model
                x0_model = kiri.models.wrap{prediction = "x0", network = function(x_in, t)
                    local sg = x0_model.t_to_sigma(t)
                    return exact(x_in * math.sqrt(1 + sg ^ 2), sg)
                end}
                local edm_model = kiri.models.wrap{prediction = "edm", sigma_data = 0.5, network = function(x_in, c_noise)
                    -- Karras et al. 2022 Table 1: F's target (x0 - c_skip x) / c_out, sigma = exp(4 c_noise)
                    local sg = math.exp(4 * c_noise)
                    local xs = x_in * math.sqrt(sg ^ 2 + 0.25)
                    local c_skip, c_out = 0.25 / (sg ^ 2 + 0.25), sg * 0.5 / math.sqrt(sg ^ 2 + 0.25)
                    return (exact(xs, sg) - xs * c_skip) / c_out
                end}
                print(worst(eps_model(x, sigma), want), worst(v_model(x, sigma), want),
                      worst(x0_model(x, sigma), want), worst(edm_model(x, sigma), want))
            end
            """)
        XCTAssertEqual(got.count, 12)
        for error in got { XCTAssertLessThan(error, 1e-5) }
    }

    func testFlowPredictionGivesTheFlowPosteriorMean() {
        let got = numbers(gaussian + """
            for _, sigma in ipairs{0.1, 0.5, 0.95} do
                -- x = (1 - sigma) x0 + sigma eps; the exact posterior mean of x0 for x0 ~ N(m, s^2)
                local x = x0 * (1 - sigma) + noise * sigma
                local a = 1 - sigma
                local function mean(xs) return (xs - a * m) * (a * s ^ 2 / (a ^ 2 * s ^ 2 + sigma ^ 2)) + m end
                local seen
                local model = kiri.models.wrap{prediction = "flow", network = function(x_in, t)
                    seen = t
                    local x0_hat = mean(x_in)
                    return (x_in - x0_hat * a) / sigma - x0_hat   -- velocity eps - x0
                end}
                print(worst(model(x, sigma), mean(x)), seen - 1000 * sigma)
            end
            """)
        XCTAssertEqual(got.count, 6)
        for (index, error) in got.enumerated() {
            XCTAssertLessThan(abs(error), index % 2 == 0 ? 1e-5 : 1e-9)
        }
    }

    func testPreconditioningCoefficients() {
        let got = numbers("""
            for _, prediction in ipairs{"eps", "v", "x0", "flow", "edm"} do
                print(kiri.models.wrap{network = function() end, prediction = prediction}.scalings(2))
            end
            print(kiri.models.wrap{network = function() end, prediction = "edm"}.timestep(math.exp(2)))
            """)
        let want: [Double] = [1, -2, 1 / sqrt(5),
                              1.0 / 5, -2 / sqrt(5), 1 / sqrt(5),
                              0, 1, 1 / sqrt(5),
                              1, -2, 1,
                              0.25 / 4.25, 2 * 0.5 / sqrt(4.25), 1 / sqrt(4.25),
                              0.5]
        assertClose(got.map { abs($0) < 1e-300 ? 0 : $0 }, want, relative: 1e-12, "c_skip, c_out, c_in")
    }

    func testSigmaToTimestepFollowsDiscreteSchedule() {
        let got = numbers("""
            local D = kiri.models.wrap{network = function() end}
            local S = require "lib.schedule"
            local table_sigmas = D.sigmas
            print(D.sigma_to_t(table_sigmas[1]), D.sigma_to_t(table_sigmas[500]), D.sigma_to_t(table_sigmas[1000]))
            -- between two entries: linear in log sigma
            local between = math.exp(0.3 * math.log(table_sigmas[11]) + 0.7 * math.log(table_sigmas[12]))
            print(D.sigma_to_t(between), D.sigma_to_t(between, true))
            -- round trips
            for _, t in ipairs{0, 1, 17.25, 499.5, 998.75, 999} do print(D.sigma_to_t(D.t_to_sigma(t)) - t) end
            -- outside the table: clamped
            print(D.sigma_to_t(1e-4), D.sigma_to_t(1e4))
            local Q = kiri.models.wrap{network = function() end, quantize = true}
            print(Q.timestep(between), Q.timestep(table_sigmas[321]))
            """)
        XCTAssertEqual(got.count, 15)
        // the table's logs are kept in float32 (as ComfyUI and k-diffusion keep them): 1e-4 of a step
        for (index, want) in [0.0, 499, 999].enumerated() { XCTAssertEqual(got[index], want, accuracy: 1e-4) }
        XCTAssertEqual(got[3], 10.7, accuracy: 1e-4)
        XCTAssertEqual(got[4], 11)
        for residual in got[5..<11] { XCTAssertEqual(residual, 0, accuracy: 1e-9) }
        XCTAssertEqual(got[11], 0)
        XCTAssertEqual(got[12], 999)
        XCTAssertEqual(Array(got[13...]), [11, 320])
    }

    func testWrapPassesTheTimestepAndExtraToTheNetwork() {
        let got = numbers("""
            local D = kiri.models.wrap{network = function(x_in, t, extra) print(t, extra.scale) return x_in * 0 end,
                                       timestep = function(sigma) return sigma * 10 end}
            local out = D(kiri.ones{2}, 3, {scale = 4})
            print(out[1])
            """)
        XCTAssertEqual(got, [30, 4, 1])
        XCTAssertTrue(luaError("kiri.models.wrap{network = print, prediction = 'score'}").map { "\($0)".contains("unknown prediction 'score'") } ?? false)
        XCTAssertTrue(luaError("kiri.models.wrap{}").map { "\($0)".contains("network = function") } ?? false)
    }

    // MARK: - Forward process

    func testForwardProcess() {
        let got = numbers(gaussian + """
            local x = kiri.noise.add(x0, 2.5, noise)
            print(worst(x, x0 + noise * 2.5))
            -- q(x_t | x_0) at t = 0: acp = 1 - beta_0 (Stable Diffusion's beta_0 = 0.00085)
            local q = kiri.noise.q_sample(x0, 0, noise)
            print(worst(q, x0 * math.sqrt(1 - 0.00085) + noise * math.sqrt(0.00085)))
            -- scaled by 1 / sqrt(acp_t), q_sample is add with that timestep's sigma
            local S = require "lib.schedule"
            local acp = S.alphas_cumprod({}, S.f32)[601]
            local sigma = math.sqrt((1 - acp) / acp)
            print(worst(kiri.noise.q_sample(x0, 600, noise) / math.sqrt(acp), kiri.noise.add(x0, sigma, noise)))
            """)
        XCTAssertEqual(got.count, 3)
        for error in got { XCTAssertLessThan(error, 1e-6) }
        XCTAssertTrue(luaError("kiri.noise.q_sample(kiri.ones{1}, 1000, kiri.ones{1})").map { "\($0)".contains("a timestep 0..999 expected") } ?? false)
    }
}
