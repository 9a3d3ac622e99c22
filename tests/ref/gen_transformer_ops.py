#!/usr/bin/python3
"""Writes tests/fixtures/transformer_ops.safetensors: PyTorch references for damo's
transformer primitives (layer norm, both GELUs, fused multi-head attention).

Run from anywhere with Debian's interpreter (python3-torch, python3-numpy):
    /usr/bin/python3 tests/ref/gen_transformer_ops.py

For each case <case> the file holds
    <case>.cfg                     I32 [op, heads, causal, has_mask, approximate]
                                   (op: 0 layer_norm, 1 gelu, 2 attention)
    <case>.eps                     F32 (1,), layer norm only
    <case>.in0, <case>.in1, ...    inputs: layer norm x, gamma, beta; gelu x;
                                   attention q, k, v and, with has_mask, the key mask (B, Tk)
    <case>.dout                    a random upstream gradient, shape of the output
    <case>.out                     the op's output
    <case>.grad<i>                 d sum(out * dout) / d in_i for each differentiable input
    <case>.probs                   attention only, small cases: the probabilities (B, H, Tq, Tk)

Attention is written out the plain way, per head: softmax(q k^T / sqrt(d) with masked keys at
-inf) v, heads split from the last axis as HuggingFace does. A query row whose keys are all
masked has probabilities 0 (output 0, no gradient): its softmax runs over all keys so torch
gives no NaN, and is then multiplied by 0.

Inputs are drawn in float64 and rounded to float32 (what is stored); the reference is
computed in float64 from exactly those values and rounded once at the end. Seeded: the output
is the same bytes every run.
"""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_writer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "fixtures", "transformer_ops.safetensors")
D = torch.float64
OP_LAYER_NORM, OP_GELU, OP_ATTENTION = 0, 1, 2


def f32(t):
    """Rounds a float64 tensor to float32 precision (kept as float64)."""
    return t.float().double()


def randn(*shape, scale=1.0, shift=0.0):
    return f32(torch.randn(*shape, dtype=D) * scale + shift)


CASES = []  # (name, cfg, eps or None, inputs, differentiable flags, fn returning (out, probs or None))


def layer_norm_case(name, shape, eps, shift=0.0):
    C = shape[-1]
    x = randn(*shape, scale=1.5, shift=shift)
    gamma = randn(C, scale=0.5, shift=1.0)
    beta = randn(C, scale=0.5)
    eps32 = float(np.float32(eps))

    def fn(x, gamma, beta):
        return torch.nn.functional.layer_norm(x, (C,), gamma, beta, eps32), None

    CASES.append((name, [OP_LAYER_NORM, 0, 0, 0, 0], eps32, [x, gamma, beta], [True] * 3, fn))


def gelu_case(name, shape, approximate):
    x = randn(*shape, scale=2.5)

    def fn(x):
        return torch.nn.functional.gelu(x, approximate="tanh" if approximate else "none"), None

    CASES.append((name, [OP_GELU, 0, 0, 0, approximate], None, [x], [True], fn))


def attention_reference(q, k, v, heads, causal, mask):
    B, Tq, C = q.shape
    Tk = k.shape[1]
    d = C // heads

    def split(t, T):  # (B, T, C) -> (B, H, T, d)
        return t.reshape(B, T, heads, d).transpose(1, 2)

    s = split(q, Tq) @ split(k, Tk).transpose(-1, -2) / math.sqrt(d)
    keep = torch.ones(B, 1, Tq, Tk, dtype=torch.bool)
    if causal:
        keep = keep & torch.tril(torch.ones(Tq, Tk, dtype=torch.bool))
    if mask is not None:
        keep = keep & (mask != 0)[:, None, None, :]
    seen = keep.any(-1, keepdim=True)
    # a row that sees nothing takes its softmax over every key (finite), then is zeroed
    p = torch.softmax(s.masked_fill(~(keep | ~seen), float("-inf")), -1) * seen
    out = (p @ split(v, Tk)).transpose(1, 2).reshape(B, Tq, C)
    return out, p


def attention_case(name, B, Tq, Tk, C, heads, causal, mask=None):
    q, k, v = randn(B, Tq, C), randn(B, Tk, C), randn(B, Tk, C)
    inputs, diff = [q, k, v], [True] * 3
    if mask is not None:
        assert mask.shape == (B, Tk)
        inputs.append(mask.to(D))
        diff.append(False)

    def fn(q, k, v, m=None):
        return attention_reference(q, k, v, heads, causal, m)

    cfg = [OP_ATTENTION, heads, int(causal), int(mask is not None), 0]
    CASES.append((name, cfg, None, inputs, diff, fn))


def build_cases():
    torch.manual_seed(20240611)

    layer_norm_case("ln_2d", (4, 8), 1e-5)
    layer_norm_case("ln_3d", (2, 3, 16), 1e-5)
    layer_norm_case("ln_bert_eps", (3, 33), 1e-12)
    layer_norm_case("ln_offset", (5, 24), 1e-5, shift=40.0)  # a large mean: two-pass variance
    layer_norm_case("ln_one_row", (1, 7), 1e-3)

    gelu_case("gelu_exact", (6, 37), 0)
    gelu_case("gelu_tanh", (6, 37), 1)
    gelu_case("gelu_exact_3d", (2, 3, 5), 0)
    gelu_case("gelu_tanh_3d", (2, 3, 5), 1)

    attention_case("attn_causal_h1", 2, 5, 5, 4, 1, True)
    attention_case("attn_causal_h2", 2, 7, 7, 8, 2, True)
    attention_case("attn_causal_h4", 1, 9, 9, 16, 4, True)
    attention_case("attn_causal_t1", 3, 1, 1, 8, 2, True)
    attention_case("attn_full_h4", 2, 3, 3, 8, 4, False)
    # rows: all kept, right padding, fully padded
    attention_case("attn_mask_h2", 3, 6, 6, 8, 2, False,
                   torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]]))
    attention_case("attn_mask_holes_h4", 2, 13, 13, 16, 4, False,
                   (torch.rand(2, 13) < 0.7).to(torch.int64).index_fill_(1, torch.tensor([0]), 1))
    attention_case("attn_mask_t1", 2, 1, 1, 4, 1, False, torch.tensor([[1], [0]]))
    # causal with left padding: the first queries of row 1 see no key at all
    attention_case("attn_causal_mask", 2, 6, 6, 8, 2, True,
                   torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]]))
    attention_case("attn_cross", 2, 4, 7, 8, 2, False,
                   torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0]]))
    # more than one query block (64 rows causal, 128 otherwise), odd sizes
    attention_case("attn_long_causal", 1, 70, 70, 8, 2, True)
    attention_case("attn_long_mask", 2, 67, 67, 8, 4, False,
                   torch.cat([torch.ones(1, 67), torch.cat([torch.ones(1, 50), torch.zeros(1, 17)], 1)]))
    attention_case("attn_long_full", 1, 133, 133, 8, 2, False,
                   torch.cat([torch.ones(1, 120), torch.zeros(1, 13)], 1))


def to_np(t):
    if t.dtype in (torch.int64, torch.int32):
        return t.numpy().astype(np.int32)
    return t.detach().numpy().astype(np.float32)


def main():
    build_cases()
    tensors = {}
    for name, cfg, eps, inputs, diff, fn in CASES:
        leaves = [x.clone().requires_grad_(d) for x, d in zip(inputs, diff)]
        out, probs = fn(*leaves)
        dout = randn(*out.shape)
        (out * dout).sum().backward()
        tensors[f"{name}.cfg"] = np.array(cfg, dtype=np.int32)
        if eps is not None:
            tensors[f"{name}.eps"] = np.array([eps], dtype=np.float32)
        for i, x in enumerate(inputs):
            tensors[f"{name}.in{i}"] = to_np(x)
        tensors[f"{name}.out"] = to_np(out)
        tensors[f"{name}.dout"] = to_np(dout)
        if probs is not None and probs.numel() <= 4096:  # the long cases' would bloat the file
            tensors[f"{name}.probs"] = to_np(probs)
        for i, (leaf, d) in enumerate(zip(leaves, diff)):
            if d:
                tensors[f"{name}.grad{i}"] = to_np(leaf.grad)
    for k, v in tensors.items():
        assert np.all(np.isfinite(v)), k
    meta = {"generator": "tests/ref/gen_transformer_ops.py", "cases": str(len(CASES))}
    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    n = safetensors_writer.write(OUT_PATH, tensors, meta)
    assert n < 300 * 1024, n
    print(f"wrote {os.path.relpath(OUT_PATH, ROOT)}: {len(CASES)} cases, {len(tensors)} tensors, {n} bytes")


if __name__ == "__main__":
    main()
