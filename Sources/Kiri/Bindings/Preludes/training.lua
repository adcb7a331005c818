-- Training in Torch7 nn's manner, run by the sandbox prelude before it seals the API (TrainingLibrary.swift):
-- kiri.models.create, kiri.models.load(path, {train = true}), kiri.optim, kiri.save_tensors and kiri.load_tensors.
-- A trainable model is a plain table of methods closing over its handle, built as models.lua builds a loaded
-- one; kiri.optim finds a model's handle in a table only this file reads, so a script can neither forge one nor
-- reach another's.
local api, host = ...
local format, concat, sort = string.format, table.concat, table.sort
local shared = host.models
local relay, fields, conditioning, denoiser, define_method =
    shared.relay, shared.fields, shared.conditioning, shared.denoiser, shared.define_method
local handles = setmetatable({}, {__mode = "k"})

-- The characters a JSON string escapes by name; other control characters become \u00XX.
local escapes = {['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r"}

-- JSON text of a config table: strings, numbers, booleans and lists of them, keys sorted (the same table
-- always gives the same config.json).
local function json(value, where)
    local kind = type(value)
    if kind == "string" then
        return '"' .. value:gsub('[%c"\\]', function(c)
            return escapes[c] or format("\\u%04x", c:byte())
        end) .. '"'
    elseif kind == "boolean" then
        return tostring(value)
    elseif kind == "number" then
        if value ~= value or value == math.huge or value == -math.huge then error(format("%s must be finite", where), 0) end
        return math.type(value) == "integer" and tostring(value) or format("%.17g", value)
    elseif kind == "table" then
        if #value > 0 or next(value) == nil then
            local items = {}
            for i, item in ipairs(value) do items[i] = json(item, format("%s[%d]", where, i)) end
            return "[" .. concat(items, ", ") .. "]"
        end
        local keys = {}
        for key in pairs(value) do
            if type(key) ~= "string" then error(format("%s has a key that is not a string (%s)", where, tostring(key)), 0) end
            keys[#keys + 1] = key
        end
        sort(keys)
        local members = {}
        for i, key in ipairs(keys) do members[i] = json(key) .. ": " .. json(value[key], where .. "." .. key) end
        return "{" .. concat(members, ", ") .. "}"
    end
    error(format("%s: a %s cannot be written to a config", where, kind), 0)
end

-- A config or scheduler config given as a table (encoded) or as a path to its JSON file (read).
local function config_text(value, argument, name)
    if type(value) == "string" then return relay(pcall(api.read_text, value)) end   -- a tail call: errors name the script's line
    if type(value) ~= "table" then
        error(format("bad argument #%d to 'create' (table or path expected, got %s)", argument, type(value)), 3)
    end
    local ok, text = pcall(json, value, name)
    if not ok then error(format("bad argument #%d to 'create' (%s)", argument, text), 3) end
    return text
end

local function trainable(handle)
    local info = fields(host.trainField, handle, "info")
    local schedule = fields(host.trainField, handle, "schedule")
    info.schedule = fields(host.trainField, handle, "schedule")
    local model = {info = info}
    handles[model] = handle
    local function method(name, body) define_method(model, name, body) end

    -- The network's output for x at t with extra {class =, context =}, keeping what m:backward needs.
    method("forward", function(x, t, extra)
        local ok, class, context = conditioning(extra)
        if not ok then error(class, 0) end
        return host.trainForward(handle, x, t, class, context)
    end)
    -- The gradients of sum(output * grad): each parameter's added to its grad; x's and the context's returned.
    method("backward", function(grad) return host.trainBackward(handle, grad) end)
    -- {{name =, value =, grad =}, ...}: the engine's own tensors, by checkpoint key, in the network's order.
    method("parameters", function()
        local list = {}
        for i = 1, host.trainParameterCount(handle) do
            local name, value, grad = host.trainParameter(handle, i)
            list[i] = {name = name, value = value, grad = grad}
        end
        return list
    end)
    method("zero_grad", function() host.trainZeroGrad(handle) end)
    -- Keep only each block's input in a forward and run the block again before its backward: less memory, more time.
    method("gradient_checkpointing", function(enabled)
        if enabled ~= nil and type(enabled) ~= "boolean" then
            error(format("bad argument #1 to 'gradient_checkpointing' (boolean or nil expected, got %s)", type(enabled)), 0)
        end
        host.trainGradientCheckpointing(handle, enabled ~= false)
    end)
    -- diffusers' layout under the output folder: config.json, diffusion_pytorch_model.safetensors (float32) and
    -- scheduler_config.json; returns the weights file's path.
    method("save", function(folder, opts)
        if opts ~= nil and type(opts) ~= "table" then
            error(format("bad argument #2 to 'save' (table or nil expected, got %s)", type(opts)), 0)
        end
        return host.trainSave(handle, folder, opts and opts.dtype)
    end)
    -- D(x, sigma, extra) over the weights as they are now (later steps do not change it), for sampling.
    method("denoiser", function(opts)
        local snapshot = host.trainSnapshot(handle)
        local function network(x, t, extra)
            local ok, class, context = conditioning(extra)
            if not ok then error(class, 2) end
            local output = relay(pcall(host.snapshotForward, snapshot, x, t, class, context))
            return output
        end
        return denoiser(network, info.prediction, schedule, opts)
    end)
    model.sample_shape = {info.in_channels, (info.sample_size or {})[1], (info.sample_size or {})[2]}

    function model.close(self)
        if self ~= model then error("bad self for 'close' (call it as m:close())", 2) end
        host.trainRelease(handle)
    end
    local description = format("Model: %s (training), %d parameters", info.architecture, info.parameters)
    return setmetatable(model, {
        __close = function() host.trainRelease(handle) end,
        __tostring = function() return description end,
        __metatable = false,
    })
end

-- kiri.models.create(config [, opts]): a new network of `config` (a table of diffusers' config.json fields with
-- _class_name, or the path of a config.json), initialised as torch.nn does from opts.seed (default 0);
-- opts.scheduler is the scheduler config (table or path; default diffusers' DDPM defaults).
api.models.create = function(config, opts)
    if opts ~= nil and type(opts) ~= "table" then
        error(format("bad argument #2 to 'create' (table or nil expected, got %s)", type(opts)), 2)
    end
    opts = opts or {}
    local text, name = config_text(config, 1, "config"), type(config) == "string" and config or "config"
    local scheduler = opts.scheduler ~= nil and config_text(opts.scheduler, 2, "scheduler") or nil
    local seed = opts.seed or 0
    if math.type(seed) ~= "integer" then
        error(format("bad argument #2 to 'create' (seed must be an integer, got %s)", tostring(seed)), 2)
    end
    return trainable(relay(pcall(host.trainCreate, text, name, seed, scheduler)))
end

-- kiri.models.load(path, {train = true}) gives a trainable network; any other call loads as before.
local load = api.models.load
api.models.load = function(...)
    local path, opts = ...
    if type(opts) == "table" and opts.train then return trainable(relay(pcall(host.trainLoad, path))) end
    return load(...)
end

local function model_handle(m, function_name)
    local handle = handles[m]
    if handle == nil then
        error(format("bad argument #1 to '%s' (a trainable model expected, got %s)", function_name, type(m)), 3)
    end
    return handle
end

local function number_option(opts, key, default, function_name)
    local value = opts[key]
    if value == nil then return default end
    if type(value) ~= "number" or value ~= value or value < 0 then
        error(format("bad argument #2 to '%s' (%s must be a number at least 0, got %s)", function_name, key, tostring(value)), 3)
    end
    return value
end

api.optim = {}

-- load_state's copy of a saved state into `current` (the optimizer's or EMA's own tensors by key), every tensor
-- checked first, in name order, so that a state of another network (a tensor missing or of another shape) changes
-- nothing and is always reported by the same name.
local function copy_state(current, saved)
    local function fail(message) error("bad argument #1 to 'load_state' (" .. message .. ")", 4) end
    local function shape(t) return "[" .. concat(t:shape(), ", ") .. "]" end
    local keys = {}
    for key in pairs(current) do keys[#keys + 1] = key end
    sort(keys)
    for _, key in ipairs(keys) do
        local value, tensor = saved[key], current[key]
        if value == nil then fail(format("no tensor '%s': the state is of another network", key)) end
        if type(value) ~= "userdata" then fail(format("tensor '%s': Tensor expected, got %s", key, type(value))) end
        if shape(value) ~= shape(tensor) then
            fail(format("tensor '%s' is %s where this network's is %s: the state is of another network", key, shape(value),
                shape(tensor)))
        end
    end
    for _, key in ipairs(keys) do
        local ok, message = pcall(current[key].copy_, current[key], saved[key])
        if not ok then fail(format("tensor '%s': %s", key, message)) end
    end
end

-- torch.optim.AdamW over m's parameters: opt:step([lr]) takes one step (at `lr` from then on when given),
-- opt:state() the moments and steps as {step =, tensors = {["exp_avg/NAME"] =, ["exp_avg_sq/NAME"] =}},
-- opt:load_state(state) continues from one.
api.optim.adamw = function(m, opts)
    local handle = model_handle(m, "adamw")
    if opts ~= nil and type(opts) ~= "table" then
        error(format("bad argument #2 to 'adamw' (table or nil expected, got %s)", type(opts)), 2)
    end
    opts = opts or {}
    local betas = opts.betas or {0.9, 0.999}
    if type(betas) ~= "table" or type(betas[1]) ~= "number" or type(betas[2]) ~= "number"
        or betas[1] < 0 or betas[1] >= 1 or betas[2] < 0 or betas[2] >= 1 then
        error("bad argument #2 to 'adamw' (betas must be two numbers in [0, 1))", 2)
    end
    local optimizer = relay(pcall(host.adamwCreate, handle, number_option(opts, "lr", 1e-3, "adamw"), betas[1], betas[2],
        number_option(opts, "eps", 1e-8, "adamw"), number_option(opts, "weight_decay", 1e-2, "adamw")))
    local opt = {}
    function opt.step(_, lr)
        if lr ~= nil and (type(lr) ~= "number" or lr ~= lr or lr < 0) then
            error(format("bad argument #1 to 'step' (lr must be a number at least 0, got %s)", tostring(lr)), 2)
        end
        local steps = relay(pcall(host.adamwStep, optimizer, lr))   -- not a tail call: errors name the script's line
        return steps
    end
    function opt.state()
        local tensors, steps, i = {}, 0, 1
        while true do
            local name, exp_avg, exp_avg_sq, taken = host.adamwState(optimizer, i)
            if name == nil then return {step = steps, tensors = tensors} end
            tensors["exp_avg/" .. name], tensors["exp_avg_sq/" .. name], steps = exp_avg, exp_avg_sq, taken
            i = i + 1
        end
    end
    function opt.load_state(_, state)
        if type(state) ~= "table" or math.type(state.step) ~= "integer" or type(state.tensors) ~= "table" then
            error("bad argument #1 to 'load_state' (a table {step = integer, tensors = {...}} expected)", 2)
        end
        copy_state(opt.state().tensors, state.tensors)
        relay(pcall(host.adamwResume, optimizer, state.step))
    end
    return opt
end

-- An exponential moving average of m's parameters (diffusers' EMAModel at a fixed decay): ema:update() after
-- each step, ema:copy_to() writes the averages into m, ema:state() is {["ema/NAME"] = T}, ema:load_state(t).
api.optim.ema = function(m, decay)
    local handle = model_handle(m, "ema")
    if type(decay) ~= "number" or decay < 0 or decay > 1 then
        error(format("bad argument #2 to 'ema' (decay must be a number in [0, 1], got %s)", tostring(decay)), 2)
    end
    local average = relay(pcall(host.emaCreate, handle, decay))
    local ema = {}
    function ema.update() relay(pcall(host.emaCall, average, "update")) end
    function ema.copy_to() relay(pcall(host.emaCall, average, "copy")) end
    function ema.state()
        local tensors, i = {}, 1
        while true do
            local name, tensor = host.emaCall(average, i)
            if name == nil then return tensors end
            tensors["ema/" .. name] = tensor
            i = i + 1
        end
    end
    function ema.load_state(_, tensors)
        if type(tensors) ~= "table" then error("bad argument #1 to 'load_state' (table expected)", 2) end
        copy_state(ema.state(), tensors)
    end
    return ema
end

-- torch.nn.utils.clip_grad_norm_: scales m's gradients so their total 2-norm is at most max_norm; returns the
-- norm before.
api.optim.clip_grad_norm = function(m, max_norm)
    local handle = model_handle(m, "clip_grad_norm")
    if type(max_norm) ~= "number" or max_norm ~= max_norm or max_norm <= 0 then
        error(format("bad argument #2 to 'clip_grad_norm' (max_norm must be a number above 0, got %s)", tostring(max_norm)), 2)
    end
    local norm = relay(pcall(host.clipGradNorm, handle, max_norm))
    return norm
end

-- kiri.save_tensors(path, {name = Tensor}, metadata): a safetensors file of float32 tensors under the output
-- folder (names sorted); returns its path. kiri.load_tensors(path) -> {name = Tensor}, metadata.
api.save_tensors = function(path, tensors, metadata)
    if type(tensors) ~= "table" then
        error(format("bad argument #2 to 'save_tensors' (table expected, got %s)", type(tensors)), 2)
    end
    local names, list = {}, {}
    for name in pairs(tensors) do
        if type(name) ~= "string" or name == "" or name:find("\n", 1, true) or name == "__metadata__" then
            error(format("bad argument #2 to 'save_tensors' (a tensor's name must be a non-empty string without "
                .. "newlines, got %s)", tostring(name)), 2)
        end
        names[#names + 1] = name
    end
    sort(names)
    for i, name in ipairs(names) do list[i] = tensors[name] end
    local written = relay(pcall(host.saveTensors, path, list, metadata, concat(names, "\n")))
    return written
end

api.load_tensors = function(path)
    local names, metadata = relay(pcall(host.tensorNames, path))
    local tensors = {}
    local start = 1
    while start <= #names do   -- plain finds: the names come from someone else's file
        local stop = names:find("\n", start, true) or #names + 1
        local name = names:sub(start, stop - 1)
        tensors[name] = relay(pcall(host.loadTensor, path, name))
        start = stop + 1
    end
    return tensors, metadata
end
