-- Forward noising and reverse denoising on data whose answer is known exactly: x0 ~ N(mean, std^2)
-- elementwise. Its denoiser is D(x, sigma) = mean + std^2 / (std^2 + sigma^2) * (x - mean)
-- (lua-api.md, "Exact denoisers"); the sigmas are Karras et al. 2022, eq. 5; the solver is the
-- Euler step of k-diffusion's sample_euler. The samples must come out ~ N(mean, std^2).
-- Usage: kiri run Scripts/gaussian_euler.lua [steps=50] [seed=0]
local steps, seed = tonumber(arg[1]) or 50, tonumber(arg[2]) or 0
local mean, std = 0.5, 0.2
local sigma_min, sigma_max, rho = 0.002, 80, 7

local function denoise(x, sigma)
    return (x - mean) * (std ^ 2 / (std ^ 2 + sigma ^ 2)) + mean
end

local sigmas, ramp = {}, kiri.linspace(0, 1, steps)
local max_inv, min_inv = sigma_max ^ (1 / rho), sigma_min ^ (1 / rho)
for i = 1, steps do sigmas[i] = (max_inv + ramp[i] * (min_inv - max_inv)) ^ rho end
sigmas[steps + 1] = 0

-- Forward process at sigma_max: x = x0 + sigma * noise, so x ~ N(mean, std^2 + sigma_max^2).
local x0 = kiri.randn({4, 64, 64}, seed) * std + mean
local x = x0 + kiri.randn({4, 64, 64}, seed + 1) * sigmas[1]

for i = 1, steps do
    local d = (x - denoise(x, sigmas[i])) / sigmas[i]
    x:axpy_(sigmas[i + 1] - sigmas[i], d)
end

print(("%d Euler steps: mean %.4f (exact %.4f), std %.4f (exact %.4f)"):format(steps, x:mean(), mean, x:std(), std))
