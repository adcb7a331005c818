#!/usr/bin/env python3
"""Fixtures for Kiri's prompt weighting (Sources/KiriModels/Networks/CLIP/PromptWeighting.swift, PromptEncoder.swift).

Writes, next to this file (see README.md):
  text_model/config.json, text_model/model.safetensors   a tiny random transformers CLIPTextModel whose vocabulary
                                                          is the small test tokenizer's (Tests/Fixtures/models/tokenizer/small)
  cases.json             for each case: the prompt, the pad token, clip skip, the parsed pieces and the chunks
                         (ids and weights), from this file's own implementation of A1111's algorithm
  embeddings.safetensors each case's encoding [1, 77·k, hidden], key "case_N"
  a1111_parse.json       (with --a1111 DIR) prompts and what AUTOMATIC1111's own parse_prompt_attention returns for
                         them, imported from DIR/prompt_parser.py; this file's parser is asserted to agree with it

    /work/venv/bin/python Tests/Fixtures/models/prompt/make_prompt_weighting.py [--a1111 /tmp/a1111]

The implementation below is written from a description of A1111's behaviour (modules/prompt_parser.py
parse_prompt_attention; modules/sd_hijack_clip.py tokenize_line, process_tokens and forward; modules/sd_emphasis.py
EmphasisOriginal), not copied from it; the parse goldens are the check that it agrees.
"""
import argparse
import importlib.util
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import unicodedata

import torch

import transformers
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER = os.path.join(HERE, "..", "tokenizer", "small")
CHUNK = 75
BACKTRACK = 20
MAX_DEPTH = 64


class PromptError(Exception):
    pass


# ---------------------------------------------------------------------------------------------------------------
# Parsing: a left-to-right scan. `(` and `[` open groups (kept on separate stacks); `)` multiplies the pieces since
# its `(` by 1.1, `]` those since its `[` by 1/1.1, and `:` + optional whitespace + number + optional whitespace +
# `)` by the number. A backslash escapes ( ) [ ] or itself and is dropped before anything else. Text runs are split
# at BREAK words (whitespace around them removed), each part a piece even when empty. Pieces of equal weight merge.

def is_space(c):
    return c.isspace()


def is_word(c):
    return c.isalnum() or c == "_"


def is_digit(c):
    return unicodedata.category(c) == "Nd"


def split_breaks(text):
    """Parts of `text` around each BREAK that stands as a word, the whitespace next to it dropped."""
    parts, part_start, cursor, i, n = [], 0, 0, 0, len(text)
    while i + 5 <= n:
        if text[i:i + 5] == "BREAK" and (i == 0 or not is_word(text[i - 1])) and (i + 5 == n or not is_word(text[i + 5])):
            start, end = i, i + 5
            while start > cursor and is_space(text[start - 1]):
                start -= 1
            while end < n and is_space(text[end]):
                end += 1
            parts.append(text[part_start:start])
            part_start = cursor = i = end
        else:
            i += 1
    parts.append(text[part_start:])
    return parts


def weight_suffix(text, i):
    """(number, index after ')') when a weight `:  number  )` starts at the colon text[i], else None."""
    j = i + 1
    while j < len(text) and is_space(text[j]):
        j += 1
    start = j
    if j < len(text) and text[j] in "+-":
        j += 1
    digits = j
    while j < len(text) and (text[j] == "." or is_digit(text[j])):
        j += 1
    if j == digits:
        return None
    number = text[start:j]
    while j < len(text) and is_space(text[j]):
        j += 1
    if j < len(text) and text[j] == ")":
        return number, j + 1
    return None


def parse(text):
    pieces, groups = [], {"(": [], "[": []}

    def scale(start, factor):
        for piece in pieces[start:]:
            piece[1] *= factor

    def unbalanced(bracket, column):
        return PromptError(f"unbalanced '{bracket}' at column {column}")

    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 < len(text) and text[i + 1] in "()[]\\":
                pieces.append([text[i + 1], 1.0])
                i += 2
            else:
                pieces.append(["", 1.0])
                i += 1
        elif c in "([":
            if len(groups["("]) + len(groups["["]) >= MAX_DEPTH:
                raise PromptError(f"brackets nested deeper than {MAX_DEPTH} at column {i + 1}")
            groups[c].append((len(pieces), i + 1))
            i += 1
        elif c == ":" and weight_suffix(text, i):
            number, end = weight_suffix(text, i)
            if not groups["("]:
                raise unbalanced(")", end)
            scale(groups["("].pop()[0], float(number))
            i = end
        elif c in ")]":
            opener = "(" if c == ")" else "["
            if not groups[opener]:
                raise unbalanced(c, i + 1)
            scale(groups[opener].pop()[0], 1.1 if c == ")" else 1 / 1.1)
            i += 1
        else:
            end = i + 1
            if c != ":":
                while end < len(text) and text[end] not in "\\()[]:":
                    end += 1
            for k, part in enumerate(split_breaks(text[i:end])):
                if k:
                    pieces.append(["BREAK", -1.0])
                pieces.append([part, 1.0])
            i = end
    unclosed = sorted([(column, b) for b in "([" for _, column in groups[b]])
    if unclosed:
        raise unbalanced(unclosed[0][1], unclosed[0][0])
    merged = []
    for piece in pieces:
        if merged and merged[-1][1] == piece[1]:
            merged[-1][0] += piece[0]
        else:
            merged.append(piece)
    return merged or [["", 1.0]]


# ---------------------------------------------------------------------------------------------------------------
# Chunking: every id of a piece carries its weight; a chunk closes at 75 ids or at a BREAK piece. When the chunk is
# full and the next id is not a comma, the ids after a comma among the last 20 move to the next chunk. A comma
# that itself arrives at a full chunk is not remembered. Chunks are padded with the end token to 75, wrapped in
# start and end; when the pad token is not the end token, everything after the first end token becomes the pad
# token. Padding weighs 1.

def chunk(pieces, tokenizer):
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    start, end, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    chunks, ids, weights, last_comma = [], [], [], None

    def close():
        nonlocal ids, weights, last_comma
        tokens = [start] + ids + [end] * (CHUNK - len(ids) + 1)
        if pad != end:
            first_end = tokens.index(end)
            tokens = tokens[:first_end + 1] + [pad] * (len(tokens) - first_end - 1)
        chunks.append((tokens, [1.0] + weights + [1.0] * (CHUNK - len(weights) + 1)))
        ids, weights, last_comma = [], [], None

    for text, weight in pieces:
        if text == "BREAK" and weight == -1:
            close()
            continue
        for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
            if token == comma:
                last_comma = len(ids)
            elif len(ids) == CHUNK and last_comma is not None and CHUNK - last_comma <= BACKTRACK:
                moved = ids[last_comma + 1:], weights[last_comma + 1:]
                del ids[last_comma + 1:], weights[last_comma + 1:]
                close()
                ids, weights = list(moved[0]), list(moved[1])
            if len(ids) == CHUNK:
                close()
            ids.append(token)
            weights.append(weight)
    if ids or not chunks:
        close()
    return chunks


# ---------------------------------------------------------------------------------------------------------------
# Encoding: each chunk alone through the text encoder (clip skip N: hidden_states[-N] through final_layer_norm),
# z scaled by the token weights (as float32), then by mean(z before) / mean(z after); chunks joined on tokens.

def encode(chunks, model, clip_skip):
    outputs = []
    with torch.no_grad():
        for tokens, weights in chunks:
            output = model(torch.tensor([tokens]), output_hidden_states=True)
            z = output.last_hidden_state if clip_skip == 1 else model.final_layer_norm(output.hidden_states[-clip_skip])
            before = z.mean()
            z = z * torch.tensor(weights, dtype=torch.float32)[None, :, None]
            z = z * (before / z.mean())
            outputs.append(z)
    return torch.cat(outputs, dim=1)


# ---------------------------------------------------------------------------------------------------------------

def letters(count, start=0):
    """`count` one-letter words: each is one token ("x</w>") in the small vocabulary."""
    return " ".join("abcdefghijklmnopqrstuvwxyz"[(start + k) % 26] for k in range(count))


def embedding_cases():
    """(prompt, pad token, clip skip)."""
    end, bang = "<|endoftext|>", "!"
    plain = [
        "", "a photo of a cat", "a (photo) of a cat", "a ((photo)) of a [cat]", "(masterpiece:1.3), best quality, [[blurry]]",
        "a \\(literal\\) bracket, \\[square\\] and \\\\ backslash", "cat BREAK dog", "BREAK", "BREAK cat", "cat BREAK",
        "(cat BREAK dog:1.2)", "(a:0) cat", "(a:-1) cat, (dog: 2.5 )", "[(a:1.5) b] (c [d])", "猫 (café:1.2) 😀 e\u0301",
        "wow!! (so:1.1) good!", "first <|endoftext|> (second:1.4)", "((((((deep))))))", "([crossed)] brackets",
        "a, " * 30 + "end", letters(80), letters(70) + ", " + letters(10), letters(74) + ", " + letters(10),
        letters(54) + ", " + letters(30), letters(55) + ", " + letters(30), letters(75) + ", , " + letters(5),
        letters(40) + " BREAK " + letters(50) + " (" + letters(40, 3) + ":1.3)",
        "(" + letters(60) + ":0.8), [" + letters(30, 5) + "], " + letters(90, 7),
        "a (red:1.2) car, " * 12, "BREAK BREAK a", "a BREAK BREAK", "x (y:1.5) z BREAK (w) v",
        "a (b (c (d:1.3) e:0.7) f)", "\\\\(not a group:2)", "(a:.5) (b:5.) (c:+2) (d:00.10)",
    ]
    cases = [(p, end, 1) for p in plain]
    cases += [(p, bang, 1) for p in ["", "wow!! (so:1.1) good!", letters(74) + ", " + letters(10)]]
    cases += [(p, end, 2) for p in ["a (photo:1.3) of a cat", letters(80), ""]]
    return cases


def random_prompt(rng, depth=0):
    words = ["cat", "a", "photo", "BREAK", "break", "xBREAK", "BREAKx", "_BREAK", "BREAK_", "1BREAK", "Break",
             "猫", "café", "e\u0301", "éBREAK", "BREAKé", "e\u0301BREAK", "١٢", "😀", "Σσ", "ß", "İ", ",", ".", "!", ";",
             ":", "::", "a:b", ":1e3", "|", "{x}", "<lora:x:0.5>", "AND", "0.5", "-"]
    spaces = [" ", " ", " ", "  ", "\t", "\n", "\u3000", "\u00a0", "\x1c", "\x1f", "\u2028", "\u200b", ""]
    escapes = ["\\(", "\\)", "\\[", "\\]", "\\\\", "\\a", "\\ ", "\\猫"]
    weights = ["1.3", "0.5", "2", "-1", "+.5", "1.", ".25", "0", "1.1", "١٫٥", "١.٥", "10", "00.7", "-0"]
    items = []
    for _ in range(rng.randint(1, 6)):
        roll = rng.random()
        if roll < 0.35:
            items.append(rng.choice(words))
        elif roll < 0.55:
            items.append(rng.choice(spaces))
        elif roll < 0.65:
            items.append(rng.choice(escapes))
        elif depth < 3:
            inner = random_prompt(rng, depth + 1)
            kind = rng.random()
            if kind < 0.4:
                items.append("(" + inner + ")")
            elif kind < 0.7:
                pad = lambda: rng.choice(["", "", " ", "  ", "\t"])
                items.append("(" + inner + ":" + pad() + rng.choice(weights) + pad() + ")")
            else:
                items.append("[" + inner + "]")
    return "".join(items)


def hand_written_parse_cases():
    return [
        "", "normal text", "an (important) word", "\\(literal\\]", "(unnecessary)(parens)",
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).)", "BREAK", "a BREAK b", "aBREAK b", "a BREAKb",
        "(a BREAK b)", "(BREAK:0)", "(BREAK:-1)", "(x BREAK:-1)", "(BRE\\AK:-1)", "a\\b", "\\", "\\\\(a)", "((a))",
        "[[a]]", "([a)]", "[(a])", "(a:1.5)(b:1.5)", "(a: 1.5 )", "(a:\u3000 2)", "(a:١٫٥)", "(a:١.٥)",
        "a\u0301BREAK", "猫BREAK", "BREAK猫", "1BREAK", "_BREAK", "BREAK_", "BREAK\u00a0x", "\x1cBREAK\x1f",
        "BREAK BREAK", "BREAKBREAK", "break", ":", "::", "a:b", "(a:b)", "(a:1e3)", "(a:.5)", "(a:5.)", "(a:+2)",
        "(a:-0.5)", "(a:00.10)", "(a:0)", "((a:0):-1)", "[a:b:0.5]", "[a|b]", "a AND b", "<lora:name:0.8> x",
        "(a)\\", "[]", "()", "([])", "\\(\\)\\[\\]\\\\", "a , b , c", "  BREAK  ", "x\n\nBREAK\n\ny",
        "(:1.5)", "( :1.5)", "((a:1.2):1.2)", "[(a:1.2)]", "(a [b] c:0.9)",
    ]


def load_a1111(folder):
    spec = importlib.util.spec_from_file_location("a1111_prompt_parser", os.path.join(folder, "prompt_parser.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parse_prompt_attention


def write_parse_goldens(folder):
    parse_prompt_attention = load_a1111(folder)
    rng = random.Random(20250611)
    prompts, rejected = hand_written_parse_cases(), 0
    while len(prompts) < 300:
        prompt = random_prompt(rng)
        try:
            parse(prompt)
        except PromptError:
            rejected += 1  # unbalanced: an escape took a bracket's place
            continue
        prompts.append(prompt)
    cases = []
    for prompt in prompts:
        expected = parse_prompt_attention(prompt)
        ours = parse(prompt)
        assert ours == expected, (prompt, ours, expected)
        cases.append([prompt, expected])
    with open(os.path.join(HERE, "a1111_parse.json"), "w") as f:
        json.dump({"source": "AUTOMATIC1111/stable-diffusion-webui modules/prompt_parser.py parse_prompt_attention",
                   "cases": cases}, f, ensure_ascii=True, separators=(",", ":"))
    print(f"a1111_parse.json: {len(cases)} prompts ({len(hand_written_parse_cases())} by hand), "
          f"{rejected} unbalanced drafts dropped", file=sys.stderr)


def tiny_text_model(tokenizer):
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=12, intermediate_size=20, num_hidden_layers=2,
                            num_attention_heads=3, max_position_embeddings=77, hidden_act="quick_gelu",
                            layer_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, projection_dim=8)
    generator = torch.Generator().manual_seed(5)
    model = CLIPTextModel(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if "norm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.2 * noise)
            elif name == "final_layer_norm.bias":
                # Keeps mean(z) well away from 0: emphasis divides by it, so a mean near 0 would amplify rounding
                # and test this model's conditioning rather than the port.
                parameter.copy_(0.5 + 0.1 * noise)
            elif name.endswith("bias"):
                parameter.copy_(0.1 * noise)
            elif "embedding" in name:
                parameter.copy_(noise)
            else:
                parameter.copy_(noise / parameter.shape[1] ** 0.5)
    return model


def main():
    arguments = argparse.ArgumentParser()
    arguments.add_argument("--a1111", help="folder holding A1111's modules/prompt_parser.py, for the parse goldens")
    options = arguments.parse_args()
    if options.a1111:
        write_parse_goldens(options.a1111)

    with tempfile.TemporaryDirectory() as plain:
        # SD1's tokenizer files name no pad token, so `!` is ordinary text there; the small folder's name `!`.
        for name in ["vocab.json", "merges.txt"]:
            shutil.copy(os.path.join(TOKENIZER, name), plain)
        tokenizers = {"<|endoftext|>": CLIPTokenizer.from_pretrained(plain, pad_token="<|endoftext|>"),
                      "!": CLIPTokenizer.from_pretrained(TOKENIZER)}
        assert tokenizers["<|endoftext|>"]("!", add_special_tokens=False)["input_ids"] != [0]
    model = tiny_text_model(tokenizers["!"])
    model.save_pretrained(os.path.join(HERE, "text_model"))

    cases, embeddings = [], {}
    for index, (prompt, pad, clip_skip) in enumerate(embedding_cases()):
        tokenizer = tokenizers[pad]
        pieces = parse(prompt)
        chunks = chunk(pieces, tokenizer)
        embeddings[f"case_{index}"] = encode(chunks, model, clip_skip).contiguous()
        cases.append({"prompt": prompt, "pad": pad, "clip_skip": clip_skip, "pieces": pieces,
                      "chunks": [{"tokens": t, "weights": w} for t, w in chunks]})
    save_file(embeddings, os.path.join(HERE, "embeddings.safetensors"),
              metadata={"python": platform.python_version(), "torch": torch.__version__,
                        "transformers": transformers.__version__})
    with open(os.path.join(HERE, "cases.json"), "w") as f:
        json.dump({"cases": cases}, f, ensure_ascii=True, separators=(",", ":"))
    chunk_count = sum(len(c["chunks"]) for c in cases)
    size = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(HERE) for name in names
               if not name.endswith((".py", ".md")))
    print(f"cases.json: {len(cases)} prompts, {chunk_count} chunks; fixtures {size} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
