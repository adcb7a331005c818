-- Linear warm-up over opts.warmup steps, then a cosine decay to 0 at opts.total steps (half a cycle)
-- diffusers src/diffusers/optimization.py get_cosine_schedule_with_warmup (Loshchilov & Hutter 2017, SGDR, without
-- restarts), under torch's LambdaLR: the rate at step s (0 for the first) is lr * lambda(s). Past total the cosine
-- goes on as diffusers' does (floored at 0). opts: lr, total, warmup (0), num_cycles (0.5).
-- kiri.lr_schedules.cosine(step, {lr =, warmup =, total =}) -> learning rate
local check = require "lib.check"
local training = require "lib.training"

---@type LRSchedule
return function(step, opts)
    local lr, warmup, total = training.lr_arguments("cosine", step, opts, true)
    local cycles = check.number(opts, "num_cycles", 0.5, 2, "cosine", "a number >= 0", function(value) return value >= 0 end)
    local ramp = training.warmup(step, warmup)
    if ramp then return lr * ramp end
    local progress = (step - warmup) / math.max(1, total - warmup)
    return lr * math.max(0.0, 0.5 * (1.0 + math.cos(math.pi * cycles * 2.0 * progress)))
end
