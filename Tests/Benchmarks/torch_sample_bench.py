#!/usr/bin/env python3
"""PyTorch's time for Kiri's txt2img benchmark: the default model, 20 DPM-Solver++(2M) steps on Karras sigmas
with CFG 4 (cond and uncond in one batch), as diffusers' DPMSolverMultistepScheduler runs them, on 2 threads.

    /work/venv/bin/python Tests/Benchmarks/torch_sample_bench.py Sources/Kiri/Resources/models/fashion-mnist [--runs 10]

Prints "batch N: median X ms (min Y)" for batch 1 and 8, timed after one warm-up run.
"""
import argparse
import statistics
import time

import torch
from diffusers import DPMSolverMultistepScheduler, UNet2DModel

torch.set_num_threads(2)


def sample(unet, scheduler, batch, seed):
    scheduler.set_timesteps(20)
    x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * scheduler.init_noise_sigma
    labels = torch.tensor([7] * batch + [10] * batch)
    for t in scheduler.timesteps:
        out = unet(torch.cat([x, x]), t, class_labels=labels).sample
        cond, uncond = out.chunk(2)
        x = scheduler.step(uncond + 4 * (cond - uncond), t, x).prev_sample
    return x


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    unet = UNet2DModel.from_pretrained(args.model).float().eval()
    scheduler = DPMSolverMultistepScheduler.from_pretrained(args.model, algorithm_type="dpmsolver++", solver_order=2,
                                                            use_karras_sigmas=True)
    print(f"torch {torch.__version__}, 2 threads")
    with torch.inference_mode():
        for batch in (1, 8):
            times = []
            for run in range(args.runs + 1):
                start = time.perf_counter()
                sample(unet, scheduler, batch, run)
                if run > 0:
                    times.append((time.perf_counter() - start) * 1e3)
            print(f"batch {batch}: median {statistics.median(times):.1f} ms (min {min(times):.1f})")


if __name__ == "__main__":
    main()
