-- Exact denoiser of an empirical data set: D(x, sigma) = E[x0 | x0 + sigma * n = x], x0 uniform on the samples
-- The data distribution (1/N) sum_i delta(x0 - s_i) is a Gaussian mixture with zero-std components at
-- the samples and equal weights, so this is kiri.models.gmm with stds 0 (Karras et al. 2022, eq. 57's
-- ideal denoiser for a finite training set). samples is an N x D tensor; x is M x D.
return function(options)
    local samples = options.samples
    local count = samples:shape()[1]
    return kiri.models.gmm{means = samples, stds = kiri.zeros({count}), weights = kiri.ones({count})}
end
