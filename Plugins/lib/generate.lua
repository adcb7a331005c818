-- The pipeline the recipes share: prompt -> conditioning -> guided denoiser -> sigmas -> noise -> sampler
--
--   generate.model_options(defaults) -> defaults plus model, width, height, clip_skip, vae, weights, lora, lora_dir,
--     subseed and subseed_strength (A1111's variation seed: each image's noise slerped that far towards the
--     subseed's noise)
--   generate.open(p) -> the model p.model names: a file or folder (kiri.models.load: a diffusers pipeline, a
--     single-file checkpoint, ...) when it has a "/", "." or ":", else a kiri.models plugin ("default"); with
--     p.vae, a VAE file to use instead of the model's own; with p.weights, the format the weights are kept in
--     (f32, f16, bf16 or q8_0; "" keeps the file's)
--   generate.sample(p [, init [, hooks [, model]]]) -> images [batch, C, H, W] in [-1, 1]: the samples, decoded
--     by the model (m:decode; latent models' VAE)
--     p: prompt, negative, steps, cfg, sampler, schedule, seed, batch and model (image k of the batch has seed
--     seed + k - 1, for its starting noise and its sampler's noise, as in A1111), and optionally
--     width and height (image pixels; 0 or absent: the model's default size), clip_skip (A1111's "Clip skip",
--     for text encoders), guidance: comma-separated names of guidance patches to apply with their defaults
--     ("rescale_cfg,dynamic_thresholding"; "none" or "" for none); model: an open model to use instead of
--     opening p.model (the caller closes it)
--   generate.sample_latents(p [, init [, hooks [, model]]]) -> the samples before m:decode (latents for a latent
--     model); init may give `latents =` (samples to start from, encoded) instead of `image =`
--     init, for img2img and inpainting: {image =, mask =, strength = 0..1}; image is a PNG's path or a
--     [1 or batch, C, H, W] image in [-1, 1], mask a PNG's path or a [1, 1, H, W] tensor, 1 where to
--     paint (lib/recipe.lua load_image and load_mask read the PNGs; without width and height, the image sets
--     the size); a latent model encodes the image with its VAE and takes the mask's mean over each latent pixel,
--     and its decoded images keep the init image's pixels where the mask is 0 (A1111's overlay)
--     hooks: the guider's pre_cfg, cfg, post_cfg and patches (guidance/cfg.lua), and the sampler's
--     on_step(info) (its callback: info.i, steps, x, sigma, denoised; returning "stop" ends the run with
--     that step's denoised) and noise_sampler(sigma, sigma_next) -> noise
--
-- Prompts use A1111's syntax (lib/prompt.lua): [from:to:when], [a|b], "a :0.7 AND b :0.3". The negative
-- prompt is CFG's unconditional branch. img2img follows diffusers' StableDiffusionImg2ImgPipeline
-- (get_timesteps): of `steps` steps, the first steps * (1 - strength) are skipped and sampling starts
-- from the image noised to the next sigma.
local recipe = require "lib.recipe"
local prompt = require "lib.prompt"
local strings = require "lib.strings"

local generate = {}

local format = string.format

local function start_index(steps, strength)
    if type(strength) ~= "number" or strength <= 0 or strength > 1 then
        error(string.format("strength must be in (0, 1], got %s", tostring(strength)), 3)
    end
    return math.min(steps - math.floor(steps * strength), steps - 1)
end

-- The patches named in p.guidance, with their default options, after the hooks' own.
local function patches(p, hooks)
    local list = {}
    for i, patch in ipairs(hooks.patches or {}) do list[i] = patch end
    for name in (p.guidance or ""):gmatch("[^,%s]+") do
        if name ~= "none" then
            local ok, patch = pcall(kiri.guidance[name], {})
            if not ok then error(string.format("guidance '%s' with its defaults: %s", name, tostring(patch)), 3) end
            if type(patch) ~= "table" then
                error(string.format("guidance '%s' is not a patch (it returns a %s)", name, type(patch)), 3)
            end
            list[#list + 1] = patch
        end
    end
    return list
end

-- prompt.schedule for the user's prompt or negative prompt (`what`): its syntax errors and the model's refusals
-- (a class the default model does not know, a prompt too long) are input errors that say which of the two.
local function schedule(text, steps, encode, what)
    local ok, result = pcall(prompt.schedule, text, steps, encode)
    if ok then return result end
    -- Only the parser's and the model's refusals are about the prompt: a stopped run, a memory error or a bug passes.
    local stopped = type(result) == "string" and (result:find("time limit exceeded", 1, true) or
        result:find("run cancelled", 1, true) or result:find("not enough memory", 1, true))
    if type(result) ~= "string" or stopped then error(result, 0) end
    -- Without the "file:line: " an error starts with, looked for in its head: the whole message may quote a long
    -- prompt, and the sandbox refuses a costly pattern on a long subject.
    local _, last = result:sub(1, 256):find("^[^\n]-:%d+: ")
    local message = last and result:sub(last + 1) or result
    message = message:sub(1, 8) == "prompt: " and message:sub(9) or message
    recipe.input_error(what .. ": " .. message)
end

-- `defaults` with the keys every recipe takes for its model (recipe.params checks them): model (plugin name or
-- path), width and height (0: the model's), clip_skip, vae, lora and lora_dir.
function generate.model_options(defaults)
    local options = {model = "default", width = 0, height = 0, clip_skip = 0, vae = "", weights = "", lora = "",
        lora_dir = "", subseed = 0, subseed_strength = 0.0}
    for key, value in pairs(defaults) do options[key] = value end
    return options
end

function generate.open(p)
    local vae = p.vae ~= nil and p.vae ~= "" and p.vae or nil
    local weights = p.weights ~= nil and p.weights ~= "" and p.weights or nil
    if p.model:find("[/.:]") then
        local model = kiri.models.load(p.model, {vae = vae, weights = weights})
        p.model_hash = p.model_hash or model:hash()   -- for the PNG's "Model hash", as A1111 writes it
        return model
    end
    if vae or weights then
        recipe.input_error(format("%s= needs model=PATH (a Stable Diffusion checkpoint)", vae and "vae" or "weights"))
    end
    return kiri.models[p.model]()
end

-- The LoRAs p asks for, {path = scale}: p.lora ("PATH:0.8,OTHER.safetensors", scale 1 when none is given) and
-- A1111's <lora:NAME:0.8> in the prompt (NAME.safetensors in p.lora_dir); and the prompt without those tags.
local function requested_loras(p)
    local wanted = {}
    for _, item in ipairs(strings.split(p.lora or "", ",")) do
        local path, scale = strings.trim(item), 1
        local colon = strings.last_colon(path)
        local suffix = colon and path:sub(colon + 1)
        if suffix and suffix:find("^[%s%d.+-]+$") then   -- "PATH:0.8"; a ':' before anything else is the path's
            scale = tonumber(suffix) or recipe.input_error(format("lora: bad scale in '%s'", item))
            path = strings.trim(path:sub(1, colon - 1))
        end
        wanted[path] = (wanted[path] or 0) + scale
    end
    -- The tags are found by plain searches: a pattern for them would be refused on a long prompt.
    local prompt_text, kept, position = p.prompt or "", {}, 1
    while true do
        local open = prompt_text:find("<lora:", position, true)
        local close = open and prompt_text:find(">", open, true)
        if close == nil then break end
        local tag = prompt_text:sub(open + 6, close - 1)   -- NAME or NAME:WEIGHT
        local colon = tag:find(":", 1, true)
        local name, weight = tag:sub(1, (colon or 0) - 1), colon and tag:sub(colon + 1) or ""
        if name == "" then recipe.input_error(format("<lora:%s>: the tag names no LoRA", tag)) end
        if (p.lora_dir or "") == "" then
            recipe.input_error(format("<lora:%s> needs lora_dir=FOLDER, where %s.safetensors is", name, name))
        end
        if weight ~= "" and tonumber(weight) == nil then
            recipe.input_error(format("<lora:%s:%s>: the weight must be a number", name, weight))
        end
        local path = p.lora_dir .. "/" .. name .. ".safetensors"
        wanted[path] = (wanted[path] or 0) + (tonumber(weight) or 1)
        kept[#kept + 1] = prompt_text:sub(position, open - 1)
        position = close + 1
    end
    kept[#kept + 1] = prompt_text:sub(position)
    return wanted, table.concat(kept)
end

-- Brings the model's LoRAs to `wanted`: LoRA updates are linear in their scale, so applying the difference from
-- what is applied already (model.loras, kept on the model between calls, as grid.lua makes) gives the new set.
local function use_loras(model, wanted)
    local applied = model.loras or {}
    local paths = {}
    for path in pairs(wanted) do paths[#paths + 1] = path end
    for path in pairs(applied) do if wanted[path] == nil then paths[#paths + 1] = path end end
    table.sort(paths)   -- the same order on every run: floating-point sums depend on it
    for _, path in ipairs(paths) do
        local change = (wanted[path] or 0) - (applied[path] or 0)
        if change ~= 0 then model:apply_lora(path, change) end
    end
    model.loras = wanted
end

-- The sample and image shapes at p's size, else the init image's (a PNG's path), else the model's own.
local function shapes(model, p, init)
    local width, height = p.width or 0, p.height or 0
    if width == 0 and height == 0 and init and type(init.image) == "string" then
        local size = kiri.image.load(init.image):shape()
        width, height = size[3], size[2]
    end
    if width == 0 and height == 0 then return model.sample_shape, model.image_shape end
    return model:sample_shape_for(width > 0 and width or nil, height > 0 and height or nil)
end

-- A [1, 1, H, W] mask as [1, 1, h, w] for samples of shape {C, h, w}: the mean over each sample pixel.
local function mask_for(mask, sample_shape)
    local h, w = sample_shape[2], sample_shape[3]
    local factor = mask:size(3) // h
    if factor == 1 then return mask end
    return mask:reshape({h, factor, w, factor}):mean(4):mean(2):reshape({1, 1, h, w})
end

-- Spherical interpolation from `low` (val 0) to `high` (val 1), A1111's slerp (modules/processing.py) for its
-- variation seeds. A1111 normalises over dim 1 of a [C, H, W] noise, this over the whole sample; its fallback for
-- (nearly) parallel noises, kept as it is, weights them the other way round (it never happens with Gaussian noise).
local function slerp(val, low, high)
    local dot = (low * high):sum() / math.sqrt((low * low):sum() * (high * high):sum())
    if dot > 0.9995 then return low * val + high * (1 - val) end
    local omega = math.acos(dot)
    local so = math.sin(omega)
    return low * (math.sin((1 - val) * omega) / so) + high * (math.sin(val * omega) / so)
end

-- Each image's starting noise and seed, as A1111's create_random_tensors: image k has seed + k - 1 (and with a
-- variation seed, subseed + k - 1), so any image of a batch is the one its seed makes alone.
local function starting_noise(p, sample_shape)
    local shape = {1, table.unpack(sample_shape)}
    local noises, seeds = {}, {}
    for k = 1, p.batch do
        seeds[k] = p.seed + k - 1
        noises[k] = kiri.randn(shape, seeds[k])
        if (p.subseed_strength or 0) > 0 then
            noises[k] = slerp(p.subseed_strength, noises[k], kiri.randn(shape, (p.subseed or 0) + k - 1))
        end
    end
    return #noises == 1 and noises[1] or kiri.cat(noises, 1), seeds
end

-- Both entry points tail-call this, so that errors raised at level 3 below point at the recipe's line.
local function sample(p, init, hooks, model, decode)
    hooks = hooks or {}
    local opened <close> = model == nil and generate.open(p) or nil
    model = model or opened
    local denoiser = model:denoiser()
    -- The model's training schedule and timestep spacing, for the schedules that take them (discrete: diffusers').
    local schedule_opts = {n = p.steps, sigmas = denoiser.sigmas, spacing = model.info.timestep_spacing,
        steps_offset = model.info.steps_offset}
    for key, value in pairs(model.info.schedule or {}) do schedule_opts[key] = value end
    local sigmas = kiri.schedules[p.schedule](schedule_opts)
    local sample_shape, image_shape = shapes(model, p, init)
    local noise, seeds = starting_noise(p, sample_shape)
    local image, mask = init and (init.latents or init.image), init and init.mask
    local overlay
    if init then
        if type(image) == "string" then image = recipe.load_image(image, image_shape) end
        if type(mask) == "string" then mask = recipe.load_mask(mask, image_shape) end
        -- A VAE does not give the kept pixels back exactly, so they are pasted over its decoded image where the
        -- mask keeps them, as A1111 does (processing.py apply_overlay).
        if mask and not init.latents and mask:size(3) ~= sample_shape[3] then overlay = {image = image, mask = mask} end
        if not init.latents then image = model:encode_image(image) end
        if mask then mask = mask_for(mask, sample_shape) end
        local start = start_index(p.steps, init.strength)
        sigmas = sigmas:narrow(1, start + 1, p.steps + 1 - start)
    end

    local loras, prompt_text = requested_loras(p)
    if next(loras) ~= nil or model.loras then use_loras(model, loras) end
    local clip_skip = p.clip_skip and p.clip_skip > 0 and {clip_skip = p.clip_skip} or nil
    local encode = function(text) return model:encode(text, clip_skip) end
    local steps = #sigmas - 1
    local negative = schedule(p.negative, steps, encode, "negative prompt")
    if #negative(1) > 1 then recipe.input_error("negative prompt: it cannot be composed with AND") end
    local guided = kiri.guidance.cfg(denoiser, {
        cond = schedule(prompt_text, steps, encode, "prompt"), uncond = negative, scale = p.cfg, sigmas = sigmas,
        encode = encode, pre_cfg = hooks.pre_cfg, cfg = hooks.cfg, post_cfg = hooks.post_cfg, patches = patches(p, hooks),
    })
    local opts = {seed = seeds, callback = hooks.on_step, noise_sampler = hooks.noise_sampler}
    local x
    if not init then
        x = kiri.samplers[p.sampler](guided, noise * sigmas[1], sigmas, opts)
    else
        if mask then guided = kiri.models.inpaint(guided, {image = image, mask = mask, noise = noise}) end
        x = kiri.samplers[p.sampler](guided, image + noise * sigmas[1], sigmas, opts)
        if mask then x = x * mask + image * (1 - mask) end
    end
    if decode then x = model:decode(x) end
    if decode and overlay then x = x * overlay.mask + overlay.image * (1 - overlay.mask) end
    return x
end

function generate.sample(p, init, hooks, model) return sample(p, init, hooks, model, true) end

function generate.sample_latents(p, init, hooks, model) return sample(p, init, hooks, model, false) end

return generate
