-- Hires fix: generate at width x height, upscale, re-noise to `denoise` and sample again at the larger size, as
-- A1111's "Hires. fix" (modules/processing.py, StableDiffusionProcessingTxt2Img.sample_hr_pass). upscaler=latent
-- resizes the latents bilinearly (A1111's "Latent"); nearest, bilinear, bicubic or lanczos resize the decoded image
-- and encode it again. hires_steps=0 takes `steps`; the second pass uses the same seed, prompt and guidance.
-- Usage: kiri run Scripts/hires.lua model=PATH prompt="..." width=512 height=512 scale=1.5 denoise=0.5
local recipe = require "lib.recipe"
local generate = require "lib.generate"

local p = recipe.params(arg, generate.model_options{
    prompt = "sneaker", negative = "", steps = 20, hires_steps = 0, cfg = 4.0, sampler = "dpmpp_2m", schedule = "karras",
    guidance = "", seed = 0, batch = 1, scale = 2.0,
    upscaler = "latent", denoise = 0.5, out = "hires.png",
})
local upscalers = {latent = true, nearest = true, bilinear = true, bicubic = true, lanczos = true}
if not upscalers[p.upscaler] then
    error(string.format("upscaler must be latent, nearest, bilinear, bicubic or lanczos, got '%s'", p.upscaler), 0)
end
if p.scale < 1 or p.scale > 8 then error(string.format("scale must be from 1 to 8, got %g", p.scale), 0) end

local model <close> = generate.open(p)
local latents = generate.sample_latents(p, nil, nil, model)

-- The second pass's size: the first's times scale, rounded down to what the model takes (A1111 rounds the same way).
local _, image_shape = model:sample_shape_for(p.width > 0 and p.width or nil, p.height > 0 and p.height or nil)
local step = image_shape[2] // latents:size(3)
local hires = {}
for key, value in pairs(p) do hires[key] = value end
hires.width = math.floor(image_shape[3] * p.scale / step) * step
hires.height = math.floor(image_shape[2] * p.scale / step) * step
hires.steps = p.hires_steps > 0 and p.hires_steps or p.steps
local sample_shape = model:sample_shape_for(hires.width, hires.height)

local init = {strength = p.denoise}
if p.upscaler == "latent" then
    init.latents = kiri.post.resize(latents, {width = sample_shape[3], height = sample_shape[2], mode = "bilinear"})
else
    local image = kiri.post.to_image(model:decode(latents))
    init.image = kiri.post.from_image(kiri.post.resize(image, {width = hires.width, height = hires.height, mode = p.upscaler}))
end
local x = model:decode(generate.sample_latents(hires, init, nil, model))
hires.size = string.format("%dx%d", hires.width, hires.height)
hires.strength = p.denoise
for _, path in ipairs(recipe.save_samples(p.out, x, hires)) do print("wrote " .. path) end
