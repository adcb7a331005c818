#!/usr/bin/env python3
"""Converts sd1.safetensors (this folder's tiny SD 1.x checkpoint, from make_single_file.py) to sd1_q8_0.gguf
with stable-diffusion.cpp's own converter (`sd -M convert --type q8_0`), as its users make their GGUF files:
matrix rows of whole 32-weight blocks (and 1-D weights such as layer norms) become Q8_0, the rest stay F16.
GGUFTests checks Kiri reads every tensor of it as the checkpoint's, quantised as ggml quantises.

Needs stable-diffusion-cpp-python (PyPI, built from its source distribution; never in CI):
    python -m venv /tmp/sdcpp && /tmp/sdcpp/bin/pip install stable-diffusion-cpp-python==0.4.7
    /tmp/sdcpp/bin/python Tests/Fixtures/models/singlefile/make_gguf.py
"""
import os

from stable_diffusion_cpp import StableDiffusion

HERE = os.path.dirname(os.path.abspath(__file__))

# convert() needs no loaded model, so the converter is called without StableDiffusion's model-loading __init__.
converter = StableDiffusion.__new__(StableDiffusion)
converter.verbose = False
ok = StableDiffusion.convert(converter, os.path.join(HERE, "sd1.safetensors"),
                             output_path=os.path.join(HERE, "sd1_q8_0.gguf"), output_type="q8_0")
assert ok, "stable-diffusion.cpp's convert failed"
