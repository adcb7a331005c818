-- Shared helpers of the guidance plugins: one network call for several conditionings
--
--   batched(model, x, sigma, extras) -> one denoised tensor per entry of `extras`
--       Calls model once on len(extras) copies of x stacked along the batch (ComfyUI comfy/samplers.py
--       calc_cond_batch does the same), so CFG costs one forward of twice the batch, not two forwards.
--       Each extra is nil or a table of `class` (number, list or 1-D tensor of labels) and `context`
--       (a [batch or 1, tokens, width] tensor); the entries are expanded to the batch and concatenated.
--       extras.n, when set, is the count (the entries may be nil).
--   rows(t)                -> t [N, ...] as [N, M], one row per sample, for per-sample statistics
--   per_sample(values, t)  -> values (N numbers, any shape) as [N, 1, ..., 1], to broadcast against t
--   capture_uncond(extra, sampler)
--                          -> extra', uncond(): extra' inherits from extra and asks a guider (cfg.lua)
--       for the unconditional branch at every scale and for a post_cfg hook that records it;
--       uncond() returns the last one recorded, or errors naming `sampler` when the model is not a guider. ComfyUI's
--       CFG++ samplers do the same with set_model_options_post_cfg_function.
local guidance = {}

function guidance.rows(t)
    return t:reshape({t:size(1), -1})
end

function guidance.per_sample(values, t)
    local shape = {t:size(1)}
    for d = 2, t:dim() do shape[d] = 1 end
    return values:reshape(shape)
end

function guidance.capture_uncond(extra, sampler)
    local recorded
    local post_cfg = {}
    for i, fn in ipairs(extra and extra.post_cfg or {}) do post_cfg[i] = fn end
    post_cfg[#post_cfg + 1] = function(args)
        recorded = args.uncond_denoised
        return args.denoised
    end
    local captured = setmetatable({post_cfg = post_cfg, keep_uncond = true}, {__index = extra})
    return captured, function()
        if recorded == nil then
            error(string.format("%s needs the unconditional prediction: sample through a guider (kiri.guidance.cfg)", sampler), 0)
        end
        return recorded
    end
end

local function labels(class, batch)
    if type(class) == "number" then
        local list = {}
        for i = 1, batch do list[i] = class end
        return list
    end
    if type(class) == "userdata" then class = class:totable() end
    if #class == 1 and batch > 1 then return labels(class[1], batch) end
    return class
end

local function merged(extras, batch)
    local first = extras[1]
    if first == nil then return nil end
    local result = {}
    if first.class ~= nil then
        local class = {}
        for _, extra in ipairs(extras) do
            for _, label in ipairs(labels(extra.class, batch)) do class[#class + 1] = label end
        end
        result.class = class
    end
    if first.context ~= nil then
        local contexts = {}
        for i, extra in ipairs(extras) do
            local context = extra.context
            if context:size(1) ~= batch then context = context:expand({batch, context:size(2), context:size(3)}) end
            contexts[i] = context
        end
        result.context = kiri.cat(contexts, 1)
    end
    for key in pairs(first) do
        if key ~= "class" and key ~= "context" then
            error(string.format("guidance: cannot batch the extra field '%s' (class and context can be)", key), 3)
        end
    end
    return result
end

-- Contexts of different lengths (a prompt past 75 tokens is 77 per chunk) cannot share a batch: A1111 pads the
-- shorter with empty-prompt chunks, which changes what it attends to; separate calls keep each prompt as it is.
local function same_lengths(extras, count)
    local length
    for i = 1, count do
        local context = extras[i] and extras[i].context
        if context ~= nil then
            if length ~= nil and context:size(2) ~= length then return false end
            length = context:size(2)
        end
    end
    return true
end

function guidance.batched(model, x, sigma, extras)
    local count, batch = extras.n or #extras, x:size(1)
    if count == 1 then return {model(x, sigma, extras[1])} end
    if not same_lengths(extras, count) then
        local results = {}
        for i = 1, count do results[i] = model(x, sigma, extras[i]) end
        return results
    end
    local copies = {}
    for i = 1, count do copies[i] = x end
    local denoised = model(kiri.cat(copies, 1), sigma, merged(extras, batch))
    local results = {}
    for i = 1, count do results[i] = denoised:narrow(1, (i - 1) * batch + 1, batch) end
    return results
end

return guidance
