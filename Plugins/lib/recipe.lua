-- What every recipe needs around its pipeline: parameters from the command line, and the PNG metadata
--
--   params(arg, defaults)     -> a table of parameters: the defaults, overridden by `key=value`
--                                arguments. Each value takes the type of its default (number, integer,
--                                boolean or string), and the keys every pipeline shares must be in range
--                                (recipe.ranges: steps >= 1, cfg >= 0, ...). An unknown key or a bad value
--                                is an input error that names the argument and lists the valid keys.
--   input_error(message)      raises an error about the user's input: the command line shows the message
--                                alone, with no position or traceback in the recipe (bridge.c)
--   values(key, text, default) -> the comma-separated values of `text` as a list, each of the type of
--                                `default` (for X/Y plots: "5,10,20" for steps)
--   parameters_text(fields)   -> the A1111 "parameters" text: the prompt, "Negative prompt: ...", then
--                                "Steps: 20, Sampler: ..., Schedule type: ..., CFG scale: ..., Seed: ...,
--                                Size: WxH, Model: ..." (stable-diffusion-webui modules/processing.py
--                                create_infotext), which A1111, ComfyUI and civitai read back, with A1111's
--                                names ("Sampler: DPM++ 2M", "Schedule type: Karras": recipe.display_names)
--                                and number format ("CFG scale: 7", recipe.number_text); a plot's
--                                axes (x_type, x_values, ... z_values) last, as "X Type: Steps, X Values: ..."
--   field_name(key)           -> the name parameters_text gives a key ("CFG scale" for cfg), for labels
--   save(path, image, fields [, text]) saves an image in [0, 1] ([C, H, W] or [1, C, H, W]) as a PNG whose
--                                "parameters" text is parameters_text(fields); fields.size defaults to
--                                the image's, fields.version "kiri VERSION". The engine adds the recipe's
--                                name, source and arguments.
--                                Returns the path written, with the output folder.
--   save_samples(path, x, fields)
--                                each sample of x [batch, C, H, W] in [-1, 1] as a PNG: `path` itself
--                                for one sample, else path-1.png, path-2.png, ..., sample k with its own
--                                Seed (seed + k - 1); returns the paths written (an existing file is kept
--                                and the next free name taken, unless the run may overwrite)
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

local input_error_meta = {__tostring = function(self) return self.input_error end}

function recipe.input_error(message)
    error(setmetatable({input_error = message}, input_error_meta), 0)
end

-- The ranges of the keys recipes share (lib/generate.lua's), so that `steps=0` or `cfg=-1` is refused by name
-- before anything runs. A1111's UI bounds them alike (its batch size goes to 8; 64 here).
recipe.ranges = {
    steps = {least = 1}, cfg = {least = 0}, batch = {least = 1, most = 64}, seed = {least = 0, most = (1 << 53) - 1},
    strength = {above = 0, most = 1}, width = {least = 0, multiple = 8}, height = {least = 0, multiple = 8},
    clip_skip = {least = 0}, subseed = {least = 0, most = (1 << 53) - 1}, subseed_strength = {least = 0, most = 1},
}

local function out_of_range(key, value, ranges)
    local range = (ranges or {})[key] or recipe.ranges[key]
    if range == nil or type(value) ~= "number" then return nil end
    if value ~= value or value == math.huge or value == -math.huge then return "must be a finite number" end
    if range.least and value < range.least then return format("must be at least %s", range.least) end
    if range.above and value <= range.above then return format("must be more than %s", range.above) end
    if range.most and value > range.most then return format("must be at most %s", range.most) end
    if range.multiple and value % range.multiple ~= 0 then return format("must be a multiple of %d", range.multiple) end
    return nil
end

-- Checks the shared keys of `p` against recipe.ranges, for values that came from elsewhere than the command line
-- (an A1111 PNG's text): `what` says where, as "A1111 parameters: steps must be at least 1, got 0".
function recipe.check_ranges(p, what)
    for key in pairs(recipe.ranges) do
        -- A size is the model's to check: the default model's 28x28 is no multiple of 8.
        local problem = key ~= "width" and key ~= "height" and out_of_range(key, p[key])
        if problem then recipe.input_error(format("%s: %s %s, got %s", what, key, problem, tostring(p[key]))) end
    end
end

function recipe.values(key, values, default)
    local list = {}
    for _, item in ipairs(strings.split(values, ",")) do
        item = strings.trim(item)
        local value, expected = parse(item, default)
        if value == nil then recipe.input_error(format("%s: every value must be %s, got '%s'", key, expected, item)) end
        local problem = out_of_range(key, value)
        if problem then recipe.input_error(format("%s: %s, got %s", key, problem, item)) end
        list[#list + 1] = value
    end
    if #list == 0 then recipe.input_error(format("%s: no values in '%s'", key, values)) end
    return list
end

-- The command line's key=value arguments, as recipe.params last read them (save_samples gives each image of a batch
-- its own, so that `kiri run --from` one of them makes that image alone).
local command_line

-- `ranges` overrides recipe.ranges for this recipe's keys (a training batch goes past a generation's 64).
function recipe.params(arguments, defaults, ranges)
    command_line = arguments
    local keys = {}
    for key in pairs(defaults) do keys[#keys + 1] = key end
    table.sort(keys)
    local params = {}
    for key, value in pairs(defaults) do params[key] = value end
    for i = 1, #(arguments or {}) do
        local equals = arguments[i]:find("=", 1, true)   -- not a pattern: a value may be a long prompt
        local key = equals and arguments[i]:sub(1, equals - 1)
        if not (key and key:find("^[%w_]+$")) then
            local hint = arguments[i]:find("^%-") and " (kiri's own options go before the recipe's FILE)" or ""
            recipe.input_error(format("argument %d ('%s'): key=value expected%s; keys: %s", i, arguments[i], hint,
                table.concat(keys, ", ")))
        end
        if defaults[key] == nil then
            recipe.input_error(format("argument %d: unknown key '%s'; keys: %s", i, key, table.concat(keys, ", ")))
        end
        local written = arguments[i]:sub(equals + 1)
        local value, expected = parse(written, defaults[key])
        if value == nil then recipe.input_error(format("%s=%s: %s must be %s", key, written, key, expected)) end
        local problem = out_of_range(key, value, ranges)
        if problem then recipe.input_error(format("%s=%s: %s %s", key, written, key, problem)) end
        params[key] = value
    end
    return params
end

-- The order A1111 writes them in; fields that are nil or empty are left out.
local ordered = {
    {"steps", "Steps"}, {"sampler", "Sampler"}, {"schedule", "Schedule type"}, {"cfg", "CFG scale"}, {"guidance", "Guidance"},
    {"seed", "Seed"}, {"size", "Size"}, {"model_hash", "Model hash"}, {"model", "Model"}, {"vae", "VAE"},
    {"subseed", "Variation seed"}, {"subseed_strength", "Variation seed strength"},
    {"strength", "Denoising strength"}, {"clip_skip", "Clip skip"}, {"lora_hashes", "Lora hashes"},
    -- An X/Y/Z plot's axes, as scripts/xyz_grid.py adds them to its grid's infotext.
    {"x_type", "X Type"}, {"x_values", "X Values"}, {"y_type", "Y Type"}, {"y_values", "Y Values"},
    {"z_type", "Z Type"}, {"z_values", "Z Values"}, {"version", "Version"},
}

-- A1111's names for the samplers and schedules it shares with Kiri (modules/sd_samplers_kdiffusion.py,
-- sd_samplers_timesteps.py, sd_schedulers.py), so its readers and civitai show and restore them; the others keep
-- Kiri's plugin name.
recipe.display_names = {
    sampler = {
        euler = "Euler", euler_ancestral = "Euler a", heun = "Heun", lms = "LMS", dpm_2 = "DPM2",
        dpm_2_ancestral = "DPM2 a", dpmpp_2s_ancestral = "DPM++ 2S a", dpmpp_2m = "DPM++ 2M", dpmpp_sde = "DPM++ SDE",
        dpmpp_2m_sde = "DPM++ 2M SDE", dpmpp_3m_sde = "DPM++ 3M SDE", dpm_fast = "DPM fast", dpm_adaptive = "DPM adaptive",
        restart = "Restart", ddim = "DDIM", lcm = "LCM", unipc = "UniPC", ipndm = "iPNDM", ipndm_v = "iPNDM_v",
        deis = "DEIS", heunpp2 = "HeunPP2", euler_cfg_pp = "Euler CFG++", dpmpp_2m_cfg_pp = "DPM++ 2M CFG++",
    },
    schedule = {
        karras = "Karras", exponential = "Exponential", polyexponential = "Polyexponential", sgm_uniform = "SGM Uniform",
        kl_optimal = "KL Optimal", ays = "Align Your Steps", simple = "Simple", normal = "Normal",
        ddim_uniform = "DDIM", beta = "Beta",
    },
}

-- A number as Python writes a JSON number A1111 got from its UI: whole values without ".0" ("CFG scale: 7"),
-- others in the fewest digits that read back the same.
function recipe.number_text(value)
    if math.type(value) == "integer" then return tostring(value) end
    if value == math.floor(value) and math.abs(value) < 2 ^ 53 then return format("%d", value) end
    for digits = 15, 17 do
        local text = format("%." .. digits .. "g", value)
        if tonumber(text) == value then return text end
    end
    return tostring(value)
end

-- A field's value as A1111 writes it: display names for samplers and schedules, numbers in one format, models and
-- VAEs by their file's name (no host folder goes into a shared PNG).
function recipe.field_text(key, value)
    if type(value) == "number" then return recipe.number_text(value) end
    local names = recipe.display_names[key]
    if names and names[value] then return names[value] end
    if (key == "model" or key == "vae") and type(value) == "string" then
        value = value:gsub("^served:", ""):gsub("^bundled:", "")
        return (value:match("([^/]+)/?$") or value):gsub("%.safetensors$", ""):gsub("%.gguf$", "")
    end
    return tostring(value)
end

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

function recipe.parameters_text(fields)
    local lines = {fields.prompt or ""}
    if fields.negative and fields.negative ~= "" then lines[#lines + 1] = "Negative prompt: " .. fields.negative end
    local settings = {}
    for _, pair in ipairs(ordered) do
        local value = fields[pair[1]]
        if pair[1] == "clip_skip" and (value or 0) <= 1 then value = nil end   -- A1111 shows only a skip
        if (pair[1] == "subseed" or pair[1] == "subseed_strength") and (fields.subseed_strength or 0) == 0 then
            value = nil                                                         -- and a variation seed only in use
        end
        if value ~= nil and value ~= "" then
            settings[#settings + 1] = pair[2] .. ": " .. quoted(recipe.field_text(pair[1], value))
        end
    end
    lines[#lines + 1] = table.concat(settings, ", ")
    return table.concat(lines, "\n")
end

-- JSON's escapes, undone in one pass as json.loads does (\\n stays a backslash and an n).
local escapes = {n = "\n", t = "\t", r = "\r", b = "\b", f = "\f", ['"'] = '"', ["\\"] = "\\", ["/"] = "/"}

-- The `key: value` pairs of an A1111 settings line, values unquoted, as modules/infotext_utils.py's
-- re_param.findall and unquote read it: a segment that is not `key: value` is skipped; nil when fewer than three
-- pairs are found, as A1111 then takes the line for part of the prompt. Plain searches only: a pattern over the
-- whole line would be refused on a long one.
local function settings_of(line)
    local found, position = {}, 1
    while position <= #line do
        local colon, comma = line:find(":", position, true), line:find(",", position, true)
        if not colon then break end
        if comma and comma < colon then
            position = comma + 1                                    -- not a pair: skip to the next comma
        else
            local key = strings.trim(line:sub(position, colon - 1))
            local start = colon + 1
            while line:sub(start, start) == " " do start = start + 1 end
            local value
            if line:sub(start, start) == '"' then
                local close = start + 1
                while close <= #line and line:sub(close, close) ~= '"' do
                    close = close + (line:sub(close, close) == "\\" and 2 or 1)
                end
                value = line:sub(start + 1, close - 1):gsub("\\(.)", function(c) return escapes[c] or "\\" .. c end)
                position = (line:find(",", close + 1, true) or #line) + 1
            else
                local stop = line:find(",", start, true) or #line + 1
                value = strings.trim(line:sub(start, stop - 1))
                position = stop + 1
            end
            if #key <= 64 and key:find("^[%w_][%w_ %-/]*$") then found[#found + 1] = {key, value} end
        end
    end
    return #found >= 3 and found or nil
end

-- What txt2img takes from each A1111 field, with the value converted; other fields are reported, not honoured.
local honoured = {
    ["Steps"] = {"steps", math.tointeger}, ["CFG scale"] = {"cfg", function(v) return tonumber(v) and tonumber(v) + 0.0 end},
    ["Seed"] = {"seed", math.tointeger}, ["Variation seed"] = {"subseed", math.tointeger},
    ["Variation seed strength"] = {"subseed_strength", function(v) return tonumber(v) and tonumber(v) + 0.0 end},
    ["Clip skip"] = {"clip_skip", math.tointeger},
}

-- A sampler's or schedule's Kiri name from A1111's display name; A1111 before 1.9 wrote the schedule into the
-- sampler's name ("DPM++ 2M Karras"), which gives both.
local function plugin_names(kind, value, fields)
    for name, display in pairs(recipe.display_names[kind]) do
        if display == value then fields[kind] = name; return true end
    end
    if kind == "sampler" then
        for schedule, display in pairs(recipe.display_names.schedule) do
            local sampler = value:sub(-#display - 1) == " " .. display and value:sub(1, -#display - 2)
            if sampler and plugin_names("sampler", sampler, fields) then fields.schedule = schedule; return true end
        end
    end
    return false
end

-- An A1111 `parameters` text read back (modules/infotext_utils.py parse_generation_parameters): the prompt, the
-- negative prompt and the settings Kiri's txt2img has, as recipe fields (sampler and schedule by Kiri's plugin
-- names), and the list of "Key: value" settings it cannot honour.
function recipe.from_parameters(text)
    local lines = strings.split(text, "\n")
    local settings = #lines > 0 and settings_of(lines[#lines]) or nil
    if settings then lines[#lines] = nil end
    local prompt, negative, in_negative = {}, {}, false
    for _, line in ipairs(lines) do
        if line:find("^Negative prompt:") then in_negative, line = true, strings.trim(line:sub(17)) end
        if in_negative then negative[#negative + 1] = line else prompt[#prompt + 1] = line end
    end
    local fields = {prompt = strings.trim(table.concat(prompt, "\n")), negative = strings.trim(table.concat(negative, "\n"))}
    local ignored = {}
    for _, pair in ipairs(settings or {}) do
        local key, value = pair[1], pair[2]
        local rule = honoured[key]
        local converted = rule and rule[2](value)
        local width, height
        if #value <= 32 then width, height = value:match("^(%d+)x(%d+)$") end
        if converted ~= nil then
            fields[rule[1]] = converted
        elseif key == "Size" and width then
            fields.width, fields.height = math.tointeger(tonumber(width)), math.tointeger(tonumber(height))
        elseif not ((key == "Sampler" and plugin_names("sampler", value, fields))
            or (key == "Schedule type" and plugin_names("schedule", value, fields)) or key == "Version") then
            ignored[#ignored + 1] = key .. ": " .. value
        end
    end
    return fields, ignored
end

function recipe.save(path, image, fields, text)
    local shape = image:shape()
    fields.size = fields.size or format("%dx%d", shape[#shape], shape[#shape - 1])
    fields.version = fields.version or "kiri " .. kiri.version()
    local chunks = {parameters = recipe.parameters_text(fields)}
    for key, value in pairs(text or {}) do chunks[key] = value end
    return kiri.image.save(path, image, chunks)
end

local function json_string(text)
    return '"' .. text:gsub('[%c"\\]', function(c)
        return c == '"' and '\\"' or c == "\\" and "\\\\" or format("\\u%04x", c:byte())
    end) .. '"'
end

-- The arguments that make image i of a batch alone: the command line's, with its seed (and variation seed) and
-- batch=1 last (the last value of a key wins), as the engine's `kiri-arguments` JSON list.
local function arguments_alone(seed, subseed)
    local list = {}
    for _, argument in ipairs(command_line or {}) do list[#list + 1] = json_string(argument) end
    list[#list + 1] = json_string("seed=" .. seed)
    if subseed then list[#list + 1] = json_string("subseed=" .. subseed) end
    list[#list + 1] = json_string("batch=1")
    return "[" .. table.concat(list, ",") .. "]"
end

function recipe.save_samples(path, x, fields)
    local count = x:size(1)
    local paths = {}
    for i = 1, count do
        local position = {}
        for key, value in pairs(fields) do position[key] = value end
        -- Image i was made from seed + i - 1 (lib/generate.lua), and is made alone from that seed.
        if math.type(fields.seed) == "integer" then position.seed = fields.seed + i - 1 end
        if math.type(fields.subseed) == "integer" then position.subseed = fields.subseed + i - 1 end
        -- kiri sample's NUMBER-SEED.png numbers on per image, as A1111 names a batch's files.
        local number, seed = path:match("^(%d+)%-(%d+)%.png$")
        local name = path
        if count > 1 and number and math.tointeger(tonumber(seed)) == fields.seed then
            name = format("%0" .. #number .. "d-%d.png", tonumber(number) + i - 1, position.seed)
        elseif count > 1 then
            name = path:gsub("%.png$", "") .. "-" .. i .. ".png"
        end
        local text = count > 1 and command_line and position.seed and {["kiri-arguments"] =
            arguments_alone(position.seed, (fields.subseed_strength or 0) > 0 and position.subseed or nil)}
        paths[i] = recipe.save(name, kiri.post.to_image(x:narrow(1, i, 1)), position, text or nil)
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
