-- Karras et al. (2022): sigmas evenly spaced in sigma^(1/rho)
-- k-diffusion k_diffusion/sampling.py get_sigmas_karras ("Elucidating the Design Space of
-- Diffusion-Based Generative Models", eq. 5). opts: n, rho = 7, sigma_min and sigma_max; their
-- default is the range of the discrete model of opts (lib/schedule.lua sigma_range: Stable
-- Diffusion's 0.0292..14.6146 unless alphas_cumprod=, sigmas= or beta options say otherwise).
local schedule = require "lib.schedule"

return function(opts)
    local n = schedule.steps(opts)
    local sigma_min, sigma_max = schedule.sigma_range(opts)
    local rho = opts.rho or 7
    local min_inv_rho, max_inv_rho = sigma_min ^ (1 / rho), sigma_max ^ (1 / rho)
    local sigmas = {}
    for i, ramp in ipairs(schedule.linspace(0, 1, n)) do
        sigmas[i] = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ^ rho
    end
    sigmas[n + 1] = 0
    return schedule.as_sigmas(sigmas)
end
