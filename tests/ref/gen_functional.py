#!/usr/bin/python3
"""Writes tests/fixtures/functional.safetensors: a PyTorch reference for a functional model
with two inputs, a shared layer, merges of every kind and a residual connection.

Run with Debian's interpreter: /usr/bin/python3 tests/ref/gen_functional.py

The model (Keras names; dense kernels are (in, out) as Keras stores them):
    a, b: inputs (N, 5)
    sa = shared(a), sb = shared(b)          shared: Dense(4, relu), one set of weights
    cat = Concatenate()([sa, sb])           (N, 8)
    h = Dense(8)(cat); r = Add()([h, cat])  residual
    avg = Average()([sa, sb]); diff = Subtract()([sa, sb]); prod = Multiply()([sa, sb])
    j = Concatenate()([r, avg, diff, prod]) (N, 20)
    logits = Dense(3)(j); loss = sparse categorical cross-entropy, mean over rows
Stored: a, b, labels, every weight (<layer>.kernel / .bias), logits, loss, and the gradient of
the loss for every weight (grad.<layer>.kernel ...). Float64 from float32-rounded values,
seeded, so the bytes are stable.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_writer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "fixtures", "functional.safetensors")
D = torch.float64
N = 6
LAYERS = {"shared": (5, 4), "dense_h": (8, 8), "logits": (20, 3)}


def main():
    torch.manual_seed(20261203)
    a = torch.randn(N, 5).float().double()
    b = torch.randn(N, 5).float().double()
    labels = torch.tensor([0, 2, 1, 1, 0, 2], dtype=torch.int64)
    w = {}
    for name, (fan_in, fan_out) in LAYERS.items():
        w[name + ".kernel"] = (torch.randn(fan_in, fan_out) * 0.5).float().double().requires_grad_()
        w[name + ".bias"] = (torch.randn(fan_out) * 0.1).float().double().requires_grad_()

    def dense(name, x, act=None):
        y = x @ w[name + ".kernel"] + w[name + ".bias"]
        return F.relu(y) if act == "relu" else y

    sa, sb = dense("shared", a, "relu"), dense("shared", b, "relu")
    cat = torch.cat([sa, sb], dim=1)
    r = dense("dense_h", cat) + cat
    j = torch.cat([r, (sa + sb) / 2, sa - sb, sa * sb], dim=1)
    logits = dense("logits", j)
    loss = F.cross_entropy(logits, labels)
    loss.backward()

    out = {"a": a, "b": b, "logits": logits, "loss": loss.reshape(1)}
    for k, v in w.items():
        out[k] = v
        out["grad." + k] = v.grad
    store = {k: v.detach().float().numpy() for k, v in out.items()}
    store["labels"] = labels.int().numpy()
    safetensors_writer.write(OUT_PATH, store, {"generator": "tests/ref/gen_functional.py"})
    print("wrote %s (%d tensors)" % (OUT_PATH, len(store)))


if __name__ == "__main__":
    main()
