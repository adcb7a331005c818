#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz harnesses (Tests/KiriFuzzTests) with the standard library only:

  safetensors/  valid files of each dtype, rank 0 and zero-size tensors, metadata, whitespace padding, and a few
                of the malformed shapes of security cases 22-28 (so the mutator starts next to each check)
  gguf/         GGUF files (stable-diffusion.cpp's format) with F32, F16, BF16 and Q8_0 tensors, metadata of every
                value type, a larger alignment, and one case per check of the header (GGUFTests expects each error)
  config/       UNet config.json and scheduler_config.json variants beyond Tests/Fixtures/models, which the
                harness also reads
  png/          PNGs with tEXt, zTXt and iTXt chunks (compressed and not), several chunks, a palette, and a zTXt that
                inflates to 8 MiB; the harness also reads Tests/Fixtures/images
  prompt/       A1111 prompt syntax: editing, alternation, nesting, escapes, AND weights, UTF-8
  regressions/  minimised inputs of the harnesses' findings (listed in regressions/README.md)

Run from anywhere: python3 Tests/Fixtures/fuzz/make_corpus.py (it rewrites these folders).
"""
import json
import os
import shutil
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def folder(name):
    path = os.path.join(HERE, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def write(path, data):
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))


# MARK: safetensors

def safetensors(tensors, metadata=None, pad=0, length=None, trailing=b""):
    """tensors: [(name, dtype, shape, raw bytes)] laid out in order."""
    header, data, offset = {}, b"", 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode() + b" " * pad
    return struct.pack("<Q", len(text) if length is None else length) + text + data + trailing


def f32(*values):
    return struct.pack("<%df" % len(values), *values)


def make_safetensors():
    out = folder("safetensors")
    seeds = {
        "empty_header": safetensors([]),
        "one_f32": safetensors([("w", "F32", [2, 2], f32(1, 2, 3, 4))]),
        "f16_bf16": safetensors([("a", "F16", [3], struct.pack("<3e", 1, -2, 0.5)),
                                 ("b", "BF16", [2], b"\x80\x3f\x00\xc0")]),
        "rank0": safetensors([("s", "F32", [], f32(7))]),
        "zero_size": safetensors([("z", "F32", [0, 4], b""), ("w", "F32", [1], f32(1))]),
        "metadata": safetensors([("w", "F32", [1], f32(1))], metadata={"format": "pt", "note": "é"}),
        "padded": safetensors([("w", "F32", [1], f32(1))], pad=7),
        "unaligned": safetensors([("a", "F16", [1], struct.pack("<e", 1)), ("b", "F32", [1], f32(2))]),
        "many": safetensors([("t%d" % i, "F32", [1, 2], f32(i, -i)) for i in range(12)]),
        "nested_names": safetensors([("down_blocks.0.resnets.0.conv1.weight", "F32", [1, 1, 1, 1], f32(1)),
                                     ("down_blocks.0.resnets.0.conv1.bias", "F32", [1], f32(0))]),
        # Malformed, each next to one check.
        "length_past_end": safetensors([("w", "F32", [1], f32(1))], length=4096),
        "length_huge": safetensors([], length=(1 << 64) - 1),
        "trailing": safetensors([("w", "F32", [1], f32(1))], trailing=b"\0\0\0\0"),
        "dtype_i64": safetensors([("w", "I64", [1], b"\0" * 8)]),
        "short": b"\x02\0\0",
    }
    gap = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}
    text = json.dumps(gap).encode()
    seeds["gap"] = struct.pack("<Q", len(text)) + text + b"\0" * 8
    overlap = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
               "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    text = json.dumps(overlap).encode()
    seeds["overlap"] = struct.pack("<Q", len(text)) + text + b"\0" * 4
    text = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
    seeds["duplicate"] = struct.pack("<Q", len(text)) + text + b"\0" * 8
    for name, data in seeds.items():
        write(os.path.join(out, name + ".safetensors"), data)


# MARK: configs

# MARK: GGUF (ggml/docs/gguf.md)

GGML_TYPES = {"F32": 0, "F16": 1, "Q8_0": 8, "Q4_K": 12, "BF16": 30, "unknown": 99}


def gguf_string(text):
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def gguf(tensors, metadata=(), version=3, alignment=32, counts=None, offsets=None, trailing=b""):
    """tensors: [(name, type name, dims innermost first, raw bytes)], laid out in order, each at an aligned offset;
    metadata: [(key, gguf value type, packed value)]; counts and offsets override what the header says."""
    header = b"GGUF" + struct.pack("<I", version)
    tensor_count, pair_count = counts or (len(tensors), len(metadata))
    header += struct.pack("<QQ", tensor_count, pair_count)
    for key, kind, packed in metadata:
        header += gguf_string(key) + struct.pack("<I", kind) + packed
    data, positions = b"", []
    for name, kind, dims, raw in tensors:
        data += b"\0" * (-len(data) % alignment)
        positions.append(len(data))
        data += raw
    for i, (name, kind, dims, raw) in enumerate(tensors):
        offset = offsets[i] if offsets else positions[i]
        header += gguf_string(name) + struct.pack("<I", len(dims)) + struct.pack("<%dQ" % len(dims), *dims)
        header += struct.pack("<IQ", GGML_TYPES[kind], offset)
    header += b"\0" * (-len(header) % alignment)
    return header + data + trailing


def q8_0(scale, values):
    """One block: a float16 scale and 32 int8 values."""
    return struct.pack("<e32b", scale, *values)


def make_gguf():
    out = folder("gguf")
    block = q8_0(0.5, list(range(-16, 16)))
    weights = [("w", "F32", [2, 2], f32(1, 2, 3, 4)), ("h", "F16", [3], struct.pack("<3e", 1, -2, 0.5)),
               ("b", "BF16", [1, 2], struct.pack("<2H", 0x3F80, 0xC000)), ("q", "Q8_0", [32, 2], block + block)]
    values = [("general.name", 8, gguf_string("tiny")), ("u8", 0, struct.pack("<B", 7)), ("i8", 1, struct.pack("<b", -7)),
              ("u16", 2, struct.pack("<H", 7)), ("i16", 3, struct.pack("<h", -7)), ("u32", 4, struct.pack("<I", 7)),
              ("i32", 5, struct.pack("<i", -7)), ("f32", 6, struct.pack("<f", 0.5)), ("bool", 7, struct.pack("<B", 1)),
              ("u64", 10, struct.pack("<Q", 7)), ("i64", 11, struct.pack("<q", -7)), ("f64", 12, struct.pack("<d", 0.25)),
              ("tokens", 9, struct.pack("<IQ", 8, 2) + gguf_string("a") + gguf_string("é"))]
    aligned = [("general.alignment", 4, struct.pack("<I", 64))]
    cases = {
        "valid": gguf(weights, values),
        "alignment_64": gguf(weights, aligned, alignment=64),
        "version_2": gguf(weights, version=2),
        "other_quantisation": gguf(weights + [("k", "Q4_K", [256], b"\0" * 144)]),
        # One per check, named by what GGUFTests expects.
        "bad_version": gguf(weights, version=1),
        "truncated": gguf([], [("k", 10, struct.pack("<Q", 7))])[:40],
        "tensor_count_huge": gguf(weights, counts=(1 << 40, 0)),
        "string_past_end": gguf([], [("k" * 8, 8, struct.pack("<Q", 1 << 40))]),
        "duplicate_key": gguf(weights, [values[1], values[1]]),
        "duplicate_name": gguf([weights[0], weights[0]]),
        "nested_array": gguf([], [("a", 9, struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 0, 0))]),
        "bad_alignment": gguf(weights, [("general.alignment", 4, struct.pack("<I", 48))]),
        "five_dimensions": gguf([("w", "F32", [1, 1, 1, 1, 1], f32(1))]),
        "q8_0_partial_row": gguf([("q", "Q8_0", [16, 2], block)]),
        "misaligned_offset": gguf([weights[0]], offsets=[4], trailing=b"\0" * 4),
        "past_end": gguf([weights[0]], offsets=[32]),
        "overlap": gguf([weights[0], ("v", "F32", [2], f32(1, 2))], offsets=[0, 0]),
        "unknown_type": gguf([("w", "unknown", [1], f32(1))]),
    }
    for name, data in cases.items():
        write(os.path.join(out, name + ".gguf"), data)


def make_configs():
    out = folder("config")
    unet = {
        "_class_name": "UNet2DModel", "sample_size": 8, "in_channels": 1, "out_channels": 1,
        "block_out_channels": [4, 8], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "layers_per_block": 1, "norm_num_groups": 2,
        "attention_head_dim": 4, "num_class_embeds": 10, "act_fn": "silu", "add_attention": True,
        "downsample_type": "resnet", "upsample_type": "resnet", "mid_block_type": None,
    }
    write(os.path.join(out, "unet2d_small.json"), json.dumps(unet, indent=1))
    conditional = {
        "_class_name": "UNet2DConditionModel", "sample_size": [8, 16], "in_channels": 4, "out_channels": 4,
        "block_out_channels": [8, 16], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "layers_per_block": [1, 2],
        "cross_attention_dim": [8, 8], "attention_head_dim": [2, 2], "transformer_layers_per_block": [1, 1],
        "norm_num_groups": 4, "use_linear_projection": True, "upcast_attention": False, "norm_eps": 1e-5,
    }
    write(os.path.join(out, "unet2d_condition_lists.json"), json.dumps(conditional, indent=1))
    scheduler = {"_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 4, "beta_schedule": "scaled_linear",
                 "trained_betas": [0.1, 0.2, 0.3, 0.4], "prediction_type": "v_prediction",
                 "timestep_spacing": "trailing", "steps_offset": 1, "rescale_betas_zero_snr": True}
    write(os.path.join(out, "scheduler_trained_betas.json"), json.dumps(scheduler, indent=1))
    write(os.path.join(out, "scheduler_minimal.json"), '{"_class_name": "DDIMScheduler"}')
    write(os.path.join(out, "scheduler_cosine.json"),
          '{"beta_schedule": "squaredcos_cap_v2", "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "sample"}')


# MARK: PNG

def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width, height, colour, depth, rows, extra=(), palette=None):
    """rows: raw scanline bytes without filter bytes."""
    body = b"".join(b"\0" + row for row in rows)
    chunks = [chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))]
    if palette:
        chunks.append(chunk(b"PLTE", palette))
    chunks += [chunk(kind, data) for kind, data in extra]
    chunks += [chunk(b"IDAT", zlib.compress(body)), chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def text(key, value):
    return (b"tEXt", key + b"\0" + value)


def ztext(key, value):
    return (b"zTXt", key + b"\0\0" + zlib.compress(value))


def itext(key, value, compressed, language=b"", translated=b""):
    payload = zlib.compress(value) if compressed else value
    return (b"iTXt", key + b"\0" + bytes([1 if compressed else 0, 0]) + language + b"\0" + translated + b"\0" + payload)


def make_pngs():
    out = folder("png")
    grey = [bytes([x * 60 for x in range(4)]) for _ in range(3)]
    rgb = [bytes([x * 80, 255 - x * 80, 40] * 1) * 1 for x in range(3)]
    seeds = {
        "text_plain": png(4, 3, 0, 8, grey, [text(b"kiri.recipe", b"print('hi')"), text(b"parameters", b"steps=20")]),
        "text_ztxt": png(4, 3, 0, 8, grey, [ztext(b"kiri.recipe", b"local x = 1\n" * 20)]),
        "text_itxt": png(4, 3, 0, 8, grey, [itext(b"kiri.prompt", "écharpe [a|b]".encode(), False, b"fr", "é".encode()),
                                            itext(b"kiri.args", b"steps=4 seed=1", True)]),
        "text_many": png(1, 1, 0, 8, [b"\x80"], [text(b"k%d" % i, b"v" * i) for i in range(16)]),
        "text_after_idat": None,
        "palette": png(3, 1, 3, 8, [b"\0\1\2"], [text(b"Comment", b"palette")], palette=b"\xff\0\0\0\xff\0\0\0\xff"),
        "rgb_text": png(1, 3, 2, 8, rgb, [text(b"Title", b"rgb")]),
        # 8 MiB of text from 8 KiB of zTXt: how a text bomb starts.
        "ztxt_bomb": png(1, 1, 0, 8, [b"\0"], [ztext(b"kiri.recipe", b"-" * (8 << 20))]),
        "itxt_empty": png(1, 1, 0, 8, [b"\0"], [itext(b"k", b"", True), text(b"k", b"")]),
    }
    base = png(2, 2, 0, 8, [b"\1\2", b"\3\4"])
    iend = base.rindex(b"IEND") - 4
    seeds["text_after_idat"] = base[:iend] + chunk(*text(b"late", b"after IDAT")) + base[iend:]
    for name, data in seeds.items():
        write(os.path.join(out, name + ".png"), data)


# MARK: prompts

def make_prompts():
    out = folder("prompt")
    prompts = [
        "sneaker", "", "a [b:c:2] d", "a [b:3]", "[a:b:0.5]", "[a|b|c]", "[fe|]male", "[[a|b]:c:0.5]",
        "a[b:[c:d:2]:1]e", r"\[a\:b\] \(c\) x\|y \\ [d:e:1]", "sneaker :0.7 AND [sandal|boot] :0.3",
        "a :1 AND b : -0.5 AND c:+.5", "BRAND AND ANDY", "écharpe [rouge|bleu] 👟", "[a:b:1e1]",
        "[" * 10 + "x" + "]" * 10, "[a:b:c:d]", "(emphasis:1.2)", "a AND", "[a:b:]", "[:x:1] AND [x::1]",
        "[[a|b|c]|[d:e:1]|[[f|g]:h:.3]]",
    ]
    for i, text in enumerate(prompts):
        write(os.path.join(out, "%02d.txt" % i), text)


# MARK: findings

def make_regressions():
    out = os.path.join(HERE, "regressions")
    os.makedirs(out, exist_ok=True)
    # A chunk that declares 2^31 - 1 bytes and ends the file: for text, sPLT, pCAL and sCAL chunks libpng 1.6.39
    # mallocs and zeroes a buffer of the declared length (png_read_buffer) before reading it, which
    # png_set_chunk_malloc_max does not limit: 2 GiB resident and 3-6 s for a 41-byte file.
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    for kind in (b"tEXt", b"zTXt", b"iTXt", b"sPLT", b"pCAL", b"sCAL"):
        write(os.path.join(out, "png_%s_length_2gib.png" % kind.decode()),
              b"\x89PNG\r\n\x1a\n" + header + struct.pack(">I", 0x7FFFFFFF) + kind)

    # Case 37, totals: 16 zTXt chunks, each under the 8 MiB chunk limit, inflate to 112 MiB of text from a 115 KB
    # file; PNGImage.read holds all of it (and its UTF-8 copies) before any caller's cap can refuse it.
    bomb = chunk(b"zTXt", b"kiri.recipe\0\0" + zlib.compress(b"-" * (7 << 20), 9))
    idat = chunk(b"IDAT", zlib.compress(b"\0\0"))
    write(os.path.join(out, "png_ztxt_total_112mib.png"),
          b"\x89PNG\r\n\x1a\n" + header + bomb * 16 + idat + chunk(b"IEND", b""))

    # block_out_channels[0] = 2^62: UNet.init's time-embedding width, channels[0] * 4, overflows and traps
    # (UNet.swift:41), ending the process from kiri.models.load. ConfigFields bounds no channel count.
    config = {"_class_name": "UNet2DModel", "in_channels": 1, "out_channels": 1, "block_out_channels": [1 << 62],
              "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"], "layers_per_block": 1}
    write(os.path.join(out, "config_block_out_channels_2pow62.json"), json.dumps(config, separators=(",", ":")))


if __name__ == "__main__":
    make_safetensors()
    make_gguf()
    make_configs()
    make_pngs()
    make_prompts()
    make_regressions()
