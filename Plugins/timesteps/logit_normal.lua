-- Logit-normal training timesteps: t = sigmoid(n), n ~ N(mean, std), timestep floor(t N) (clamped to N - 1)
-- Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis" (SD3), section 3.1,
-- as diffusers src/diffusers/training_utils.py compute_density_for_timestep_sampling("logit_normal") draws u and
-- examples/dreambooth/train_dreambooth_sd3.py maps it: indices = (u * num_train_timesteps).long().
-- opts: mean (0), std (1), num_train_timesteps (1000). kiri.timesteps.logit_normal(batch, seed [, opts]) -> list
local check = require "lib.check"
local training = require "lib.training"

---@type TimestepSampler
return function(batch, seed, opts)
    local count, options = training.timestep_arguments("logit_normal", batch, seed, opts)
    local mean = check.number(options, "mean", 0, 3, "logit_normal")
    local std = check.number(options, "std", 1, 3, "logit_normal", "a positive number", function(value) return value > 0 end)
    local timesteps = {}
    for i, n in ipairs(kiri.randn({batch}, seed):totable()) do
        local t = 1 / (1 + math.exp(-(mean + std * n)))
        timesteps[i] = math.min(math.floor(t * count), count - 1)
    end
    return timesteps
end
