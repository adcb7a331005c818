-- Linear then quadratic in sigma / sigma_max (Mochi's schedule)
-- ComfyUI comfy/samplers.py linear_quadratic_schedule, from genmoai/models
-- src/mochi_preview/infer.py. opts: n, threshold_noise = 0.025, linear_steps = n // 2, and the
-- discrete model (its sigma_max scales the schedule), as in normal.
local schedule = require "lib.schedule"

local function fractions(n, threshold_noise, linear_steps)
    if n == 1 then return {1, 0} end
    local result = {}
    for i = 0, linear_steps - 1 do result[#result + 1] = 1 - i * threshold_noise / linear_steps end
    local step_difference = linear_steps - threshold_noise * n
    local quadratic_steps = n - linear_steps
    local quadratic = step_difference / (linear_steps * quadratic_steps ^ 2)
    local linear = threshold_noise / linear_steps - 2 * step_difference / quadratic_steps ^ 2
    local constant = quadratic * linear_steps ^ 2
    for i = linear_steps, n - 1 do result[#result + 1] = 1 - (quadratic * i ^ 2 + linear * i + constant) end
    result[#result + 1] = 0
    return result
end

return function(opts)
    local n = schedule.steps(opts)
    local sigma_max = schedule.model(opts).sigma_max
    local sigmas = {}
    -- torch.FloatTensor(schedule) * sigma_max: float32 values times a float32 sigma_max
    for i, fraction in ipairs(fractions(n, opts.threshold_noise or 0.025, opts.linear_steps or n // 2)) do
        sigmas[i] = schedule.f32(schedule.f32(fraction) * sigma_max)
    end
    return schedule.as_sigmas(sigmas)
end
