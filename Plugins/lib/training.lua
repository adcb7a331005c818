-- Shared maths of the training policy: the forward process, prediction targets, SNR, noise offset, dropout
-- diffusers 0.42 src/diffusers/schedulers/scheduling_ddpm.py (DDPMScheduler.add_noise, get_velocity),
-- src/diffusers/training_utils.py (compute_snr) and examples/text_to_image/train_text_to_image.py (--noise_offset,
-- the per-sample loss weights of --snr_gamma), src/diffusers/optimization.py (the learning-rate warm-up). Where
-- diffusers keeps a value in float32 it is rounded with schedule.f32 here, so tensors agree bit for bit. Loss,
-- timestep and learning-rate plugins (Plugins/losses, timesteps, lr_schedules) `require "lib.training"`:
--
--   alphas_cumprod(opts)                          -> DDPM's alphas_cumprod list (lib.schedule's, float32 as diffusers)
--   add_noise(x0, noise, timesteps, alphas_cumprod)
--                                                 -> sqrt(acp_t) x0 + sqrt(1 - acp_t) noise, per sample
--   target(prediction_type, x0, noise, timesteps, alphas_cumprod)
--                                                 -> noise ("epsilon"), sqrt(acp_t) noise - sqrt(1 - acp_t) x0
--                                                    ("v_prediction") or x0 ("sample")
--   snr(timesteps, alphas_cumprod)                -> acp_t / (1 - acp_t) per sample, a list or a [B] tensor
--   offset_noise(noise, strength, seed)           -> noise + strength N(0, 1) of shape [B, C, 1, 1]
--   drop_labels(labels, probability, null_label, seed), drop_context(context, probability, null_context, seed)
--                                                 -> each sample's conditioning replaced by the null one with that
--                                                    probability; the same seed drops the same samples in both
--   loss_terms(name, prediction, target, opts, weights)
--                                                 -> prediction - target and the gradient scale of the mean
--   reduce(values, weights)                       -> the mean of elementwise loss values, weighted per sample
--   timestep_arguments(name, batch, seed, opts)   -> N, opts: a timestep sampler's arguments, checked
--   uniform(count, seed)                          -> a list of uniform draws in [0, 1) with 48 random bits each
--   lr_arguments(name, step, opts, needs_total)   -> lr, warmup, total, opts: a learning-rate schedule's, checked
--   warmup(step, warmup)                          -> step / max(1, warmup) below warmup, else nil
--
-- `timesteps` are 0-based training timesteps (integers 0..N-1) in a Lua list or a [B] tensor; `alphas_cumprod` a
-- list or a 1-D tensor of N values. Errors read like lauxlib's and blame the caller of the function they name.
local schedule = require "lib.schedule"
local check = require "lib.check"

local training = {}

local f32, format, sqrt, floor = schedule.f32, string.format, math.sqrt, math.floor

-- Raises "bad argument #position to 'name' (message)"; level 1 blames the function that calls fail, 2 its caller.
local function fail(level, position, name, message)
    error(format("bad argument #%d to '%s' (%s)", position, name, message), level + 1)
end

local function finite(value)
    return type(value) == "number" and value == value and value > -math.huge and value < math.huge
end

local function tensor_argument(level, value, position, name, what)
    if type(value) ~= "userdata" then
        fail(level + 1, position, name, format("%sTensor expected, got %s", what and what .. ": " or "", check.kind(value)))
    end
    return value
end

local function seed_argument(level, seed, position, name)
    if seed ~= nil and not (type(seed) == "number" and math.tointeger(seed)) then
        fail(level + 1, position, name, "seed must be an integer or nil, got " .. check.show(seed))
    end
    return seed
end

-- A Lua list of the finite numbers in a list or 1-D tensor.
local function numbers(level, values, position, name, what)
    if type(values) == "userdata" then
        if values:dim() ~= 1 then
            fail(level + 1, position, name,
                format("%s must be a list or a 1-D Tensor, got shape %s", what, check.shape_text(values:shape())))
        end
        values = values:totable()
    elseif type(values) ~= "table" then
        fail(level + 1, position, name, format("%s must be a list or a 1-D Tensor, got %s", what, check.kind(values)))
    end
    local list = {}
    for i = 1, #values do
        if not finite(values[i]) then
            fail(level + 1, position, name, format("%s[%d] must be a finite number, got %s", what, i, check.show(values[i])))
        end
        list[i] = values[i]
    end
    return list
end

-- alphas_cumprod as a list, rounded to float32 as diffusers casts it to the samples' dtype.
local function cumprod_argument(level, values, position, name)
    local list = numbers(level + 1, values, position, name, "alphas_cumprod")
    if #list == 0 then fail(level + 1, position, name, "alphas_cumprod is empty") end
    for i, alpha_bar in ipairs(list) do
        if alpha_bar < 0 or alpha_bar > 1 then
            fail(level + 1, position, name, format("alphas_cumprod[%d] must be in [0, 1], got %s", i, check.show(alpha_bar)))
        end
        list[i] = f32(alpha_bar)
    end
    return list
end

-- The timesteps as a list of integers 0..count-1; `batch`, when given, is how many there must be.
local function timestep_argument(level, timesteps, batch, count, position, name)
    local steps = numbers(level + 1, timesteps, position, name, "timesteps")
    if batch and #steps ~= batch then
        fail(level + 1, position, name, format("timesteps has %d values but the batch has %d samples", #steps, batch))
    end
    for i, t in ipairs(steps) do
        if t ~= floor(t) or t < 0 or t >= count then
            fail(level + 1, position, name,
                format("timesteps[%d] must be an integer from 0 to %d, got %s", i, count - 1, check.show(t)))
        end
        steps[i] = floor(t)
    end
    return steps
end

-- `values` (one per sample) as a [B, 1, ...] tensor that broadcasts over `like`.
local function per_sample(values, like)
    local shape = {#values}
    for i = 2, like:dim() do shape[i] = 1 end
    return kiri.tensor(values):reshape(shape)
end

local function same_shape(level, tensor, like, position, name, what, other)
    local shape, wanted = check.shape_text(tensor:shape()), check.shape_text(like:shape())
    if shape ~= wanted then
        fail(level + 1, position, name, format("%s shape %s does not match %s shape %s", what, shape, other, wanted))
    end
end

-- The checked arguments of add_noise and target (numbered from `first`) and each sample's sqrt(acp_t) and
-- sqrt(1 - acp_t) as [B, 1, ...] tensors, in float32 as DDPMScheduler.add_noise computes them.
local function forward_terms(level, name, first, x0, noise, timesteps, alphas_cumprod)
    tensor_argument(level + 1, x0, first, name)
    tensor_argument(level + 1, noise, first + 1, name)
    same_shape(level + 1, noise, x0, first + 1, name, "noise", "x0")
    if x0:dim() == 0 then fail(level + 1, first, name, "x0 must have a batch dimension, got a rank-0 Tensor") end
    local table_ = cumprod_argument(level + 1, alphas_cumprod, first + 3, name)
    local steps = timestep_argument(level + 1, timesteps, x0:size(1), #table_, first + 2, name)
    local roots, complements = {}, {}
    for i, t in ipairs(steps) do
        local alpha_bar = table_[t + 1]
        roots[i], complements[i] = f32(sqrt(alpha_bar)), f32(sqrt(f32(1 - alpha_bar)))
    end
    return per_sample(roots, x0), per_sample(complements, x0)
end

-- Forward process and targets -------------------------------------------------------------------------------

-- DDPM's alphas_cumprod from kiri.schedules.discrete's options (opts.alphas_cumprod, or beta_schedule, beta_start,
-- beta_end, num_train_timesteps, rescale_zero_snr; default Stable Diffusion's), float32 as diffusers keeps it.
function training.alphas_cumprod(opts)
    if opts ~= nil and type(opts) ~= "table" then fail(2, 1, "alphas_cumprod", "table expected, got " .. check.kind(opts)) end
    local list = schedule.alphas_cumprod(opts or {}, f32)
    for i, alpha_bar in ipairs(list) do list[i] = f32(alpha_bar) end
    return list
end

-- DDPMScheduler.add_noise: x_t = sqrt(acp_t) x0 + sqrt(1 - acp_t) noise (Ho et al. 2020, eq. 4).
function training.add_noise(x0, noise, timesteps, alphas_cumprod)
    local root, complement = forward_terms(2, "add_noise", 1, x0, noise, timesteps, alphas_cumprod)
    return root * x0 + complement * noise
end

-- What the network learns to predict: the noise, the velocity (DDPMScheduler.get_velocity; Salimans & Ho 2022,
-- "Progressive Distillation", v = sqrt(acp) eps - sqrt(1 - acp) x0) or the clean sample. timesteps and
-- alphas_cumprod are needed for "v_prediction" only.
function training.target(prediction_type, x0, noise, timesteps, alphas_cumprod)
    if prediction_type == "v_prediction" then
        local root, complement = forward_terms(2, "target", 2, x0, noise, timesteps, alphas_cumprod)
        return root * noise - complement * x0
    end
    if prediction_type ~= "epsilon" and prediction_type ~= "sample" then
        fail(2, 1, "target", "prediction_type must be 'epsilon', 'v_prediction' or 'sample', got " ..
            check.show(prediction_type))
    end
    tensor_argument(2, x0, 2, "target")
    tensor_argument(2, noise, 3, "target")
    same_shape(2, noise, x0, 3, "target", "noise", "x0")
    return prediction_type == "epsilon" and noise or x0
end

-- compute_snr: (sqrt(acp_t) / sqrt(1 - acp_t))^2 per sample, each step in float32 as diffusers computes it. A list
-- for a list of timesteps, a [B] tensor for a tensor.
function training.snr(timesteps, alphas_cumprod)
    local table_ = cumprod_argument(2, alphas_cumprod, 2, "snr")
    local ratios = {}
    for i, t in ipairs(timestep_argument(2, timesteps, nil, #table_, 1, "snr")) do
        local alpha_bar = table_[t + 1]
        local ratio = f32(f32(sqrt(alpha_bar)) / f32(sqrt(f32(1 - alpha_bar))))
        ratios[i] = f32(ratio * ratio)
    end
    if type(timesteps) == "userdata" then return kiri.tensor(ratios) end
    return ratios
end

-- Cross Labs' "noise offset" (Guttenberg 2023, "Diffusion with Offset Noise"), as train_text_to_image.py's
-- --noise_offset adds it: noise + strength * randn([B, C, 1, 1]), one offset per sample and channel.
function training.offset_noise(noise, strength, seed)
    tensor_argument(2, noise, 1, "offset_noise")
    if noise:dim() < 2 then
        fail(2, 1, "offset_noise", "noise [B, C, ...] expected, got shape " .. check.shape_text(noise:shape()))
    end
    if not finite(strength) or strength < 0 then
        fail(2, 2, "offset_noise", "strength must be a number >= 0, got " .. check.show(strength))
    end
    seed_argument(2, seed, 3, "offset_noise")
    local shape = {noise:size(1), noise:size(2)}
    for i = 3, noise:dim() do shape[i] = 1 end
    return noise + kiri.randn(shape, seed) * strength
end

-- Conditioning dropout ---------------------------------------------------------------------------------------

-- Which of `count` samples to drop: draw i of kiri.rand(seed) below `probability`, so 0 drops none and 1 all.
local function dropped(level, name, count, probability, seed)
    if not finite(probability) or probability < 0 or probability > 1 then
        fail(level + 1, 2, name, "probability must be a number from 0 to 1, got " .. check.show(probability))
    end
    seed_argument(level + 1, seed, 4, name)
    local drop = {}
    if count == 0 then return drop end
    for i, u in ipairs(kiri.rand({count}, seed):totable()) do drop[i] = u < probability end
    return drop
end

-- Classifier-free guidance's conditioning dropout (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance",
-- Algorithm 1: c <- null with probability p_uncond) for class labels: a list (or a [B] tensor) of labels.
function training.drop_labels(labels, probability, null_label, seed)
    local list = numbers(2, labels, 1, "drop_labels", "labels")
    if not finite(null_label) then
        fail(2, 3, "drop_labels", "null_label must be a number, got " .. check.show(null_label))
    end
    for i, drop in ipairs(dropped(2, "drop_labels", #list, probability, seed)) do
        if drop then list[i] = null_label end
    end
    if type(labels) == "userdata" then return kiri.tensor(list) end
    return list
end

-- The same for prompt embeddings: the rows of context [B, ...] replaced by null_context (one sample's shape,
-- with or without a leading 1), as diffusers' train_instruct_pix2pix.py drops encoder_hidden_states.
function training.drop_context(context, probability, null_context, seed)
    tensor_argument(2, context, 1, "drop_context")
    tensor_argument(2, null_context, 3, "drop_context")
    if context:dim() < 2 then
        fail(2, 1, "drop_context", "context [B, ...] expected, got shape " .. check.shape_text(context:shape()))
    end
    local row, null_shape = context:shape(), null_context:shape()
    row[1] = 1
    if #null_shape == #row - 1 then table.insert(null_shape, 1, 1) end
    if check.shape_text(null_shape) ~= check.shape_text(row) then
        fail(2, 3, "drop_context", format("null_context must have one sample's shape %s, got %s",
            check.shape_text({table.unpack(row, 2)}), check.shape_text(null_context:shape())))
    end
    local mask = {}
    for i, drop in ipairs(dropped(2, "drop_context", context:size(1), probability, seed)) do mask[i] = drop and 1 or 0 end
    return kiri.where(per_sample(mask, context), null_context:reshape(null_shape), context)
end

-- Losses ------------------------------------------------------------------------------------------------------

-- The part every loss plugin `name(prediction, target, opts)` shares: its arguments checked (blaming the plugin's
-- caller), then prediction - target, the scale of d loss / d element, and the weights. Without weights the loss is
-- the plain mean and the scale f32(1/N), ATen's norm for reduction "mean". With per-sample weights w (opts.weights,
-- a list or [B] tensor, times `weights` when a plugin gives its own) the loss is diffusers'
-- `loss(reduction="none").mean(dim=[1, ...]) * w` then `.mean()`, and the scale a [B, 1, ...] tensor of
-- ((1/B) w_b) / M, M the elements per sample: each step rounded to float32 as autograd rounds it.
function training.loss_terms(name, prediction, target, opts, weights)
    tensor_argument(3, prediction, 1, name)
    tensor_argument(3, target, 2, name)
    same_shape(3, target, prediction, 2, name, "target", "prediction")
    if opts ~= nil and type(opts) ~= "table" then fail(3, 3, name, "table expected, got " .. check.kind(opts)) end
    if prediction:dim() == 0 or prediction:numel() == 0 then
        fail(3, 1, name, "prediction must have a batch dimension and elements, got shape " ..
            check.shape_text(prediction:shape()))
    end
    local batch, count = prediction:size(1), prediction:numel()
    local given = opts and opts.weights
    if given ~= nil then
        local list = numbers(3, given, 3, name, "weights")
        if #list ~= batch then
            fail(3, 3, name, format("weights has %d values but the batch has %d samples", #list, batch))
        end
        for b = 1, batch do list[b] = f32(weights and list[b] * weights[b] or list[b]) end
        weights = list
    end
    local difference = prediction - target
    if not weights then return difference, f32(1 / count), nil end
    local share, scales = f32(1 / batch), {}
    for b = 1, batch do scales[b] = f32(f32(share * weights[b]) / (count // batch)) end
    return difference, per_sample(scales, prediction), weights
end

-- The loss value: the mean of the elementwise loss `values` [B, ...], each sample's weighted by weights[b] when
-- given, accumulated in double (torch sums in float32, so the two agree to float32 precision).
function training.reduce(values, weights)
    if not weights then return values:sum() / values:numel() end
    local total = 0
    for b = 1, values:size(1) do total = total + weights[b] * values:narrow(1, b, 1):sum() end
    return total / values:numel()
end

-- Timestep samplers -----------------------------------------------------------------------------------------

-- A timestep sampler's `name(batch, seed, opts)` checked, blaming its caller: batch a positive integer, seed an
-- integer or nil (the run's stream), opts a table or nil. N is opts.num_train_timesteps, else the length of
-- opts.alphas_cumprod, else 1000.
function training.timestep_arguments(name, batch, seed, opts)
    if not (type(batch) == "number" and math.tointeger(batch) and batch >= 1) then
        fail(3, 1, name, "batch must be a positive integer, got " .. check.show(batch))
    end
    seed_argument(3, seed, 2, name)
    if opts ~= nil and type(opts) ~= "table" then fail(3, 3, name, "table expected, got " .. check.kind(opts)) end
    opts = opts or {}
    local count = opts.num_train_timesteps
    local table_ = opts.alphas_cumprod
    if count ~= nil and not (type(count) == "number" and math.tointeger(count) and count >= 1) then
        fail(3, 3, name, "num_train_timesteps must be a positive integer, got " .. check.show(count))
    end
    if table_ ~= nil and count ~= nil and #table_ ~= count then
        fail(3, 3, name, format("alphas_cumprod has %d values but num_train_timesteps is %d", #table_, count))
    end
    return math.tointeger(count) or (table_ and #table_) or 1000, opts
end

-- `count` draws uniform in [0, 1), each from two float32 draws of kiri.rand (24 bits each): 48 bits, so mapping
-- them onto N timesteps is uniform to about N / 2^48.
function training.uniform(count, seed)
    local bits, draws = kiri.rand({2 * count}, seed):totable(), {}
    for i = 1, count do draws[i] = bits[2 * i - 1] + bits[2 * i] * 2 ^ -24 end
    return draws
end

-- Learning-rate schedules -----------------------------------------------------------------------------------

-- A learning-rate schedule's `name(step, opts)` checked, blaming its caller: step an integer >= 0 (0 for the first
-- optimiser step, as LambdaLR counts), opts.lr >= 0, opts.warmup an integer >= 0 (default 0) and, when
-- `needs_total`, opts.total a positive integer no smaller than warmup.
function training.lr_arguments(name, step, opts, needs_total)
    if not (type(step) == "number" and math.tointeger(step) and step >= 0) then
        fail(3, 1, name, "step must be an integer >= 0, got " .. check.show(step))
    end
    if type(opts) ~= "table" then fail(3, 2, name, "table with lr expected, got " .. check.kind(opts)) end
    if not finite(opts.lr) or opts.lr < 0 then fail(3, 2, name, "lr must be a number >= 0, got " .. check.show(opts.lr)) end
    local warmup, total = opts.warmup or 0, opts.total
    if not (type(warmup) == "number" and math.tointeger(warmup) and warmup >= 0) then
        fail(3, 2, name, "warmup must be an integer >= 0, got " .. check.show(warmup))
    end
    if needs_total then
        if not (type(total) == "number" and math.tointeger(total) and total >= 1) then
            fail(3, 2, name, "total must be a positive integer (the number of training steps), got " .. check.show(total))
        end
        if warmup > total then fail(3, 2, name, format("warmup (%d) must be at most total (%d)", warmup, total)) end
    end
    return opts.lr, warmup, total, opts
end

-- diffusers optimization.py's warm-up, shared by its schedules: float(step) / float(max(1, warmup)) while step <
-- warmup; nil after it.
function training.warmup(step, warmup)
    if step < warmup then return step / math.max(1, warmup) end
end

return training
