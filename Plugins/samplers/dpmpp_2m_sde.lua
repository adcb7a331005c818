-- DPM-Solver++(2M) SDE: second-order multistep for the diffusion SDE (opts.solver_type "midpoint" or "heun")
-- k-diffusion 0.1.1 k_diffusion/sampling.py sample_dpmpp_2m_sde; Lu et al. (2022), "DPM-Solver++",
-- arXiv:2211.01095, sec. 5 (SDE-DPM-Solver++(2M)); eta scales the noise (0 gives the ODE), s_noise its
-- size. The default noise is a Brownian tree over the sigmas seeded by opts.seed, as in k-diffusion.
local sampling = require "lib.sampling"

return function(model, x, sigmas, opts)
    opts = opts or {}
    local solver_type = opts.solver_type or "midpoint"
    if solver_type ~= "midpoint" and solver_type ~= "heun" then error("solver_type must be 'heun' or 'midpoint'", 2) end
    local noise_sampler = sampling.brownian_noise_sampler(x, sigmas, opts)
    local eta, s_noise, expm1 = opts.eta or 1, opts.s_noise or 1, sampling.expm1
    local old_denoised, h_last
    for i = 1, #sigmas - 1 do
        local denoised = model(x, sigmas[i], opts.extra)
        sampling.callback(opts, i, x, sigmas[i], sigmas[i], denoised)
        local h
        if sigmas[i + 1] == 0 then
            x = denoised   -- denoising step
        else
            local t, s = sampling.t_fn(sigmas[i]), sampling.t_fn(sigmas[i + 1])
            h = s - t
            local eta_h = eta * h
            x = x * (sigmas[i + 1] / sigmas[i] * math.exp(-eta_h)) + denoised * -expm1(-h - eta_h)
            if old_denoised then
                local r = h_last / h
                if solver_type == "heun" then
                    x = x + (denoised - old_denoised) * ((-expm1(-h - eta_h) / (-h - eta_h) + 1) / r)
                else
                    x = x + (denoised - old_denoised) * (0.5 * -expm1(-h - eta_h) / r)
                end
            end
            if eta > 0 then
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * (sigmas[i + 1] * (-expm1(-2 * eta_h)) ^ 0.5 * s_noise)
            end
        end
        old_denoised, h_last = denoised, h
    end
    return x
end
