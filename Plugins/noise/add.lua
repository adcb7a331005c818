-- Forward process of a variance-exploding (k-diffusion) model: x = x0 + sigma * noise
-- k-diffusion's noised input (k_diffusion/layers.py Denoiser.loss: input + noise * sigma); diffusers
-- EulerDiscreteScheduler.add_noise does the same. kiri.noise.add(x0, sigma, noise), sigma a number.
return function(x0, sigma, noise)
    if type(sigma) ~= "number" then
        error(string.format("bad argument #2 to 'add' (number expected, got %s)", type(sigma)), 2)
    end
    return x0 + noise * sigma
end
