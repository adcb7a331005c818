-- Exact denoiser of a Gaussian mixture: D(x, sigma) = E[x0 | x0 + sigma * n = x] for rows x in R^D
-- lua-api.md, "Exact denoisers": with M a K x D tensor of means, stds s_k and weights w_k,
--   D(x, sigma) = sum_k r_k(x) * (mu_k + s_k^2 / (s_k^2 + sigma^2) * (x - mu_k)),
--   r_k(x) proportional to w_k * Normal(x; mu_k, (s_k^2 + sigma^2) I),
-- the responsibilities normalised in log space (log-sum-exp) so distant components do not underflow.
-- x is N x D (or one point, D); a component with s_k = 0 is a point mass. D(x, 0) = x.
local function tensor(values)
    return type(values) == "table" and kiri.tensor(values) or values:clone()
end

return function(options)
    local means = options.means
    local components, dimension = means:shape()[1], means:shape()[2]
    local stds = tensor(options.stds):reshape(1, components)
    local weights = tensor(options.weights or kiri.ones({components})):reshape(1, components)
    local log_weights = (weights / weights:sum()):log()
    local variances_data = stds:square()

    return function(x, sigma)
        if sigma == 0 then return x:clone() end
        local points = x:reshape(-1, dimension)                                      -- N x D
        local count = points:shape()[1]
        local variances = variances_data + sigma ^ 2                                 -- 1 x K
        local distances = (points:reshape(count, 1, dimension) - means:reshape(1, components, dimension))
            :square():sum(3)                                                         -- N x K
        -- log(w_k Normal(x; mu_k, v_k I)) without the (2 pi)^(-D/2) common to every k
        local logits = log_weights - variances:log() * (dimension / 2) - distances / (variances * 2)
        local responsibilities = (logits - logits:max(2, true)):exp()
        responsibilities:div_(responsibilities:sum(2, true))
        local shrink = variances_data / variances                                    -- s_k^2 / (s_k^2 + sigma^2)
        local denoised = points * (responsibilities * shrink):sum(2, true)
            + kiri.matmul(responsibilities * (1 - shrink), means)
        return denoised:reshape(x:shape())
    end
end
