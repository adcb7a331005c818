#!/usr/bin/env python3
"""Reference outputs for Kiri's guidance plugins (Plugins/guidance) and CFG++ samplers.

Writes guidance.json next to this file. Run it in a throwaway venv with torch and diffusers
(see ../sampling/README.md); CI never runs it. Everything is computed in float64.

Every case uses one toy denoiser, affine in x per class label k, so that Lua can rebuild it exactly:
    D(x, sigma, k) = x * w[k] / (1 + sigma) + b[k]            (w[k], b[k]: [C, H, W] tensors)
Labels: 0 cond, 1 uncond (negative), 2 empty prompt, 3 middle prompt (dual CFG), 4 second cond (AND).

Where a library has the function, the library computes the reference: diffusers' ClassifierFreeGuidance
(with guidance_rescale), normalized_guidance and MomentumBuffer (APG), DDPMScheduler._threshold_sample.
ComfyUI is not on PyPI; its functions are re-implemented below from the named file, in its own form
(the noise-space arguments of sampler_cfg_function, the v conversion of RescaleCFG), not Kiri's.
"""
import json
import math
import os
import platform

import diffusers
import numpy as np
import torch
from diffusers import DDPMScheduler
from diffusers.guiders import ClassifierFreeGuidance, ClassifierFreeZeroStarGuidance
from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer, normalized_guidance

torch.set_default_dtype(torch.float64)
HERE = os.path.dirname(os.path.abspath(__file__))
SHAPE = (2, 2, 3, 3)
rng = np.random.default_rng(20261126)
W = torch.tensor(rng.uniform(0.5, 1.5, size=(5,) + SHAPE[1:]))
B = torch.tensor(rng.normal(0.0, 0.6, size=(5,) + SHAPE[1:]))


def D(x, sigma, k):
    return x * W[k] / (1 + sigma) + B[k]


def x_at(seed, scale):
    return torch.tensor(np.random.default_rng(seed).normal(0.0, scale, size=SHAPE))


def flat(t):
    return [float(v) for v in t.reshape(-1)]


cases = {}
SCALE = 4.0


def case(name, **fields):
    cases[name] = {k: flat(v) if torch.is_tensor(v) else v for k, v in fields.items()}


# --- cfg with a negative prompt: diffusers ClassifierFreeGuidance (its default formulation) ---
x, sigma = x_at(1, 2.5), 2.5
cfg = ClassifierFreeGuidance(guidance_scale=SCALE)
case("cfg", x=x, sigma=sigma, scale=SCALE, expected=cfg.forward(D(x, sigma, 0), D(x, sigma, 1)).pred)

# --- rescale_cfg, eps space: diffusers' guidance_rescale on noise predictions ---
phi = 0.7
eps = lambda d: (x - d) / sigma
rescaled = ClassifierFreeGuidance(guidance_scale=SCALE, guidance_rescale=phi).forward(eps(D(x, sigma, 0)), eps(D(x, sigma, 1))).pred
case("rescale_cfg_eps", x=x, sigma=sigma, scale=SCALE, multiplier=phi, expected=x - rescaled * sigma)


# --- rescale_cfg, v space: ComfyUI comfy_extras/nodes_model_advanced.py RescaleCFG.patch.rescale_cfg ---
def comfy_rescale_cfg(args, multiplier):
    cond, uncond, cond_scale, sigma, x_orig = args["cond"], args["uncond"], args["cond_scale"], args["sigma"], args["input"]
    xs = x_orig / (sigma * sigma + 1.0)
    cond = ((xs - (x_orig - cond)) * (sigma ** 2 + 1.0) ** 0.5) / sigma
    uncond = ((xs - (x_orig - uncond)) * (sigma ** 2 + 1.0) ** 0.5) / sigma
    x_cfg = uncond + cond_scale * (cond - uncond)
    ro_pos = torch.std(cond, dim=(1, 2, 3), keepdim=True)
    ro_cfg = torch.std(x_cfg, dim=(1, 2, 3), keepdim=True)
    x_rescaled = x_cfg * (ro_pos / ro_cfg)
    x_final = multiplier * x_rescaled + (1.0 - multiplier) * x_cfg
    return x_orig - (xs - x_final * sigma / (sigma * sigma + 1.0) ** 0.5)


# comfy/samplers.py cfg_function: sampler_cfg_function gets noise-space cond/uncond, and the result is x - returned.
noise_args = {"cond": x - D(x, sigma, 0), "uncond": x - D(x, sigma, 1), "cond_scale": SCALE, "sigma": sigma, "input": x}
case("rescale_cfg_v", x=x, sigma=sigma, scale=SCALE, multiplier=phi, expected=x - comfy_rescale_cfg(noise_args, phi))

# --- dynamic thresholding on the CFG result: diffusers DDPMScheduler._threshold_sample ---
guided = D(x, sigma, 1) + SCALE * (D(x, sigma, 0) - D(x, sigma, 1))
scheduler = DDPMScheduler(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5)
case("dynamic_thresholding", x=x, sigma=sigma, scale=SCALE, ratio=0.9, max=1.5,
     expected=scheduler._threshold_sample(guided))


# --- perp_neg: ComfyUI comfy_extras/nodes_perpneg.py perp_neg, applied to each sample on its own ---
def comfy_perp_neg(x, noise_pred_pos, noise_pred_neg, noise_pred_nocond, neg_scale, cond_scale):
    pos = noise_pred_pos - noise_pred_nocond
    neg = noise_pred_neg - noise_pred_nocond
    perp = neg - ((torch.mul(neg, pos).sum()) / (torch.norm(pos) ** 2)) * pos
    perp_neg = perp * neg_scale
    return noise_pred_nocond + cond_scale * (pos - perp_neg)


per_sample = [comfy_perp_neg(x[i:i + 1], D(x, sigma, 0)[i:i + 1], D(x, sigma, 1)[i:i + 1], D(x, sigma, 2)[i:i + 1], 0.8, SCALE)
              for i in range(SHAPE[0])]
case("perp_neg", x=x, sigma=sigma, scale=SCALE, neg_scale=0.8, expected=torch.cat(per_sample))

# --- APG over three calls (momentum): diffusers normalized_guidance, original formulation, scale - 1 ---
apg_sigmas, apg_x, apg_expected = [5.0, 3.0, 1.5], [], []
buffer = MomentumBuffer(-0.5)
for i, s in enumerate(apg_sigmas):
    xi = x_at(10 + i, s)
    apg_x.append(flat(xi))
    apg_expected.append(flat(normalized_guidance(D(xi, s, 0), D(xi, s, 1), SCALE - 1, buffer, eta=0.3,
                                                 norm_threshold=2.0, use_original_formulation=True)))
cases["apg"] = {"sigmas": apg_sigmas, "x": apg_x, "scale": SCALE, "eta": 0.3, "norm_threshold": 2.0, "momentum": -0.5,
                "expected": apg_expected}
no_threshold = normalized_guidance(D(x, sigma, 0), D(x, sigma, 1), SCALE - 1, None, eta=0.0, norm_threshold=0.0,
                                   use_original_formulation=True)
case("apg_plain", x=x, sigma=sigma, scale=SCALE, eta=0.0, norm_threshold=0.0, momentum=0.0, expected=no_threshold)


# --- dual CFG: ComfyUI comfy_extras/nodes_custom_sampler.py Guider_DualCFG.predict_noise ---
def comfy_dual_cfg(neg, middle, pos, cfg1, cfg2, nested):
    if nested:
        pred_text = middle + cfg1 * (pos - middle)
        return neg + cfg2 * (pred_text - neg)
    return neg + (middle - neg) * cfg2 + (pos - middle) * cfg1


for nested in (False, True):
    case("dual_cfg_nested" if nested else "dual_cfg", x=x, sigma=sigma, scale=SCALE, middle_scale=2.5,
         expected=comfy_dual_cfg(D(x, sigma, 1), D(x, sigma, 3), D(x, sigma, 0), SCALE, 2.5, nested))


# --- CFG-Zero*'s optimised scale, the README's example user plugin: diffusers ClassifierFreeZeroStarGuidance ---
zero_star = ClassifierFreeZeroStarGuidance(guidance_scale=SCALE, zero_init_steps=0)
zero_star.set_state(step=5, num_inference_steps=20, timestep=torch.tensor(500))
case("cfg_zero_star", x=x, sigma=sigma, scale=SCALE, expected=zero_star.forward(D(x, sigma, 0), D(x, sigma, 1)).pred)


# --- composable prompts: AUTOMATIC1111 modules/sd_samplers_cfg_denoiser.py combine_denoised ---
def a1111_combine_denoised(x_out, conds_list, uncond, cond_scale):
    denoised_uncond = x_out[-uncond.shape[0]:]
    denoised = torch.clone(denoised_uncond)
    for i, conds in enumerate(conds_list):
        for cond_index, weight in conds:
            denoised[i] += (x_out[cond_index] - denoised_uncond[i]) * (weight * cond_scale)
    return denoised


samples = []
for i in range(SHAPE[0]):
    xi = x[i:i + 1]
    x_out = torch.cat([D(xi, sigma, 0), D(xi, sigma, 4), D(xi, sigma, 1)])
    samples.append(a1111_combine_denoised(x_out, [[(0, 0.7), (1, 0.5)]], torch.zeros(1), SCALE))
case("composable", x=x, sigma=sigma, scale=SCALE, weights=[0.7, 0.5], expected=torch.cat(samples))

# --- guidance interval (Kynkaenniemi et al. 2024, eq. 4): CFG inside [lo, hi], the cond alone outside ---
interval = {"lo": 1.0, "hi": 3.0, "sigmas": [4.0, 3.0, 2.0, 1.0, 0.5], "x": [], "expected": []}
for i, s in enumerate(interval["sigmas"]):
    xi = x_at(20 + i, s)
    interval["x"].append(flat(xi))
    inside = interval["lo"] <= s <= interval["hi"]
    interval["expected"].append(flat(D(xi, s, 1) + SCALE * (D(xi, s, 0) - D(xi, s, 1)) if inside else D(xi, s, 0)))
interval["scale"] = SCALE
cases["interval"] = interval

# --- scale schedules over 6 steps: scale = from + (to - from) * w((step - 1) / (steps - 1)) ---
ramps = {"constant": lambda t: 1.0, "linear": lambda t: t, "cosine": lambda t: (1 - math.cos(math.pi * t)) / 2}
cases["scale_schedule"] = {"steps": 6, "from": 1.5, "to": SCALE,
                           "expected": {shape: [1.5 + (SCALE - 1.5) * w(i / 5) for i in range(6)] for shape, w in ramps.items()}}


# --- CFG++ samplers: ComfyUI comfy/k_diffusion/sampling.py, with the CFG model and its post_cfg capture ---
def karras(n, sigma_min, sigma_max, rho=7.0):
    ramp = torch.linspace(0, 1, n)
    sig = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sig, torch.zeros(1)])


def guided_model(x, sigma, cfg_scale, store):
    cond, uncond = D(x, sigma, 0), D(x, sigma, 1)
    store["uncond_denoised"] = uncond
    return uncond + (cond - uncond) * cfg_scale


def comfy_euler_cfg_pp(x, sigmas, cfg_scale):
    store = {}
    for i in range(len(sigmas) - 1):
        denoised = guided_model(x, float(sigmas[i]), cfg_scale, store)
        d = (x - store["uncond_denoised"]) / sigmas[i]
        x = denoised + d * sigmas[i + 1]
    return x


def comfy_dpmpp_2m_cfg_pp(x, sigmas, cfg_scale):
    store = {}
    t_fn = lambda sigma: sigma.log().neg()
    old_uncond_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = guided_model(x, float(sigmas[i]), cfg_scale, store)
        uncond_denoised = store["uncond_denoised"]
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old_uncond_denoised is None or sigmas[i + 1] == 0:
            denoised_mix = -torch.exp(-h) * uncond_denoised
        else:
            h_last = t - t_fn(sigmas[i - 1])
            r = h_last / h
            denoised_mix = -torch.exp(-h) * uncond_denoised - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond_denoised)
        x = denoised + denoised_mix + torch.exp(-h) * x
        old_uncond_denoised = uncond_denoised
    return x


sigmas = karras(6, 0.1, 8.0)
x_start = x_at(30, 8.0)
for name, sampler in (("euler_cfg_pp", comfy_euler_cfg_pp), ("dpmpp_2m_cfg_pp", comfy_dpmpp_2m_cfg_pp)):
    case(name, x=x_start, sigmas=flat(sigmas), scale=0.8, expected=sampler(x_start, sigmas, 0.8))

fixture = {"shape": list(SHAPE), "w": flat(W), "b": flat(B), "cases": cases,
           "versions": {"python": platform.python_version(), "torch": torch.__version__,
                        "diffusers": diffusers.__version__, "numpy": np.__version__}}
with open(os.path.join(HERE, "guidance.json"), "w") as out:
    json.dump(fixture, out, indent=None, separators=(",", ":"))
print("wrote guidance.json with", len(cases), "cases")
