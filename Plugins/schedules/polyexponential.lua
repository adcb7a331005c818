-- Polyexponential: log sigma a polynomial of degree rho in the step
-- k-diffusion k_diffusion/sampling.py get_sigmas_polyexponential. opts: n, rho = 1 (rho = 1 is the
-- exponential schedule), sigma_min and sigma_max (default: the discrete model's range, as in karras).
local schedule = require "lib.schedule"

return function(opts)
    local n = schedule.steps(opts)
    local sigma_min, sigma_max = schedule.sigma_range(opts)
    local rho = opts.rho or 1
    local log_min, log_max = math.log(sigma_min), math.log(sigma_max)
    local sigmas = {}
    for i, ramp in ipairs(schedule.linspace(1, 0, n)) do
        sigmas[i] = math.exp(ramp ^ rho * (log_max - log_min) + log_min)
    end
    sigmas[n + 1] = 0
    return schedule.as_sigmas(sigmas)
end
