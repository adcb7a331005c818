-- DPM-2 ancestral: a DPM-2 midpoint step down to sigma_down, then fresh noise of size sigma_up (eta, s_noise)
-- k-diffusion 0.1.1 k_diffusion/sampling.py sample_dpm_2_ancestral; DPM-Solver-2 of Lu et al. (2022),
-- arXiv:2206.00927, with the ancestral split of Ho et al. (2020), arXiv:2006.11239.
local sampling = require "lib.sampling"

return function(model, x, sigmas, opts)
    opts = opts or {}
    local noise_sampler = sampling.noise_sampler(x, opts)
    for i = 1, #sigmas - 1 do
        local denoised = model(x, sigmas[i], opts.extra)
        local sigma_down, sigma_up = sampling.ancestral_step(sigmas[i], sigmas[i + 1], opts.eta)
        sampling.callback(opts, i, x, sigmas[i], sigmas[i], denoised)
        local d = sampling.to_d(x, sigmas[i], denoised)
        if sigma_down == 0 then
            x = x + d * (sigma_down - sigmas[i])
        else
            x = sampling.midpoint_step(model, x, d, sigmas[i], sigma_down, opts.extra)
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * ((opts.s_noise or 1) * sigma_up)
        end
    end
    return x
end
