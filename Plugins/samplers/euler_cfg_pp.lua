-- Euler with CFG++: step along the unconditional direction from the guided x0 (a manifold-constrained CFG)
-- Chung et al. (2024), "CFG++: Manifold-constrained Classifier Free Guidance for Diffusion Models",
-- arXiv:2406.08070, Algorithm 2; ComfyUI comfy/k_diffusion/sampling.py sample_euler_cfg_pp (its
-- ancestral form with eta 0, alpha 1): x = denoised + to_d(x, sigma, uncond_denoised) * sigma_next.
-- The model must be a guider (kiri.guidance.cfg); CFG++ scales are small (about 0.5 to 2).
local sampling = require "lib.sampling"
local guidance = require "lib.guidance"

return function(model, x, sigmas, opts)
    opts = opts or {}
    local extra, uncond = guidance.capture_uncond(opts.extra, "euler_cfg_pp")
    for i = 1, #sigmas - 1 do
        local denoised = model(x, sigmas[i], extra)
        sampling.callback(opts, i, x, sigmas[i], sigmas[i], denoised)
        x = denoised + sampling.to_d(x, sigmas[i], uncond()) * sigmas[i + 1]
    end
    return x
end
