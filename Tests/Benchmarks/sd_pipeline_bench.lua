-- Kiri's times for a full-size SD 1.5 pipeline (issue 12), the figures Tests/Benchmarks/sd_pipeline_bench.py
-- measures for diffusers on the same weights. Seconds; medians of `runs` after one untimed warm-up (min in
-- parentheses):
--   load     kiri.models.load(model), once, the first thing done (weights copied as the file stores them, or
--            converted to weights=FORMAT)
--   encode   m:encode of one prompt (tokenizer + CLIP text encoder), a new prompt every run (3 × runs)
--   step     one call of the CFG guider (kiri.guidance.cfg, scale 7.5) on 1×4×64×64 latents: cond and uncond in one
--            batch-2 UNet call, 512×512 pixels
--   decode   m:decode of 1×4×64×64 latents (a 512×512 image)
--   txt2img  generate.sample with the model loaded: encode both prompts, 20 Euler steps on the discrete schedule
--            (diffusers' EulerDiscreteScheduler sigmas) at CFG 7.5, 512×512, decode; txt2img_runs runs (0: none), no warm-up
-- Peak RSS: run it under /usr/bin/time -v. Usage:
--   kiri run --memory 20G --timeout 3600 Tests/Benchmarks/sd_pipeline_bench.lua model=DIR [runs=3] [steps=20]
--     [txt2img_runs=1] [load_only=1 (time the load only: a single-file checkpoint's)] [weights=f32|f16|bf16|q8_0]
local recipe = require "lib.recipe"
local generate = require "lib.generate"

local p = recipe.params(arg, {model = "", runs = 3, steps = 20, txt2img_runs = 1, load_only = 0, weights = ""})
if p.model == "" then error("model=PATH expected (a diffusers SD folder or a single-file checkpoint)") end

local function timed(body, runs, warmup)
    warmup = warmup or 1
    local times = {}
    for i = 1, warmup + runs do
        local start = kiri.clock()
        body(i)
        local elapsed = kiri.clock() - start
        if i > warmup then times[#times + 1] = elapsed end
    end
    table.sort(times)
    local n = #times
    local median = n % 2 == 1 and times[(n + 1) // 2] or (times[n // 2] + times[n // 2 + 1]) / 2
    return median, times[1]
end

local function report(name, median, fastest, runs)
    print(string.format("%s: median %.4f s (min %.4f; %d runs)", name, median, fastest, runs))
end

local start = kiri.clock()
local m <close> = kiri.models.load(p.model, {weights = p.weights ~= "" and p.weights or nil})
print(string.format("load: %.3f s", kiri.clock() - start))
print(string.format("%s, %d parameters, %s", m.info.architecture, m.info.parameters, m.info.dtype))
if p.load_only == 1 then return end

local encode_runs = 3 * p.runs
local median, fastest = timed(function(i) return m:encode("a photo of a cat, run " .. i) end, encode_runs)
report("encode", median, fastest, encode_runs)

local D = kiri.guidance.cfg(m:denoiser(), {cond = m:encode("a photo of a cat"), uncond = m:encode(""), scale = 7.5})
local latents = kiri.randn({1, 4, 64, 64}, 0)
local sigma = D.sigmas[#D.sigmas // 2]
local x = latents * sigma
median, fastest = timed(function() return D(x, sigma) end, p.runs)
report("step", median, fastest, p.runs)

median, fastest = timed(function() return m:decode(latents) end, p.runs)
report("decode", median, fastest, p.runs)

local params = {prompt = "a photo of a cat", negative = "", steps = p.steps, cfg = 7.5, sampler = "euler",
    schedule = "discrete", guidance = "", seed = 0, batch = 1, model = p.model, width = 512, height = 512}
if p.txt2img_runs > 0 then
    median, fastest = timed(function(i)
        params.seed = i
        return generate.sample(params, nil, nil, m)
    end, p.txt2img_runs, 0)
    report(string.format("txt2img %d steps", p.steps), median, fastest, p.txt2img_runs)
end
