#!/usr/bin/env python3
"""Single-file checkpoint fixtures: tiny random Stable Diffusion pipelines in two layouts.

For each flavour (see README.md) it writes, next to this file:
  FLAVOUR/diffusers/    the pipeline as diffusers folders: model_index.json, unet/, vae/, text_encoder/, scheduler/
  FLAVOUR.safetensors   the same tensors in the original CompVis / A1111 single-file key layout

The single-file layout is written by this script's own port of diffusers'
scripts/convert_diffusers_to_original_stable_diffusion.py (UNet, VAE, SD1 CLIP), generalised from SD's four
levels of two layers to any count, and by the inverse of diffusers' convert_open_clip_checkpoint
(diffusers/loaders/single_file_utils.py) for SD2's OpenCLIP text encoder. The script then loads every single
file back with diffusers' own from_single_file conversion and checks that each tensor equals the folder's
bit for bit, which is what makes the layout evidence rather than a guess.

    /work/venv/bin/python Tests/Fixtures/models/singlefile/make_single_file.py

Weights are stored as F16 in both layouts (so both hold exactly the same values) to keep the files small.
"""
import json
import os

import torch

import diffusers
import transformers
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint, create_diffusers_clip_model_from_ldm
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------------------
# The flavours
# ----------------------------------------------------------------------------------

def sd1():
    """SD 1.x: CLIP ViT-L layout (`cond_stage_model.transformer.text_model.*`), conv proj_in/proj_out, 8 heads,
    epsilon. Two levels, so the map's level arithmetic, downsampler and upsampler are exercised."""
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
    text = CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=1,
                          vocab_size=64, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
                          bos_token_id=0, eos_token_id=2, pad_token_id=1)
    return dict(name="sd1", unet=unet, text=text, prediction="epsilon", open_clip=False)


def sd2():
    """SD 2.x: OpenCLIP ViT-H layout (`cond_stage_model.model.*`, fused in_proj, one resblock more than the
    encoder diffusers builds), linear proj_in/proj_out, heads of 64 channels, v-prediction by ComfyUI's test on
    the last output block's norm1.bias. One level keeps the 64-channel blocks SD2's head size needs small."""
    unet = UNet2DConditionModel(
        sample_size=96, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32,),
        down_block_types=("CrossAttnDownBlock2D",), up_block_types=("CrossAttnUpBlock2D",),
        cross_attention_dim=32, attention_head_dim=[1], use_linear_projection=True, norm_num_groups=32)
    text = CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=1,
                          vocab_size=64, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
                          bos_token_id=0, eos_token_id=2, pad_token_id=1)
    return dict(name="sd2", unet=unet, text=text, prediction="v_prediction", open_clip=True)


def vae():
    """SD's AutoencoderKL at two levels: the 1×1-conv mid attention, down- and upsamplers (levels of equal width
    have no nin_shortcut, which would need a 64-channel level and 0.8 MB more per copy)."""
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 32), layers_per_block=1,
                         latent_channels=4, norm_num_groups=32, sample_size=512, scaling_factor=0.18215)


def scheduler(prediction):
    """SD 1.x/2.x's training schedule as diffusers writes it for a single file (SCHEDULER_DEFAULT_CONFIG)."""
    return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                         set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, prediction_type=prediction,
                         timestep_spacing="leading")


# ----------------------------------------------------------------------------------
# Random weights
# ----------------------------------------------------------------------------------

def randomise(state, generator):
    """Every tensor re-drawn: norm scales around 1, everything else non-zero, so a swapped or dropped tensor shows."""
    result = {}
    for key, value in state.items():
        if "norm" in key and key.endswith(".weight") and value.ndim == 1:
            drawn = 1 + 0.2 * torch.randn(value.shape, generator=generator)
        else:
            drawn = 0.1 * torch.randn(value.shape, generator=generator)
        result[key] = drawn.to(torch.float16)
    return result


# ----------------------------------------------------------------------------------
# diffusers → original layout (scripts/convert_diffusers_to_original_stable_diffusion.py, generalised)
# ----------------------------------------------------------------------------------

RESNET = [("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("out_layers.0", "norm2"), ("out_layers.3", "conv2"),
          ("emb_layers.1", "time_emb_proj"), ("skip_connection", "conv_shortcut")]


def unet_to_original(state, config):
    """Each level has `layers` input blocks (resnet, then attention) and, but for the last, a downsampler
    input block; going up, `layers + 1` output blocks and the upsampler inside the last of them."""
    levels, layers = len(config["block_out_channels"]), config["layers_per_block"]
    prefixes = [("time_embed.0.", "time_embedding.linear_1."), ("time_embed.2.", "time_embedding.linear_2."),
                ("input_blocks.0.0.", "conv_in."), ("out.0.", "conv_norm_out."), ("out.2.", "conv_out."),
                ("middle_block.0.", "mid_block.resnets.0."), ("middle_block.1.", "mid_block.attentions.0."),
                ("middle_block.2.", "mid_block.resnets.1.")]
    for level in range(levels):
        for layer in range(layers):
            index = 1 + level * (layers + 1) + layer
            prefixes.append((f"input_blocks.{index}.0.", f"down_blocks.{level}.resnets.{layer}."))
            prefixes.append((f"input_blocks.{index}.1.", f"down_blocks.{level}.attentions.{layer}."))
        if level < levels - 1:
            index = 1 + level * (layers + 1) + layers
            prefixes.append((f"input_blocks.{index}.0.op.", f"down_blocks.{level}.downsamplers.0.conv."))
        for layer in range(layers + 1):
            index = level * (layers + 1) + layer
            prefixes.append((f"output_blocks.{index}.0.", f"up_blocks.{level}.resnets.{layer}."))
            prefixes.append((f"output_blocks.{index}.1.", f"up_blocks.{level}.attentions.{layer}."))
        if level < levels - 1:
            index = level * (layers + 1) + layers
            has_attention = config["up_block_types"][level] == "CrossAttnUpBlock2D"
            prefixes.append((f"output_blocks.{index}.{2 if has_attention else 1}.conv.",
                             f"up_blocks.{level}.upsamplers.0.conv."))
    result = {}
    for key, value in state.items():
        matches = [(old, new) for old, new in prefixes if key.startswith(new)]
        assert len(matches) == 1, key
        old, new = matches[0]
        rest = key[len(new):]
        if ".resnets." in new:
            for original, diffusers_name in RESNET:
                rest = rest.replace(diffusers_name, original)
        result["model.diffusion_model." + old + rest] = value
    return result


def vae_to_original(state, config):
    """Encoder levels keep their order; decoder up blocks are numbered from the bottom (`up.{n-1-i}`); the mid
    attention's linear layers become 1×1 convs."""
    levels = len(config["block_out_channels"])
    prefixes = [("encoder.norm_out.", "encoder.conv_norm_out."), ("decoder.norm_out.", "decoder.conv_norm_out.")]
    for side in ("encoder", "decoder"):
        prefixes += [(f"{side}.mid.block_1.", f"{side}.mid_block.resnets.0."),
                     (f"{side}.mid.block_2.", f"{side}.mid_block.resnets.1."),
                     (f"{side}.mid.attn_1.", f"{side}.mid_block.attentions.0.")]
    for level in range(levels):
        prefixes.append((f"encoder.down.{level}.block.", f"encoder.down_blocks.{level}.resnets."))
        prefixes.append((f"encoder.down.{level}.downsample.", f"encoder.down_blocks.{level}.downsamplers.0."))
        prefixes.append((f"decoder.up.{levels - 1 - level}.block.", f"decoder.up_blocks.{level}.resnets."))
        prefixes.append((f"decoder.up.{levels - 1 - level}.upsample.", f"decoder.up_blocks.{level}.upsamplers.0."))
    attention = [("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0.")]
    result = {}
    for key, value in state.items():
        new_key = key
        for old, new in prefixes:
            if key.startswith(new):
                new_key = old + key[len(new):]
                break
        new_key = new_key.replace("conv_shortcut", "nin_shortcut")
        if ".mid.attn_1." in new_key:
            for old, new in attention:
                new_key = new_key.replace(".attn_1." + new, ".attn_1." + old)
            if value.ndim == 2:
                value = value[:, :, None, None]
        result["first_stage_model." + new_key] = value
    return result


def clip_to_original(state):
    """SD 1.x: the transformers state dict under `cond_stage_model.transformer.`."""
    return {"cond_stage_model.transformer." + key: value for key, value in state.items()}


def open_clip_to_original(state, layers, generator):
    """The inverse of diffusers' convert_open_clip_checkpoint: q/k/v fused into in_proj, the transformers names
    turned back into OpenCLIP's, plus the resblock SD2 drops (it conditions on the penultimate layer) and the
    text projection, neither of which the diffusers text encoder has."""
    prefix = "cond_stage_model.model."
    result = {}
    renames = [("text_model.embeddings.token_embedding.weight", "token_embedding.weight"),
               ("text_model.embeddings.position_embedding.weight", "positional_embedding"),
               ("text_model.final_layer_norm.", "ln_final.")]
    for layer in range(layers):
        source = f"text_model.encoder.layers.{layer}."
        target = f"transformer.resblocks.{layer}."
        for kind in ("weight", "bias"):
            result[prefix + target + f"attn.in_proj_{kind}"] = torch.cat(
                [state[source + f"self_attn.{name}_proj.{kind}"] for name in ("q", "k", "v")])
        renames += [(source + "self_attn.out_proj.", target + "attn.out_proj."),
                    (source + "layer_norm1.", target + "ln_1."), (source + "layer_norm2.", target + "ln_2."),
                    (source + "mlp.fc1.", target + "mlp.c_fc."), (source + "mlp.fc2.", target + "mlp.c_proj.")]
    for key, value in state.items():
        if ".self_attn." in key and "out_proj" not in key:
            continue
        matches = [(new, old) for new, old in renames if key.startswith(new)]
        assert len(matches) == 1, key
        new, old = matches[0]
        result[prefix + old + key[len(new):]] = value
    # The dropped last resblock, shaped like the others, and OpenCLIP's [width, embed] projection.
    template = {key: value for key, value in result.items() if f"resblocks.{layers - 1}." in key}
    for key, value in template.items():
        result[key.replace(f"resblocks.{layers - 1}.", f"resblocks.{layers}.")] = \
            (0.1 * torch.randn(value.shape, generator=generator)).to(torch.float16)
    width = state["text_model.final_layer_norm.weight"].shape[0]
    result[prefix + "text_projection"] = (0.1 * torch.randn((width, width), generator=generator)).to(torch.float16)
    return result


# ----------------------------------------------------------------------------------
# Writing and checking
# ----------------------------------------------------------------------------------

def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as file:
        json.dump(value, file, indent=2, sort_keys=True)
        file.write("\n")


def build(flavour, seed):
    generator = torch.Generator().manual_seed(seed)
    folder = os.path.join(HERE, flavour["name"], "diffusers")
    unet, autoencoder = flavour["unet"], vae()
    text = CLIPTextModel(flavour["text"])

    unet_state = randomise(unet.state_dict(), generator)
    if flavour["prediction"] == "v_prediction":
        # ComfyUI's SD2 test (comfy/supported_models.py, SD20.model_type): this bias's std above 0.09 means v.
        last = len(unet.config.block_out_channels) - 1
        key = f"up_blocks.{last}.attentions.{unet.config.layers_per_block}.transformer_blocks.0.norm1.bias"
        unet_state[key] = (0.3 * torch.randn(unet_state[key].shape, generator=generator)).to(torch.float16)
    # One VAE for both flavours (its own seed), so git stores its folder copy once.
    vae_state = randomise(autoencoder.state_dict(), torch.Generator().manual_seed(100))
    # transformers 5 saves CLIPTextModel without the `text_model.` prefix; published SD folders have it, and so
    # does diffusers' conversion, so the folder is written in that layout.
    text_state = randomise({"text_model." + key: value for key, value in text.state_dict().items()
                            if not key.endswith("position_ids")}, generator)

    unet_config = {key: value for key, value in unet.config.items() if not key.startswith("_")}
    unet_config["_class_name"] = "UNet2DConditionModel"
    vae_config = {key: value for key, value in autoencoder.config.items() if not key.startswith("_")}
    vae_config["_class_name"] = "AutoencoderKL"
    write_json(os.path.join(folder, "unet", "config.json"), unet_config)
    save_file(unet_state, os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors"))
    write_json(os.path.join(folder, "vae", "config.json"), vae_config)
    save_file(vae_state, os.path.join(folder, "vae", "diffusion_pytorch_model.safetensors"))
    os.makedirs(os.path.join(folder, "text_encoder"), exist_ok=True)
    text.config.save_pretrained(os.path.join(folder, "text_encoder"))
    save_file(text_state, os.path.join(folder, "text_encoder", "model.safetensors"), metadata={"format": "pt"})
    scheduler(flavour["prediction"]).save_config(os.path.join(folder, "scheduler"))
    write_json(os.path.join(folder, "model_index.json"), {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "scheduler": ["diffusers", "PNDMScheduler"]})

    single = {}
    single.update(unet_to_original(unet_state, unet.config))
    single.update(vae_to_original(vae_state, autoencoder.config))
    if flavour["open_clip"]:
        single.update(open_clip_to_original(text_state, flavour["text"].num_hidden_layers, generator))
    else:
        single.update(clip_to_original(text_state))
    # Buffers a real checkpoint carries beside the networks (LatentDiffusion's schedule); no network reads them.
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    single["betas"] = betas.float()
    single["alphas_cumprod"] = torch.cumprod(1 - betas, 0).float()
    path = os.path.join(HERE, flavour["name"] + ".safetensors")
    save_file(single, path)
    check(path, folder, flavour, unet_state, vae_state, text_state)


def check(path, folder, flavour, unet_state, vae_state, text_state):
    """diffusers' from_single_file loads the file back to the folder's tensors exactly."""
    unet = UNet2DConditionModel.from_single_file(path, config=folder, subfolder="unet", local_files_only=True)
    same(unet.state_dict(), unet_state, "unet")
    autoencoder = AutoencoderKL.from_single_file(path, config=folder, subfolder="vae", local_files_only=True)
    same(autoencoder.state_dict(), vae_state, "vae")
    checkpoint = load_file(path)
    if flavour["open_clip"]:
        # convert_open_clip_checkpoint drops SD2's resblock 23 by name; at this size the dropped block is
        # resblock 2, which it maps to encoder layer 2, a layer the text encoder does not have.
        dropped = f"text_model.encoder.layers.{flavour['text'].num_hidden_layers}."
        converted = convert_open_clip_checkpoint(CLIPTextModel(flavour["text"]), checkpoint)
        converted = {key: value for key, value in converted.items()
                     if not key.startswith(dropped) and key != "text_projection.weight"}
        same(converted, text_state, "text_encoder")
    else:
        text = create_diffusers_clip_model_from_ldm(CLIPTextModel, checkpoint, config=folder,
                                                    subfolder="text_encoder", local_files_only=True)
        same({"text_model." + key: value for key, value in text.state_dict().items()}, text_state, "text_encoder")


def same(loaded, expected, name):
    loaded = {key: value for key, value in loaded.items() if not key.endswith("position_ids")}
    assert loaded.keys() == expected.keys(), (name, sorted(loaded.keys() ^ expected.keys()))
    for key, value in expected.items():
        assert torch.equal(loaded[key].to(torch.float16), value), (name, key)
        assert loaded[key].to(torch.float16).float().equal(loaded[key].float()), (name, key, "not F16-exact")
    print(f"  {name}: {len(expected)} tensors identical")


def main():
    torch.manual_seed(0)
    for seed, flavour in enumerate([sd1(), sd2()]):
        print(flavour["name"])
        build(flavour, seed)
    write_json(os.path.join(HERE, "versions.json"), {
        "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__})


if __name__ == "__main__":
    main()
