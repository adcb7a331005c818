-- Separable linear filters: a 1-D linear operator, as a matrix, applied along H and along W with matmul
-- The operator matrices follow scipy.ndimage (correlate1d with mode="nearest", _gaussian_kernel1d) and are
-- built here; post/resize builds Pillow's resampling matrices and applies them with filter.separable.
--
--   filter.separable(image, vertical, horizontal) -> image [..., H, W] (any leading dimensions) with
--       horizontal [W', W] applied along W, then vertical [H', H] along H: vertical @ image @ horizontal^T,
--       the order of Pillow's two passes. Either matrix may be nil, leaving that axis as it is.
--   filter.matrix(rows, columns, fill) -> a [rows, columns] tensor: fill(i, row) sets row[j] of the zeroed
--       Lua list `row` for output i (both 1-based)
--   filter.correlation(size, weights) -> [size, size]: correlation with the odd-length kernel `weights`
--       (a list, centred), edges replicated (scipy.ndimage.correlate1d, mode="nearest")
--   filter.gaussian(sigma, truncate) -> the normalised Gaussian kernel as a list of 2 r + 1 weights,
--       r = floor(truncate * sigma + 0.5) (scipy.ndimage.gaussian_filter; truncate 4 by default)
--   filter.gaussian_blur(image, sigma) -> image [..., H, W] blurred along H and W
--       (scipy.ndimage.gaussian_filter(image, sigma=(0, ..., sigma, sigma), mode="nearest", truncate=4.0))
--   filter.grey(image, dim) -> the grey of image along its channel dimension `dim` (kept, of size 1): Rec. 601
--       luma 0.299 R + 0.587 G + 0.114 B of the first three channels (as PIL's convert("L")), or the first
--       channel of an image with fewer than three (grey, grey + alpha)
local filter = {}

local LUMA = {0.299, 0.587, 0.114}

function filter.grey(image, dim)
    if image:size(dim) < 3 then return image:narrow(dim, 1, 1) end
    local sum = image:narrow(dim, 1, 1) * LUMA[1]
    for c = 2, 3 do sum = sum + image:narrow(dim, c, 1) * LUMA[c] end
    return sum
end

function filter.separable(image, vertical, horizontal)
    local shape = image:shape()
    local rank = #shape
    local planes = image:reshape({ -1, shape[rank - 1], shape[rank] })   -- [P, H, W]
    if horizontal then planes = planes:matmul(horizontal:transpose(1, 2)) end   -- [P, H, W']
    if vertical then planes = vertical:matmul(planes) end                      -- [P, H', W']
    if not (horizontal or vertical) then planes = planes:clone() end
    shape[rank - 1], shape[rank] = planes:size(2), planes:size(3)
    return planes:reshape(shape)
end

function filter.matrix(rows, columns, fill)
    local entries = {}
    for i = 1, rows do
        local row = {}
        for j = 1, columns do row[j] = 0 end
        fill(i, row)
        entries[i] = row
    end
    return kiri.tensor(entries)
end

function filter.correlation(size, weights)
    local radius = (#weights - 1) // 2
    return filter.matrix(size, size, function(i, row)
        for k = 1, #weights do
            -- input i + k - 1 - radius, outside the image its nearest edge pixel
            local j = math.min(math.max(i + k - 1 - radius, 1), size)
            row[j] = row[j] + weights[k]
        end
    end)
end

function filter.gaussian(sigma, truncate)
    local radius = math.floor((truncate or 4) * sigma + 0.5)
    local weights, total = {}, 0
    for x = -radius, radius do
        local weight = math.exp(-0.5 / (sigma * sigma) * x * x)
        weights[#weights + 1] = weight
        total = total + weight
    end
    for k = 1, #weights do weights[k] = weights[k] / total end
    return weights
end

function filter.gaussian_blur(image, sigma)
    local weights = filter.gaussian(sigma)
    local shape = image:shape()
    local height, width = shape[#shape - 1], shape[#shape]
    local vertical = filter.correlation(height, weights)
    local horizontal = width == height and vertical or filter.correlation(width, weights)
    return filter.separable(image, vertical, horizontal)
end

return filter
