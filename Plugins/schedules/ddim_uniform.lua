-- ComfyUI "ddim_uniform": the discrete model's sigmas at timesteps 1, 1 + N//n, 1 + 2(N//n), ...
-- ComfyUI comfy/samplers.py ddim_scheduler. opts: n and the discrete model, as in normal.
-- As in ComfyUI, the step count is that of the timesteps below N, which is more than n when n
-- does not divide N (n = 7 of 1000 timesteps gives 8 steps). When the model's sigma at timestep 1
-- is 0 (a zero-SNR table read from the top), ComfyUI spaces n + 1 timesteps and ends on that 0.
local schedule = require "lib.schedule"

return function(opts)
    local n = schedule.steps(opts)
    local table_sigmas = schedule.model(opts).sigmas
    local count = #table_sigmas
    local reversed = {}
    local ends_at_zero = math.abs(table_sigmas[2]) <= 1e-5
    if ends_at_zero then n = n + 1 else reversed[1] = 0 end
    local stride = math.max(count // n, 1)
    for x = 1, count - 1, stride do reversed[#reversed + 1] = table_sigmas[x + 1] end
    local sigmas = {}
    for i = #reversed, 1, -1 do sigmas[#sigmas + 1] = reversed[i] end
    if ends_at_zero then sigmas[#sigmas] = 0 end
    return schedule.as_sigmas(sigmas)
end
