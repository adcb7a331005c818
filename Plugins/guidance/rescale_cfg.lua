-- Rescaled CFG: the guided prediction's standard deviation pulled back to the cond's (fixes overexposure)
-- Lin et al. (2023), "Common Diffusion Noise Schedules and Sample Steps are Flawed", arXiv:2305.08891,
-- section 3.4, eq. 15-16 with phi = multiplier. space = "v" (the paper's, and ComfyUI
-- comfy_extras/nodes_model_advanced.py RescaleCFG) rescales the v predictions; space = "eps" rescales
-- the noise predictions, as diffusers' guidance_rescale (guiders/guider_utils.py rescale_noise_cfg).
-- kiri.guidance.rescale_cfg{multiplier = 0.7, space = "v", sigma_data = 1} -> a patch replacing cfg.
-- The standard deviations are per sample, over all its elements (unbiased, as torch.std).
local guidance = require "lib.guidance"

local format = string.format

-- Denoised <-> the prediction the rescale works on, at noise level sigma for the noisy x.
local spaces = {
    -- v = (c_skip x - D) / (-c_out) with v-prediction's c_skip = d^2/(s^2+d^2), c_out = -s d/sqrt(s^2+d^2)
    v = function(x, sigma, data)
        local total = sigma ^ 2 + data ^ 2
        local c_skip, c_out = data ^ 2 / total, -sigma * data / math.sqrt(total)
        return function(denoised) return (denoised - x * c_skip) / c_out end,
            function(v) return x * c_skip + v * c_out end
    end,
    eps = function(x, sigma)
        return function(denoised) return (x - denoised) / sigma end,
            function(eps) return x - eps * sigma end
    end,
}

local function per_sample_std(t)
    return guidance.per_sample(guidance.rows(t):std(2), t)
end

return function(opts)
    opts = opts or {}
    local multiplier, space, data = opts.multiplier or 0.7, opts.space or "v", opts.sigma_data or 1
    if type(multiplier) ~= "number" then
        error(format("rescale_cfg: multiplier must be a number, got %s", type(multiplier)), 2)
    end
    if not spaces[space] then error(format("rescale_cfg: unknown space '%s' (v or eps)", tostring(space)), 2) end
    return {cfg = function(args)
        local to, from = spaces[space](args.x, args.sigma, data)
        local cond, uncond = to(args.cond_denoised), to(args.uncond_denoised)
        local guided = uncond + (cond - uncond) * args.scale
        local rescaled = guided * (per_sample_std(cond) / per_sample_std(guided))
        return from(rescaled * multiplier + guided * (1 - multiplier))
    end}
end
