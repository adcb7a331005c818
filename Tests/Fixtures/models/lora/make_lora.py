#!/usr/bin/env python3
"""LoRA fixtures: two random LoRAs for the tiny SD 1.x pipeline in ../singlefile/sd1/diffusers, and what diffusers
makes of them.

It writes, next to this file:
  kohya.safetensors   LoRA 1 in kohya-ss / A1111 layout: `lora_unet_<module_with_underscores>.lora_down.weight`,
                      `.lora_up.weight`, `.alpha`, and `lora_te_...` for the text encoder; F16 weights, F32 alphas
  peft.safetensors    LoRA 2 as diffusers' StableDiffusionPipeline.save_lora_weights writes a PEFT adapter:
                      `unet.<module>.lora_A.weight` / `lora_B.weight`, `text_encoder.<module>...`, the alphas in the
                      `lora_adapter_metadata` JSON (r, lora_alpha, rank_pattern, alpha_pattern); F32
  io.safetensors      inputs (x, timesteps, encoder_hidden_states, input_ids) and, for `kohya` and `peft` each
                      loaded alone at lora_scale 0.8, the fused weights of the modules in CHECKED it changes, the
                      UNet's output and the text encoder's last hidden state; for `both` (kohya at 0.8 with peft at
                      0.5) the two outputs; and the outputs of the base model (`base.*`)

The reference is diffusers' own loader: pipe.load_lora_weights (which converts the kohya names with
_convert_non_diffusers_lora_to_diffusers and hands both files to PEFT), set_adapters and fuse_lora. The script
also checks each fused weight against W + Σ scale · alpha / rank · up @ down computed here, so the fixture
records what both agree on.

    /work/venv/bin/python Tests/Fixtures/models/lora/make_lora.py

Needs peft (pip install peft). Tests/KiriModelsTests/LoRATests.swift reads the files.
"""
import json
import os

import torch

import diffusers
import peft
import transformers
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import CLIPTextModel
from transformers.integrations import peft as transformers_peft

# transformers 5.24 asks for peft >= 0.22, which is not released; 0.21.2 loads these plain LoRAs, and the check
# against W + scale · alpha / rank · up @ down below is what shows it.
transformers_peft.check_peft_version = lambda min_version: None

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.join(HERE, "..", "singlefile", "sd1", "diffusers")

# module: (rank, alpha). One alpha per network, as kohya's trainer writes (network_alpha): diffusers 0.42 loses a
# kohya alpha that differs from the most common one on attention modules (its alpha_pattern keeps the
# `processor.to_k_lora.down.weight` name, which matches no module), so per-module alphas come from LoRA 2.
# Linear layers in the attention blocks, the 1×1-conv proj_in / proj_out of SD 1.x, a 3×3
# resnet conv (a LoCon: k×k down, 1×1 up) and the text encoder's attention and MLP.
LORA_1 = {
    "unet": {
        "down_blocks.0.attentions.0.proj_in": (2, 3.0),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": (4, 3.0),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k": (4, 3.0),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v": (4, 3.0),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0": (4, 3.0),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k": (2, 3.0),
        "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj": (2, 3.0),
        "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2": (2, 3.0),
        "mid_block.attentions.0.transformer_blocks.0.attn2.to_q": (4, 3.0),
        "up_blocks.1.attentions.1.proj_out": (2, 3.0),
        "down_blocks.1.resnets.0.conv1": (2, 3.0),
    },
    "text_encoder": {
        "encoder.layers.0.self_attn.q_proj": (4, 2.0),
        "encoder.layers.0.self_attn.k_proj": (4, 2.0),
        "encoder.layers.0.self_attn.v_proj": (4, 2.0),
        "encoder.layers.0.self_attn.out_proj": (4, 2.0),
        "encoder.layers.1.mlp.fc1": (3, 2.0),
    },
}

# Overlaps LoRA 1 on to_q, proj_in and q_proj so that two files at once add on the same weights.
LORA_2 = {
    "unet": {
        "down_blocks.0.attentions.0.proj_in": (3, 2.0),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": (2, 3.0),
        "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v": (4, 2.0),
        "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2": (3, 2.0),
        "up_blocks.0.resnets.1.conv2": (2, 3.0),
    },
    "text_encoder": {
        "encoder.layers.0.self_attn.q_proj": (2, 1.0),
        "encoder.layers.1.self_attn.v_proj": (3, 4.5),
        "encoder.layers.1.mlp.fc2": (2, 3.0),
    },
}

# Fused weights the tests compare tensor for tensor (component, module), each where its case's LoRAs change it;
# `both` keeps only its outputs, to stay small.
CHECKED = [
    ("unet", "down_blocks.0.attentions.0.proj_in"),
    ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"),
    ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"),
    ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2"),
    ("unet", "down_blocks.1.resnets.0.conv1"),
    ("unet", "up_blocks.0.resnets.1.conv2"),
    ("text_encoder", "encoder.layers.0.self_attn.q_proj"),
    ("text_encoder", "encoder.layers.1.mlp.fc1"),
]


def load_pipeline():
    unet = UNet2DConditionModel.from_pretrained(os.path.join(BASE, "unet"))
    # transformers 5 keeps the file's F16; Kiri computes in float32, and so must the reference.
    text_encoder = CLIPTextModel.from_pretrained(os.path.join(BASE, "text_encoder"), dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(os.path.join(BASE, "vae"))
    scheduler = PNDMScheduler.from_pretrained(os.path.join(BASE, "scheduler"))
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=None, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def random_lora(spec, pipe, generator):
    """{component: {module: (down, up, alpha)}}: down [r, in(, k, k)], up [out, r(, 1, 1)], sized so that the
    update is about a tenth of the weight."""
    lora = {}
    for component, modules in spec.items():
        network = getattr(pipe, component)
        lora[component] = {}
        for name, (rank, alpha) in modules.items():
            weight = network.get_submodule(name).weight
            down_shape = [rank, *weight.shape[1:]]
            up_shape = [weight.shape[0], rank] + [1] * (weight.dim() - 2)
            down = torch.randn(down_shape, generator=generator) / weight[0].numel() ** 0.5
            up = torch.randn(up_shape, generator=generator) * 0.1 * weight.abs().mean() * rank / alpha
            lora[component][name] = (down.half().float(), up.half().float(), alpha)
    return lora


def save_kohya(lora, path):
    """kohya-ss sd-scripts networks/lora.py names: `lora_unet_` / `lora_te_` + the module path with `_` for `.`."""
    tensors = {}
    for component, prefix in (("unet", "lora_unet_"), ("text_encoder", "lora_te_")):
        for name, (down, up, alpha) in lora[component].items():
            # kohya names the text encoder's modules as transformers 4 did, under `text_model.`.
            module = "text_model." + name if component == "text_encoder" else name
            key = prefix + module.replace(".", "_")
            tensors[key + ".lora_down.weight"] = down.half().contiguous()
            tensors[key + ".lora_up.weight"] = up.half().contiguous()
            tensors[key + ".alpha"] = torch.tensor(alpha, dtype=torch.float32)
    save_file(tensors, path, metadata={"ss_network_module": "networks.lora"})


def save_peft(lora, spec, path):
    """Through PEFT adapters on fresh copies of the networks, as a diffusers training script saves its LoRA."""
    pipe = load_pipeline()
    layers, metadata = {}, {}
    for component in ("unet", "text_encoder"):
        network = getattr(pipe, component)
        modules = spec[component]
        config = LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=list(modules),
                            rank_pattern={name: rank for name, (rank, _) in modules.items()},
                            alpha_pattern={name: alpha for name, (_, alpha) in modules.items()})
        network.add_adapter(config)
        with torch.no_grad():
            for name, (down, up, _) in lora[component].items():
                layer = network.get_submodule(name)
                layer.lora_A["default"].weight.copy_(down)
                layer.lora_B["default"].weight.copy_(up)
        layers[component] = get_peft_model_state_dict(network)
        # Without the local folder PEFT records as the base model.
        metadata[component] = dict(network.peft_config["default"].to_dict(), base_model_name_or_path=None)
    StableDiffusionPipeline.save_lora_weights(
        HERE, unet_lora_layers=layers["unet"], text_encoder_lora_layers=layers["text_encoder"],
        unet_lora_adapter_metadata=metadata["unet"], text_encoder_lora_adapter_metadata=metadata["text_encoder"],
        weight_name=os.path.basename(path))


def expected_weight(pipe, component, name, loras):
    """W + Σ scale · alpha / rank · up @ down, with k×k convs flattened to [out, in·k·k]."""
    weight = getattr(pipe, component).get_submodule(name).weight.detach().clone()
    for lora, scale in loras:
        if name not in lora[component]:
            continue
        down, up, alpha = lora[component][name]
        delta = up.flatten(1) @ down.flatten(1)
        weight += scale * alpha / down.shape[0] * delta.reshape(weight.shape)
    return weight


def run(pipe, io, inputs):
    with torch.no_grad():
        unet = pipe.unet(inputs["x"], inputs["timesteps"], encoder_hidden_states=inputs["encoder_hidden_states"]).sample
        hidden = pipe.text_encoder(inputs["input_ids"].long()).last_hidden_state
    return unet, hidden


def main():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1234)
    base = load_pipeline()
    lora_1 = random_lora(LORA_1, base, generator)
    lora_2 = random_lora(LORA_2, base, generator)
    kohya, peft_path = os.path.join(HERE, "kohya.safetensors"), os.path.join(HERE, "peft.safetensors")
    save_kohya(lora_1, kohya)
    save_peft(lora_2, LORA_2, peft_path)

    inputs = {
        "x": torch.randn(1, 4, 8, 8, generator=generator),
        "timesteps": torch.tensor([421.0]),
        "encoder_hidden_states": torch.randn(1, 5, 32, generator=generator),
        "input_ids": torch.tensor([[0, 17, 41, 5, 33, 2, 2, 2]], dtype=torch.float32),
    }
    io = dict(inputs)
    io["base.unet_output"], io["base.text_hidden_state"] = run(base, io, inputs)

    cases = {"kohya": [(kohya, lora_1, 0.8)], "peft": [(peft_path, lora_2, 0.8)],
             "both": [(kohya, lora_1, 0.8), (peft_path, lora_2, 0.5)]}
    worst = 0.0
    for case, files in cases.items():
        pipe = load_pipeline()
        names = []
        for index, (path, _, _) in enumerate(files):
            name = f"lora{index}"
            pipe.load_lora_weights(HERE, weight_name=os.path.basename(path), adapter_name=name)
            names.append(name)
        pipe.set_adapters(names, adapter_weights=[scale for _, _, scale in files])
        pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
        pipe.unload_lora_weights()
        for component, name in CHECKED:
            fused = getattr(pipe, component).get_submodule(name).weight.detach()
            expected = expected_weight(base, component, name, [(lora, scale) for _, lora, scale in files])
            difference = ((fused - expected).abs().max() / expected.abs().max()).item()
            worst = max(worst, difference)
            assert difference < 1e-6, (case, name, difference)
            if case != "both" and any(name in lora[component] for _, lora, _ in files):
                io[f"{case}.{component}.{name}.weight"] = fused
        io[f"{case}.unet_output"], io[f"{case}.text_hidden_state"] = run(pipe, io, inputs)
        change = (io[f"{case}.unet_output"] - io["base.unet_output"]).abs().max().item()
        print(f"{case}: UNet output moves by up to {change:.4f} from the base model")
    print(f"diffusers' fused weights against W + scale · alpha / rank · up @ down: max relative difference {worst:.2e}")

    save_file({key: value.contiguous() for key, value in io.items()}, os.path.join(HERE, "io.safetensors"),
              metadata={"scales": json.dumps({case: [scale for _, _, scale in files] for case, files in cases.items()})})
    with open(os.path.join(HERE, "versions.json"), "w") as file:
        json.dump({"diffusers": diffusers.__version__, "peft": peft.__version__, "torch": torch.__version__,
                   "transformers": transformers.__version__}, file, indent=2)
        file.write("\n")
    for name in ("kohya.safetensors", "peft.safetensors", "io.safetensors"):
        print(name, os.path.getsize(os.path.join(HERE, name)), "bytes")


if __name__ == "__main__":
    main()
