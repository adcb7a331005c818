-- Guidance interval: CFG only while sigma is in [lo, hi]; elsewhere the cond prediction alone (scale 1)
-- Kynkäänniemi et al. (2024), "Applying Guidance in a Limited Interval Improves Sample and Distribution
-- Quality in Diffusion Models", arXiv:2404.07724, eq. 4 (their EDM2 interval for ImageNet-512 is
-- sigma in (0.28, 5.42], the defaults here). Outside the interval the guider skips the unconditional call.
-- kiri.guidance.interval{lo = 0.28, hi = 5.42} -> a scale patch; sigma is the one the model is called at.
return function(opts)
    opts = opts or {}
    local lo, hi = opts.lo or 0.28, opts.hi or 5.42
    if type(lo) ~= "number" or type(hi) ~= "number" or lo > hi then
        error(string.format("interval: lo and hi must be numbers with lo <= hi, got %s and %s", tostring(lo), tostring(hi)), 2)
    end
    return {scale = function(args)
        if args.sigma >= lo and args.sigma <= hi then return args.scale end
        return 1
    end}
end
