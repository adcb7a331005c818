-- Exact denoiser of Gaussian data N(mean, std^2), elementwise: D(x, sigma) = E[x0 | x0 + sigma * n = x]
-- lua-api.md, "Exact denoisers": D(x, sigma) = m + s^2 / (s^2 + sigma^2) * (x - m). mean and std are
-- numbers or tensors that broadcast against x.
return function(options)
    local mean, std = options.mean or 0, options.std or 1
    return function(x, sigma)
        return (x - mean) * (std ^ 2 / (std ^ 2 + sigma ^ 2)) + mean
    end
end
