-- The cost of each guidance method on the default model: 20 dpmpp_2m steps on Karras sigmas, CFG 4, batch 1,
-- the guider of Plugins/guidance/cfg.lua with one patch, as a ratio to plain CFG timed in the same run
-- (round robin: each round times every method once; medians over the rounds).
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

-- One sampling run of a method, in ms.
local function time(method, guided, run)
    local start = kiri.clock()
    kiri.samplers[method[3] or "dpmpp_2m"](guided, kiri.randn({1, 1, 28, 28}, run) * sigmas[1], sigmas, {})
    return (kiri.clock() - start) * 1e3
end

-- Round robin, every method once per round, so that a slow spell of the machine hits them all alike.
local guided, times = {}, {}
for m, method in ipairs(methods) do
    guided[m] = kiri.guidance.cfg(denoiser, {cond = cond, uncond = uncond, scale = 4, sigmas = sigmas,
        encode = encode, patches = method[2]})
    time(method, guided[m], 0)   -- warm-up
    times[m] = {}
end
for run = 1, runs do
    for m, method in ipairs(methods) do times[m][run] = time(method, guided[m], run) end
end

local plain
for m, method in ipairs(methods) do
    table.sort(times[m])
    local median = times[m][(runs + 1) // 2]
    plain = plain or median
    print(string.format("%-24s median %6.1f ms, %.2fx plain CFG", method[1], median, median / plain))
end
