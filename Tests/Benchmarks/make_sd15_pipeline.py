#!/usr/bin/env python3
"""A full-size Stable Diffusion 1.5 pipeline with random weights, for the SD pipeline benchmark (issue 12).

    /work/venv/bin/python Tests/Benchmarks/make_sd15_pipeline.py --out /tmp/kiri_sd15 [--single-file /tmp/kiri_sd15.safetensors]

Writes OUT as a diffusers folder shaped like runwayml/stable-diffusion-v1-5, weights F16 (as people have SD 1.5):
  unet/          UNet2DConditionModel from SD 1.5's own config (Tests/Fixtures/models/sd15_unet_config.json), 860 M
  vae/           SD's AutoencoderKL (128/256/512/512, 2 layers per block, 4 latent channels, scaling 0.18215), 84 M
  text_encoder/  CLIPTextModel with openai/clip-vit-large-patch14's text config (768 wide, 12 layers, 12 heads,
                 3072 MLP, quick_gelu, 49408 tokens, 77 positions) as SD 1.5's text_encoder/config.json has it, 123 M
  tokenizer/     vocab.json + merges.txt derived from Kiri's bundled CLIP merges (Sources/Kiri/Resources/clip) as CLIP
                 does; the vocabulary equals openai/clip-vit-large-patch14's id for id
  scheduler/     SD 1.5's scheduler_config.json as published (Tests/Fixtures/models/sd15_scheduler_config.json)
and with --single-file PATH the same tensors as one checkpoint in the original CompVis layout (mapped by
Tests/Fixtures/models/singlefile/make_single_file.py's functions), for timing single-file loading.

Weights are the libraries' default initialisation, seeded (--seed); then the UNet's and the VAE decoder's conv_out are
scaled (as Tests/Fixtures/models/pipeline/make_pipeline.py does) so that eps has a standard deviation of about 1 and the
decoded image about 0.5, and every output is checked finite. About 2.1 GB per copy; not committed.
"""
import argparse
import json
import os
import shutil
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODELS = os.path.join(ROOT, "Tests", "Fixtures", "models")
sys.path.insert(0, os.path.join(MODELS, "singlefile"))
sys.path.insert(0, os.path.join(MODELS, "tokenizer"))
sys.path.insert(0, os.path.join(MODELS, "pipeline"))

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

from make_single_file import clip_to_original, unet_to_original, vae_to_original  # noqa: E402
from make_pipeline import write_components, write_json  # noqa: E402
from make_tokenizer_fixtures import write_folder as write_tokenizer  # noqa: E402

MERGES = os.path.join(ROOT, "Sources", "Kiri", "Resources", "clip", "merges.txt")
SD15_UNET = os.path.join(MODELS, "sd15_unet_config.json")


def text_config():
    """openai/clip-vit-large-patch14's text_config, as runwayml/stable-diffusion-v1-5's text_encoder/config.json has it
    (with its historical bos/eos/pad ids 0/2/1, which only the pooled output reads; SD uses the hidden states)."""
    return CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                          num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                          layer_norm_eps=1e-5, projection_dim=768, initializer_range=0.02, initializer_factor=1.0,
                          attention_dropout=0.0, dropout=0.0, bos_token_id=0, eos_token_id=2, pad_token_id=1)


def vae():
    """SD's AutoencoderKL (runwayml/stable-diffusion-v1-5 vae/config.json)."""
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                         layers_per_block=2, act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=512,
                         scaling_factor=0.18215)


def calibrate(module, run, target):
    """Scales a final conv so that the output's standard deviation is about `target`."""
    with torch.no_grad():
        out = run()
        assert torch.isfinite(out).all(), "non-finite output before calibration"
        std = out.std().item()
        module.weight.mul_(target / std)
        module.bias.mul_(target / std)
        return std


def f16(model, prefix=""):
    state = {prefix + key: value.detach().to(torch.float16).contiguous()
             for key, value in model.state_dict().items() if not key.endswith("position_ids")}
    for key, value in state.items():
        assert torch.isfinite(value).all(), key
    return state


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the diffusers folder to write (replaced if it exists)")
    parser.add_argument("--single-file", help="also write the pipeline as one original-layout .safetensors here")
    parser.add_argument("--seed", type=int, default=1215)
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    start = time.perf_counter()
    out = arguments.out
    if os.path.exists(out):
        shutil.rmtree(out)

    # Tokenizer: CLIP's vocabulary from the bundled merges, with SD 1.5's tokenizer settings.
    with open(MERGES, encoding="utf-8") as file:
        lines = file.read().split("\n")
    assert lines[0].startswith("#version")
    merges = [line for line in lines[1:] if line]
    assert len(merges) == 48894, len(merges)
    folder = os.path.join(out, "tokenizer")
    write_tokenizer(folder, merges)
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>"}
    write_json(os.path.join(folder, "special_tokens_map.json"), special)
    write_json(os.path.join(folder, "tokenizer_config.json"), {
        **special, "add_prefix_space": False, "do_lower_case": True, "errors": "replace", "model_max_length": 77,
        "tokenizer_class": "CLIPTokenizer"})
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    assert tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tokenizer) == 49408

    # The networks, default init, seeded.
    torch.manual_seed(arguments.seed)
    text = CLIPTextModel(text_config()).eval()
    text.config.architectures = ["CLIPTextModel"]
    with open(SD15_UNET) as file:
        unet_config = {key: value for key, value in json.load(file).items() if not key.startswith("_")}
    unet = UNet2DConditionModel(**unet_config).eval()
    autoencoder = vae().eval()

    calibration = torch.Generator().manual_seed(arguments.seed + 1)
    ids = tokenizer(["a photo of a cat", ""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        context = text(ids).last_hidden_state
    assert torch.isfinite(context).all()
    x = torch.randn(2, 4, 32, 32, generator=calibration)
    t = torch.tensor([999.0, 300.0])
    eps_std = calibrate(unet.conv_out, lambda: unet(x, t, context).sample, 1.0)
    z = torch.randn(1, 4, 32, 32, generator=calibration)
    image_std = calibrate(autoencoder.decoder.conv_out, lambda: autoencoder.decode(z).sample, 0.5)
    with torch.no_grad():
        eps, image = unet(x, t, context).sample, autoencoder.decode(z).sample
    assert torch.isfinite(eps).all() and torch.isfinite(image).all()
    print(f"context std {context.std().item():.3g}; unet output std {eps_std:.3g} -> {eps.std().item():.3g}; "
          f"decoder output std {image_std:.3g} -> {image.std().item():.3g}")

    # transformers 5 saves CLIPTextModel without `text_model.`; published SD folders have it.
    text_state, unet_state, vae_state = f16(text, "text_model."), f16(unet), f16(autoencoder)
    counts = {name: sum(v.numel() for v in state.values()) for name, state in
              (("unet", unet_state), ("vae", vae_state), ("text_encoder", text_state))}
    print("parameters: " + ", ".join(f"{name} {count / 1e6:.1f} M" for name, count in counts.items()))

    write_components(out, text, unet, autoencoder, text_state, unet_state, vae_state)
    print(f"wrote {out} ({time.perf_counter() - start:.0f} s)")

    if arguments.single_file:
        single = {}
        single.update(unet_to_original(unet_state, unet.config))
        single.update(vae_to_original(vae_state, autoencoder.config))
        single.update(clip_to_original(text_state))
        # The schedule buffers real checkpoints carry; no network reads them.
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        single["betas"] = betas.float()
        single["alphas_cumprod"] = torch.cumprod(1 - betas, 0).float()
        save_file(single, arguments.single_file)
        print(f"wrote {arguments.single_file} ({len(single)} tensors)")
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
