-- iPNDM: fourth-order Adams-Bashforth in sigma with fixed (equal-step) weights, lower orders to start
-- ComfyUI comfy/k_diffusion/sampling.py sample_ipndm (from zju-pi/diff-sampler solvers.py); Zhang & Chen
-- (2023), "Fast Sampling of Diffusion Models with Exponential Integrator" (DEIS), arXiv:2204.13902,
-- sec. 4 "improved PNDM". The weights are the classical Adams-Bashforth ones (Hairer, Norsett & Wanner,
-- "Solving ODEs I", sec. III.1, Table 1.1), exact for equal steps; opts.max_order (1-4, default 4).
local multistep = require "lib.multistep"

local adams_bashforth = {
    {1},
    {3 / 2, -1 / 2},
    {23 / 12, -16 / 12, 5 / 12},
    {55 / 24, -59 / 24, 37 / 24, -9 / 24},
}

return multistep.sampler(function(sigmas, i, order)
    local h, weights = sigmas[i + 1] - sigmas[i], {}
    for j, weight in ipairs(adams_bashforth[order]) do weights[j] = h * weight end
    return weights
end, 4)
