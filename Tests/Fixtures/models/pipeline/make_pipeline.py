#!/usr/bin/env python3
"""End-to-end pipeline fixture: a tiny random StableDiffusionPipeline and diffusers' outputs for it.

Writes, next to this file:
  tiny-sd/                 the pipeline in diffusers' folder layout (model_index.json, tokenizer/, text_encoder/,
                           unet/, vae/, scheduler/), weights F16
  io.safetensors           float32 references: token ids, prompt embeddings, initial latents, and for three
                           schedulers their sigmas, timesteps, per-step and final latents and decoded image; plus
                           direct VAE encode/decode and UNet checks

    /work/venv/bin/python Tests/Fixtures/models/pipeline/make_pipeline.py [--single-file PATH]

The same weights as one single-file checkpoint in the original CompVis layout (written with
singlefile/make_single_file.py's mapping functions) are always built in a temporary folder and checked: diffusers'
from_single_file loads them to the folder's tensors and the same Euler latents, bit for bit. The file (794 KB) is
not committed, as it would take the fixture past 1.5 MB; --single-file PATH also writes it to PATH.

Every reference is computed by diffusers in float32 on the CPU after loading the saved F16 folder back with
StableDiffusionPipeline.from_pretrained, so it uses exactly the weights Kiri reads. The whole build runs twice
(the second time into a temporary folder) and the two runs must agree bit for bit.
"""
import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(MODELS, "parity"))
sys.path.insert(0, os.path.join(MODELS, "singlefile"))

import diffusers  # noqa: E402
import safetensors  # noqa: E402
import transformers  # noqa: E402
from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, EulerDiscreteScheduler,  # noqa: E402
                       StableDiffusionPipeline, UNet2DConditionModel)
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save, save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

from make_clip_text import randomise as randomise_text  # noqa: E402
from make_parity import randomise as randomise_diffusers  # noqa: E402
from make_single_file import clip_to_original, unet_to_original, vae_to_original  # noqa: E402

TOKENIZER = os.path.join(MODELS, "tokenizer", "small")
SD15_SCHEDULER = os.path.join(MODELS, "sd15_scheduler_config.json")
WEIGHTS = "diffusion_pytorch_model.safetensors"

PROMPT = "a red fox in the snow"
NEGATIVE = "blurry"
STEPS = 6
GUIDANCE = 7.5
SIZE = 64
SEED = 2025


# ----------------------------------------------------------------------------------
# The networks
# ----------------------------------------------------------------------------------

def text_config(tokenizer):
    return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                          projection_dim=32, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def unet():
    return UNet2DConditionModel(
        sample_size=SIZE // 8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8)


def vae():
    """Four levels, so three downsamplers and a factor of 8 as in SD; the (8, 8, 16, 16) widths also give the
    encoder's third level and the decoder's third up block a conv_shortcut (nin_shortcut in the original layout)."""
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16),
                         layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=SIZE,
                         scaling_factor=0.18215)


def calibrate(module, run, target):
    """Scales a final conv so that the output's standard deviation is about `target`."""
    with torch.no_grad():
        std = run().std().item()
        module.weight.mul_(target / std)
        module.bias.mul_(target / std)
        return std, run().std().item()


def build_models(generator, tokenizer):
    """Draws every parameter as the parity generators do, then scales the UNet's and the decoder's conv_out so
    that eps is O(1) and the decoded image O(1), and rounds to F16 (the stored dtype)."""
    text = CLIPTextModel(text_config(tokenizer)).eval()
    text.config.architectures = ["CLIPTextModel"]
    randomise_text(text, generator)
    denoiser = unet().eval()
    randomise_diffusers(denoiser, generator)
    autoencoder = vae().eval()
    randomise_diffusers(autoencoder, generator)

    calibration = torch.Generator().manual_seed(SEED + 100)
    ids = tokenizer([PROMPT], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        context = text(ids).last_hidden_state
    x = torch.randn(4, 4, SIZE // 8, SIZE // 8, generator=calibration)
    t = torch.tensor([999.0, 700.0, 300.0, 20.0])
    unet_before = calibrate(denoiser.conv_out, lambda: denoiser(x, t, context.expand(4, -1, -1)).sample, 1.0)
    z = torch.randn(2, 4, SIZE // 8, SIZE // 8, generator=calibration)
    vae_before = calibrate(autoencoder.decoder.conv_out, lambda: autoencoder.decode(z).sample, 0.5)
    print(f"unet output std {unet_before[0]:.3g} -> {unet_before[1]:.3g}; "
          f"decoder output std {vae_before[0]:.3g} -> {vae_before[1]:.3g}", file=sys.stderr)

    def f16(model, prefix=""):
        return {prefix + key: value.detach().to(torch.float16).contiguous()
                for key, value in model.state_dict().items() if not key.endswith("position_ids")}

    # transformers 5 saves CLIPTextModel without `text_model.`; published SD folders have it (as singlefile/ does).
    return text, denoiser, autoencoder, f16(text, "text_model."), f16(denoiser), f16(autoencoder)


# ----------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------

def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as file:
        json.dump(value, file, indent=2, sort_keys=True)
        file.write("\n")


def module_config(model, name):
    config = {key: value for key, value in model.config.items() if not key.startswith("_")}
    config["_class_name"] = name
    config["_diffusers_version"] = diffusers.__version__
    return config


def write_folder(folder, text, denoiser, autoencoder, text_state, unet_state, vae_state):
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.makedirs(os.path.join(folder, "tokenizer"))
    for name in sorted(os.listdir(TOKENIZER)):
        shutil.copyfile(os.path.join(TOKENIZER, name), os.path.join(folder, "tokenizer", name))
    write_components(folder, text, denoiser, autoencoder, text_state, unet_state, vae_state)


def write_components(folder, text, denoiser, autoencoder, text_state, unet_state, vae_state):
    """Everything of an SD 1.5 diffusers folder but its tokenizer (Tests/Benchmarks/make_sd15_pipeline.py uses it
    for the full-size one)."""
    os.makedirs(os.path.join(folder, "text_encoder"))
    text.config.save_pretrained(os.path.join(folder, "text_encoder"))
    save_file(text_state, os.path.join(folder, "text_encoder", "model.safetensors"), metadata={"format": "pt"})
    write_json(os.path.join(folder, "unet", "config.json"), module_config(denoiser, "UNet2DConditionModel"))
    save_file(unet_state, os.path.join(folder, "unet", WEIGHTS), metadata={"format": "pt"})
    write_json(os.path.join(folder, "vae", "config.json"), module_config(autoencoder, "AutoencoderKL"))
    save_file(vae_state, os.path.join(folder, "vae", WEIGHTS), metadata={"format": "pt"})
    # SD 1.5's scheduler_config.json as published (diffusers 0.6.0: no timestep_spacing key, among others).
    os.makedirs(os.path.join(folder, "scheduler"))
    shutil.copyfile(SD15_SCHEDULER, os.path.join(folder, "scheduler", "scheduler_config.json"))
    write_json(os.path.join(folder, "model_index.json"), {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]})


def save_sorted(tensors, path, metadata):
    """safetensors' save_file with the header's keys sorted: save_file writes `__metadata__` in hash-map order, which
    changes from run to run, so a regenerated file would differ in bytes though not in content."""
    data = save(tensors)
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    header["__metadata__"] = metadata
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as file:
        file.write(len(text).to_bytes(8, "little") + text + data[8 + length:])


def write_single_file(path, denoiser, autoencoder, text_state, unet_state, vae_state):
    single = {}
    single.update(unet_to_original(unet_state, denoiser.config))
    single.update(vae_to_original(vae_state, autoencoder.config))
    single.update(clip_to_original(text_state))
    # The schedule buffers real checkpoints carry (as singlefile/ writes them); no network reads them.
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    single["betas"] = betas.float()
    single["alphas_cumprod"] = torch.cumprod(1 - betas, 0).float()
    save_file(single, path)


# ----------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------

def config_json(config):
    """A scheduler config as strict JSON: `_use_default_values` sorted (it comes from a set, whose order changes with
    the hash seed) and non-finite floats (DPM-Solver's `lambda_min_clipped` -inf) written as the strings "inf",
    "-inf", which JSON parsers without extensions (Foundation's) would otherwise reject."""
    def value(key, item):
        if key == "_use_default_values":
            return sorted(item)
        if isinstance(item, float) and not math.isfinite(item):
            return str(item)
        return item
    return json.dumps({key: value(key, item) for key, item in config.items()}, sort_keys=True, allow_nan=False)


def schedulers(config):
    return {
        "euler": EulerDiscreteScheduler.from_config(config),
        "dpmpp_2m": DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2),
        "euler_karras": EulerDiscreteScheduler.from_config(config, use_karras_sigmas=True),
    }


def references(pipe):
    """Everything io.safetensors holds, computed by diffusers from the loaded pipeline."""
    inputs = torch.Generator().manual_seed(SEED + 1)
    io, meta = {}, {}
    tokenize = lambda text: pipe.tokenizer(text, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                           truncation=True, return_tensors="pt").input_ids
    io["prompt_ids"] = tokenize(PROMPT).float()
    io["negative_ids"] = tokenize(NEGATIVE).float()
    with torch.no_grad():
        prompt_embeds, negative_embeds = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE)
    io["prompt_embeds"], io["negative_embeds"] = prompt_embeds, negative_embeds
    latents = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=inputs)
    io["latents"] = latents

    scaling = pipe.vae.config.scaling_factor
    base_config = pipe.scheduler.config
    for name, scheduler in schedulers(base_config).items():
        pipe.scheduler = scheduler
        steps = []

        def record(pipeline, index, timestep, kwargs):
            steps.append(kwargs["latents"].clone())
            return kwargs

        with torch.no_grad():
            final = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                         guidance_scale=GUIDANCE, latents=latents.clone(), output_type="latent",
                         generator=torch.Generator().manual_seed(0), callback_on_step_end=record).images
            image = pipe.vae.decode(final / scaling).sample
        fresh = type(scheduler).from_config(scheduler.config)
        fresh.set_timesteps(STEPS)
        assert torch.equal(fresh.sigmas, scheduler.sigmas) and torch.equal(fresh.timesteps, scheduler.timesteps)
        io[f"{name}_sigmas"] = fresh.sigmas.float()
        io[f"{name}_timesteps"] = fresh.timesteps.float()
        io[f"{name}_step_latents"] = torch.cat(steps)
        io[f"{name}_latents"] = final
        io[f"{name}_image"] = image
        assert torch.equal(steps[-1], final)
        meta[f"{name}_class"] = type(scheduler).__name__
        meta[f"{name}_init_noise_sigma"] = repr(float(fresh.init_noise_sigma))
        for key in ("timestep_spacing", "steps_offset", "use_karras_sigmas", "final_sigmas_type"):
            meta[f"{name}_{key}"] = str(scheduler.config[key])
        meta[f"{name}_config"] = config_json(scheduler.config)

    with torch.no_grad():
        io["decode_latents"] = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=inputs)
        io["decode_image"] = pipe.vae.decode(io["decode_latents"] / scaling).sample
        io["encode_image"] = torch.rand(1, 3, SIZE, SIZE, generator=inputs) * 2 - 1
        io["encode_latents"] = pipe.vae.encode(io["encode_image"]).latent_dist.mean * scaling
        io["unet_x"] = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=inputs)
        io["unet_t"] = torch.tensor([500.0])
        io["unet_out"] = pipe.unet(io["unet_x"], io["unet_t"], encoder_hidden_states=prompt_embeds).sample
    return {key: value.detach().float().contiguous() for key, value in io.items()}, meta


def load_pipeline(folder):
    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_loaded(pipe, text_state, unet_state, vae_state):
    """The loaded float32 pipeline holds exactly the stored F16 values."""
    for module, state, prefix in ((pipe.text_encoder, text_state, "text_model."), (pipe.unet, unet_state, ""),
                                  (pipe.vae, vae_state, "")):
        loaded = {prefix + key if prefix and not key.startswith(prefix) else key: value
                  for key, value in module.state_dict().items() if not key.endswith("position_ids")}
        assert loaded.keys() == state.keys(), sorted(loaded.keys() ^ state.keys())
        for key, value in state.items():
            assert loaded[key].dtype == torch.float32 and torch.equal(loaded[key], value.float()), key


def build(out, single):
    """Writes the folder and io.safetensors under `out` and the single file at `single`; returns io and its
    metadata."""
    torch.manual_seed(SEED)
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER)
    text, denoiser, autoencoder, text_state, unet_state, vae_state = build_models(
        torch.Generator().manual_seed(SEED), tokenizer)
    folder = os.path.join(out, "tiny-sd")
    write_folder(folder, text, denoiser, autoencoder, text_state, unet_state, vae_state)
    write_single_file(single, denoiser, autoencoder, text_state, unet_state, vae_state)

    pipe = load_pipeline(folder)
    check_loaded(pipe, text_state, unet_state, vae_state)
    base_config = pipe.scheduler.config
    io, meta = references(pipe)

    # The single file, loaded by diffusers' own conversion (configs from the folder), gives the same image.
    from_single = StableDiffusionPipeline.from_single_file(single, config=folder, local_files_only=True,
                                                           dtype=torch.float32, safety_checker=None,
                                                           requires_safety_checker=False)
    from_single.set_progress_bar_config(disable=True)
    check_loaded(from_single, text_state, unet_state, vae_state)
    from_single.scheduler = schedulers(base_config)["euler"]
    with torch.no_grad():
        again = from_single(prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE,
                            num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=io["latents"].clone(),
                            output_type="latent", generator=torch.Generator().manual_seed(0)).images
    assert torch.equal(again, io["euler_latents"]), "single file and folder differ"

    meta.update({
        "prompt": PROMPT, "negative_prompt": NEGATIVE, "num_inference_steps": str(STEPS),
        "guidance_scale": str(GUIDANCE), "height": str(SIZE), "width": str(SIZE),
        "scaling_factor": repr(pipe.vae.config.scaling_factor),
        "pipeline_scheduler_config": config_json(base_config),
        "tokenizer": json.dumps({"vocab_size": len(pipe.tokenizer), "bos_token_id": pipe.tokenizer.bos_token_id,
                                 "eos_token_id": pipe.tokenizer.eos_token_id,
                                 "pad_token": pipe.tokenizer.pad_token,
                                 "pad_token_id": pipe.tokenizer.pad_token_id}),
        "python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
        "transformers": transformers.__version__, "safetensors": safetensors.__version__,
    })
    save_sorted(io, os.path.join(out, "io.safetensors"), meta)
    return io, meta


def files(root):
    result = {}
    for base, _, names in os.walk(root):
        for name in names:
            path = os.path.join(base, name)
            if name.endswith(".safetensors"):
                # Compare tensors and metadata, not bytes: safetensors may write __metadata__ keys in another order.
                with safe_open(path, "pt") as file:
                    metadata = file.metadata() or {}
                result[os.path.relpath(path, root)] = dict(load_file(path), __metadata__=metadata)
            elif not name.endswith(".py") and name != "README.md":
                with open(path, "rb") as file:
                    result[os.path.relpath(path, root)] = file.read()
    return result


def same(a, b):
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())
    for key in a:
        if isinstance(a[key], dict):
            assert a[key].keys() == b[key].keys(), key
            for name in a[key]:
                if name == "__metadata__":
                    assert a[key][name] == b[key][name], (key, name)
                    continue
                assert a[key][name].dtype == b[key][name].dtype and torch.equal(a[key][name], b[key][name]), \
                    (key, name)
        else:
            assert a[key] == b[key], key


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--single-file", help="also write the single-file checkpoint here")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    with tempfile.TemporaryDirectory() as scratch:
        first = os.path.join(scratch, "first.safetensors")
        io, meta = build(HERE, first)
        other = os.path.join(scratch, "other")
        os.makedirs(other)
        build(other, os.path.join(other, "tiny-sd.safetensors"))
        produced = {key: value for key, value in files(HERE).items()
                    if key.startswith("tiny-sd") or key == "io.safetensors"}
        produced["tiny-sd.safetensors"] = files(scratch)["first.safetensors"]
        same(produced, files(other))
        if arguments.single_file:
            shutil.copyfile(first, arguments.single_file)
    print("second run: identical", file=sys.stderr)
    for key, value in io.items():
        print(f"{key:26s} {list(value.shape)}  absmax {value.abs().max().item():.4g}  "
              f"rms {value.square().mean().sqrt().item():.4g}", file=sys.stderr)
    for key in sorted(meta):
        if key.split("_")[0] in ("euler", "dpmpp") and not key.endswith("config"):
            print(key, meta[key], file=sys.stderr)


if __name__ == "__main__":
    main()
