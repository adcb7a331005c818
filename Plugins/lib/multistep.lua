-- Shared loop of the Adams-type multistep samplers in sigma (ipndm, ipndm_v, deis)
-- ComfyUI comfy/k_diffusion/sampling.py sample_ipndm, sample_ipndm_v and sample_deis, which share one loop
-- (all three from zju-pi/diff-sampler, diff-solvers-main/solvers.py): each step stores the Karras
-- derivative d = (x - denoised) / sigma and moves by a weighted sum of the newest derivatives,
--
--     x_{i+1} = x_i + sum_j w_j d_{i-j},   j = 0 .. order-1,   order = min(i, max_order),
--
-- and the step to sigma = 0 returns the denoised estimate. Only the weights differ between the samplers:
--
--   multistep.sampler(weights, default_order) -> sampler(model, x, sigmas, opts)
--       weights(sigmas, i, order) -> {w_0, ..., w_{order-1}}, the absolute weights (the step size included)
--       of the step sigmas[i] -> sigmas[i + 1]; opts.max_order overrides default_order.
local sampling = require "lib.sampling"

local multistep = {}

function multistep.sampler(weights, default_order)
    return function(model, x, sigmas, opts)
        opts = opts or {}
        local max_order = opts.max_order or default_order
        local derivatives = {}   -- newest first
        for i = 1, #sigmas - 1 do
            local denoised = model(x, sigmas[i], opts.extra)
            sampling.callback(opts, i, x, sigmas[i], sigmas[i], denoised)
            table.insert(derivatives, 1, sampling.to_d(x, sigmas[i], denoised))
            derivatives[max_order + 1] = nil
            if sigmas[i + 1] == 0 then
                x = denoised
            else
                local w = weights(sigmas, i, math.min(i, max_order))
                local next_x = x + derivatives[1] * w[1]
                for j = 2, #w do next_x:axpy_(w[j], derivatives[j]) end
                x = next_x
            end
        end
        return x
    end
end

return multistep
