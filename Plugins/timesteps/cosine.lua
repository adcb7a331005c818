-- Timesteps whose noise levels follow the cosine schedule's: the model's timestep at cosine time u, u uniform
-- Esser et al. 2024 (SD3), section 3.1, "CosMap": sample u uniformly and match the log-SNR of Nichol & Dhariwal's
-- (2021) cosine schedule, alpha_bar(u) = cos^2(pi u / 2) (no offset, as there). Here the match is onto the model's own
-- DDPM table: timestep t has cosine time c_t = (2/pi) arccos(sqrt(alphas_cumprod[t])), and u ~ U(0, c_{N-1}) (the
-- noise levels the table reaches) gives the first t with c_t >= u, so P(timestep <= k) = c_k / c_{N-1}.
-- opts: the table as kiri.schedules.discrete takes it (alphas_cumprod =, or beta_schedule, beta_start, beta_end,
-- num_train_timesteps; default Stable Diffusion's). kiri.timesteps.cosine(batch, seed [, opts]) -> list
local training = require "lib.training"

---@type TimestepSampler
return function(batch, seed, opts)
    local _, options = training.timestep_arguments("cosine", batch, seed, opts)
    local times = {}
    for t, alpha_bar in ipairs(training.alphas_cumprod(options)) do times[t] = 2 / math.pi * math.acos(math.sqrt(alpha_bar)) end
    local timesteps = {}
    for i, u in ipairs(training.uniform(batch, seed)) do
        local low, high, v = 1, #times, u * times[#times]   -- the first index with times[index] >= v
        while low < high do
            local middle = (low + high) // 2
            if times[middle] >= v then high = middle else low = middle + 1 end
        end
        timesteps[i] = low - 1
    end
    return timesteps
end
