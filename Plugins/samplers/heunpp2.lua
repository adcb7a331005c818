-- Heun++2: Heun steps that also look one step further ahead, weighted by sigma / sigma_max; optional churn
-- ComfyUI comfy/k_diffusion/sampling.py sample_heunpp2 (from github.com/Carzit/sd-webui-samplers-scheduler).
-- Each step takes Euler predictions to sigma_{i+1} and sigma_{i+2} and moves along
-- w1 d + w2 d_2 + w3 d_3 with w2 = sigma_{i+1} / (3 sigma_1), w3 = sigma_{i+2} / (3 sigma_1), w1 = 1 - w2 - w3
-- (3 model calls); the next-to-last step is Heun-like with w2 = sigma_{i+1} / (2 sigma_1), the last Euler.
-- Churn (s_churn, s_tmin, s_tmax, s_noise) as in Karras et al. (2022), arXiv:2206.00364, Algorithm 2.
local sampling = require "lib.sampling"

return function(model, x, sigmas, opts)
    opts = opts or {}
    local noise_sampler = sampling.noise_sampler(x, opts)
    local n, sigma_end = #sigmas, sigmas[#sigmas]
    local function derivative(x_k, sigma) return sampling.to_d(x_k, sigma, model(x_k, sigma, opts.extra)) end
    for i = 1, n - 1 do
        local sigma_hat, d
        x, sigma_hat, d = sampling.churned_derivative(model, x, sigmas, i, opts, noise_sampler)
        local dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == sigma_end then
            x = x + d * dt
        else
            local x_2 = x + d * dt
            local d_2 = derivative(x_2, sigmas[i + 1])
            local direction
            if sigmas[i + 2] == sigma_end then
                local w2 = sigmas[i + 1] / (2 * sigmas[1])
                direction = d * (1 - w2) + d_2 * w2
            else
                local x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
                local d_3 = derivative(x_3, sigmas[i + 2])
                local w2, w3 = sigmas[i + 1] / (3 * sigmas[1]), sigmas[i + 2] / (3 * sigmas[1])
                direction = d * (1 - w2 - w3) + d_2 * w2 + d_3 * w3
            end
            x = x + direction * dt
        end
    end
    return x
end
