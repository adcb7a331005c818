---@meta
-- LuaLS declarations of Kiri's models: kiri.models.load and the model table it returns
-- (Sources/Kiri/Bindings/ModelLibrary.swift, Preludes/models.lua), the denoisers built from it, and the
-- `models/` plugins (Plugins/models).

---What a model is conditioned on: `{class = label}` for class-conditional models, `{context = Tensor}` for text
---models (what m:encode returns). Guiders also read `post_cfg` and `keep_uncond` from it.
---@class Extra
---@field class? number|number[]|Tensor class labels, 0 to num_class_embeds - 1: one, or one per sample
---@field context? Tensor [batch or 1, tokens, cross_attention_dim] encoder hidden states
---@field post_cfg? GuidanceHook[] the sampler's post_cfg hooks, run by a guider after its own
---@field keep_uncond? boolean ask a guider for the unconditional prediction even at scale 1

---A denoiser D(x, sigma, extra) -> denoised (k-diffusion's convention): a function, or a callable table.
---@alias DenoiserFunction fun(x: Tensor, sigma: number, extra?: Extra): Tensor

---A callable denoiser table, as kiri.models.wrap, m:denoiser() and kiri.guidance.cfg return it.
---@class Denoiser
---@overload fun(x: Tensor, sigma: number, extra?: Extra): Tensor
---@field prediction "eps"|"v"|"x0"|"flow"|"edm"
---@field sigma_data number
---@field sigmas? number[] the model's sigma table, timestep 0 first (discrete predictions)
---@field sigma_min? number
---@field sigma_max? number
---@field scalings fun(sigma: number): number, number, number c_skip, c_out, c_in
---@field timestep fun(sigma: number): number the network's t for sigma
---@field sigma_to_t? fun(sigma: number, quantize?: boolean): number
---@field t_to_sigma? fun(t: number): number

---The training noise schedule, in kiri.schedules.discrete's options.
---@class ModelSchedule
---@field beta_schedule? "linear"|"scaled_linear"|"squaredcos_cap_v2"
---@field beta_start? number
---@field beta_end? number
---@field num_train_timesteps? integer
---@field rescale_zero_snr? boolean
---@field alphas_cumprod? number[] for a scheduler config with trained_betas

---@class ModelInfo
---@field architecture string "sd1", "sd2", or the UNet's _class_name for a network alone
---@field parameters integer every component's
---@field dtype "F32"|"F16"|"BF16"
---@field prediction "eps"|"v"|"x0" as kiri.models.wrap names it
---@field prediction_type "epsilon"|"v_prediction"|"sample" the scheduler config's
---@field timestep_spacing? string
---@field steps_offset? integer
---@field sample_size? integer[] {height, width} in latent pixels
---@field in_channels integer
---@field out_channels integer
---@field num_class_embeds? integer
---@field cross_attention_dim? integer|integer[]
---@field schedule ModelSchedule

---A loaded model (kiri.models.load, kiri.models.default). Its memory is freed by m:close(), at the end of a
---`local m <close> = ...` scope, or with the run.
---@class Model
---@field info ModelInfo
---@field sample_shape Shape one sample's {C, h, w} at the model's default size (latents for a latent model)
---@field image_shape Shape the decoded image's {C, H, W} at that size
---@field classes? string[] the default model's ten class names, label 0 first
local Model = {}

---The raw network: x [batch, in_channels, height, width], t one (fractional) timestep or one per sample.
---@param x Tensor
---@param t number|number[]|Tensor
---@param extra? Extra only `class` and `context`
---@return Tensor
function Model:forward(x, t, extra) end

---kiri.models.wrap with this network, its prediction type and training schedule; `opts` (quantize, sigma_data,
---...) are passed on to wrap.
---@param opts? table
---@return Denoiser
function Model:denoiser(opts) end

---The conditioning of a prompt: `{context = [1, 77k, D]}` with A1111's emphasis, or `{class = label}` for the
---default model (the empty prompt is its null class).
---@param prompt string
---@param opts? {clip_skip?: integer}
---@return Extra
function Model:encode(prompt, opts) end

---A text model's token ids with the start and end tokens, no padding.
---@param text string
---@return integer[]
function Model:tokenize(text) end

---Samples [B, C, h, w] to images [B, 3, H, W] in about [-1, 1] (the identity for a pixel-space model).
---@param samples Tensor
---@return Tensor
function Model:decode(samples) end

---Images [B, C, H, W] in [-1, 1] to samples: the VAE posterior's mean times scaling_factor.
---@param images Tensor
---@return Tensor
function Model:encode_image(images) end

---The sample and image shapes for a width x height image (multiples of the VAE's factor).
---@param width? integer
---@param height? integer
---@return Shape sample_shape
---@return Shape image_shape
function Model:sample_shape_for(width, height) end

---Merges a LoRA file into the UNet and text encoder at `scale` (default 1), on top of those applied before.
---@param path string
---@param scale? number -100 to 100
function Model:apply_lora(path, scale) end

---A1111's short hash of the model's file (10 hex digits of its SHA-256), or nil for a folder.
---@return string?
function Model:hash() end

---Frees the model's weights now.
function Model:close() end

---@class ModelLoadOptions
---@field vae? string a VAE file to use instead of the model's own
---@field weights? "f32"|"f16"|"bf16"|"q8_0" the format every network keeps its weights in
---@field train? boolean true: the UNet alone, as a TrainableModel (training.lua)

---kiri.models: the loaders, and the `models/` plugins by file name (Plugins/models).
---@class kiri.models
---@field default fun(opts?: table): Model the model recipes use unless told otherwise (fashion_mnist)
---@field fashion_mnist fun(opts?: table): Model Kiri's bundled Fashion-MNIST model
---@field gaussian fun(opts: {mean?: number|Tensor, std?: number|Tensor}): DenoiserFunction exact denoiser of N(mean, std^2)
---@field gmm fun(opts: GmmOptions): DenoiserFunction exact denoiser of a Gaussian mixture
---@field dataset fun(opts: {samples: Tensor}): DenoiserFunction exact denoiser of an empirical data set
---@field inpaint fun(model: Denoiser|DenoiserFunction, opts: {image: Tensor, mask: Tensor, noise: Tensor}): Denoiser
---@field wrap fun(opts: WrapOptions): Denoiser a raw network as a denoiser
---@field [string] fun(...): any a user's `models/NAME.lua`
kiri.models = {}

---@class GmmOptions
---@field means Tensor K x D
---@field stds number[]|Tensor K
---@field weights? number[]|Tensor K (equal by default)

---@class WrapOptions: ModelSchedule
---@field network fun(x_in: Tensor, t: number, extra?: Extra): Tensor
---@field prediction? "eps"|"v"|"x0"|"flow"|"edm"
---@field sigma_data? number
---@field sigmas? number[]|Tensor the model's own sigma table
---@field quantize? boolean
---@field multiplier? number flow: t = sigma * multiplier (1000)
---@field timestep? fun(sigma: number): number

---A model: a folder (diffusers pipeline or UNet), a single .safetensors or .gguf checkpoint, `bundled:NAME`, or in a
---job of `kiri serve`, `served:NAME`.
---With `{train = true}`, the UNet of a diffusers folder, or a .safetensors file with its config.json, for training.
---@param path string
---@param opts? ModelLoadOptions
---@return Model
---@overload fun(path: string, opts: {train: true}): TrainableModel
function kiri.models.load(path, opts) end

---The path kiri.models.load knows a model shipped with Kiri by: `bundled:NAME`.
---@param name string
---@return string
function kiri.models.bundled(name) end
