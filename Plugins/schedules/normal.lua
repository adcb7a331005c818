-- ComfyUI "normal": timesteps evenly spaced over the discrete model's range
-- ComfyUI comfy/samplers.py normal_scheduler (shared with sgm_uniform in lib/schedule.lua
-- uniform_in_timestep). opts: n and the discrete model: alphas_cumprod=, sigmas= (its table of
-- sigmas), or beta options as in discrete; the default is Stable Diffusion's scaled_linear
-- 0.00085..0.012 over 1000 steps.
local schedule = require "lib.schedule"

return function(opts)
    return schedule.uniform_in_timestep(opts, false)
end
