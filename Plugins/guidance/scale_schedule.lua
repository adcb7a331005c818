-- A guidance scale that changes over the steps: constant, or a linear or cosine ramp from `from` to `to`
-- The ramps of Chang et al. (2023), "Muse", section 2.7 (a linearly increasing guidance scale), and the
-- cosine one of Gao et al. (2023), "Masked Diffusion Transformer", with t = (step - 1) / (steps - 1):
--   linear w = t, cosine w = (1 - cos(pi t)) / 2, constant w = 1;  scale = from + (to - from) * w
-- kiri.guidance.scale_schedule{shape = "linear", from = 1, to = <the guider's scale>} -> a scale patch.
-- It needs the guider's sigmas (for the step); later scale patches (interval) see its value.
local shapes = {
    constant = function() return 1 end,
    linear = function(t) return t end,
    cosine = function(t) return (1 - math.cos(math.pi * t)) / 2 end,
}

return function(opts)
    opts = opts or {}
    local shape, from, to = opts.shape or "linear", opts.from or 1, opts.to
    local ramp = shapes[shape]
    if not ramp then
        error(string.format("scale_schedule: unknown shape '%s' (constant, linear or cosine)", tostring(shape)), 2)
    end
    if type(from) ~= "number" or (to ~= nil and type(to) ~= "number") then
        error("scale_schedule: from and to must be numbers", 2)
    end
    return {scale = function(args)
        if not args.step then
            error("scale_schedule needs the step: give the guider its sigmas (kiri.guidance.cfg{sigmas = ...})", 0)
        end
        local t = args.steps > 1 and (args.step - 1) / (args.steps - 1) or 1
        local target = to or args.scale
        return from + (target - from) * ramp(t)
    end}
end
