-- Euler ancestral: an Euler step down to sigma_down, then fresh noise of size sigma_up (eta, s_noise)
-- k-diffusion 0.1.1 k_diffusion/sampling.py sample_euler_ancestral; the ancestral split follows Ho et al.
-- (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239, in Karras et al.'s sigma form.
local sampling = require "lib.sampling"

return function(model, x, sigmas, opts)
    opts = opts or {}
    local noise_sampler = sampling.noise_sampler(x, opts)
    for i = 1, #sigmas - 1 do
        local denoised = model(x, sigmas[i], opts.extra)
        local sigma_down, sigma_up = sampling.ancestral_step(sigmas[i], sigmas[i + 1], opts.eta)
        sampling.callback(opts, i, x, sigmas[i], sigmas[i], denoised)
        local d = sampling.to_d(x, sigmas[i], denoised)
        x = x + d * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0 then
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * ((opts.s_noise or 1) * sigma_up)
        end
    end
    return x
end
