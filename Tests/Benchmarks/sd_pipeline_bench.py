#!/usr/bin/env python3
"""diffusers' times for a full-size SD 1.5 pipeline (issue 12): the baseline sd_pipeline_bench.lua is compared with.

    /work/venv/bin/python Tests/Benchmarks/make_sd15_pipeline.py --out /tmp/kiri_sd15
    /work/venv/bin/python Tests/Benchmarks/sd_pipeline_bench.py --model /tmp/kiri_sd15 [--runs 3] [--threads 2]

On `torch.set_num_threads(2)`, float32 on the CPU, it prints one line per figure (seconds; medians of --runs after
one untimed warm-up, the minimum in parentheses):
  load      StableDiffusionPipeline.from_pretrained(MODEL, torch_dtype=torch.float32), once, the first thing done
  encode    pipe.encode_prompt of one prompt (tokenizer + CLIP text encoder; no negative), a new prompt every run
  step      one UNet call at batch 2 (cond + uncond, as CFG runs it) on 1×4×64×64 latents doubled, 512×512 pixels;
            and its floating-point operations as torch's FlopCounterMode counts them ("step FLOP")
  decode    pipe.vae.decode of 1×4×64×64 latents (a 512×512 image)
  txt2img   the whole pipe(...) call: 20 EulerDiscreteScheduler steps at 512×512, CFG 7.5, output_type "pt"
            (encode both prompts, 20 batch-2 UNet calls, decode), the model already loaded; --txt2img-runs runs (0: none)
then the process's peak RSS (getrusage; covers everything above).
"""
import argparse
import platform
import resource
import statistics
import time

import torch

import diffusers
import transformers
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline


def timed(body, runs, warmup=1):
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        body(i)
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
    return statistics.median(times), min(times)


def report(name, median, fastest, runs):
    print(f"{name}: median {median:.4f} s (min {fastest:.4f}; {runs} runs)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a diffusers SD folder (make_sd15_pipeline.py --out)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of step and decode (encode: 3× as many)")
    parser.add_argument("--txt2img-runs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)

    start = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(arguments.model, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True)
    load = time.perf_counter() - start
    pipe.set_progress_bar_config(disable=True)
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
          f"Python {platform.python_version()}, {torch.get_num_threads()} threads", flush=True)
    print(f"load: {load:.3f} s", flush=True)

    with torch.inference_mode():
        runs = 3 * arguments.runs
        median, fastest = timed(lambda i: pipe.encode_prompt(f"a photo of a cat, run {i}", "cpu", 1, False), runs)
        report("encode", median, fastest, runs)

        context, _ = pipe.encode_prompt("a photo of a cat", "cpu", 1, False)
        uncond, _ = pipe.encode_prompt("", "cpu", 1, False)
        contexts = torch.cat([uncond, context])
        generator = torch.Generator().manual_seed(0)
        latents = torch.randn(1, 4, 64, 64, generator=generator)
        x = torch.cat([latents] * 2)
        t = torch.tensor(500.0)
        median, fastest = timed(lambda i: pipe.unet(x, t, encoder_hidden_states=contexts).sample, arguments.runs)
        report("step", median, fastest, arguments.runs)
        from torch.utils.flop_counter import FlopCounterMode
        counter = FlopCounterMode(display=False)
        with counter:
            pipe.unet(x, t, encoder_hidden_states=contexts)
        print(f"step FLOP: {counter.get_total_flops():.6g}", flush=True)

        scaling = pipe.vae.config.scaling_factor
        median, fastest = timed(lambda i: pipe.vae.decode(latents / scaling).sample, arguments.runs)
        report("decode", median, fastest, arguments.runs)

        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)

        def txt2img(i):
            pipe(prompt="a photo of a cat", negative_prompt="", height=512, width=512,
                 num_inference_steps=arguments.steps, guidance_scale=7.5, output_type="pt",
                 generator=torch.Generator().manual_seed(i))

        if arguments.txt2img_runs > 0:
            median, fastest = timed(txt2img, arguments.txt2img_runs, warmup=0)
            report(f"txt2img {arguments.steps} steps", median, fastest, arguments.txt2img_runs)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux
    print(f"peak RSS: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
