"""AUTOMATIC1111's API client (PyPI's webuiapi) against a running `kiri serve`: samplers, model switch, txt2img,
img2img with a mask, progress polling with previews, and interrupt. Usage: python webuiapi_client.py PORT MODEL."""
import sys
import threading
import time

import webuiapi
from PIL import Image, ImageDraw

port, model = int(sys.argv[1]), sys.argv[2]
api = webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="DPM++ 2M", steps=6)


def check(condition, message):
    if not condition:
        raise SystemExit("FAILED: " + message)


samplers = api.util_get_sampler_names()
check("DPM++ 2M" in samplers and "Euler a" in samplers, f"A1111 sampler names listed: {samplers}")
check("karras" in api.util_get_scheduler_names(), "schedulers listed")
api.util_set_model(model)
check(api.util_get_current_model() == model, f"model switched to {model}: {api.get_options()}")

result = api.txt2img(prompt="a red cube", negative_prompt="blurry", seed=7, cfg_scale=5, width=64, height=64,
                     scheduler="Karras", batch_size=2)
check(len(result.images) == 2, f"two images, got {len(result.images)}")
check(result.image.size == (64, 64), f"64x64, got {result.image.size}")
parameters = result.images[1].info.get("parameters", "")
check(parameters.startswith("a red cube\nNegative prompt: blurry\n"), f"the PNG's parameters text: {parameters!r}")
check("Steps: 6, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5, Seed: 8" in parameters, parameters)
check(result.info["all_seeds"] == [7, 8], f"info: {result.info}")
print("txt2img:", parameters.replace("\n", " | "))

# img2img with a mask: the top half (black) is kept, the bottom half (white) repainted.
mask = Image.new("L", (64, 64), 0)
ImageDraw.Draw(mask).rectangle([0, 32, 63, 63], fill=255)
original = result.image.convert("RGB")
painted = api.img2img(images=[original], mask_image=mask, prompt="a blue sphere", denoising_strength=1.0, seed=9,
                      width=64, height=64).image.convert("RGB")
kept = max(abs(a - b) for y in range(32) for x in range(64)
           for a, b in zip(painted.getpixel((x, y)), original.getpixel((x, y))))
changed = sum(painted.getpixel((x, y)) != original.getpixel((x, y)) for y in range(32, 64) for x in range(64))
check(kept <= 1, f"the masked-out half is kept (largest change {kept})")
check(changed > 1000, f"the masked half is repainted ({changed} of 2048 pixels changed)")
check("Denoising strength: 1" in painted.info.get("parameters", ""), f"img2img parameters: {painted.info}")
print(f"img2img with mask: kept half within {kept}, {changed} of 2048 pixels repainted")

# A long generation, polled and interrupted: the request still answers with the image so far.
outcome = {}
worker = threading.Thread(target=lambda: outcome.update(result=api.txt2img(prompt="a long one", steps=1000, seed=3,
                                                                          width=64, height=64)))
worker.start()
seen = None
for _ in range(3000):
    if not worker.is_alive():
        break
    progress = api.get_progress()
    if progress["state"]["sampling_step"] >= 3 and progress["current_image"]:
        seen = progress
        break
    time.sleep(0.01)
check(seen is not None, "progress reported steps and a preview")
check(0 < seen["progress"] < 1 and seen["eta_relative"] >= 0, f"progress: { {k: seen[k] for k in ('progress', 'eta_relative')} }")
api.interrupt()
worker.join(timeout=120)
check(not worker.is_alive(), "the interrupted request answered")
interrupted = outcome["result"]
check(len(interrupted.images) == 1 and "parameters" in interrupted.image.info, "the interrupted request's image")
print(f"progress: step {seen['state']['sampling_step']} of {seen['state']['sampling_steps']}, "
      f"{seen['progress']:.4f} done, preview {len(seen['current_image'])} base64 characters; interrupt answered")
print("webuiapi client: all checks passed")
