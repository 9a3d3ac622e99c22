#!/usr/bin/python3
"""Writes tests/fixtures/ops.safetensors: PyTorch references for every primitive op of damo.

Run from anywhere with Debian's interpreter (python3-torch, python3-numpy):
    /usr/bin/python3 tests/ref/gen_ops.py

For each case <case> the file holds
    <case>.in0, <case>.in1, ...    inputs (F32; class labels are I32)
    <case>.dout                    a random upstream gradient, shape of the output
    <case>.out                     the op's output
    <case>.grad0, <case>.grad1 ... d sum(out * dout) / d in_i for each differentiable input
Scalars (reductions over all axes without keepdims, the losses) are stored with shape (1,),
which is what damo returns for them.

Inputs are drawn in float64 and rounded to float32 (what is stored); the reference is then
computed in float64 from exactly those float32 values and rounded once at the end, so the
reference's own error is ~1 ulp of float32. Seeded: the output is the same bytes every run.
tests/test_ops.c carries the matching case table (op and arguments for each case name).
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_writer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "fixtures", "ops.safetensors")
D = torch.float64


def f32(t):
    """Rounds a float64 tensor to float32 precision (kept as float64)."""
    return t.float().double()


def randn(*shape, scale=1.0):
    return f32(torch.randn(*shape, dtype=D) * scale)


def uniform(*shape, lo=0.0, hi=1.0):
    return f32(torch.rand(*shape, dtype=D) * (hi - lo) + lo)


def rand_sign(*shape):
    return torch.where(torch.rand(*shape, dtype=D) < 0.5, -1.0, 1.0).to(D)


def away_from_zero(*shape, lo=0.05, hi=2.0):
    """Magnitudes in [lo, hi] with random sign (relu kinks stay further than the FD step)."""
    return f32(rand_sign(*shape) * (torch.rand(*shape, dtype=D) * (hi - lo) + lo))


def denominator(*shape):
    """Uniform in [0.5, 2] with random sign: division stays well conditioned."""
    return away_from_zero(*shape, lo=0.5, hi=2.0)


CASES = []  # (name, inputs, differentiable flags, fn)


def case(name, inputs, fn, diff=None):
    if diff is None:
        diff = [True] * len(inputs)
    CASES.append((name, inputs, diff, fn))


def as_scalar(t):
    return t.reshape(1)


def build_cases():
    torch.manual_seed(20240607)

    # ---- matmul: C = op(A) op(B); trans_a means A is stored (K, M), trans_b B stored (N, K).
    M, K, N = 3, 4, 5
    case("matmul_nn", [randn(M, K), randn(K, N)], lambda a, b: a @ b)
    case("matmul_tn", [randn(K, M), randn(K, N)], lambda a, b: a.T @ b)
    case("matmul_nt", [randn(M, K), randn(N, K)], lambda a, b: a @ b.T)
    case("matmul_tt", [randn(K, M), randn(N, K)], lambda a, b: a.T @ b.T)
    # batched a (2,3,4,5) x b (5,6): b broadcast over a's leading axes
    case("matmul_bcast4d", [randn(2, 3, 4, 5), randn(5, 6)], lambda a, b: torch.matmul(a, b))
    # the same with b stored transposed (6,5)
    case("matmul_bcast4d_nt", [randn(2, 3, 4, 5), randn(6, 5)], lambda a, b: torch.matmul(a, b.T))
    # both batched 3-D
    case("matmul_batched", [randn(2, 4, 5), randn(2, 5, 3)], lambda a, b: torch.matmul(a, b))
    case("matmul_batched_tt", [randn(2, 5, 4), randn(2, 3, 5)],
         lambda a, b: torch.matmul(a.transpose(-1, -2), b.transpose(-1, -2)))
    # 2-D a broadcast over b's leading axis
    case("matmul_bcast_a2d", [randn(4, 5), randn(2, 5, 3)], lambda a, b: torch.matmul(a, b))

    # ---- elementwise arithmetic with NumPy broadcasting
    ops = {
        "add": lambda a, b: a + b,
        "sub": lambda a, b: a - b,
        "mul": lambda a, b: a * b,
        "div": lambda a, b: a / b,
    }
    shapes = [
        ("same", (3, 5), (3, 5)),
        ("row", (4, 3), (3,)),
        ("colrow", (4, 1), (1, 3)),
        ("3d", (2, 3, 4), (3, 1)),
        ("scalar", (5,), (1,)),
        ("rev", (3,), (4, 3)),
    ]
    for opname, fn in ops.items():
        for sname, sa, sb in shapes:
            a = randn(*sa)
            b = denominator(*sb) if opname == "div" else randn(*sb)
            case(f"{opname}_{sname}", [a, b], fn)

    case("scale_by", [randn(3, 5)], lambda x: x * float(np.float32(0.37)))

    # ---- unary
    case("relu", [away_from_zero(4, 5)], torch.relu)
    case("relu_3d", [away_from_zero(2, 3, 4)], torch.relu)
    case("sigmoid", [randn(4, 5, scale=2.0)], torch.sigmoid)
    case("tanh", [randn(4, 5, scale=1.5)], torch.tanh)
    case("exp", [uniform(4, 5, lo=-2.0, hi=2.0)], torch.exp)
    case("log", [uniform(4, 5, lo=0.5, hi=2.0)], torch.log)

    # ---- softmax / log_softmax over the last axis
    case("softmax_2d", [randn(4, 7, scale=2.0)], lambda x: torch.softmax(x, -1))
    case("softmax_3d", [randn(2, 3, 5, scale=2.0)], lambda x: torch.softmax(x, -1))
    # large logits: exp would overflow float32 without the max shift
    case("softmax_big", [f32(randn(4, 7, scale=2.0) + 100.0)], lambda x: torch.softmax(x, -1))
    case("log_softmax_2d", [randn(4, 7, scale=2.0)], lambda x: torch.log_softmax(x, -1))
    case("log_softmax_3d", [randn(2, 3, 5, scale=2.0)], lambda x: torch.log_softmax(x, -1))
    case("log_softmax_big", [f32(randn(4, 7, scale=2.0) + 100.0)], lambda x: torch.log_softmax(x, -1))

    # ---- reductions on (3,4,5)
    for rname, rfn in (("sum", torch.sum), ("mean", torch.mean)):
        for aname, axis in (("ax0", 0), ("ax1", 1), ("axm1", -1), ("all", None)):
            for keep in (0, 1):
                x = randn(3, 4, 5)
                if axis is None:
                    if keep:
                        fn = (lambda rf: lambda t: rf(t, dim=(0, 1, 2), keepdim=True))(rfn)
                    else:
                        fn = (lambda rf: lambda t: as_scalar(rf(t)))(rfn)
                else:
                    fn = (lambda rf, ax, k: lambda t: rf(t, dim=ax, keepdim=bool(k)))(rfn, axis, keep)
                case(f"{rname}_{aname}_k{keep}", [x], fn)

    # ---- reshape / transpose
    case("reshape_3x20", [randn(3, 4, 5)], lambda x: x.reshape(3, 20))
    case("reshape_3xm1x2", [randn(3, 4, 5)], lambda x: x.reshape(3, -1, 2))
    case("reshape_0x5x4", [randn(3, 4, 5)], lambda x: x.reshape(3, 5, 4))  # shape[0] = 0: keep axis 0
    case("transpose_2d", [randn(3, 4)], lambda x: x.transpose(-1, -2))  # perm NULL
    case("transpose_3d_null", [randn(2, 3, 4)], lambda x: x.transpose(-1, -2))  # perm NULL
    case("transpose_3d_102", [randn(2, 3, 4)], lambda x: x.permute(1, 0, 2))
    case("transpose_3d_201", [randn(2, 3, 4)], lambda x: x.permute(2, 0, 1))

    # ---- losses (mean over the batch / all elements), scalar outputs stored as (1,)
    labels = torch.randint(0, 5, (6,), dtype=torch.int64)
    case("sce", [randn(6, 5, scale=1.5), labels], lambda x, y: as_scalar(F.cross_entropy(x, y)), [True, False])
    labels_big = torch.randint(0, 5, (6,), dtype=torch.int64)
    case("sce_big", [f32(randn(6, 5, scale=3.0) + 100.0), labels_big],
         lambda x, y: as_scalar(F.cross_entropy(x, y)), [True, False])
    case("bce", [randn(6, 3, scale=2.0), uniform(6, 3)],
         lambda x, t: as_scalar(F.binary_cross_entropy_with_logits(x, t)))
    # logits far beyond exp's float32 range: needs the stable form
    case("bce_big", [randn(6, 3, scale=60.0), uniform(6, 3)],
         lambda x, t: as_scalar(F.binary_cross_entropy_with_logits(x, t)))
    case("mse", [randn(4, 3), randn(4, 3)], lambda a, b: as_scalar(F.mse_loss(a, b)))
    # cross-entropy against distributions (distillation's soft targets); last, so the cases
    # above keep their random numbers
    case("soft_ce", [randn(6, 5, scale=1.5), f32(torch.softmax(randn(6, 5, scale=2.0), dim=1))],
         lambda x, t: as_scalar(F.cross_entropy(x, t)))
    kl = lambda x, t: as_scalar(F.kl_div(F.log_softmax(x, dim=1), t, reduction="batchmean"))
    # targets away from 0, where t log t bends too sharply for finite differences
    case("kl_div", [randn(6, 5, scale=1.5), f32(torch.softmax(randn(6, 5, scale=0.5), dim=1))], kl)
    case("soft_ce_big", [f32(randn(6, 5, scale=3.0) + 100.0), f32(torch.softmax(randn(6, 5), dim=1))],
         lambda x, t: as_scalar(F.cross_entropy(x, t)))
    case("kl_div_big", [f32(randn(6, 5, scale=3.0) + 100.0), f32(torch.softmax(randn(6, 5), dim=1))], kl)


def to_np(t):
    if t.dtype in (torch.int64, torch.int32):
        return t.numpy().astype(np.int32)
    return t.detach().numpy().astype(np.float32)


def main():
    build_cases()
    tensors = {}
    for name, inputs, diff, fn in CASES:
        leaves = []
        for x, d in zip(inputs, diff):
            if d:
                leaves.append(x.clone().requires_grad_(True))
            else:
                leaves.append(x.clone())
        out = fn(*leaves)
        dout = randn(*out.shape)
        (out * dout).sum().backward()
        for i, x in enumerate(inputs):
            tensors[f"{name}.in{i}"] = to_np(x)
        tensors[f"{name}.out"] = to_np(out)
        tensors[f"{name}.dout"] = to_np(dout)
        for i, (leaf, d) in enumerate(zip(leaves, diff)):
            if d:
                tensors[f"{name}.grad{i}"] = to_np(leaf.grad)
    for k, v in tensors.items():
        assert np.all(np.isfinite(v)), k
    meta = {
        "generator": "tests/ref/gen_ops.py",
        "cases": str(len(CASES)),
        "scalars": "stored as shape (1,)",
    }
    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    n = safetensors_writer.write(OUT_PATH, tensors, meta)
    assert n < 200 * 1024, n
    print(f"wrote {os.path.relpath(OUT_PATH, ROOT)}: {len(CASES)} cases, {len(tensors)} tensors, {n} bytes")


if __name__ == "__main__":
    main()
