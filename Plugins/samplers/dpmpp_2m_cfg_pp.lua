-- DPM-Solver++(2M) with CFG++: the multistep update renoised along the unconditional prediction
-- Chung et al. (2024), "CFG++", arXiv:2406.08070; ComfyUI comfy/k_diffusion/sampling.py
-- sample_dpmpp_2m_cfg_pp: with h = t_next - t and r = h_last / h,
--   x = denoised + exp(-h) (x - uncond) - expm1(-h) / (2 r) (denoised - previous uncond)
-- (the correction only when there is a previous step and sigma_next > 0). The model must be a guider.
local sampling = require "lib.sampling"
local guidance = require "lib.guidance"

return function(model, x, sigmas, opts)
    opts = opts or {}
    local t_fn = sampling.t_fn
    local extra, uncond = guidance.capture_uncond(opts.extra, "dpmpp_2m_cfg_pp")
    local old_uncond
    for i = 1, #sigmas - 1 do
        local denoised = model(x, sigmas[i], extra)
        sampling.callback(opts, i, x, sigmas[i], sigmas[i], denoised)
        local uncond_denoised = uncond()
        local t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        local h = t_next - t
        x = denoised + (x - uncond_denoised) * math.exp(-h)
        if old_uncond ~= nil and sigmas[i + 1] > 0 then
            local r = (t - t_fn(sigmas[i - 1])) / h
            x = x - (denoised - old_uncond) * (sampling.expm1(-h) / (2 * r))
        end
        old_uncond = uncond_denoised
    end
    return x
end
