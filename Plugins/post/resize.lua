-- Resize to width x height by nearest, bilinear, bicubic or lanczos resampling, as Pillow's Image.resize
-- Pillow src/libImaging/Resample.c (precompute_coeffs and the float32 passes, W then H) and, for nearest,
-- Geometry.c ImagingScaleAffine as _imaging.c's resize calls it; matches Image.resize on mode "F" images.
-- kiri.post.resize(image, {width =, height =, mode = "bilinear"}): image [H, W], [C, H, W] or [N, C, H, W];
-- width or height may be left out to keep the aspect ratio.
local check = require "lib.check"
local filter = require "lib.filter"

local function sinc(x)
    if x == 0 then return 1 end
    x = x * math.pi
    return math.sin(x) / x
end

-- Resample.c's filters: the kernel and its support at scale 1.
local kernels = {
    bilinear = { support = 1, weight = function(x)
        x = math.abs(x)
        return x < 1 and 1 - x or 0
    end },
    bicubic = { support = 2, weight = function(x)   -- Keys' cubic convolution, a = -0.5
        local a = -0.5
        x = math.abs(x)
        if x < 1 then return ((a + 2) * x - (a + 3)) * x * x + 1 end
        if x < 2 then return (((x - 5) * x + 8) * x - 4) * a end
        return 0
    end },
    lanczos = { support = 3, weight = function(x)
        if -3 <= x and x < 3 then return sinc(x) * sinc(x / 3) end
        return 0
    end },
}

-- [size_out, size_in]: output i takes input floor(position), position = scale / 2 + (i - 1) scale, summed
-- step by step as Pillow does (a product could land on the other side of a whole number).
local function nearest(size_in, size_out)
    local scale = size_in / size_out
    local position = scale * 0.5
    return filter.matrix(size_out, size_in, function(_, row)
        row[math.min(math.floor(position), size_in - 1) + 1] = 1
        position = position + scale
    end)
end

-- [size_out, size_in]: precompute_coeffs. The kernel is widened by the scale when shrinking (filterscale),
-- centred on output i's centre in input coordinates, cut to the image and normalised to sum 1.
local function weights(size_in, size_out, kernel)
    local scale = size_in / size_out
    local filterscale = math.max(scale, 1)
    local support = kernel.support * filterscale
    local ss = 1 / filterscale
    return filter.matrix(size_out, size_in, function(i, row)
        local center = (i - 1 + 0.5) * scale
        local first = math.max(math.floor(center - support + 0.5), 0)      -- 0-based, as in C
        local last = math.min(math.floor(center + support + 0.5), size_in)   -- exclusive
        local total = 0
        for j = first, last - 1 do
            local w = kernel.weight((j - center + 0.5) * ss)
            row[j + 1] = w
            total = total + w
        end
        if total ~= 0 then
            for j = first + 1, last do row[j] = row[j] / total end
        end
    end)
end

local function matrix(size_in, size_out, mode)
    if size_in == size_out then return nil end   -- Pillow skips a pass that keeps the size
    if mode == "nearest" then return nearest(size_in, size_out) end
    return weights(size_in, size_out, kernels[mode])
end

return function(image, opts)
    check.image(image, 1, "resize")
    if type(opts) ~= "table" then check.fail(2, "resize", "table expected, got " .. check.kind(opts), 3) end
    local mode = opts.mode or "bilinear"
    if mode ~= "nearest" and not kernels[mode] then
        check.fail(2, "resize", string.format("unknown mode '%s' (nearest, bilinear, bicubic or lanczos)", tostring(mode)), 3)
    end
    local shape = image:shape()
    local height, width = shape[#shape - 1], shape[#shape]
    local new_width = check.whole(opts, "width", nil, 2, "resize", 1)
    local new_height = check.whole(opts, "height", nil, 2, "resize", 1)
    if not (new_width or new_height) then check.fail(2, "resize", "width or height expected", 3) end
    new_width = new_width or math.max(1, math.floor(width * new_height / height + 0.5))
    new_height = new_height or math.max(1, math.floor(height * new_width / width + 0.5))
    return filter.separable(image, matrix(height, new_height, mode), matrix(width, new_width, mode))
end
