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

Masked cases (<case>.mask (B, T) 0/1 besides the above): a masked step keeps h (and c) and
outputs 0; reverse cases run from the last step to the first with outputs at their original
positions. Right-padded ones are also checked against torch.nn.LSTM / GRU on packed
sequences (the reverse ones against the backward half of a bidirectional module). The
bidirectional cases bi_*.{x, mask, forward_kernel, ..., backward_bias, dout, out, grad_*}
compare against torch.nn.LSTM(bidirectional=True) on packed sequences (outputs concatenated).
emb_lstm.{ids, table, kernel, recurrent_kernel, bias, dout, out, grad_table, grad_kernel,
grad_recurrent_kernel, grad_bias}: ids with 0 as right padding -> embedding -> LSTM masked by
ids != 0, last state, against torch.nn.Embedding + packed torch.nn.LSTM.
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


def manual_lstm(x, kernel, recurrent, bias, mask=None, reverse=False):
    """The LSTM written out in torch ops, Keras layout and gate order (i, f, c, o). With a
    mask (B, T), a step with 0 keeps h and c and outputs 0; reverse runs t = T-1 .. 0."""
    B, T, _ = x.shape
    U = recurrent.shape[0]
    h = torch.zeros(B, U, dtype=D)
    c = torch.zeros(B, U, dtype=D)
    ys = [None] * T
    for t in (reversed(range(T)) if reverse else range(T)):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = z[:, :U].sigmoid(), z[:, U:2 * U].sigmoid(), z[:, 2 * U:3 * U].tanh(), z[:, 3 * U:].sigmoid()
        c_new = f * c + i * g
        h_new = o * c_new.tanh()
        if mask is None:
            c, h = c_new, h_new
            ys[t] = h
        else:
            m = mask[:, t:t + 1]
            c = m * c_new + (1 - m) * c
            h = m * h_new + (1 - m) * h
            ys[t] = m * h_new
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


def manual_gru(x, kernel, recurrent, bias, mask=None, reverse=False):
    """Keras' GRU (reset_after=True) in torch ops, gates (z, r, h), bias rows (input, recurrent);
    mask and reverse as in manual_lstm."""
    B, T, _ = x.shape
    U = recurrent.shape[0]
    h = torch.zeros(B, U, dtype=D)
    ys = [None] * T
    for t in (reversed(range(T)) if reverse else range(T)):
        gx = x[:, t] @ kernel + bias[0]
        gh = h @ recurrent + bias[1]
        z = (gx[:, :U] + gh[:, :U]).sigmoid()
        r = (gx[:, U:2 * U] + gh[:, U:2 * U]).sigmoid()
        n = (gx[:, 2 * U:] + r * gh[:, 2 * U:]).tanh()
        h_new = z * h + (1 - z) * n
        if mask is None:
            h = h_new
            ys[t] = h
        else:
            m = mask[:, t:t + 1]
            h = m * h_new + (1 - m) * h
            ys[t] = m * h_new
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


def packed(module, x, lengths):
    """Runs a batch_first torch RNN module on x packed to lengths; padded outputs come back 0."""
    pack = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    y, state = module(pack)
    y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
    return y, state[0] if isinstance(state, tuple) else state


def torch_lstm(F, U, weights, bidirectional=False):
    """torch.nn.LSTM holding Keras-layout weights [(kernel, recurrent, bias)] per direction."""
    lstm = torch.nn.LSTM(F, U, batch_first=True, bidirectional=bidirectional).double()
    with torch.no_grad():
        for d, (kernel, recurrent, bias) in enumerate(weights):
            sfx = "_l0_reverse" if d else "_l0"
            getattr(lstm, "weight_ih" + sfx).copy_(kernel.t())
            getattr(lstm, "weight_hh" + sfx).copy_(recurrent.t())
            getattr(lstm, "bias_ih" + sfx).copy_(bias)
            getattr(lstm, "bias_hh" + sfx).zero_()
    return lstm


def torch_gru(F, U, weights, bidirectional=False):
    perm = torch.cat([torch.arange(U, 2 * U), torch.arange(0, U), torch.arange(2 * U, 3 * U)])
    gru = torch.nn.GRU(F, U, batch_first=True, bidirectional=bidirectional).double()
    with torch.no_grad():
        for d, (kernel, recurrent, bias) in enumerate(weights):
            sfx = "_l0_reverse" if d else "_l0"
            getattr(gru, "weight_ih" + sfx).copy_(kernel.t()[perm])
            getattr(gru, "weight_hh" + sfx).copy_(recurrent.t()[perm])
            getattr(gru, "bias_ih" + sfx).copy_(bias[0][perm])
            getattr(gru, "bias_hh" + sfx).copy_(bias[1][perm])
    return gru


def mask_of(B, T, padding, lengths):
    """(B, T) 0/1: right or left padding to lengths, or "holes": lengths taken as bit patterns."""
    m = torch.zeros(B, T, dtype=D)
    for b, n in enumerate(lengths):
        if padding == "right":
            m[b, :n] = 1
        elif padding == "left":
            m[b, T - n:] = 1
        else:
            m[b] = torch.tensor([(n >> t) & 1 for t in range(T)], dtype=D)
    return m


# name, gru, batch, timesteps, features, units, return_sequences, reverse, padding, lengths
MASKED_CASES = [
    ("lstm_mask_right_seq", 0, 4, 6, 3, 4, True, False, "right", [6, 3, 1, 4]),
    ("lstm_mask_right_last", 0, 4, 6, 3, 4, False, False, "right", [2, 6, 5, 1]),
    ("lstm_mask_left_seq", 0, 3, 5, 2, 3, True, False, "left", [5, 2, 3]),
    ("lstm_mask_holes_last", 0, 4, 5, 3, 3, False, False, "holes", [0b10110, 0b01101, 0, 0b11111]),
    ("lstm_mask_reverse_seq", 0, 4, 6, 3, 4, True, True, "right", [6, 2, 4, 1]),
    ("lstm_mask_reverse_last", 0, 3, 5, 3, 4, False, True, "right", [3, 5, 1]),
    ("lstm_mask_reverse_left_last", 0, 3, 5, 3, 2, False, True, "left", [3, 5, 1]),
    ("gru_mask_right_seq", 1, 4, 6, 3, 4, True, False, "right", [6, 3, 1, 4]),
    ("gru_mask_left_last", 1, 3, 5, 2, 3, False, False, "left", [4, 1, 5]),
    ("gru_mask_holes_seq", 1, 3, 5, 3, 3, True, False, "holes", [0b10110, 0, 0b11011]),
    ("gru_mask_reverse_seq", 1, 4, 6, 3, 4, True, True, "right", [6, 2, 4, 1]),
    ("gru_mask_reverse_last", 1, 3, 5, 3, 2, False, True, "right", [3, 5, 2]),
]


def random_weights(F, U, gates, bias_rows):
    kernel = f32(torch.randn(F, gates * U, dtype=D) * 0.5).requires_grad_()
    recurrent = f32(torch.randn(U, gates * U, dtype=D) * 0.5).requires_grad_()
    shape = (gates * U,) if bias_rows == 1 else (bias_rows, gates * U)
    bias = f32(torch.randn(*shape, dtype=D) * 0.3).requires_grad_()
    return kernel, recurrent, bias


def masked_case(out, name, gru, B, T, F, U, return_sequences, reverse, padding, lengths):
    x = f32(torch.randn(B, T, F, dtype=D)).requires_grad_()
    kernel, recurrent, bias = random_weights(F, U, 3 if gru else 4, 2 if gru else 1)
    mask = mask_of(B, T, padding, lengths)
    y, h_last = (manual_gru if gru else manual_lstm)(x, kernel, recurrent, bias, mask, reverse)
    if padding == "right":  # the same as PyTorch's packed sequences
        module = (torch_gru if gru else torch_lstm)(F, U, [(kernel, recurrent, bias)] * (2 if reverse else 1),
                                                        bidirectional=reverse)
        with torch.no_grad():
            ref, h_n = packed(module, x, lengths)
        ref = ref[:, :, U:] if reverse else ref
        assert torch.allclose(ref, y, atol=1e-12), name + ": masked RNN differs from the packed torch module"
        assert torch.allclose(h_n[-1], h_last, atol=1e-12), name + ": last state differs from torch's h_n"
    result = y if return_sequences else h_last
    dout = f32(torch.randn(*result.shape, dtype=D))
    (result * dout).sum().backward()
    assert float(x.grad[mask == 0].abs().max() if (mask == 0).any() else 0) == 0, "masked steps must get no gradient"
    for key, t in (("x", x), ("kernel", kernel), ("recurrent_kernel", recurrent), ("bias", bias)):
        out["%s.%s" % (name, key)] = t.detach().float().numpy()
        out["%s.grad_%s" % (name, key)] = t.grad.float().numpy()
    out[name + ".mask"] = mask.float().numpy()
    out[name + ".dout"] = dout.float().numpy()
    out[name + ".out"] = result.detach().float().numpy()


# name, batch, timesteps, features, units, return_sequences, lengths (right padding)
BI_CASES = [
    ("bi_lstm_seq", 4, 6, 3, 4, True, [6, 3, 1, 5]),
    ("bi_lstm_last", 3, 5, 2, 3, False, [2, 5, 4]),
]


def bidirectional_case(out, name, B, T, F, U, return_sequences, lengths):
    """Keras' Bidirectional(LSTM) with concat = torch.nn.LSTM(bidirectional=True) on packed data."""
    x = f32(torch.randn(B, T, F, dtype=D)).requires_grad_()
    fwd, bwd = random_weights(F, U, 4, 1), random_weights(F, U, 4, 1)
    mask = mask_of(B, T, "right", lengths)
    y_f, h_f = manual_lstm(x, *fwd, mask, False)
    y_b, h_b = manual_lstm(x, *bwd, mask, True)
    y, h = torch.cat([y_f, y_b], 2), torch.cat([h_f, h_b], 1)
    with torch.no_grad():
        ref, h_n = packed(torch_lstm(F, U, [fwd, bwd], bidirectional=True), x, lengths)
    assert torch.allclose(ref, y, atol=1e-12), name + ": differs from torch's bidirectional LSTM"
    assert torch.allclose(torch.cat([h_n[0], h_n[1]], 1), h, atol=1e-12), name + ": last states differ from h_n"
    result = y if return_sequences else h
    dout = f32(torch.randn(*result.shape, dtype=D))
    (result * dout).sum().backward()
    tensors = [("x", x)]
    for prefix, (k, r, b) in (("forward_", fwd), ("backward_", bwd)):
        tensors += [(prefix + "kernel", k), (prefix + "recurrent_kernel", r), (prefix + "bias", b)]
    for key, t in tensors:
        out["%s.%s" % (name, key)] = t.detach().float().numpy()
        out["%s.grad_%s" % (name, key)] = t.grad.float().numpy()
    out[name + ".mask"] = mask.float().numpy()
    out[name + ".dout"] = dout.float().numpy()
    out[name + ".out"] = result.detach().float().numpy()


def embedding_lstm_case(out):
    """ids (0 = right padding) -> embedding -> LSTM masked by ids != 0 -> last state."""
    ids = torch.tensor([[3, 1, 4, 1, 5], [2, 6, 0, 0, 0], [5, 3, 5, 0, 0]], dtype=torch.int64)
    lengths = [5, 2, 3]
    V, E, U = 7, 3, 4
    table = f32(torch.randn(V, E, dtype=D)).requires_grad_()
    kernel, recurrent, bias = random_weights(E, U, 4, 1)
    x = torch.nn.functional.embedding(ids, table)
    _, h = manual_lstm(x, kernel, recurrent, bias, (ids != 0).double())
    with torch.no_grad():
        emb = torch.nn.Embedding(V, E, padding_idx=0).double()
        emb.weight.copy_(table)
        _, h_n = packed(torch_lstm(E, U, [(kernel, recurrent, bias)]), emb(ids), lengths)
    assert torch.allclose(h_n[0], h, atol=1e-12), "embedding + masked LSTM differs from torch"
    dout = f32(torch.randn(*h.shape, dtype=D))
    (h * dout).sum().backward()
    assert float(table.grad[0].abs().max()) == 0, "the padding row must get no gradient"
    out["emb_lstm.ids"] = ids.int().numpy()
    for key, t in (("table", table), ("kernel", kernel), ("recurrent_kernel", recurrent), ("bias", bias)):
        out["emb_lstm.%s" % key] = t.detach().float().numpy()
        out["emb_lstm.grad_%s" % key] = t.grad.float().numpy()
    out["emb_lstm.dout"] = dout.float().numpy()
    out["emb_lstm.out"] = h.detach().float().numpy()


def main():
    torch.manual_seed(7)
    out = {}
    for case in CASES:
        lstm_case(out, *case)
    embedding_case(out)
    for case in GRU_CASES:
        gru_case(out, *case)
    for case in MASKED_CASES:
        masked_case(out, *case)
    for case in BI_CASES:
        bidirectional_case(out, *case)
    embedding_lstm_case(out)
    safetensors_writer.write(OUT_PATH, out)
    print("wrote %s (%d tensors)" % (OUT_PATH, len(out)))


if __name__ == "__main__":
    main()
