#!/usr/bin/python3
"""Writes tests/fixtures/rnn.safetensors: PyTorch references for damo's recurrent ops.

Run with Debian's interpreter: /usr/bin/python3 tests/ref/gen_rnn.py

damo's LSTM keeps Keras' layout: kernel (F, 4U), recurrent_kernel (U, 4U), one bias (4U),
gates in the order i, f, c, o. torch.nn.LSTM stores weight_ih (4U, F) and weight_hh (4U, U)
in the order i, f, g, o, and two biases; so kernel = weight_ih^T, recurrent_kernel =
weight_hh^T, bias = b_ih + b_hh. For each case <case>:
    <case>.x, .kernel, .recurrent_kernel, .bias   inputs
    <case>.dout                                   upstream gradient of the output
    <case>.out                                    all h (B, T, U) or the last h (B, U)
    <case>.grad_x, .grad_kernel, .grad_recurrent_kernel, .grad_bias
the GRU cases likewise (Keras reset_after=True layout: kernel (F, 3U), recurrent (U, 3U),
bias (2, 3U), gates z, r, h; checked against torch.nn.GRU with its r, z, n order), and
embedding.{ids, table, dout, out, grad_table} for the table lookup.
Computed in float64 from float32-rounded inputs; seeded, so the bytes are stable.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_writer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "fixtures", "rnn.safetensors")
D = torch.float64

# name, batch, timesteps, features, units, return_sequences
CASES = [
    ("lstm_seq", 3, 5, 4, 6, True),
    ("lstm_last", 3, 5, 4, 6, False),
    ("lstm_one_step", 2, 1, 3, 2, False),
    ("lstm_long", 2, 12, 3, 5, True),
    ("lstm_wide", 4, 3, 7, 9, False),
]


def f32(t):
    return t.float().double()


def manual_lstm(x, kernel, recurrent, bias):
    """The LSTM written out in torch ops, Keras layout and gate order (i, f, c, o)."""
    B, T, _ = x.shape
    U = recurrent.shape[0]
    h = torch.zeros(B, U, dtype=D)
    c = torch.zeros(B, U, dtype=D)
    ys = []
    for t in range(T):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = z[:, :U].sigmoid(), z[:, U:2 * U].sigmoid(), z[:, 2 * U:3 * U].tanh(), z[:, 3 * U:].sigmoid()
        c = f * c + i * g
        h = o * c.tanh()
        ys.append(h)
    return torch.stack(ys, 1), h


def check_against_nn_lstm(x, kernel, recurrent, bias, y):
    """The written-out LSTM must agree with torch.nn.LSTM given the same weights."""
    F, G = kernel.shape
    lstm = torch.nn.LSTM(F, G // 4, batch_first=True).double()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(kernel.t())
        lstm.weight_hh_l0.copy_(recurrent.t())
        lstm.bias_ih_l0.copy_(bias)
        lstm.bias_hh_l0.zero_()
        ref, _ = lstm(x)
    assert torch.allclose(ref, y.detach(), atol=1e-12), "manual LSTM differs from torch.nn.LSTM"


def lstm_case(out, name, B, T, F, U, return_sequences):
    x = f32(torch.randn(B, T, F, dtype=D)).requires_grad_()
    kernel = f32(torch.randn(F, 4 * U, dtype=D) * 0.5).requires_grad_()
    recurrent = f32(torch.randn(U, 4 * U, dtype=D) * 0.5).requires_grad_()
    bias = f32(torch.randn(4 * U, dtype=D) * 0.3).requires_grad_()
    y, h_last = manual_lstm(x, kernel, recurrent, bias)
    check_against_nn_lstm(x, kernel, recurrent, bias, y)
    result = y if return_sequences else h_last
    dout = f32(torch.randn(*result.shape, dtype=D))
    (result * dout).sum().backward()
    for key, t in (("x", x), ("kernel", kernel), ("recurrent_kernel", recurrent), ("bias", bias)):
        out["%s.%s" % (name, key)] = t.detach().float().numpy()
        out["%s.grad_%s" % (name, key)] = t.grad.float().numpy()
    out[name + ".dout"] = dout.float().numpy()
    out[name + ".out"] = result.detach().float().numpy()


GRU_CASES = [
    ("gru_seq", 3, 5, 4, 6, True),
    ("gru_last", 2, 7, 3, 5, False),
    ("gru_one_step", 2, 1, 3, 2, True),
]


def manual_gru(x, kernel, recurrent, bias):
    """Keras' GRU (reset_after=True) in torch ops, gates (z, r, h), bias rows (input, recurrent)."""
    B, T, _ = x.shape
    U = recurrent.shape[0]
    h = torch.zeros(B, U, dtype=D)
    ys = []
    for t in range(T):
        gx = x[:, t] @ kernel + bias[0]
        gh = h @ recurrent + bias[1]
        z = (gx[:, :U] + gh[:, :U]).sigmoid()
        r = (gx[:, U:2 * U] + gh[:, U:2 * U]).sigmoid()
        n = (gx[:, 2 * U:] + r * gh[:, 2 * U:]).tanh()
        h = z * h + (1 - z) * n
        ys.append(h)
    return torch.stack(ys, 1), h


def check_against_nn_gru(x, kernel, recurrent, bias, y):
    """torch.nn.GRU orders gates (r, z, n): permute damo's (z, r, h) blocks to compare."""
    F, G = kernel.shape
    U = G // 3
    perm = torch.cat([torch.arange(U, 2 * U), torch.arange(0, U), torch.arange(2 * U, 3 * U)])
    gru = torch.nn.GRU(F, U, batch_first=True).double()
    with torch.no_grad():
        gru.weight_ih_l0.copy_(kernel.t()[perm])
        gru.weight_hh_l0.copy_(recurrent.t()[perm])
        gru.bias_ih_l0.copy_(bias[0][perm])
        gru.bias_hh_l0.copy_(bias[1][perm])
        ref, _ = gru(x)
    assert torch.allclose(ref, y.detach(), atol=1e-12), "manual GRU differs from torch.nn.GRU"


def gru_case(out, name, B, T, F, U, return_sequences):
    x = f32(torch.randn(B, T, F, dtype=D)).requires_grad_()
    kernel = f32(torch.randn(F, 3 * U, dtype=D) * 0.5).requires_grad_()
    recurrent = f32(torch.randn(U, 3 * U, dtype=D) * 0.5).requires_grad_()
    bias = f32(torch.randn(2, 3 * U, dtype=D) * 0.3).requires_grad_()
    y, h_last = manual_gru(x, kernel, recurrent, bias)
    check_against_nn_gru(x, kernel, recurrent, bias, y)
    result = y if return_sequences else h_last
    dout = f32(torch.randn(*result.shape, dtype=D))
    (result * dout).sum().backward()
    for key, t in (("x", x), ("kernel", kernel), ("recurrent_kernel", recurrent), ("bias", bias)):
        out["%s.%s" % (name, key)] = t.detach().float().numpy()
        out["%s.grad_%s" % (name, key)] = t.grad.float().numpy()
    out[name + ".dout"] = dout.float().numpy()
    out[name + ".out"] = result.detach().float().numpy()


def embedding_case(out):
    """embedding: ids (3, 4) with repeats, table (6, 5); grad_table sums repeated rows."""
    ids = torch.tensor([[0, 2, 2, 5], [1, 0, 3, 2], [5, 5, 4, 0]], dtype=torch.int64)
    table = f32(torch.randn(6, 5, dtype=D)).requires_grad_()
    y = torch.nn.functional.embedding(ids, table)
    dout = f32(torch.randn(*y.shape, dtype=D))
    (y * dout).sum().backward()
    out["embedding.ids"] = ids.int().numpy()
    out["embedding.table"] = table.detach().float().numpy()
    out["embedding.dout"] = dout.float().numpy()
    out["embedding.out"] = y.detach().float().numpy()
    out["embedding.grad_table"] = table.grad.float().numpy()


def main():
    torch.manual_seed(7)
    out = {}
    for case in CASES:
        lstm_case(out, *case)
    embedding_case(out)
    for case in GRU_CASES:
        gru_case(out, *case)
    safetensors_writer.write(OUT_PATH, out)
    print("wrote %s (%d tensors)" % (OUT_PATH, len(out)))


if __name__ == "__main__":
    main()
