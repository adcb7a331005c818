-- Contrast: each image blended with the mean of its grey, out = mean + factor (image - mean), clamped to [0, 1]
-- PIL ImageEnhance.Contrast in float: the degenerate image is the mean of image.convert("L"), grey by Rec. 601
-- luma (0.299 R + 0.587 G + 0.114 B; a grey image is its own luma), taken over every pixel of each image.
-- kiri.post.contrast(image, factor): image [H, W], [C, H, W] or [N, C, H, W] with C = 1 or 3; factor 0 gives
-- the flat mean, 1 the image, > 1 more contrast.
local check = require "lib.check"
local filter = require "lib.filter"

return function(image, factor)
    check.image(image, 1, "contrast")
    if type(factor) ~= "number" or factor ~= factor or math.abs(factor) == math.huge then
        check.fail(2, "contrast", "finite number expected, got " .. check.show(factor), 3)
    end
    local shape = image:shape()
    local rank = #shape
    local channels = rank == 2 and 1 or shape[rank - 2]
    if channels ~= 1 and channels ~= 3 then
        check.fail(1, "contrast", "1 or 3 channels expected, got shape " .. check.shape_text(shape), 3)
    end
    local batch = image:reshape({ -1, channels, shape[rank - 1], shape[rank] })   -- [N, C, H, W]
    local mean = filter.grey(batch, 2):reshape({ batch:size(1), -1 }):mean(2, true):reshape({ -1, 1, 1, 1 })
    return ((batch - mean) * factor + mean):clamp_(0, 1):reshape(shape)
end
