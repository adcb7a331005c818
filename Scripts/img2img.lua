-- Image to image: an init PNG noised to `strength` and denoised towards the prompt (SDEdit, Meng et al. 2021).
-- Usage: kiri run Scripts/img2img.lua init=PATH.png [strength=0.6] [key=value ...]; keys and defaults
-- below. strength 1 ignores the image; small strengths keep more of it.
local recipe = require "lib.recipe"
local generate = require "lib.generate"

local p = recipe.params(arg, generate.model_options{
    init = "", strength = 0.6, prompt = "sneaker", negative = "", steps = 20, cfg = 4.0,
    sampler = "dpmpp_2m", schedule = "karras", guidance = "", seed = 0, batch = 1, out = "img2img.png",
})
if p.init == "" then error("img2img needs init=PATH.png, the image to start from", 0) end

local x = generate.sample(p, {image = p.init, strength = p.strength})
for _, path in ipairs(recipe.save_samples(p.out, x, p)) do print("wrote " .. path) end
