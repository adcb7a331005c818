-- A constant learning rate after an optional linear warm-up from 0 over opts.warmup steps
-- diffusers src/diffusers/optimization.py get_constant_schedule_with_warmup (get_constant_schedule for warmup 0),
-- under torch's LambdaLR: the rate at step s (0 for the first optimiser step) is lr * lambda(s).
-- kiri.lr_schedules.constant(step, {lr =, warmup = 0}) -> learning rate
local training = require "lib.training"

---@type LRSchedule
return function(step, opts)
    local lr, warmup = training.lr_arguments("constant", step, opts)
    return lr * (training.warmup(step, warmup) or 1.0)
end
