-- DPM-Solver single steps of orders 1-3 and a PID step-size controller, for dpm_fast and dpm_adaptive
-- k-diffusion 0.1.1 k_diffusion/sampling.py, classes DPMSolver and PIDStepSizeController; Lu et al.
-- (2022), "DPM-Solver", arXiv:2206.00927, Algorithms 1 (DPM-Solver-2), 2 (DPM-Solver-3), 4 and 5
-- (fast and adaptive). Time is t = -log sigma; the model is used through eps = (x - D(x, sigma)) / sigma.
--
--   local solver = dpm_solver.new(model, extra)
--   solver.eps(cache, key, x, t)                    eps at (x, t), memoised in `cache` under `key`
--   solver.step_1(x, t, t_next, cache)             DPM-Solver-1
--   solver.step_2(x, t, t_next, cache, r1 = 1/2)    DPM-Solver-2
--   solver.step_3(x, t, t_next, cache, r1 = 1/3, r2 = 2/3)   DPM-Solver-3
--       each returns x at t_next and its correction to DPM-Solver-1 (x = step_1 - correction), so
--       the difference of two steps can be formed without float32 cancellation against x
--   solver.evaluations                              model calls so far
--   dpm_solver.controller(h, pcoeff, icoeff, dcoeff, order, accept_safety) -> {h =, propose(error) -> accept}
--   dpm_solver.ancestral_times(t, t_next, t_end, eta) -> t_down, sigma_up: the ancestral split of a step
local sampling = require "lib.sampling"
local expm1, sigma_fn = sampling.expm1, sampling.sigma_fn

local dpm_solver = {}

function dpm_solver.new(model, extra)
    local solver = {evaluations = 0}

    function solver.eps(cache, key, x, t)
        if cache[key] then return cache[key] end
        local sigma = sigma_fn(t)
        local eps = (x - model(x, sigma, extra)) / sigma
        solver.evaluations = solver.evaluations + 1
        cache[key] = eps
        return eps
    end

    function solver.step_1(x, t, t_next, cache)
        local h = t_next - t
        local eps = solver.eps(cache, "eps", x, t)
        return x - eps * (sigma_fn(t_next) * expm1(h)), 0
    end

    function solver.step_2(x, t, t_next, cache, r1)
        r1 = r1 or 1 / 2
        local h = t_next - t
        local eps = solver.eps(cache, "eps", x, t)
        local s1 = t + r1 * h
        local u1 = x - eps * (sigma_fn(s1) * expm1(r1 * h))
        local eps_r1 = solver.eps(cache, "eps_r1", u1, s1)
        local correction = (eps_r1 - eps) * (sigma_fn(t_next) / (2 * r1) * expm1(h))
        return solver.step_1(x, t, t_next, cache) - correction, correction
    end

    function solver.step_3(x, t, t_next, cache, r1, r2)
        r1, r2 = r1 or 1 / 3, r2 or 2 / 3
        local h = t_next - t
        local eps = solver.eps(cache, "eps", x, t)
        local s1, s2 = t + r1 * h, t + r2 * h
        local u1 = x - eps * (sigma_fn(s1) * expm1(r1 * h))
        local eps_r1 = solver.eps(cache, "eps_r1", u1, s1)
        local u2 = x - eps * (sigma_fn(s2) * expm1(r2 * h))
            - (eps_r1 - eps) * (sigma_fn(s2) * (r2 / r1) * (expm1(r2 * h) / (r2 * h) - 1))
        local eps_r2 = solver.eps(cache, "eps_r2", u2, s2)
        local correction = (eps_r2 - eps) * (sigma_fn(t_next) / r2 * (expm1(h) / h - 1))
        return solver.step_1(x, t, t_next, cache) - correction, correction
    end

    return solver
end

-- k-diffusion PIDStepSizeController (Söderlind 2003, "Digital filters in adaptive time-stepping"): the
-- step h is scaled by a limited product of recent inverse errors; a step is accepted when the factor is
-- at least accept_safety.
function dpm_solver.controller(h, pcoeff, icoeff, dcoeff, order, accept_safety, eps)
    local b1 = (pcoeff + icoeff + dcoeff) / order
    local b2 = -(pcoeff + 2 * dcoeff) / order
    local b3 = dcoeff / order
    eps = eps or 1e-8
    local controller, errors = {h = h}, nil
    function controller.propose(error)
        local inverse = 1 / (error + eps)
        errors = errors or {inverse, inverse, inverse}
        errors[1] = inverse
        local factor = errors[1] ^ b1 * errors[2] ^ b2 * errors[3] ^ b3
        factor = 1 + math.atan(factor - 1)
        local accept = factor >= accept_safety
        if accept then errors[3], errors[2] = errors[2], errors[1] end
        controller.h = controller.h * factor
        return accept
    end
    return controller
end

-- The time range of dpm_fast and dpm_adaptive: opts.sigma_min and opts.sigma_max, else those of sigmas
-- (as ComfyUI passes them: the smallest positive sigma and the first).
-- The step t -> t_next split as sampling.ancestral_step does in sigma: solve down to t_down (at most
-- t_end), then add fresh noise of size sigma_up. eta = 0 is the plain ODE step.
function dpm_solver.ancestral_times(t, t_next, t_end, eta)
    if eta <= 0 then return t_next, 0 end
    local sigma_down = sampling.ancestral_step(sigma_fn(t), sigma_fn(t_next), eta)
    local t_down = math.min(t_end, sampling.t_fn(sigma_down))
    return t_down, (sigma_fn(t_next) ^ 2 - sigma_fn(t_down) ^ 2) ^ 0.5
end

function dpm_solver.range(sigmas, opts)
    local sigma_min, sigma_max = sampling.sigma_range(sigmas)
    sigma_min, sigma_max = opts.sigma_min or sigma_min, opts.sigma_max or sigma_max
    if not (sigma_min > 0 and sigma_max > 0) then error("sigma_min and sigma_max must not be 0", 3) end
    return sampling.t_fn(sigma_max), sampling.t_fn(sigma_min)
end

return dpm_solver
