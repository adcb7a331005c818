#!/usr/bin/env python3
"""Parity fixtures for Kiri's AutoencoderKL: a tiny random-initialised diffusers VAE, its inputs and outputs.

Writes, next to this file (see README.md):
  vae/config.json, vae/diffusion_pytorch_model.safetensors   the model, as diffusers saves it
  vae/io.safetensors         images and latents, and diffusers' encode and decode of them, untiled
  vae_tiled/io.safetensors   a larger, non-square image and latents through the same model with enable_tiling()
                             and 32-pixel tiles
and checks that vae/'s weights with the mid-block attentions under diffusers' older names (query, key, value,
proj_attn) load in diffusers to the same outputs. That file is not committed: VAEParityTests renames the keys in
vae/'s header itself.

    /work/venv/bin/python Tests/Fixtures/models/parity/make_vae.py

Float32 on the CPU, one thread, deterministic. Parameters are re-drawn as make_parity.py does. Latents follow the
pipelines' convention: encoded = (mean - shift_factor) * scaling_factor, and decode takes
latents / scaling_factor + shift_factor.
"""
import os
import sys
import tempfile

import torch

from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file

from make_parity import HERE, WEIGHTS, randomise, state_dict

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

SEED = 11
# Flux's values, so that a reader that ignored the shift, or multiplied where it should divide, fails.
SCALING, SHIFT = 1.5035, 0.0609
# Tiles of 32 image pixels (16 latent pixels): tiled_decode's blend_extent 8 and row_limit 24.
TILE = 32


def tiny_vae():
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4, sample_size=TILE,
        scaling_factor=SCALING, shift_factor=SHIFT)


def run(model, images, latents):
    with torch.no_grad():
        mean = model.encode(images).latent_dist.mean
        decoded = model.decode(latents / SCALING + SHIFT).sample
    return ((mean - SHIFT) * SCALING).contiguous(), decoded.contiguous()


def write_io(folder, model, images, latents, case):
    encoded, decoded = run(model, images, latents)
    os.makedirs(folder, exist_ok=True)
    parameters = sum(p.numel() for p in model.parameters())
    save_file({"images": images, "latents": latents, "encoded": encoded, "decoded": decoded},
              os.path.join(folder, "io.safetensors"),
              metadata={"case": case, "class": "AutoencoderKL", "parameters": str(parameters), "tiled": str(model.use_tiling).lower()})
    print(f"{case}: {parameters} parameters, encoded {tuple(encoded.shape)} |max| {encoded.abs().max().item():.4g}, "
          f"decoded {tuple(decoded.shape)} |max| {decoded.abs().max().item():.4g}", file=sys.stderr)
    return encoded, decoded


def legacy_names(weights):
    """The mid-block attentions' projections under diffusers' pre-0.14 AttentionBlock names."""
    renamed = {}
    for key, tensor in weights.items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            if ".attentions.0." in key and f".{new}." in key:
                key = key.replace(f".{new}.", f".{old}.")
        renamed[key] = tensor
    return renamed


def main():
    generator = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    model = tiny_vae().eval()
    randomise(model, generator)
    inputs = torch.Generator().manual_seed(SEED + 1)

    # (1) untiled: 32×32 images in [-1, 1], 16×16 latents N(0, 1).
    folder = os.path.join(HERE, "vae")
    os.makedirs(folder, exist_ok=True)
    model.save_config(folder)
    weights = state_dict(model, torch.float32)
    save_file(weights, os.path.join(folder, WEIGHTS), metadata={"format": "pt"})
    images = torch.rand(2, 3, 32, 32, generator=inputs) * 2 - 1
    latents = torch.randn(2, 4, 16, 16, generator=inputs)
    reference = write_io(folder, model, images, latents, "vae")

    # (2) tiled: 64×52 images (encode tiles 32, 28 and 4 pixels wide, the last narrower than the blend) and
    # 32×26 latents (decode tiles likewise), batch 1.
    model.enable_tiling()
    model.tile_sample_min_size = TILE
    model.tile_latent_min_size = TILE // 2
    images = torch.rand(1, 3, 64, 52, generator=inputs) * 2 - 1
    latents = torch.randn(1, 4, 32, 26, generator=inputs)
    write_io(os.path.join(HERE, "vae_tiled"), model, images, latents, "vae_tiled")
    model.disable_tiling()

    # (3) legacy attention names: diffusers renames them on load (_convert_deprecated_attention_blocks).
    legacy = legacy_names(weights)
    assert any(".proj_attn." in key for key in legacy)
    with tempfile.TemporaryDirectory() as folder:
        model.save_config(folder)
        save_file(legacy, os.path.join(folder, WEIGHTS), metadata={"format": "pt"})
        loaded = AutoencoderKL.from_pretrained(folder).eval()
    io = load_file(os.path.join(HERE, "vae", "io.safetensors"))
    for name, expected, actual in zip(("encoded", "decoded"), reference, run(loaded, io["images"], io["latents"])):
        assert torch.equal(expected, actual), f"legacy names change diffusers' {name}"
    print("legacy attention names: diffusers loads them to vae's outputs exactly", file=sys.stderr)


if __name__ == "__main__":
    main()
