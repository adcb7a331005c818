-- KL-optimal: sigmas evenly spaced in arctan(sigma) (Sabour et al. 2024, "Align Your Steps")
-- ComfyUI comfy/samplers.py kl_optimal_scheduler (from AUTOMATIC1111 stable-diffusion-webui
-- PR 15608). opts: n, sigma_min and sigma_max (default: the discrete model's range, as in karras).
-- ComfyUI divides by n - 1, so n = 1 gives NaN there; here it gives sigma_max.
local schedule = require "lib.schedule"

return function(opts)
    local n = schedule.steps(opts)
    local sigma_min, sigma_max = schedule.sigma_range(opts)
    local atan_min, atan_max = math.atan(sigma_min), math.atan(sigma_max)
    local sigmas = {}
    for i = 0, n - 1 do
        local fraction = n > 1 and i / (n - 1) or 0
        sigmas[i + 1] = math.tan(fraction * atan_min + (1 - fraction) * atan_max)
    end
    sigmas[n + 1] = 0
    return schedule.as_sigmas(sigmas)
end
