-- Mean squared error and d loss / d prediction, as torch.nn.functional.mse_loss (reduction "mean") and autograd
-- ATen aten/src/ATen/native/Loss.cpp mse_loss and mse_loss_backward (grad = 2/N (prediction - target)); with
-- opts.weights (one per sample) diffusers' weighting, examples/text_to_image/train_text_to_image.py:
-- F.mse_loss(reduction="none").mean(dim=[1, ...]) * weights, then .mean(). See lib.training's loss_terms.
-- kiri.losses.mse(prediction, target [, {weights =}]) -> loss (a number), grad (prediction's shape)
local training = require "lib.training"

---@type Loss
return function(prediction, target, opts)
    local difference, scale, weights = training.loss_terms("mse", prediction, target, opts)
    return training.reduce(difference:square(), weights), difference * (scale * 2)
end
