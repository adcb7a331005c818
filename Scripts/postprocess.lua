-- Post-processing chain for any PNG: resize, unsharp mask, contrast, levels, clamp, in that order.
-- Usage: kiri run Scripts/postprocess.lua init=sneaker.png [key=value ...]; keys and defaults below. A step
-- at its neutral value is left out (sharpen=0, contrast=1, levels at 0,1,1). width/height 0 keep the size
-- (one of them alone keeps the aspect ratio). Writes `out` into the output folder (-o, default out/).
local recipe = require "lib.recipe"

local p = recipe.params(arg, {
    init = "", width = 0, height = 0, mode = "lanczos", sharpen = 0.0, radius = 1.0, contrast = 1.0,
    black = 0.0, white = 1.0, gamma = 1.0, out = "postprocess.png",
})
if p.init == "" then error("init= names the PNG to process", 0) end

local image = kiri.image.load(p.init)
if p.width > 0 or p.height > 0 then
    image = kiri.post.resize(image, {width = p.width > 0 and p.width or nil, height = p.height > 0 and p.height or nil,
        mode = p.mode})
end
if p.sharpen ~= 0 then image = kiri.post.sharpen(image, {sigma = p.radius, amount = p.sharpen}) end
if p.contrast ~= 1 then image = kiri.post.contrast(image, p.contrast) end
if p.black ~= 0 or p.white ~= 1 or p.gamma ~= 1 then
    image = kiri.post.levels(image, {in_black = p.black, in_white = p.white, gamma = p.gamma})
end
image = kiri.post.clamp(image)
local shape = image:shape()
print(string.format("wrote %s (%dx%d)", kiri.image.save(p.out, image, {
    parameters = string.format("Post-processing of %s: size %dx%d (%s), sharpen %g (sigma %g), contrast %g, "
        .. "levels %g..%g gamma %g",
        p.init, shape[3], shape[2], p.mode, p.sharpen, p.radius, p.contrast, p.black, p.white, p.gamma)}), shape[3], shape[2]))
