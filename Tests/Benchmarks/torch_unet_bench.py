#!/usr/bin/env python3
"""PyTorch's time for issue 4's benchmark UNet: diffusers' UNet2DModel forward at batch 1 and 2, on 2 threads.

The baseline Kiri's model benchmark is measured against, on the same weights:

    /work/venv/bin/python Tests/Fixtures/models/parity/make_parity.py --bench-weights /tmp/kiri_bench_unet
    /work/venv/bin/python Tests/Benchmarks/torch_unet_bench.py /tmp/kiri_bench_unet [--runs 100]

Prints one line per batch size: the median, minimum and 90th percentile of `--runs` timed forwards (after
`--warmup` untimed ones), in milliseconds, and the forward's FLOPs as torch counts them; then the peak RSS
of the process.
"""
import argparse
import platform
import resource
import statistics
import time

import torch

import diffusers
from diffusers import UNet2DModel


def time_forward(model, batch, runs, warmup, seed=0):
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.in_channels, config.sample_size, config.sample_size, generator=generator)
    timesteps = torch.linspace(999, 1, batch)
    labels = torch.arange(batch) % config.num_class_embeds if config.num_class_embeds else None
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model(x, timesteps, class_labels=labels)
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times.append(elapsed * 1e3)
    times.sort()
    return statistics.median(times), times[0], times[int(0.9 * (len(times) - 1))]


def count_flops(model, batch):
    """Floating-point operations of one forward, as torch's FlopCounterMode counts them (matmuls and
    convolutions, 2 per multiply-add), so Kiri's GFLOP/s can be quoted for the same work."""
    from torch.utils.flop_counter import FlopCounterMode
    config = model.config
    x = torch.zeros(batch, config.in_channels, config.sample_size, config.sample_size)
    labels = torch.zeros(batch, dtype=torch.long) if config.num_class_embeds else None
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x, torch.full((batch,), 500.0), class_labels=labels)
    return counter.get_total_flops()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="?", default="/tmp/kiri_bench_unet",
                        help="folder with config.json and diffusion_pytorch_model.safetensors")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()

    torch.set_num_threads(arguments.threads)
    model = UNet2DModel.from_pretrained(arguments.weights).eval()
    parameters = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, Python {platform.python_version()}, "
          f"{torch.get_num_threads()} threads; UNet2DModel {parameters / 1e6:.2f} M parameters")
    for batch in (1, 2):
        median, fastest, p90 = time_forward(model, batch, arguments.runs, arguments.warmup)
        print(f"batch {batch}: median {median:.2f} ms  (min {fastest:.2f}, p90 {p90:.2f}; {arguments.runs} runs)"
              f"  flops {count_flops(model, batch)}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux
    print(f"peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
