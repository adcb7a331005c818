-- Classifier-free guidance with hook points: the guider every recipe samples through (ComfyUI's CFGGuider)
-- Ho & Salimans (2022), "Classifier-Free Diffusion Guidance", eq. 6, in denoised space as ComfyUI
-- comfy/samplers.py sampling_function and cfg_function: uncond + scale * (cond - uncond), with the hooks
-- of ComfyUI's model_options in ComfyUI's order.
--
-- kiri.guidance.cfg(model, opts) -> a denoiser D(x, sigma, extra) that keeps the model's fields (sigmas, ...)
--   cond, uncond  what the model is conditioned on (extras such as {class = 7}), or prompt schedules:
--                 functions (step, steps) -> an extra or a list of {extra =, weight =} (lib/prompt.lua)
--   scale         the guidance scale (1)
--   sigmas        the sampler's schedule; gives the hooks `step` and `steps`
--   pre_cfg, cfg, post_cfg, patches, keep_uncond: the hooks below
--   encode        function(prompt) -> extra, for patches whose named conds are prompts (perp_neg's "")
--
-- Each call runs, in this order (README, "Guidance hooks"):
--   1. scale    every patch's scale(args) -> number, in order (guidance intervals, scale schedules)
--   2. model    one batched model call on the cond parts, the uncond (skipped when the scale is 1, unless
--               keep_uncond) and any named conds of the patches
--   3. compose  the cond parts into cond_denoised = sum w_k c_k + (1 - sum w_k) uncond, so that CFG gives
--               A1111's composable diffusion, uncond + scale * sum w_k (c_k - uncond)
--   4. pre_cfg  each fn(args) -> cond_denoised, uncond_denoised              (sampler_pre_cfg_function)
--   5. cfg      fn(args) -> denoised; the last one given wins                  (sampler_cfg_function)
--   6. post_cfg each fn(args) -> denoised, then those the sampler passes in extra.post_cfg
--                                                                              (sampler_post_cfg_function)
-- Without an uncond (scale 1), steps 4 and 5 are skipped and denoised = cond_denoised.
-- `args` is one plain table per call: x, sigma, step, steps, scale, cond, uncond (this step's extras),
-- conds (name -> extra of the named conds), cond_denoised, uncond_denoised, conds_denoised (name ->
-- tensor) and, from step 6, denoised. Hooks may read and add fields; the tensors belong to the guider.
-- A patch is a table of any of scale, pre_cfg, cfg, post_cfg (functions), conds (name -> extra) and
-- keep_uncond; the guidance plugins return patches.
local batched = require("lib.guidance").batched

local format = string.format

local function list_option(value, key)
    if value == nil then return {} end
    if type(value) == "function" then return {value} end
    if type(value) ~= "table" then
        error(format("cfg: %s must be a function or a list of functions, got %s", key, type(value)), 5)
    end
    return value
end

-- The hooks of opts and its patches, in the order they run.
local function collect(opts)
    local hooks = {scale = {}, pre_cfg = {}, post_cfg = {}, conds = {}, names = {}, keep_uncond = opts.keep_uncond}
    local function add(source, where)
        for _, fn in ipairs(list_option(source.pre_cfg, where .. "pre_cfg")) do hooks.pre_cfg[#hooks.pre_cfg + 1] = fn end
        for _, fn in ipairs(list_option(source.post_cfg, where .. "post_cfg")) do hooks.post_cfg[#hooks.post_cfg + 1] = fn end
        if source.cfg ~= nil then hooks.cfg = source.cfg end
        if source.keep_uncond then hooks.keep_uncond = true end
    end
    add(opts, "")
    for i, patch in ipairs(opts.patches or {}) do
        if type(patch) ~= "table" then error(format("cfg: patches[%d] is a %s, a patch table expected", i, type(patch)), 3) end
        add(patch, format("patches[%d].", i))
        if patch.scale ~= nil then hooks.scale[#hooks.scale + 1] = patch.scale end
        for name, extra in pairs(patch.conds or {}) do
            if type(extra) == "string" then
                if not opts.encode then
                    error(format("cfg: patches[%d] conditions '%s' on the prompt '%s'; give the guider encode = "
                        .. "function(prompt) -> extra", i, name, extra), 3)
                end
                extra = opts.encode(extra)
            end
            if hooks.conds[name] == nil then hooks.names[#hooks.names + 1] = name end
            hooks.conds[name] = extra
        end
    end
    table.sort(hooks.names)
    return hooks
end

-- The step whose interval holds sigma: the last i with sigmas[i] >= sigma (1 above the schedule, as a
-- churned sigma_hat can be). Heun's second evaluation at sigmas[i + 1] counts to step i + 1.
local function step_of(sigmas, sigma)
    local step = 1
    for i = 1, #sigmas - 1 do
        if sigmas[i] >= sigma then step = i end
    end
    return step
end

-- A cond as a list of weighted parts for this step.
local function parts_at(cond, args)
    if type(cond) == "function" then cond = cond(args.step, args.steps) end
    if type(cond) == "table" and cond[1] ~= nil then return cond end
    return {{extra = cond, weight = 1}}
end

local function default_cfg(args)
    return args.uncond_denoised + (args.cond_denoised - args.uncond_denoised) * args.scale
end

-- Steps 2 and 3: one batched call on the cond parts, the uncond (when wanted) and the named conds; sets
-- args.uncond_denoised, args.conds_denoised and the composed args.cond_denoised.
local function evaluate(model, x, sigma, args, parts, with_uncond, hooks)
    local extras, weight = {n = #parts}, 0
    for i, part in ipairs(parts) do extras[i], weight = part.extra, weight + part.weight end
    if with_uncond then extras.n = extras.n + 1; extras[extras.n] = args.uncond end
    local first_named = extras.n
    for i, name in ipairs(hooks.names) do extras[first_named + i] = hooks.conds[name] end
    extras.n = first_named + #hooks.names
    local outputs = batched(model, x, sigma, extras)
    if with_uncond then args.uncond_denoised = outputs[#parts + 1] end
    for i, name in ipairs(hooks.names) do args.conds_denoised[name] = outputs[first_named + i] end
    if #parts == 1 then
        args.cond_denoised = outputs[1]
        return
    end
    local composed = args.uncond_denoised and args.uncond_denoised * (1 - weight)
    for i, part in ipairs(parts) do
        local term = outputs[i] * part.weight
        composed = composed and composed + term or term
    end
    args.cond_denoised = composed
end

local function total_weight(parts)
    local total = 0
    for _, part in ipairs(parts) do total = total + part.weight end
    return total
end

return function(model, opts)
    if type(opts) ~= "table" then error(format("bad argument #2 to 'cfg' (table expected, got %s)", type(opts)), 2) end
    local hooks = collect(opts)
    local sigmas = opts.sigmas
    return setmetatable({}, {
        __index = type(model) == "table" and model or nil,
        __call = function(_, x, sigma, extra)
            local args = {x = x, sigma = sigma, scale = opts.scale or 1, conds = hooks.conds, conds_denoised = {}}
            if sigmas then args.step, args.steps = step_of(sigmas, sigma), #sigmas - 1 end
            for _, fn in ipairs(hooks.scale) do args.scale = fn(args) end

            local parts = parts_at(opts.cond, args)
            args.cond, args.uncond = parts[1].extra, parts_at(opts.uncond, args)[1].extra
            local keep = hooks.keep_uncond or (extra and extra.keep_uncond)
            evaluate(model, x, sigma, args, parts, args.scale ~= 1 or keep or total_weight(parts) ~= 1, hooks)

            if args.uncond_denoised then
                for _, fn in ipairs(hooks.pre_cfg) do args.cond_denoised, args.uncond_denoised = fn(args) end
                args.denoised = (hooks.cfg or default_cfg)(args)
            else
                args.denoised = args.cond_denoised
            end
            for _, fn in ipairs(hooks.post_cfg) do args.denoised = fn(args) end
            for _, fn in ipairs(extra and extra.post_cfg or {}) do args.denoised = fn(args) end
            return args.denoised
        end,
    })
end
