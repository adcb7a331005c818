"""Golden CLIP token ids from transformers' CLIPTokenizer, for Tests/KiriModelsTests/TokenizerTests.swift.

Run from this folder: /work/venv/bin/python make_tokenizer_fixtures.py [--merges OUT]
It needs transformers (5.x: CLIPTokenizer is the tokenizers-backed class) and open-clip-torch, whose
bpe_simple_vocab_16e6.txt.gz is OpenAI's CLIP BPE (MIT). open_clip is not imported (it needs torchvision);
its file is read directly, and the vocabulary is derived from the merges as open_clip's SimpleTokenizer does.

Writes:
  golden.json            every case's text and ids from the full CLIP vocabulary (the one SD1/SD2 use)
  small/                 vocab.json + merges.txt (+ SD2's special_tokens_map.json) of a CLIP BPE cut to
                         its first 2,000 merges, so both file formats can be committed small
  small-json/            the same tokenizer saved by transformers as tokenizer.json
  small_golden.json      ids of the first 300 cases from the small tokenizer (identical from both folders)
and with --merges OUT the 48,894 merges CLIP uses, in merges.txt form, for Kiri to bundle.
"""
import gzip
import json
import os
import random
import shutil
import sys
import tempfile

import tokenizers
import transformers
from transformers import CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
CLIP_MERGES = 49152 - 256 - 2  # open_clip: merges[1:49152-256-2+1]


def bytes_to_unicode():
    """GPT-2's byte-to-symbol table, as in CLIP's simple_tokenizer.py."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def open_clip_merges():
    import importlib.util
    spec = importlib.util.find_spec("open_clip")
    path = os.path.join(os.path.dirname(spec.origin), "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    return lines[1:CLIP_MERGES + 1]


def write_folder(folder, merges):
    """vocab.json + merges.txt laid out as openai/clip-vit-large-patch14 publishes them."""
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(set(vocab)) == len(vocab)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({token: i for i, token in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")


# MARK: Cases

HAND_WRITTEN = [
    "", " ", "   ", "\t", "\n", "\r\n", " \t\n\u00a0\u3000 ",
    "a photo of a cat", "A Photo Of A CAT", "a  photo\tof\na\r\ncat",
    "masterpiece, best quality, 1girl, solo, long hair, looking at viewer",
    "(masterpiece:1.2), (best quality:1.3), [blurry], ((detailed)), (((sharp)))",
    "\\(character\\) from \\[series\\]", "<lora:add_detail:0.8> a castle <lyco:style_v2:1.0>",
    "a cat BREAK a dog BREAK", "embedding:EasyNegative, (worst quality:1.4)", "{red|green|blue} car", "__wildcard__ dress",
    "[cat:dog:0.5]", "[cat|dog]", "a (red:1.1) car AND a blue sky :1.2",
    "don't it's we're they've I'm you'll he'd", "DON'T IT'S WE'RE", "'s 't 're 've 'm 'll 'd", "''s'", "rock'n'roll", "l'été",
    "it’s curly", "``quoted''", "\"double\" 'single'",
    "<|startoftext|>", "<|endoftext|>", "<|startoftext|>a cat<|endoftext|>", "<|STARTOFTEXT|>", "<|EndOfText|>>",
    "!<|endoftext|>!", "x<|startoftext|>y", "<|startoftext", "<|endoftext|><|endoftext|>",
    "café naïve résumé Ångström", "cafe\u0301 nai\u0308ve", "\u212b \u2126 \u00c5", "ΣΑΣ ΟΔΥΣΣΕΥΣ", "İstanbul ISTANBUL ıi",
    "STRASSE straße ẞ", "ǅemal ǈ ǋ", "ﬁne ﬂow", "ｆｕｌｌｗｉｄｔｈ　ＡＢＣ１２３", "Ⅻ ⅻ ① ½ ²",
    "東京タワー 夜景", "一只猫在屋顶上", "고양이 사진", "قطة على السطح", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "ภาษาไทย",
    "Привет мир", "Ελληνικά", "ქართული", "አማርኛ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕕𝕠𝕦𝕓𝕝𝕖", "𠀀𠀁 𪚥",
    "😀 😃 😄", "👍🏽 👍🏿 👋🏻", "👨‍👩‍👧‍👦 family", "🏳️‍🌈 flag", "🇯🇵🇺🇸 flags", "❤️ ♥ ☺️", "🧑🏾‍💻 coder", "1️⃣ #️⃣",
    "e\u0301\u0302\u0303\u0304", "\u0301 leading mark", "a\u20dd", "Z\u0351\u0352\u0353algo",
    "tab\tseparated\tvalues", "line\nbreaks\n\nhere", "nul\x00byte", "bell\x07 esc\x1b[31m", "\x1c\x1d\x1e\x1f unit separators",
    "next\x85line", "zero\u200bwidth\u200cjoiner\u200d", "bom\ufeffhere", "line\u2028sep\u2029para", "nbsp\u00a0thin\u2009hair\u200a",
    "ogham\u1680space", "mongolian\u180evowel", "narrow\u202fnbsp", "medium\u205fspace", "soft\u00adhyphen", "rtl\u202eoverride\u202c",
    "0 1 2 3 12 123 1234567890", "3.14159 -2.5e10 1,000,000", "1990s 4k 8K uhd 16:9", "v1.5 sd-xl 2.1", "٣٤٥ ४५६ ๑๒๓",
    "!!! ??? ... --- *** ### @@@", "!?!?", "....,,,,;;;;", "->=>>=<=", "~!@#$%^&*()_+`-={}[]|\\:\";'<>?,./", "…—–“”‘’«»",
    "http://example.com/path?q=1&r=2#frag", "user@example.com", "&amp; &lt;tag&gt; &quot;", "<b>bold</b>", "snake_case camelCase PascalCase",
    "a" * 80, "ab" * 300, "supercalifragilisticexpialidocious antidisestablishmentarianism", "x" * 1000, "!" * 500, "1" * 200,
    "pneumonoultramicroscopicsilicovolcanoconiosis " * 3, "😀" * 40,
    ", ".join(["masterpiece", "best quality", "ultra detailed", "8k", "photorealistic", "cinematic lighting", "dramatic",
               "volumetric fog", "depth of field", "bokeh", "sharp focus", "intricate", "elegant", "highly detailed",
               "digital painting", "artstation", "concept art", "smooth", "illustration", "art by greg rutkowski",
               "trending on artstation", "octane render", "unreal engine 5", "hdr", "award winning"] * 2),
]

WORDS = ("a photo of the cat dog castle forest portrait landscape woman man girl boy city night sky river mountain "
         "red blue green golden silver dark light painting anime realistic cinematic masterpiece quality detailed "
         "beautiful intricate soft sharp focus style artist lens 35mm bokeh sunset neon cyberpunk steampunk fantasy").split()
POOLS = {
    "ascii_letter": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "digit": "0123456789",
    "punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "space": " \t\n\r\x0b\x0c\u00a0\u1680\u2000\u2005\u200a\u2028\u2029\u202f\u205f\u3000\x85",
    "not_space": "\x1c\x1d\x1e\x1f\u200b\u200c\u200d\u2060\ufeff\u180e\x00\x01\x7f",
    "latin": "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝßŒœŠšŽžŁłĞğİıŞşĳĲǅǈǋ",
    "greek_cyrillic": "αβγδεζηθικλμνξοπρσςτυφχψωΑΒΓΔΕΖΗΘΣΩάέήίόύώϐϑϕабвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЁЖЗИЙ",
    "cjk": "東京大阪日本語中文漢字猫犬山川空海花鳥風月愛夢光影あいうえおかきくけこアイウエオカキクケコ한국어고양이강아지ｱｲｳｴｵ",
    "rtl": "ابتثجحخدذرزسشصضطظعغفقكلمنهويءآأإةىًٌٍَُِّْאבגדהוזחטיכלמנסעפצקרשת",
    "indic": "अआइईउऊएऐओऔकखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह्ािीुूेैोौंःகதமிழ்ภาษาไทย",
    "combining": "\u0300\u0301\u0302\u0303\u0308\u030a\u0327\u0328\u0336\u0351\u0489\u20dd\u20e3\u0e31\u093f",
    "numbers_other": "²³¹¼½¾ⅠⅡⅢⅫⅰⅱ①②③⑴⒈٠١٢٣٤٥٦٧٨٩०१२३४५๐๑๒",
    "symbols": "©®™°±×÷€£¥¢§¶•…‰′″‹›«»“”‘’„‚—–←↑→↓↔⇒∀∂∃∅∇∈∑√∞≈≠≤≥⊂⊃★☆♠♣♥♦♪♫☀☁☂☃✓✗✨❤",
    "emoji": ["😀", "😂", "🥲", "🤖", "👍", "👍🏻", "👍🏼", "👍🏽", "👍🏾", "👍🏿", "👨‍👩‍👧‍👦", "👩‍❤️‍💋‍👨", "🧑‍🚀", "🏳️‍🌈",
              "🏴‍☠️", "🇫🇷", "🇯🇵", "❤️", "☺️", "✌🏽", "🐱", "🐶", "🌸", "🔥", "💯", "1️⃣", "🫠", "🧑🏾‍💻", "👁️‍🗨️", "🏴󠁧󠁢󠁳󠁣󠁴󠁿"],
    "case": "ΣσςİıIiẞßǄǅǆĲĳΩΩKkÅå",
}


def random_case(rng):
    kind = rng.randrange(8)
    if kind <= 1:  # prompt-like: words, weights, commas
        parts = []
        for _ in range(rng.randint(1, 30)):
            word = rng.choice(WORDS)
            roll = rng.random()
            if roll < 0.1:
                word = f"({word}:{rng.choice(['0.5', '1.1', '1.3', '1.45', '2'])})"
            elif roll < 0.15:
                word = f"[{word}]"
            elif roll < 0.2:
                word = "(" * rng.randint(1, 3) + word + ")" * rng.randint(1, 3)
            elif roll < 0.23:
                word = f"<lora:{word}_v{rng.randint(1, 9)}:{rng.choice(['0.6', '0.8', '1'])}>"
            elif roll < 0.26:
                word = "BREAK"
            elif roll < 0.3:
                word = word.upper() if rng.random() < 0.5 else word.capitalize()
            elif roll < 0.33:
                word = word + rng.choice(["'s", "'re", "'ll", "'d", "’s"])
            parts.append(word)
        separator = rng.choice([", ", " ", ",", " , ", "\n", "\t"])
        return separator.join(parts)
    length = rng.randint(1, 40)
    names = list(POOLS)
    chosen = rng.sample(names, rng.randint(1, 4))
    out = []
    for _ in range(length):
        pool = POOLS[rng.choice(chosen)]
        out.append(rng.choice(pool))
    return "".join(out)


def long_case(rng):
    """Prompts past one 77-token window."""
    words = [rng.choice(WORDS) for _ in range(rng.randint(80, 250))]
    return ", ".join(" ".join(words[i:i + 3]) for i in range(0, len(words), 3))


def cases():
    rng = random.Random(20250101)
    result = list(HAND_WRITTEN)
    result += [random_case(rng) for _ in range(1000)]
    result += [long_case(rng) for _ in range(20)]
    return result


def main():
    merges = open_clip_merges()
    if "--merges" in sys.argv:
        out = sys.argv[sys.argv.index("--merges") + 1]
        with open(out, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        print("wrote", out)

    texts = cases()
    work = tempfile.mkdtemp()
    try:
        full = os.path.join(work, "full")
        write_folder(full, merges)
        tokenizer = CLIPTokenizer.from_pretrained(full)
        assert type(tokenizer).__mro__[1].__name__ == "TokenizersBackend"
        # The ids every SD1 pipeline gets for this prompt (openai/clip-vit-large-patch14's vocab.json).
        assert tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
        saved = os.path.join(work, "saved")
        tokenizer.save_pretrained(saved)
        os.remove(os.path.join(saved, "tokenizer_config.json"))
        from_json = CLIPTokenizer.from_pretrained(saved)
        golden = []
        for text in texts:
            ids = tokenizer(text)["input_ids"]
            assert from_json(text)["input_ids"] == ids, text
            golden.append([text, ids])
        versions = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__, "class": type(tokenizer).__mro__[1].__name__}
        write_json(os.path.join(HERE, "golden.json"), {**versions, "cases": golden})

        small = os.path.join(HERE, "small")
        shutil.rmtree(small, ignore_errors=True)
        write_folder(small, merges[:2000])
        # SD2 (stabilityai/stable-diffusion-2) pads with "!"; special_tokens_map.json wins over tokenizer_config.json.
        write_json(os.path.join(small, "tokenizer_config.json"), {"pad_token": "<|endoftext|>", "model_max_length": 77})
        write_json(os.path.join(small, "special_tokens_map.json"),
                   {"pad_token": {"content": "!", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}})
        small_tokenizer = CLIPTokenizer.from_pretrained(small)
        assert small_tokenizer.pad_token_id == 0
        small_json = os.path.join(HERE, "small-json")
        shutil.rmtree(small_json, ignore_errors=True)
        small_tokenizer.save_pretrained(small_json)
        small_from_json = CLIPTokenizer.from_pretrained(small_json)
        small_golden = []
        for text in texts[:300]:
            ids = small_tokenizer(text)["input_ids"]
            assert small_from_json(text)["input_ids"] == ids, text
            small_golden.append([text, ids])
        padded = small_tokenizer("a cat", padding="max_length", max_length=8)["input_ids"]
        write_json(os.path.join(HERE, "small_golden.json"), {**versions, "padded": ["a cat", padded], "cases": small_golden})
        print(f"{len(golden)} cases; small: {len(small_golden)}; padded {padded}")
    finally:
        shutil.rmtree(work)


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
