-- DPM-Solver++(3M) SDE: third-order multistep for the diffusion SDE from the last three denoised estimates
-- k-diffusion 0.1.1 k_diffusion/sampling.py sample_dpmpp_3m_sde; Lu et al. (2022), "DPM-Solver++",
-- arXiv:2211.01095 (multistep, third order, the phi_2 / phi_3 expansion); eta scales the noise (0 gives
-- the ODE). The default noise is a Brownian tree over the sigmas seeded by opts.seed, as in k-diffusion.
local sampling = require "lib.sampling"

return function(model, x, sigmas, opts)
    opts = opts or {}
    local noise_sampler = sampling.brownian_noise_sampler(x, sigmas, opts)
    local eta, s_noise, expm1 = opts.eta or 1, opts.s_noise or 1, sampling.expm1
    local denoised_1, denoised_2, h_1, h_2
    for i = 1, #sigmas - 1 do
        local denoised = model(x, sigmas[i], opts.extra)
        sampling.callback(opts, i, x, sigmas[i], sigmas[i], denoised)
        local h
        if sigmas[i + 1] == 0 then
            x = denoised   -- denoising step
        else
            local t, s = sampling.t_fn(sigmas[i]), sampling.t_fn(sigmas[i + 1])
            h = s - t
            local h_eta = h * (eta + 1)
            x = x * math.exp(-h_eta) + denoised * -expm1(-h_eta)
            local phi_2 = expm1(-h_eta) / h_eta + 1
            if h_2 then
                local r0, r1 = h_1 / h, h_2 / h
                local d1_0 = (denoised - denoised_1) / r0
                local d1_1 = (denoised_1 - denoised_2) / r1
                local d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                local d2 = (d1_0 - d1_1) / (r0 + r1)
                local phi_3 = phi_2 / h_eta - 0.5
                x = x + d1 * phi_2 - d2 * phi_3
            elseif h_1 then
                x = x + (denoised - denoised_1) * (phi_2 / (h_1 / h))
            end
            if eta > 0 then
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * (sigmas[i + 1] * (-expm1(-2 * h * eta)) ^ 0.5 * s_noise)
            end
        end
        denoised_1, denoised_2, h_1, h_2 = denoised, denoised_1, h, h_1
    end
    return x
end
