-- Forward process q(x_t | x_0) of a discrete DDPM: sqrt(acp_t) x0 + sqrt(1 - acp_t) noise
-- diffusers src/diffusers/schedulers/scheduling_ddpm.py DDPMScheduler.add_noise (Ho et al. 2020,
-- eq. 4). kiri.noise.q_sample(x0, t, noise, opts): t is the 0-based training timestep (an integer,
-- 0..N-1); opts gives the model's alphas_cumprod= or beta options as in kiri.schedules.discrete
-- (default Stable Diffusion's), kept in float32 like diffusers' table. Dividing the result by
-- sqrt(acp_t) gives kiri.noise.add(x0, sigma_t, noise) with sigma_t = sqrt((1 - acp_t) / acp_t).
local schedule = require "lib.schedule"

return function(x0, t, noise, opts)
    local alphas_cumprod = schedule.alphas_cumprod(opts or {}, schedule.f32)
    if math.type(t) ~= "integer" and not (type(t) == "number" and t == math.floor(t)) or t < 0 or t >= #alphas_cumprod then
        error(string.format("bad argument #2 to 'q_sample' (a timestep 0..%d expected, got %s)",
            #alphas_cumprod - 1, tostring(t)), 2)
    end
    local alpha_bar = alphas_cumprod[math.floor(t) + 1]
    return x0 * math.sqrt(alpha_bar) + noise * math.sqrt(1 - alpha_bar)
end
