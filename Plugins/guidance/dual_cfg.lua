-- Dual CFG: two prompts guided against each other and against the negative, each with its own scale
-- ComfyUI comfy_extras/nodes_custom_sampler.py Guider_DualCFG, in denoised space with the middle prompt m:
--   regular: uncond + middle_scale * (m - uncond) + scale * (cond - m)
--   nested:  uncond + middle_scale * (m + scale * (cond - m) - uncond)
-- kiri.guidance.dual_cfg{middle = "sandal" (a prompt or an extra), middle_scale = <the guider's scale>,
-- nested = false} -> a patch; `scale` is the guider's (ComfyUI's cfg_conds), middle_scale ComfyUI's
-- cfg_cond2_negative. The middle prediction comes from the same batched call.
return function(opts)
    opts = opts or {}
    if opts.middle == nil then error("dual_cfg: middle (the second prompt, or its extra) is required", 2) end
    local middle_scale, nested = opts.middle_scale, opts.nested
    if middle_scale ~= nil and type(middle_scale) ~= "number" then
        error(string.format("dual_cfg: middle_scale must be a number, got %s", type(middle_scale)), 2)
    end
    return {
        conds = {middle = opts.middle},
        keep_uncond = true,
        cfg = function(args)
            local cond, uncond, middle = args.cond_denoised, args.uncond_denoised, args.conds_denoised.middle
            local outer = middle_scale or args.scale
            if nested then return uncond + (middle + (cond - middle) * args.scale - uncond) * outer end
            return uncond + (middle - uncond) * outer + (cond - middle) * args.scale
        end,
    }
end
