-- Laplace: log sigma follows the inverse CDF of a Laplace(mu, beta) distribution (Tiankai et al. 2024)
-- ComfyUI comfy/k_diffusion/sampling.py get_sigmas_laplace ("Improved Noise Schedule for Diffusion
-- Training"), with its values clamped to [sigma_min, sigma_max]. opts: n, mu = 0, beta = 0.5,
-- sigma_min and sigma_max (default: the discrete model's range, as in karras). ComfyUI returns the
-- n sigmas without the final 0; here the 0 is appended, as every schedule ends.
local schedule = require "lib.schedule"

local function sign(x) return x > 0 and 1 or x < 0 and -1 or 0 end

return function(opts)
    local n = schedule.steps(opts)
    local sigma_min, sigma_max = schedule.sigma_range(opts)
    local mu, beta = opts.mu or 0, opts.beta or 0.5
    local epsilon = 1e-5   -- ComfyUI's guard against log(0)
    local sigmas = {}
    for i, x in ipairs(schedule.linspace(0, 1, n)) do
        local log_sigma = mu - beta * sign(0.5 - x) * math.log(1 - 2 * math.abs(0.5 - x) + epsilon)
        sigmas[i] = math.max(sigma_min, math.min(sigma_max, math.exp(log_sigma)))
    end
    sigmas[n + 1] = 0
    return schedule.as_sigmas(sigmas)
end
