#!/usr/bin/env python3
"""Reference fixtures for Kiri's Lua schedules and samplers.

Writes, next to this file:
  schedules.json  - sigma schedules (k-diffusion, diffusers, ComfyUI-algorithm ports)
  samplers.json   - sampler trajectories on an exact 2-D Gaussian-mixture denoiser
  versions.json   - the exact library versions that produced them

Run it in a throwaway venv (see README.md); CI never runs it. Everything is float64
(torch.set_default_dtype(torch.float64)), except where a library hard-codes float32
(diffusers' schedulers); those cases also carry a float64 replica.

Sources that are not on PyPI (ComfyUI, AUTOMATIC1111) are re-implemented here from
the published algorithm; each function names the file and function it follows.
"""
import json
import math
import os
import platform
import sys
import zlib

import numpy as np
import scipy
import scipy.stats
import torch

torch.set_default_dtype(torch.float64)

import diffusers  # noqa: E402
import k_diffusion  # noqa: E402
import k_diffusion.sampling as K  # noqa: E402
from diffusers import (  # noqa: E402
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    LCMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_euler_discrete import rescale_zero_terminal_snr  # noqa: E402

F64 = torch.float64
HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------------------
# JSON helpers
# ----------------------------------------------------------------------------------

def tl(t):
    """Tensor / array / number -> plain Python (nested lists of float)."""
    if isinstance(t, torch.Tensor):
        return t.detach().to(F64).tolist()
    if isinstance(t, np.ndarray):
        return t.astype(np.float64).tolist()
    return float(t)


def num(v):
    if isinstance(v, torch.Tensor):
        return v.item()
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def jdump(obj):
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def write_list(path, items):
    with open(path, "w") as f:
        f.write("[\n" + ",\n".join(jdump(c) for c in items) + "\n]\n")


def write_object(path, head, list_key, items):
    parts = ["{"]
    for k, v in head.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            parts.append(json.dumps(k) + ":[\n" + ",\n".join(jdump(c) for c in v) + "\n],")
        else:
            parts.append(json.dumps(k) + ":" + jdump(v) + ",")
    parts.append(json.dumps(list_key) + ":[")
    parts.append(",\n".join(jdump(c) for c in items))
    parts.append("]\n}\n")
    with open(path, "w") as f:
        f.write("\n".join(parts))


def max_rel(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = np.maximum(np.abs(a), np.abs(b))
    d = np.abs(a - b)
    r = np.where(scale > 0, d / np.where(scale > 0, scale, 1), 0.0)
    return float(r.max()) if r.size else 0.0


# ==================================================================================
# Schedules
# ==================================================================================

def kd_schedules():
    cases = []

    def add(name, fn, **params):
        cases.append({"name": name, "source": "k-diffusion 0.1.1 k_diffusion.sampling." + fn.__name__,
                      "params": params, "sigmas": tl(fn(**params))})

    for n, smin, smax, rho in [(10, 0.0291675, 14.614642, 7.0), (25, 0.002, 80.0, 7.0),
                               (10, 0.1, 10.0, 3.0), (25, 0.0291675, 14.614642, 3.0)]:
        add("karras", K.get_sigmas_karras, n=n, sigma_min=smin, sigma_max=smax, rho=rho)
    for n, smin, smax in [(10, 0.0291675, 14.614642), (25, 0.002, 80.0), (10, 0.1, 10.0)]:
        add("exponential", K.get_sigmas_exponential, n=n, sigma_min=smin, sigma_max=smax)
    for n, smin, smax, rho in [(10, 0.0291675, 14.614642, 1.0), (25, 0.002, 80.0, 1.0),
                               (10, 0.0291675, 14.614642, 2.0), (25, 0.1, 10.0, 2.0)]:
        add("polyexponential", K.get_sigmas_polyexponential, n=n, sigma_min=smin, sigma_max=smax, rho=rho)
    for n, bd, bm, es in [(10, 19.9, 0.1, 1e-3), (25, 19.9, 0.1, 1e-3), (10, 10.0, 0.5, 1e-2), (25, 10.0, 0.5, 1e-2)]:
        add("vp", K.get_sigmas_vp, n=n, beta_d=bd, beta_min=bm, eps_s=es)
    return cases


# ---- diffusers discrete (EulerDiscreteScheduler) + float64 replica ----------------

def betas_f64(beta_schedule, beta_start, beta_end, T):
    """float64 replica of diffusers' beta construction (scheduling_euler_discrete.__init__ /
    betas_for_alpha_bar, alpha_transform_type='cosine', max_beta=0.999)."""
    if beta_schedule == "linear":
        return np.linspace(beta_start, beta_end, T, dtype=np.float64)
    if beta_schedule == "scaled_linear":
        return np.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=np.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.array([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=np.float64)
    raise ValueError(beta_schedule)


def rescale_zsnr_f64(betas):
    """float64 replica of diffusers rescale_zero_terminal_snr (arXiv 2305.08891, Algorithm 1)."""
    acp = np.cumprod(1.0 - betas)
    s = np.sqrt(acp)
    s0, sT = s[0], s[-1]
    s = (s - sT) * (s0 / (s0 - sT))
    ab = s ** 2
    alphas = np.concatenate([ab[:1], ab[1:] / ab[:-1]])
    return 1.0 - alphas


def discrete_timesteps_f64(spacing, n, T, steps_offset):
    """diffusers EulerDiscreteScheduler.set_timesteps timestep spacing, in float64."""
    if spacing == "linspace":
        return np.linspace(0, T - 1, n, dtype=np.float64)[::-1].copy()
    if spacing == "leading":
        ratio = T // n
        return (np.arange(0, n) * ratio).round()[::-1].astype(np.float64) + steps_offset
    if spacing == "trailing":
        ratio = T / n
        return np.arange(T, 0, -ratio).round().astype(np.float64) - 1
    raise ValueError(spacing)


def discrete_sigmas_f64(beta_schedule, beta_start, beta_end, T, spacing, n, steps_offset, zsnr=False):
    betas = betas_f64(beta_schedule, beta_start, beta_end, T)
    if zsnr:
        betas = rescale_zsnr_f64(betas)
    acp = np.cumprod(1.0 - betas)
    if zsnr:
        acp[-1] = 2.0 ** -24
    sig = np.sqrt((1 - acp) / acp)
    ts = discrete_timesteps_f64(spacing, n, T, steps_offset)
    s = np.interp(ts, np.arange(T, dtype=np.float64), sig)
    return np.concatenate([s, [0.0]]), ts, acp


def discrete_schedules():
    cases = []
    T = 1000
    configs = [("linear", 0.0001, 0.02), ("scaled_linear", 0.00085, 0.012), ("squaredcos_cap_v2", 0.0001, 0.02)]
    for bs, b0, b1 in configs:
        sch = EulerDiscreteScheduler(num_train_timesteps=T, beta_start=b0, beta_end=b1, beta_schedule=bs)
        acp64 = np.cumprod(1.0 - betas_f64(bs, b0, b1, T))
        cases.append({
            "name": "alphas_cumprod",
            "source": "diffusers 0.42 EulerDiscreteScheduler(...).alphas_cumprod (float32) ; alphas_cumprod_f64 = float64 replica",
            "params": {"beta_schedule": bs, "beta_start": b0, "beta_end": b1, "num_train_timesteps": T},
            "alphas_cumprod": tl(sch.alphas_cumprod),
            "alphas_cumprod_f64": tl(acp64),
            "max_rel_diff_f32_vs_f64": max_rel(tl(sch.alphas_cumprod), acp64),
        })
        for spacing in ("linspace", "leading", "trailing"):
            for off in (0, 1):
                for n in (10, 25):
                    sch = EulerDiscreteScheduler(num_train_timesteps=T, beta_start=b0, beta_end=b1, beta_schedule=bs,
                                                 timestep_spacing=spacing, steps_offset=off)
                    sch.set_timesteps(n)
                    s64, ts64, _ = discrete_sigmas_f64(bs, b0, b1, T, spacing, n, off)
                    cases.append({
                        "name": "discrete",
                        "source": "diffusers 0.42 EulerDiscreteScheduler(...).set_timesteps(n): .sigmas/.timesteps (float32); *_f64 = float64 replica",
                        "params": {"n": n, "beta_schedule": bs, "beta_start": b0, "beta_end": b1,
                                   "num_train_timesteps": T, "spacing": spacing, "steps_offset": off},
                        "sigmas": tl(sch.sigmas),
                        "timesteps": tl(sch.timesteps),
                        "sigmas_f64": tl(s64),
                        "timesteps_f64": tl(ts64),
                        "max_rel_diff_f32_vs_f64": max_rel(tl(sch.sigmas), s64),
                    })
    return cases


# ---- ComfyUI ModelSamplingDiscrete, float64 -----------------------------------------

class ComfyDiscreteModelSampling:
    """Follows ComfyUI comfy/model_sampling.py ModelSamplingDiscrete (beta_schedule 'linear' of
    comfy/ldm/modules/diffusionmodules/util.py make_beta_schedule, which is
    linspace(sqrt(start), sqrt(end))**2, i.e. diffusers' 'scaled_linear'), kept in float64
    (ComfyUI stores sigmas as float32)."""

    def __init__(self, linear_start=0.00085, linear_end=0.012, timesteps=1000, sigmas=None):
        if sigmas is None:
            betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=F64) ** 2
            acp = torch.cumprod(1.0 - betas, dim=0)
            sigmas = ((1 - acp) / acp) ** 0.5
        self.sigmas = sigmas
        self.log_sigmas = sigmas.log()

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        # nearest index in log-sigma
        d = torch.as_tensor(sigma).log() - self.log_sigmas[:, None]
        return d.abs().argmin(dim=0).view(torch.as_tensor(sigma).shape)

    def sigma(self, timestep):
        t = torch.clamp(torch.as_tensor(timestep).to(F64), min=0, max=len(self.sigmas) - 1)
        lo = t.floor().long()
        hi = t.ceil().long()
        w = t.frac()
        return ((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi]).exp()


MS_PARAMS = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000}


def comfy_simple_scheduler(ms, steps):
    # ComfyUI comfy/samplers.py simple_scheduler
    sigs = []
    ss = len(ms.sigmas) / steps
    idx = []
    for x in range(steps):
        k = -(1 + int(x * ss))
        idx.append(len(ms.sigmas) + k)
        sigs.append(float(ms.sigmas[k]))
    sigs.append(0.0)
    return torch.tensor(sigs, dtype=F64), idx


def comfy_ddim_scheduler(ms, steps):
    # ComfyUI comfy/samplers.py ddim_scheduler (note: can return a different number of steps than asked)
    x = 1
    if math.isclose(float(ms.sigmas[x]), 0, abs_tol=0.00001):
        steps += 1
        sigs = []
    else:
        sigs = [0.0]
    ss = max(len(ms.sigmas) // steps, 1)
    idx = []
    while x < len(ms.sigmas):
        sigs.append(float(ms.sigmas[x]))
        idx.append(x)
        x += ss
    sigs = sigs[::-1]
    return torch.tensor(sigs, dtype=F64), idx[::-1]


def comfy_normal_scheduler(ms, steps, sgm=False):
    # ComfyUI comfy/samplers.py normal_scheduler (sgm=True is "sgm_uniform")
    start = ms.timestep(ms.sigma_max)
    end = ms.timestep(ms.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(float(start), float(end), steps + 1, dtype=F64)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(float(start), float(end), steps, dtype=F64)
    sigs = [float(ms.sigma(ts)) for ts in timesteps]
    if append_zero:
        sigs.append(0.0)
    return torch.tensor(sigs, dtype=F64), timesteps


def comfy_beta_scheduler(ms, steps, alpha=0.6, beta=0.6):
    # ComfyUI comfy/samplers.py beta_scheduler (arXiv 2407.12173)
    total = len(ms.sigmas) - 1
    ts = 1 - np.linspace(0, 1, steps, endpoint=False)
    ppf = scipy.stats.beta.ppf(ts, alpha, beta)
    idx = np.rint(ppf * total)
    sigs = []
    last = -1
    for t in idx:
        if t != last:
            sigs.append(float(ms.sigmas[int(t)]))
        last = t
    sigs.append(0.0)
    return torch.tensor(sigs, dtype=F64), ppf, idx


def comfy_linear_quadratic(ms, steps, threshold_noise=0.025, linear_steps=None):
    # ComfyUI comfy/samplers.py linear_quadratic_schedule (from genmoai mochi infer.py)
    if steps == 1:
        sched = [1.0, 0.0]
    else:
        if linear_steps is None:
            linear_steps = steps // 2
        lin = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        diff = linear_steps - threshold_noise * steps
        qsteps = steps - linear_steps
        qcoef = diff / (linear_steps * qsteps ** 2)
        lcoef = threshold_noise / linear_steps - 2 * diff / (qsteps ** 2)
        const = qcoef * (linear_steps ** 2)
        quad = [qcoef * (i ** 2) + lcoef * i + const for i in range(linear_steps, steps)]
        sched = [1.0 - v for v in lin + quad + [1.0]]
    return torch.tensor(sched, dtype=F64) * ms.sigma_max


def comfy_kl_optimal(n, sigma_min, sigma_max):
    # ComfyUI comfy/samplers.py kl_optimal_scheduler (A1111 PR 15608)
    adj = torch.arange(n, dtype=F64) / (n - 1)
    s = torch.zeros(n + 1, dtype=F64)
    s[:-1] = (adj * math.atan(sigma_min) + (1 - adj) * math.atan(sigma_max)).tan()
    return s


AYS_NOISE_LEVELS = {
    # ComfyUI comfy_extras/nodes_align_your_steps.py NOISE_LEVELS (NVIDIA AYS tables)
    "SD1": [14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
            0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582],
    "SDXL": [14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141,
             0.5550693289, 0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582],
}


def ays_sigmas(model_type, steps):
    # ComfyUI comfy_extras/nodes_align_your_steps.py loglinear_interp + AlignYourStepsScheduler.get_sigmas
    # (denoise=1): interpolate log(sigma) linearly on a uniform grid, then force the last value to 0.
    t = AYS_NOISE_LEVELS[model_type][:]
    if steps + 1 != len(t):
        xs = np.linspace(0, 1, len(t))
        ys = np.log(np.array(t)[::-1])
        new_xs = np.linspace(0, 1, steps + 1)
        t = np.exp(np.interp(new_xs, xs, ys))[::-1].copy()
    t = np.array(t, dtype=np.float64)
    t[-1] = 0.0
    return t


def comfy_laplace(n, sigma_min, sigma_max, mu=0.0, beta=0.5):
    # ComfyUI comfy/k_diffusion/sampling.py get_sigmas_laplace (returns n values, no appended zero)
    eps = 1e-5
    x = torch.linspace(0, 1, n, dtype=F64)
    lmb = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + eps)
    return torch.clamp(torch.exp(lmb), min=sigma_min, max=sigma_max)


def comfy_zsnr_sigmas(sigmas):
    # ComfyUI comfy/model_sampling.py rescale_zero_terminal_snr_sigmas
    acp = 1 / ((sigmas * sigmas) + 1)
    s = acp.sqrt()
    s0 = s[0].clone()
    sT = s[-1].clone()
    s = (s - sT) * (s0 / (s0 - sT))
    ab = s ** 2
    ab[-1] = 4.8973451890853435e-08
    return ((1 - ab) / ab) ** 0.5


def comfy_schedules():
    cases = []
    ms = ComfyDiscreteModelSampling()
    src = "ComfyUI comfy/samplers.py "
    for n in (10, 25):
        s, t = comfy_normal_scheduler(ms, n)
        cases.append({"name": "normal", "source": src + "normal_scheduler (float64 port)",
                      "params": {"n": n, "model_sampling": MS_PARAMS}, "sigmas": tl(s), "model_timesteps": tl(t)})
    for n in (10, 25):
        s, t = comfy_normal_scheduler(ms, n, sgm=True)
        cases.append({"name": "sgm_uniform", "source": src + "normal_scheduler(sgm=True) (float64 port)",
                      "params": {"n": n, "model_sampling": MS_PARAMS}, "sigmas": tl(s), "model_timesteps": tl(t)})
    for n in (10, 25):
        s, idx = comfy_simple_scheduler(ms, n)
        cases.append({"name": "simple", "source": src + "simple_scheduler (float64 port)",
                      "params": {"n": n, "model_sampling": MS_PARAMS}, "sigmas": tl(s), "indices": idx})
    for n in (10, 12, 25):
        s, idx = comfy_ddim_scheduler(ms, n)
        cases.append({"name": "ddim_uniform", "source": src + "ddim_scheduler (float64 port)",
                      "params": {"n": n, "model_sampling": MS_PARAMS}, "sigmas": tl(s), "indices": idx,
                      "note": "len(sigmas)-1 can differ from n (stride = 1000 // n from index 1)"})
    for n, a, b in [(10, 0.6, 0.6), (25, 0.6, 0.6), (10, 0.5, 0.7)]:
        s, ppf, idx = comfy_beta_scheduler(ms, n, a, b)
        cases.append({"name": "beta", "source": src + "beta_scheduler (float64 port; scipy.stats.beta.ppf)",
                      "params": {"n": n, "alpha": a, "beta": b, "model_sampling": MS_PARAMS},
                      "sigmas": tl(s), "ppf": tl(ppf), "indices": [int(v) for v in idx]})
    for n, thr, ls in [(10, 0.025, None), (25, 0.025, None), (10, 0.05, 3)]:
        p = {"n": n, "threshold_noise": thr, "model_sampling": MS_PARAMS}
        if ls is not None:
            p["linear_steps"] = ls
        cases.append({"name": "linear_quadratic", "source": src + "linear_quadratic_schedule (float64 port)",
                      "params": p, "sigmas": tl(comfy_linear_quadratic(ms, n, thr, ls))})
    for n, smin, smax in [(10, float(ms.sigma_min), float(ms.sigma_max)), (25, float(ms.sigma_min), float(ms.sigma_max)),
                          (10, 0.002, 80.0)]:
        cases.append({"name": "kl_optimal", "source": src + "kl_optimal_scheduler (float64 port)",
                      "params": {"n": n, "sigma_min": smin, "sigma_max": smax},
                      "sigmas": tl(comfy_kl_optimal(n, smin, smax))})
    for mt in ("SD1", "SDXL"):
        for n in (10, 25, 7):
            cases.append({"name": "ays", "source": "ComfyUI comfy_extras/nodes_align_your_steps.py loglinear_interp + AlignYourStepsScheduler (float64 port)",
                          "params": {"n": n, "model_type": mt, "table": AYS_NOISE_LEVELS[mt]},
                          "sigmas": tl(ays_sigmas(mt, n))})
    for n, smin, smax, mu, beta in [(10, 0.0291675, 14.614642, 0.0, 0.5), (25, 0.0291675, 14.614642, 0.0, 0.5),
                                     (10, 0.002, 80.0, 0.5, 1.0)]:
        s = comfy_laplace(n, smin, smax, mu, beta)
        cases.append({"name": "laplace", "source": "ComfyUI comfy/k_diffusion/sampling.py get_sigmas_laplace (float64 port)",
                      "params": {"n": n, "sigma_min": smin, "sigma_max": smax, "mu": mu, "beta": beta},
                      "sigmas": tl(s), "sigmas_with_zero": tl(torch.cat([s, s.new_zeros(1)])),
                      "note": "ComfyUI returns n values ending at sigma_min (no zero); sigmas_with_zero appends 0"})
    # ComfyUI zero-terminal-SNR on the discrete sigmas
    cases.append({"name": "zsnr_sigmas_comfy", "source": "ComfyUI comfy/model_sampling.py rescale_zero_terminal_snr_sigmas (float64 port)",
                  "params": {"model_sampling": MS_PARAMS}, "sigmas_in": tl(ms.sigmas),
                  "sigmas": tl(comfy_zsnr_sigmas(ms.sigmas.clone())),
                  "note": "all 1000 training sigmas, ascending (index = timestep); last alphas_cumprod forced to 4.8973451890853435e-08"})
    # ComfyUI flow model sampling + simple scheduler
    for shift in (3.0,):
        for n in (10, 25):
            ts = torch.arange(1, 1001, 1, dtype=F64) / 1000
            fs = shift * ts / (1 + (shift - 1) * ts)
            fms = ComfyDiscreteModelSampling(sigmas=fs)
            s, idx = comfy_simple_scheduler(fms, n)
            cases.append({"name": "flow_simple_comfy",
                          "source": "ComfyUI comfy/model_sampling.py ModelSamplingDiscreteFlow(shift) sigmas + comfy/samplers.py simple_scheduler (float64 port)",
                          "params": {"n": n, "shift": shift, "multiplier": 1000},
                          "sigmas": tl(s), "indices": idx})
    return cases


def flow_and_zsnr_schedules():
    cases = []
    for shift in (3.0, 1.0):
        for n in (10, 25):
            sch = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
            sch.set_timesteps(n)
            smin = shift * 0.001 / (1 + (shift - 1) * 0.001)
            base = np.linspace(1.0, smin, n)
            s64 = np.concatenate([shift * base / (1 + (shift - 1) * base), [0.0]])
            cases.append({"name": "flow_shift",
                          "source": "diffusers 0.42 FlowMatchEulerDiscreteScheduler(shift).set_timesteps(n).sigmas (float32); sigmas_f64 = float64 replica",
                          "params": {"n": n, "shift": shift, "num_train_timesteps": 1000},
                          "sigmas": tl(sch.sigmas), "timesteps": tl(sch.timesteps), "sigmas_f64": tl(s64),
                          "max_rel_diff_f32_vs_f64": max_rel(tl(sch.sigmas), s64)})
    # zero terminal SNR (diffusers)
    T = 1000
    b32 = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, T, dtype=torch.float32) ** 2
    acp32 = torch.cumprod(1.0 - rescale_zero_terminal_snr(b32), dim=0)
    acp64 = np.cumprod(1.0 - rescale_zsnr_f64(betas_f64("scaled_linear", 0.00085, 0.012, T)))
    cases.append({"name": "zsnr_alphas_cumprod",
                  "source": "diffusers 0.42 rescale_zero_terminal_snr(scaled_linear betas) -> cumprod(1-betas) (float32); *_f64 = float64 replica",
                  "params": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": T},
                  "alphas_cumprod": tl(acp32), "alphas_cumprod_f64": tl(acp64)})
    for n in (10, 25):
        sch = EulerDiscreteScheduler(num_train_timesteps=T, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                     timestep_spacing="trailing", rescale_betas_zero_snr=True)
        sch.set_timesteps(n)
        s64, ts64, _ = discrete_sigmas_f64("scaled_linear", 0.00085, 0.012, T, "trailing", n, 0, zsnr=True)
        cases.append({"name": "discrete_zsnr",
                      "source": "diffusers 0.42 EulerDiscreteScheduler(rescale_betas_zero_snr=True, timestep_spacing='trailing').set_timesteps(n) (float32); *_f64 = float64 replica",
                      "params": {"n": n, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                                 "num_train_timesteps": T, "spacing": "trailing", "steps_offset": 0, "zsnr": True},
                      "sigmas": tl(sch.sigmas), "timesteps": tl(sch.timesteps),
                      "sigmas_f64": tl(s64), "timesteps_f64": tl(ts64),
                      "max_rel_diff_f32_vs_f64": max_rel(tl(sch.sigmas), s64)})
    return cases


# ==================================================================================
# The Gaussian-mixture problem
# ==================================================================================

MEANS = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], dtype=F64)
STDS = torch.tensor([0.3, 0.5, 0.4], dtype=F64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
N_POINTS, DIM = 8, 2
X_SEED = 20240601


def _sigma_rows(sigma, n):
    s = torch.as_tensor(sigma, dtype=F64)
    if s.ndim == 0:
        s = s.expand(n)
    s = s.reshape(-1)
    return s


def gmm_denoise(x, sigma):
    """kiri.models.gmm: D(x, s) = sum_k r_k(x) (mu_k + s_k^2/(s_k^2+s^2) (x - mu_k)),
    r_k ~ w_k N(x; mu_k, (s_k^2 + s^2) I), normalised in log space."""
    s = _sigma_rows(sigma, x.shape[0])
    s2 = STDS ** 2
    v = s2[None, :] + s[:, None] ** 2                      # N x K
    diff = x[:, None, :] - MEANS[None, :, :]                # N x K x D
    sq = (diff ** 2).sum(-1)                                # N x K
    logr = torch.log(WEIGHTS)[None, :] - 0.5 * x.shape[1] * torch.log(2 * math.pi * v) - 0.5 * sq / v
    r = torch.softmax(logr, dim=1)
    post = MEANS[None] + (s2[None, :, None] / v[:, :, None]) * diff
    return (r[:, :, None] * post).sum(1)


def gmm_flow_denoise(x, t):
    """Flow-matching convention x_t = (1-t) x0 + t eps, t in [0, 1]; returns E[x0 | x_t].
    Per component: x_t | k ~ N((1-t) mu_k, ((1-t)^2 s_k^2 + t^2) I);
    E[x0 | x_t, k] = mu_k + (1-t) s_k^2 / ((1-t)^2 s_k^2 + t^2) (x_t - (1-t) mu_k).
    For t < 1 this equals gmm_denoise(x / (1-t), t / (1-t)); at t = 1 it is sum_k w_k mu_k."""
    t = _sigma_rows(t, x.shape[0])
    a = 1 - t
    s2 = STDS ** 2
    v = a[:, None] ** 2 * s2[None, :] + t[:, None] ** 2      # N x K
    diff = x[:, None, :] - a[:, None, None] * MEANS[None]    # N x K x D
    sq = (diff ** 2).sum(-1)
    logr = torch.log(WEIGHTS)[None, :] - 0.5 * x.shape[1] * torch.log(2 * math.pi * v) - 0.5 * sq / v
    r = torch.softmax(logr, dim=1)
    post = MEANS[None] + (a[:, None, None] * s2[None, :, None] / v[:, :, None]) * diff
    return (r[:, :, None] * post).sum(1)


class Model:
    """Counts evaluations and records the sigma of each call."""

    def __init__(self, flow=False):
        self.flow = flow
        self.nfe = 0
        self.sigmas = []

    def __call__(self, x, sigma, **kwargs):
        s = _sigma_rows(sigma, x.shape[0])
        assert torch.all(s == s[0]), "all rows share one sigma"
        self.nfe += 1
        self.sigmas.append(float(s[0]))
        return gmm_flow_denoise(x, sigma) if self.flow else gmm_denoise(x, sigma)


class Recorder:
    KEYS = ("sigma", "sigma_hat", "t", "t_up", "error", "h", "nfe", "n_accept", "n_reject", "steps")
    INT_KEYS = ("nfe", "n_accept", "n_reject", "steps")

    def __init__(self):
        self.steps = []

    def __call__(self, info):
        rec = {"i": int(num(info["i"]))}
        for k in self.KEYS:
            if k in info:
                v = num(info[k])
                rec[k] = int(v) if k in self.INT_KEYS else float(v)
        rec["x"] = tl(info["x"])
        rec["denoised"] = tl(info["denoised"])
        self.steps.append(rec)


class Noise:
    """Pre-seeded standard normals handed out in call order, with a log of each call."""

    def __init__(self, seed, shape):
        self.gen = torch.Generator().manual_seed(seed)
        self.shape = shape
        self.noise = []
        self.calls = []

    def _draw(self):
        z = torch.randn(self.shape, generator=self.gen, dtype=F64)
        self.noise.append(z)
        return z

    def sampler(self, sigma, sigma_next):
        self.calls.append({"via": "noise_sampler", "sigma": float(num(sigma)), "sigma_next": float(num(sigma_next))})
        return self._draw()

    def randn_like(self, x):
        self.calls.append({"via": "randn_like"})
        return self._draw().to(x.dtype)


class Discard:
    """Noise source for deterministic runs: values are multiplied by 0 by the sampler."""

    def __init__(self):
        self.count = 0

    def sampler(self, sigma, sigma_next):
        self.count += 1
        return torch.zeros(N_POINTS, DIM, dtype=F64)

    def randn_like(self, x):
        self.count += 1
        return torch.zeros_like(x)


class patched_randn_like:
    def __init__(self, fn):
        self.fn = fn

    def __enter__(self):
        self.orig = torch.randn_like
        torch.randn_like = self.fn

    def __exit__(self, *a):
        torch.randn_like = self.orig


# ==================================================================================
# Ports of samplers that are not in k-diffusion 0.1.1
# ==================================================================================

def to_d(x, sigma, denoised):
    return (x - denoised) / sigma


def comfy_ddpm(model, x, sigmas, callback, noise_sampler):
    """ComfyUI comfy/k_diffusion/sampling.py sample_ddpm = generic_step_sampler + DDPMSampler_step."""
    for i in range(len(sigmas) - 1):
        s, sn = sigmas[i], sigmas[i + 1]
        denoised = model(x, s)
        callback({"x": x, "i": i, "sigma": s, "sigma_hat": s, "denoised": denoised})
        eps = (x - denoised) / s
        xv = x / torch.sqrt(1.0 + s ** 2.0)
        acp = 1 / (s * s + 1)
        acp_prev = 1 / (sn * sn + 1)
        alpha = acp / acp_prev
        mu = (1.0 / alpha).sqrt() * (xv - (1 - alpha) * eps / (1 - acp).sqrt())
        if sn > 0:
            mu = mu + ((1 - alpha) * (1.0 - acp_prev) / (1.0 - acp)).sqrt() * noise_sampler(s, sn)
        x = mu
        if sn != 0:
            x = x * torch.sqrt(1.0 + sn ** 2.0)
    return x


def comfy_lcm(model, x, sigmas, callback, noise_sampler):
    """ComfyUI comfy/k_diffusion/sampling.py sample_lcm with EPS noise_scaling: x = denoised + sigma_next * noise."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = denoised
        if sigmas[i + 1] > 0:
            x = noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] + x
    return x


def comfy_heunpp2(model, x, sigmas, callback, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """ComfyUI comfy/k_diffusion/sampling.py sample_heunpp2 (from Carzit/sd-webui-samplers-scheduler).
    ComfyUI draws randn_like every step even when gamma == 0 (unused); here only when gamma > 0."""
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        gamma = min(s_churn / (len(sigmas) - 1), 2 ** 0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
        sigma_hat = sigmas[i] * (gamma + 1)
        if gamma > 0:
            eps = torch.randn_like(x) * s_noise
            x = x + eps * (sigma_hat ** 2 - sigmas[i] ** 2) ** 0.5
        denoised = model(x, sigma_hat)
        d = to_d(x, sigma_hat, denoised)
        callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigma_hat, "denoised": denoised})
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == s_end:
            x = x + d * dt
        elif sigmas[i + 2] == s_end:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1]))
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            w1 = 1 - w2
            x = x + (d * w1 + d_2 * w2) * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1]))
            dt_2 = sigmas[i + 2] - sigmas[i + 1]
            x_3 = x_2 + d_2 * dt_2
            d_3 = to_d(x_3, sigmas[i + 2], model(x_3, sigmas[i + 2]))
            w = 3 * sigmas[0]
            w2 = sigmas[i + 1] / w
            w3 = sigmas[i + 2] / w
            w1 = 1 - w2 - w3
            x = x + (w1 * d + w2 * d_2 + w3 * d_3) * dt
    return x


def _push(buf, d, max_order):
    if len(buf) == max_order - 1:
        for k in range(max_order - 2):
            buf[k] = buf[k + 1]
        buf[-1] = d
    else:
        buf.append(d)


def comfy_ipndm(model, x, sigmas, callback, max_order=4):
    """ComfyUI comfy/k_diffusion/sampling.py sample_ipndm (from zju-pi/diff-sampler solvers.py)."""
    buf = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, t_cur)
        callback({"x": x, "i": i, "sigma": t_cur, "sigma_hat": t_cur, "denoised": denoised})
        d = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        if t_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + (t_next - t_cur) * d
        elif order == 2:
            x_next = x + (t_next - t_cur) * (3 * d - buf[-1]) / 2
        elif order == 3:
            x_next = x + (t_next - t_cur) * (23 * d - 16 * buf[-1] + 5 * buf[-2]) / 12
        else:
            x_next = x + (t_next - t_cur) * (55 * d - 59 * buf[-1] + 37 * buf[-2] - 9 * buf[-3]) / 24
        _push(buf, d, max_order)
        x = x_next
    return x


def comfy_ipndm_v(model, x, sigmas, callback, max_order=4):
    """ComfyUI comfy/k_diffusion/sampling.py sample_ipndm_v (variable-step iPNDM, zju-pi/diff-sampler)."""
    t = sigmas
    buf = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = t[i], t[i + 1]
        denoised = model(x, t_cur)
        callback({"x": x, "i": i, "sigma": t_cur, "sigma_hat": t_cur, "denoised": denoised})
        d = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        if t_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + (t_next - t_cur) * d
        elif order == 2:
            h_n = t_next - t_cur
            h_n_1 = t_cur - t[i - 1]
            c1 = (2 + (h_n / h_n_1)) / 2
            c2 = -(h_n / h_n_1) / 2
            x_next = x + (t_next - t_cur) * (c1 * d + c2 * buf[-1])
        elif order == 3:
            h_n = t_next - t_cur
            h_n_1 = t_cur - t[i - 1]
            h_n_2 = t[i - 1] - t[i - 2]
            temp = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
            c1 = (2 + (h_n / h_n_1)) / 2 + temp
            c2 = -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp
            c3 = temp * h_n_1 / h_n_2
            x_next = x + (t_next - t_cur) * (c1 * d + c2 * buf[-1] + c3 * buf[-2])
        else:
            h_n = t_next - t_cur
            h_n_1 = t_cur - t[i - 1]
            h_n_2 = t[i - 1] - t[i - 2]
            h_n_3 = t[i - 2] - t[i - 3]
            temp1 = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
            temp2 = ((1 - h_n / (3 * (h_n + h_n_1))) / 2 + (1 - h_n / (2 * (h_n + h_n_1))) * h_n / (6 * (h_n + h_n_1 + h_n_2))) \
                * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2)) / (h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3))
            c1 = (2 + (h_n / h_n_1)) / 2 + temp1 + temp2
            c2 = -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1 \
                - (1 + (h_n_1 / h_n_2) + (h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3)))) * temp2
            c3 = temp1 * h_n_1 / h_n_2 + ((h_n_1 / h_n_2) + (h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3)))
                                          * (1 + h_n_2 / h_n_3)) * temp2
            c4 = -temp2 * (h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))) * h_n_1 / h_n_2
            x_next = x + (t_next - t_cur) * (c1 * d + c2 * buf[-1] + c3 * buf[-2] + c4 * buf[-3])
        _push(buf, d, max_order)
        x = x_next
    return x


def deis_tab_coeffs(sigmas, max_order, N=10000, eps_s=1e-3, sigma_min=0.002, sigma_max=80.0):
    """ComfyUI comfy/k_diffusion/deis.py get_deis_coeff_list(deis_mode='tab') + edm2t + cal_intergrand + cal_poly
    (from zju-pi/diff-sampler gits-main/solver_utils.py). The VP mapping always uses sigma_min=0.002,
    sigma_max=80, eps_s=1e-3, whatever the sigmas are. Coefficients are a plain sum over
    torch.linspace(t_cur, t_next, N) times dtau = (t_next - t_cur) / N. d(log alpha)/dt is taken
    analytically (ComfyUI uses autograd; same value). Steps whose t_next is 0 get [] (unused)."""
    vp_beta_d = 2 * (math.log(sigma_min ** 2 + 1) / eps_s - math.log(sigma_max ** 2 + 1)) / (eps_s - 1)
    vp_beta_min = math.log(sigma_max ** 2 + 1) - 0.5 * vp_beta_d
    t_steps = ((vp_beta_min ** 2 + 2 * vp_beta_d * (sigmas ** 2 + 1).log()).sqrt() - vp_beta_min) / vp_beta_d
    beta_0, beta_1 = vp_beta_min, vp_beta_d + vp_beta_min
    C = []
    for i in range(len(t_steps) - 1):
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        order = min(i + 1, max_order)
        if order == 1 or sigmas[i + 1] == 0:
            C.append([])
            continue
        taus = torch.linspace(float(t_cur), float(t_next), N, dtype=F64)
        dtau = (t_next - t_cur) / N
        prev_t = t_steps[[i - k for k in range(order)]]
        alpha = torch.exp(-0.5 * taus ** 2 * (beta_1 - beta_0) - taus * beta_0)
        dlog = -taus * (beta_1 - beta_0) - beta_0
        integrand = -0.5 * dlog / torch.sqrt(alpha * (1 - alpha))
        coeffs = []
        for j in range(order):
            poly = torch.ones_like(taus)
            for k in range(order):
                if k != j:
                    poly = poly * (taus - prev_t[k]) / (prev_t[j] - prev_t[k])
            coeffs.append(torch.sum(integrand * poly) * dtau)
        C.append(coeffs)
    return C, t_steps, (beta_0, beta_1)


def comfy_deis(model, x, sigmas, callback, max_order=3, info=None):
    """ComfyUI comfy/k_diffusion/sampling.py sample_deis(deis_mode='tab')."""
    C, t_steps, betas = deis_tab_coeffs(sigmas, max_order)
    if info is not None:
        info["deis_coeffs"] = [[float(c) for c in row] for row in C]
        info["deis_t_steps"] = tl(t_steps)
        info["deis_vp_beta_0_beta_1"] = [float(betas[0]), float(betas[1])]
    buf = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, t_cur)
        callback({"x": x, "i": i, "sigma": t_cur, "sigma_hat": t_cur, "denoised": denoised})
        d = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        if t_next <= 0:
            order = 1
        if order == 1:
            x_next = x + (t_next - t_cur) * d
        elif order == 2:
            c0, c1 = C[i]
            x_next = x + c0 * d + c1 * buf[-1]
        elif order == 3:
            c0, c1, c2 = C[i]
            x_next = x + c0 * d + c1 * buf[-1] + c2 * buf[-2]
        else:
            c0, c1, c2, c3 = C[i]
            x_next = x + c0 * d + c1 * buf[-1] + c2 * buf[-2] + c3 * buf[-3]
        _push(buf, d, max_order)
        x = x_next
    return x


def comfy_res_multistep(model, x, sigmas, callback, noise_sampler=None, s_noise=1.0, eta=0.0):
    """ComfyUI comfy/k_diffusion/sampling.py res_multistep (cfg_pp=False); sample_res_multistep is eta=0,
    sample_res_multistep_ancestral is eta=1. ComfyUI calls noise_sampler even when sigma_up == 0
    (eta=0, the value is multiplied by 0); this port calls it only when sigma_up > 0."""
    old_sigma_down = None
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = K.get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigma_down == 0 or old_denoised is None:
            d = to_d(x, sigmas[i], denoised)
            x = x + d * (sigma_down - sigmas[i])
        else:
            t, t_old, t_next, t_prev = (-sigmas[i].log(), -old_sigma_down.log(), -sigma_down.log(), -sigmas[i - 1].log())
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1 = torch.expm1(-h) / (-h)
            phi2 = (phi1 - 1.0) / (-h)
            b1 = torch.nan_to_num(phi1 - phi2 / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2 / c2, nan=0.0)
            x = torch.exp(-h) * x + h * (b1 * denoised + b2 * old_denoised)
        if sigmas[i + 1] > 0 and sigma_up > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised = denoised
        old_sigma_down = torch.as_tensor(sigma_down)
    return x


def comfy_er_sde(model, x, sigmas, callback, noise_sampler=None, s_noise=1.0, max_stage=3):
    """ComfyUI comfy/k_diffusion/sampling.py sample_er_sde (ER-SDE-Solver-3, arXiv 2309.06169), VP (EPS) model
    sampling: half-logSNR = -log(sigma), so er_lambda = sigma and alpha = 1. Default noise scaler
    x * (exp(x^0.3) + 10); 200 integration points (ComfyUI makes the point indices float32; float64 here)."""
    ns = lambda v: v * ((v ** 0.3).exp() + 10.0)
    npts = 200.0
    pts = torch.arange(0, npts, dtype=F64)
    lam = (-(-sigmas.log())).exp()  # = sigmas (0 stays 0)
    old_denoised = None
    old_denoised_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        stage = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            ls, lt = lam[i], lam[i + 1]
            alpha_s = sigmas[i] / ls
            alpha_t = sigmas[i + 1] / lt
            r_alpha = alpha_t / alpha_s
            r = ns(lt) / ns(ls)
            x = r_alpha * r * x + alpha_t * (1 - r) * denoised
            if stage >= 2:
                dt = lt - ls
                step = -dt / npts
                pos = lt + pts * step
                scaled = ns(pos)
                s = torch.sum(1 / scaled) * step
                denoised_d = (denoised - old_denoised) / (ls - lam[i - 1])
                x = x + alpha_t * (dt + s * ns(lt)) * denoised_d
                if stage >= 3:
                    s_u = torch.sum((pos - ls) / scaled) * step
                    denoised_u = (denoised_d - old_denoised_d) / ((ls - lam[i - 2]) / 2)
                    x = x + alpha_t * ((dt ** 2) / 2 + s_u * ns(lt)) * denoised_u
                old_denoised_d = denoised_d
            if s_noise > 0:
                x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * \
                    (lt ** 2 - ls ** 2 * r ** 2).sqrt().nan_to_num(nan=0.0)
        old_denoised = denoised
    return x


# ---- UniPC (ComfyUI comfy/extra_samplers/uni_pc.py, from wl-zhao/UniPC) ----------------

def _lmc(s):
    return 0.5 * torch.log(1 / (s * s + 1))


def _alpha(s):
    return torch.exp(_lmc(s))


def _std(s):
    return torch.sqrt(1.0 - torch.exp(2.0 * _lmc(s)))


def _lambda(s):
    m = _lmc(s)
    return m - 0.5 * torch.log(1.0 - torch.exp(2.0 * m))


def comfy_unipc(model, noise, sigmas, callback, variant="bh1", info=None):
    """ComfyUI comfy/extra_samplers/uni_pc.py sample_unipc / sample_unipc_bh2: SigmaConvert noise schedule,
    model_wrapper(model_type='noise') around predict_eps_sigma, UniPC(predict_x0=True).sample(method='multistep',
    order=min(3, len(sigmas)-2), lower_order_final=True). A final sigma of 0 is replaced by 0.001 and the result
    divided by alpha(0.001). The callback reports only i, x, denoised (= model_prev_list[-1])."""
    ts = sigmas.clone()
    if sigmas[-1] == 0:
        ts[-1] = 0.001
    x = noise / torch.sqrt(1.0 + ts[0] ** 2.0)

    def model_fn(xv, s):
        inp = xv * ((s ** 2 + 1.0) ** 0.5)
        eps = (inp - model(inp, s)) / s
        return (xv - _std(s) * eps) / _alpha(s)

    def update(xv, model_prev_list, t_prev_list, t, order, use_corrector):
        t_prev_0 = t_prev_list[-1]
        lambda_prev_0 = _lambda(t_prev_0)
        lambda_t = _lambda(t)
        model_prev_0 = model_prev_list[-1]
        sigma_prev_0, sigma_t = _std(t_prev_0), _std(t)
        alpha_t = torch.exp(_lmc(t))
        h = lambda_t - lambda_prev_0
        rks, D1s = [], []
        for i in range(1, order):
            t_prev_i = t_prev_list[-(i + 1)]
            rk = (_lambda(t_prev_i) - lambda_prev_0) / h
            rks.append(rk)
            D1s.append((model_prev_list[-(i + 1)] - model_prev_0) / rk)
        rks.append(torch.tensor(1.0, dtype=F64))
        rks = torch.stack([torch.as_tensor(r, dtype=F64) for r in rks])
        hh = -h
        h_phi_1 = torch.expm1(hh)
        B_h = hh if variant == "bh1" else torch.expm1(hh)
        h_phi_k = torch.expm1(hh) / hh - 1
        fact = 1
        R, b = [], []
        for i in range(1, order + 1):
            R.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * fact / B_h)
            fact *= (i + 1)
            h_phi_k = h_phi_k / hh - 1 / fact
        R = torch.stack(R)
        b = torch.stack(b)
        if len(D1s) > 0:
            rhos_p = torch.tensor([0.5], dtype=F64) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        rhos_c = torch.tensor([0.5], dtype=F64) if order == 1 else torch.linalg.solve(R, b)
        x_t_ = (sigma_t / sigma_prev_0) * xv - (alpha_t * h_phi_1) * model_prev_0
        pred_res = sum(rhos_p[k] * D1s[k] for k in range(len(D1s))) if D1s else 0
        x_t = x_t_ - (alpha_t * B_h) * pred_res
        model_t = None
        if use_corrector:
            model_t = model_fn(x_t, t)
            corr_res = sum(rhos_c[k] * D1s[k] for k in range(len(D1s))) if D1s else 0
            D1_t = model_t - model_prev_0
            x_t = x_t_ - (alpha_t * B_h) * (corr_res + rhos_c[-1] * D1_t)
        return x_t, model_t

    order = min(3, len(ts) - 2)
    steps = len(ts) - 1
    if info is not None:
        info["unipc_order"] = order
        info["unipc_timesteps"] = tl(ts)
    model_prev_list, t_prev_list = None, None
    for step_index in range(steps):
        if step_index == 0:
            model_prev_list = [model_fn(x, ts[0])]
            t_prev_list = [ts[0]]
        elif step_index < order:
            init_order = step_index
            vt = ts[init_order]
            x, mx = update(x, model_prev_list, t_prev_list, vt, init_order, True)
            if mx is None:
                mx = model_fn(x, vt)
            model_prev_list.append(mx)
            t_prev_list.append(vt)
        else:
            extra = 1 if step_index == steps - 1 else 0
            for step in range(step_index, step_index + 1 + extra):
                vt = ts[step]
                step_order = min(order, steps + 1 - step)
                use_corrector = step != steps
                x, mx = update(x, model_prev_list, t_prev_list, vt, step_order, use_corrector)
                for k in range(order - 1):
                    t_prev_list[k] = t_prev_list[k + 1]
                    model_prev_list[k] = model_prev_list[k + 1]
                t_prev_list[-1] = vt
                if step < steps:
                    if mx is None:
                        mx = model_fn(x, vt)
                    model_prev_list[-1] = mx
        # ComfyUI reports only i, x, denoised; 'sigma' (added here) is the noise level of x:
        # ts[step_index], or ts[steps] after the final step. x is the internal VP-scaled state.
        cur = ts[steps] if step_index == steps - 1 else ts[step_index]
        callback({"x": x, "i": step_index, "sigma": cur, "denoised": model_prev_list[-1]})
    return x / _alpha(ts[-1])


def a1111_restart(model, x, sigmas, callback, s_noise=1.0, restart_list=None, info=None):
    """AUTOMATIC1111 modules/sd_samplers_extra.py restart_sampler (Restart Sampling, arXiv 2306.14878).
    Noise comes from torch.randn_like (patched). Callback 'sigma' is the step's target sigma and
    'sigma_hat' its start sigma, as in the original."""
    step_id = [0]

    def heun_step(x, old_sigma, new_sigma):
        denoised = model(x, old_sigma)
        d = to_d(x, old_sigma, denoised)
        callback({"x": x, "i": step_id[0], "sigma": new_sigma, "sigma_hat": old_sigma, "denoised": denoised})
        dt = new_sigma - old_sigma
        if new_sigma == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, new_sigma, model(x_2, new_sigma))
            x = x + (d + d_2) / 2 * dt
        step_id[0] += 1
        return x

    steps = sigmas.shape[0] - 1
    if restart_list is None:
        if steps >= 20:
            restart_steps = 9
            restart_times = 1
            if steps >= 36:
                restart_steps = steps // 4
                restart_times = 2
            sigmas = K.get_sigmas_karras(steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item())
            restart_list = {0.1: [restart_steps + 1, restart_times, 2]}
        else:
            restart_list = {}
    rl = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restart_list.items()}
    step_list = []
    for i in range(len(sigmas) - 1):
        step_list.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in rl:
            restart_steps, restart_times, restart_max = rl[i + 1]
            min_idx = i + 1
            max_idx = int(torch.argmin(abs(sigmas - restart_max), dim=0))
            if max_idx < min_idx:
                sr = K.get_sigmas_karras(restart_steps, sigmas[min_idx].item(), sigmas[max_idx].item())[:-1]
                while restart_times > 0:
                    restart_times -= 1
                    step_list.extend(zip(sr[:-1], sr[1:]))
    if info is not None:
        info["restart_effective_sigmas"] = tl(sigmas)
        info["restart_step_list"] = [[float(a), float(b)] for a, b in step_list]
    last = None
    for old_sigma, new_sigma in step_list:
        if last is None:
            last = old_sigma
        elif last < old_sigma:
            x = x + torch.randn_like(x) * s_noise * (old_sigma ** 2 - last ** 2) ** 0.5
        x = heun_step(x, old_sigma, new_sigma)
        last = new_sigma
    return x


# ==================================================================================
# Sampler cases
# ==================================================================================

def seed_of(name):
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def run(cases, name, sigmas_key, sigma_sets, x_inits, runner, *, sampler, source, options=None,
        noise="none", flow=False, x_key="x_T", notes=None, extra_info=False):
    """noise: 'none' (deterministic, no noise source at all), 'discard' (sampler draws noise that it
    multiplies by 0; we count the draws but store nothing), 'record' (store every draw, in order)."""
    model = Model(flow=flow)
    rec = Recorder()
    x0 = x_inits[x_key].clone()
    sig = sigma_sets[sigmas_key].clone() if sigmas_key is not None else None
    src = Noise(seed_of(name + "/" + str(sigmas_key)), (N_POINTS, DIM)) if noise == "record" else Discard()
    info = {} if extra_info else None
    kwargs = {"noise": src}
    if info is not None:
        kwargs["info"] = info
    with patched_randn_like(src.randn_like):
        x = runner(model, x0, sig, rec, **kwargs)
    case = {"name": name, "sampler": sampler, "source": source, "options": options or {}}
    if sigmas_key is not None:
        case["sigmas"] = sigmas_key
    case.update({"x_init": x_key, "nfe": model.nfe, "model_sigmas": model.sigmas,
                 "steps": rec.steps, "x_final": tl(x)})
    if noise == "record":
        case["noise"] = [tl(z) for z in src.noise]
        case["noise_calls"] = src.calls
    else:
        case["noise"] = []
        case["noise_calls"] = []
        if noise == "discard":
            case["discarded_noise_draws"] = src.count
        else:
            assert src.count == 0, name + ": deterministic case drew noise"
    if info:
        case.update(info)
    if notes:
        case["notes"] = notes
    cases.append(case)
    return case


def sampler_cases():
    gen = torch.Generator().manual_seed(X_SEED)
    z = torch.randn(N_POINTS, DIM, generator=gen, dtype=F64)
    sigma_sets = {
        "karras12": K.get_sigmas_karras(12, 0.02, 20.0, rho=7.0),
        "karras6": K.get_sigmas_karras(6, 0.02, 20.0, rho=7.0),
        "karras20": K.get_sigmas_karras(20, 0.02, 20.0, rho=7.0),
    }
    for n in (12, 6):
        fm = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
        fm.set_timesteps(n)
        sigma_sets["flow_shift3_n%d" % n] = fm.sigmas.to(F64)
    x_inits = {"x_T": 20.0 * z, "z": z.clone()}
    cases = []
    KD = "k-diffusion 0.1.1 k_diffusion.sampling."
    CF = "ComfyUI comfy/k_diffusion/sampling.py "

    def kd(fn, **kw):
        return lambda m, x, s, cb, noise, **_: fn(m, x, s, callback=cb, disable=True, **kw)

    def kd_ns(fn, **kw):
        return lambda m, x, s, cb, noise, **_: fn(m, x, s, callback=cb, disable=True, noise_sampler=noise.sampler, **kw)

    inf = float("inf")
    for sk in ("karras12", "karras6"):
        run(cases, "euler", sk, sigma_sets, x_inits, kd(K.sample_euler), sampler="euler",
            source=KD + "sample_euler", noise="discard",
            notes="k-diffusion draws torch.randn_like once per step even without churn; unused (gamma = 0)")
        run(cases, "euler_churn", sk, sigma_sets, x_inits, kd(K.sample_euler, s_churn=1.0, s_tmin=0.0, s_tmax=inf, s_noise=1.0),
            sampler="euler", source=KD + "sample_euler", options={"s_churn": 1.0, "s_tmin": 0.0, "s_tmax": "inf", "s_noise": 1.0},
            noise="record")
        run(cases, "euler_ancestral", sk, sigma_sets, x_inits, kd_ns(K.sample_euler_ancestral, eta=1.0, s_noise=1.0),
            sampler="euler_ancestral", source=KD + "sample_euler_ancestral", options={"eta": 1.0, "s_noise": 1.0}, noise="record")
        run(cases, "heun", sk, sigma_sets, x_inits, kd(K.sample_heun), sampler="heun", source=KD + "sample_heun",
            noise="discard", notes="randn_like drawn once per step and unused (gamma = 0)")
        run(cases, "heun_churn", sk, sigma_sets, x_inits, kd(K.sample_heun, s_churn=1.0, s_tmin=0.0, s_tmax=inf, s_noise=1.0),
            sampler="heun", source=KD + "sample_heun", options={"s_churn": 1.0, "s_tmin": 0.0, "s_tmax": "inf", "s_noise": 1.0},
            noise="record")
        run(cases, "dpm_2", sk, sigma_sets, x_inits, kd(K.sample_dpm_2), sampler="dpm_2", source=KD + "sample_dpm_2",
            noise="discard", notes="randn_like drawn once per step and unused (gamma = 0)")
        run(cases, "dpm_2_ancestral", sk, sigma_sets, x_inits, kd_ns(K.sample_dpm_2_ancestral, eta=1.0, s_noise=1.0),
            sampler="dpm_2_ancestral", source=KD + "sample_dpm_2_ancestral", options={"eta": 1.0, "s_noise": 1.0}, noise="record")
        run(cases, "lms", sk, sigma_sets, x_inits, kd(K.sample_lms, order=4), sampler="lms", source=KD + "sample_lms",
            options={"order": 4})
        nsteps = len(sigma_sets[sk]) - 1
        fast = lambda eta: (lambda m, x, s, cb, noise, **_: K.sample_dpm_fast(
            m, x, 0.02, 20.0, nsteps, callback=cb, disable=True, eta=eta, s_noise=1.0, noise_sampler=noise.sampler))
        run(cases, "dpm_fast", sk, sigma_sets, x_inits, fast(0.0), sampler="dpm_fast", source=KD + "sample_dpm_fast",
            options={"sigma_min": 0.02, "sigma_max": 20.0, "n": nsteps, "eta": 0.0, "s_noise": 1.0}, noise="discard",
            notes="dpm_fast ignores the sigmas list: it uses sigma_min, sigma_max and n (= NFE). With eta = 0 k-diffusion still "
                  "calls noise_sampler after every step and multiplies it by 0")
        run(cases, "dpmpp_2s_ancestral", sk, sigma_sets, x_inits, kd_ns(K.sample_dpmpp_2s_ancestral, eta=1.0, s_noise=1.0),
            sampler="dpmpp_2s_ancestral", source=KD + "sample_dpmpp_2s_ancestral", options={"eta": 1.0, "s_noise": 1.0}, noise="record")
        run(cases, "dpmpp_sde", sk, sigma_sets, x_inits, kd_ns(K.sample_dpmpp_sde, eta=1.0, s_noise=1.0, r=0.5),
            sampler="dpmpp_sde", source=KD + "sample_dpmpp_sde", options={"eta": 1.0, "s_noise": 1.0, "r": 0.5}, noise="record")
        run(cases, "dpmpp_sde_eta0", sk, sigma_sets, x_inits, kd_ns(K.sample_dpmpp_sde, eta=0.0, s_noise=1.0, r=0.5),
            sampler="dpmpp_sde", source=KD + "sample_dpmpp_sde", options={"eta": 0.0, "s_noise": 1.0, "r": 0.5}, noise="discard",
            notes="eta = 0: deterministic; k-diffusion still calls noise_sampler twice per step and multiplies by su = 0")
        run(cases, "dpmpp_2m", sk, sigma_sets, x_inits, kd(K.sample_dpmpp_2m), sampler="dpmpp_2m", source=KD + "sample_dpmpp_2m")
        for st in ("midpoint", "heun"):
            run(cases, "dpmpp_2m_sde_" + st, sk, sigma_sets, x_inits,
                kd_ns(K.sample_dpmpp_2m_sde, eta=1.0, s_noise=1.0, solver_type=st), sampler="dpmpp_2m_sde",
                source=KD + "sample_dpmpp_2m_sde", options={"eta": 1.0, "s_noise": 1.0, "solver_type": st}, noise="record")
            run(cases, "dpmpp_2m_sde_%s_eta0" % st, sk, sigma_sets, x_inits,
                kd_ns(K.sample_dpmpp_2m_sde, eta=0.0, s_noise=1.0, solver_type=st), sampler="dpmpp_2m_sde",
                source=KD + "sample_dpmpp_2m_sde", options={"eta": 0.0, "s_noise": 1.0, "solver_type": st})
        run(cases, "dpmpp_3m_sde", sk, sigma_sets, x_inits, kd_ns(K.sample_dpmpp_3m_sde, eta=1.0, s_noise=1.0),
            sampler="dpmpp_3m_sde", source=KD + "sample_dpmpp_3m_sde", options={"eta": 1.0, "s_noise": 1.0}, noise="record")
        run(cases, "dpmpp_3m_sde_eta0", sk, sigma_sets, x_inits, kd_ns(K.sample_dpmpp_3m_sde, eta=0.0, s_noise=1.0),
            sampler="dpmpp_3m_sde", source=KD + "sample_dpmpp_3m_sde", options={"eta": 0.0, "s_noise": 1.0})

        # ---- ComfyUI / other ports ----
        run(cases, "ddim", sk, sigma_sets, x_inits, kd(K.sample_euler), sampler="ddim",
            source="ComfyUI comfy/samplers.py sampler_object('ddim') = ksampler('euler'): k-diffusion sample_euler",
            options={"eta": 0.0}, noise="discard",
            notes="ComfyUI's 'ddim' is Euler on the sigmas (DDIM eta=0 == Euler in x/sqrt(alpha_bar), sigma coordinates)")
        run(cases, "ddpm", sk, sigma_sets, x_inits,
            lambda m, x, s, cb, noise, **_: comfy_ddpm(m, x, s, cb, noise.sampler),
            sampler="ddpm", source=CF + "sample_ddpm (generic_step_sampler + DDPMSampler_step)", noise="record")
        run(cases, "lcm", sk, sigma_sets, x_inits,
            lambda m, x, s, cb, noise, **_: comfy_lcm(m, x, s, cb, noise.sampler),
            sampler="lcm", source=CF + "sample_lcm (EPS noise_scaling)", noise="record")
        run(cases, "heunpp2", sk, sigma_sets, x_inits, lambda m, x, s, cb, noise, **_: comfy_heunpp2(m, x, s, cb),
            sampler="heunpp2", source=CF + "sample_heunpp2")
        run(cases, "ipndm", sk, sigma_sets, x_inits, lambda m, x, s, cb, noise, **_: comfy_ipndm(m, x, s, cb),
            sampler="ipndm", source=CF + "sample_ipndm", options={"max_order": 4},
            notes="ComfyUI's callback passes the initial x at every step; steps[].x here is the current state")
        run(cases, "ipndm_v", sk, sigma_sets, x_inits, lambda m, x, s, cb, noise, **_: comfy_ipndm_v(m, x, s, cb),
            sampler="ipndm_v", source=CF + "sample_ipndm_v", options={"max_order": 4},
            notes="ComfyUI's callback passes the initial x at every step; steps[].x here is the current state")
        run(cases, "deis", sk, sigma_sets, x_inits, lambda m, x, s, cb, noise, info=None, **_: comfy_deis(m, x, s, cb, 3, info),
            sampler="deis", source=CF + "sample_deis + comfy/k_diffusion/deis.py get_deis_coeff_list(deis_mode='tab')",
            options={"max_order": 3, "deis_mode": "tab"}, extra_info=True,
            notes="ComfyUI's callback passes the initial x at every step; steps[].x here is the current state")
        run(cases, "res_multistep", sk, sigma_sets, x_inits,
            lambda m, x, s, cb, noise, **_: comfy_res_multistep(m, x, s, cb, noise.sampler, 1.0, 0.0),
            sampler="res_multistep", source=CF + "res_multistep / sample_res_multistep", options={"eta": 0.0})
        run(cases, "res_multistep_ancestral", sk, sigma_sets, x_inits,
            lambda m, x, s, cb, noise, **_: comfy_res_multistep(m, x, s, cb, noise.sampler, 1.0, 1.0),
            sampler="res_multistep", source=CF + "res_multistep / sample_res_multistep_ancestral",
            options={"eta": 1.0, "s_noise": 1.0}, noise="record")
        run(cases, "er_sde", sk, sigma_sets, x_inits,
            lambda m, x, s, cb, noise, **_: comfy_er_sde(m, x, s, cb, noise.sampler, 1.0),
            sampler="er_sde", source=CF + "sample_er_sde", options={"s_noise": 1.0, "max_stage": 3}, noise="record")
        run(cases, "er_sde_s_noise0", sk, sigma_sets, x_inits,
            lambda m, x, s, cb, noise, **_: comfy_er_sde(m, x, s, cb, noise.sampler, 0.0),
            sampler="er_sde", source=CF + "sample_er_sde", options={"s_noise": 0.0, "max_stage": 3})
        for v in ("bh1", "bh2"):
            run(cases, "unipc_" + v, sk, sigma_sets, x_inits,
                lambda m, x, s, cb, noise, info=None, v=v, **_: comfy_unipc(m, x, s, cb, v, info),
                sampler="unipc", source="ComfyUI comfy/extra_samplers/uni_pc.py sample_unipc" + ("_bh2" if v == "bh2" else ""),
                options={"variant": v}, extra_info=True)
        run(cases, "restart", sk, sigma_sets, x_inits,
            lambda m, x, s, cb, noise, info=None, **_: a1111_restart(m, x, s, cb, 1.0, {0.1: [4, 2, 2.0]}, info),
            sampler="restart", source="AUTOMATIC1111 modules/sd_samplers_extra.py restart_sampler",
            options={"s_noise": 1.0, "restart_list": [[0.1, 4, 2, 2.0]]}, noise="record", extra_info=True)

    # extra single-set cases
    sk = "karras12"
    run(cases, "euler_churn_window", sk, sigma_sets, x_inits,
        kd(K.sample_euler, s_churn=2.0, s_tmin=0.1, s_tmax=5.0, s_noise=1.0), sampler="euler", source=KD + "sample_euler",
        options={"s_churn": 2.0, "s_tmin": 0.1, "s_tmax": 5.0, "s_noise": 1.0}, noise="record",
        notes="randn_like is drawn every step; only steps with s_tmin <= sigma_i <= s_tmax use it (noise_calls[].used)")
    run(cases, "euler_ancestral_eta0.5", sk, sigma_sets, x_inits, kd_ns(K.sample_euler_ancestral, eta=0.5, s_noise=1.0),
        sampler="euler_ancestral", source=KD + "sample_euler_ancestral", options={"eta": 0.5, "s_noise": 1.0}, noise="record")
    run(cases, "ddim_eta0.5", sk, sigma_sets, x_inits, kd_ns(K.sample_euler_ancestral, eta=0.5, s_noise=1.0),
        sampler="ddim", source="DDIM(eta) in sigma coordinates == k-diffusion sample_euler_ancestral(eta)",
        options={"eta": 0.5, "s_noise": 1.0}, noise="record",
        notes="DDIM with eta in x/sqrt(alpha_bar) coordinates is exactly euler_ancestral(eta): sigma_up = eta*sqrt(s1^2 (s0^2-s1^2)/s0^2)")
    run(cases, "dpm_fast_eta1", sk, sigma_sets, x_inits,
        lambda m, x, s, cb, noise, **_: K.sample_dpm_fast(m, x, 0.02, 20.0, 12, callback=cb, disable=True, eta=1.0,
                                                        s_noise=1.0, noise_sampler=noise.sampler),
        sampler="dpm_fast", source=KD + "sample_dpm_fast",
        options={"sigma_min": 0.02, "sigma_max": 20.0, "n": 12, "eta": 1.0, "s_noise": 1.0}, noise="record")
    run(cases, "dpm_adaptive", None, sigma_sets, x_inits,
        lambda m, x, s, cb, noise, **_: K.sample_dpm_adaptive(
            m, x, 0.02, 20.0, callback=cb, disable=True, order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0,
            icoeff=1.0, dcoeff=0.0, accept_safety=0.81, eta=0.0, s_noise=1.0, noise_sampler=noise.sampler),
        sampler="dpm_adaptive", source=KD + "sample_dpm_adaptive",
        options={"sigma_min": 0.02, "sigma_max": 20.0, "order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05,
                 "pcoeff": 0.0, "icoeff": 1.0, "dcoeff": 0.0, "accept_safety": 0.81, "eta": 0.0, "s_noise": 1.0},
        noise="discard",
        notes="k-diffusion defaults. The error norm is over the whole N x D tensor (one step size for the batch). "
              "steps[] has one entry per attempted step (accepted or rejected); with eta = 0 noise_sampler is called "
              "after each accepted step and multiplied by 0")
    run(cases, "restart_default", "karras20", sigma_sets, x_inits,
        lambda m, x, s, cb, noise, info=None, **_: a1111_restart(m, x, s, cb, 1.0, None, info),
        sampler="restart", source="AUTOMATIC1111 modules/sd_samplers_extra.py restart_sampler",
        options={"s_noise": 1.0}, noise="record", extra_info=True,
        notes="restart_list=None with >= 20 steps: the sigmas are replaced by get_sigmas_karras(steps - 9, sigmas[-2], "
              "sigmas[0]) and restart_list = {0.1: [10, 1, 2]} (see restart_effective_sigmas / restart_step_list)")
    run(cases, "restart_no_list", sk, sigma_sets, x_inits,
        lambda m, x, s, cb, noise, info=None, **_: a1111_restart(m, x, s, cb, 1.0, None, info),
        sampler="restart", source="AUTOMATIC1111 modules/sd_samplers_extra.py restart_sampler",
        options={"s_noise": 1.0}, noise="record", extra_info=True,
        notes="restart_list=None with < 20 steps: no restarts, i.e. plain Heun")

    # flow matching
    for sk in ("flow_shift3_n12", "flow_shift3_n6"):
        run(cases, "euler_flow", sk, sigma_sets, x_inits, kd(K.sample_euler), sampler="euler",
            source=KD + "sample_euler with the flow denoiser (as ComfyUI does for CONST/flow models)",
            noise="discard", flow=True, x_key="z")
        run(cases, "heun_flow", sk, sigma_sets, x_inits, kd(K.sample_heun), sampler="heun",
            source=KD + "sample_heun with the flow denoiser (as ComfyUI does for CONST/flow models)",
            noise="discard", flow=True, x_key="z")

    # mark which recorded draws are actually used (churn with a window)
    for c in cases:
        for call in c["noise_calls"]:
            call["used"] = True
        if c["name"].startswith(("euler_churn", "heun_churn")):
            assert len(c["noise_calls"]) == len(sigma_sets[c["sigmas"]]) - 1
            sig = sigma_sets[c["sigmas"]]
            o = c["options"]
            smax = inf if o["s_tmax"] == "inf" else o["s_tmax"]
            for i, call in enumerate(c["noise_calls"]):
                call["used"] = bool(o["s_churn"] > 0 and o["s_tmin"] <= float(sig[i]) <= smax)
    return cases, sigma_sets, x_inits, z


# ==================================================================================
# diffusers cross-checks (VP / eps parametrisation)
# ==================================================================================

class RandnQueue:
    """Stands in for diffusers.utils.torch_utils.randn_tensor inside one scheduler module."""

    def __init__(self, seed):
        self.gen = torch.Generator().manual_seed(seed)
        self.noise = []

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        z = torch.randn(tuple(shape), generator=self.gen, dtype=F64)
        self.noise.append(z)
        return z


def diffusers_cases(z):
    import diffusers.schedulers.scheduling_ddim as m_ddim
    import diffusers.schedulers.scheduling_ddpm as m_ddpm
    import diffusers.schedulers.scheduling_lcm as m_lcm

    base = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    specs = [
        ("ddim_eta0", DDIMScheduler, dict(clip_sample=False), 12, {"eta": 0.0}, m_ddim),
        ("ddim_eta1", DDIMScheduler, dict(clip_sample=False), 12, {"eta": 1.0}, m_ddim),
        ("ddpm", DDPMScheduler, dict(clip_sample=False), 12, {}, m_ddpm),
        # bh1 with the default final_sigmas_type="zero" returns NaN in diffusers 0.42 (B(h) = h = -inf at the last step)
        ("unipc_bh1", UniPCMultistepScheduler, dict(solver_type="bh1", solver_order=3, final_sigmas_type="sigma_min"), 12, {}, None),
        ("unipc_bh2", UniPCMultistepScheduler, dict(solver_type="bh2", solver_order=3), 12, {}, None),
        ("deis", DEISMultistepScheduler, dict(solver_order=3), 12, {}, None),
        ("lcm", LCMScheduler, dict(), 6, {}, m_lcm),
    ]
    cases = []
    for name, cls, extra, n, step_kw, module in specs:
        sch = cls(**base, **extra)
        sch.set_timesteps(n)
        acp = sch.alphas_cumprod.to(F64)
        nfe = [0]

        def eps_model(xv, t):
            a = acp[int(t)]
            s = ((1 - a) / a).sqrt()
            xk = xv / a.sqrt()
            nfe[0] += 1
            return (xk - gmm_denoise(xk, s)) / s

        q = RandnQueue(seed_of("diffusers_" + name))
        orig = getattr(module, "randn_tensor", None) if module is not None else None
        if module is not None:
            module.randn_tensor = q
        # diffusers builds its internal tensors with the default dtype and mixes them with its
        # float32 buffers; run it with the stock default (float32). Samples stay float64.
        torch.set_default_dtype(torch.float32)
        try:
            x = z.clone() * float(sch.init_noise_sigma)
            traj = []
            for t in sch.timesteps:
                xin = sch.scale_model_input(x, t)
                eps = eps_model(xin, t)
                out = sch.step(eps, t, x, **step_kw)
                x = out.prev_sample.to(F64)
                rec = {"timestep": float(t), "x": tl(x)}
                pos = getattr(out, "pred_original_sample", None)
                if pos is None:
                    pos = getattr(out, "denoised", None)
                if pos is not None:
                    rec["pred_original_sample"] = tl(pos)
                traj.append(rec)
        finally:
            torch.set_default_dtype(F64)
            if module is not None:
                module.randn_tensor = orig
        cfg = {k: (v if not isinstance(v, (np.ndarray, torch.Tensor)) else tl(v)) for k, v in dict(sch.config).items()
               if not k.startswith("_")}
        case = {"name": name, "scheduler": cls.__name__, "source": "diffusers %s %s" % (diffusers.__version__, cls.__name__),
                "config": cfg, "n": n, "step_kwargs": step_kw, "timesteps": [float(t) for t in sch.timesteps],
                "x_init": "z", "nfe": nfe[0], "steps": traj, "x_final": tl(x),
                "noise": [tl(v) for v in q.noise]}
        # sigma-space equivalents where the discretisation is identical
        ts = [int(t) for t in sch.timesteps]
        eq_sig = torch.tensor([float(((1 - acp[t]) / acp[t]).sqrt()) for t in ts] + [0.0], dtype=F64)
        x_ve = z.clone() / acp[ts[0]].sqrt()
        if name == "ddim_eta0":
            m = Model()
            xe = K.sample_euler(m, x_ve.clone(), eq_sig, disable=True)
            case["k_equivalent"] = {"sampler": "euler", "sigmas": tl(eq_sig), "x_init": tl(x_ve),
                                    "x_final": tl(xe), "max_abs_diff_vs_diffusers": float((xe - x).abs().max())}
        elif name == "ddim_eta1":
            qn = list(q.noise)
            m = Model()
            xe = K.sample_euler_ancestral(m, x_ve.clone(), eq_sig, disable=True, eta=1.0,
                                          noise_sampler=lambda a, b: qn.pop(0))
            case["k_equivalent"] = {"sampler": "euler_ancestral", "options": {"eta": 1.0}, "sigmas": tl(eq_sig),
                                    "x_init": tl(x_ve), "noise": "the first n-1 entries of this case's noise",
                                    "x_final": tl(xe), "max_abs_diff_vs_diffusers": float((xe - x).abs().max())}
        elif name == "ddpm":
            qn = list(q.noise)
            m = Model()
            xe = comfy_ddpm(m, x_ve.clone(), eq_sig, lambda info: None, lambda a, b: qn.pop(0))
            case["k_equivalent"] = {"sampler": "ddpm", "sigmas": tl(eq_sig), "x_init": tl(x_ve),
                                    "noise": "this case's noise, in order",
                                    "x_final": tl(xe), "max_abs_diff_vs_diffusers": float((xe - x).abs().max())}
        elif name.startswith("unipc"):
            m = Model()
            fs = float(sch.sigmas[-1])
            eq_sig[-1] = fs
            xe = comfy_unipc(m, x_ve.clone(), eq_sig, lambda info: None, name.split("_")[1])
            x_cmp = x * (1.0 + fs * fs) ** 0.5
            case["k_comparison"] = {"sampler": "unipc (ComfyUI port)", "sigmas": tl(eq_sig), "x_init": tl(x_ve),
                                    "x_final": tl(xe), "max_abs_diff_vs_diffusers": float((xe - x_cmp).abs().max()),
                                    "note": "diffusers' x_final (VP scale) times sqrt(1 + sigmas[-1]^2) compared with the ComfyUI "
                                            "port on the same sigmas; ComfyUI replaces a final sigma 0 by 0.001, so an exact "
                                            "match is not expected when sigmas[-1] = 0"}
        cases.append(case)
    return cases


# ==================================================================================

def main():
    schedules = kd_schedules() + discrete_schedules() + comfy_schedules() + flow_and_zsnr_schedules()
    write_list(os.path.join(HERE, "schedules.json"), schedules)

    cases, sigma_sets, x_inits, z = sampler_cases()
    dcases = diffusers_cases(z)
    head = {
        "problem": {
            "kind": "gmm",
            "means": tl(MEANS), "stds": tl(STDS), "weights": tl(WEIGHTS),
            "n_points": N_POINTS, "dim": DIM, "x_seed": X_SEED,
            "flow_convention": "x_t = (1-t) x0 + t eps; D_flow(x,t) = E[x0|x_t] (see README)",
        },
        "sigma_sets": {k: tl(v) for k, v in sigma_sets.items()},
        "x_inits": {"z": tl(z), "x_T": tl(x_inits["x_T"])},
        "denoiser_checks": denoiser_checks(z),
        "diffusers_cases": dcases,
    }
    write_object(os.path.join(HERE, "samplers.json"), head, "cases", cases)

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "diffusers": diffusers.__version__,
        "k-diffusion": getattr(k_diffusion, "__version__", "0.1.1"),
    }
    with open(os.path.join(HERE, "versions.json"), "w") as f:
        f.write(json.dumps(versions, indent=1, sort_keys=True) + "\n")

    self_check(schedules, cases, dcases, z)


def denoiser_checks(z):
    """A few direct evaluations so the Lua gmm denoiser can be tested on its own."""
    pts = torch.cat([z * 3.0, MEANS, torch.tensor([[10.0, -7.0], [0.0, 0.0]], dtype=F64)])
    out = []
    for s in (0.0, 1e-6, 0.02, 0.5, 1.0, 3.0, 20.0, 80.0):
        out.append({"model": "gmm", "sigma": s, "x": tl(pts), "denoised": tl(gmm_denoise(pts, s))})
    for t in (0.0, 0.001, 0.3, 0.7, 0.999, 1.0):
        out.append({"model": "gmm_flow", "t": t, "x": tl(pts), "denoised": tl(gmm_flow_denoise(pts, t))})
    return out


def self_check(schedules, cases, dcases, z):
    msgs = []
    x = z * 3
    d = gmm_denoise(x, 1e-8)
    assert (d - x).abs().max() < 1e-12, "D(x, tiny sigma) should be x"
    msgs.append("gmm D(x,1e-8) - x: %.2e" % float((d - x).abs().max()))
    # flow denoiser agrees with the VE form for t < 1
    for t in (0.1, 0.5, 0.9):
        a = gmm_flow_denoise(x, t)
        b = gmm_denoise(x / (1 - t), t / (1 - t))
        assert (a - b).abs().max() < 1e-12
    big = gmm_denoise(x, 1e6)
    prior_mean = (WEIGHTS[:, None] * MEANS).sum(0)
    msgs.append("gmm D(x,1e6) vs prior mean: %.2e" % float((big - prior_mean).abs().max()))
    for c in cases:
        assert c["nfe"] == len(c["model_sigmas"])
        assert len(c["noise"]) == len(c["noise_calls"])
    for c in dcases:
        for key in ("k_equivalent", "k_comparison"):
            if key in c:
                msgs.append("diffusers %s vs %s: max |diff| %.3e" % (c["name"], c[key]["sampler"], c[key]["max_abs_diff_vs_diffusers"]))
    worst = max((c.get("max_rel_diff_f32_vs_f64", 0.0), c["name"]) for c in schedules)
    msgs.append("worst float32-vs-float64 schedule gap: %.3e (%s)" % worst)
    msgs.append("%d schedule cases, %d sampler cases, %d diffusers cases" % (len(schedules), len(cases), len(dcases)))
    print("\n".join(msgs), file=sys.stderr)


if __name__ == "__main__":
    main()
