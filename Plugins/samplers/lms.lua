-- LMS: linear multistep (Adams-Bashforth in sigma) over the last opts.order derivatives, default 4
-- k-diffusion 0.1.1 k_diffusion/sampling.py sample_lms and linear_multistep_coeff: the weights integrate
-- the Lagrange polynomial through past derivatives over the step (Adams-Bashforth on the non-uniform
-- sigma grid; Hairer, Norsett & Wanner, "Solving ODEs I", sec. III.1).
local sampling = require "lib.sampling"

return function(model, x, sigmas, opts)
    opts = opts or {}
    local order = opts.order or 4
    local ds = {}
    for i = 1, #sigmas - 1 do
        local denoised = model(x, sigmas[i], opts.extra)
        table.insert(ds, 1, sampling.to_d(x, sigmas[i], denoised))   -- newest first
        ds[order + 1] = nil
        sampling.callback(opts, i, x, sigmas[i], sigmas[i], denoised)
        local current_order = math.min(i, order)
        for j = 0, current_order - 1 do
            x = x + ds[j + 1] * sampling.linear_multistep_coeff(current_order, sigmas, i, j)
        end
    end
    return x
end
