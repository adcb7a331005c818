-- ComfyUI "simple": every (N/n)-th sigma of the discrete model's table, from the top
-- ComfyUI comfy/samplers.py simple_scheduler. opts: n and the discrete model, as in normal.
local schedule = require "lib.schedule"

return function(opts)
    local n = schedule.steps(opts)
    local table_sigmas = schedule.model(opts).sigmas
    local count = #table_sigmas
    local stride = count / n
    local sigmas = {}
    for x = 0, n - 1 do sigmas[x + 1] = table_sigmas[count - math.floor(x * stride)] end
    sigmas[n + 1] = 0
    return schedule.as_sigmas(sigmas)
end
