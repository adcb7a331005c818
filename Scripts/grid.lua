-- X/Y/Z plot: one image for each combination of values of two or three parameters, in one labelled PNG
-- (AUTOMATIC1111 scripts/xyz_grid.py).
-- Usage: kiri run Scripts/grid.lua [x=sampler xs=euler,heun,dpmpp_2m] [y=steps ys=5,10,20] [z=cfg zs=2,8] [key=value ...]
-- x, y and z name a txt2img parameter (prompt, negative, steps, cfg, sampler, schedule, guidance, seed, clip_skip);
-- xs, ys and zs list its values, comma-separated. ys=classes (or xs=, zs=) with prompt takes every class of the model.
-- With z, one X/Y grid for each Z value, side by side under its "KEY: VALUE", as A1111's draw_xyz_grid joins them.
-- The PNG's parameters are the first cell's, with the axes ("X Type: Sampler, X Values: ...") as A1111 writes them:
-- the cell in column i, row j of grid k was made with those, the i-th X, j-th Y and k-th Z value put in.
-- Examples: x=cfg xs=1,2,4,8 y=seed ys=1,2,3  |  x=seed xs=1,2,3,4,5,6,7,8 y=prompt ys=classes  |
-- x=guidance xs=none,rescale_cfg,apg,perp_neg y=cfg ys=2,4,8  |  x=sampler xs=euler,heun y=seed ys=1,2 z=steps zs=4,8
local recipe = require "lib.recipe"
local generate = require "lib.generate"

local format = string.format

local p = recipe.params(arg, generate.model_options{
    x = "sampler", xs = "euler,euler_ancestral,heun,dpmpp_2m,dpmpp_2m_sde", y = "steps", ys = "4,8,16", z = "", zs = "",
    prompt = "sneaker", negative = "", steps = 20, cfg = 4.0, sampler = "dpmpp_2m", schedule = "karras", guidance = "",
    seed = 0, scale = 2, out = "grid.png",
})
local model <close> = generate.open(p)   -- opened once for every cell

-- The keys a plot may vary, each with the name A1111's X/Y/Z plot gives that axis (its "X Type", which its
-- infotext reader matches to restore the plot). "Prompt S/R" replaces the first value by each value; as the
-- PNG's prompt is the first value, that is this plot's prompt axis. Keys the open model fixes are left out.
local axis_types = {
    prompt = "Prompt S/R", negative = "Negative prompt", steps = "Steps", cfg = "CFG Scale", sampler = "Sampler",
    schedule = "Schedule type", guidance = "Guidance", seed = "Seed", clip_skip = "Clip skip",
}

local function axis(name, key, text)
    if not axis_types[key] then
        recipe.input_error(format("%s: cannot plot '%s'; choose prompt, negative, steps, cfg, sampler, schedule, "
            .. "guidance, seed or clip_skip", name, key))
    end
    if text == "classes" and (key == "prompt" or key == "negative") then
        if not model.classes then recipe.input_error("classes: this model has no list of classes (the default model has)") end
        return model.classes
    end
    return recipe.values(key, text, p[key])
end
local xs, ys, zs = axis("x", p.x, p.xs), axis("y", p.y, p.ys), {}
if p.y == p.x then recipe.input_error(format("x and y are both '%s'; plot two different keys", p.x)) end
if p.z ~= "" then
    if p.z == p.x or p.z == p.y then
        recipe.input_error(format("z is '%s', as %s is; each key can be on one axis only", p.z, p.z == p.x and "x" or "y"))
    end
    zs = axis("z", p.z, p.zs)
elseif p.zs ~= "" then
    recipe.input_error("zs= needs z=KEY, the parameter its values are for")
end

-- The parameters of the cell at these values (z nil without a Z axis).
local function cell(x, y, z)
    local params = {batch = 1}
    for key, value in pairs(p) do params[key] = value end
    params[p.x], params[p.y] = x, y
    if z ~= nil then params[p.z] = z end
    return params
end

-- A value as A1111's labels show it, "Steps: 20", with the name the PNG's parameters give the key.
local function label(key, value) return recipe.field_name(key) .. ": " .. recipe.field_text(key, value) end

local row_labels, column_labels = {}, {}
for i, x in ipairs(xs) do column_labels[i] = label(p.x, x) end
for j, y in ipairs(ys) do row_labels[j] = label(p.y, y) end
local grids, cell_size = {}, nil
for k = 1, math.max(#zs, 1) do
    local rows = {}
    for j, y in ipairs(ys) do
        rows[j] = {}
        for i, x in ipairs(xs) do
            rows[j][i] = kiri.post.to_image(generate.sample(cell(x, y, zs[k]), nil, nil, model))
        end
    end
    local shape = rows[1][1]:shape()
    cell_size = format("%dx%d", shape[#shape], shape[#shape - 1])
    grids[k] = kiri.post.grid(rows, {row_labels = row_labels, column_labels = column_labels, scale = p.scale})
end

local image = grids[1]
if p.z ~= "" then
    local titles = {}
    for k, z in ipairs(zs) do titles[k] = label(p.z, z) end
    image = kiri.post.grid({grids}, {column_labels = titles})
end

local fields = cell(xs[1], ys[1], zs[1])
fields.batch, fields.size = nil, cell_size
for name, values in pairs({x = xs, y = ys, z = zs}) do
    if p[name] ~= "" then
        fields[name .. "_type"], fields[name .. "_values"] = axis_types[p[name]], table.concat(values, ",")
    end
end
local path = recipe.save(p.out, image, fields)
if p.z == "" then
    print(format("wrote %s: %d x %d images (%s by %s)", path, #xs, #ys, p.x, p.y))
else
    print(format("wrote %s: %d x %d x %d images (%s by %s by %s)", path, #xs, #ys, #zs, p.x, p.y, p.z))
end
