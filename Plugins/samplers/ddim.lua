-- DDIM with opts.eta (default 0): the deterministic DDIM ODE step, or eta-scaled fresh noise as in DDPM
-- Song, Meng & Ermon (2021), "Denoising Diffusion Implicit Models", arXiv:2010.02502, eq. (12) and (16).
-- In k-diffusion's coordinates (x / sqrt(alpha_bar), sigma = sqrt((1 - alpha_bar) / alpha_bar)) eq. (12)
-- predicts x0 = denoised, points back along eps = (x - denoised) / sigma to
-- sqrt(sigma_next^2 - sigma_up^2) and adds sigma_up * noise, where eq. (16)'s sigma_t(eta) becomes
--     sigma_up = eta * sigma_next * sqrt(sigma^2 - sigma_next^2) / sigma,
-- which is k-diffusion's ancestral step: DDIM(eta) is euler_ancestral(eta) exactly, and DDIM(0) is Euler,
-- as in ComfyUI (comfy/samplers.py: sampler "ddim" = ksampler("euler")).
return function(model, x, sigmas, opts)
    opts = opts or {}
    local eta = opts.eta or 0
    if eta == 0 then return kiri.samplers.euler(model, x, sigmas, opts) end
    return kiri.samplers.euler_ancestral(model, x, sigmas, setmetatable({eta = eta}, {__index = opts}))
end
