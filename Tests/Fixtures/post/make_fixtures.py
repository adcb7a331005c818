"""Reference outputs for the post-processing plugins (Plugins/post/): writes post.json next to this file.

resize   Pillow's Image.resize on mode "F" (float32) images, one channel at a time
sharpen  scipy.ndimage.gaussian_filter(mode="nearest", truncate=4.0) and the unsharp-mask formula, in float64
contrast PIL ImageEnhance.Contrast's formula in float64 (grey = Rec. 601 luma), clipped to [0, 1]
levels   the GIMP/Photoshop Levels formula in float64
clamp    numpy.clip

Run with /work/venv/bin/python (numpy, scipy, Pillow). Deterministic: a second run writes the same bytes.
It also checks, on stderr, that Pillow does what the plugins assume (see check_pillow_assumptions).
"""
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import PIL
import scipy
from PIL import Image
from scipy.ndimage import gaussian_filter

HERE = Path(__file__).resolve().parent
MODES = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def float32(array):
    """Nested lists of float32 values; %.9g round-trips every float32 through a double."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 0:
        return float("%.9g" % array)
    return [float32(row) for row in array]


def pillow_resize(image, width, height, mode):
    """[C, H, W] float32 -> [C, height, width], each channel a mode "F" image."""
    channels = []
    for plane in image:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # fromarray's mode argument
            source = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
        channels.append(np.asarray(source.resize((width, height), MODES[mode]), dtype=np.float32))
    return np.stack(channels)


def blur(image, sigma):
    """Gaussian blur of each [H, W] plane of a [C, H, W] image, in float64."""
    return gaussian_filter(image.astype(np.float64), sigma=(0, sigma, sigma), mode="nearest", truncate=4.0)


def sharpen(image, sigma, amount, threshold):
    x = image.astype(np.float64)
    difference = x - blur(image, sigma)
    # The mask must not hinge on rounding: no |difference| may sit at the threshold.
    if threshold > 0:
        margin = np.min(np.abs(np.abs(difference) - threshold))
        assert margin > 1e-4, f"threshold {threshold} is {margin:.2e} from a difference"
    out = np.where(np.abs(difference) >= threshold, x + amount * difference, x)
    return np.clip(out, 0, 1)


def contrast(image, factor):
    """ImageEnhance.Contrast in float: per image, blend with the mean of its grey."""
    x = image.astype(np.float64)
    batch = x if x.ndim == 4 else x[None]
    out = []
    for item in batch:
        grey = item[0] if item.shape[0] == 1 else 0.299 * item[0] + 0.587 * item[1] + 0.114 * item[2]
        mean = grey.mean()
        out.append(np.clip(mean + factor * (item - mean), 0, 1))
    out = np.stack(out)
    return out if x.ndim == 4 else out[0]


def levels(image, in_black=0.0, in_white=1.0, gamma=1.0, out_black=0.0, out_white=1.0):
    x = image.astype(np.float64)
    scaled = np.clip((x - in_black) / (in_white - in_black), 0, 1)
    return out_black + (out_white - out_black) * scaled ** (1 / gamma)


# -- Self-checks: Pillow's float path as the plugins model it -------------------------------------------------

def pillow_filters():
    def bilinear(x):
        x = abs(x)
        return 1 - x if x < 1 else 0.0

    def bicubic(x, a=-0.5):
        x = abs(x)
        if x < 1:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        if x < 2:
            return (((x - 5) * x + 8) * x - 4) * a
        return 0.0

    def sinc(x):
        return 1.0 if x == 0 else math.sin(math.pi * x) / (math.pi * x)

    def lanczos(x):
        return sinc(x) * sinc(x / 3) if -3 <= x < 3 else 0.0

    return {"bilinear": (bilinear, 1.0), "bicubic": (bicubic, 2.0), "lanczos": (lanczos, 3.0)}


def resample_matrix(size_in, size_out, mode):
    """Resample.c precompute_coeffs (float64 weights, no fixed-point rounding on mode "F"), or
    Geometry.c ImagingScaleAffine's accumulated nearest positions."""
    matrix = np.zeros((size_out, size_in))
    scale = size_in / size_out
    if mode == "nearest":
        position = scale * 0.5
        for i in range(size_out):
            matrix[i, int(position)] = 1
            position += scale
        return matrix
    function, support = pillow_filters()[mode]
    filterscale = max(scale, 1.0)
    support *= filterscale
    for i in range(size_out):
        center = (i + 0.5) * scale
        low = max(int(center - support + 0.5), 0)
        high = min(int(center + support + 0.5), size_in)
        weights = [function((j - center + 0.5) / filterscale) for j in range(low, high)]
        total = sum(weights)
        matrix[i, low:high] = [w / total if total != 0 else w for w in weights]
    return matrix


def check_pillow_assumptions(rng):
    """Weight matrices applied along W then H (float32 in between, as Pillow's two passes) against
    Pillow itself, over many sizes and ratios; prints the largest difference per mode."""
    worst = {mode: 0.0 for mode in MODES}
    for _ in range(300):
        height, width = rng.integers(1, 24, size=2)
        new_height, new_width = rng.integers(1, 40, size=2)
        plane = rng.random((height, width), dtype=np.float32)
        for mode in MODES:
            got = pillow_resize(plane[None], int(new_width), int(new_height), mode)[0]
            horizontal = plane.astype(np.float64) @ resample_matrix(width, new_width, mode).T
            if new_width != width:
                horizontal = horizontal.astype(np.float32)
            model = (resample_matrix(height, new_height, mode) @ horizontal.astype(np.float64)).astype(np.float32)
            worst[mode] = max(worst[mode], float(np.max(np.abs(model - got))))
    for mode, error in worst.items():
        print(f"self-check: Pillow {mode} vs weight matrices: max |difference| {error:.2e}", file=sys.stderr)
        assert error <= (0 if mode == "nearest" else 1.2e-7), mode   # float32 rounding of sums in another order


def main():
    rng = np.random.default_rng(20240607)
    # Inputs: values in [0, 1) except `wide`, which straddles the clamp range.
    a = rng.random((2, 7, 9), dtype=np.float32)                 # 2 channels, H 7, W 9
    b = rng.random((3, 5, 6), dtype=np.float32)                 # RGB, H 5, W 6
    batch = rng.random((2, 3, 4, 5), dtype=np.float32)          # [N, C, H, W]
    wide = (rng.random((2, 4, 5)) * 2 - 0.5).astype(np.float32)
    inputs = {"a": a, "b": b, "batch": batch, "grey": a[:1], "wide": wide}

    resize_sizes = [
        ("a", 15, 12),   # up, 9/15 and 7/12
        ("a", 4, 3),     # down, 9/4 and 7/3
        ("a", 13, 4),    # wider and shorter
        ("a", 9, 10),    # width unchanged: one pass
        ("b", 11, 2),    # 6/11 and 5/2
        ("b", 1, 1),     # to one pixel
        ("b", 15, 8),    # 6 -> 15: nearest's summed positions pick other columns than floor((i + 0.5) * 6 / 15)
    ]
    resize = [
        {"input": name, "width": width, "height": height, "mode": mode,
         "expected": float32(pillow_resize(inputs[name], width, height, mode))}
        for mode in MODES for name, width, height in resize_sizes
    ]

    sharpen_cases = [
        ("a", {"sigma": 1.0, "amount": 1.0, "threshold": 0.0}),
        ("a", {"sigma": 0.7, "amount": 1.5, "threshold": 0.05}),
        ("a", {"sigma": 2.5, "amount": 0.6, "threshold": 0.0}),     # radius 10 reaches past both edges
        ("b", {"sigma": 0.4, "amount": 2.0, "threshold": 0.1}),
    ]
    sharpen_out = [
        {"input": name, "options": options,
         "blurred": float32(blur(inputs[name], options["sigma"])),
         "expected": float32(sharpen(inputs[name], **options))}
        for name, options in sharpen_cases
    ]

    contrast_out = [
        {"input": name, "factor": factor, "expected": float32(contrast(inputs[name], factor))}
        for name, factor in [("b", 0.5), ("b", 1.7), ("b", 0.0), ("grey", 2.5), ("batch", 1.3)]
    ]

    level_options = [
        {},
        {"in_black": 0.1, "in_white": 0.9, "gamma": 1.8, "out_black": 0.05, "out_white": 0.95},
        {"gamma": 0.5},
        {"in_black": 0.2, "in_white": 0.6, "out_black": 1.0, "out_white": 0.0},
    ]
    levels_out = [
        {"input": "a", "options": options, "expected": float32(levels(a, **options))} for options in level_options
    ]

    clamp_out = [
        {"input": "wide", "low": low, "high": high, "expected": float32(np.clip(wide.astype(np.float64), low, high))}
        for low, high in [(0.0, 1.0), (0.2, 0.8), (-1.0, 2.0)]
    ]

    check_pillow_assumptions(np.random.default_rng(1))

    document = {
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": scipy.__version__,
                     "pillow": PIL.__version__},
        "inputs": {name: float32(value) for name, value in inputs.items()},
        "resize": resize,
        "sharpen": sharpen_out,
        "contrast": contrast_out,
        "levels": levels_out,
        "clamp": clamp_out,
    }
    path = HERE / "post.json"
    path.write_text(json.dumps(document, separators=(",", ":")) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
