-- kiri.models.load and the model table, run by the sandbox prelude before it seals the API (ModelLibrary.swift).
-- A model is a plain table: `info`, and methods closing over the handle, so a script can neither forge nor reach
-- another model's handle. The host functions are called through pcall and their errors re-raised at the script's
-- line.
local api, host, resolve = ...
local format = string.format
local load, field, forward, release = host.modelLoad, host.modelField, host.modelForward, host.modelRelease
local tokenize, encode, decode, encode_image = host.modelTokenize, host.modelEncode, host.modelDecode, host.modelEncodeImage
local sample_shape, hash, apply_lora = host.modelSampleShape, host.modelHash, host.modelApplyLoRA

local gsub, pack, unpack = string.gsub, table.pack, table.unpack

-- pcall's results passed on, or its error raised at the script's line (without the position inside this file that
-- a host function's error gets).
local function relay(ok, ...)
    if not ok then
        local message = ...
        if type(message) == "string" then message = gsub(message, "^sandbox:%d+: ", "", 1) end
        error(message, 3)
    end
    return ...
end

-- The fields of m.info ("info") or m.info.schedule ("schedule") that `read(handle, group, i)` gives one by one.
local function fields(read, handle, group)
    local values, i = {}, 1
    while true do
        local name, value = read(handle, group, i)
        if name == nil then return values end
        values[name] = value
        i = i + 1
    end
end

-- The class and context of m:forward's `extra`, or nil and the message for a bad one.
local function conditioning(extra)
    if extra == nil then return true end
    if type(extra) ~= "table" then
        return false, format("bad argument #3 to 'forward' (table or nil expected, got %s)", type(extra))
    end
    for key in pairs(extra) do
        if key ~= "class" and key ~= "context" then
            return false, format("bad argument #3 to 'forward' (unknown field '%s'; a model takes class and context)",
                tostring(key))
        end
    end
    return true, extra.class, extra.context
end

-- D(x, sigma, extra): kiri.models.wrap over network(x, t, extra) with the model's prediction type and training
-- schedule; opts (sigma_data, quantize, ...) are passed on to wrap and win.
local function denoiser(network, prediction, schedule, opts)
    if opts ~= nil and type(opts) ~= "table" then
        error(format("bad argument #1 to 'denoiser' (table or nil expected, got %s)", type(opts)), 3)
    end
    local options = {network = network, prediction = prediction}
    for key, value in next, schedule do options[key] = value end
    if opts then for key, value in pairs(opts) do options[key] = value end end
    local wrapped = resolve("models", "wrap")(options)
    return wrapped
end

-- A method of `model` named `name`: checks self, then calls `body(...)` and raises its error at the caller's line.
local function define_method(model, name, body)
    model[name] = function(self, ...)
        if self ~= model then error(format("bad self for '%s' (call it as m:%s(...))", name, name), 2) end
        local results = pack(relay(pcall(body, ...)))   -- not a tail call: relay's level 3 is the script's line
        return unpack(results, 1, results.n)
    end
end

-- For the preludes after this one (training.lua): the same model tables, built the same way.
host.models = {relay = relay, fields = fields, conditioning = conditioning, denoiser = denoiser, define_method = define_method}

local function model_object(handle)
    local info = fields(field, handle, "info")
    info.schedule = fields(field, handle, "schedule")
    local schedule, prediction = fields(field, handle, "schedule"), info.prediction
    local model = {info = info}

    -- The raw network call: true and the output, or false and the message (raised by the caller, at its
    -- caller's line).
    local function call(x, t, extra)
        local ok, class, context = conditioning(extra)
        if not ok then return false, class end
        return pcall(forward, handle, x, t, class, context)
    end

    -- As kiri.models.wrap calls it: network(x_in, t, extra).
    local function network(x, t, extra)
        local ok, result = call(x, t, extra)
        if not ok then error(result, 2) end
        return result
    end

    function model.forward(self, x, t, extra)
        if self ~= model then error("bad self for 'forward' (call it as m:forward(x, t, extra))", 2) end
        local ok, result = call(x, t, extra)
        if not ok then error(result, 2) end
        return result
    end

    -- D(x, sigma, extra): kiri.models.wrap with this network, its prediction type and training schedule.
    function model.denoiser(self, opts)
        if self ~= model then error("bad self for 'denoiser' (call it as m:denoiser(opts))", 2) end
        local wrapped = denoiser(network, prediction, schedule, opts)
        return wrapped
    end

    local function method(name, body) define_method(model, name, body) end

    -- One sample's shape {C, h, w} (latent pixels for a latent model) and the image's {C, H, W}, at the default size.
    model.sample_shape, model.image_shape = relay(pcall(sample_shape, handle))

    -- The same for a width × height image: m:sample_shape_for(width, height) -> sample shape, image shape.
    method("sample_shape_for", function(width, height) return sample_shape(handle, width, height) end)
    method("tokenize", function(text) return tokenize(handle, text) end)

    -- The conditioning of `prompt` for m:denoiser(): {context = [1, 77k, D]}, A1111's emphasis syntax applied
    -- ((word), (word:1.3), [word], BREAK; 75 tokens per chunk); opts.clip_skip counts layers from the end, as
    -- A1111's "Clip skip" (1, the default, is the last).
    method("encode", function(prompt, opts)
        if opts ~= nil and type(opts) ~= "table" then
            error(format("bad argument #2 to 'encode' (table or nil expected, got %s)", type(opts)), 0)
        end
        return {context = encode(handle, prompt, opts and opts.clip_skip)}
    end)

    -- Merges a LoRA file (kohya/A1111 or diffusers/PEFT) into the UNet and text encoder at `scale` (default 1),
    -- on top of any applied before.
    method("apply_lora", function(path, scale) apply_lora(handle, path, scale) end)

    -- A1111's short hash of the model's file (10 hex digits of its SHA-256), or nil for a folder.
    method("hash", function() return hash(handle) end)

    -- Latents to images [B, 3, H, W] in [-1, 1] (the identity for a pixel-space model), and back.
    method("decode", function(latents) return decode(handle, latents) end)
    method("encode_image", function(images) return encode_image(handle, images) end)

    function model.close(self)
        if self ~= model then error("bad self for 'close' (call it as m:close())", 2) end
        release(handle)
    end

    local description = format("Model: %s, %d parameters", info.architecture, info.parameters)
    return setmetatable(model, {
        __close = function() release(handle) end,
        __tostring = function() return description end,
        __metatable = false,
    })
end

-- kiri.models.load(path [, opts]): opts.vae, a VAE file to use instead of the model's own; opts.weights, the
-- format every network keeps its weights in ("f32", "f16", "bf16" or "q8_0"; default: as the file stores them).
api.models.load = function(...)
    local path, opts = ...
    if opts ~= nil and type(opts) ~= "table" then
        error(format("bad argument #2 to 'load' (table or nil expected, got %s)", type(opts)), 2)
    end
    local ok, handle
    if select("#", ...) == 0 then
        ok, handle = pcall(load)   -- so that the host says "got no value", as lauxlib would
    else
        ok, handle = pcall(load, path, opts and opts.vae, opts and opts.weights)
    end
    if not ok then error(handle, 2) end
    return model_object(handle)
end

-- The name kiri.models.load knows a model shipped with Kiri by ("bundled:NAME"; its folder stays the host's).
api.models.bundled = function(name)
    if type(name) ~= "string" then
        error(format("bad argument #1 to 'bundled' (string expected, got %s)", type(name)), 2)
    end
    local path, names = host.bundledModel(name)
    if path == nil then error(format("no bundled model '%s' (bundled: %s)", name, names), 2) end
    return path
end
