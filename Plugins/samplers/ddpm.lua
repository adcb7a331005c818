-- DDPM ancestral sampling: the posterior mean step plus the posterior's noise (DDIM with eta = 1)
-- ComfyUI comfy/k_diffusion/sampling.py sample_ddpm (generic_step_sampler + DDPMSampler_step); Ho, Jain &
-- Abbeel (2020), "Denoising Diffusion Probabilistic Models", arXiv:2006.11239, eq. (6)-(7) with the
-- posterior variance beta~_t. With alpha_bar = 1 / (1 + sigma^2), the step of x / sqrt(alpha_bar) is
--     x - (sigma^2 - sigma_next^2) / sigma * eps + sigma_next * sqrt(sigma^2 - sigma_next^2) / sigma * noise,
-- k-diffusion's ancestral Euler step with eta = 1 (sigma_down = sigma_next^2 / sigma), hence this file.
return function(model, x, sigmas, opts)
    return kiri.samplers.euler_ancestral(model, x, sigmas, setmetatable({eta = 1}, {__index = opts or {}}))
end
