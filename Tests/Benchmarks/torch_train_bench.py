#!/usr/bin/env python3
"""PyTorch's time for one training step of a diffusers UNet, on 2 threads: Kiri's `kiri bench train` baseline.

A step is what Scripts/train.lua does per batch: the forward at random timesteps and class labels, the MSE loss
against a random target, the backward, clip_grad_norm_(1.0), an AdamW step and zeroing the gradients. The network
is the config's, newly initialised (the time does not depend on the weights).

    /work/venv/bin/python Tests/Benchmarks/torch_train_bench.py CONFIG.json --batch 128 [--runs 10] [--gradient-checkpointing]

Prints "batch N: median X ms min Y ms", then the peak RSS of the process.
"""
import argparse
import platform
import resource
import statistics
import time

import torch
import torch.nn.functional as F

import diffusers
from diffusers import UNet2DModel, UNet2DConditionModel

parser = argparse.ArgumentParser()
parser.add_argument("config")
parser.add_argument("--batch", type=int, default=128)
parser.add_argument("--runs", type=int, default=10)
parser.add_argument("--warmup", type=int, default=2)
parser.add_argument("--gradient-checkpointing", action="store_true")
args = parser.parse_args()
torch.set_num_threads(2)
torch.manual_seed(0)

config = UNet2DModel.load_config(args.config)
model_class = UNet2DConditionModel if config["_class_name"] == "UNet2DConditionModel" else UNet2DModel
model = model_class.from_config(config).train()
if args.gradient_checkpointing:
    model.enable_gradient_checkpointing()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
size = config.get("sample_size", 32)
x = torch.randn(args.batch, config["in_channels"], size, size)
target = torch.randn_like(x)
t = torch.randint(0, 1000, (args.batch,))
extra = {}
if config.get("num_class_embeds"):
    extra["class_labels"] = torch.arange(args.batch) % config["num_class_embeds"]
if model_class is UNet2DConditionModel:
    extra["encoder_hidden_states"] = torch.randn(args.batch, 77, config["cross_attention_dim"])

times = []
for i in range(args.warmup + args.runs):
    start = time.perf_counter()
    loss = F.mse_loss(model(x, t, **extra).sample, target)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
    elapsed = time.perf_counter() - start
    if i >= args.warmup:
        times.append(elapsed * 1e3)
times.sort()
print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, Python {platform.python_version()}, "
      f"{torch.get_num_threads()} threads, {args.runs} timed steps after {args.warmup}"
      + (", gradient checkpointing" if args.gradient_checkpointing else ""))
print(f"batch {args.batch}: median {statistics.median(times):.1f} ms min {times[0]:.1f} ms")
print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
