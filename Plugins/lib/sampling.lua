-- Shared maths of the samplers: to_d, the ancestral step, churn, noise, DPM-Solver time, LMS coefficients
-- Follows k-diffusion 0.1.1 k_diffusion/sampling.py (Crowson), whose helpers these are, and
-- Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based Generative Models",
-- arXiv:2206.00364. Samplers `require "lib.sampling"`; the names below are a stable API:
--
--   to_d(x, sigma, denoised)                   Karras ODE derivative dx/dsigma = (x - denoised) / sigma
--   ancestral_step(sigma_from, sigma_to, eta)  -> sigma_down, sigma_up (eta defaults to 1)
--   churn(x, sigmas, i, opts, noise_sampler)   -> x, sigma_hat: Karras Algorithm 2's noise increase
--   churned_derivative(model, x, sigmas, i, opts, noise_sampler)
--                                              -> x, sigma_hat, d: churn, denoise, to_d and callback, the
--                                              opening of every step of Karras Algorithm 2 (lines 4-7)
--   callback(opts, i, x, sigma, sigma_hat, denoised [, fields])
--                                              stops with an error naming the step and sigma if denoised
--                                              holds NaN or inf; then
--                                              calls opts.callback{i=, x=, sigma=, sigma_hat=, denoised=}
--                                              (i is the 1-based step: sigma == sigmas[i]); `fields`
--                                              adds entries. Tensors in info belong to the sampler.
--   noise_sampler(x, opts)                     opts.noise_sampler, else default_noise_sampler(x, opts.seed); a
--                                              list of seeds, one per sample, draws each sample's own stream
--   brownian_noise_sampler(x, sigmas, opts)    opts.noise_sampler, else a Brownian tree over the positive
--                                              sigmas, seeded by opts.seed (the SDE samplers' default)
--   default_noise_sampler(x, seed)             kiri.noise.gaussian(x, seed): independent N(0, I) draws
--   sigma_range(sigmas)                        -> smallest positive sigma, largest sigma
--   append_zero(sigmas)                        sigmas (tensor or list) with a 0 appended
--   t_fn(sigma), sigma_fn(t)                   DPM-Solver's time t = -log sigma (lambda in Lu et al.)
--   expm1(x)                                   exp(x) - 1 without cancellation for small x
--   dpmpp_update(x, t, t_next, denoised)       first-order DPM-Solver++ step (= DDIM) from t to t_next
--   midpoint_step(model, x, d, sigma, sigma_next, extra)
--                                              DPM-Solver-2 step in sigma, midpoint at sqrt(sigma*sigma_next)
--   linear_multistep_coeff(order, t, i, j)     LMS weight of the derivative at t[i - j] over [t[i], t[i+1]]
--   seed(seed), mix_seed(seed, index)          integer seeds for noise samplers
--
-- `sigmas` is a 1-D tensor or a Lua list (both index 1-based with numbers); sigma values are numbers.
local sampling = {}

function sampling.to_d(x, sigma, denoised)
    return (x - denoised) / sigma
end

-- k-diffusion get_ancestral_step: split the step sigma_from -> sigma_to into a deterministic step down to
-- sigma_down and fresh noise of size sigma_up, with sigma_down^2 + sigma_up^2 = sigma_to^2; eta scales
-- the noise (eta = 1 is DDPM's ancestral sampling, eta = 0 the ODE).
function sampling.ancestral_step(sigma_from, sigma_to, eta)
    eta = eta or 1
    if eta == 0 then return sigma_to, 0 end
    local sigma_up = math.min(sigma_to, eta * (sigma_to ^ 2 * (sigma_from ^ 2 - sigma_to ^ 2) / sigma_from ^ 2) ^ 0.5)
    local sigma_down = (sigma_to ^ 2 - sigma_up ^ 2) ^ 0.5
    return sigma_down, sigma_up
end

-- Karras et al. (2022), Algorithm 2, lines 4-6: where s_tmin <= sigma <= s_tmax, raise the noise level to
-- sigma_hat = sigma * (1 + gamma), gamma = min(s_churn / steps, sqrt 2 - 1), by adding noise of variance
-- sigma_hat^2 - sigma^2 (scaled by s_noise). The noise comes from noise_sampler(sigma, sigma_hat).
function sampling.churn(x, sigmas, i, opts, noise_sampler)
    local sigma = sigmas[i]
    local s_churn, s_tmin, s_tmax = opts.s_churn or 0, opts.s_tmin or 0, opts.s_tmax or math.huge
    local gamma = (s_tmin <= sigma and sigma <= s_tmax) and math.min(s_churn / (#sigmas - 1), 2 ^ 0.5 - 1) or 0
    local sigma_hat = sigma * (gamma + 1)
    if gamma > 0 then
        x = x + noise_sampler(sigma, sigma_hat) * ((opts.s_noise or 1) * (sigma_hat ^ 2 - sigma ^ 2) ^ 0.5)
    end
    return x, sigma_hat
end

function sampling.churned_derivative(model, x, sigmas, i, opts, noise_sampler)
    local sigma_hat
    x, sigma_hat = sampling.churn(x, sigmas, i, opts, noise_sampler)
    local denoised = model(x, sigma_hat, opts.extra)
    sampling.callback(opts, i, x, sigmas[i], sigma_hat, denoised)
    return x, sigma_hat, sampling.to_d(x, sigma_hat, denoised)
end

-- Every sampler reports each step here, so this is also where a NaN or inf from the model is caught
-- (security-cases.md, case 19): a sum is finite exactly when every element is (it is accumulated in
-- double precision, which no float32 values can overflow).
function sampling.callback(opts, i, x, sigma, sigma_hat, denoised, fields)
    local total = denoised:sum()
    if total ~= total or total == math.huge or total == -math.huge then
        error(string.format("the model returned NaN or inf at step %d (sigma %.6g)", i, sigma_hat), 0)
    end
    if not opts.callback then return end
    local info = {i = i, x = x, sigma = sigma, sigma_hat = sigma_hat, denoised = denoised}
    for key, value in pairs(fields or {}) do info[key] = value end
    opts.callback(info)
end

-- `make(x, seed)`'s noise sampler, or with a list of seeds, one per sample (lib/generate.lua gives image k the
-- seed seed + k - 1, as A1111 does), one stream per sample: an image of a batch then gets the noise it gets alone.
function sampling.per_sample(x, seeds, make)
    if type(seeds) ~= "table" then return make(x, seeds) end
    if #seeds ~= x:size(1) then
        error(("%d seeds for a batch of %d samples"):format(#seeds, x:size(1)), 3)
    end
    local streams = {}
    for k, seed in ipairs(seeds) do streams[k] = make(x:narrow(1, k, 1), seed) end
    if #streams == 1 then return streams[1] end
    return function(...)
        local parts = {}
        for k, stream in ipairs(streams) do parts[k] = stream(...) end
        return kiri.cat(parts, 1)
    end
end

function sampling.default_noise_sampler(x, seed)
    return sampling.per_sample(x, seed, kiri.noise.gaussian)
end

function sampling.noise_sampler(x, opts)
    return opts.noise_sampler or sampling.default_noise_sampler(x, opts.seed)
end

-- k-diffusion's dpmpp_sde, dpmpp_2m_sde and dpmpp_3m_sde default to a BrownianTreeNoiseSampler over
-- [min positive sigma, max sigma], so that noise is consistent across step counts.
function sampling.brownian_noise_sampler(x, sigmas, opts)
    if opts.noise_sampler then return opts.noise_sampler end
    local sigma_min, sigma_max = sampling.sigma_range(sigmas)
    return sampling.per_sample(x, opts.seed, function(sample, seed)
        return kiri.noise.brownian_tree(sample, sigma_min, sigma_max, seed)
    end)
end

function sampling.sigma_range(sigmas)
    local sigma_min, sigma_max = math.huge, -math.huge
    for i = 1, #sigmas do
        local sigma = sigmas[i]
        if sigma > 0 and sigma < sigma_min then sigma_min = sigma end
        if sigma > sigma_max then sigma_max = sigma end
    end
    return sigma_min, sigma_max
end

function sampling.append_zero(sigmas)
    if type(sigmas) == "table" then
        local out = table.move(sigmas, 1, #sigmas, 1, {})
        out[#out + 1] = 0
        return out
    end
    return kiri.cat({sigmas, kiri.zeros({1})})
end

function sampling.t_fn(sigma) return -math.log(sigma) end

function sampling.sigma_fn(t) return math.exp(-t) end

-- Lua has no expm1; this is Kahan's formula (HP-15C Advanced Functions Handbook), accurate to a few ulps.
function sampling.expm1(x)
    local u = math.exp(x)
    if u == 1 then return x end
    if u - 1 == -1 then return -1 end
    if u == math.huge then return u end
    return (u - 1) * x / math.log(u)
end

-- Lu et al. (2022), "DPM-Solver++", arXiv:2211.01095, eq. (9) with one term: the linear part solved
-- exactly and the denoised estimate held constant over [t, t_next]. It is DDIM's update.
function sampling.dpmpp_update(x, t, t_next, denoised)
    local h = t_next - t
    return x * (sampling.sigma_fn(t_next) / sampling.sigma_fn(t)) - denoised * sampling.expm1(-h)
end

-- k-diffusion sample_dpm_2: a midpoint (DPM-Solver-2-like) step in sigma, the midpoint halfway in log sigma.
-- `d` is the derivative at (x, sigma); one model call at the midpoint.
function sampling.midpoint_step(model, x, d, sigma, sigma_next, extra)
    local sigma_mid = math.exp((math.log(sigma) + math.log(sigma_next)) / 2)
    local x_2 = x + d * (sigma_mid - sigma)
    local d_2 = sampling.to_d(x_2, sigma_mid, model(x_2, sigma_mid, extra))
    return x + d_2 * (sigma_next - sigma)
end

-- Gauss-Legendre nodes and weights on [-1, 1] by Newton's method on P_n (Numerical Recipes, gauleg);
-- exact for polynomials of degree < 2n.
local legendre = {}
local function gauss_legendre(n)
    if legendre[n] then return legendre[n] end
    local nodes, weights = {}, {}
    for k = 1, n do
        local z, slope = math.cos(math.pi * (k - 0.25) / (n + 0.5)), nil
        for _ = 1, 100 do
            local p, previous = 1, 0
            for j = 1, n do p, previous = ((2 * j - 1) * z * p - (j - 1) * previous) / j, p end
            slope = n * (z * p - previous) / (z * z - 1)
            local step = p / slope
            z = z - step
            if math.abs(step) < 1e-15 then break end
        end
        nodes[k], weights[k] = z, 2 / ((1 - z * z) * slope * slope)
    end
    legendre[n] = {nodes, weights}
    return legendre[n]
end

-- k-diffusion linear_multistep_coeff: the integral over [t[i], t[i+1]] of the Lagrange basis polynomial
-- through t[i], ..., t[i - order + 1] that is 1 at t[i - j]. k-diffusion integrates it with
-- scipy.integrate.quad; the integrand has degree order - 1, so Gauss-Legendre with `order` nodes is exact.
function sampling.linear_multistep_coeff(order, t, i, j)
    if order > i then error(("order %d too high for step %d"):format(order, i), 2) end
    local function basis(tau)
        local product = 1
        for k = 0, order - 1 do
            if k ~= j then product = product * (tau - t[i - k]) / (t[i - j] - t[i - k]) end
        end
        return product
    end
    local rule = gauss_legendre(order)
    local low, high = t[i], t[i + 1]
    local center, half = (low + high) / 2, (high - low) / 2
    local integral = 0
    for k = 1, order do integral = integral + rule[2][k] * basis(center + half * rule[1][k]) end
    return integral * half
end

-- An integer seed: `seed` itself, or without one a seed drawn from the run's random stream
-- (kiri.manual_seed makes it reproducible).
function sampling.seed(seed)
    if seed ~= nil then
        local integer = math.tointeger(seed)
        if not integer then error(("integer seed expected, got %s"):format(tostring(seed)), 3) end
        return integer
    end
    local bits = kiri.rand({2})
    return math.floor(bits[1] * 2 ^ 24) << 24 | math.floor(bits[2] * 2 ^ 24)
end

-- The seed of draw `index` of a stream: SplitMix64 (Steele et al. 2014) finalizer of seed + index * golden
-- gamma, so streams of nearby seeds do not overlap.
function sampling.mix_seed(seed, index)
    local z = seed + (index + 1) * 0x9E3779B97F4A7C15
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    return z ~ (z >> 31)
end

return sampling
