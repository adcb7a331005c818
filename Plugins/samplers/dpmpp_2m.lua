-- DPM-Solver++(2M): second-order multistep in log sigma from the last two denoised estimates
-- k-diffusion 0.1.1 k_diffusion/sampling.py sample_dpmpp_2m; Lu et al. (2022), "DPM-Solver++",
-- arXiv:2211.01095, Algorithm 2. First-order on the first step and the step to sigma = 0.
local sampling = require "lib.sampling"

return function(model, x, sigmas, opts)
    opts = opts or {}
    local t_fn = sampling.t_fn
    local old_denoised
    for i = 1, #sigmas - 1 do
        local denoised = model(x, sigmas[i], opts.extra)
        sampling.callback(opts, i, x, sigmas[i], sigmas[i], denoised)
        local t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        if old_denoised == nil or sigmas[i + 1] == 0 then
            x = sampling.dpmpp_update(x, t, t_next, denoised)
        else
            local r = (t - t_fn(sigmas[i - 1])) / (t_next - t)
            local denoised_d = denoised * (1 + 1 / (2 * r)) - old_denoised * (1 / (2 * r))
            x = sampling.dpmpp_update(x, t, t_next, denoised_d)
        end
        old_denoised = denoised
    end
    return x
end
