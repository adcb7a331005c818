-- Beta schedule: timesteps at quantiles of a Beta(alpha, beta) distribution (Lee et al. 2024)
-- ComfyUI comfy/samplers.py beta_scheduler ("Beta Sampling is All You Need", arXiv 2407.12173).
-- opts: n, alpha = 0.6, beta = 0.6, and the discrete model, as in normal. scipy.stats.beta.ppf is
-- lib/schedule.lua beta_ppf. As in ComfyUI, a timestep that rounds to the previous one is skipped,
-- so for large n the schedule can have fewer than n steps.
local schedule = require "lib.schedule"

return function(opts)
    local n = schedule.steps(opts)
    local alpha, beta = opts.alpha or 0.6, opts.beta or 0.6
    local table_sigmas = schedule.model(opts).sigmas
    local last_timestep = #table_sigmas - 1
    local sigmas, previous = {}, nil
    for _, fraction in ipairs(schedule.linspace(0, 1, n, false)) do
        local t = schedule.round_half_even(schedule.beta_ppf(1 - fraction, alpha, beta) * last_timestep)
        if t ~= previous then sigmas[#sigmas + 1] = table_sigmas[t + 1] end
        previous = t
    end
    sigmas[#sigmas + 1] = 0
    return schedule.as_sigmas(sigmas)
end
