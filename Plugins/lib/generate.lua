-- The pipeline the recipes share: prompt -> conditioning -> guided denoiser -> sigmas -> noise -> sampler
--
--   generate.sample(p [, init]) -> samples [batch, C, H, W] in the model's [-1, 1] range
--     p: prompt, negative, steps, cfg, sampler, schedule, seed, batch and model (a kiri.models name)
--     init, for img2img and inpainting: {image =, mask =, strength = 0..1}; image is a PNG's path or a
--     [1 or batch, C, H, W] sample in [-1, 1], mask a PNG's path or a [1, 1, H, W] tensor, 1 where to
--     paint (lib/recipe.lua load_image and load_mask read the PNGs)
--
-- The negative prompt is CFG's unconditional branch. img2img follows diffusers'
-- StableDiffusionImg2ImgPipeline (get_timesteps): of `steps` steps, the first steps * (1 - strength)
-- are skipped and sampling starts from the image noised to the next sigma.
local recipe = require "lib.recipe"

local generate = {}

local function start_index(steps, strength)
    if type(strength) ~= "number" or strength <= 0 or strength > 1 then
        error(string.format("strength must be in (0, 1], got %s", tostring(strength)), 3)
    end
    return math.min(steps - math.floor(steps * strength), steps - 1)
end

function generate.sample(p, init)
    local model <close> = kiri.models[p.model]()
    local denoiser = kiri.guidance.cfg(model:denoiser(),
        {cond = model:encode(p.prompt), uncond = model:encode(p.negative), scale = p.cfg})
    local sigmas = kiri.schedules[p.schedule]{n = p.steps, sigmas = denoiser.sigmas}
    local noise = kiri.randn({p.batch, table.unpack(model.sample_shape)}, p.seed)
    if not init then
        return kiri.samplers[p.sampler](denoiser, noise * sigmas[1], sigmas, {seed = p.seed})
    end

    local image, mask = init.image, init.mask
    if type(image) == "string" then image = recipe.load_image(image, model.sample_shape) end
    if type(mask) == "string" then mask = recipe.load_mask(mask, model.sample_shape) end
    local start = start_index(p.steps, init.strength)
    sigmas = sigmas:narrow(1, start + 1, p.steps + 1 - start)
    if mask then denoiser = kiri.models.inpaint(denoiser, {image = image, mask = mask, noise = noise}) end
    local x = kiri.samplers[p.sampler](denoiser, image + noise * sigmas[1], sigmas, {seed = p.seed})
    if mask then x = x * mask + image * (1 - mask) end
    return x
end

return generate
