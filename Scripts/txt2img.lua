-- Text to image: a prompt (and a negative prompt) to PNGs, with the default model unless model= says otherwise:
-- model=PATH loads a Stable Diffusion checkpoint (a diffusers folder or one .safetensors file), width= and height=
-- set the image size (multiples of 8; 0 is the model's own), clip_skip=2 uses the penultimate text-encoder layer.
-- Usage: kiri run Scripts/txt2img.lua [key=value ...]; keys and defaults below. With batch=4 the
-- files are txt2img-1.png ... txt2img-4.png in the output folder (-o, default out/). guidance= names
-- guidance patches applied with their defaults, comma-separated (guidance=rescale_cfg,dynamic_thresholding).
-- parameters= takes A1111's "parameters" text (prompt, negative prompt, Steps, Sampler, CFG scale, Seed, Size, ...).
local recipe = require "lib.recipe"
local generate = require "lib.generate"

local defaults = generate.model_options{
    prompt = "sneaker", negative = "", steps = 20, cfg = 4.0, sampler = "dpmpp_2m", schedule = "karras",
    guidance = "", seed = 0, batch = 1, out = "txt2img.png", parameters = "",
}
local p = recipe.params(arg, defaults)
-- parameters= is an A1111 PNG's text (kiri run --from): its settings become the defaults, and the command line's
-- own keys still win.
if p.parameters ~= "" then
    local fields, ignored = recipe.from_parameters(p.parameters)
    for key, value in pairs(fields) do defaults[key] = value end
    p = recipe.params(arg, defaults)
    recipe.check_ranges(p, "A1111 parameters")
    p.parameters = nil
    if #ignored > 0 then print("A1111 settings Kiri does not honour: " .. table.concat(ignored, "; ")) end
    print("Kiri's noise is not A1111's (Philox, not torch.randn), so the image will differ from the original")
end

local x = generate.sample(p)
for _, path in ipairs(recipe.save_samples(p.out, x, p)) do print("wrote " .. path) end
