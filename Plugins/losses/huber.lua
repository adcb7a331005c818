-- Huber loss: 0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta), d = prediction - target, and its gradient
-- torch.nn.functional.huber_loss (reduction "mean"; Huber 1964), ATen aten/src/ATen/native/cpu/PointwiseOpsKernel.cpp
-- huber_backward_cpu_kernel: norm d inside delta, norm delta sign(d) outside. opts.delta (1.0) and opts.weights
-- (one per sample, diffusers' weighting as in lib.training's loss_terms).
-- kiri.losses.huber(prediction, target [, {delta =, weights =}]) -> loss (a number), grad (prediction's shape)
local check = require "lib.check"
local schedule = require "lib.schedule"
local training = require "lib.training"

---@type Loss
return function(prediction, target, opts)
    local difference, scale, weights = training.loss_terms("huber", prediction, target, opts)
    local delta = schedule.f32(check.number(opts or {}, "delta", 1.0, 3, "huber", "a positive number",
        function(value) return value > 0 end))
    local size = difference:abs()
    local inside = size:lt(delta)
    local loss = training.reduce(kiri.where(inside, size:square() * 0.5, (size - 0.5 * delta) * delta), weights)
    return loss, kiri.where(inside, difference * scale, difference:sign() * (scale * delta))
end
