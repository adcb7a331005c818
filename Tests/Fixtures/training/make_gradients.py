#!/usr/bin/env python3
"""Reference gradients for Kiri's native training (issue 15): the UNets' backward passes by PyTorch autograd, and a
20-step training run.

Reads the tiny random diffusers UNets of Tests/Fixtures/models/parity (their weights and io.safetensors) and writes,
next to this file (see README.md):
  gradients/CASE.safetensors   one forward of the parity case's model on its inputs, output.backward(grad_output):
                               grad_output, output, x.grad, encoder_hidden_states.grad (with a context) and
                               grad/NAME for every parameter
  steps/unet2d_attention_class.safetensors
                               20 steps of v-prediction training of the unet2d_attention_class model: DDPMScheduler's
                               add_noise / get_velocity, MSE loss, clip_grad_norm_ 1.0, AdamW, an EMA of the weights
  versions.json                the exact library versions

    /work/venv/bin/python Tests/Fixtures/training/make_gradients.py
    /work/venv/bin/python Tests/Fixtures/training/make_gradients.py unet2d unet2d_condition   # other cases only

With no argument it writes the committed gradient cases, the training steps and versions.json; with case names it
writes only those gradient files (the cases not committed, to keep the folder small, can be written this way).
Every run also checks the saved gradients against central finite differences in float64 (printed, not saved).

Everything runs in float32 on the CPU, one thread, deterministic algorithms; a second run writes the same bytes
(the safetensors header's __metadata__ keys are sorted after writing, as safetensors orders them at random).
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

from diffusers import DDPMScheduler, UNet2DConditionModel, UNet2DModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

HERE = os.path.dirname(os.path.abspath(__file__))
PARITY = os.path.normpath(os.path.join(HERE, "..", "models", "parity"))
sys.path.insert(0, PARITY)
import make_parity  # noqa: E402  (its versions.json writer)
WEIGHTS = "diffusion_pytorch_model.safetensors"

# (case, the model's folder inside the case folder). grad_output is drawn with seed 1234 + the index in this list,
# whichever cases are written.
CASES = [
    ("unet2d", ""),
    ("unet2d_attention_class", "unet"),
    ("unet2d_resnet_resampling", ""),
    ("unet2d_condition", ""),
    ("unet2d_condition_sd2", ""),
    ("unet2d_condition_layers", ""),
]
# The cases committed, to keep the folder under 4 MB (all six gradient files are 4.7 MB, the steps file 2.3 MB):
# Downsample2D's asymmetric pad and conv up/down sampling; average-pool / nearest resampling inside ResNet blocks and
# one-head spatial attention; cross-attention transformers with GEGLU, several layers, only_cross_attention and
# center_input_sample. unet2d_attention_class's model (multi-head spatial attention, class labels) is the one the
# steps file trains.
COMMITTED = ["unet2d", "unet2d_resnet_resampling", "unet2d_condition_layers"]

TRAINING_CASE = "unet2d_attention_class"
TRAINING = dict(steps=20, seed=99, batch=4, num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                beta_schedule="linear", prediction_type="v_prediction", loss="mse_mean", max_norm=1.0,
                lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, ema_decay=0.99)


# ----------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------

def save(tensors, path, metadata):
    """save_file, then the header rewritten with the __metadata__ keys sorted (same length, same offsets)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}
    save_file(tensors, path, metadata=metadata)
    with open(path, "r+b") as f:
        length = int.from_bytes(f.read(8), "little")
        raw = f.read(length)
        header = json.loads(raw)
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (length - len(text))
        assert len(text) == length and json.loads(text) == json.loads(raw), path
        f.seek(8)
        f.write(text)


def model_folder(case, subfolder):
    return os.path.join(PARITY, case, subfolder) if subfolder else os.path.join(PARITY, case)


def load_model(folder, dtype=torch.float32):
    with open(os.path.join(folder, "config.json")) as f:
        class_name = json.load(f)["_class_name"]
    cls = {"UNet2DModel": UNet2DModel, "UNet2DConditionModel": UNet2DConditionModel}[class_name]
    model = cls.from_pretrained(folder, torch_dtype=dtype)
    # Train mode; every dropout of these models has p = 0 (checked), so the forward equals eval mode's.
    model.train()
    dropouts = [(n, m.p) for n, m in model.named_modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    assert all(p == 0 for _, p in dropouts), [d for d in dropouts if d[1] != 0]
    return model


def check_names(model, folder):
    with safe_open(os.path.join(folder, WEIGHTS), framework="pt") as f:
        keys = set(f.keys())
    names = {name for name, _ in model.named_parameters()}
    if names != keys:
        print(f"  named_parameters - file: {sorted(names - keys)}", file=sys.stderr)
        print(f"  file - named_parameters: {sorted(keys - names)}", file=sys.stderr)
    assert names == keys, folder


def arguments_of(io, dtype=torch.float32):
    arguments = {}
    if "class_labels" in io:
        arguments["class_labels"] = io["class_labels"].long()
    if "encoder_hidden_states" in io:
        arguments["encoder_hidden_states"] = io["encoder_hidden_states"].to(dtype)
    return arguments


# ----------------------------------------------------------------------------------
# 1. Gradients
# ----------------------------------------------------------------------------------

def write_gradients(index, case, subfolder):
    folder = model_folder(case, subfolder)
    model = load_model(folder)
    check_names(model, folder)
    io = load_file(os.path.join(PARITY, case, "io.safetensors"))

    x = io["x"].clone().requires_grad_(True)
    arguments = arguments_of(io)
    if "encoder_hidden_states" in arguments:
        arguments["encoder_hidden_states"].requires_grad_(True)
    output = model(x, io["timesteps"], **arguments).sample
    drift = ((output.detach() - io["output"]).abs().max() / io["output"].abs().max()).item()
    grad_output = torch.randn(output.shape, generator=torch.Generator().manual_seed(1234 + index))
    output.backward(grad_output)

    tensors = {"grad_output": grad_output, "output": output, "x.grad": x.grad}
    if "encoder_hidden_states" in arguments:
        tensors["encoder_hidden_states.grad"] = arguments["encoder_hidden_states"].grad
    unused = []
    for name, parameter in model.named_parameters():
        if parameter.grad is None:
            unused.append(name)
            tensors["grad/" + name] = torch.zeros_like(parameter)
        else:
            tensors["grad/" + name] = parameter.grad
    parameters = sum(1 for _ in model.parameters())
    path = os.path.join(HERE, "gradients", case + ".safetensors")
    save(tensors, path, {"case": case, "parameters": str(parameters), "unused": ",".join(unused)})
    print(f"{case}: {parameters} parameter tensors ({sum(p.numel() for p in model.parameters())} values), "
          f"grad None: {unused or 'none'}, output vs parity io {drift:.2g}, {os.path.getsize(path)} bytes",
          file=sys.stderr)
    finite_differences(index, case, folder, io, tensors)


def finite_differences(index, case, folder, io, saved, count=3, h=1e-5):
    """Central differences of <grad_output, output> in float64 at `count` random entries of x and of the parameters,
    against the saved float32 gradients (relative error by the largest |gradient| of the tensor)."""
    model = load_model(folder, torch.float64)
    grad_output = saved["grad_output"].double()
    arguments = arguments_of(io, torch.float64)
    x = io["x"].double()
    parameters = dict(model.named_parameters())

    def objective(x_value):
        with torch.no_grad():
            return (model(x_value, io["timesteps"], **arguments).sample * grad_output).sum().item()

    generator = torch.Generator().manual_seed(4321 + index)
    worst = 0.0
    lines = []
    for k in torch.randint(0, x.numel(), (count,), generator=generator).tolist():
        plus, minus = x.clone(), x.clone()
        plus.view(-1)[k] += h
        minus.view(-1)[k] -= h
        estimate = (objective(plus) - objective(minus)) / (2 * h)
        value = saved["x.grad"].view(-1)[k].item()
        error = abs(estimate - value) / saved["x.grad"].abs().max().item()
        worst = max(worst, error)
        lines.append(f"x[{k}] fd {estimate:.6g} saved {value:.6g}")
    names = sorted(parameters)
    for _ in range(count):
        name = names[torch.randint(0, len(names), (1,), generator=generator).item()]
        parameter = parameters[name]
        k = torch.randint(0, parameter.numel(), (1,), generator=generator).item()
        with torch.no_grad():
            original = parameter.view(-1)[k].item()
            parameter.view(-1)[k] = original + h
            f_plus = objective(x)
            parameter.view(-1)[k] = original - h
            f_minus = objective(x)
            parameter.view(-1)[k] = original
        estimate = (f_plus - f_minus) / (2 * h)
        reference = saved["grad/" + name]
        value = reference.view(-1)[k].item()
        error = abs(estimate - value) / max(reference.abs().max().item(), 1e-30)
        worst = max(worst, error)
        lines.append(f"{name}[{k}] fd {estimate:.6g} saved {value:.6g}")
    print(f"  finite differences (float64, h {h}): worst relative error {worst:.2g}; " + "; ".join(lines),
          file=sys.stderr)
    assert worst < 1e-4, (case, worst)


# ----------------------------------------------------------------------------------
# 2. Twenty training steps
# ----------------------------------------------------------------------------------

def write_steps():
    o = TRAINING
    folder = model_folder(TRAINING_CASE, "unet")
    model = load_model(folder)
    check_names(model, folder)
    scheduler = DDPMScheduler(num_train_timesteps=o["num_train_timesteps"], beta_start=o["beta_start"],
                              beta_end=o["beta_end"], beta_schedule=o["beta_schedule"],
                              prediction_type=o["prediction_type"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"],
                                  weight_decay=o["weight_decay"], foreach=False)
    ema = {name: p.detach().clone() for name, p in model.named_parameters()}
    decay = o["ema_decay"]
    generator = torch.Generator().manual_seed(o["seed"])
    shape = (o["batch"], model.config.in_channels, model.config.sample_size, model.config.sample_size)

    tensors = {"alphas_cumprod": scheduler.alphas_cumprod.to(torch.float32)}
    losses = []
    for s in range(o["steps"]):
        x0 = torch.randn(shape, generator=generator)
        noise = torch.randn(shape, generator=generator)
        timesteps = torch.randint(0, o["num_train_timesteps"], (o["batch"],), generator=generator)
        labels = torch.randint(0, model.config.num_class_embeds, (o["batch"],), generator=generator)
        x_t = scheduler.add_noise(x0, noise, timesteps)
        target = scheduler.get_velocity(x0, noise, timesteps)

        prediction = model(x_t, timesteps, class_labels=labels).sample
        loss = F.mse_loss(prediction, target)
        loss.backward()
        total = torch.nn.utils.clip_grad_norm_(model.parameters(), o["max_norm"])
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            for name, p in model.named_parameters():
                ema[name].sub_((1 - decay) * (ema[name] - p))   # diffusers' EMAModel.step with a fixed decay

        if s == 0:
            tensors["step.0.x0"] = x0
            tensors["step.0.noise"] = noise
        tensors[f"step.{s}.x_t"] = x_t
        tensors[f"step.{s}.timesteps"] = timesteps.float()
        tensors[f"step.{s}.labels"] = labels.float()
        tensors[f"step.{s}.target"] = target
        tensors[f"step.{s}.loss"] = loss.detach().reshape(1)
        tensors[f"step.{s}.grad_norm"] = total.detach().reshape(1)
        losses.append(f"{loss.item():.4f}/{total.item():.3f}")
    for name, p in model.named_parameters():
        tensors["final/" + name] = p
    for name, e in ema.items():
        tensors["ema/" + name] = e

    parameters = sum(1 for _ in model.parameters())
    path = os.path.join(HERE, "steps", TRAINING_CASE + ".safetensors")
    save(tensors, path, {"case": TRAINING_CASE, "parameters": str(parameters),
                         "options": json.dumps(o, sort_keys=True)})
    print(f"steps/{TRAINING_CASE}: {o['steps']} steps, loss/grad_norm {' '.join(losses)}, "
          f"{os.path.getsize(path)} bytes", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", metavar="CASE",
                        help="write only these gradient cases, not the steps or versions.json "
                             "(default: the committed cases, the steps and versions.json)")
    arguments = parser.parse_args()
    known = [name for name, _ in CASES]
    unknown = set(arguments.cases) - set(known)
    if unknown:
        parser.error(f"unknown case {', '.join(sorted(unknown))} (cases: {', '.join(known)})")
    chosen = arguments.cases or COMMITTED
    for index, (case, subfolder) in enumerate(CASES):
        if case in chosen:
            write_gradients(index, case, subfolder)
    if not arguments.cases:
        write_steps()
        make_parity.write_versions(HERE)


if __name__ == "__main__":
    main()
