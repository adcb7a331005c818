-- Min-SNR-gamma weighting: MSE weighted per sample by min(SNR, gamma), over SNR for epsilon, SNR + 1 for v, 1 for x0
-- Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy" (the x0 weight and its eps and v forms),
-- as diffusers examples/text_to_image/train_text_to_image.py computes mse_loss_weights from compute_snr (float32).
-- opts: snr (one per sample: lib.training's snr(timesteps, alphas_cumprod)), gamma (5), prediction_type
-- ("epsilon", "v_prediction" or "sample"; default "epsilon"), weights (multiplied in). Then as kiri.losses.mse.
-- kiri.losses.min_snr(prediction, target, {snr =, gamma =, prediction_type =}) -> loss, grad
local check = require "lib.check"
local schedule = require "lib.schedule"
local training = require "lib.training"

local f32 = schedule.f32
local divisors = {
    epsilon = function(snr) return snr end,
    v_prediction = function(snr) return f32(snr + 1) end,
    sample = function() return 1 end,
}

---@type Loss
return function(prediction, target, opts)
    opts = check.options(opts, 3, "min_snr")
    local gamma = check.number(opts, "gamma", 5, 3, "min_snr", "a positive number", function(value) return value > 0 end)
    local kind = opts.prediction_type or "epsilon"
    if not divisors[kind] then
        check.fail(3, "min_snr", "prediction_type must be 'epsilon', 'v_prediction' or 'sample', got " .. check.show(kind), 3)
    end
    local snr = type(opts.snr) == "userdata" and opts.snr:totable() or opts.snr
    local batch = check.tensor(prediction, 1, "min_snr"):dim() > 0 and prediction:size(1) or 0
    if type(snr) ~= "table" or #snr ~= batch then
        check.fail(3, "min_snr", string.format("snr must hold one SNR per sample (%d), got %s", batch,
            type(snr) == "table" and #snr .. " values" or check.kind(snr)), 3)
    end
    local weights = {}
    for b, ratio in ipairs(snr) do
        if type(ratio) ~= "number" or not (ratio > 0 or ratio == 0 and kind ~= "epsilon") then
            check.fail(3, "min_snr", string.format("snr[%d] must be a number > 0 (>= 0 unless epsilon), got %s", b,
                check.show(ratio)), 3)
        end
        weights[b] = f32(math.min(ratio, f32(gamma)) / divisors[kind](ratio))   -- gamma is a float32 tensor there
    end
    local difference, scale, combined = training.loss_terms("min_snr", prediction, target, opts, weights)
    return training.reduce(difference:square(), combined), difference * (scale * 2)
end
