-- DPM-Solver-12/23 adaptive: embedded pairs of orders (1, 2) or (2, 3) with PID step-size control in log sigma
-- k-diffusion 0.1.1 k_diffusion/sampling.py sample_dpm_adaptive and DPMSolver.dpm_solver_adaptive; Lu
-- et al. (2022), "DPM-Solver", arXiv:2206.00927, Algorithm 5. opts: order (3), rtol (0.05), atol
-- (0.0078), h_init (0.05), pcoeff (0), icoeff (1), dcoeff (0), accept_safety (0.81), eta (0),
-- s_noise (1); the range as dpm_fast. Returns x at sigma_min and an info table (steps, nfe, n_accept,
-- n_reject).
local sampling = require "lib.sampling"
local dpm_solver = require "lib.dpm_solver"

return function(model, x, sigmas, opts)
    opts = opts or {}
    local t_start, t_end = dpm_solver.range(sigmas, opts)
    local order, rtol, atol = opts.order or 3, opts.rtol or 0.05, opts.atol or 0.0078
    local eta, s_noise = opts.eta or 0, opts.s_noise or 1
    if order ~= 2 and order ~= 3 then error("order should be 2 or 3", 2) end
    local forward = t_end > t_start
    if not forward and eta > 0 then error("eta must be 0 for reverse sampling", 2) end
    local noise_sampler = sampling.noise_sampler(x, opts)
    local solver = dpm_solver.new(model, opts.extra)
    local h_init = math.abs(opts.h_init or 0.05) * (forward and 1 or -1)
    local pid = dpm_solver.controller(h_init, opts.pcoeff or 0, opts.icoeff or 1, opts.dcoeff or 0,
        eta > 0 and 1.5 or order, opts.accept_safety or 0.81)
    local info = {steps = 0, nfe = 0, n_accept = 0, n_reject = 0}
    local s, x_prev = t_start, x
    while (forward and s < t_end - 1e-5) or (not forward and s > t_end + 1e-5) do
        local cache = {}
        local t = forward and math.min(t_end, s + pid.h) or math.max(t_end, s + pid.h)
        local t_down, sigma_up = dpm_solver.ancestral_times(s, t, t_end, eta)
        local eps = solver.eps(cache, "eps", x, s)
        local denoised = x - eps * sampling.sigma_fn(s)
        local x_low, x_high, correction_low, correction_high
        if order == 2 then
            x_low, correction_low = solver.step_1(x, s, t_down, cache)
            x_high, correction_high = solver.step_2(x, s, t_down, cache)
        else
            x_low, correction_low = solver.step_2(x, s, t_down, cache, 1 / 3)
            x_high, correction_high = solver.step_3(x, s, t_down, cache)
        end
        -- x_low - x_high in the mixed absolute/relative norm of Hairer et al., "Solving ODEs I", eq. II.4.11
        local delta = (kiri.maximum(x_low:abs(), x_prev:abs()) * rtol):clamp(atol)
        local error_estimate = ((correction_high - correction_low) / delta):norm() / x:numel() ^ 0.5
        if pid.propose(error_estimate) then
            x_prev = x_low
            x = x_high
            if eta > 0 then
                x = x + noise_sampler(sampling.sigma_fn(s), sampling.sigma_fn(t)) * (sigma_up * s_noise)
            end
            s = t
            info.n_accept = info.n_accept + 1
        else
            info.n_reject = info.n_reject + 1
        end
        info.nfe, info.steps = info.nfe + order, info.steps + 1
        local sigma = sampling.sigma_fn(s)
        sampling.callback(opts, info.steps, x, sigma, sigma, denoised, {t = s, t_up = s, error = error_estimate, h = pid.h,
            steps = info.steps, nfe = info.nfe, n_accept = info.n_accept, n_reject = info.n_reject})
    end
    return x, info
end
