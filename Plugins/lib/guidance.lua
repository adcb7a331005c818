-- Shared helpers of the guidance plugins: one network call for several conditionings
--
--   batched(model, x, sigma, extras) -> one denoised tensor per entry of `extras`
--       Calls model once on len(extras) copies of x stacked along the batch (ComfyUI comfy/samplers.py
--       calc_cond_batch does the same), so CFG costs one forward of twice the batch, not two forwards.
--       Each extra is nil or a table of `class` (number, list or 1-D tensor of labels) and `context`
--       (a [batch or 1, tokens, width] tensor); the entries are expanded to the batch and concatenated.
local guidance = {}

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

function guidance.batched(model, x, sigma, extras)
    local count, batch = #extras, x:size(1)
    if count == 1 then return {model(x, sigma, extras[1])} end
    local copies = {}
    for i = 1, count do copies[i] = x end
    local denoised = model(kiri.cat(copies, 1), sigma, merged(extras, batch))
    local results = {}
    for i = 1, count do results[i] = denoised:narrow(1, (i - 1) * batch + 1, batch) end
    return results
end

return guidance
