-- Independent Gaussian noise for ancestral and SDE samplers: noise_sampler(sigma, sigma_next) -> N(0, I)
-- k-diffusion 0.1.1 k_diffusion/sampling.py default_noise_sampler (a fresh randn_like(x) per call).
-- kiri.noise.gaussian(x, seed): draw k uses seed mix_seed(seed, k), so a seeded run is reproducible;
-- without a seed each draw comes from the run's random stream (kiri.manual_seed).
local sampling = require "lib.sampling"

return function(x, seed)
    if seed == nil then
        return function() return kiri.randn_like(x) end
    end
    seed = sampling.seed(seed)
    local draws = 0
    return function()
        draws = draws + 1
        return kiri.randn_like(x, sampling.mix_seed(seed, draws))
    end
end
