-- kiri.models.load and the model table, run by the sandbox prelude before it seals the API (ModelLibrary.swift).
-- A model is a plain table: `info`, and methods closing over the handle, so a script can neither forge nor reach
-- another model's handle. The host functions are called through pcall and their errors re-raised at the script's
-- line.
local api, host, resolve = ...
local format = string.format
local load, field, forward, release = host.modelLoad, host.modelField, host.modelForward, host.modelRelease

local function fields(handle, group)
    local values, i = {}, 1
    while true do
        local name, value = field(handle, group, i)
        if name == nil then return values end
        values[name] = value
        i = i + 1
    end
end

local function model_object(handle)
    local info = fields(handle, "info")
    info.schedule = fields(handle, "schedule")
    local schedule, prediction = fields(handle, "schedule"), info.prediction
    local model = {info = info}

    -- The raw network call: true and the output, or false and the message (raised by the caller, at its
    -- caller's line).
    local function call(x, t, extra)
        local class, context
        if extra ~= nil then
            if type(extra) ~= "table" then
                return false, format("bad argument #3 to 'forward' (table or nil expected, got %s)", type(extra))
            end
            for key in pairs(extra) do
                if key ~= "class" and key ~= "context" then
                    return false, format("bad argument #3 to 'forward' (unknown field '%s'; a model takes class and context)",
                        tostring(key))
                end
            end
            class, context = extra.class, extra.context
        end
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

    -- D(x, sigma, extra): kiri.models.wrap with this network, its prediction type and training schedule;
    -- opts (sigma_data, quantize, ...) are passed on to wrap and win.
    function model.denoiser(self, opts)
        if self ~= model then error("bad self for 'denoiser' (call it as m:denoiser(opts))", 2) end
        if opts ~= nil and type(opts) ~= "table" then
            error(format("bad argument #1 to 'denoiser' (table or nil expected, got %s)", type(opts)), 2)
        end
        local options = {network = network, prediction = prediction}
        for key, value in next, schedule do options[key] = value end
        if opts then for key, value in pairs(opts) do options[key] = value end end
        local denoiser = resolve("models", "wrap")(options)
        return denoiser
    end

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

api.models.load = function(...)
    local ok, handle = pcall(load, ...)
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
