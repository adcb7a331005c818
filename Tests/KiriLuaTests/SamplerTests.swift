import Foundation
import XCTest
@testable import KiriLua

/// The k-diffusion samplers, the noise samplers and the exact denoisers (issue 3, items 3-5), proved
/// three ways: parity with k-diffusion 0.1.1 on a Gaussian mixture (Tests/Fixtures/sampling), the
/// convergence order that theory gives on Gaussian data, and the sample statistics of the stochastic
/// samplers. Each Lua check prints what it measured and a `FAIL` line for each assertion that failed,
/// so a test log shows the numbers either way.
final class SamplerTests: XCTestCase {
    static let limits = SandboxLimits(timeout: 300, memory: 2 << 30)

    /// Runs `source` and fails the test for each `FAIL` line it prints.
    func check(_ source: String, file: StaticString = #filePath, line: UInt = #line) {
        checkLua(Self.helpers + source, limits: Self.limits, file: file, line: line)
    }

    /// Lua helpers for every check: an inline Karras schedule (so the tests do not depend on the
    /// schedule plugins), `expect`, and a least-squares slope.
    static let helpers = #"""
    local function karras(n, sigma_min, sigma_max, rho)
        rho = rho or 7
        local sigmas = {}
        for i = 1, n do
            local ramp = (i - 1) / (n - 1)
            sigmas[i] = (sigma_max ^ (1 / rho) + ramp * (sigma_min ^ (1 / rho) - sigma_max ^ (1 / rho))) ^ rho
        end
        sigmas[n + 1] = 0
        return sigmas
    end
    local function expect(ok, message, ...)
        if not ok then print("FAIL " .. string.format(message, ...)) end
    end
    -- the slope of the least-squares line through (log x, log y)
    local function slope(xs, ys)
        local n, sx, sy, sxx, sxy = #xs, 0, 0, 0, 0
        for k = 1, n do
            local u, v = math.log(xs[k]), math.log(ys[k])
            sx, sy, sxx, sxy = sx + u, sy + v, sxx + u * u, sxy + u * v
        end
        return (n * sxy - sx * sy) / (n * sxx - sx * sx)
    end
    local function copy(t, extra)
        local out = {}
        for k, v in pairs(t) do out[k] = v end
        for k, v in pairs(extra or {}) do out[k] = v end
        return out
    end

    """#

    // MARK: - Convergence order on Gaussian data

    /// For data N(m, s^2) the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma is linear, and its
    /// solution from x_T at sigma_max is m + sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_max^2) * (x_T - m). Each
    /// deterministic sampler runs on Karras sigmas (sigma_min 1e-4, so that the final step to 0 adds an error
    /// of s^2 / (s^2 + sigma_min^2) vs s / sqrt(...), about 2e-8, far below the errors measured) at
    /// several step counts; the order is minus the least-squares slope of log error against log steps.
    /// Step counts keep the error between ~1e-1 and ~3e-5, above the float32 floor (~2e-6 here, the
    /// rounding of ~300 steps on values of size 1) and in the asymptotic range.
    ///
    /// Expected orders: Euler 1; Heun, DPM-2 and DPM-Solver++ (2S, SDE with eta 0, 2M, 2M SDE with eta 0) 2;
    /// LMS 4 (its first three steps are of order 1-3, whose error on this nearly linear-in-sigma start is
    /// small, so the fitted slope reaches ~3.6 at these counts: tolerance 0.5); DPM-Solver-fast 3 with
    /// n = 2 (mod 3) model calls (orders 3, ..., 3, 2; with n = 0 or 1 (mod 3) its final first-order step
    /// would cap it at 2); DPM-Solver++(3M) SDE with eta 0 2, not 3: k-diffusion's (and DPM-Solver's)
    /// multistep third-order term is `- phi_3 * D2` with D2 = (D1_0 - D1_1) / (r0 + r1), which is h^2 D''/2,
    /// while the Taylor term of the exact solution is -phi_3 h^2 D'', so the local error stays O(h^3).
    /// (With 2 phi_3 the same code measures order ~3.) Tolerance 0.2 for orders 1-2, 0.3-0.4 for the
    /// higher ones, whose slopes converge more slowly.
    func testConvergenceOrderOnGaussianData() {
        check(#"""
        local m, s, sigma_max, sigma_min = 0.3, 0.5, 80, 1e-4
        local model = kiri.models.gaussian{mean = m, std = s}
        local x_T = kiri.tensor({-1.5, 0.7, 2.0}) * sigma_max + m
        local function exact(sigma) return (x_T - m) * ((s ^ 2 + sigma ^ 2) ^ 0.5 / (s ^ 2 + sigma_max ^ 2) ^ 0.5) + m end
        local cases = {
            {"euler", {}, 1, 0.2, {20, 40, 80, 160}},
            {"euler_ancestral", {eta = 0}, 1, 0.2, {20, 40, 80, 160}},
            {"heun", {}, 2, 0.2, {40, 80, 160, 320}},
            {"dpm_2", {}, 2, 0.2, {40, 80, 160, 320}},
            {"dpm_2_ancestral", {eta = 0}, 2, 0.2, {40, 80, 160, 320}},
            {"dpmpp_2m", {}, 2, 0.2, {40, 80, 160, 320}},
            {"dpmpp_2s_ancestral", {eta = 0}, 2, 0.2, {40, 80, 160, 320}},
            {"dpmpp_sde", {eta = 0}, 2, 0.2, {40, 80, 160, 320}},
            {"dpmpp_2m_sde", {eta = 0, solver_type = "midpoint"}, 2, 0.2, {40, 80, 160, 320}},
            {"dpmpp_2m_sde", {eta = 0, solver_type = "heun"}, 2, 0.2, {40, 80, 160, 320}},
            {"dpmpp_3m_sde", {eta = 0}, 2, 0.3, {80, 160, 320}},
            {"lms", {}, 4, 0.5, {40, 80, 160}},
            {"dpm_fast", {}, 3, 0.4, {23, 47, 95}},
        }
        for _, case in ipairs(cases) do
            local name, opts, order, tolerance, counts = table.unpack(case)
            local errors, line = {}, ""
            for k, n in ipairs(counts) do
                local x = kiri.samplers[name](model, x_T, karras(n, sigma_min, sigma_max), opts)
                -- dpm_fast stops at sigma_min, as in k-diffusion
                errors[k] = (x - exact(name == "dpm_fast" and sigma_min or 0)):abs():max()
                line = line .. string.format("  n=%d %.2e", n, errors[k])
            end
            local measured = -slope(counts, errors)
            print(string.format("%-20s %-9s order %.2f (expected %d +- %.1f)%s", name, opts.solver_type or "",
                measured, order, tolerance, line))
            expect(math.abs(measured - order) <= tolerance, "%s %s: order %.2f, expected %d +- %.1f", name,
                opts.solver_type or "", measured, order, tolerance)
        end
        """#)
    }

    /// DPM-Solver-12/23 chooses its own steps: its global error should follow the tolerance. With
    /// atol = rtol/10 and solutions of size ~1, a locally controlled solver's global error is a modest
    /// multiple of rtol (errors accumulate over its 10-400 steps); we allow 20 rtol, and require a 100x
    /// tighter tolerance to buy at least a 10x smaller error.
    func testDPMAdaptiveFollowsItsTolerance() {
        check(#"""
        local m, s, sigma_max, sigma_min = 0.3, 0.5, 80, 1e-4
        local model = kiri.models.gaussian{mean = m, std = s}
        local x_T = kiri.tensor({-1.5, 0.7, 2.0}) * sigma_max + m
        local exact = (x_T - m) * ((s ^ 2 + sigma_min ^ 2) ^ 0.5 / (s ^ 2 + sigma_max ^ 2) ^ 0.5) + m
        for _, order in ipairs({2, 3}) do
            local errors = {}
            for k, rtol in ipairs({1e-3, 1e-4, 1e-5}) do
                local x, info = kiri.samplers.dpm_adaptive(model, x_T, {sigma_max, sigma_min, 0},
                    {order = order, rtol = rtol, atol = rtol / 10})
                errors[k] = (x - exact):abs():max()
                print(string.format("dpm_adaptive order %d rtol %.0e: error %.2e, nfe %d (%d accepted, %d rejected)",
                    order, rtol, errors[k], info.nfe, info.n_accept, info.n_reject))
                expect(errors[k] <= 20 * rtol, "dpm_adaptive order %d rtol %g: error %.3g > 20 rtol", order, rtol, errors[k])
            end
            expect(errors[3] < errors[1] / 10, "dpm_adaptive order %d: error %.3g at rtol 1e-5 vs %.3g at 1e-3",
                order, errors[3], errors[1])
        end
        """#)
    }

    // MARK: - Stochastic samplers on Gaussian data

    /// Each stochastic sampler turns `count` = 20000 draws of x_T ~ N(m, s^2 + sigma_max^2) (the exact marginal
    /// at sigma_max) into samples that should be N(m, s^2), m = 0.3, s = 0.5.
    ///
    /// Tolerance. For n iid normal samples of mean mu and std sd, the sample mean has standard error
    /// sd/sqrt(n) and the sample std sd/sqrt(2(n - 1)) (delta method; the sample variance has variance
    /// 2 sd^4/(n - 1)). Here s/sqrt(n) = 0.0035 and s/sqrt(2n) = 0.0025. We allow 4 standard errors (a correct
    /// sampler fails a check with probability 6e-5) plus the discretisation bias:
    /// - mean: no bias. The denoiser is affine about m, D(x) - m = k(sigma) (x - m), so every step maps x - m
    ///   linearly and adds zero-mean noise: the chain's mean is m exactly. |mean - m| <= 4 s/sqrt(n).
    /// - std: |std - s| <= 4 s/sqrt(2n) + beta, with beta = 0.02 s the discretisation bias we allow at the
    ///   step counts used (100 steps; 1000 for the first-order Euler ancestral and Euler with churn, whose
    ///   bias is O(1/steps): -5% and -10% at 100 steps).
    /// The bias is not guessed: because the chain is affine in (x_T - m) and the noise draws, its exact
    /// law is N(m, A^2 (s^2 + sigma_max^2) + sum_j c_j^2) over independent unit normals. `law_std` finds A
    /// by running the sampler once with zero noise, then every c_j in one more run on a tensor with one
    /// column per unit normal, the noise sampler returning each draw's coefficients (one-hot for
    /// independent Gaussian draws; for the Brownian tree, the increments of W over the grid of all queried
    /// t = -log sigma, which is how dpmpp_sde's overlapping queries are correlated). The test checks that
    /// this exact std is within beta of s, and that the Monte Carlo std matches it within 4 standard errors
    /// (which tests the noise samplers' law too).
    func testStochasticSamplersMatchTheDataDistribution() {
        check(#"""
        local m, s, sigma_max, sigma_min, count = 0.3, 0.5, 80, 0.01, 20000
        local model = kiri.models.gaussian{mean = m, std = s}
        local beta = 0.02 * s
        local mean_tolerance, std_tolerance = 4 * s / count ^ 0.5, 4 * s / (2 * (count - 1)) ^ 0.5

        local function law_std(name, sigmas, opts, brownian)
            local queries = {}
            local gain = kiri.samplers[name](model, kiri.tensor({m + 1}), sigmas, copy(opts, {
                noise_sampler = function(sigma, sigma_next)
                    queries[#queries + 1] = {sigma, sigma_next}
                    return kiri.zeros({1})
                end})):item() - m
            local rows, columns = {}, #queries
            if brownian then
                local points, seen = {}, {}
                for _, query in ipairs(queries) do
                    for _, sigma in ipairs(query) do
                        local t = -math.log(sigma)
                        if not seen[t] then seen[t] = true; points[#points + 1] = t end
                    end
                end
                table.sort(points)
                columns = #points - 1
                for j, query in ipairs(queries) do
                    local a, b = -math.log(query[1]), -math.log(query[2])
                    local low, high, sign = math.min(a, b), math.max(a, b), b > a and 1 or -1
                    rows[j] = {}
                    for k = 1, columns do
                        local inside = points[k] >= low and points[k + 1] <= high
                        rows[j][k] = inside and sign * ((points[k + 1] - points[k]) / (high - low)) ^ 0.5 or 0
                    end
                end
            end
            local variance = gain ^ 2 * (s ^ 2 + sigma_max ^ 2)
            if columns > 0 then
                local call = 0
                local y = kiri.samplers[name](model, kiri.full({columns}, m), sigmas, copy(opts, {
                    noise_sampler = function()
                        call = call + 1
                        if brownian then return kiri.tensor(rows[call]) end
                        local row = kiri.zeros({columns})   -- independent draws: one unit normal each
                        row[call] = 1
                        return row
                    end})) - m
                variance = variance + (y * y):sum()
            end
            return variance ^ 0.5
        end

        local cases = {
            {"euler_ancestral", {}, 1000},
            {"dpm_2_ancestral", {}, 100},
            {"dpmpp_2s_ancestral", {}, 100},
            {"dpmpp_sde", {}, 100, true},
            {"dpmpp_2m_sde", {solver_type = "midpoint"}, 100, true},
            {"dpmpp_2m_sde", {solver_type = "heun"}, 100, true},
            {"dpmpp_3m_sde", {}, 100, true},
            {"euler", {s_churn = 40}, 1000},
            {"heun", {s_churn = 40}, 100},
            {"dpm_2", {s_churn = 40}, 100},
        }
        print(string.format("n = %d: allowed |mean - m| %.4f, |std - s| %.4f + bias %.4f", count, mean_tolerance,
            std_tolerance, beta))
        for index, case in ipairs(cases) do
            local name, opts, steps, brownian = table.unpack(case)
            local label = name .. (opts.solver_type and " " .. opts.solver_type or "") .. (opts.s_churn and " churn" or "")
            local sigmas = karras(steps, sigma_min, sigma_max)
            local x_T = kiri.randn({count}, 1000 + index) * (s ^ 2 + sigma_max ^ 2) ^ 0.5 + m
            local x = kiri.samplers[name](model, x_T, sigmas, copy(opts, {seed = index}))
            local mean, std, law = x:mean(), x:std(), law_std(name, sigmas, opts, brownian)
            print(string.format("%-26s %4d steps: mean %.4f  std %.4f  exact law std %.4f (bias %+.2f%%)", label, steps,
                mean, std, law, (law - s) / s * 100))
            expect(math.abs(mean - m) <= mean_tolerance, "%s: mean %.4f, expected %.4f +- %.4f", label, mean, m, mean_tolerance)
            expect(math.abs(std - s) <= std_tolerance + beta, "%s: std %.4f, expected %.4f +- %.4f", label, std, s,
                std_tolerance + beta)
            expect(math.abs(law - s) <= beta, "%s: discretisation bias %.4f exceeds %.4f", label, law - s, beta)
            expect(math.abs(std - law) <= 4 * law / (2 * (count - 1)) ^ 0.5, "%s: std %.4f vs the chain's exact %.4f",
                label, std, law)
        end
        """#)
    }

    // MARK: - Noise samplers

    /// kiri.noise.brownian_tree returns (W(t_next) - W(t)) / sqrt(|t_next - t|) for one Brownian path per
    /// element, t = -log sigma. With 40000 elements, a correlation or variance estimated from them has
    /// standard error ~1/sqrt(40000) = 0.005 (0.007 for a variance); 5 standard errors are allowed.
    func testBrownianTreeIsABrownianMotion() {
        check(#"""
        local size = 40000
        local x = kiri.zeros({size})
        local sigma_min, sigma_max = 0.03, 14.6
        local function tree(seed) return kiri.noise.brownian_tree(x, sigma_min, sigma_max, seed) end
        local function correlation(a, b) return (a * b):mean() end   -- unit-variance, zero-mean draws
        local tolerance = 5 / size ^ 0.5
        -- sigma points: the ends, a sampler-like grid, points closer than a tree leaf
        local points = {14.6, 9.1, 5.0, 2.2, 1.0, 0.999999, 0.4, 0.1, 0.03}

        -- Variance: each normalised increment is N(0, 1), for long and very short intervals.
        local noise = tree(1)
        for k = 1, #points - 1 do
            local draw = noise(points[k], points[k + 1])
            expect(math.abs(draw:var() - 1) <= 5 * (2 / size) ^ 0.5, "var over (%g, %g) is %.4f", points[k], points[k + 1], draw:var())
            expect(math.abs(draw:mean()) <= tolerance, "mean over (%g, %g) is %.4f", points[k], points[k + 1], draw:mean())
        end
        local long = noise(14.6, 0.03)
        print(string.format("brownian_tree: var over the whole range %.4f, over (1, 0.999999) %.4f", long:var(),
            noise(1, 0.999999):var()))

        -- Disjoint intervals are independent; overlapping ones share exactly their common part:
        -- corr(W(b) - W(a), W(c) - W(a)) = sqrt((b - a) / (c - a)) for a < b < c.
        local worst = 0
        for k = 1, #points - 2 do
            local first, second = noise(points[k], points[k + 1]), noise(points[k + 1], points[k + 2])
            worst = math.max(worst, math.abs(correlation(first, second)))
        end
        print(string.format("brownian_tree: largest correlation of adjacent increments %.4f (allowed %.4f)", worst, tolerance))
        expect(worst <= tolerance, "adjacent increments correlate: %.4f", worst)
        local a, b, c = -math.log(9.1), -math.log(2.2), -math.log(0.1)
        local overlap = correlation(noise(9.1, 2.2), noise(9.1, 0.1))
        expect(math.abs(overlap - ((b - a) / (c - a)) ^ 0.5) <= tolerance, "overlap correlation %.4f, expected %.4f",
            overlap, ((b - a) / (c - a)) ^ 0.5)

        -- Increments add up along the path (to float32 rounding).
        local d = -math.log(0.4)
        local whole = noise(9.1, 0.4) * (d - a) ^ 0.5
        local parts = noise(9.1, 2.2) * (b - a) ^ 0.5 + noise(2.2, 0.4) * (d - b) ^ 0.5
        local additivity = (whole - parts):abs():max()
        expect(additivity <= 1e-5, "W(0.4) - W(9.1) differs from the sum of its parts by %.3g", additivity)

        -- The same seed gives the same path whatever the order of the queries; another seed another path.
        local forward, backward, shuffled = tree(7), tree(7), tree(7)
        local answers = {}
        for k = 1, #points - 1 do answers[k] = forward(points[k], points[k + 1]) end
        for k = #points - 1, 1, -1 do
            local difference = (backward(points[k], points[k + 1]) - answers[k]):abs():max()
            expect(difference == 0, "reverse-order query %d differs by %.3g", k, difference)
        end
        for _, k in ipairs({5, 1, 8, 3, 6, 2, 7, 4}) do
            shuffled(0.4, 14.6)   -- unrelated queries in between
            local difference = (shuffled(points[k], points[k + 1]) - answers[k]):abs():max()
            expect(difference == 0, "shuffled query %d differs by %.3g", k, difference)
        end
        local other = correlation(tree(8)(9.1, 2.2), answers[2])
        expect(math.abs(other) <= tolerance, "seeds 7 and 8 correlate: %.4f", other)
        print("brownian_tree: forward, reverse and shuffled queries agree exactly")
        """#)
    }

    /// kiri.noise.gaussian draws independent N(0, I) tensors, the same ones for the same seed.
    func testGaussianNoiseSamplerIsSeededAndIndependent() {
        check(#"""
        local x = kiri.zeros({40000})
        local noise, again = kiri.noise.gaussian(x, 3), kiri.noise.gaussian(x, 3)
        local first, second = noise(2, 1), noise(1, 0.5)
        expect((again(2, 1) - first):abs():max() == 0, "seeded draws differ")
        expect(math.abs(first:var() - 1) < 0.035 and math.abs(first:mean()) < 0.025, "not N(0, 1): mean %.4f var %.4f",
            first:mean(), first:var())
        local correlation = (first * second):mean()
        expect(math.abs(correlation) < 0.025, "successive draws correlate: %.4f", correlation)
        local other = (kiri.noise.gaussian(x, 4)(2, 1) * first):mean()
        expect(math.abs(other) < 0.025, "seeds 3 and 4 correlate: %.4f", other)
        print(string.format("gaussian noise: mean %.4f var %.4f, successive correlation %.4f", first:mean(), first:var(),
            correlation))
        """#)
    }

    // MARK: - Helpers of lib.sampling

    func testSamplingHelpers() {
        check(#"""
        local sampling = require "lib.sampling"
        -- ancestral step: sigma_down^2 + sigma_up^2 = sigma_to^2; eta = 0 is deterministic
        for _, eta in ipairs({0, 0.5, 1}) do
            local down, up = sampling.ancestral_step(3, 2, eta)
            expect(math.abs(down ^ 2 + up ^ 2 - 4) < 1e-12, "ancestral_step eta %g: %g^2 + %g^2", eta, down, up)
        end
        expect(select(2, sampling.ancestral_step(3, 2, 0)) == 0, "eta 0 adds noise")
        -- LMS weights integrate polynomials of degree < order exactly: sum_j c_j p(t[i - j]) = integral of p
        local t = {14, 9, 5.5, 3.1, 1.2, 0.4}
        for order = 1, 4 do
            local i = 5
            local sum, moment = 0, 0
            for j = 0, order - 1 do
                local c = sampling.linear_multistep_coeff(order, t, i, j)
                sum, moment = sum + c, moment + c * t[i - j] ^ (order - 1)
            end
            expect(math.abs(sum - (t[i + 1] - t[i])) < 1e-12, "order %d weights sum to %g", order, sum)
            local exact = (t[i + 1] ^ order - t[i] ^ order) / order
            expect(math.abs(moment - exact) < 1e-10, "order %d: integral of t^%d is %.12g, expected %.12g", order,
                order - 1, moment, exact)
        end
        expect(math.abs(sampling.expm1(1e-10) - 1.00000000005e-10) < 1e-24, "expm1(1e-10) = %.17g", sampling.expm1(1e-10))
        expect(math.abs(sampling.expm1(-0.5) - (math.exp(-0.5) - 1)) < 1e-16, "expm1(-0.5)")
        local appended = sampling.append_zero(kiri.tensor({3, 1}))
        expect(#appended == 3 and appended[3] == 0, "append_zero")
        local low, high = sampling.sigma_range({14, 3, 0.5, 0})
        expect(low == 0.5 and high == 14, "sigma_range %g %g", low, high)
        print("lib.sampling helpers ok")
        """#)
    }

    // MARK: - Exact denoisers

    /// gmm against the formula of lua-api.md evaluated independently in Lua's double precision; far points
    /// (where the responsibilities underflow without log-sum-exp) stay finite; dataset = gmm with zero stds.
    func testExactDenoisers() {
        check(#"""
        local means, stds, weights = {{-2, 0}, {2, 1}, {0, -2.5}}, {0.3, 0.5, 0.4}, {0.5, 0.3, 0.2}
        local gmm = kiri.models.gmm{means = kiri.tensor(means), stds = stds, weights = weights}
        local function reference(point, sigma, component_stds, component_weights)
            local logs, total = {}, 0
            for k = 1, #means do
                local v = component_stds[k] ^ 2 + sigma ^ 2
                local distance = (point[1] - means[k][1]) ^ 2 + (point[2] - means[k][2]) ^ 2
                logs[k] = math.log(component_weights[k]) - math.log(2 * math.pi * v) - distance / (2 * v)
            end
            local top = math.max(table.unpack(logs))
            for k = 1, #means do logs[k] = math.exp(logs[k] - top); total = total + logs[k] end
            local out = {0, 0}
            for k = 1, #means do
                local shrink = component_stds[k] ^ 2 / (component_stds[k] ^ 2 + sigma ^ 2)
                for d = 1, 2 do
                    out[d] = out[d] + logs[k] / total * (means[k][d] + shrink * (point[d] - means[k][d]))
                end
            end
            return out
        end
        local points = {{1, 1}, {-2.5, 0.3}, {0.2, -2}, {40, -30}, {1e3, 1e3}}
        local worst = 0
        for _, sigma in ipairs({0.01, 0.3, 1, 5, 80}) do
            local got = gmm(kiri.tensor(points), sigma):totable()
            for p, point in ipairs(points) do
                local want = reference(point, sigma, stds, weights)
                for d = 1, 2 do worst = math.max(worst, math.abs(got[p][d] - want[d]) / math.max(1, math.abs(want[d]))) end
            end
        end
        print(string.format("gmm vs double-precision reference: max error %.2e", worst))
        expect(worst < 1e-5, "gmm differs from the reference by %.3g", worst)
        expect((gmm(kiri.tensor(points), 0) - kiri.tensor(points)):abs():max() == 0, "D(x, 0) ~= x")
        local single = gmm(kiri.tensor({1, 1}), 0.3):totable()
        local want = reference({1, 1}, 0.3, stds, weights)
        expect(math.abs(single[1] - want[1]) < 1e-5 and math.abs(single[2] - want[2]) < 1e-5, "a 1-D point")

        local gaussian = kiri.models.gaussian{mean = 0.3, std = 0.5}
        local value = gaussian(kiri.tensor({2}), 1.5)[1]
        expect(math.abs(value - (0.3 + 0.25 / (0.25 + 2.25) * 1.7)) < 1e-6, "gaussian gives %.8g", value)

        -- the data set's denoiser is the responsibility-weighted mean of the samples
        local samples = {{0, 0}, {1, 0}, {0, 2}, {3, 3}}
        local dataset = kiri.models.dataset{samples = kiri.tensor(samples)}
        local worst_dataset = 0
        for _, sigma in ipairs({0.05, 0.5, 3}) do
            for _, point in ipairs({{0.9, 0.1}, {2, 2}, {-5, 7}}) do
                local logs, total, out = {}, 0, {0, 0}
                for k, sample in ipairs(samples) do
                    logs[k] = -((point[1] - sample[1]) ^ 2 + (point[2] - sample[2]) ^ 2) / (2 * sigma ^ 2)
                end
                local top = math.max(table.unpack(logs))
                for k = 1, #samples do logs[k] = math.exp(logs[k] - top); total = total + logs[k] end
                for k, sample in ipairs(samples) do
                    for d = 1, 2 do out[d] = out[d] + logs[k] / total * sample[d] end
                end
                local got = dataset(kiri.tensor({point}), sigma):totable()[1]
                for d = 1, 2 do worst_dataset = math.max(worst_dataset, math.abs(got[d] - out[d])) end
            end
        end
        print(string.format("dataset vs double-precision reference: max error %.2e", worst_dataset))
        expect(worst_dataset < 1e-5, "dataset differs from the reference by %.3g", worst_dataset)
        """#)
    }

    // MARK: - Parity with k-diffusion 0.1.1

    static let fixtureFile = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/sampling/samplers.json")

    static let kDiffusionSamplers: Set<String> = [
        "euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive",
        "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde",
    ]

    /// Every k-diffusion case of samplers.json (README there): same GMM, sigmas and initial x; stochastic
    /// cases replay the recorded noise through opts.noise_sampler (the arguments of each call are
    /// checked against the recorded ones). Compared: the final x, every callback's x, denoised, sigma and
    /// sigma_hat, and the sigma of every model call, to 1e-5 relative (the largest |value| of the
    /// reference tensor is the scale). dpm_adaptive's final x too; its intermediate steps are compared at
    /// 1e-3, because the PID controller turns float32 rounding in its first, tiny error estimate (3e-7)
    /// into step sizes that differ by ~1e-4 from the float64 reference (the end point does not move).
    /// The flow cases (euler/heun with sigma = t) use D_flow(x, t) = D(x / (1 - t), t / (1 - t)).
    func testParityWithKDiffusion() throws {
        let data = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: Self.fixtureFile))
        guard case .object(var root) = data, case .array(let cases)? = root["cases"] else {
            return XCTFail("unexpected samplers.json layout")
        }
        root["cases"] = .array(cases.filter {
            if case .object(let fields) = $0, case .string(let sampler)? = fields["sampler"] {
                return Self.kDiffusionSamplers.contains(sampler)
            }
            return false
        })
        root["diffusers_cases"] = nil
        check("local data = " + JSONValue.object(root).lua + "\n" + #"""
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

        local worst_denoiser = 0
        for _, case in ipairs(data.denoiser_checks) do
            if case.model == "gmm" then
                worst_denoiser = math.max(worst_denoiser, relative(gmm(kiri.tensor(case.x), case.sigma), case.denoised))
            end
        end
        print(string.format("%-28s %-16s final x %.2e", "gmm denoiser", "13 points x 8", worst_denoiser))
        expect(worst_denoiser <= 1e-5, "gmm denoiser: %.3g", worst_denoiser)

        local summary = {}
        for _, case in ipairs(data.cases) do
            local flow_case = case.x_init == "z"
            local model = flow_case and flow or gmm
            local sigmas = case.sigmas and data.sigma_sets[case.sigmas] or {case.options.sigma_max, case.options.sigma_min, 0}
            local label = case.name .. " " .. (case.sigmas or "")
            local x_init = kiri.tensor(data.x_inits[case.x_init])
            -- the recorded draws that the reference used (churn draws at gamma = 0 are discarded)
            local draws = {}
            for j, call in ipairs(case.noise_calls) do
                if call.used then draws[#draws + 1] = {noise = case.noise[j], call = call} end
            end
            local drawn = 0
            local opts = copy(case.options, {noise_sampler = function(sigma, sigma_next)
                drawn = drawn + 1
                local draw = draws[drawn]
                if not draw then return kiri.zeros_like(x_init) end   -- multiplied by 0 (eta = 0, last step)
                if draw.call.via == "noise_sampler" then
                    expect(ratio(sigma, draw.call.sigma) < 1e-9 and ratio(sigma_next, draw.call.sigma_next) < 1e-9,
                        "%s: noise call %d at (%.9g, %.9g), reference (%.9g, %.9g)", label, drawn, sigma, sigma_next,
                        draw.call.sigma, draw.call.sigma_next)
                end
                return kiri.tensor(draw.noise)
            end})
            local step_tolerance = case.sampler == "dpm_adaptive" and 1e-3 or 1e-5
            local model_sigmas, steps, step_error, sigma_error = {}, 0, 0, 0
            opts.callback = function(info)
                steps = steps + 1
                local reference = case.steps[steps]
                if not reference then return end
                expect(info.i == reference.i + 1, "%s: callback i %d, reference %d (0-based)", label, info.i, reference.i)
                step_error = math.max(step_error, relative(info.x, reference.x), relative(info.denoised, reference.denoised))
                if reference.sigma then sigma_error = math.max(sigma_error, ratio(info.sigma, reference.sigma)) end
                if reference.sigma_hat then sigma_error = math.max(sigma_error, ratio(info.sigma_hat, reference.sigma_hat)) end
                if reference.n_accept then
                    expect(info.nfe == reference.nfe and info.n_accept == reference.n_accept and
                        info.n_reject == reference.n_reject, "%s: step %d counts", label, steps)
                end
            end
            local x = kiri.samplers[case.sampler](function(x, sigma, extra)
                model_sigmas[#model_sigmas + 1] = sigma
                return model(x, sigma, extra)
            end, x_init, sigmas, opts)
            for j, sigma in ipairs(case.model_sigmas) do
                sigma_error = math.max(sigma_error, ratio(model_sigmas[j] or 0, sigma))
            end
            local final = relative(x, case.x_final)
            print(string.format("%-28s %-16s final x %.2e  steps %.2e  sigmas %.1e  nfe %d  noise draws %d",
                case.name, case.sigmas or "", final, step_error, sigma_error, #model_sigmas, #draws))
            expect(final <= 1e-5, "%s: final x differs by %.3g", label, final)
            expect(step_error <= step_tolerance, "%s: a step differs by %.3g", label, step_error)
            expect(sigma_error <= step_tolerance, "%s: a sigma differs by %.3g", label, sigma_error)
            expect(#model_sigmas == case.nfe, "%s: %d model calls, reference %d", label, #model_sigmas, case.nfe)
            expect(steps == #case.steps, "%s: %d callbacks, reference %d", label, steps, #case.steps)
            expect(drawn >= #draws, "%s: %d noise draws, reference %d", label, drawn, #draws)
            summary[case.sampler] = math.max(summary[case.sampler] or 0, final, case.sampler == "dpm_adaptive" and 0 or step_error)
        end
        local names = {}
        for name in pairs(summary) do names[#names + 1] = name end
        table.sort(names)
        for _, name in ipairs(names) do print(string.format("parity %-20s max relative error %.2e", name, summary[name])) end
        expect(#names == 13, "%d k-diffusion samplers covered, expected 13", #names)
        """#)
    }
}

extension SamplerTests {
    /// A JSON document, decoded without Foundation's number/boolean ambiguity, and written as a Lua literal.
    enum JSONValue: Decodable {
        case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

        init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if container.decodeNil() { self = .null }
            else if let value = try? container.decode(Bool.self) { self = .bool(value) }
            else if let value = try? container.decode(Double.self) { self = .number(value) }
            else if let value = try? container.decode(String.self) { self = .string(value) }
            else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
            else { self = .object(try container.decode([String: JSONValue].self)) }
        }

        /// Lua source for the value; numbers round-trip exactly, the string "inf" becomes math.huge.
        var lua: String {
            switch self {
            case .null: return "nil"
            case .bool(let value): return value ? "true" : "false"
            case .number(let value): return value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : "\(value)"
            case .string(let value): return value == "inf" ? "math.huge" : "\"" + value.replacingOccurrences(of: "\\", with: "\\\\")
                .replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n") + "\""
            case .array(let values): return "{" + values.map(\.lua).joined(separator: ",") + "}"
            case .object(let fields): return "{" + fields.map { "[\"\($0.key)\"]=\($0.value.lua)" }.joined(separator: ",") + "}"
            }
        }
    }
}
