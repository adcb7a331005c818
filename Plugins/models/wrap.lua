-- A raw network (eps, v, x0, flow or EDM prediction) as a denoiser D(x, sigma, extra) -> denoised
-- k-diffusion k_diffusion/external.py: DiscreteSchedule (sigma_to_t, t_to_sigma), DiscreteEpsDDPMDenoiser
-- ("eps"), DiscreteVDDPMDenoiser ("v"); ComfyUI comfy/model_sampling.py X0 ("x0") and CONST with
-- ModelSamplingDiscreteFlow ("flow"); Karras et al. (2022), "Elucidating the Design Space of
-- Diffusion-Based Generative Models", Table 1 ("edm").
--
--   local D = kiri.models.wrap{network = fn, prediction = "eps", ...}
--   local denoised = D(x, sigma, extra)
--
-- The raw network is called as network(x_in, t, extra): x_in = c_in * x is the scaled input tensor,
-- t is a number, extra is passed through. D(x, sigma) = c_skip * x + c_out * network(c_in * x, t):
--
--   prediction  network returns          c_skip               c_out                 c_in           t
--   "eps"       the noise eps            1                    -sigma                1/sqrt(s2+d2)  discrete
--   "v"         v = alpha eps - s x0     d2/(s2+d2)           -sigma d/sqrt(s2+d2)  1/sqrt(s2+d2)  discrete
--   "x0"        the clean sample         0                    1                     1/sqrt(s2+d2)  discrete
--   "flow"      the velocity noise - x0  1                    -sigma                1              sigma * multiplier
--   "edm"       F of Karras Table 1      d2/(s2+d2)           sigma d/sqrt(s2+d2)   1/sqrt(s2+d2)  log(sigma) / 4
--
-- (s2 = sigma^2, d = sigma_data, d2 = d^2.) "discrete" is DiscreteSchedule.sigma_to_t: the fractional
-- training timestep whose sigma is `sigma`, interpolated in log sigma over the model's table, or the
-- nearest timestep with quantize = true. The table comes from alphas_cumprod= (a list or tensor, as
-- CompVis models keep it), sigmas= (the model's own sigma table), or beta options as in
-- kiri.schedules.discrete; the default is Stable Diffusion's scaled_linear 0.00085..0.012 over 1000.
-- Other options: sigma_data (1, and 0.5 for "edm"), multiplier (1000 for "flow"; Flux uses 1), and
-- timestep = function(sigma) -> t to replace the mapping. In "flow", x = (1 - sigma) x0 + sigma noise.
--
-- D is a callable table that also carries D.prediction, D.sigma_data, D.scalings(sigma) ->
-- c_skip, c_out, c_in, D.timestep(sigma) -> t, and for discrete predictions D.sigma_to_t(sigma,
-- quantize), D.t_to_sigma(t), D.sigma_min, D.sigma_max and D.sigmas (the table, timestep 0 first).
local schedule = require "lib.schedule"

local sqrt, log = math.sqrt, math.log

-- c_skip, c_out, c_in of each prediction type.
local preconditioning = {
    eps = function(sigma, data) return 1, -sigma, 1 / sqrt(sigma ^ 2 + data ^ 2) end,
    v = function(sigma, data)
        local total = sigma ^ 2 + data ^ 2
        return data ^ 2 / total, -sigma * data / sqrt(total), 1 / sqrt(total)
    end,
    x0 = function(sigma, data) return 0, 1, 1 / sqrt(sigma ^ 2 + data ^ 2) end,
    flow = function(sigma) return 1, -sigma, 1 end,
    edm = function(sigma, data)
        local total = sigma ^ 2 + data ^ 2
        return data ^ 2 / total, sigma * data / sqrt(total), 1 / sqrt(total)
    end,
}

local function discrete_timesteps(denoiser, opts)
    local model = schedule.model(opts)
    denoiser.sigmas, denoiser.sigma_min, denoiser.sigma_max = model.sigmas, model.sigma_min, model.sigma_max
    function denoiser.sigma_to_t(sigma, quantize)
        if quantize == nil then quantize = opts.quantize end
        return schedule.sigma_to_t(model.log_sigmas, sigma, quantize)
    end
    function denoiser.t_to_sigma(t) return schedule.t_to_sigma(model.log_sigmas, t) end
    return function(sigma) return denoiser.sigma_to_t(sigma) end
end

local function timestep_function(denoiser, opts)
    if opts.timestep ~= nil then return opts.timestep end
    if denoiser.prediction == "flow" then
        local multiplier = opts.multiplier or 1000
        return function(sigma) return sigma * multiplier end
    elseif denoiser.prediction == "edm" then
        return function(sigma) return log(sigma) / 4 end
    end
    return discrete_timesteps(denoiser, opts)
end

return function(opts)
    if type(opts) ~= "table" or type(opts.network) ~= "function" and type(opts.network) ~= "table" then
        error("wrap: a table with network = function(x_in, t, extra) expected", 2)
    end
    local prediction = opts.prediction or "eps"
    local scalings = preconditioning[prediction]
    if not scalings then
        error(string.format("wrap: unknown prediction '%s' (eps, v, x0, flow or edm)", tostring(prediction)), 2)
    end
    local network = opts.network
    local denoiser = {prediction = prediction, sigma_data = opts.sigma_data or (prediction == "edm" and 0.5 or 1)}
    function denoiser.scalings(sigma) return scalings(sigma, denoiser.sigma_data) end
    denoiser.timestep = timestep_function(denoiser, opts)
    return setmetatable(denoiser, {
        __call = function(_, x, sigma, extra)
            if type(sigma) ~= "number" then sigma = sigma:item() end
            local c_skip, c_out, c_in = scalings(sigma, denoiser.sigma_data)
            local output = network(x * c_in, denoiser.timestep(sigma), extra) * c_out
            if c_skip == 0 then return output end
            return output:add_(x * c_skip)
        end,
    })
end
