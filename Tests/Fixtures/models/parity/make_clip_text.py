#!/usr/bin/env python3
"""Parity fixtures for Kiri's CLIPTextModel: tiny random-initialised transformers text encoders, their token
inputs and outputs.

Writes, next to this file, one folder per case (see README.md):
  CASE/config.json, CASE/model.safetensors   the model, as transformers' save_pretrained writes it (case
                                              clip_text_sd1 with every key under `text_model.`, as the
                                              text_encoder/ folders of diffusers pipelines hold them)
  CASE/io.safetensors   float32 input_ids and transformers' float32 outputs; metadata names the case, its
                        parameter count and the library versions

    /work/venv/bin/python Tests/Fixtures/models/parity/make_clip_text.py

Everything runs in float32 on the CPU with transformers' default (sdpa) attention. Every parameter is re-drawn
from a seeded generator (layer-norm scales around 1, biases non-zero), so a swapped weight and bias, or an
ignored affine, shows.
"""
import os
import platform
import sys

import torch

import safetensors
import transformers
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

# One thread: torch's multi-threaded CPU kernels change the last bits of the output from run to run.
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = "model.safetensors"
CONTEXT = 77


def sd1_like():
    """SD1.x's text encoder in miniature: quick_gelu, the legacy eos_token_id 2 of openai/clip-vit-large-patch14's
    config (pooling at the argmax of the ids, the end token being the highest id)."""
    return CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=3,
                          num_attention_heads=2, max_position_embeddings=CONTEXT, hidden_act="quick_gelu",
                          layer_norm_eps=1e-5, bos_token_id=998, eos_token_id=2, pad_token_id=1, projection_dim=16)


def sd2_like():
    """SD2.x's OpenCLIP-H in transformers form, in miniature: exact GELU, 4 heads of 3, eos_token_id the real end
    token (pooling at its first occurrence)."""
    return CLIPTextConfig(vocab_size=64, hidden_size=12, intermediate_size=28, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=16, hidden_act="gelu",
                          layer_norm_eps=1e-5, bos_token_id=62, eos_token_id=63, pad_token_id=0, projection_dim=8)


def prompt(generator, words, bos, eos, vocabulary, length, pad):
    """[bos, words random ids, eos, pad...] of `length` ids, as CLIPTokenizer pads to max_length."""
    ids = [bos] + torch.randint(1, vocabulary, (words,), generator=generator).tolist() + [eos]
    return ids + [pad] * (length - len(ids))


def sd1_inputs(generator):
    """A batch of 2 of the full 77 tokens, padded with the end token as SD1's tokenizer does."""
    return torch.tensor([prompt(generator, 9, 998, 999, 997, CONTEXT, 999),
                         prompt(generator, 30, 998, 999, 997, CONTEXT, 999)], dtype=torch.long)


def sd2_inputs(generator):
    """A batch of 2 of 9 tokens (fewer than max_position_embeddings), padded with 0 as SD2's tokenizer does."""
    return torch.tensor([prompt(generator, 7, 62, 63, 62, 9, 0),
                         prompt(generator, 3, 62, 63, 62, 9, 0)], dtype=torch.long)


def randomise(model, generator):
    """Re-draws every parameter: linear weights N(0, 1/fan_in), embeddings N(0, 1), layer-norm scales 1 + 0.2·N,
    biases and layer-norm shifts 0.1·N."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if "norm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.2 * noise)
            elif name.endswith("bias"):
                parameter.copy_(0.1 * noise)
            elif "embedding" in name:
                parameter.copy_(noise)
            else:
                parameter.copy_(noise / parameter.shape[1] ** 0.5)


def write_case(name, config, make_inputs, seed, prefix):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = CLIPTextModel(config).eval()
    randomise(model, generator)
    input_ids = make_inputs(torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        output = model(input_ids, output_hidden_states=True)
        # A1111's "Clip skip 2" (diffusers' clip_skip=1): the penultimate layer's output, then the final layer norm.
        clip_skip_2 = model.final_layer_norm(output.hidden_states[-2])

    folder = os.path.join(HERE, name)
    model.save_pretrained(folder)
    if prefix:
        # transformers 4 saved CLIPTextModel's weights under text_model.; transformers 5 saves none.
        weights = {prefix + key: tensor.contiguous() for key, tensor in model.state_dict().items()}
        save_file(weights, os.path.join(folder, WEIGHTS), metadata={"format": "pt"})
    parameters = sum(p.numel() for p in model.parameters())
    io = {
        "input_ids": input_ids.to(torch.float32),
        "last_hidden_state": output.last_hidden_state,
        "clip_skip_2": clip_skip_2,
        "pooled": output.pooler_output,
    }
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(folder, "io.safetensors"),
              metadata={"case": name, "class": type(model).__name__, "parameters": str(parameters),
                        "python": platform.python_version(), "torch": torch.__version__,
                        "transformers": transformers.__version__, "safetensors": safetensors.__version__})
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    print(f"{name}: {parameters} parameters, input_ids {tuple(input_ids.shape)}, "
          f"|max| {output.last_hidden_state.abs().max().item():.4g}, {size} bytes", file=sys.stderr)


def main():
    write_case("clip_text_sd1", sd1_like(), sd1_inputs, seed=11, prefix="text_model.")
    write_case("clip_text_sd2", sd2_like(), sd2_inputs, seed=12, prefix="")


if __name__ == "__main__":
    main()
