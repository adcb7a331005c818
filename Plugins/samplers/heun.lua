-- Heun: second-order (trapezoidal) steps of the probability-flow ODE, Euler for the last, with optional churn
-- k-diffusion 0.1.1 k_diffusion/sampling.py sample_heun; Karras et al. (2022), "Elucidating the Design
-- Space of Diffusion-Based Generative Models", arXiv:2206.00364, Algorithm 2.
local sampling = require "lib.sampling"

return function(model, x, sigmas, opts)
    opts = opts or {}
    local noise_sampler = sampling.noise_sampler(x, opts)
    for i = 1, #sigmas - 1 do
        local sigma_hat, d
        x, sigma_hat, d = sampling.churned_derivative(model, x, sigmas, i, opts, noise_sampler)
        local dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0 then
            x = x + d * dt
        else
            local x_2 = x + d * dt
            local d_2 = sampling.to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1], opts.extra))
            x = x + (d + d_2) * (dt / 2)
        end
    end
    return x
end
