-- iPNDM_v: iPNDM with weights adapted to unequal sigma steps (ComfyUI's expressions)
-- ComfyUI comfy/k_diffusion/sampling.py sample_ipndm_v (from zju-pi/diff-sampler solvers.py, the
-- variable-step iPNDM of Zhou et al. (2024), "Fast ODE-based Sampling for Diffusion Models in Around 5
-- Steps", arXiv:2312.00094). With h_k = sigma_{k+1} - sigma_k, order 2 is the exact variable-step
-- Adams-Bashforth rule. In the reference, temp1 of orders 3 and 4 reads (1 - h_n / (3 (h_n + h_n_1)) * r) / 2;
-- with the product outside the parenthesis, (1 - h_n / (3 (h_n + h_n_1))) * r / 2, order 3 would be the exact
-- variable-step Adams-Bashforth-3 rule. As written it is Adams-Bashforth-3 on equal steps only, and the
-- order-4 weights are third order on equal steps and sum to 1 only where consecutive step ratios are
-- equal (geometric sigmas, kiri.schedules.exponential). Kept as ComfyUI has them, for parity; the exact
-- variable-step Adams-Bashforth weights are lms's. opts.max_order (1-4, default 4).
local multistep = require "lib.multistep"

-- Weights of d_i, d_{i-1}, ... before multiplying by h_n, named as in the reference.
local function coefficients(h_n, h_n_1, h_n_2, h_n_3, order)
    local c1, c2 = (2 + h_n / h_n_1) / 2, -(h_n / h_n_1) / 2
    if order == 2 then return {c1, c2} end
    local temp1 = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
    if order == 3 then return {c1 + temp1, c2 - (1 + h_n_1 / h_n_2) * temp1, temp1 * h_n_1 / h_n_2} end
    local temp2 = ((1 - h_n / (3 * (h_n + h_n_1))) / 2 + (1 - h_n / (2 * (h_n + h_n_1))) * h_n / (6 * (h_n + h_n_1 + h_n_2)))
        * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2)) / (h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3))
    local ratio = h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))
    return {
        c1 + temp1 + temp2,
        c2 - (1 + h_n_1 / h_n_2) * temp1 - (1 + h_n_1 / h_n_2 + ratio) * temp2,
        temp1 * h_n_1 / h_n_2 + (h_n_1 / h_n_2 + ratio * (1 + h_n_2 / h_n_3)) * temp2,
        -temp2 * ratio * h_n_1 / h_n_2,
    }
end

return multistep.sampler(function(sigmas, i, order)
    local h_n = sigmas[i + 1] - sigmas[i]
    if order == 1 then return {h_n} end
    local function step(k) return k >= 2 and sigmas[k] - sigmas[k - 1] or nil end
    local weights = coefficients(h_n, step(i), step(i - 1), step(i - 2), order)
    for j = 1, #weights do weights[j] = h_n * weights[j] end
    return weights
end, 4)
