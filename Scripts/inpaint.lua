-- Inpainting: repaint where the mask PNG is white, keep the image where it is black.
-- The known region is re-noised to each step's sigma and blended in at every step (kiri.models.inpaint).
-- Usage: kiri run Scripts/inpaint.lua init=PATH.png mask=MASK.png [key=value ...]; keys and defaults below.
local recipe = require "lib.recipe"
local generate = require "lib.generate"

local p = recipe.params(arg, generate.model_options{
    init = "", mask = "", strength = 1.0, prompt = "sneaker", negative = "", steps = 20, cfg = 4.0,
    sampler = "dpmpp_2m", schedule = "karras", guidance = "", seed = 0, batch = 1, out = "inpaint.png",
})
if p.init == "" or p.mask == "" then error("inpaint needs init=PATH.png and mask=MASK.png", 0) end

local x = generate.sample(p, {image = p.init, mask = p.mask, strength = p.strength})
for _, path in ipairs(recipe.save_samples(p.out, x, p)) do print("wrote " .. path) end
