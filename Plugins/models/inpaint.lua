-- Inpainting with any denoiser: outside the mask, the known image re-noised to each step's sigma
-- ComfyUI comfy/samplers.py KSamplerX0Inpaint: before each call the known region of x is replaced by the
-- image noised to the current sigma (with the sampler's starting noise, so it stays consistent), and the
-- known region of the result is the image itself. kiri.models.inpaint(model, {image =, mask =, noise =})
-- -> D(x, sigma, extra): mask is 1 where to paint and 0 where to keep (A1111's white = repaint), and
-- broadcasts against x; image is the known sample in the model's space.
return function(model, opts)
    local image, mask, noise = opts.image, opts.mask, opts.noise
    local keep = 1 - mask
    return setmetatable({}, {
        __index = type(model) == "table" and model or nil,
        __call = function(_, x, sigma, extra)
            local known = image + noise * sigma
            local denoised = model(x * mask + known * keep, sigma, extra)
            return denoised * mask + image * keep
        end,
    })
end
