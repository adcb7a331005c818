-- DPM-2: midpoint steps in sigma, the midpoint at sqrt(sigma * sigma_next); Euler for the last; optional churn
-- k-diffusion 0.1.1 k_diffusion/sampling.py sample_dpm_2, "inspired by DPM-Solver-2 (Lu et al. 2022,
-- arXiv:2206.00927, Algorithm 1) and Algorithm 2 from Karras et al. (2022), arXiv:2206.00364".
local sampling = require "lib.sampling"

return function(model, x, sigmas, opts)
    opts = opts or {}
    local noise_sampler = sampling.noise_sampler(x, opts)
    for i = 1, #sigmas - 1 do
        local sigma_hat, d
        x, sigma_hat, d = sampling.churned_derivative(model, x, sigmas, i, opts, noise_sampler)
        if sigmas[i + 1] == 0 then
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else
            x = sampling.midpoint_step(model, x, d, sigma_hat, sigmas[i + 1], opts.extra)
        end
    end
    return x
end
