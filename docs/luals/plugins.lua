---@meta
-- LuaLS declarations of the plugin signatures (Plugins/README.md) and of the bundled plugins by domain. A plugin
-- file `DOMAIN/NAME.lua` returns one function; `kiri.DOMAIN.NAME` finds it by file name. Annotate a plugin of
-- your own with its type, e.g. `---@type Sampler` above `return function(model, x, sigmas, opts)`.

-- Samplers ----------------------------------------------------------------------------------------

---What a sampler's callback gets after each model call.
---@class StepInfo
---@field i integer the 1-based step: sigma == sigmas[i]
---@field steps integer the step count (#sigmas - 1)
---@field x Tensor
---@field sigma number
---@field sigma_hat number sigma after churn
---@field denoised Tensor

---Noise for ancestral and SDE samplers: N(0, I) shaped like x, for the step sigma -> sigma_next.
---@alias NoiseSampler fun(sigma: number, sigma_next: number): Tensor

---@class SamplerOptions
---@field extra? Extra passed to the model
---@field callback? fun(info: StepInfo): "stop"|nil returning "stop" ends the run with that step's denoised
---@field eta? number ancestral noise scale
---@field s_noise? number
---@field seed? integer|integer[] for the noise of ancestral and SDE samplers; a list gives each sample its own
---@field s_churn? number
---@field s_tmin? number
---@field s_tmax? number
---@field noise_sampler? NoiseSampler replaces the default noise
---@field [string] any options of one sampler (order, rtol, solver_type, variant, ...)

---`x = sampler(model, x, sigmas, opts)`: from x at sigmas[1] down to sigmas[#sigmas] (0).
---@alias Sampler fun(model: Denoiser|DenoiserFunction, x: Tensor, sigmas: Tensor|number[], opts?: SamplerOptions): Tensor

---@class kiri.samplers
---@field ddim Sampler
---@field ddpm Sampler
---@field deis Sampler
---@field dpm_2 Sampler
---@field dpm_2_ancestral Sampler
---@field dpm_adaptive Sampler
---@field dpm_fast Sampler
---@field dpmpp_2m Sampler
---@field dpmpp_2m_cfg_pp Sampler
---@field dpmpp_2m_sde Sampler
---@field dpmpp_2s_ancestral Sampler
---@field dpmpp_3m_sde Sampler
---@field dpmpp_sde Sampler
---@field er_sde Sampler
---@field euler Sampler
---@field euler_ancestral Sampler
---@field euler_cfg_pp Sampler
---@field euler_flow Sampler
---@field heun Sampler
---@field heun_flow Sampler
---@field heunpp2 Sampler
---@field ipndm Sampler
---@field ipndm_v Sampler
---@field lcm Sampler
---@field lms Sampler
---@field res_multistep Sampler
---@field restart Sampler
---@field unipc Sampler
---@field unipc_bh2 Sampler
---@field [string] Sampler a user's `samplers/NAME.lua` or kiri.register'd sampler
kiri.samplers = {}

-- Schedules ---------------------------------------------------------------------------------------

---@class ScheduleOptions: ModelSchedule
---@field n integer the step count
---@field sigma_min? number
---@field sigma_max? number
---@field sigmas? number[]|Tensor the model's sigma table (a denoiser's D.sigmas)
---@field spacing? "leading"|"trailing"|"linspace"
---@field steps_offset? integer
---@field [string] any options of one schedule (rho, shift, alpha, beta, ...)

---`sigmas = schedule(opts)`: a 1-D tensor of n + 1 decreasing sigmas, the last one 0.
---@alias Schedule fun(opts: ScheduleOptions): Tensor

---@class kiri.schedules
---@field ays Schedule
---@field beta Schedule
---@field ddim_uniform Schedule
---@field discrete Schedule
---@field exponential Schedule
---@field flow Schedule
---@field karras Schedule
---@field kl_optimal Schedule
---@field laplace Schedule
---@field linear_quadratic Schedule
---@field normal Schedule
---@field polyexponential Schedule
---@field sgm_uniform Schedule
---@field simple Schedule
---@field vp Schedule
---@field [string] Schedule
kiri.schedules = {}

-- Guidance ----------------------------------------------------------------------------------------

---The table a guider hands its hooks at every model evaluation (one plain table per call).
---@class GuidanceArgs
---@field x Tensor
---@field sigma number
---@field step? integer given when the guider has its sigmas
---@field steps? integer
---@field scale number
---@field cond Extra this step's conditioning
---@field uncond Extra
---@field conds table<string, Extra> the patches' named conds
---@field cond_denoised Tensor
---@field uncond_denoised? Tensor
---@field conds_denoised table<string, Tensor>
---@field denoised? Tensor from the post_cfg hooks on

---@alias GuidanceHook fun(args: GuidanceArgs): Tensor

---A patch: hooks for a guider (kiri.guidance.cfg), applied in ComfyUI's model_options order.
---@class GuidancePatch
---@field scale? fun(args: GuidanceArgs): number
---@field pre_cfg? fun(args: GuidanceArgs): Tensor, Tensor returns cond_denoised, uncond_denoised
---@field cfg? GuidanceHook returns denoised; the last one given wins
---@field post_cfg? GuidanceHook returns denoised
---@field conds? table<string, Extra|string> named conditionings (or prompts) evaluated in the same batch
---@field keep_uncond? boolean

---A cond or uncond: an extra, or a prompt schedule (step, steps) -> an extra or a list of weighted parts.
---@alias GuiderCond Extra|fun(step: integer, steps: integer): (Extra|{extra: Extra, weight: number}[])

---@class GuiderOptions
---@field cond GuiderCond
---@field uncond? GuiderCond
---@field scale? number the guidance scale (1)
---@field sigmas? Tensor|number[] the sampler's schedule, for args.step and args.steps
---@field pre_cfg? fun(args: GuidanceArgs): Tensor, Tensor|(fun(args: GuidanceArgs): Tensor, Tensor)[]
---@field cfg? GuidanceHook
---@field post_cfg? GuidanceHook|GuidanceHook[]
---@field patches? GuidancePatch[]
---@field keep_uncond? boolean
---@field encode? fun(prompt: string): Extra for patches whose named conds are prompts

---A guidance plugin other than the guider: `kiri.guidance.NAME(opts) -> patch`.
---@alias GuidancePlugin fun(opts?: table): GuidancePatch

---@class kiri.guidance
---@field cfg fun(model: Denoiser|DenoiserFunction, opts: GuiderOptions): Denoiser the guider
---@field apg GuidancePlugin {eta, norm_threshold, momentum}
---@field cfg_pp fun(sampler: "euler"|"dpmpp_2m"): Sampler the CFG++ sampler of that name
---@field dual_cfg GuidancePlugin {middle, middle_scale, nested}
---@field dynamic_thresholding GuidancePlugin {ratio, max}
---@field interval GuidancePlugin {lo, hi}
---@field perp_neg GuidancePlugin {neg_scale, empty}
---@field rescale_cfg GuidancePlugin {multiplier, space, sigma_data}
---@field scale_schedule GuidancePlugin {shape, from, to}
---@field [string] GuidancePlugin
kiri.guidance = {}

-- Post-processing ---------------------------------------------------------------------------------

---Images in [0, 1] ([C, H, W] or [N, C, H, W]) to a new image tensor.
---@alias Post fun(image: Tensor, ...): Tensor

---@class GridOptions
---@field columns? integer for an [N, C, h, w] tensor
---@field row_labels? string[]
---@field column_labels? string[]
---@field title? string
---@field scale? integer
---@field text_scale? integer
---@field padding? integer
---@field background? number
---@field ink? number

---@class LevelsOptions
---@field in_black? number
---@field in_white? number
---@field gamma? number
---@field out_black? number
---@field out_white? number

---@class ResizeOptions
---@field width? integer
---@field height? integer
---@field mode? "nearest"|"bilinear"|"bicubic"|"lanczos"

---@class kiri.post
---@field clamp fun(image: Tensor, lo?: number, hi?: number): Tensor
---@field contrast fun(image: Tensor, factor: number): Tensor
---@field from_image fun(image: Tensor): Tensor [0, 1] to the model's [-1, 1]
---@field to_image fun(x: Tensor): Tensor the model's [-1, 1] to [0, 1], clamped
---@field grid fun(images: Tensor|Tensor[][], opts?: GridOptions): Tensor
---@field levels fun(image: Tensor, opts?: LevelsOptions): Tensor
---@field resize fun(image: Tensor, opts: ResizeOptions): Tensor
---@field sharpen fun(image: Tensor, opts?: {sigma?: number, amount?: number, threshold?: number}): Tensor
---@field upscale_nearest fun(image: Tensor, factor: integer): Tensor
---@field [string] Post
kiri.post = {}

-- Noise -------------------------------------------------------------------------------------------

---@class kiri.noise
---@field add fun(x0: Tensor, sigma: number, noise: Tensor): Tensor x0 + sigma * noise
---@field gaussian fun(x: Tensor, seed?: integer): NoiseSampler independent N(0, I) draws
---@field brownian_tree fun(x: Tensor, sigma_min: number, sigma_max: number, seed?: integer, transform?: function): NoiseSampler
---@field q_sample fun(x0: Tensor, t: integer, noise: Tensor, opts?: ModelSchedule): Tensor DDPM's q(x_t | x_0)
---@field [string] fun(...): any
kiri.noise = {}

-- Losses ------------------------------------------------------------------------------------------

---@class LossOptions
---@field weights? number[]|Tensor one weight per sample: each sample's mean loss is weighted, as diffusers does
---@field [string] any options of one loss (delta, snr, gamma, prediction_type, ...)

---`loss, grad = loss_fn(prediction, target, opts)`: the mean loss (a number) and d loss / d prediction.
---@alias Loss fun(prediction: Tensor, target: Tensor, opts?: LossOptions): number, Tensor

---@class MinSNROptions: LossOptions
---@field snr number[]|Tensor one SNR per sample (lib.training's snr(timesteps, alphas_cumprod))
---@field gamma? number (5)
---@field prediction_type? "epsilon"|"v_prediction"|"sample" (epsilon)

---@class kiri.losses
---@field mse Loss torch.nn.functional.mse_loss
---@field huber fun(prediction: Tensor, target: Tensor, opts?: {delta?: number, weights?: number[]|Tensor}): number, Tensor
---@field min_snr fun(prediction: Tensor, target: Tensor, opts: MinSNROptions): number, Tensor Min-SNR-gamma weighted MSE
---@field [string] Loss a user's `losses/NAME.lua` or kiri.register'd loss
kiri.losses = {}

-- Timestep samplers -------------------------------------------------------------------------------

---@class TimestepOptions: ModelSchedule
---@field num_train_timesteps? integer N (1000, or the length of alphas_cumprod)
---@field [string] any options of one sampler (mean, std, ...)

---`timesteps = sampler(batch, seed, opts)`: a list of `batch` integer timesteps in 0..N-1, the same for a seed.
---@alias TimestepSampler fun(batch: integer, seed?: integer, opts?: TimestepOptions): integer[]

---@class LogitNormalOptions: TimestepOptions
---@field mean? number (0)
---@field std? number (1)

---@class kiri.timesteps
---@field uniform TimestepSampler uniform on 0..N-1 (torch.randint)
---@field logit_normal fun(batch: integer, seed?: integer, opts?: LogitNormalOptions): integer[] SD3's logit-normal
---@field cosine TimestepSampler SD3's CosMap onto the model's table: noise levels as the cosine schedule's
---@field [string] TimestepSampler
kiri.timesteps = {}

-- Learning-rate schedules -------------------------------------------------------------------------

---@class LRScheduleOptions
---@field lr number the base rate
---@field warmup? integer steps of linear warm-up from 0 (0)
---@field total? integer the training steps (cosine)
---@field num_cycles? number cosine periods over total - warmup (0.5)

---`lr = schedule(step, opts)`: the rate at optimiser step `step`, 0 for the first (as torch's LambdaLR counts).
---@alias LRSchedule fun(step: integer, opts: LRScheduleOptions): number

---@class kiri.lr_schedules
---@field constant LRSchedule diffusers' get_constant_schedule_with_warmup
---@field cosine LRSchedule diffusers' get_cosine_schedule_with_warmup
---@field [string] LRSchedule
kiri.lr_schedules = {}
