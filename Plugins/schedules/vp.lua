-- Continuous variance-preserving (VP-SDE) schedule of Song et al. (2021)
-- k-diffusion k_diffusion/sampling.py get_sigmas_vp: t from 1 down to eps_s, and
-- sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1). opts: n, beta_d = 19.9, beta_min = 0.1,
-- eps_s = 1e-3.
local schedule = require "lib.schedule"

return function(opts)
    local n = schedule.steps(opts)
    local beta_d, beta_min, eps_s = opts.beta_d or 19.9, opts.beta_min or 0.1, opts.eps_s or 1e-3
    local sigmas = {}
    for i, t in ipairs(schedule.linspace(1, eps_s, n)) do
        sigmas[i] = math.sqrt(math.exp(beta_d * t ^ 2 / 2 + beta_min * t) - 1)
    end
    sigmas[n + 1] = 0
    return schedule.as_sigmas(sigmas)
end
