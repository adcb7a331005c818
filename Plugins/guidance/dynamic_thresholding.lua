-- Dynamic thresholding (Imagen): clip the denoised x0 to a per-sample percentile s of |x0|, then divide by s
-- Saharia et al. (2022), "Photorealistic Text-to-Image Diffusion Models with Deep Language Understanding",
-- arXiv:2205.11487, section 2.3; the arithmetic of diffusers schedulers/scheduling_ddpm.py _threshold_sample:
-- s = quantile(|x0|, ratio) over each sample's elements (linear interpolation, as torch.quantile), clamped
-- to [1, max]; x0 = clamp(x0, -s, s) / s.
-- kiri.guidance.dynamic_thresholding{ratio = 0.995, max = 1} -> a post_cfg patch. With max = 1 it is static
-- thresholding (a clamp to [-1, 1]); DeepFloyd IF uses ratio 0.95, max 1.5.
local rows = require("lib.guidance").rows

local format = string.format

-- torch.quantile's default ("linear"): position q * (n - 1) in the sorted values, interpolated.
local function quantile(values, q)
    table.sort(values)
    local position = q * (#values - 1)
    local below = math.floor(position)
    local fraction = position - below
    local low, high = values[below + 1], values[math.min(below + 2, #values)]
    return low + (high - low) * fraction
end

local function threshold(denoised, ratio, max)
    local magnitudes = rows(denoised:abs()):totable()
    local samples = {}
    for i, row in ipairs(magnitudes) do
        local s = math.min(math.max(quantile(row, ratio), 1), max)
        samples[i] = denoised:narrow(1, i, 1):clamp(-s, s) / s
    end
    return kiri.cat(samples, 1)
end

return function(opts)
    opts = opts or {}
    local ratio, max = opts.ratio or 0.995, opts.max or 1
    if type(ratio) ~= "number" or ratio < 0 or ratio > 1 then
        error(format("dynamic_thresholding: ratio must be a number in [0, 1], got %s", tostring(ratio)), 2)
    end
    if type(max) ~= "number" or max < 1 then
        error(format("dynamic_thresholding: max must be a number >= 1, got %s", tostring(max)), 2)
    end
    return {post_cfg = function(args) return threshold(args.denoised, ratio, max) end}
end
