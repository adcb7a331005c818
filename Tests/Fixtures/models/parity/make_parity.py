#!/usr/bin/env python3
"""Parity fixtures for Kiri's UNets: tiny random-initialised diffusers models, their inputs and outputs.

Writes, next to this file, one folder per case (see README.md):
  CASE/config.json, CASE/diffusion_pytorch_model.safetensors   the model, as diffusers saves it
  (or CASE/unet/... and CASE/scheduler/scheduler_config.json for the pipeline-layout case)
  CASE/io.safetensors   float32 inputs (x, timesteps, class_labels, encoder_hidden_states) and the
                        float32 output of diffusers' forward; metadata names the case and its parameter count
  versions.json         the exact library versions

    /work/venv/bin/python Tests/Fixtures/models/parity/make_parity.py
    /work/venv/bin/python Tests/Fixtures/models/parity/make_parity.py --bench-weights /tmp/kiri_bench_unet

With --bench-weights DIR it writes only issue 4's benchmark network (config and weights, ~64 MB, not
committed) to DIR, for Tests/Benchmarks/torch_unet_bench.py and Kiri's benchmark to load the same weights.

Everything runs in float32 on the CPU. Every parameter is re-drawn from a seeded generator (norm scales
around 1, biases and norm shifts non-zero), so a swapped weight and bias, or an ignored affine, shows.
For the F16 and BF16 files the reference output is computed with the weights rounded to that type and
converted back to float32, which is what Kiri does at load time.
"""
import argparse
import json
import os
import platform
import sys

import torch

import diffusers
import safetensors
from diffusers import DDPMScheduler, UNet2DConditionModel, UNet2DModel
from safetensors.torch import save_file

# One thread: torch's multi-threaded CPU kernels change the last bits of the output from run to run.
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = "diffusion_pytorch_model.safetensors"
BATCH = 2


# ----------------------------------------------------------------------------------
# The cases
# ----------------------------------------------------------------------------------

def unet2d():
    """(a) UNet2DModel without attention, as google/ddpm-cifar10-32 is configured (cos before sin, freq_shift 1,
    downsample_padding 0, i.e. the asymmetric pad of Downsample2D)."""
    return UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        add_attention=False, norm_num_groups=8, flip_sin_to_cos=False, freq_shift=1, downsample_padding=0)


def unet2d_attention_class():
    """(b) UNet2DModel with attention (down, up and mid) and class labels, head size 8."""
    return UNet2DModel(
        sample_size=16, in_channels=1, out_channels=1, layers_per_block=2, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8, num_class_embeds=5, norm_num_groups=8)


def unet2d_resnet_resampling():
    """(f) UNet2DModel resampling inside ResNet blocks (average pooling down, nearest up), no mid attention."""
    return UNet2DModel(
        sample_size=16, in_channels=2, out_channels=2, layers_per_block=1, block_out_channels=(8, 16, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        downsample_type="resnet", upsample_type="resnet", attention_head_dim=None, add_attention=False,
        norm_num_groups=4)


def unet2d_condition():
    """(c) UNet2DConditionModel, the SD1.x family: cross-attention down, mid and up blocks, Transformer2DModel with
    a conv proj_in, GEGLU feed-forward. attention_head_dim is the number of heads here (diffusers #2011)."""
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn", cross_attention_dim=24, attention_head_dim=2,
        norm_num_groups=8)


def unet2d_condition_sd2():
    """(h) The SD 2.x options: Transformer2DModel with Linear proj_in/proj_out (use_linear_projection), a head count
    per block (attention_head_dim [2, 4]: 2 heads of 8 and 4 heads of 8, reversed for the up blocks),
    upcast_attention (a no-op in float32), a DownBlock2D-free path so every block attends."""
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn", cross_attention_dim=32, attention_head_dim=[2, 4],
        use_linear_projection=True, upcast_attention=True, norm_num_groups=8)


def unet2d_condition_layers():
    """(i) Per-block lists: transformer_layers_per_block [1, 2] (the mid block takes the last, the up blocks the
    reverse), only_cross_attention [True, False] (attn1 attends to the context too), layers_per_block [1, 2],
    cross_attention_dim [20, 20]; and center_input_sample."""
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=[1, 2], block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn", cross_attention_dim=[20, 20], attention_head_dim=[4, 2],
        transformer_layers_per_block=[1, 2], only_cross_attention=[True, False], center_input_sample=True,
        norm_num_groups=4)


CONTEXT_LENGTH = 7


def inputs(config, generator):
    """x, timesteps (one fractional, as a denoiser's sigma_to_t gives), class labels, encoder_hidden_states."""
    height, width = (config.sample_size, config.sample_size) if isinstance(config.sample_size, int) else config.sample_size
    result = {
        "x": torch.randn(BATCH, config.in_channels, height, width, generator=generator),
        "timesteps": torch.tensor([37.0, 801.25]),
    }
    if getattr(config, "num_class_embeds", None):
        result["class_labels"] = torch.tensor([3.0, 0.0])
    if hasattr(config, "cross_attention_dim"):
        # A per-block cross_attention_dim list has one width for the one context.
        width = config.cross_attention_dim
        width = width if isinstance(width, int) else width[0]
        result["encoder_hidden_states"] = torch.randn(BATCH, CONTEXT_LENGTH, width, generator=generator)
    return result


def forward(model, io):
    with torch.no_grad():
        arguments = {}
        if "class_labels" in io:
            arguments["class_labels"] = io["class_labels"].long()
        if "encoder_hidden_states" in io:
            arguments["encoder_hidden_states"] = io["encoder_hidden_states"]
        return model(io["x"], io["timesteps"], **arguments).sample.contiguous()


def randomise(model, generator):
    """Re-draws every parameter: weights with the scale PyTorch's default init gives them, norm scales 1 ± 0.2,
    biases and norm shifts ± 0.1, embeddings N(0, 1)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if "norm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.2 * noise)
            elif name.endswith("bias"):
                parameter.copy_(0.1 * noise)
            elif "class_embedding" in name:
                parameter.copy_(noise)
            else:
                fan_in = parameter[0].numel() if parameter.dim() > 1 else parameter.numel()
                parameter.copy_(noise / fan_in ** 0.5)


def state_dict(model, dtype):
    return {name: tensor.detach().to(dtype).contiguous() for name, tensor in model.state_dict().items()}


def write_case(name, make, seed, dtype=torch.float32, pipeline=False):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = make().eval()
    randomise(model, generator)
    weights = state_dict(model, dtype)
    if dtype != torch.float32:
        # The reference runs in float32 on the weights as the file holds them.
        model.load_state_dict({k: v.to(torch.float32) for k, v in weights.items()})
    io = inputs(model.config, torch.Generator().manual_seed(seed + 1))
    io["output"] = forward(model, io)

    folder = os.path.join(HERE, name)
    model_folder = os.path.join(folder, "unet") if pipeline else folder
    os.makedirs(model_folder, exist_ok=True)
    model.save_config(model_folder)
    save_file(weights, os.path.join(model_folder, WEIGHTS), metadata={"format": "pt"})
    if pipeline:
        DDPMScheduler().save_config(os.path.join(folder, "scheduler"))
    parameters = sum(p.numel() for p in model.parameters())
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(folder, "io.safetensors"),
              metadata={"case": name, "class": type(model).__name__, "parameters": str(parameters),
                        "dtype": str(dtype).removeprefix("torch.")})
    size = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(folder) for f in files)
    print(f"{name}: {type(model).__name__}, {parameters} parameters, {str(dtype).removeprefix('torch.')}, "
          f"output {tuple(io['output'].shape)} |max| {io['output'].abs().max().item():.4g}, {size} bytes",
          file=sys.stderr)


def write_versions(folder=HERE):
    """versions.json in `folder`: the exact library versions the fixtures there were made with."""
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "safetensors": safetensors.__version__,
    }
    with open(os.path.join(folder, "versions.json"), "w") as f:
        json.dump(versions, f, indent=1, sort_keys=True)
        f.write("\n")


# ----------------------------------------------------------------------------------
# The benchmark network (issue 4): 16.1 M parameters, not committed
# ----------------------------------------------------------------------------------

def benchmark_unet():
    return UNet2DModel(
        sample_size=32, in_channels=1, out_channels=1, layers_per_block=2, block_out_channels=(64, 128, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        num_class_embeds=11, norm_num_groups=32, attention_head_dim=8)


def write_benchmark(folder, seed=2024):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = benchmark_unet().eval()
    randomise(model, generator)
    os.makedirs(folder, exist_ok=True)
    model.save_config(folder)
    save_file(state_dict(model, torch.float32), os.path.join(folder, WEIGHTS), metadata={"format": "pt"})
    parameters = sum(p.numel() for p in model.parameters())
    print(f"benchmark UNet2DModel: {parameters} parameters ({parameters / 1e6:.1f} M) in {folder}", file=sys.stderr)


# name, model, write_case options. (d), (e): the same config and weights as (c) (same seed), stored as F16 and BF16.
CASES = [
    ("unet2d", unet2d, dict(seed=1)),
    ("unet2d_attention_class", unet2d_attention_class, dict(seed=2, pipeline=True)),
    ("unet2d_resnet_resampling", unet2d_resnet_resampling, dict(seed=6)),
    ("unet2d_condition", unet2d_condition, dict(seed=3)),
    ("unet2d_condition_f16", unet2d_condition, dict(seed=3, dtype=torch.float16)),
    ("unet2d_condition_bf16", unet2d_condition, dict(seed=3, dtype=torch.bfloat16)),
    ("unet2d_condition_sd2", unet2d_condition_sd2, dict(seed=7)),
    ("unet2d_condition_layers", unet2d_condition_layers, dict(seed=8)),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench-weights", metavar="DIR", help="write only the benchmark network to DIR")
    parser.add_argument("cases", nargs="*", metavar="CASE",
                        help="write only these cases, and not versions.json (default: every case)")
    arguments = parser.parse_args()
    unknown = set(arguments.cases) - {name for name, _, _ in CASES}
    if unknown:
        parser.error(f"unknown case {', '.join(sorted(unknown))} (cases: {', '.join(name for name, _, _ in CASES)})")
    if arguments.bench_weights:
        write_benchmark(arguments.bench_weights)
        return
    for name, make, options in CASES:
        if not arguments.cases or name in arguments.cases:
            write_case(name, make, **options)
    if not arguments.cases:
        write_versions()


if __name__ == "__main__":
    main()
