-- Brownian-tree noise: normalised Brownian increments in t = -log sigma, the same in any query order
-- k-diffusion 0.1.1 k_diffusion/sampling.py BrownianTreeNoiseSampler, over torchsde's BrownianTree
-- (Li et al. 2020, "Scalable Gradients for Stochastic Differential Equations", arXiv:2001.01328, the
-- virtual Brownian tree). kiri.noise.brownian_tree(x, sigma_min, sigma_max, seed [, transform]) returns
-- noise_sampler(sigma, sigma_next) = (W(t_next) - W(t)) / sqrt(|t_next - t|), t = transform(sigma),
-- transform defaults to -log sigma (k-diffusion's default is the identity; pass function(s) return s end
-- for it). W on [t(sigma_max), t(sigma_min)] is built by recursive Brownian-bridge bisection: a node's
-- midpoint value is drawn from the bridge between its ends with the node's own seed, so every query sees
-- the same path. Below `depth` levels (intervals of 2^-depth of the whole) the bridge is interpolated.
local sampling = require "lib.sampling"

local depth = 24

return function(x, sigma_min, sigma_max, seed, transform)
    transform = transform or sampling.t_fn
    seed = sampling.seed(seed)
    local t0, t1 = transform(sigma_min), transform(sigma_max)
    if t0 > t1 then t0, t1 = t1, t0 end
    local function normal(node) return kiri.randn_like(x, sampling.mix_seed(seed, node)) end
    local w0, w1 = kiri.zeros_like(x), normal(0) * (t1 - t0) ^ 0.5

    -- Midpoints of the last two descents, by heap index (root 1, children 2n and 2n + 1): consecutive
    -- queries share most of their path.
    local recent, older = {}, {}
    local function midpoint(node, current, w_low, w_high, width)
        local w = current[node] or recent[node] or older[node]
        if not w then
            w = normal(node):mul_((width / 4) ^ 0.5)
            w:axpy_(0.5, w_low):axpy_(0.5, w_high)
        end
        current[node] = w
        return w
    end

    local function value(t)
        local slack = 1e-9 * (t1 - t0)
        if t < t0 - slack or t > t1 + slack then
            error(("brownian_tree: t = %.9g is outside [%.9g, %.9g] (sigma_min and sigma_max)"):format(t, t0, t1), 4)
        end
        t = math.min(math.max(t, t0), t1)
        local current, node = {}, 1
        local low, high, w_low, w_high = t0, t1, w0, w1
        local w
        for _ = 1, depth do
            if t == low then w = w_low; break end
            if t == high then w = w_high; break end
            local mid = (low + high) / 2
            local w_mid = midpoint(node, current, w_low, w_high, high - low)
            if t < mid then
                high, w_high, node = mid, w_mid, 2 * node
            else
                low, w_low, node = mid, w_mid, 2 * node + 1
            end
        end
        if not w then
            -- Inside a leaf: the Brownian bridge between its ends, with the leaf's own draw.
            local width, fraction = high - low, (t - low) / (high - low)
            w = normal(node):mul_(((t - low) * (high - t) / width) ^ 0.5)
            w:axpy_(1 - fraction, w_low):axpy_(fraction, w_high)
        end
        older, recent = recent, current
        return w
    end

    -- W at the last few t asked for: a sampler asks for each sigma more than once.
    local memo = {}
    local function cached(t)
        for _, entry in ipairs(memo) do if entry[1] == t then return entry[2] end end
        local w = value(t)
        table.insert(memo, 1, {t, w})
        memo[5] = nil
        return w
    end

    return function(sigma, sigma_next)
        local t, t_next = transform(sigma), transform(sigma_next)
        if t == t_next then return kiri.zeros_like(x) end
        local w = cached(t)
        return (cached(t_next) - w) / math.abs(t_next - t) ^ 0.5
    end
end
