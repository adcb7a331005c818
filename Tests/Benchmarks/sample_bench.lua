-- Kiri's time for the default model's txt2img: 20 dpmpp_2m steps on Karras sigmas with CFG 4, the loop of
-- Plugins/lib/generate.lua with the model loaded once. Prints "batch N: median X ms (min Y)" per batch.
-- Usage: kiri run Tests/Benchmarks/sample_bench.lua [runs=10]
local runs = tonumber(arg[1]) or 10
local model <close> = kiri.models.default()
local D = kiri.guidance.cfg(model:denoiser(), {cond = model:encode("sneaker"), uncond = model:encode(""), scale = 4})
local sigmas = kiri.schedules.karras{n = 20, sigmas = D.sigmas}

for _, batch in ipairs({1, 8}) do
    local times = {}
    for run = 0, runs do
        local start = kiri.clock()
        kiri.samplers.dpmpp_2m(D, kiri.randn({batch, 1, 28, 28}, run) * sigmas[1], sigmas, {})
        if run > 0 then times[#times + 1] = (kiri.clock() - start) * 1e3 end   -- run 0 warms up
    end
    table.sort(times)
    print(string.format("batch %d: median %.1f ms (min %.1f)", batch, times[(#times + 1) // 2], times[1]))
end
