-- The cost of each guidance method on the default model: 20 dpmpp_2m steps on Karras sigmas, CFG 4, batch 1,
-- the guider of Plugins/guidance/cfg.lua with one patch, as a ratio to plain CFG timed in the same run.
-- Usage: kiri run Tests/Benchmarks/guidance_bench.lua [runs=7]. Prints "NAME: median X ms, RATIO x plain CFG".
local runs = tonumber(arg[1]) or 7
local model <close> = kiri.models.default()
local denoiser = model:denoiser()
local sigmas = kiri.schedules.karras{n = 20, sigmas = denoiser.sigmas}
local cond, uncond = model:encode("coat"), model:encode("")
local encode = function(text) return model:encode(text) end

local methods = {
    {"cfg (plain)"},
    {"rescale_cfg", {kiri.guidance.rescale_cfg{}}},
    {"dynamic_thresholding", {kiri.guidance.dynamic_thresholding{}}},
    {"perp_neg", {kiri.guidance.perp_neg{}}},
    {"apg", {kiri.guidance.apg{}}},
    {"interval (lo 0.3, hi 5)", {kiri.guidance.interval{lo = 0.3, hi = 5}}},
    {"dual_cfg", {kiri.guidance.dual_cfg{middle = "pullover"}}},
    {"scale_schedule", {kiri.guidance.scale_schedule{}}},
    {"euler_cfg_pp (sampler)", nil, "euler_cfg_pp"},
}

local function median(patches, sampler)
    local guided = kiri.guidance.cfg(denoiser, {cond = cond, uncond = uncond, scale = 4, sigmas = sigmas,
        encode = encode, patches = patches})
    local times = {}
    for run = 0, runs do
        local start = kiri.clock()
        kiri.samplers[sampler or "dpmpp_2m"](guided, kiri.randn({1, 1, 28, 28}, run) * sigmas[1], sigmas, {})
        if run > 0 then times[#times + 1] = (kiri.clock() - start) * 1e3 end   -- run 0 warms up
    end
    table.sort(times)
    return times[(#times + 1) // 2]
end

local plain
for _, method in ipairs(methods) do
    local time = median(method[2], method[3])
    plain = plain or time
    print(string.format("%-24s median %6.1f ms, %.2fx plain CFG", method[1], time, time / plain))
end
