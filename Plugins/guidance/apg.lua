-- Adaptive projected guidance: the CFG update split along the cond prediction, its parallel part damped
-- Sadat et al. (2024), "Eliminating Oversaturation and Artifacts of High Guidance Scales in Diffusion
-- Models", arXiv:2410.02416, Algorithm 1 (normalized_guidance, as diffusers guiders/adaptive_projected_guidance.py
-- with use_original_formulation): in denoised space, per sample,
--   update = cond - uncond, with momentum: average = update + momentum * average, update = average
--   update = update * min(1, norm_threshold / |update|)          (norm_threshold > 0)
--   update = orthogonal + eta * parallel                            (the parts along cond / |cond|)
--   denoised = cond + (scale - 1) * update
-- kiri.guidance.apg{eta = 1, norm_threshold = 5, momentum = 0} -> a pre_cfg patch, in the place and with the
-- defaults of ComfyUI comfy_extras/nodes_apg.py (the paper suggests eta 0 and a negative momentum). It hands
-- CFG the cond c' = u + (c - u + (s - 1) update) / s, so that CFG's u + s (c' - u) is the line above and later
-- cfg hooks (rescale_cfg) still apply. ComfyUI's node hands CFG c' = u + update + (c - u) / s instead, which
-- is the paper's formula at scale s + 1. The momentum restarts when sigma rises (a new run), as in ComfyUI.
local guidance = require "lib.guidance"

local format = string.format

local function number_option(opts, key, default)
    local value = opts[key]
    if value == nil then return default end
    if type(value) ~= "number" then error(format("apg: %s must be a number, got %s", key, type(value)), 3) end
    return value
end

local function norms(t)
    return guidance.per_sample(guidance.rows(t):norm(2, 2), t)
end

return function(opts)
    opts = opts or {}
    local eta = number_option(opts, "eta", 1)
    local norm_threshold = number_option(opts, "norm_threshold", 5)
    local momentum = number_option(opts, "momentum", 0)
    local average, previous_sigma
    return {pre_cfg = function(args)
        local cond, uncond, scale = args.cond_denoised, args.uncond_denoised, args.scale
        if scale == 0 then return cond, uncond end
        if previous_sigma and args.sigma > previous_sigma then average = nil end
        previous_sigma = args.sigma
        local update = cond - uncond
        if momentum ~= 0 then
            average = average and update + average * momentum or update
            update = average
        end
        if norm_threshold > 0 then
            update = update * kiri.minimum(norm_threshold / norms(update), 1)
        end
        local direction = cond / kiri.maximum(norms(cond), 1e-12)   -- torch's F.normalize, eps 1e-12
        local parallel = direction * guidance.per_sample(guidance.rows(update * direction):sum(2), update)
        update = (update - parallel) + parallel * eta
        return uncond + (cond - uncond + update * (scale - 1)) / scale, uncond
    end}
end
