-- Align Your Steps (Sabour et al. 2024): NVIDIA's optimised 10-step tables, log-linearly resampled to n
-- ComfyUI comfy_extras/nodes_align_your_steps.py (NOISE_LEVELS, loglinear_interp, from
-- research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html). opts: n, model = "sd1" | "sdxl" |
-- "svd". The n + 1 resampled values run from the table's first to its last, and the last is then
-- replaced by 0, as ComfyUI's AlignYourStepsScheduler does.
local schedule = require "lib.schedule"

local noise_levels = {
    sd1 = {14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
        0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582},
    sdxl = {14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141,
        0.5550693289, 0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582},
    svd = {700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002},
}

return function(opts)
    local n = schedule.steps(opts)
    local model = opts.model or "sd1"
    local levels = noise_levels[string.lower(tostring(model))]
    if not levels then
        error(string.format("ays: unknown model '%s' (sd1, sdxl or svd)", tostring(model)), 2)
    end
    local sigmas = levels
    if n + 1 ~= #levels then sigmas = schedule.loglinear_interp(levels, n + 1) end
    sigmas = schedule.to_list(sigmas)
    sigmas[n + 1] = 0
    return schedule.as_sigmas(sigmas)
end
