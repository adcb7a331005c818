-- Error against model evaluations (NFE) for every deterministic sampler, on a 2-D Gaussian mixture
-- whose denoiser is exact (kiri.models.gmm), measured against a 1000-step Heun solution of the same
-- probability-flow ODE from the same starting points.
-- Usage: kiri run Scripts/compare_samplers.lua [steps, e.g. "5,10,20,40"] [points=512] [seed=0]
local steps = {}
for n in (arg[1] or "5,10,20,40"):gmatch("%d+") do steps[#steps + 1] = tonumber(n) end
local points, seed = tonumber(arg[2]) or 512, tonumber(arg[3]) or 0

local gmm = kiri.models.gmm{
    means = kiri.tensor({{-2, 0}, {2, 1}, {0, -2.5}}),
    stds = {0.3, 0.5, 0.4},
    weights = {0.5, 0.3, 0.2},
}
local sigma_min, sigma_max = 0.02, 20
local function sigmas(n) return kiri.schedules.karras{n = n, sigma_min = sigma_min, sigma_max = sigma_max} end

local evaluations = 0
local function model(x, sigma, extra)
    evaluations = evaluations + 1
    return gmm(x, sigma, extra)
end

local x_T = kiri.randn({points, 2}, seed) * sigma_max
local fine = sigmas(1000)
local reference = kiri.samplers.heun(gmm, x_T:clone(), fine, {})
-- dpm_fast and dpm_adaptive end at sigma_min rather than 0 (as in k-diffusion), so they are measured
-- against the reference stopped there too.
local reference_at_sigma_min = kiri.samplers.heun(gmm, x_T:clone(), fine:narrow(1, 1, 1000), {})

local function rms_error(x, target) return math.sqrt(((x - (target or reference)) ^ 2):mean()) end

local deterministic = {"euler", "heun", "dpm_2", "lms", "dpmpp_2m", "ipndm", "ipndm_v", "deis", "unipc",
    "res_multistep", "heunpp2", "ddim", "dpm_fast"}
local header = {string.format("%-14s", "sampler")}
for _, n in ipairs(steps) do header[#header + 1] = string.format("%22s", n .. " steps: NFE  error") end
print(table.concat(header, ""))
for _, name in ipairs(deterministic) do
    local row = {string.format("%-14s", name)}
    for _, n in ipairs(steps) do
        evaluations = 0
        local x = kiri.samplers[name](model, x_T:clone(), sigmas(n), {eta = 0})
        local target = name == "dpm_fast" and reference_at_sigma_min or reference
        row[#row + 1] = string.format("%13d  %.2e", evaluations, rms_error(x, target))
    end
    print(table.concat(row, ""))
end
for _, rtol in ipairs({1e-2, 1e-3, 1e-4}) do
    evaluations = 0
    local x = kiri.samplers.dpm_adaptive(model, x_T:clone(), sigmas(10),
        {sigma_min = sigma_min, sigma_max = sigma_max, rtol = rtol, atol = rtol / 10})
    print(string.format("%-14s rtol %.0e: %d NFE, error %.2e", "dpm_adaptive", rtol, evaluations,
        rms_error(x, reference_at_sigma_min)))
end
