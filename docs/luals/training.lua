---@meta
-- LuaLS declarations of Kiri's training API: kiri.models.create, the trainable model it and
-- kiri.models.load(path, {train = true}) return, kiri.optim, kiri.save_tensors and kiri.load_tensors
-- (Sources/Kiri/Bindings/TrainingLibrary.swift, Preludes/training.lua).

---A diffusers config.json as a table: string keys; strings, numbers, booleans and lists of them.
---@alias ModelConfig table<string, string|number|boolean|(string|number|boolean)[]>

---@class ModelCreateOptions
---@field seed? integer the initialisation's seed, at least 0 (default 0)
---@field scheduler? ModelConfig|string the scheduler config or its scheduler_config.json (default: DDPMScheduler's defaults)

---One of a trainable model's parameters: the engine's own tensors, not copies.
---@class Parameter
---@field name string the checkpoint key, e.g. "conv_in.weight"
---@field value Tensor the weight: writing it changes the network
---@field grad Tensor its gradient, which m:backward adds to and the optimizer reads

---A network being trained (kiri.models.create, kiri.models.load(path, {train = true})), its parameters in float32.
---Freed by m:close() (with its optimizers and EMAs), at the end of a `local m <close> = ...` scope, or with the run.
---@class TrainableModel
---@field info ModelInfo as a loaded model's (dtype "F32")
---@field sample_shape Shape one sample's {C, h, w} at the config's sample_size
local TrainableModel = {}

---The network's output, as Model:forward, keeping what the next m:backward needs.
---@param x Tensor [batch, in_channels, height, width]
---@param t number|number[]|Tensor one (fractional) timestep, or one per sample
---@param extra? Extra only `class` and `context`
---@return Tensor
function TrainableModel:forward(x, t, extra) end

---The gradients of sum(output * grad) for the forward just before: every parameter's added to its grad, x's and
---the context's (nil without one) returned. Each forward serves one backward.
---@param grad Tensor the output's shape
---@return Tensor dx
---@return Tensor? dcontext
function TrainableModel:backward(grad) end

---Every parameter, by checkpoint key, in diffusers' named_parameters() order.
---@return Parameter[]
function TrainableModel:parameters() end

---Sets every gradient to 0.
function TrainableModel:zero_grad() end

---Gradient checkpointing (diffusers' enable_gradient_checkpointing), from the next forward: a forward keeps only the
---input of each ResNet with its attention and of each resampler, and backward runs that block again just before its
---own backward. Activation memory falls to a fraction for about a third more time per step; the gradients are the same
---to the bit. `false` turns it off.
---@param enabled? boolean default true
function TrainableModel:gradient_checkpointing(enabled) end

---Writes diffusers' layout under the output folder: config.json, diffusion_pytorch_model.safetensors (float32, or
---opts.dtype "f16" or "bf16") and scheduler_config.json, which kiri.models.load and diffusers' from_pretrained read.
---A folder that holds a saved model already is kept, and the model goes to `folder-2`, ... unless the run may
---overwrite.
---@param folder string
---@param opts? {dtype?: "f32"|"f16"|"bf16"}
---@return string path the weights file written
function TrainableModel:save(folder, opts) end

---A denoiser over the weights as they are now (later steps do not change it), as Model:denoiser.
---@param opts? table
---@return Denoiser
function TrainableModel:denoiser(opts) end

---Frees the network now, and the optimizers and EMAs made over it.
function TrainableModel:close() end

---A new network of `config` (a table with `_class_name` "UNet2DModel" or "UNet2DConditionModel", or the path of a
---config.json), its parameters drawn from `opts.seed` as torch.nn initialises them.
---@param config ModelConfig|string
---@param opts? ModelCreateOptions
---@return TrainableModel
function kiri.models.create(config, opts) end

---@class AdamWOptions
---@field lr? number learning rate, at least 0 (1e-3)
---@field betas? number[] {beta1, beta2}, each in [0, 1) ({0.9, 0.999})
---@field eps? number at least 0 (1e-8)
---@field weight_decay? number decoupled, at least 0 (1e-2)

---An optimizer's state: the steps taken and its moments, the optimizer's own tensors.
---@class AdamWState
---@field step integer
---@field tensors table<string, Tensor> `exp_avg/NAME` and `exp_avg_sq/NAME` for each parameter NAME

---torch.optim.AdamW over a trainable model's parameters (kiri.optim.adamw).
---@class AdamW
local AdamW = {}

---One step from the parameters' gradients, at `lr` from now on when given.
---@param lr? number at least 0
---@return integer steps the steps taken
function AdamW:step(lr) end

---@return AdamWState
function AdamW:state() end

---Continues from a saved state: every moment copied in, the step count set.
---@param state AdamWState
function AdamW:load_state(state) end

---An exponential moving average of a trainable model's parameters (kiri.optim.ema).
---@class EMA
local EMA = {}

---average -= (1 - decay) * (average - parameter), for every parameter.
function EMA:update() end

---Writes the averages into the model's parameters.
function EMA:copy_to() end

---The averages, the EMA's own tensors: `ema/NAME` for each parameter NAME.
---@return table<string, Tensor>
function EMA:state() end

---Copies saved averages in.
---@param tensors table<string, Tensor> with every `ema/NAME` key; others are ignored
function EMA:load_state(tensors) end

---kiri.optim: optimizers for trainable models.
---@class kiri.optim
kiri.optim = {}

---torch.optim.AdamW over m's parameters.
---@param m TrainableModel
---@param opts? AdamWOptions
---@return AdamW
function kiri.optim.adamw(m, opts) end

---An EMA of m's parameters at a fixed decay (diffusers' EMAModel), starting at their values.
---@param m TrainableModel
---@param decay number in [0, 1]
---@return EMA
function kiri.optim.ema(m, decay) end

---torch.nn.utils.clip_grad_norm_: scales m's gradients so that their total 2-norm is at most max_norm.
---@param m TrainableModel
---@param max_norm number above 0
---@return number norm the total norm before clipping
function kiri.optim.clip_grad_norm(m, max_norm) end

---Writes named tensors as a float32 safetensors file under the output folder, with string metadata.
---@param path string
---@param tensors table<string, Tensor>
---@param metadata? table<string, string>
---@return string path the path written
function kiri.save_tensors(path, tensors, metadata) end

---A safetensors file's tensors, as float32, and its metadata.
---@param path string
---@return table<string, Tensor> tensors
---@return table<string, string> metadata
function kiri.load_tensors(path) end
