-- DPM-Solver++(2S) ancestral: a second-order single-step DPM-Solver++ step to sigma_down, then noise sigma_up
-- k-diffusion 0.1.1 k_diffusion/sampling.py sample_dpmpp_2s_ancestral; Lu et al. (2022), "DPM-Solver++",
-- arXiv:2211.01095, Algorithm 1 (r = 1/2), with the ancestral split of Ho et al. (2020), arXiv:2006.11239.
local sampling = require "lib.sampling"

return function(model, x, sigmas, opts)
    opts = opts or {}
    local noise_sampler = sampling.noise_sampler(x, opts)
    local t_fn, sigma_fn = sampling.t_fn, sampling.sigma_fn
    for i = 1, #sigmas - 1 do
        local denoised = model(x, sigmas[i], opts.extra)
        local sigma_down, sigma_up = sampling.ancestral_step(sigmas[i], sigmas[i + 1], opts.eta)
        sampling.callback(opts, i, x, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0 then
            x = x + sampling.to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else
            local t, t_next = t_fn(sigmas[i]), t_fn(sigma_down)
            local s = t + (t_next - t) / 2
            local x_2 = sampling.dpmpp_update(x, t, s, denoised)
            local denoised_2 = model(x_2, sigma_fn(s), opts.extra)
            x = sampling.dpmpp_update(x, t, t_next, denoised_2)
        end
        if sigmas[i + 1] > 0 then
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * ((opts.s_noise or 1) * sigma_up)
        end
    end
    return x
end
