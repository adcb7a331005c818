-- Perp-Neg: only the part of the negative direction perpendicular to the positive one is subtracted
-- Armandpour et al. (2023), "Re-imagine the Negative Prompt Algorithm", arXiv:2304.04968, eq. 6; the
-- arithmetic of ComfyUI comfy_extras/nodes_perpneg.py perp_neg, in denoised space, around the
-- prediction for the empty prompt e: pos = cond - e, neg = uncond - e,
--   denoised = e + scale * (pos - neg_scale * (neg - <neg, pos> / |pos|^2 * pos))
-- with the inner products per sample (ComfyUI takes them over the whole batch; equal for one sample).
-- kiri.guidance.perp_neg{neg_scale = 1, empty = ""} -> a patch; the negative prompt is the guider's uncond,
-- `empty` the prompt (or extra) of the third prediction, evaluated in the same batched call.
local guidance = require "lib.guidance"

return function(opts)
    opts = opts or {}
    local neg_scale = opts.neg_scale or 1
    if type(neg_scale) ~= "number" then
        error(string.format("perp_neg: neg_scale must be a number, got %s", type(neg_scale)), 2)
    end
    return {
        conds = {empty = opts.empty or ""},
        keep_uncond = true,
        cfg = function(args)
            local empty = args.conds_denoised.empty
            local pos, neg = args.cond_denoised - empty, args.uncond_denoised - empty
            -- (+ 1e-12: a prompt that predicts what the empty one does has no direction, and no perpendicular)
            local along = guidance.rows(neg * pos):sum(2) / (guidance.rows(pos * pos):sum(2) + 1e-12)
            local perpendicular = neg - pos * guidance.per_sample(along, pos)
            return empty + (pos - perpendicular * neg_scale) * args.scale
        end,
    }
end
