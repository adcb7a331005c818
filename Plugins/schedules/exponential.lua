-- Exponential: sigmas evenly spaced in log sigma
-- k-diffusion k_diffusion/sampling.py get_sigmas_exponential. opts: n, sigma_min and sigma_max
-- (default: the discrete model's range, as in karras).
local schedule = require "lib.schedule"

return function(opts)
    local n = schedule.steps(opts)
    local sigma_min, sigma_max = schedule.sigma_range(opts)
    local sigmas = {}
    for i, log_sigma in ipairs(schedule.linspace(math.log(sigma_max), math.log(sigma_min), n)) do
        sigmas[i] = math.exp(log_sigma)
    end
    sigmas[n + 1] = 0
    return schedule.as_sigmas(sigmas)
end
