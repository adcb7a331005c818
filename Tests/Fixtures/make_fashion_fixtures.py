#!/usr/bin/env python3
"""The fixtures around Kiri's default model, which `kiri train` made (README, "The default model"):

  classifier  a 784-256-10 MLP on Fashion-MNIST's pixels in [0, 1], the independent judge of QualityTests
              (Tests/Fixtures/fashion-classifier, seconds). Data: Debian's dataset-fashion-mnist.
  parity      the shipped model's output in diffusers for a few inputs, for Kiri's parity test
              (Tests/Fixtures/models/parity/fashion-mnist/io.safetensors).

In a venv with torch, diffusers and safetensors from PyPI:

    python Tests/Fixtures/make_fashion_fixtures.py classifier --out Tests/Fixtures/fashion-classifier
    python Tests/Fixtures/make_fashion_fixtures.py parity --model Sources/Kiri/Resources/models/fashion-mnist \
        --out Tests/Fixtures/models/parity/fashion-mnist/io.safetensors
"""
import argparse
import gzip
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
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
    p = sub.add_parser("parity")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    args = parser.parse_args()
    {"classifier": classifier, "parity": parity}[args.command](args)


if __name__ == "__main__":
    main()
