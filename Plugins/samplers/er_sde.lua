-- ER-SDE-Solver-3: extended reverse-time SDE solver, up to third order (opts.max_stage), with noise
-- ComfyUI comfy/k_diffusion/sampling.py sample_er_sde (for sigma-parametrised models: lambda = sigma,
-- alpha = 1); Cui et al. (2023), "Elucidating the Solution Space of Extended Reverse-Time SDE for
-- Diffusion Models", arXiv:2309.06169, eq. (18)-(20); code github.com/QinpengCui/ER-SDE-Solver.
-- The noise scaler f(lambda) = lambda (exp(lambda^0.3) + 10) (opts.noise_scaler) sets how much of each step
-- is noise; stages 2 and 3 take their integrals of 1 / f as the reference does, by left sums over 200
-- points. Noise from opts.noise_sampler, else Gaussian draws seeded by opts.seed; opts.s_noise scales it.
local sampling = require "lib.sampling"

local points = 200

local function default_noise_scaler(lambda)
    return lambda * (math.exp(lambda ^ 0.3) + 10)
end

-- Left sums over [lambda_t, lambda_s] of 1 / f and of (tau - lambda_s) / f.
local function integrals(f, lambda_s, lambda_t)
    local step = (lambda_s - lambda_t) / points
    local s, s_u = 0, 0
    for k = 0, points - 1 do
        local tau = lambda_t + k * step
        s, s_u = s + 1 / f(tau), s_u + (tau - lambda_s) / f(tau)
    end
    return s * step, s_u * step
end

return function(model, x, sigmas, opts)
    opts = opts or {}
    local f = opts.noise_scaler or default_noise_scaler
    local max_stage = opts.max_stage or 3
    local noise_sampler = sampling.noise_sampler(x, opts)
    local old_denoised, old_denoised_d
    for i = 1, #sigmas - 1 do
        local denoised = model(x, sigmas[i], opts.extra)
        sampling.callback(opts, i, x, sigmas[i], sigmas[i], denoised)
        local stage = math.min(max_stage, i)
        local lambda_s, lambda_t = sigmas[i], sigmas[i + 1]
        if lambda_t == 0 then
            x = denoised
        else
            local r = f(lambda_t) / f(lambda_s)
            x = x * r + denoised * (1 - r)   -- stage 1: Euler
            if stage >= 2 then
                local dt = lambda_t - lambda_s
                local s, s_u = integrals(f, lambda_s, lambda_t)
                local denoised_d = (denoised - old_denoised) / (lambda_s - sigmas[i - 1])
                x:axpy_(dt + s * f(lambda_t), denoised_d)
                if stage >= 3 then
                    local denoised_u = (denoised_d - old_denoised_d) / ((lambda_s - sigmas[i - 2]) / 2)
                    x:axpy_(dt ^ 2 / 2 + s_u * f(lambda_t), denoised_u)
                end
                old_denoised_d = denoised_d
            end
            local variance = lambda_t ^ 2 - lambda_s ^ 2 * r ^ 2
            local s_noise = opts.s_noise or 1
            if s_noise > 0 then
                x:axpy_(s_noise * (variance > 0 and variance ^ 0.5 or 0), noise_sampler(sigmas[i], sigmas[i + 1]))
            end
        end
        old_denoised = denoised
    end
    return x
end
