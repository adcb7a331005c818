-- DPM-Solver++ SDE: two ancestral DPM-Solver++ substeps per step (at r = opts.r, default 1/2), Brownian-tree noise
-- k-diffusion 0.1.1 k_diffusion/sampling.py sample_dpmpp_sde; Lu et al. (2022), "DPM-Solver++",
-- arXiv:2211.01095 (single-step, second order), with ancestral noise (eta, s_noise). The default noise
-- is a Brownian tree over the sigmas seeded by opts.seed, as in k-diffusion.
local sampling = require "lib.sampling"

return function(model, x, sigmas, opts)
    opts = opts or {}
    local noise_sampler = sampling.brownian_noise_sampler(x, sigmas, opts)
    local eta, s_noise, r = opts.eta or 1, opts.s_noise or 1, opts.r or 1 / 2
    local t_fn, sigma_fn = sampling.t_fn, sampling.sigma_fn
    for i = 1, #sigmas - 1 do
        local denoised = model(x, sigmas[i], opts.extra)
        sampling.callback(opts, i, x, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0 then
            x = x + sampling.to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
        else
            local t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
            local s = t + (t_next - t) * r
            local fac = 1 / (2 * r)
            -- Step 1: to s, ancestrally
            local sigma_down, sigma_up = sampling.ancestral_step(sigma_fn(t), sigma_fn(s), eta)
            local x_2 = sampling.dpmpp_update(x, t, t_fn(sigma_down), denoised)
            if eta > 0 then x_2 = x_2 + noise_sampler(sigma_fn(t), sigma_fn(s)) * (s_noise * sigma_up) end
            local denoised_2 = model(x_2, sigma_fn(s), opts.extra)
            -- Step 2: to t_next with the denoised estimates combined, ancestrally
            sigma_down, sigma_up = sampling.ancestral_step(sigma_fn(t), sigma_fn(t_next), eta)
            local denoised_d = denoised * (1 - fac) + denoised_2 * fac
            x = sampling.dpmpp_update(x, t, t_fn(sigma_down), denoised_d)
            if eta > 0 then x = x + noise_sampler(sigma_fn(t), sigma_fn(t_next)) * (s_noise * sigma_up) end
        end
    end
    return x
end
