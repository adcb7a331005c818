-- ComfyUI "sgm_uniform": n of n + 1 evenly spaced timesteps, the last one dropped
-- ComfyUI comfy/samplers.py normal_scheduler(sgm=True) (lib/schedule.lua uniform_in_timestep).
-- opts: n and the discrete model, as in normal.
local schedule = require "lib.schedule"

return function(opts)
    return schedule.uniform_in_timestep(opts, true)
end
