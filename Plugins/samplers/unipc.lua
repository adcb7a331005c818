-- UniPC: three-step multistep predictor-corrector in log sigma (opts.variant "bh1", the default, or "bh2")
-- ComfyUI comfy/extra_samplers/uni_pc.py sample_unipc / sample_unipc_bh2 (from github.com/wl-zhao/UniPC,
-- UniPC.multistep_uni_pc_bh_update and UniPC.sample, multistep, data prediction); Zhao et al. (2023),
-- "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models", arXiv:2302.04867,
-- Algorithms 1-2 (UniP-p, UniC-p with B(h) = h for bh1, B(h) = e^h - 1 for bh2).
-- The reference works on x / sqrt(1 + sigma^2) with alpha = 1 / sqrt(1 + sigma^2); its alphas cancel in
-- x itself, so here the same update runs in sigma, with lambda = -log sigma. As in ComfyUI: a final sigma
-- below opts.final_sigma (0.001) is replaced by it (B(h) = h is infinite at sigma = 0; final_sigma = 0 steps
-- to 0 like diffusers' UniPCMultistepScheduler, fine with lower_order_final), the order is min(opts.order (3),
-- steps - 1), the first steps warm up with orders 1, 2, ..., and with opts.lower_order_final (default true)
-- the last steps use orders 2 and 1; the last step runs no corrector. Every step makes one model call.
-- The corrector lifts the three-step predictor to order 4; the first-order last step of lower_order_final
-- caps the convergence order at 2 as the step count grows (ComfyUI always uses it; diffusers below 15 steps).
local sampling = require "lib.sampling"

-- Solves A z = b for the leading n x n block of A and the first n entries of b (Gaussian elimination
-- with partial pivoting; n <= 3 here).
local function solve(A, b, n)
    local M = {}
    for r = 1, n do M[r] = {table.unpack(A[r], 1, n)}; M[r][n + 1] = b[r] end
    for c = 1, n do
        local pivot = c
        for r = c + 1, n do if math.abs(M[r][c]) > math.abs(M[pivot][c]) then pivot = r end end
        M[c], M[pivot] = M[pivot], M[c]
        for r = c + 1, n do
            local factor = M[r][c] / M[c][c]
            for k = c, n + 1 do M[r][k] = M[r][k] - factor * M[c][k] end
        end
    end
    local z = {}
    for r = n, 1, -1 do
        local sum = M[r][n + 1]
        for k = r + 1, n do sum = sum - M[r][k] * z[k] end
        z[r] = sum / M[r][r]
    end
    return z
end

-- UniPC.multistep_uni_pc_bh_update with predict_x0: one step from the newest entry of `history` (a list of
-- {sigma = , denoised = }, oldest first) to sigma_t, using `order` entries. Returns x_t and, when
-- correcting, the model's output at the predicted x_t (the corrector reuses it; so does the next step).
local function update(model, x, history, sigma_t, order, variant, use_corrector, extra)
    local newest = history[#history]
    local lambda_0, m0 = -math.log(newest.sigma), newest.denoised
    local h = -math.log(sigma_t) - lambda_0
    local rks, differences = {}, {}
    for k = 1, order - 1 do
        local previous = history[#history - k]
        rks[k] = (-math.log(previous.sigma) - lambda_0) / h
        differences[k] = (previous.denoised - m0) / rks[k]
    end
    rks[order] = 1

    local hh = -h
    local h_phi_1 = sampling.expm1(hh)
    local B_h = variant == "bh2" and h_phi_1 or hh
    local R, b = {}, {}
    local h_phi_k, factorial = h_phi_1 / hh - 1, 1
    for k = 1, order do
        R[k] = {}
        for j = 1, order do R[k][j] = rks[j] ^ (k - 1) end
        b[k] = h_phi_k * factorial / B_h
        factorial = factorial * (k + 1)
        h_phi_k = h_phi_k / hh - 1 / factorial
    end

    local function residual(rhos, count)
        local sum
        for k = 1, count do sum = sum and sum:axpy_(rhos[k], differences[k]) or differences[k] * rhos[k] end
        return sum
    end

    local x_base = x * (sigma_t / newest.sigma) - m0 * h_phi_1   -- DPM-Solver++(1)
    local x_t = x_base
    if order >= 2 then
        local rhos_p = order == 2 and {0.5} or solve(R, b, order - 1)
        x_t = x_base - residual(rhos_p, order - 1) * B_h
    end
    if not use_corrector then return x_t, nil end

    local model_t = model(x_t, sigma_t, extra)
    local rhos_c = order == 1 and {0.5} or solve(R, b, order)
    local correction = (model_t - m0) * rhos_c[order]
    if order >= 2 then correction:add_(residual(rhos_c, order - 1)) end
    return x_base - correction * B_h, model_t, x_t
end

return function(model, x, sigmas, opts)
    opts = opts or {}
    local variant = opts.variant or "bh1"
    if variant ~= "bh1" and variant ~= "bh2" then
        error(("unipc: variant \"bh1\" or \"bh2\" expected, got %s"):format(tostring(variant)), 2)
    end
    local steps = #sigmas - 1
    local final_sigma = math.max(sigmas[steps + 1], opts.final_sigma or 0.001)
    local function target(k) return k == steps and final_sigma or sigmas[k + 1] end
    local order = math.max(1, math.min(opts.order or 3, steps - 1))
    local lower_order_final = opts.lower_order_final ~= false

    local denoised = model(x, sigmas[1], opts.extra)
    sampling.callback(opts, 1, x, sigmas[1], sigmas[1], denoised)
    local history = {{sigma = sigmas[1], denoised = denoised}}
    for step = 1, steps do
        local step_order = order
        if step < order then
            step_order = step
        elseif lower_order_final then
            step_order = math.min(order, steps + 1 - step)
        end
        local sigma_t = target(step)
        local predicted
        x, denoised, predicted = update(model, x, history, sigma_t, step_order, variant, step < steps, opts.extra)
        if step < steps then
            sampling.callback(opts, step + 1, predicted, sigma_t, sigma_t, denoised)
            history[#history + 1] = {sigma = sigma_t, denoised = denoised}
            if #history > order then table.remove(history, 1) end
        end
    end
    return x
end
