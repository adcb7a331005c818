-- RES multistep: second-order exponential multistep in log sigma, ancestral noise with opts.eta (default 0)
-- ComfyUI comfy/k_diffusion/sampling.py res_multistep (sample_res_multistep: eta = 0,
-- sample_res_multistep_ancestral: eta = 1); Zhang et al. (2023), "Improved Order Analysis and Design of
-- Exponential Integrator for Diffusion Models Sampling" (RES), arXiv:2308.02157, the two-step method with
-- b1 = phi_1 - phi_2 / c2, b2 = phi_2 / c2 in t = -log sigma. The first step and the step to sigma = 0
-- are Euler steps. Noise from opts.noise_sampler, else Gaussian draws seeded by opts.seed.
local sampling = require "lib.sampling"

local function phi_1(h) return sampling.expm1(h) / h end
local function phi_2(h) return (phi_1(h) - 1) / h end

return function(model, x, sigmas, opts)
    opts = opts or {}
    local t_fn = sampling.t_fn
    local noise_sampler = sampling.noise_sampler(x, opts)
    local old_denoised, old_sigma_down
    for i = 1, #sigmas - 1 do
        local denoised = model(x, sigmas[i], opts.extra)
        local sigma_down, sigma_up = sampling.ancestral_step(sigmas[i], sigmas[i + 1], opts.eta or 0)
        sampling.callback(opts, i, x, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0 or old_denoised == nil then
            x = x + sampling.to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else
            local t, t_next = t_fn(sigmas[i]), t_fn(sigma_down)
            local h = t_next - t
            local c2 = (t_fn(sigmas[i - 1]) - t_fn(old_sigma_down)) / h
            local b1, b2 = phi_1(-h) - phi_2(-h) / c2, phi_2(-h) / c2
            x = x * math.exp(-h) + (denoised * b1 + old_denoised * b2) * h
        end
        if sigmas[i + 1] > 0 and sigma_up > 0 then
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * ((opts.s_noise or 1) * sigma_up)
        end
        old_denoised, old_sigma_down = denoised, sigma_down
    end
    return x
end
