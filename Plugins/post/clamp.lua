-- An image clamped to [lo, hi], as a new tensor (default [0, 1])
-- numpy.clip(image, lo, hi); torch.clamp. The input is not changed (Torch7: no `_`, a new tensor).
-- kiri.post.clamp(image, lo = 0, hi = 1) -> a tensor of image's shape
local check = require "lib.check"

return function(image, lo, hi)
    check.tensor(image, 1, "clamp")
    local bounds = { lo = lo, hi = hi }
    lo = check.number(bounds, "lo", 0, 2, "clamp")
    hi = check.number(bounds, "hi", 1, 3, "clamp")
    if hi < lo then check.fail(3, "clamp", string.format("hi must be >= lo (%s), got %s", lo, hi), 3) end
    return image:clamp(lo, hi)
end
