-- What each weight format costs in accuracy (issue 13), on a full-size SD 1.5 (make_sd15_pipeline.py): the model
-- loaded as its file stores it (F16) is the reference, and for each other format (weights=...):
--   unet     max |Δ| / max |reference| of one UNet forward (1×4×64×64 latents, t = 500, a prompt's context)
--   decode   PSNR in dB of a 512×512 decode of the same latents, images taken from [-1, 1] to [0, 1]
--   step     seconds of that UNet forward (after a warm-up)
-- Peak memory per format: run `kiri run ... sd_pipeline_bench.lua model=DIR weights=FORMAT` under /usr/bin/time -v.
-- Usage: kiri run --memory 12G --timeout 3600 Tests/Benchmarks/precision_bench.lua model=DIR [formats=bf16,q8_0,f32]
local recipe = require "lib.recipe"

local p = recipe.params(arg, {model = "", formats = "bf16,q8_0,f32"})
if p.model == "" then error("model=PATH expected (a diffusers SD folder or a single-file checkpoint)") end

local x = kiri.randn({1, 4, 64, 64}, 1)
local latents = kiri.randn({1, 4, 64, 64}, 2)

local function run(m)
    local context = m:encode("a photo of a cat, highly detailed").context
    m:forward(x, 500, {context = context})
    local start = kiri.clock()
    local eps = m:forward(x, 500, {context = context})
    return eps, kiri.clock() - start, m:decode(latents)
end

local reference = kiri.models.load(p.model)
local eps, seconds, image = run(reference)
print(string.format("%s (as stored): step %.2f s", reference.info.dtype, seconds))
reference:close()

for _, format in ipairs(recipe.values("formats", p.formats, "")) do
    local m <close> = kiri.models.load(p.model, {weights = format})
    local other, time, decoded = run(m)
    local error = (other - eps):abs():max() / eps:abs():max()
    local mse = (((decoded - image) / 2) ^ 2):mean()
    print(string.format("%s: unet %.3g, decode PSNR %.1f dB, step %.2f s", format, error, 10 * math.log(1 / mse, 10), time))
end
