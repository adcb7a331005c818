-- Restart: Heun steps, with repeated jumps back up to a higher sigma (fresh noise) and Heun back down
-- Xu et al. (2023), "Restart Sampling for Improving Generative Processes", arXiv:2306.14878, Algorithm 1;
-- AUTOMATIC1111 modules/sd_samplers_extra.py restart_sampler (the k-diffusion-style port everyone uses).
-- opts.restart_list = {{sigma_restart, steps, times, sigma_high}, ...}: after the step that reaches the
-- sigma nearest sigma_restart, `times` times add noise up to the sigma nearest sigma_high and run Heun
-- down a Karras ladder of `steps` sigmas (rho 7) between the two. Without a list, as in A1111: under 20
-- steps no restarts (plain Heun); from 20 steps {0.1, 10, 1, 2} on a Karras schedule of steps - 9 over the
-- same range, from 36 steps {0.1, steps // 4 + 1, 2, 2} with steps - 2 (steps // 4). The noise of a jump
-- from last to sigma is s_noise * sqrt(sigma^2 - last^2) * noise_sampler(last, sigma) (opts.noise_sampler,
-- else Gaussian draws seeded by opts.seed). Every Heun step is kiri.samplers.heun's.
local sampling = require "lib.sampling"

local function karras(steps, sigma_min, sigma_max)
    return kiri.schedules.karras{n = steps, sigma_min = sigma_min, sigma_max = sigma_max}:totable()
end

local function nearest(sigmas, value)
    local best = 1
    for k = 2, #sigmas do
        if math.abs(sigmas[k] - value) < math.abs(sigmas[best] - value) then best = k end
    end
    return best
end

-- A1111's automatic choice: the schedule it samples on and its restart list.
local function default_plan(sigmas)
    local steps = #sigmas - 1
    if steps < 20 then return sigmas, {} end
    local restart_steps, restart_times = 9, 1
    if steps >= 36 then restart_steps, restart_times = steps // 4, 2 end
    local schedule = karras(steps - restart_steps * restart_times, sigmas[#sigmas - 1], sigmas[1])
    return schedule, {{0.1, restart_steps + 1, restart_times, 2}}
end

-- The runs of Heun steps, as lists of sigmas: the main schedule, cut after each restart point, with the
-- restart ladders between. A ladder starts at sigma_high and ends exactly where the main run stopped.
local function plan_runs(sigmas, restart_list)
    local restarts = {}
    for _, restart in ipairs(restart_list) do restarts[nearest(sigmas, restart[1])] = restart end
    local runs = {{sigmas[1]}}
    for k = 2, #sigmas do
        local run = runs[#runs]
        run[#run + 1] = sigmas[k]
        local restart = restarts[k]
        local high = restart and nearest(sigmas, restart[4])
        if restart and high < k then
            local ladder = karras(restart[2], sigmas[k], sigmas[high])
            ladder[#ladder] = nil                                   -- the appended 0
            ladder[1], ladder[#ladder] = sigmas[high], sigmas[k]
            for _ = 1, restart[3] do runs[#runs + 1] = table.move(ladder, 1, #ladder, 1, {}) end
            runs[#runs + 1] = {sigmas[k]}
        end
    end
    return runs
end

return function(model, x, sigmas, opts)
    opts = opts or {}
    local schedule, restart_list = type(sigmas) == "table" and sigmas or sigmas:totable(), opts.restart_list
    if restart_list == nil then schedule, restart_list = default_plan(schedule) end
    local noise_sampler = sampling.noise_sampler(x, opts)
    local steps_done, last = 0, nil
    local heun_opts = setmetatable({s_churn = 0, callback = opts.callback and function(info)
        info.i = steps_done + info.i
        opts.callback(info)
    end}, {__index = opts})
    for _, run in ipairs(plan_runs(schedule, restart_list)) do
        if last and last < run[1] then
            x = x + noise_sampler(last, run[1]) * ((opts.s_noise or 1) * (run[1] ^ 2 - last ^ 2) ^ 0.5)
        end
        if #run > 1 then
            x = kiri.samplers.heun(model, x, run, heun_opts)
            steps_done = steps_done + #run - 1
        end
        last = run[#run]
    end
    return x
end
