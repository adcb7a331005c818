-- DPM-Solver-fast: fixed steps uniform in log sigma, orders 3, ..., 3 then 2, 1 to spend exactly n model calls
-- k-diffusion 0.1.1 k_diffusion/sampling.py sample_dpm_fast and DPMSolver.dpm_solver_fast; Lu et al.
-- (2022), "DPM-Solver", arXiv:2206.00927, Algorithm 4 (DPM-Solver-fast). Runs from sigma_max to
-- sigma_min (opts, else the first and the smallest positive of sigmas; the result is at sigma_min, as
-- in k-diffusion) with n = opts.n, else #sigmas - 1, model calls. eta > 0 adds ancestral noise.
local sampling = require "lib.sampling"
local dpm_solver = require "lib.dpm_solver"

return function(model, x, sigmas, opts)
    opts = opts or {}
    local t_start, t_end = dpm_solver.range(sigmas, opts)
    local nfe, eta, s_noise = opts.n or #sigmas - 1, opts.eta or 0, opts.s_noise or 1
    local noise_sampler = sampling.noise_sampler(x, opts)
    local solver = dpm_solver.new(model, opts.extra)
    local steps = nfe // 3 + 1
    local orders = {}
    for k = 1, steps - 1 do orders[k] = 3 end
    if nfe % 3 == 0 then orders[steps - 1], orders[steps] = 2, 1 else orders[steps] = nfe % 3 end
    for i = 1, #orders do
        local cache = {}
        local t = t_start + (t_end - t_start) * (i - 1) / steps
        local t_next = t_start + (t_end - t_start) * i / steps
        local t_down, sigma_up = dpm_solver.ancestral_times(t, t_next, t_end, eta)
        local eps = solver.eps(cache, "eps", x, t)
        local sigma = sampling.sigma_fn(t)
        sampling.callback(opts, i, x, sigma, sigma, x - eps * sigma, {t = t, t_up = t})
        local step = orders[i] == 1 and solver.step_1 or orders[i] == 2 and solver.step_2 or solver.step_3
        x = step(x, t, t_down, cache)
        if eta > 0 then   -- k-diffusion draws here even when sigma_up is 0 (the last step)
            x = x + noise_sampler(sampling.sigma_fn(t), sampling.sigma_fn(t_next)) * (sigma_up * s_noise)
        end
    end
    return x
end
