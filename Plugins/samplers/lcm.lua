-- LCM: jump to the model's denoised estimate, then noise it afresh to the next sigma
-- ComfyUI comfy/k_diffusion/sampling.py sample_lcm (eps noise scaling: x = denoised + sigma_next * noise);
-- Luo et al. (2023), "Latent Consistency Models", arXiv:2310.04378, Algorithm 3 (multistep consistency
-- sampling). The consistency function's c_skip / c_out belong to the model wrapper, not to this loop.
-- Noise from opts.noise_sampler, else Gaussian draws seeded by opts.seed; opts.s_noise scales it.
local sampling = require "lib.sampling"

return function(model, x, sigmas, opts)
    opts = opts or {}
    local noise_sampler = sampling.noise_sampler(x, opts)
    for i = 1, #sigmas - 1 do
        local denoised = model(x, sigmas[i], opts.extra)
        sampling.callback(opts, i, x, sigmas[i], sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0 then
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * ((opts.s_noise or 1) * sigmas[i + 1])
        end
    end
    return x
end
