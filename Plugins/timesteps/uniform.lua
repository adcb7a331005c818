-- Training timesteps uniform on 0..N-1, as torch.randint(0, N, (batch,)) draws them in diffusers' training scripts
-- (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Algorithm 1: t ~ Uniform({1, ..., T})).
-- Each timestep is floor(u N) for a u with 48 random bits (lib.training's uniform), so every timestep has
-- probability 1/N to within N / 2^48. opts.num_train_timesteps: N (1000).
-- kiri.timesteps.uniform(batch, seed [, opts]) -> {t_1, ..., t_batch}
local training = require "lib.training"

---@type TimestepSampler
return function(batch, seed, opts)
    local count = training.timestep_arguments("uniform", batch, seed, opts)
    local timesteps = {}
    for i, u in ipairs(training.uniform(batch, seed)) do timesteps[i] = math.floor(u * count) end
    return timesteps
end
