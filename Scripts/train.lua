-- Trains a diffusers UNet on a data set: noise a batch to random timesteps, predict the noise (or v, or x0), step
-- AdamW on the loss (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", algorithm 1; diffusers'
-- examples/unconditional_image_generation/train_unconditional.py and its EMA, clipping and lr schedule).
-- Usage: kiri run Scripts/train.lua [data=fashion_mnist|FOLDER] [steps=2500] [batch=128] [key=value ...]   (or kiri train)
-- data: fashion_mnist (Debian's dataset-fashion-mnist, class-conditional) or a folder of PNGs (subfolders are
-- classes). config: a UNet config.json (default: Kiri's default model's architecture, sized to the data); init: a
-- model folder to start from instead. The policy is plugins: loss (mse, huber, min_snr), timesteps (uniform,
-- logit_normal, cosine), lr_schedule (constant, cosine); cond_dropout drops class labels for classifier-free
-- guidance; noise_offset adds per-channel offsets to the noise; gradient_checkpointing=true trades time for memory.
-- Writes under out/: checkpoint-NNNNNN/ every checkpoint_every steps (model/, the EMA's model_ema/, state.safetensors,
-- loss.csv), samples-NNNNNN.png every sample_every steps (EMA weights), and at the end model/ (the EMA weights, a
-- model kiri.models.load and diffusers load), loss.csv and loss.png. resume=out/checkpoint-NNNNNN continues a run
-- bit for bit: every random draw comes from (seed, step).
local recipe = require "lib.recipe"
local training = require "lib.training"

local format = string.format

local p = recipe.params(arg, {
    data = "fashion_mnist", size = 0, channels = 0, flip = false, config = "", init = "", resume = "",
    steps = 2500, batch = 128, lr = 1e-3, weight_decay = 1e-2, clip = 1.0, ema = 0.998, warmup = 0,
    lr_schedule = "constant", prediction = "v_prediction", loss = "mse", snr_gamma = 5.0, timesteps = "uniform",
    noise_offset = 0.0, cond_dropout = 0.15, seed = 1234, checkpoint_every = 500, sample_every = 500, log_every = 50,
    sample_steps = 20, sample_cfg = 4.0, gradient_checkpointing = false, out = "train",
}, {batch = {least = 1, most = 65536}, steps = {least = 1}})
for _, key in ipairs({"steps", "batch", "checkpoint_every", "sample_every", "log_every", "sample_steps"}) do
    if math.type(p[key]) ~= "integer" or p[key] < 1 then
        recipe.input_error(format("%s=%s: %s must be a whole number at least 1", key, tostring(p[key]), key))
    end
end
if p.cond_dropout < 0 or p.cond_dropout > 1 then recipe.input_error("cond_dropout must be from 0 to 1") end

-- The data: images [N, C, H, W] in [-1, 1] and labels (nil for an unlabelled folder).
local data
if p.data == "fashion_mnist" then
    data = kiri.data.fashion_mnist{split = "train", flip = p.flip}
else
    data = kiri.data.images(p.data, {size = p.size > 0 and p.size or nil, channels = p.channels > 0 and p.channels or nil,
        flip = p.flip})
end
if p.batch > #data then recipe.input_error(format("batch=%d: the data set has only %d images", p.batch, #data)) end
local classes = data.classes and #data.classes or nil
local channels, height, width = data.shape[1], data.shape[2], data.shape[3]

-- The network: resumed, fine-tuned, or new (the default model's UNet2DModel, with a null class for guidance).
local scheduler = {_class_name = "DDPMScheduler", num_train_timesteps = 1000, beta_start = 1e-4, beta_end = 0.02,
    beta_schedule = "linear", prediction_type = p.prediction}
local m
if p.resume ~= "" and (p.config ~= "" or p.init ~= "") then
    recipe.input_error("resume= continues the checkpoint's own network; leave out config= and init=")
end
if p.resume ~= "" then
    m = kiri.models.load(p.resume .. "/model", {train = true})
elseif p.init ~= "" then
    m = kiri.models.load(p.init, {train = true})
else
    local config = p.config ~= "" and p.config or {
        _class_name = "UNet2DModel", sample_size = height, in_channels = channels, out_channels = channels,
        layers_per_block = 1, block_out_channels = {32, 64, 128},
        down_block_types = {"DownBlock2D", "DownBlock2D", "AttnDownBlock2D"},
        up_block_types = {"AttnUpBlock2D", "UpBlock2D", "UpBlock2D"}, attention_head_dim = 32, norm_num_groups = 16,
        num_class_embeds = classes and classes + 1 or nil,
    }
    m = kiri.models.create(config, {seed = p.seed, scheduler = scheduler})
end
if m.info.in_channels ~= channels then
    recipe.input_error(format("the model takes %d channels but the images have %d", m.info.in_channels, channels))
end
local null_class = m.info.num_class_embeds and m.info.num_class_embeds - 1
if null_class and not classes then
    recipe.input_error("the model is class-conditional but the data have no classes (subfolders)")
end
if classes and null_class and null_class < classes then
    recipe.input_error(format("the model knows %d classes and a null class, but the data have %d", null_class, classes))
end
m:gradient_checkpointing(p.gradient_checkpointing)
local prediction = ({eps = "epsilon", v = "v_prediction", x0 = "sample"})[m.info.prediction]
local alphas_cumprod = training.alphas_cumprod(m.info.schedule)

local opt = kiri.optim.adamw(m, {lr = p.lr, weight_decay = p.weight_decay})
local ema = kiri.optim.ema(m, p.ema)
local losses, first = {}, 0
if p.resume ~= "" then
    local state, meta = kiri.load_tensors(p.resume .. "/state.safetensors")
    first = math.tointeger(tonumber(meta.step)) or recipe.input_error("resume: state.safetensors has no step")
    if tonumber(meta.seed) ~= p.seed then
        recipe.input_error(format("resume: that run's seed was %s; give seed=%s to continue it", tostring(meta.seed),
            tostring(meta.seed)))
    end
    if first >= p.steps then
        recipe.input_error(format("resume: the checkpoint is at step %d already; give steps= above it", first))
    end
    local moments = {}
    for name, tensor in pairs(state) do if not name:find("^ema/") then moments[name] = tensor end end
    opt:load_state{step = first, tensors = moments}
    ema:load_state(state)
    local csv = kiri.read_text(p.resume .. "/loss.csv")
    local start = csv:find("\n", 1, true) + 1
    while start <= #csv do
        local stop = csv:find("\n", start, true) or #csv + 1
        local comma = csv:find(",", start, true)
        losses[#losses + 1] = tonumber(csv:sub(comma + 1, stop - 1))
        start = stop + 1
    end
end

-- Every random draw of step `step` from its own stream: `k` numbers the draws of a step.
local function stream(step, k) return (p.seed * 1000003 + step * 8 + k) % (1 << 52) end

-- `body()` with the EMA's weights in the model, then the model's own back.
local function with_ema(body)
    local saved = {}
    for i, parameter in ipairs(m:parameters()) do saved[i] = parameter.value:clone() end
    ema:copy_to()
    local result = body()
    for i, parameter in ipairs(m:parameters()) do parameter.value:copy_(saved[i]) end
    return result
end

local function loss_csv()
    local lines = {"step,loss"}
    for step, value in ipairs(losses) do lines[#lines + 1] = format("%d,%.9g", step - 1, value) end
    return table.concat(lines, "\n") .. "\n"
end

-- The loss curve as a plot: a light grid, the loss per step in grey and its running mean over 1% of the steps.
local function loss_plot()
    local w, h, margin = 640, 320, 8
    local pixels = {}
    for i = 1, w * h do pixels[i] = 1 end
    local low, high = math.huge, -math.huge
    for _, value in ipairs(losses) do low, high = math.min(low, value), math.max(high, value) end
    if high <= low then high = low + 1 end
    -- Each value a point, joined to the one before by a vertical run where they share a column or are adjacent.
    local function plot(values, shade)
        local last_x, last_y
        for i, value in ipairs(values) do
            local x = margin + math.floor((i - 1) / math.max(1, #values - 1) * (w - 2 * margin - 1))
            local y = h - margin - 1 - math.floor((value - low) / (high - low) * (h - 2 * margin - 1))
            local from, to = y, y
            if last_x and x - last_x <= 1 then from, to = math.min(y, last_y), math.max(y, last_y) end
            for row = from, to do pixels[row * w + x + 1] = math.min(pixels[row * w + x + 1], shade) end
            last_x, last_y = x, y
        end
    end
    for row = 0, 4 do
        local y = margin + math.floor(row / 4 * (h - 2 * margin - 1))
        for x = margin, w - margin - 1 do pixels[y * w + x + 1] = 0.9 end
    end
    plot(losses, 0.6)
    local window, smooth, total = math.max(1, #losses // 100), {}, 0
    for i, value in ipairs(losses) do
        total = total + value - (losses[i - window] or 0)
        smooth[i] = total / math.min(i, window)
    end
    plot(smooth, 0)
    return kiri.tensor(pixels):reshape(1, h, w)
end

-- One sample per class (16 without classes) from the EMA's weights: DPM++ 2M, Karras sigmas, CFG with the null class.
local function sample_grid(step)
    local denoiser = with_ema(function() return m:denoiser() end)
    local sigmas = kiri.schedules.karras{n = p.sample_steps, sigmas = denoiser.sigmas}
    local count = classes or 16
    local noise = kiri.randn({count, channels, height, width}, p.seed)
    local model = function(x, sigma) return denoiser(x, sigma) end
    if classes then
        local labels, nulls = {}, {}
        for i = 1, count do labels[i], nulls[i] = i - 1, null_class end
        model = function(x, sigma)
            local cond, uncond = denoiser(x, sigma, {class = labels}), denoiser(x, sigma, {class = nulls})
            return uncond + (cond - uncond) * p.sample_cfg
        end
    end
    local x = kiri.samplers.dpmpp_2m(model, noise * sigmas[1], sigmas)
    local images = ((x + 1) / 2):clamp(0, 1)
    local grid = kiri.post.grid(images, {columns = classes and math.min(count, 10) or 4,
        column_labels = classes and count <= 10 and data.classes or nil})
    return kiri.image.save(format("%s/samples-%06d.png", p.out, step), grid,
        {parameters = format("Training samples at step %d, %d steps DPM++ 2M Karras, CFG %s, seed %d", step, p.sample_steps,
            recipe.number_text(p.sample_cfg), p.seed)})
end

local function checkpoint(step)
    local folder = format("%s/checkpoint-%06d", p.out, step)
    m:save(folder .. "/model")
    with_ema(function() m:save(folder .. "/model_ema") end)
    local state = opt:state().tensors
    for name, tensor in pairs(ema:state()) do state[name] = tensor end
    kiri.save_tensors(folder .. "/state.safetensors", state, {step = tostring(step), seed = tostring(p.seed)})
    kiri.write_text(folder .. "/loss.csv", loss_csv())
    return folder
end

print(format("training %s on %d images of %dx%dx%d (%s), batch %d, steps %d..%d", tostring(m), #data, channels, height,
    width, classes and format("%d classes", classes) or "no classes", p.batch, first, p.steps - 1))
local started, last_checkpoint = kiri.clock(), nil
for step = first, p.steps - 1 do
    local images, labels = data:batch(p.batch, p.seed, step)
    local noise = kiri.randn(images:shape(), stream(step, 0))
    if p.noise_offset > 0 then noise = training.offset_noise(noise, p.noise_offset, stream(step, 1)) end
    local t = kiri.timesteps[p.timesteps](p.batch, stream(step, 2), {num_train_timesteps = #alphas_cumprod})
    local extra
    if null_class then
        extra = {class = training.drop_labels(labels, p.cond_dropout, null_class, stream(step, 3))}
    end
    local x_t = training.add_noise(images, noise, t, alphas_cumprod)
    local target = training.target(prediction, images, noise, t, alphas_cumprod)
    local predicted = m:forward(x_t, t, extra)
    local loss, grad = kiri.losses[p.loss](predicted, target, {snr = training.snr(t, alphas_cumprod), gamma = p.snr_gamma,
        prediction_type = prediction})
    if loss ~= loss or loss == math.huge then
        recipe.input_error(format("the loss is not finite at step %d; %s", step,
            last_checkpoint and "the last checkpoint with a finite loss is " .. last_checkpoint
                or "no checkpoint was written yet"))
    end
    losses[step + 1] = loss
    m:zero_grad()
    m:backward(grad)
    local norm = kiri.optim.clip_grad_norm(m, p.clip)
    local lr = kiri.lr_schedules[p.lr_schedule](step, {lr = p.lr, warmup = p.warmup, total = p.steps})
    opt:step(lr)
    ema:update()
    local done = step + 1
    kiri.progress(done, p.steps, format("loss %.4f", loss))
    if done % p.log_every == 0 or done == p.steps then
        local rate = (done - first) / (kiri.clock() - started)
        kiri.progress()
        print(format("step %d/%d  loss %.5f  grad norm %.3f  lr %.3g  %.2f it/s", done, p.steps, loss, norm, lr, rate))
    end
    if done % p.checkpoint_every == 0 and done < p.steps then last_checkpoint = checkpoint(done) end
    if done % p.sample_every == 0 or done == p.steps then sample_grid(done) end
end

checkpoint(p.steps)
-- Each path as written: a name already taken (a resumed run's second ending) gets the next free one.
local model = with_ema(function() return m:save(p.out .. "/model") end):match("^(.*)/")
local csv = kiri.write_text(p.out .. "/loss.csv", loss_csv())
local plot = kiri.image.save(p.out .. "/loss.png", loss_plot(),
    {parameters = format("Training loss, steps 0 to %d", p.steps - 1)})
print(format("wrote %s (EMA weights), %s and %s", model, csv, plot))
