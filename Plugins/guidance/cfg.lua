-- Classifier-free guidance: Ho & Salimans (2022), "Classifier-Free Diffusion Guidance", eq. 6
-- In denoised space, as ComfyUI comfy/samplers.py cfg_function: uncond + scale * (cond - uncond).
-- kiri.guidance.cfg(model, {cond = extra, uncond = extra, scale = 1}) -> a denoiser D(x, sigma) that
-- runs both branches in one batched call. At scale 1 the unconditional branch is skipped (ComfyUI does
-- too), since it cancels out. The denoiser keeps the model's fields (sigmas, sigma_min, ...).
local batched = require("lib.guidance").batched

return function(model, opts)
    local scale = opts.scale or 1
    local cond, uncond = opts.cond, opts.uncond
    local guided = setmetatable({}, {
        __index = type(model) == "table" and model or nil,
        __call = function(_, x, sigma)
            if scale == 1 then return model(x, sigma, cond) end
            local denoised = batched(model, x, sigma, {cond, uncond})
            return denoised[2] + (denoised[1] - denoised[2]) * scale
        end,
    })
    return guided
end
