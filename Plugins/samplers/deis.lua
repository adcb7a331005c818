-- DEIS: multistep exponential integrator with polynomial extrapolation in VP time ('tab' mode, order 3)
-- ComfyUI comfy/k_diffusion/sampling.py sample_deis and comfy/k_diffusion/deis.py get_deis_coeff_list
-- (from zju-pi/diff-sampler gits-main/solver_utils.py); Zhang & Chen (2023), "Fast Sampling of Diffusion
-- Models with Exponential Integrator", arXiv:2204.13902, eq. (15) ("tAB-DEIS").
-- In the VP time t of a linear-beta schedule fitted to sigma in [0.002, 80] (deis.py edm2t, whatever the
-- sigmas are), d = dx/dsigma is extrapolated by the Lagrange polynomial through the last `order` steps,
-- so the weight of d_{i-j} is the integral over [t_i, t_{i+1}] of dsigma/dt times its Lagrange basis
-- polynomial. Like the reference, the integral is the sum over opts.integration_points (10000) equally
-- spaced points, ends included, times (t_{i+1} - t_i) / points. opts.max_order (1-4, default 3).
local multistep = require "lib.multistep"

-- deis.py edm2t: the linear VP schedule with sigma(eps_s) = 0.002 and sigma(1) = 80.
local epsilon_s, sigma_min, sigma_max = 1e-3, 0.002, 80
local beta_d = 2 * (math.log(sigma_min ^ 2 + 1) / epsilon_s - math.log(sigma_max ^ 2 + 1)) / (epsilon_s - 1)
local beta_min = math.log(sigma_max ^ 2 + 1) - 0.5 * beta_d

local function vp_time(sigma)
    return ((beta_min ^ 2 + 2 * beta_d * math.log(sigma ^ 2 + 1)) ^ 0.5 - beta_min) / beta_d
end

-- deis.py cal_intergrand: -0.5 dlog(alpha)/dt / sqrt(alpha (1 - alpha)) = dsigma/dt, alpha = alpha_bar(t).
local function dsigma_dt(t)
    local alpha = math.exp(-0.5 * t ^ 2 * beta_d - t * beta_min)
    return 0.5 * (t * beta_d + beta_min) / (alpha * (1 - alpha)) ^ 0.5
end

local function weights(points)
    return function(sigmas, i, order)
        if order == 1 then return {sigmas[i + 1] - sigmas[i]} end
        local times = {}   -- t_i, t_{i-1}, ...
        for k = 1, order do times[k] = vp_time(sigmas[i + 1 - k]) end
        local t_next = vp_time(sigmas[i + 1])
        local spacing, dtau = (t_next - times[1]) / (points - 1), (t_next - times[1]) / points
        local sums = {}
        for j = 1, order do sums[j] = 0 end
        for point = 0, points - 1 do
            local tau = times[1] + point * spacing
            local integrand = dsigma_dt(tau)
            for j = 1, order do
                local basis = integrand
                for k = 1, order do
                    if k ~= j then basis = basis * (tau - times[k]) / (times[j] - times[k]) end
                end
                sums[j] = sums[j] + basis
            end
        end
        for j = 1, order do sums[j] = sums[j] * dtau end
        return sums
    end
end

local samplers = {}   -- by number of integration points

return function(model, x, sigmas, opts)
    opts = opts or {}
    local points = opts.integration_points or 10000
    samplers[points] = samplers[points] or multistep.sampler(weights(points), 3)
    return samplers[points](model, x, sigmas, opts)
end
