-- Unsharp mask: image + amount (image - Gaussian blur) where the difference reaches threshold, clamped to [0, 1]
-- The blur is scipy.ndimage.gaussian_filter(mode="nearest", truncate=4.0) along H and W (lib.filter); the
-- mask is PIL ImageFilter.UnsharpMask's (percent = 100 amount, threshold on |image - blurred|), in float.
-- kiri.post.sharpen(image, {sigma = 1, amount = 1, threshold = 0}): image [H, W], [C, H, W] or [N, C, H, W].
local check = require "lib.check"
local filter = require "lib.filter"

return function(image, opts)
    check.image(image, 1, "sharpen")
    opts = check.options(opts, 2, "sharpen")
    local sigma = check.number(opts, "sigma", 1, 2, "sharpen", "a positive number", function(s) return s > 0 end)
    local amount = check.number(opts, "amount", 1, 2, "sharpen")
    local threshold = check.number(opts, "threshold", 0, 2, "sharpen", "a number >= 0", function(t) return t >= 0 end)
    local detail = image - filter.gaussian_blur(image, sigma)
    if threshold > 0 then detail = detail * detail:abs():ge(threshold) end
    return (image + detail * amount):clamp_(0, 1)
end
