-- X/Y plot: one image for each pair of values of two parameters, in one labelled PNG (A1111's X/Y/Z plot).
-- Usage: kiri run Scripts/grid.lua [x=sampler xs=euler,heun,dpmpp_2m] [y=steps ys=5,10,20] [key=value ...]
-- x and y name any txt2img parameter (prompt, negative, steps, cfg, sampler, schedule, guidance, seed); xs and ys
-- list its values, comma-separated. ys=classes (or xs=classes) with prompt takes every class of the model.
-- Examples: x=cfg xs=1,2,4,8 y=seed ys=1,2,3  |  x=seed xs=1,2,3,4,5,6,7,8 y=prompt ys=classes  |
-- x=guidance xs=none,rescale_cfg,apg,perp_neg y=cfg ys=2,4,8
local recipe = require "lib.recipe"
local generate = require "lib.generate"

local p = recipe.params(arg, generate.model_options{
    x = "sampler", xs = "euler,euler_ancestral,heun,dpmpp_2m,dpmpp_2m_sde", y = "steps", ys = "4,8,16",
    prompt = "sneaker", negative = "", steps = 20, cfg = 4.0, sampler = "dpmpp_2m", schedule = "karras", guidance = "",
    seed = 0, scale = 2, out = "grid.png",
})
local model <close> = generate.open(p)   -- opened once for every cell

local function axis(key, text)
    if p[key] == nil or key == "batch" or key == "out" or key == "model" or key == "width" or key == "height"
        or key == "vae" or key == "lora_dir" then
        error(string.format("cannot plot '%s'; choose prompt, negative, steps, cfg, sampler, schedule, guidance or seed", key), 0)
    end
    if text == "classes" and (key == "prompt" or key == "negative") then
        if not model.classes then error("classes: this model has no list of classes (the default model has)", 0) end
        return model.classes
    end
    return recipe.values(key, text, p[key])
end
local xs, ys = axis(p.x, p.xs), axis(p.y, p.ys)

local rows, row_labels, column_labels = {}, {}, {}
for i, x in ipairs(xs) do column_labels[i] = p.x .. ": " .. tostring(x) end
for j, y in ipairs(ys) do
    row_labels[j] = p.y .. ": " .. tostring(y)
    rows[j] = {}
    for i, x in ipairs(xs) do
        local cell = {batch = 1}
        for key, value in pairs(p) do cell[key] = value end
        cell[p.x], cell[p.y] = x, y
        rows[j][i] = kiri.post.to_image(generate.sample(cell, nil, nil, model))
    end
end

local image = kiri.post.grid(rows, {row_labels = row_labels, column_labels = column_labels, scale = p.scale})
p[p.x], p[p.y] = p.xs, p.ys
print(string.format("wrote %s: %d x %d images (%s by %s)", recipe.save(p.out, image, p), #xs, #ys, p.x, p.y))
