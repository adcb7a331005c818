#!/usr/bin/env python3
"""Writes tensor_ops.json: numpy-computed expectations for KiriTensor (Tests/KiriTensorTests/FixtureTests.swift).

Run from anywhere: python3 Tests/Fixtures/tensor_fixtures.py. Inputs come from a fixed numpy seed, so the output is
reproducible. Each case is {"name", "op", "attrs", "inputs": [{"shape", "values"}], "expected": {"shape", "values"},
"kind"}; "kind" picks the tolerance in Swift ("exact", "elementwise", "reduction"). Values are float32 numbers written
with nine significant digits, which identifies each exactly; non-finite values are the strings "nan", "inf", "-inf".

Expectations follow the Swift contract: float32 arithmetic is done in float32 (IEEE, so it must match exactly up to
the stated tolerance), transcendental functions, reductions and matmul are computed in float64 and rounded once.
"""
import json
import math
import os

import numpy as np

rng = np.random.default_rng(20240611)
cases = []


def encode(array):
    array = np.asarray(array, dtype=np.float32)
    values = []
    for value in array.ravel().tolist():
        if math.isnan(value):
            values.append("nan")
        elif math.isinf(value):
            values.append("inf" if value > 0 else "-inf")
        else:
            values.append(float(f"{value:.9g}"))  # nine significant digits identify a float32 exactly
    return {"shape": list(array.shape), "values": values}


def add(name, operation, inputs, expected, kind, **attrs):
    cases.append({"name": name, "op": operation, "attrs": attrs, "inputs": [encode(x) for x in inputs],
                  "expected": encode(expected), "kind": kind})


def normal(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def uniform(low, high, *shape):
    return rng.uniform(low, high, shape).astype(np.float32)


def integers(*shape):
    return rng.integers(-2, 3, shape).astype(np.float32)


def away_from_zero(*shape):
    x = normal(*shape)
    return (x + np.where(x < 0, -0.5, 0.5)).astype(np.float32)


def f64(function):
    """A float64 reference rounded once to float32."""
    return lambda *xs: function(*[x.astype(np.float64) for x in xs]).astype(np.float32)


# name: (numpy function, left input, right input, kind)
binary_ops = {
    "add": (np.add, normal, normal, "exact"),
    "sub": (np.subtract, normal, normal, "exact"),
    "mul": (np.multiply, normal, normal, "exact"),
    "div": (np.true_divide, normal, away_from_zero, "exact"),
    "pow": (f64(np.power), lambda *s: uniform(0.5, 2, *s), normal, "elementwise"),
    "minimum": (np.minimum, integers, integers, "exact"),
    "maximum": (np.maximum, integers, integers, "exact"),
    "equal": (np.equal, integers, integers, "exact"),
    "less": (np.less, integers, integers, "exact"),
    "lessEqual": (np.less_equal, integers, integers, "exact"),
    "greater": (np.greater, integers, integers, "exact"),
    "greaterEqual": (np.greater_equal, integers, integers, "exact"),
}
broadcast_pairs = [([2, 3], [2, 3]), ([2, 1, 3], [4, 1]), ([3], [2, 3]), ([2, 3], []), ([4, 1], [1, 5]),
                   ([2, 1, 3, 1, 2], [4, 1, 5, 1])]
for name, (function, left, right, kind) in binary_ops.items():
    for a_shape, b_shape in broadcast_pairs:
        a, b = left(*a_shape), right(*b_shape)
        add(f"{name} {a_shape} {b_shape}", "binary", [a, b], function(a, b), kind, op=name)
    a = left(2, 3)
    scalar = np.float32(right(1)[0])
    add(f"{name} scalar right", "binaryScalar", [a], function(a, np.full_like(a, scalar)), kind, op=name,
        scalar=float(scalar))
    b = right(2, 3)
    scalar = np.float32(left(1)[0])
    add(f"{name} scalar left", "binaryScalarLeft", [b], function(np.full_like(b, scalar), b), kind, op=name,
        scalar=float(scalar))

nan_pair = (np.array([1, np.nan, 3, np.nan], np.float32), np.array([np.nan, 2, 1, np.nan], np.float32))
add("minimum NaN", "binary", list(nan_pair), np.minimum(*nan_pair), "exact", op="minimum")
add("maximum NaN", "binary", list(nan_pair), np.maximum(*nan_pair), "exact", op="maximum")


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


halves = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0, -0.7, 0.7, 3.49], np.float32)
unary_ops = {
    "neg": (np.negative, normal, "exact"),
    "abs": (np.abs, normal, "exact"),
    "sqrt": (f64(np.sqrt), lambda *s: uniform(0, 4, *s), "elementwise"),
    "exp": (f64(np.exp), normal, "elementwise"),
    "log": (f64(np.log), lambda *s: uniform(0.01, 10, *s), "elementwise"),
    "tanh": (f64(np.tanh), normal, "elementwise"),
    "sigmoid": (f64(sigmoid), lambda *s: normal(*s) * 4, "elementwise"),
    "silu": (f64(lambda x: x * sigmoid(x)), lambda *s: normal(*s) * 4, "elementwise"),
    "sign": (np.sign, integers, "exact"),
    "floor": (np.floor, lambda *s: normal(*s) * 3, "exact"),
    "ceil": (np.ceil, lambda *s: normal(*s) * 3, "exact"),
    "round": (np.round, lambda *s: halves, "exact"),
    "square": (np.square, normal, "exact"),
    "reciprocal": (np.reciprocal, away_from_zero, "exact"),
}
for name, (function, source, kind) in unary_ops.items():
    x = source(3, 4)
    add(f"{name}", "unary", [x], function(x), kind, op=name)
edges = np.array([-2.5, -1.5, -0.5, -0.3, -0.0, 0.3, 0.5, 1.5, 2.5, 8388607.5, -8388607.5, 8388609, 1e10, -1e10,
                  np.inf, -np.inf, np.nan], np.float32)
for name in ["floor", "ceil", "round", "sign", "abs", "neg"]:
    add(f"{name} edge values", "unary", [edges], unary_ops[name][0](edges), "exact", op=name)

x = normal(3, 4) * 2
for low, high in [(-1, 1), (None, 0.5), (-0.5, None), (1, 0)]:
    add(f"clamp {low} {high}", "clamp", [x], np.clip(x, low, high), "exact", min=low, max=high)

a, b = normal(2, 3), normal(3)
add("lerp scalar weight", "lerpScalar", [a, b], a + np.float32(0.25) * (b - a), "exact", weight=0.25)
a, b, w = normal(2, 3), normal(3), uniform(0, 1, 2, 1)
add("lerp tensor weight", "lerpTensor", [a, b, w], a + w * (b - a), "exact")
condition = rng.integers(0, 2, (2, 1, 3)).astype(np.float32)
condition[0, 0, 0] = np.nan
a, b = normal(4, 1), normal()
add("where broadcast", "where", [condition, a, b], np.where(condition != 0, a, b), "exact")

# Reductions: float64 reference from the float32 input.
x = normal(3, 4, 5)
x64 = x.astype(np.float64)
reductions = {
    "sum": lambda v, axis, keep: np.sum(v, axis=axis, keepdims=keep),
    "mean": lambda v, axis, keep: np.mean(v, axis=axis, keepdims=keep),
    "min": lambda v, axis, keep: np.min(v, axis=axis, keepdims=keep),
    "max": lambda v, axis, keep: np.max(v, axis=axis, keepdims=keep),
    "var": lambda v, axis, keep: np.var(v, axis=axis, keepdims=keep, ddof=1),
    "varBiased": lambda v, axis, keep: np.var(v, axis=axis, keepdims=keep, ddof=0),
    "std": lambda v, axis, keep: np.std(v, axis=axis, keepdims=keep, ddof=1),
    "stdBiased": lambda v, axis, keep: np.std(v, axis=axis, keepdims=keep, ddof=0),
}
for p in [1, 2, 3, "inf", "-inf", 0]:
    order = {"inf": np.inf, "-inf": -np.inf}.get(p, p)

    def norm(v, axis, keep, order=order):
        if axis is None:
            result = np.linalg.norm(v.ravel(), ord=order)
            return np.reshape(result, [1] * v.ndim) if keep else result
        return np.linalg.norm(v, ord=order, axis=axis, keepdims=keep)
    reductions[f"norm{p}"] = norm
for name, function in reductions.items():
    for dim in [None, 0, 1, 2, -1]:
        for keep in [False, True]:
            if name.startswith("norm") and dim in (0, 1) and keep:
                continue
            add(f"{name} dim {dim} keep {keep}", "reduce", [x], function(x64, dim, keep), "reduction",
                reduction=name, dim=dim, keepDim=keep)
for dim in [0, 2, -1]:
    for keep in [False, True]:
        add(f"argmax dim {dim} keep {keep}", "argmax", [x], np.argmax(x, axis=dim, keepdims=keep), "exact",
            dim=dim, keepDim=keep)
ties = np.array([[1, 3, 3], [np.nan, 5, np.nan], [2, 2, 2]], np.float32)
add("argmax ties and NaN", "argmax", [ties], np.argmax(ties, axis=1), "exact", dim=1, keepDim=False)
add("max NaN", "reduce", [ties], np.max(ties, axis=1), "reduction", reduction="max", dim=1, keepDim=False)
add("sum empty", "reduce", [np.zeros((2, 0), np.float32)], np.zeros(2), "reduction", reduction="sum", dim=1,
    keepDim=False)

# matmul: float64 reference.
for a_shape, b_shape in [([3], [3]), ([2, 3], [3, 4]), ([3], [3, 4]), ([2, 3], [3]), ([2, 2, 3], [3, 4]),
                         ([2, 1, 2, 3], [3, 3, 4]), ([4, 3], [2, 3, 5]), ([5, 1, 2, 3], [3, 1]), ([2, 0], [0, 3]),
                         ([2, 3, 4], [4]), ([4], [2, 4, 3])]:
    a, b = normal(*a_shape), normal(*b_shape)
    add(f"matmul {a_shape} {b_shape}", "matmul", [a, b], np.matmul(a.astype(np.float64), b.astype(np.float64)),
        "reduction")

# Shape operations: exact copies.
x = normal(2, 3, 4)
add("reshape -1", "reshape", [x], x.reshape(4, -1), "exact", shape=[4, -1])
add("permute", "permute", [x], x.transpose(2, 0, 1), "exact", dims=[2, 0, 1])
add("permute negative", "permute", [x], x.transpose(1, 2, 0), "exact", dims=[-2, -1, 0])
add("transpose", "transpose", [x], x.swapaxes(0, 2), "exact", dim0=0, dim1=-1)
add("narrow", "narrow", [x], x[:, 1:3, :], "exact", dim=1, start=1, length=2)
add("narrow negative start", "narrow", [x], x[:, :, -3:-1], "exact", dim=-1, start=-3, length=2)
add("narrow empty", "narrow", [x], x[:, 3:3, :], "exact", dim=1, start=3, length=0)
add("select", "select", [x], x[:, 2, :], "exact", dim=1, index=2)
add("select negative", "select", [x], x[:, :, -1], "exact", dim=2, index=-1)
parts = [normal(2, 1, 4), normal(2, 3, 4), normal(2, 2, 4)]
add("cat dim 1", "cat", parts, np.concatenate(parts, axis=1), "exact", dim=1)
parts = [normal(1, 3), normal(2, 3)]
add("cat dim 0", "cat", parts, np.concatenate(parts, axis=0), "exact", dim=0)
parts = [normal(2, 3), normal(2, 3), normal(2, 3)]
for dim in [0, 1, 2, -1]:
    add(f"stack dim {dim}", "stack", parts, np.stack(parts, axis=dim), "exact", dim=dim)
x = normal(3, 1)
add("expand", "expand", [x], np.broadcast_to(x, (2, 3, 4)), "exact", shape=[2, 3, 4])
add("expand -1", "expand", [x], np.broadcast_to(x, (2, 3, 5)), "exact", shape=[2, -1, 5])
x = normal(2, 3)
add("repeat", "repeat", [x], np.tile(x, (2, 1, 2)), "exact", counts=[2, 1, 2])
add("repeat same rank", "repeat", [x], np.tile(x, (3, 2)), "exact", counts=[3, 2])
add("repeat zero", "repeat", [x], np.tile(x, (0, 2)), "exact", counts=[0, 2])

# Constructors: float64, rounded once.
for start, end, count in [(0, 1, 5), (-3, 7, 11), (1, 0, 1), (0, 1, 0), (0, 1, 7), (2.5, -1.5, 9)]:
    add(f"linspace {start} {end} {count}", "linspace", [], np.linspace(start, end, count), "exact",
        start=start, end=end, count=count)
for start, end, step in [(0, 5, 1), (0, 1, 0.1), (5, 0, -1.5), (0, 1, 0.3), (1, 1, 1), (3, 0, 1)]:
    add(f"arange {start} {end} {step}", "arange", [], np.arange(start, end, step, dtype=np.float64), "exact",
        start=start, end=end, step=step)

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tensor_ops.json")
with open(path, "w") as file:
    json.dump({"generator": "tensor_fixtures.py", "cases": cases}, file, separators=(",", ":"))
print(f"{len(cases)} cases, {os.path.getsize(path)} bytes -> {path}")
