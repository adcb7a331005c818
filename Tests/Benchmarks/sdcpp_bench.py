#!/usr/bin/env python3
"""stable-diffusion.cpp's times for a full-size SD 1.5 pipeline (issue 13), on the weights sd_pipeline_bench.py times.

    /usr/bin/python3 -m venv /work/sdcpp-venv
    CMAKE_BUILD_PARALLEL_LEVEL=2 /work/sdcpp-venv/bin/pip install --no-binary stable-diffusion-cpp-python \
        stable-diffusion-cpp-python==0.4.7
    /work/sdcpp-venv/bin/python Tests/Benchmarks/sdcpp_bench.py --model /tmp/kiri_sd15.safetensors \
        [--types f16,f32,q8_0] [--runs 1] [--threads 2] [--txt2img] [--steps 20] [--logs /tmp/sdcpp_logs]

Drives sd.cpp through stable-diffusion-cpp-python (its default CPU build: ggml's CPU backend, -march=native, OpenMP,
no BLAS). Every measurement is a fresh process (this script with --child) that loads the model with
`StableDiffusion(model_path=MODEL, n_threads=THREADS, wtype=TYPE)` and makes one 512×512 txt2img of "a photo of a cat"
(negative ""), CFG 7.5, sample_method euler, the default (discrete) schedule, seed 0. Per weight type (--types: f16 is
the F16 file as it is, f32 and q8_0 are converted at load), --runs processes of 1 step and of 2 steps, and with
--txt2img one of --steps steps. sd.cpp's log is kept (LOGS/TYPE-STEPS-RUN.log) and its stage timings read from it.
A line per process as it ends, then per type one line per figure (seconds; medians over the processes, the minimum
in parentheses):
  load      the StableDiffusion(...) constructor (read the file, convert to TYPE), the first thing each process does
  encode    'get_learned_condition completed': both prompts (the prompt and the empty negative) through CLIP
  step      one CFG step at 512×512 (sd.cpp runs cond and uncond as two UNet calls): 'sampling completed' of the
            2-step runs minus that of the 1-step runs, so the first call's graph set-up is left out
  sample 1  'sampling completed' of a 1-step run (one CFG step and that set-up)
  decode    'decode_first_stage completed': the VAE on 1×4×64×64 latents to a 512×512 image (every process)
  txt2img   the whole generate_image(...) call of --steps steps, the model already loaded (encode both prompts,
            --steps CFG steps, decode)
then the largest peak RSS of the type's processes (getrusage of each), the cores they used (CPU time / wall) and the
load average around the runs. The image's mean and standard deviation are checked to show it is not degenerate.
"""
import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time

STAGES = {"encode": r"get_learned_condition completed, taking ([\d.]+)s",
          "sample": r"sampling completed, taking ([\d.]+)s",
          "decode": r"decode_first_stage completed, taking ([\d.]+)s",
          "read": r"loading tensors completed, taking ([\d.]+)s"}


def child(model, wtype, steps, threads):
    """One measurement in this process: prints `sdcpp_bench KEY VALUE` lines on stdout; sd.cpp logs on stderr."""
    from PIL import ImageStat
    from stable_diffusion_cpp import StableDiffusion

    start = time.perf_counter()
    sd = StableDiffusion(model_path=model, n_threads=threads, wtype="default" if wtype == "file" else wtype,
                         verbose=True)
    load = time.perf_counter() - start
    start = time.perf_counter()
    image = sd.generate_image(prompt="a photo of a cat", negative_prompt="", width=512, height=512, cfg_scale=7.5,
                              sample_method="euler", sample_steps=steps, seed=0)[0]
    generate = time.perf_counter() - start
    stat = ImageStat.Stat(image.convert("L"))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    for key, value in [("load", load), ("txt2img", generate), ("mean", stat.mean[0]), ("std", stat.stddev[0]),
                       ("cpu", usage.ru_utime + usage.ru_stime), ("rss", usage.ru_maxrss / 1024)]:  # KiB on Linux
        print(f"sdcpp_bench {key} {value}", flush=True)


def measure(arguments, wtype, steps, run):
    """Runs one child process; returns its figures and the stage timings read from its log."""
    log_path = os.path.join(arguments.logs, f"{wtype}-{steps}-{run}.log")
    command = [sys.executable, os.path.abspath(__file__), "--child", "--model", arguments.model, "--types", wtype,
               "--steps", str(steps), "--threads", str(arguments.threads)]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        out = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True, check=True).stdout
    wall = time.perf_counter() - start
    with open(log_path, "a") as log:
        log.write(out)
    figures = {k: float(v) for k, v in re.findall(r"^sdcpp_bench (\w+) (\S+)$", out, re.M)}
    text = open(log_path, errors="replace").read()
    for name, pattern in STAGES.items():
        found = re.findall(pattern, text)
        if found:
            figures[name] = float(found[-1])
    figures["cores"] = figures["cpu"] / wall
    weights = re.search(r"Weight type stat:\s*(.*)", text)
    figures["weights"] = " ".join(weights.group(1).split()) if weights else "?"
    print(f"{wtype} run {steps} steps #{run}: " + ", ".join(f"{k} {figures[k]:.2f}" for k in
          ("load", "encode", "sample", "decode", "txt2img", "rss", "cores") if k in figures), flush=True)
    return figures


def line(name, values, unit="s"):
    values = [v for v in values if v is not None]
    if not values:
        return
    median = statistics.median(values)
    rest = f" (min {min(values):.2f}; {len(values)} runs)" if len(values) > 1 else ""
    print(f"{name}: {median:.2f} {unit}{rest}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an SD 1.5 single-file checkpoint (or what sd.cpp loads)")
    parser.add_argument("--types", default="f16,f32,q8_0", help="weight types: f16 = the file's own F16")
    parser.add_argument("--runs", type=int, default=1, help="processes of 1 step and of 2 steps per type (0: none)")
    parser.add_argument("--steps", type=int, default=20, help="steps of the --txt2img run")
    parser.add_argument("--txt2img", action="store_true", help="also one full --steps-step run per type")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--logs", default="/tmp/sdcpp_logs", help="folder for sd.cpp's log of every process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        return child(arguments.model, "file" if arguments.types == "f16" else arguments.types, arguments.steps,
                     arguments.threads)

    import importlib.metadata
    os.makedirs(arguments.logs, exist_ok=True)
    blas = {k: os.environ.get(k, "unset") for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print(f"stable-diffusion-cpp-python {importlib.metadata.version('stable-diffusion-cpp-python')}, "
          f"{arguments.threads} threads, model {arguments.model}, {blas}", flush=True)
    for wtype in arguments.types.split(","):
        loads = [os.getloadavg()[0]]
        runs = {1: [], 2: []}
        for run in range(arguments.runs):
            for steps in (1, 2):
                runs[steps].append(measure(arguments, wtype, steps, run))
                loads.append(os.getloadavg()[0])
        full = [measure(arguments, wtype, arguments.steps, "txt2img")] if arguments.txt2img else []
        loads.append(os.getloadavg()[0])
        every = runs[1] + runs[2] + full
        print(f"-- {wtype}", flush=True)
        print(f"{wtype} weights: {every[0]['weights']}", flush=True)
        line(f"{wtype} load", [f["load"] for f in every])
        line(f"{wtype} load, reading tensors", [f.get("read") for f in every])
        line(f"{wtype} encode (both prompts)", [f.get("encode") for f in every])
        if arguments.runs > 0:
            sample1 = statistics.median(f["sample"] for f in runs[1])
            sample2 = statistics.median(f["sample"] for f in runs[2])
            print(f"{wtype} step: {sample2 - sample1:.2f} s (2-step sampling {sample2:.2f} minus 1-step "
                  f"{sample1:.2f})", flush=True)
        line(f"{wtype} sample 1", [f["sample"] for f in runs[1]])
        line(f"{wtype} decode", [f.get("decode") for f in every])
        line(f"{wtype} txt2img 1 step", [f["txt2img"] for f in runs[1]])
        line(f"{wtype} txt2img 2 steps", [f["txt2img"] for f in runs[2]])
        if full:
            f = full[0]
            print(f"{wtype} txt2img {arguments.steps} steps: {f['txt2img']:.2f} s (sampling {f['sample']:.2f}, "
                  f"{f['sample'] / arguments.steps:.2f} per step)", flush=True)
        print(f"{wtype} image: mean {every[-1]['mean']:.1f}, std {every[-1]['std']:.1f} (of 255)", flush=True)
        print(f"{wtype} peak RSS: {max(f['rss'] for f in every):.0f} MiB", flush=True)
        print(f"{wtype} cores: {min(f['cores'] for f in every):.2f}-{max(f['cores'] for f in every):.2f} "
              f"(load average {min(loads):.1f}-{max(loads):.1f})", flush=True)


if __name__ == "__main__":
    main()
