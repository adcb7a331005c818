#!/usr/bin/env python3
"""Trains Kiri's default model and the classifier its quality test uses, on Fashion-MNIST.

Data: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist). Images are 28x28 grey, scaled to [-1, 1].

  classifier  a 784-256-10 MLP on pixels in [0, 1], for Tests/Fixtures/fashion-classifier/ (seconds).
  train       a class-conditional diffusers UNet2DModel, v prediction (Salimans & Ho 2022) on the DDPM linear
              schedule (1000 steps, betas 1e-4..0.02). Classes 0-9 are Fashion-MNIST's labels; class 10 is the
              null class, which replaces the label 15% of the time so classifier-free guidance works. A
              checkpoint is written every --checkpoint-every steps and a stopped run resumes from it.
              Not eps: this schedule ends at sigma 157, where an eps model's error is multiplied by sigma in
              its estimate of x0; deterministic samplers starting there drifted into noise or saturation for
              some seeds. v keeps that estimate bounded.
  parity      the shipped model's output in diffusers for a few inputs, for Kiri's parity test.
  export      the EMA weights as float16 safetensors with config.json and scheduler_config.json, plus
              training.json (data, class names, seed, steps), into the package resource folder.

The default model was made with (a venv with torch and diffusers from PyPI):

    python Tools/train_default_model.py classifier --out Tests/Fixtures/fashion-classifier
    python Tools/train_default_model.py train --checkpoint /work/train_v --steps 2500 --seed 1234
    python Tools/train_default_model.py export --checkpoint /work/train_v --out Sources/Kiri/Resources/models/fashion-mnist
    python Tools/train_default_model.py parity --model Sources/Kiri/Resources/models/fashion-mnist \
        --out Tests/Fixtures/models/parity/fashion-mnist/io.safetensors
"""
import argparse
import gzip
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import save_file

DATA = "/usr/share/datasets/fashion-mnist"
LABELS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
NULL_CLASS = len(LABELS)
torch.set_num_threads(2)


def load_split(split):
    """(images uint8 [N, 28, 28], labels int64 [N]) from the idx files."""
    with gzip.open(f"{DATA}/{split}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(f"{DATA}/{split}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def make_unet():
    return UNet2DModel(
        sample_size=28, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim=32, norm_num_groups=16, num_class_embeds=NULL_CLASS + 1)


def make_scheduler():
    return DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                         prediction_type="v_prediction")


def classifier(args):
    torch.manual_seed(args.seed)
    images, labels = load_split("train")
    test_images, test_labels = load_split("t10k")
    x, xt = images.view(-1, 784).float() / 255, test_images.view(-1, 784).float() / 255
    net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(256, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for epoch in range(15):
        net.train()
        for batch in torch.randperm(len(x)).split(128):
            loss = F.cross_entropy(net(x[batch]), labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            accuracy = (net(xt).argmax(1) == test_labels).float().mean().item()
        print(f"epoch {epoch + 1}: test accuracy {accuracy:.4f}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    weights = {"fc1.weight": net[0].weight, "fc1.bias": net[0].bias, "fc2.weight": net[3].weight, "fc2.bias": net[3].bias}
    save_file({k: v.detach().contiguous() for k, v in weights.items()}, f"{args.out}/classifier.safetensors",
              metadata={"input": "28x28 grey, row-major, pixels in [0, 1]", "labels": json.dumps(LABELS),
                        "test_accuracy": f"{accuracy:.4f}", "seed": str(args.seed)})


def train(args):
    os.makedirs(args.checkpoint, exist_ok=True)
    path = f"{args.checkpoint}/state.pt"
    images, labels = load_split("train")
    data = images.float().unsqueeze(1) / 127.5 - 1
    unet, ema = make_unet(), make_unet()
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    alphas_cumprod = make_scheduler().alphas_cumprod
    step, generator = 0, torch.Generator().manual_seed(args.seed)
    if os.path.exists(path):
        state = torch.load(path, weights_only=False)
        unet.load_state_dict(state["unet"]), ema.load_state_dict(state["ema"]), opt.load_state_dict(state["opt"])
        step = state["step"]
        generator.set_state(state["generator"])
        print(f"resumed at step {step}", flush=True)
    print(f"parameters: {sum(p.numel() for p in unet.parameters())}", flush=True)
    log = open(f"{args.checkpoint}/loss.csv", "a")
    running, started = [], time.time()
    while step < args.steps:
        # Warm-up, then cosine decay to 5% of the peak rate.
        warm = min(1.0, (step + 1) / 200)
        progress = step / args.steps
        for group in opt.param_groups:
            group["lr"] = args.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        batch = torch.randint(0, len(data), (args.batch,), generator=generator)
        x0, y = data[batch], labels[batch].clone()
        y[torch.rand(args.batch, generator=generator) < 0.15] = NULL_CLASS
        t = torch.randint(0, 1000, (args.batch,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        velocity = a.sqrt() * noise - (1 - a).sqrt() * x0
        loss = F.mse_loss(unet(xt, t, class_labels=y).sample, velocity)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters()):
                e.lerp_(p, 1 - decay)
        running.append(loss.item())
        if step % 25 == 0:
            mean = sum(running) / len(running)
            running = []
            log.write(f"{step},{mean:.5f},{time.time() - started:.1f}\n")
            log.flush()
            print(f"step {step}: loss {mean:.4f} ({time.time() - started:.0f} s)", flush=True)
        if step % args.checkpoint_every == 0 or step == args.steps:
            torch.save({"unet": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
                        "generator": generator.get_state(), "args": vars(args)}, path + ".tmp")
            os.replace(path + ".tmp", path)


def export(args):
    state = torch.load(f"{args.checkpoint}/state.pt", weights_only=False)
    unet = make_unet()
    unet.load_state_dict(state["ema"])
    unet.to(torch.float16).save_pretrained(args.out, safe_serialization=True)
    make_scheduler().save_config(args.out)
    with open(f"{args.out}/training.json", "w") as f:
        json.dump({"data": "Fashion-MNIST train split (Debian dataset-fashion-mnist)", "labels": LABELS,
                   "null_class": NULL_CLASS, "weights": "EMA", **{k: state["args"][k] for k in ("seed", "batch", "lr", "ema")},
                   "steps": state["step"]}, f, indent=1)
    print(f"exported step {state['step']} to {args.out}")


def parity(args):
    """The shipped float16 model's output in diffusers (float32 compute), for Kiri's parity test."""
    torch.manual_seed(0)
    unet = UNet2DModel.from_pretrained(args.model).float().eval()
    x = torch.randn(3, 1, 28, 28)
    t = torch.tensor([999.0, 500.0, 3.0])
    y = torch.tensor([7, 0, NULL_CLASS])
    with torch.no_grad():
        out = unet(x, t, class_labels=y).sample
    save_file({"x": x, "timesteps": t, "class_labels": y.float(), "output": out.contiguous()}, args.out,
              metadata={"model": "fashion-mnist (shipped float16 weights, computed in float32)",
                        "torch": torch.__version__})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("classifier")
    c.add_argument("--out", required=True)
    c.add_argument("--seed", type=int, default=1234)
    t = sub.add_parser("train")
    t.add_argument("--checkpoint", required=True)
    t.add_argument("--steps", type=int, default=2500)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--ema", type=float, default=0.998)
    t.add_argument("--seed", type=int, default=1234)
    t.add_argument("--checkpoint-every", type=int, default=100)
    e = sub.add_parser("export")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--out", required=True)
    p = sub.add_parser("parity")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    args = parser.parse_args()
    {"classifier": classifier, "train": train, "export": export, "parity": parity}[args.command](args)


if __name__ == "__main__":
    main()
