"""Reference for Kiri's training-policy plugins (issue 15): Plugins/losses, Plugins/lr_schedules and
Plugins/lib/training.lua, checked by Tests/KiriLuaTests/TrainingPolicyTests.swift.

Losses and gradients from torch.nn.functional and autograd on fixed seeded inputs (written too), diffusers'
DDPMScheduler.add_noise / get_velocity and compute_snr, the min-SNR weights as diffusers'
examples/text_to_image/train_text_to_image.py computes them, and the learning rate per step of diffusers'
get_constant_schedule_with_warmup and get_cosine_schedule_with_warmup under torch's LambdaLR.
Float32 tensors are written as exact decimals of their float32 values (Python's repr of the double they equal).

    /work/venv/bin/python Tests/Fixtures/training/make_policy.py > Tests/Fixtures/training/policy.json
"""
import json
import sys

import diffusers
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.optimization import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup
from diffusers.training_utils import compute_snr

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
generator = torch.Generator().manual_seed(20240615)
SHAPE = (4, 2, 3, 3)


def values(tensor):
    return tensor.detach().to(torch.float32).flatten().tolist()


def loss_and_grad(function, prediction, target):
    """The loss function(prediction, target) and d loss / d prediction by autograd."""
    prediction = prediction.clone().requires_grad_(True)
    loss = function(prediction, target)
    loss.backward()
    return {"loss": float(loss.detach()), "grad": values(prediction.grad)}


def weighted(elementwise, weights):
    """diffusers train_text_to_image.py's per-sample weighting of an elementwise loss (reduction="none")."""
    def function(prediction, target):
        loss = elementwise(prediction.float(), target.float())
        loss = loss.mean(dim=list(range(1, len(loss.shape)))) * weights
        return loss.mean()
    return function


prediction = torch.randn(SHAPE, generator=generator) * 1.5
target = torch.randn(SHAPE, generator=generator)
weights = torch.tensor([0.3, 1.7, 0.9, 2.5], dtype=torch.float32)
x0 = torch.randn(SHAPE, generator=generator)
noise = torch.randn(SHAPE, generator=generator)
timesteps = torch.tensor([0, 17, 500, 999], dtype=torch.int64)

# The default model's training schedule (Sources/Kiri/Resources/models/fashion-mnist/scheduler_config.json).
scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear")

losses = {
    "mse": loss_and_grad(lambda p, t: F.mse_loss(p, t), prediction, target),
    "mse_weighted": loss_and_grad(weighted(lambda p, t: F.mse_loss(p, t, reduction="none"), weights),
                                  prediction, target),
    "huber": loss_and_grad(lambda p, t: F.huber_loss(p, t), prediction, target),
    "huber_delta_0.5": loss_and_grad(lambda p, t: F.huber_loss(p, t, delta=0.5), prediction, target),
    "huber_delta_0.5_weighted": loss_and_grad(
        weighted(lambda p, t: F.huber_loss(p, t, reduction="none", delta=0.5), weights), prediction, target),
}

# train_text_to_image.py with --snr_gamma 5: compute_snr, then the weights per prediction type.
snr_gamma = 5.0
snr = compute_snr(scheduler, timesteps)
min_snr = {}
for prediction_type in ["epsilon", "v_prediction", "sample"]:
    mse_loss_weights = torch.stack([snr, snr_gamma * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
    if prediction_type == "epsilon":
        mse_loss_weights = mse_loss_weights / snr
    elif prediction_type == "v_prediction":
        mse_loss_weights = mse_loss_weights / (snr + 1)
    case = loss_and_grad(weighted(lambda p, t: F.mse_loss(p, t, reduction="none"), mse_loss_weights),
                         prediction, target)
    case["weights"] = values(mse_loss_weights)
    min_snr[prediction_type] = case


def learning_rates(make, steps, lr):
    """optimizer.param_groups[0]["lr"] at steps 0..steps-1, one optimiser and scheduler step apart."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    schedule = make(optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


lr_schedules = [
    {"name": "constant", "opts": {"lr": 1e-3}, "steps": 8,
     "lr": learning_rates(lambda o: get_constant_schedule_with_warmup(o, 0), 8, 1e-3)},
    {"name": "constant", "opts": {"lr": 3e-4, "warmup": 7}, "steps": 12,
     "lr": learning_rates(lambda o: get_constant_schedule_with_warmup(o, 7), 12, 3e-4)},
    {"name": "cosine", "opts": {"lr": 3e-4, "warmup": 7, "total": 40}, "steps": 48,
     "lr": learning_rates(lambda o: get_cosine_schedule_with_warmup(o, 7, 40), 48, 3e-4)},
    {"name": "cosine", "opts": {"lr": 1e-4, "total": 13, "num_cycles": 1.25}, "steps": 20,
     "lr": learning_rates(lambda o: get_cosine_schedule_with_warmup(o, 0, 13, num_cycles=1.25), 20, 1e-4)},
]

record = {
    "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "diffusers": diffusers.__version__},
    "shape": list(SHAPE),
    "inputs": {"prediction": values(prediction), "target": values(target), "weights": values(weights),
               "x0": values(x0), "noise": values(noise), "timesteps": timesteps.tolist()},
    "schedule": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02, "num_train_timesteps": 1000,
                 "alphas_cumprod": values(scheduler.alphas_cumprod)},
    "add_noise": values(scheduler.add_noise(x0, noise, timesteps)),
    "get_velocity": values(scheduler.get_velocity(x0, noise, timesteps)),
    "snr": values(snr),
    "losses": losses,
    "min_snr": {"gamma": snr_gamma, "cases": min_snr},
    "lr_schedules": lr_schedules,
}
json.dump(record, sys.stdout, indent=None, separators=(",", ":"))
print()
