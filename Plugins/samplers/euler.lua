-- Euler: first-order steps of the probability-flow ODE, with optional churn (s_churn, s_tmin, s_tmax, s_noise)
-- k-diffusion 0.1.1 k_diffusion/sampling.py sample_euler; Karras et al. (2022), "Elucidating the Design
-- Space of Diffusion-Based Generative Models", arXiv:2206.00364, Algorithm 2 with Euler steps.
-- Churn noise comes from opts.noise_sampler, else Gaussian draws seeded by opts.seed.
local sampling = require "lib.sampling"

return function(model, x, sigmas, opts)
    opts = opts or {}
    local noise_sampler = sampling.noise_sampler(x, opts)
    for i = 1, #sigmas - 1 do
        local sigma_hat, d
        x, sigma_hat, d = sampling.churned_derivative(model, x, sigmas, i, opts, noise_sampler)
        x = x + d * (sigmas[i + 1] - sigma_hat)
    end
    return x
end
