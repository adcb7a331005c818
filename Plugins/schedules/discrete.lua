-- Discrete DDPM schedule, equal to diffusers EulerDiscreteScheduler(...).sigmas after set_timesteps(n)
-- diffusers src/diffusers/schedulers/scheduling_euler_discrete.py (__init__ and set_timesteps, with
-- interpolation_type "linear" and final_sigmas_type "zero"); spacings from Table 2 of Lin et al.
-- (2023), "Common Diffusion Noise Schedules and Sample Steps are Flawed".
-- opts (defaults are Stable Diffusion's): n, beta_schedule = "scaled_linear" | "linear" |
-- "squaredcos_cap_v2", beta_start = 0.00085, beta_end = 0.012, num_train_timesteps = 1000,
-- spacing = "leading" | "trailing" | "linspace", steps_offset = 0, alphas_cumprod = (a model's own
-- table instead of betas), rescale_zero_snr = false.
-- rescale_zero_snr applies diffusers' rescale_zero_terminal_snr and, like diffusers, sets the last
-- alphas_cumprod to 2^-24 instead of 0, so a schedule that starts at timestep N-1 ("trailing",
-- "linspace") starts at sigma = sqrt(2^24 - 1) ~ 4096 rather than at the infinite zero-SNR sigma.
-- diffusers keeps the tables in float32; they are rounded the same way here (lib/schedule.lua f32),
-- which matters for the smallest sigmas, where 1 - alphas_cumprod cancels.
local schedule = require "lib.schedule"
local f32 = schedule.f32

-- The (fractional) training timesteps of the n steps, first (noisiest) first, as set_timesteps makes them.
local function timesteps(n, count, spacing, offset)
    local result = {}
    if spacing == "linspace" then
        -- np.linspace(0, count - 1, n, dtype=np.float32)[::-1]
        for i, t in ipairs(schedule.linspace(0, count - 1, n)) do result[n + 1 - i] = f32(t) end
    elseif spacing == "leading" then
        -- (np.arange(0, n) * (count // n)).round()[::-1] + steps_offset
        local ratio = count // n
        for i = 0, n - 1 do result[n - i] = i * ratio + offset end
    elseif spacing == "trailing" then
        -- np.arange(count, 0, -count / n).round() - 1: numpy's arange may give one value more than n
        local ratio = count / n
        local length = math.ceil((0 - count) / -ratio)
        for i = 0, length - 1 do result[i + 1] = schedule.round_half_even(count + i * -ratio) - 1 end
    else
        error(string.format("discrete: unknown spacing '%s' (linspace, leading or trailing)", tostring(spacing)), 3)
    end
    return result
end

return function(opts)
    local n = schedule.steps(opts)
    local train_sigmas = schedule.sigmas_from_alphas_cumprod(schedule.alphas_cumprod(opts, f32), f32)
    local train_steps = {}
    for i = 1, #train_sigmas do train_steps[i] = i - 1 end
    local sigmas = {}
    for i, t in ipairs(timesteps(n, #train_sigmas, opts.spacing or "leading", opts.steps_offset or 0)) do
        sigmas[i] = f32(schedule.interp(t, train_steps, train_sigmas))
    end
    sigmas[#sigmas + 1] = 0
    return schedule.as_sigmas(sigmas)
end
