-- Flow matching (rectified flow): sigma = t in [0, 1], shifted by shift*s/(1+(shift-1)*s) (SD3, Flux)
-- diffusers src/diffusers/schedulers/scheduling_flow_match_euler_discrete.py
-- FlowMatchEulerDiscreteScheduler(...).sigmas after set_timesteps(n) (Esser et al. 2024, "Scaling
-- Rectified Flow Transformers", eq. 23). opts: n, shift = 1, num_train_timesteps = 1000, mu (given:
-- use_dynamic_shifting with time_shift_type = "exponential", sigma = e^mu / (e^mu + 1/s - 1), as
-- Flux; time_shift_type = "linear" gives mu / (mu + 1/s - 1)), shift_terminal (stretch so the last
-- sigma equals it).
-- As in diffusers, the lowest sigma is the shifted sigma_min of the training table, shifted once
-- more by set_timesteps: for shift = 3 and 1000 timesteps it is shift(shift(0.001)) ~ 0.0089.
local schedule = require "lib.schedule"
local f32 = schedule.f32

local function shifted(shift, s) return shift * s / (1 + (shift - 1) * s) end

local function time_shift(opts, s)
    local mu = opts.mu
    if opts.time_shift_type == "linear" then return mu / (mu + (1 / s - 1)) end
    return math.exp(mu) / (math.exp(mu) + (1 / s - 1))
end

return function(opts)
    local n = schedule.steps(opts)
    local shift, count = opts.shift or 1, opts.num_train_timesteps or 1000
    -- __init__: the smallest training sigma, 1/count, shifted in float32 unless shifting is dynamic
    local sigma_min = f32(1 / count)
    if opts.mu == nil then
        local shift32 = f32(shift)
        sigma_min = f32(f32(shift32 * sigma_min) / f32(1 + f32(f32(shift - 1) * sigma_min)))
    end
    local sigmas = {}
    for i, t in ipairs(schedule.linspace(count, sigma_min * count, n)) do
        local s = t / count
        sigmas[i] = opts.mu == nil and shifted(shift, s) or time_shift(opts, s)
    end
    if opts.shift_terminal then
        local scale = (1 - sigmas[n]) / (1 - opts.shift_terminal)
        for i = 1, n do sigmas[i] = 1 - (1 - sigmas[i]) / scale end
    end
    for i = 1, n do sigmas[i] = f32(sigmas[i]) end
    sigmas[n + 1] = 0
    return schedule.as_sigmas(sigmas)
end
