import Foundation
import XCTest
@testable import KiriLua

/// The samplers beyond k-diffusion's 13 (issue 3, item 3: ddim, ddpm, ipndm, ipndm_v, deis, unipc,
/// heunpp2, lcm, res_multistep, er_sde, restart, euler_flow, heun_flow), proved as SamplerTests proves
/// k-diffusion's: parity with ComfyUI / AUTOMATIC1111 ports and diffusers (Tests/Fixtures/sampling), the
/// convergence order on Gaussian data, and the law of the stochastic samplers' output. The Lua checks
/// use SamplerTests.helpers (`expect`, `slope`, `copy`) and print their numbers; each `FAIL` line fails
/// the test.
final class ExtraSamplerTests: XCTestCase {
    static let limits = SandboxLimits(timeout: 300, memory: 2 << 30)

    func check(_ source: String, file: StaticString = #filePath, line: UInt = #line) {
        checkLua(SamplerTests.helpers + source, limits: Self.limits, file: file, line: line)
    }

    /// A double-precision stand-in for a one-element tensor. The samplers only add, subtract, scale and
    /// `axpy_`/`add_` their tensors, so on a model that takes and returns these they run in double
    /// precision: float32 rounding (~1e-6 relative) would hide the error of third- and fourth-order
    /// methods long before their slopes settle.
    static let scalar = #"""
    local Scalar = {}
    Scalar.__index = Scalar
    local function scalar(v) return setmetatable({v = v}, Scalar) end
    local function value(a) return type(a) == "table" and a.v or a end
    Scalar.__add = function(a, b) return scalar(value(a) + value(b)) end
    Scalar.__sub = function(a, b) return scalar(value(a) - value(b)) end
    Scalar.__mul = function(a, b) return scalar(value(a) * value(b)) end
    Scalar.__div = function(a, b) return scalar(value(a) / value(b)) end
    Scalar.__unm = function(a) return scalar(-a.v) end
    function Scalar:axpy_(alpha, other) self.v = self.v + alpha * value(other); return self end
    function Scalar:add_(other) self.v = self.v + value(other); return self end
    function Scalar:clone() return scalar(self.v) end
    function Scalar:sum() return self.v end   -- the samplers' finiteness check (case 19)

    """#

    // MARK: - Convergence order on Gaussian data

    /// Data N(m, s^2), s = 1, m = 0.5: the probability-flow ODE from x_T at sigma_max has the solution
    /// x(sigma) = m + sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_max^2) (x_T - m). The runs stop at
    /// sigma_min = 0.05 s and compare with x(sigma_min): a last step to 0 replaces x by the denoised
    /// estimate, whose error against x(0) does not shrink with the step count on Karras sigmas (the last
    /// positive sigma stays sigma_min). sigma_max = 80 s: the lower-order starting steps of the multistep
    /// methods then act where x is nearly linear in sigma (x'' ~ s^2 / sigma^3), so their O(h^2) error stays
    /// below 1% of the total at these step counts and the slopes show the formulas' own orders. The order is
    /// minus the least-squares slope of log error against log steps, over step counts past the
    /// pre-asymptotic range (each line prints its errors).
    ///
    /// Orders that theory gives, and why:
    /// - ddim (= Euler in sigma), heunpp2: 1. heunpp2's weights w2 = sigma_{i+1} / (3 sigma_1),
    ///   w3 = sigma_{i+2} / (3 sigma_1) vanish at small sigma, where it becomes Euler; its local error
    ///   h^2 x'' (w2 + 2 w3 - 1/2) is second order only where w2 + 2 w3 = 1/2.
    /// - ipndm: 2 on Karras sigmas. Its fixed Adams-Bashforth-4 weights are exact for equal steps only; with
    ///   step ratios 1 + O(h) the condition sum_j w_j (sigma_{i-j} - sigma_i) = h^2 / 2 fails by O(h^2).
    /// - ipndm_v: its order-4 weights sum to 1 only where consecutive step ratios are equal and are third
    ///   order on such grids: 3 on exponential (geometric) sigmas; on Karras sigmas the sum is off by
    ///   O(1/n^2), so the order drops to 2. With max_order 3 its weights approach Adams-Bashforth 3 on smooth
    ///   grids: 3 on Karras.
    /// - deis (three-step, polynomial extrapolation in VP time): 3.
    /// - unipc, bh1 and bh2 (three-step predictor, one-step-higher corrector): 4 without lower_order_final;
    ///   with it (the default), the first-order last step makes it 2.
    /// - res_multistep (RES two-step exponential integrator): 2.
    /// Tolerances: 0.05 for orders 1-2, 0.1 for 3-4 (their slopes are still moving by a few hundredths).
    /// The tensor runs at 32 steps must agree with the double-precision runs to 1e-5 relative.
    func testConvergenceOrderOnGaussianData() {
        check(Self.scalar + #"""
        local m, s, sigma_max, sigma_min = 0.5, 1.0, 80, 0.05
        local function model(x, sigma) return (x - m) * (s ^ 2 / (s ^ 2 + sigma ^ 2)) + m end
        local x_T = m + math.sqrt(s ^ 2 + sigma_max ^ 2)
        local exact = m + math.sqrt(s ^ 2 + sigma_min ^ 2) / math.sqrt(s ^ 2 + sigma_max ^ 2) * (x_T - m)
        -- steps + 1 sigmas from sigma_max to sigma_min, no final 0
        local grids = {
            karras = function(u) return (sigma_max ^ (1 / 7) + u * (sigma_min ^ (1 / 7) - sigma_max ^ (1 / 7))) ^ 7 end,
            exponential = function(u) return math.exp(math.log(sigma_max) + u * (math.log(sigma_min) - math.log(sigma_max))) end,
        }
        local function schedule(grid, steps)
            local sigmas = {}
            for k = 0, steps do sigmas[k + 1] = grids[grid](k / steps) end
            return sigmas
        end
        local cases = {
            {"ddim", {}, "karras", {128, 256, 512, 1024}, 1, 0.05},
            {"heunpp2", {}, "karras", {128, 256, 512, 1024}, 1, 0.05},
            {"ipndm", {}, "karras", {128, 256, 512, 1024}, 2, 0.05},
            {"ipndm_v", {}, "exponential", {256, 512, 1024, 2048}, 3, 0.1},
            {"ipndm_v", {}, "karras", {1024, 2048, 4096}, 2, 0.1},
            {"ipndm_v", {max_order = 3}, "karras", {256, 512, 1024, 2048}, 3, 0.1},
            {"deis", {}, "karras", {32, 64, 128, 256}, 3, 0.1},
            {"unipc", {lower_order_final = false}, "karras", {64, 128, 256, 512}, 4, 0.1},
            {"unipc_bh2", {lower_order_final = false}, "karras", {64, 128, 256, 512}, 4, 0.1},
            {"unipc", {}, "karras", {512, 1024, 2048, 4096}, 2, 0.05},
            {"res_multistep", {}, "karras", {128, 256, 512, 1024}, 2, 0.05},
        }
        for _, case in ipairs(cases) do
            local name, opts, grid, counts, order, tolerance = table.unpack(case)
            local errors, line = {}, ""
            for k, steps in ipairs(counts) do
                errors[k] = math.abs(value(kiri.samplers[name](model, scalar(x_T), schedule(grid, steps), opts)) - exact)
                line = line .. string.format("  %d: %.2e", steps, errors[k])
            end
            -- the same sampler on float32 tensors
            local sigmas = schedule(grid, 32)
            local double = value(kiri.samplers[name](model, scalar(x_T), sigmas, opts))
            local single = kiri.samplers[name](model, kiri.full({4}, x_T), sigmas, opts)
            local gap = (single - double):abs():max() / math.abs(double)
            local measured = -slope(counts, errors)
            local label = name .. (opts.max_order and " max_order 3" or "") .. (opts.lower_order_final == false and
                " no lower_order_final" or "") .. " (" .. grid .. ")"
            print(string.format("%-42s order %.3f (expected %d)%s  float32 gap %.1e", label, measured, order, line, gap))
            expect(math.abs(measured - order) <= tolerance, "%s: order %.3f, expected %d", label, measured, order)
            expect(gap <= 1e-5, "%s: float32 run differs from the double one by %.3g", label, gap)
        end
        """#)
    }

    /// Flow matching with x_t = (1 - t) x0 + t noise and data N(m, s^2): the denoiser is
    /// D(x, t) = m + (1 - t) s^2 / ((1 - t)^2 s^2 + t^2) (x - (1 - t) m), and the flow ODE from x_1 = u gives
    /// x_t = (1 - t) m + sqrt((1 - t)^2 s^2 + t^2) u, so x_0 = m + s u. On shifted flow times
    /// (t = 3u / (1 + 2u), u uniform, as kiri.schedules.flow with shift 3) ending at 0: euler_flow has
    /// order 1, heun_flow 2 (its last step is Euler, local error O(h^2)). Sigmas above 1 are refused.
    func testFlowSamplers() {
        check(Self.scalar + #"""
        local m, s, u = 0.5, 0.7, 1.3
        local function model(x, t) local a = 1 - t; return (x - a * m) * (a * s ^ 2 / (a ^ 2 * s ^ 2 + t ^ 2)) + m end
        for name, order in pairs{euler_flow = 1, heun_flow = 2} do
            local counts, errors = {64, 128, 256, 512}, {}
            for k, steps in ipairs(counts) do
                local times = {}
                for j = 0, steps do local v = 1 - j / steps; times[j + 1] = 3 * v / (1 + 2 * v) end
                errors[k] = math.abs(value(kiri.samplers[name](model, scalar(u), times)) - (m + s * u))
            end
            local measured = -slope(counts, errors)
            print(string.format("%-10s order %.3f (expected %d), error at 512 steps %.2e", name, measured, order, errors[4]))
            expect(math.abs(measured - order) <= 0.05, "%s: order %.3f", name, measured)
            local ok, message = pcall(kiri.samplers[name], model, kiri.zeros({2}), {14.6, 1, 0})
            expect(not ok and tostring(message):find("flow times in %[0, 1%]"), "%s accepted sigma 14.6: %s", name, tostring(message))
        end
        """#)
    }

    // MARK: - The law of the stochastic samplers

    /// An affine form c + sum_k a_k v_k in independent standard normals (v_0 starts the chain, v_k is the
    /// k-th noise draw). On Gaussian data the denoiser is affine, so a sampler run on forms, with a noise
    /// sampler that hands out fresh variables, returns its output exactly as such a form: its law is
    /// N(c, sum_k a_k^2), computed without sampling error, in double precision.
    static let form = #"""
    local Form = {}
    Form.__index = Form
    local function form(constant, terms) return setmetatable({constant = constant, terms = terms or {}}, Form) end
    local function combine(a, alpha, b, beta)   -- alpha a + beta b
        if type(a) == "number" then a = form(a) end
        if type(b) == "number" then b = form(b) end
        local terms = {}
        for k, v in pairs(a.terms) do terms[k] = alpha * v end
        for k, v in pairs(b.terms) do terms[k] = (terms[k] or 0) + beta * v end
        return form(alpha * a.constant + beta * b.constant, terms)
    end
    Form.__add = function(a, b) return combine(a, 1, b, 1) end
    Form.__sub = function(a, b) return combine(a, 1, b, -1) end
    Form.__mul = function(a, b) if type(a) == "number" then a, b = b, a end return combine(a, b, 0, 0) end
    Form.__div = function(a, b) return combine(a, 1 / b, 0, 0) end
    Form.__unm = function(a) return combine(a, -1, 0, 0) end
    function Form:axpy_(alpha, other)
        local sum = combine(self, 1, other, alpha)
        self.constant, self.terms = sum.constant, sum.terms
        return self
    end
    function Form:add_(other) return self:axpy_(1, other) end
    function Form:clone() return combine(self, 1, 0, 0) end
    function Form:sum() return self.constant end   -- the samplers' finiteness check (case 19)
    function Form:law()
        local variance = 0
        for _, a in pairs(self.terms) do variance = variance + a * a end
        return self.constant, math.sqrt(variance)
    end
    -- runs `name` on forms from x_T ~ N(mean, std^2); returns the mean and std of its output
    local function law(name, model, x_mean, x_std, sigmas, opts)
        local draws = 0
        local form_opts = setmetatable({noise_sampler = function()
            draws = draws + 1
            return form(0, {[draws] = 1})
        end}, {__index = opts})
        return kiri.samplers[name](model, form(x_mean, {[0] = x_std}), sigmas, form_opts):law()
    end

    """#

    /// Data N(m, s^2), m = 0.5, s = 1; x_T = m + sqrt(s^2 + sigma_max^2) z is the exact marginal at
    /// sigma_max = 80, so an exact sampler ends at N(m, s^2). Every chain here ends with x = denoised at
    /// sigma_min = 0.02, so the target is that law denoised once: N(m, s_T^2), s_T = s^2 / sqrt(s^2 + sigma_min^2).
    ///
    /// Two checks per sampler. (1) Its exact output law N(mu, tau^2) (affine forms, above): mu = m to 1e-9,
    /// and the discretisation bias |tau - s_T| under the bound listed (printed; the first-order ancestral
    /// steps of ddpm and ddim halve it when the steps double, which is also checked).
    /// (2) N = 40000 samples, seeded Gaussian noise: the sample mean has standard error tau / sqrt(N)
    /// (0.005) and, the output being Gaussian, the sample standard deviation has standard error
    /// tau / sqrt(2 (N - 1)) (delta method: Var(S^2) = 2 tau^4 / (N - 1), so Var(S) ~ tau^2 / (2 (N - 1)),
    /// 0.0035). Both must lie within 5 standard errors of mu and tau (two-sided probability 6e-7 that a
    /// correct sampler fails; the seeds are fixed, so the outcome is reproducible). Hence, against the
    /// true distribution: |mean - m| <= 5 tau / sqrt(N) and |std - s_T| <= 5 tau / sqrt(2 (N - 1)) + bias.
    func testStochasticSamplersMatchTheDataDistribution() {
        check(Self.form + #"""
        local m, s, sigma_max, sigma_min, N = 0.5, 1.0, 80, 0.02, 40000
        local target = s ^ 2 / math.sqrt(s ^ 2 + sigma_min ^ 2)
        local model = kiri.models.gaussian{mean = m, std = s}
        local x_T = kiri.randn({N}, 20260601) * math.sqrt(s ^ 2 + sigma_max ^ 2) + m
        local cases = {
            {"ddpm", {}, 400, 0.015, true},
            {"ddim", {eta = 0.5}, 400, 0.01, true},
            {"res_multistep", {eta = 1}, 100, 0.005},
            {"er_sde", {}, 100, 0.002},
            {"restart", {restart_list = {{0.5, 21, 2, 3}}}, 60, 0.002},
        }
        for index, case in ipairs(cases) do
            local name, opts, steps, bound, halves = table.unpack(case)
            local sigmas = kiri.schedules.karras{n = steps, sigma_min = sigma_min, sigma_max = sigma_max}
            local mu, tau = law(name, model, m, math.sqrt(s ^ 2 + sigma_max ^ 2), sigmas, opts)
            local bias = tau - target
            expect(math.abs(mu - m) <= 1e-9, "%s: output mean %.12g, expected %g", name, mu, m)
            expect(math.abs(bias) <= bound, "%s: std of the output law %.5f, target %.5f", name, tau, target)
            if halves then
                local doubled = kiri.schedules.karras{n = 2 * steps, sigma_min = sigma_min, sigma_max = sigma_max}
                local _, tau_2 = law(name, model, m, math.sqrt(s ^ 2 + sigma_max ^ 2), doubled, opts)
                local ratio = (tau_2 - target) / bias
                expect(ratio > 0.4 and ratio < 0.6, "%s: bias ratio %.3f at twice the steps, expected 1/2", name, ratio)
            end

            local x = kiri.samplers[name](model, x_T, sigmas, copy(opts, {seed = index}))
            local mean, std = x:mean(), x:std()
            local mean_error, std_error = tau / math.sqrt(N), tau / math.sqrt(2 * (N - 1))
            print(string.format("%-14s %3d steps  law N(%.6f, %.5f^2), bias %+.1e  sample mean %.5f (%+.1f se) std %.5f (%+.1f se)",
                name, steps, mu, tau, bias, mean, (mean - mu) / mean_error, std, (std - tau) / std_error))
            expect(math.abs(mean - mu) <= 5 * mean_error, "%s: sample mean %.5f, law %.5f", name, mean, mu)
            expect(math.abs(std - tau) <= 5 * std_error, "%s: sample std %.5f, law %.5f", name, std, tau)
        end
        """#)
    }

    /// LCM (x = denoised, then x + sigma_next noise) is not a sampler of the data when the model is the
    /// posterior mean: with a_i = s^2 / (s^2 + sigma_i^2) the variance follows v_{i+1} = a_i^2 v_i + sigma_{i+1}^2,
    /// and the output has variance a_{n-1}^2 v_{n-1}. Checked: the exact output law against that recursion;
    /// one step from sigma to 0 returns D(x, sigma) itself; and with the exact consistency function
    /// f(x, sigma) = m + s / sqrt(s^2 + sigma^2) (x - m) (the probability-flow ODE's map to sigma = 0, what an
    /// LCM learns) as the model, every step's output is exactly N(m, s^2): the law is N(m, s^2) to 1e-10, and
    /// 40000 samples agree within 5 standard errors (see testStochasticSamplersMatchTheDataDistribution).
    func testLCM() {
        check(Self.form + #"""
        local m, s, sigma_max, N = 0.5, 1.0, 14.6, 40000
        local denoiser = kiri.models.gaussian{mean = m, std = s}
        local consistency = function(x, sigma) return (x - m) * (s / math.sqrt(s ^ 2 + sigma ^ 2)) + m end
        local sigmas = kiri.schedules.karras{n = 8, sigma_min = 0.03, sigma_max = sigma_max}

        local variance = s ^ 2 + sigma_max ^ 2
        for i = 1, #sigmas - 1 do
            variance = (s ^ 2 / (s ^ 2 + sigmas[i] ^ 2)) ^ 2 * variance + sigmas[i + 1] ^ 2
        end
        local mu, tau = law("lcm", denoiser, m, math.sqrt(s ^ 2 + sigma_max ^ 2), sigmas, {})
        print(string.format("lcm with the denoiser: law N(%.6f, %.6f^2), recursion std %.6f", mu, tau, math.sqrt(variance)))
        expect(math.abs(mu - m) < 1e-12 and math.abs(tau - math.sqrt(variance)) < 1e-12, "lcm law N(%g, %g^2)", mu, tau)

        local x = kiri.randn({16}, 3) * 10
        local one = kiri.samplers.lcm(denoiser, x, {10, 0})
        expect((one - denoiser(x, 10)):abs():max() == 0, "one lcm step is not D(x, sigma)")

        mu, tau = law("lcm", consistency, m, math.sqrt(s ^ 2 + sigma_max ^ 2), sigmas, {})
        expect(math.abs(mu - m) < 1e-10 and math.abs(tau - s) < 1e-10, "lcm with f: law N(%.12g, %.12g^2)", mu, tau)
        local samples = kiri.samplers.lcm(consistency, kiri.randn({N}, 8) * math.sqrt(s ^ 2 + sigma_max ^ 2) + m, sigmas, {seed = 9})
        local mean, std = samples:mean(), samples:std()
        print(string.format("lcm with the consistency function: law N(%.6f, %.6f^2), sample mean %.5f std %.5f", mu, tau, mean, std))
        expect(math.abs(mean - m) <= 5 * s / math.sqrt(N), "lcm sample mean %.5f", mean)
        expect(math.abs(std - s) <= 5 * s / math.sqrt(2 * (N - 1)), "lcm sample std %.5f", std)
        """#)
    }

    // MARK: - Thin samplers and options

    /// ddim is euler (eta 0) or euler_ancestral (eta > 0), ddpm is euler_ancestral with eta 1, unipc_bh2 is
    /// unipc with variant "bh2", and restart without restarts is heun: bit for bit, same seeds. The
    /// restart plan of A1111 for 20 steps and more (a Karras schedule of steps - 9 and one restart) makes
    /// 39 model calls at 20 steps, as the fixture records. A bad unipc variant names the options.
    func testThinSamplersAndOptions() {
        check(#"""
        local model = kiri.models.gaussian{mean = 0.5, std = 1}
        local x = kiri.randn({64}, 1) * 20
        local sigmas = kiri.schedules.karras{n = 10, sigma_min = 0.02, sigma_max = 20}
        local function same(a, b, label) expect((a - b):abs():max() == 0, "%s differs", label) end
        same(kiri.samplers.ddim(model, x, sigmas), kiri.samplers.euler(model, x, sigmas), "ddim vs euler")
        same(kiri.samplers.ddim(model, x, sigmas, {eta = 0.7, seed = 4}),
            kiri.samplers.euler_ancestral(model, x, sigmas, {eta = 0.7, seed = 4}), "ddim eta 0.7 vs euler_ancestral")
        same(kiri.samplers.ddpm(model, x, sigmas, {seed = 4}),
            kiri.samplers.euler_ancestral(model, x, sigmas, {eta = 1, seed = 4}), "ddpm vs euler_ancestral")
        same(kiri.samplers.unipc_bh2(model, x, sigmas), kiri.samplers.unipc(model, x, sigmas, {variant = "bh2"}), "unipc_bh2")
        same(kiri.samplers.restart(model, x, sigmas, {restart_list = {}}), kiri.samplers.heun(model, x, sigmas), "restart {}")
        same(kiri.samplers.restart(model, x, sigmas), kiri.samplers.heun(model, x, sigmas), "restart, 10 steps")
        local calls = 0
        kiri.samplers.restart(function(...) calls = calls + 1; return model(...) end, x,
            kiri.schedules.karras{n = 20, sigma_min = 0.02, sigma_max = 20}, {seed = 1})
        expect(calls == 39, "restart at 20 steps: %d model calls, expected 39", calls)
        local ok, message = pcall(kiri.samplers.unipc, model, x, sigmas, {variant = "bh3"})
        expect(not ok and tostring(message):find('variant "bh1" or "bh2" expected'), "unipc variant bh3: %s", tostring(message))
        print("thin samplers: ok")
        """#)
    }

    // MARK: - Parity with ComfyUI, AUTOMATIC1111 and diffusers

    static let samplers: Set<String> = [
        "ddim", "ddpm", "lcm", "heunpp2", "ipndm", "ipndm_v", "deis", "res_multistep", "er_sde", "unipc", "restart",
    ]

    /// The cases of samplers.json (README there) for these samplers, and the flow cases (k-diffusion's
    /// euler/heun with sigma = t, which are euler_flow/heun_flow): the same GMM, sigmas and initial x;
    /// recorded noise replayed through opts.noise_sampler (sigma arguments checked). Compared to 1e-5
    /// relative (the scale is the largest |value| of the reference): the final x, every callback's
    /// denoised and x (not unipc's x, which the reference reports as its internal x / sqrt(1 + sigma^2) after
    /// the step) and sigma (restart's reference reports the step's start as sigma_hat), and the sigma of
    /// every model call to 1e-6; the model call, callback and noise draw counts exactly.
    /// Then diffusers itself where the discretisation is the same in sigma: DDIMScheduler with eta 0 and 1
    /// and DDPMScheduler (ddim, ddpm on the equivalent sigmas from z / sqrt(alpha_bar)), UniPCMultistep-
    /// Scheduler bh1 (final sigma sigma_min; diffusers' x is alpha-scaled there) and bh2 to sigma 0
    /// (unipc with final_sigma = 0). diffusers' DEIS and LCM are other algorithms (README); not compared.
    func testParityWithFixtures() throws {
        let data = try JSONDecoder().decode(SamplerTests.JSONValue.self, from: Data(contentsOf: SamplerTests.fixtureFile))
        guard case .object(var root) = data, case .array(let cases)? = root["cases"] else {
            return XCTFail("unexpected samplers.json layout")
        }
        root["cases"] = .array(cases.filter {
            guard case .object(let fields) = $0, case .string(let sampler)? = fields["sampler"] else { return false }
            if case .string("z")? = fields["x_init"] { return true }
            return Self.samplers.contains(sampler)
        })
        check("local data = " + SamplerTests.JSONValue.object(root).lua + "\n" + #"""
        local problem = data.problem
        local gmm = kiri.models.gmm{means = kiri.tensor(problem.means), stds = problem.stds, weights = problem.weights}
        local prior_mean = kiri.matmul(kiri.tensor({problem.weights}), kiri.tensor(problem.means))
        local function flow(x, t)
            if t == 1 then return prior_mean:expand(x:shape()):clone() end
            return gmm(x / (1 - t), t / (1 - t))
        end
        local function relative(got, want)
            local reference = kiri.tensor(want)
            return (got - reference):abs():max() / reference:abs():max()
        end
        local function ratio(got, want) return math.abs(got - want) / math.abs(want) end

        local summary = {}
        for _, case in ipairs(data.cases) do
            local flow_case = case.x_init == "z"
            local sampler = flow_case and case.sampler .. "_flow" or case.sampler
            local model = flow_case and flow or gmm
            local label = case.name .. " " .. case.sigmas
            local x_init = kiri.tensor(data.x_inits[case.x_init])
            local drawn = 0
            local opts = copy(case.options, {noise_sampler = function(sigma, sigma_next)
                drawn = drawn + 1
                local call = case.noise_calls[drawn]
                if not call then return kiri.zeros_like(x_init) end
                if call.via == "noise_sampler" then
                    expect(ratio(sigma, call.sigma) < 1e-9 and ratio(sigma_next, call.sigma_next) < 1e-9,
                        "%s: noise call %d at (%.9g, %.9g), reference (%.9g, %.9g)", label, drawn, sigma, sigma_next,
                        call.sigma, call.sigma_next)
                end
                return kiri.tensor(case.noise[drawn])
            end})
            local compare_x = case.sampler ~= "unipc"
            local callbacks, step_error, sigma_error, model_sigmas = 0, 0, 0, {}
            opts.callback = function(info)
                callbacks = callbacks + 1
                local reference = case.steps[callbacks]
                if not reference then return end
                expect(not compare_x or info.i == reference.i + 1, "%s: callback i %d, reference %d (0-based)",
                    label, info.i, reference.i)
                step_error = math.max(step_error, relative(info.denoised, reference.denoised))
                if compare_x then step_error = math.max(step_error, relative(info.x, reference.x)) end
                local sigma = case.sampler == "restart" and reference.sigma_hat or reference.sigma
                if sigma and compare_x then sigma_error = math.max(sigma_error, ratio(info.sigma, sigma)) end
            end
            local x = kiri.samplers[sampler](function(x, sigma, extra)
                model_sigmas[#model_sigmas + 1] = sigma
                return model(x, sigma, extra)
            end, x_init, data.sigma_sets[case.sigmas], opts)
            for j, sigma in ipairs(case.model_sigmas) do
                sigma_error = math.max(sigma_error, ratio(model_sigmas[j] or 0, sigma))
            end
            local final = relative(x, case.x_final)
            print(string.format("%-24s %-16s %-14s final x %.2e  steps %.2e  sigmas %.1e  nfe %d  noise %d",
                case.name, case.sigmas, sampler, final, step_error, sigma_error, #model_sigmas, drawn))
            expect(final <= 1e-5, "%s: final x differs by %.3g", label, final)
            expect(step_error <= 1e-5, "%s: a step differs by %.3g", label, step_error)
            expect(sigma_error <= 1e-6, "%s: a sigma differs by %.3g", label, sigma_error)
            expect(#model_sigmas == case.nfe, "%s: %d model calls, reference %d", label, #model_sigmas, case.nfe)
            expect(callbacks == #case.steps, "%s: %d callbacks, reference %d", label, callbacks, #case.steps)
            expect(drawn == #case.noise, "%s: %d noise draws, reference %d", label, drawn, #case.noise)
            summary[sampler] = math.max(summary[sampler] or 0, final, step_error)
        end

        local runs = {
            ddim_eta0 = {"ddim", {}}, ddim_eta1 = {"ddim", {eta = 1}}, ddpm = {"ddpm", {}},
            unipc_bh1 = {"unipc", {variant = "bh1"}}, unipc_bh2 = {"unipc", {variant = "bh2", final_sigma = 0}},
        }
        for _, case in ipairs(data.diffusers_cases) do
            local equivalent, run = case.k_equivalent or case.k_comparison, runs[case.name]
            if run then
                local sampler, opts = table.unpack(run)
                local sigmas, drawn = equivalent.sigmas, 0
                opts.noise_sampler = function()
                    drawn = drawn + 1
                    return kiri.tensor(case.noise[drawn])
                end
                local x = kiri.samplers[sampler](gmm, kiri.tensor(equivalent.x_init), sigmas, opts)
                local want = kiri.tensor(case.x_final) * math.sqrt(1 + sigmas[#sigmas] ^ 2)
                local final = (x - want):abs():max() / want:abs():max()
                print(string.format("diffusers %-14s %-14s final x %.2e  noise %d", case.name, sampler, final, drawn))
                expect(final <= 1e-5, "diffusers %s: final x differs by %.3g", case.name, final)
                runs[case.name] = nil
                summary[sampler .. " vs diffusers"] = math.max(summary[sampler .. " vs diffusers"] or 0, final)
            end
        end
        expect(next(runs) == nil, "diffusers cases missing from the fixture")
        local names = {}
        for name in pairs(summary) do names[#names + 1] = name end
        table.sort(names)
        for _, name in ipairs(names) do print(string.format("parity %-22s max relative error %.2e", name, summary[name])) end
        expect(#names == 16, "%d samplers and diffusers comparisons covered, expected 16", #names)
        """#)
    }
}
