#!/usr/bin/env python3
"""Facts about Debian's Fashion-MNIST files, computed with gzip and numpy (not Kiri's reader), which
KiriDataTests/FashionMNISTTests.swift checks its IDX reader against. Run once; the test keeps the numbers:

    /work/venv/bin/python Tests/Fixtures/data/fashion_mnist_facts.py   # any Python 3 with numpy
"""
import gzip

import numpy as np

FOLDER = "/usr/share/datasets/fashion-mnist/"


def load(name, header):
    return np.frombuffer(gzip.open(FOLDER + name).read(), np.uint8, offset=header)


for split in ["train", "t10k"]:
    images = load(f"{split}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28).astype(np.int64)
    labels = load(f"{split}-labels-idx1-ubyte.gz", 8)
    print(split, "items", len(images), "labels", len(labels))
    print(split, "label histogram", np.bincount(labels).tolist())
    print(split, "first labels", labels[:10].tolist(), "last label", int(labels[-1]))
    print(split, "first image sum", int(images[0].sum()), "nonzero", int((images[0] > 0).sum()),
          "pixel [14][14]", int(images[0, 14, 14]))
    print(split, "first image row sums", images[0].sum(1).tolist())
    print(split, "last image sum", int(images[-1].sum()), "all pixels sum", int(images.sum()))
