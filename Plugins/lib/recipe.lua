-- What every recipe needs around its pipeline: parameters from the command line, and the PNG metadata
--
--   params(arg, defaults)     -> a table of parameters: the defaults, overridden by `key=value`
--                                arguments. Each value takes the type of its default (number, integer,
--                                boolean or string). An unknown key or a bad value is an error that lists
--                                the valid keys.
--   values(key, text, default) -> the comma-separated values of `text` as a list, each of the type of
--                                `default` (for X/Y plots: "5,10,20" for steps)
--   parameters_text(fields)   -> the A1111 "parameters" text: the prompt, "Negative prompt: ...", then
--                                "Steps: 20, Sampler: ..., Schedule type: ..., CFG scale: ..., Seed: ...,
--                                Size: WxH, Model: ..." (stable-diffusion-webui modules/processing.py
--                                create_infotext), which A1111, ComfyUI and civitai read back; a plot's
--                                axes (x_type, x_values, ... z_values) last, as "X Type: Steps, X Values: ..."
--   field_name(key)           -> the name parameters_text gives a key ("CFG scale" for cfg), for labels
--   save(path, image, fields) saves an image in [0, 1] ([C, H, W] or [1, C, H, W]) as a PNG whose
--                                "parameters" text is parameters_text(fields); fields.size defaults to
--                                the image's. The engine adds the recipe's name, source and arguments.
--                                Returns the path written, with the output folder.
--   save_samples(path, x, fields)
--                                each sample of x [batch, C, H, W] in [-1, 1] as a PNG: `path` itself
--                                for one sample, else path-1.png, path-2.png, ... (Batch pos in fields);
--                                returns the paths written
--   load_image(path, shape)   -> a PNG as a [1, C, H, W] sample in [-1, 1] for a model whose samples have
--                                shape {C, H, W}: RGB becomes grey by Rec. 601 luma (as PIL's "L"), alpha
--                                is dropped; the size must match
--   load_mask(path, shape)    -> a PNG as a [1, 1, H, W] mask in [0, 1] (white = 1)
local filter = require "lib.filter"
local strings = require "lib.strings"

local recipe = {}

local format = string.format

local function parse(text, default)
    local kind = math.type(default) or type(default)
    if kind == "string" then return text end
    if kind == "boolean" then
        if text == "true" or text == "1" or text == "yes" then return true end
        if text == "false" or text == "0" or text == "no" then return false end
        return nil, "true or false"
    end
    local number = tonumber(text)
    if kind == "integer" then
        if math.type(number) ~= "integer" then return nil, "an integer" end
        return number
    end
    if number == nil then return nil, "a number" end
    return number
end

function recipe.values(key, values, default)
    local list = {}
    for _, item in ipairs(strings.split(values, ",")) do
        item = strings.trim(item)
        local value, expected = parse(item, default)
        if value == nil then error(format("%s: every value must be %s, got '%s'", key, expected, item), 2) end
        list[#list + 1] = value
    end
    if #list == 0 then error(format("%s: no values in '%s'", key, values), 2) end
    return list
end

function recipe.params(arguments, defaults)
    local keys = {}
    for key in pairs(defaults) do keys[#keys + 1] = key end
    table.sort(keys)
    local params = {}
    for key, value in pairs(defaults) do params[key] = value end
    for i = 1, #(arguments or {}) do
        local equals = arguments[i]:find("=", 1, true)   -- not a pattern: a value may be a long prompt
        local key = equals and arguments[i]:sub(1, equals - 1)
        if not (key and key:find("^[%w_]+$")) then
            error(format("argument %d ('%s'): key=value expected; keys: %s", i, arguments[i], table.concat(keys, ", ")), 2)
        end
        if defaults[key] == nil then
            error(format("argument %d: unknown key '%s'; keys: %s", i, key, table.concat(keys, ", ")), 2)
        end
        local written = arguments[i]:sub(equals + 1)
        local value, expected = parse(written, defaults[key])
        if value == nil then error(format("argument %d: %s must be %s, got '%s'", i, key, expected, written), 2) end
        params[key] = value
    end
    return params
end

-- The order A1111 writes them in; fields that are nil or empty are left out.
local ordered = {
    {"steps", "Steps"}, {"sampler", "Sampler"}, {"schedule", "Schedule type"}, {"cfg", "CFG scale"}, {"guidance", "Guidance"},
    {"seed", "Seed"}, {"size", "Size"}, {"model_hash", "Model hash"}, {"model", "Model"}, {"vae", "VAE"},
    {"clip_skip", "Clip skip"}, {"strength", "Denoising strength"}, {"batch", "Batch size"}, {"position", "Batch pos"},
    -- An X/Y/Z plot's axes, as scripts/xyz_grid.py adds them to its grid's infotext.
    {"x_type", "X Type"}, {"x_values", "X Values"}, {"y_type", "Y Type"}, {"y_values", "Y Values"},
    {"z_type", "Z Type"}, {"z_values", "Z Values"},
}

function recipe.field_name(key)
    if key == "prompt" then return "Prompt" end
    if key == "negative" then return "Negative prompt" end
    for _, pair in ipairs(ordered) do
        if pair[1] == key then return pair[2] end
    end
    return key
end

local function quoted(value)
    value = tostring(value)
    if value:find("[,:\"\n]") then return '"' .. value:gsub('[\\"]', "\\%0"):gsub("\n", "\\n") .. '"' end
    return value
end

-- Models and VAEs by their file's name, as A1111 shows them (and no host folder goes into a shared PNG).
local function file_name(path) return (path:match("([^/]+)/?$") or path):gsub("%.safetensors$", "") end

function recipe.parameters_text(fields)
    local lines = {fields.prompt or ""}
    if fields.negative and fields.negative ~= "" then lines[#lines + 1] = "Negative prompt: " .. fields.negative end
    local settings = {}
    for _, pair in ipairs(ordered) do
        local value = fields[pair[1]]
        if (pair[1] == "model" or pair[1] == "vae") and value ~= nil then value = file_name(value) end
        if pair[1] == "clip_skip" and (value or 0) <= 1 then value = nil end   -- A1111 shows only a skip
        if value ~= nil and value ~= "" then settings[#settings + 1] = pair[2] .. ": " .. quoted(value) end
    end
    lines[#lines + 1] = table.concat(settings, ", ")
    return table.concat(lines, "\n")
end

function recipe.save(path, image, fields)
    local shape = image:shape()
    fields.size = fields.size or format("%dx%d", shape[#shape], shape[#shape - 1])
    return kiri.image.save(path, image, {parameters = recipe.parameters_text(fields)})
end

function recipe.save_samples(path, x, fields)
    local count = x:size(1)
    local paths = {}
    for i = 1, count do
        local position = {}
        for key, value in pairs(fields) do position[key] = value end
        position.batch, position.position = nil, nil
        if count > 1 then position.batch, position.position = count, i end
        local name = count == 1 and path or path:gsub("%.png$", "") .. "-" .. i .. ".png"
        paths[i] = recipe.save(name, kiri.post.to_image(x:narrow(1, i, 1)), position)
    end
    return paths
end

local function loaded(path, shape, what)
    local image = kiri.image.load(path)
    local size = image:shape()
    if size[2] ~= shape[2] or size[3] ~= shape[3] then
        error(format("%s '%s' is %dx%d, the model makes %dx%d", what, path, size[3], size[2], shape[3], shape[2]), 3)
    end
    return image
end

function recipe.load_image(path, shape)
    local image = loaded(path, shape, "image")
    if shape[1] == 1 then
        image = filter.grey(image, 1)
    elseif image:size(1) < 3 then
        image = filter.grey(image, 1):expand({3, shape[2], shape[3]})
    else
        image = image:narrow(1, 1, 3)
    end
    return kiri.post.from_image(image:unsqueeze(1))
end

function recipe.load_mask(path, shape)
    return filter.grey(loaded(path, shape, "mask"), 1):unsqueeze(1)
end

return recipe
