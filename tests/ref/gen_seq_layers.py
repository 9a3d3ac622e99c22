#!/usr/bin/python3
"""Writes tests/fixtures/seq_layers.safetensors: PyTorch references for damo's sequence and
transformer layers (src/nn/attention_layers.c, src/nn/seq_layers.c).

Run with Debian's interpreter: /usr/bin/python3 tests/ref/gen_seq_layers.py

Each case is a small functional model: model inputs -> one or two layers. The layers follow
Keras / keras_hub, written out here in plain torch ops:
  - LayerNormalization over the last axis (biased variance, eps inside the square root).
  - MultiHeadAttention with 2-D kernels: query/kernel (C, heads*key_dim), head h in columns
    [h*key_dim, (h+1)*key_dim) (Keras' (C, heads, key_dim) EinsumDense kernel reshaped),
    scores / sqrt(key_dim), the key mask from the value input's padding (ids == 0), a causal
    mask when asked, attention_output/kernel (heads*key_dim, out).
  - keras_hub TransformerEncoder / TransformerDecoder: residual sub-blocks with the layer norm
    after (post-LN) or before (normalize_first, pre-LN) each; feed-forward relu or exact GELU;
    the decoder's self-attention is causal, its optional cross-attention reads the second input.
  - PositionEmbedding (added to its input here) and TokenAndPositionEmbedding.
  - Conv1D (kernel (k, C, F)) with valid / same (TensorFlow's: odd padding after) / causal
    (k-1 before) padding; MaxPooling1D / AveragePooling1D (padding never counts).
For each case <c>: the model inputs <c>.in.<name> (f32, or i32 ids), every weight
<c>.w.<layer>/<slot>, the output <c>.out, the output gradient <c>.dout, and the gradients of
sum(out * dout): <c>.grad.<layer>/<slot> for every weight, <c>.grad_in.<name> for every f32
input. mha_masked also stores its attention probabilities <c>.probs (B, heads, Tq, Tk).
Float64 math from float32-rounded values, seeded, so the bytes are stable.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_writer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "fixtures", "seq_layers.safetensors")
D = torch.float64
B = 2

# Token ids: 0 is padding (masked with mask_zero); every row keeps real tokens first.
IDS_5 = [[3, 1, 4, 0, 0], [2, 5, 6, 1, 3]]
IDS_4 = [[7, 2, 0, 0], [1, 8, 5, 2]]


def f32(t):
    return t.float().double()


def randn(*shape, scale=1.0):
    return f32(torch.randn(*shape) * scale)


class Case:
    """Weights (leaf tensors that need gradients) and inputs of one case."""

    def __init__(self, name):
        self.name = name
        self.w = {}
        self.inputs = {}
        self.extra = {}

    def weight(self, key, t):
        t = t.clone().requires_grad_()
        self.w[key] = t
        return t

    def input(self, key, t):
        if t.dtype == D:
            t = t.clone().requires_grad_()
        self.inputs[key] = t
        return t

    def finish(self, out, store):
        dout = randn(*out.shape)
        (out * dout).sum().backward()
        n = self.name
        store[n + ".out"] = out.detach().float().numpy()
        store[n + ".dout"] = dout.float().numpy()
        for k, t in self.inputs.items():
            if t.dtype == D:
                store[n + ".in." + k] = t.detach().float().numpy()
                store[n + ".grad_in." + k] = t.grad.float().numpy()
            else:
                store[n + ".in." + k] = t.int().numpy()
        for k, t in self.w.items():
            store[n + ".w." + k] = t.detach().float().numpy()
            store[n + ".grad." + k] = t.grad.float().numpy()
        for k, t in self.extra.items():
            store[n + "." + k] = t.detach().float().numpy()


# ------------------------------------------------------------------ building blocks


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


def ln_weights(c, prefix, dim):
    g = c.weight(prefix + "gamma", f32(1 + 0.2 * torch.randn(dim)))
    b = c.weight(prefix + "beta", randn(dim, scale=0.1))
    return g, b


def attention_weights(c, prefix, cq, ck, cv, heads, key_dim, out, use_bias=True, value_dim=None):
    w = {}
    width, v_width = heads * key_dim, heads * (value_dim or key_dim)
    for part, cin, cols in (("query", cq, width), ("key", ck, width), ("value", cv, v_width),
                            ("attention_output", v_width, out)):
        w[part + "/kernel"] = c.weight(prefix + part + "/kernel", randn(cin, cols, scale=1 / math.sqrt(cin)))
        if use_bias:
            w[part + "/bias"] = c.weight(prefix + part + "/bias", randn(cols, scale=0.1))
    return w


def dense(x, kernel, bias):
    y = x @ kernel
    return y + bias if bias is not None else y


def attention(q_in, v_in, k_in, w, heads, key_dim, causal=False, key_mask=None, probs_out=None, value_dim=None):
    """Keras MultiHeadAttention: only the keys are masked (padded queries still attend)."""
    Bq, Tq, _ = q_in.shape
    Tk = k_in.shape[1]
    value_dim = value_dim or key_dim

    def split(t, d):  # (B, T, H*d) -> (B, H, T, d)
        return t.reshape(t.shape[0], t.shape[1], heads, d).transpose(1, 2)

    q = split(dense(q_in, w["query/kernel"], w.get("query/bias")), key_dim)
    k = split(dense(k_in, w["key/kernel"], w.get("key/bias")), key_dim)
    v = split(dense(v_in, w["value/kernel"], w.get("value/bias")), value_dim)
    scores = q @ k.transpose(-1, -2) / math.sqrt(key_dim)
    allowed = torch.ones(Bq, 1, Tq, Tk, dtype=torch.bool)
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :]
    if causal:
        allowed = allowed & torch.tril(torch.ones(Tq, Tk, dtype=torch.bool))
    assert allowed.any(-1).all(), "every query must see a key"
    p = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    if probs_out is not None:
        probs_out.append(p)
    o = (p @ v).transpose(1, 2).reshape(Bq, Tq, heads * value_dim)
    return dense(o, w["attention_output/kernel"], w.get("attention_output/bias"))


def token_and_position(c, layer, ids, vocab, length, dim):
    tok = c.weight(layer + "/token_embedding/embeddings", randn(vocab, dim, scale=0.5))
    pos = c.weight(layer + "/position_embedding/embeddings", randn(length, dim, scale=0.5))
    T = ids.shape[1]
    return tok[ids.long()] + pos[:T], ids != 0


def transformer_block(c, layer, x, heads, inter, gelu, normalize_first, eps, mask=None, causal=False,
                      memory=None, memory_mask=None):
    hidden = x.shape[-1]
    kd = hidden // heads
    p = layer + "/"
    sa = attention_weights(c, p + "self_attention/", hidden, hidden, hidden, heads, kd, hidden)
    sa_ln = ln_weights(c, p + "self_attention_layer_norm/", hidden)
    if memory is not None:
        ca = attention_weights(c, p + "cross_attention/", hidden, memory.shape[-1], memory.shape[-1], heads, kd, hidden)
        ca_ln = ln_weights(c, p + "cross_attention_layer_norm/", hidden)
    ff_ln = ln_weights(c, p + "feedforward_layer_norm/", hidden)
    k1 = c.weight(p + "feedforward_intermediate_dense/kernel", randn(hidden, inter, scale=1 / math.sqrt(hidden)))
    b1 = c.weight(p + "feedforward_intermediate_dense/bias", randn(inter, scale=0.1))
    k2 = c.weight(p + "feedforward_output_dense/kernel", randn(inter, hidden, scale=1 / math.sqrt(inter)))
    b2 = c.weight(p + "feedforward_output_dense/bias", randn(hidden, scale=0.1))

    def sub(x, ln, f):
        if normalize_first:
            return x + f(layer_norm(x, *ln, eps))
        return layer_norm(x + f(x), *ln, eps)

    x = sub(x, sa_ln, lambda h: attention(h, h, h, sa, heads, kd, causal, mask))
    if memory is not None:
        x = sub(x, ca_ln, lambda h: attention(h, memory, memory, ca, heads, kd, False, memory_mask))

    def ff(h):
        h = dense(h, k1, b1)
        h = F.gelu(h) if gelu else F.relu(h)
        return dense(h, k2, b2)

    return sub(x, ff_ln, ff)


def same_padding(T, k, s):
    out = -(-T // s)
    total = max((out - 1) * s + k - T, 0)
    return total // 2, total - total // 2


def pad_for(padding, T, k, s):
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return k - 1, 0
    return same_padding(T, k, s)


# ------------------------------------------------------------------ cases


def case_layer_norm(store, name, center_scale):
    c = Case(name)
    x = c.input("x", randn(B, 3, 5, scale=2.0) + 0.5)
    g, b = ln_weights(c, "ln/", 5) if center_scale else (None, None)
    c.finish(layer_norm(x, g, b, 1e-3), store)


def case_mha(store, name, heads, key_dim, causal=False, masked=False, n_inputs=1, output=None, use_bias=True,
             value_dim=None):
    c = Case(name)
    probs = []
    key_mask = None
    if masked:  # ids -> embedding(mask_zero) -> self-attention
        ids = c.input("ids", torch.tensor(IDS_5, dtype=torch.int32))
        table = c.weight("emb/embeddings", randn(7, 6, scale=0.7))
        q = table[ids.long()]
        key_mask = ids != 0
        v = k = q
    else:
        q = c.input("q", randn(B, 4 if n_inputs == 1 else 3, 6))
        v = c.input("v", randn(B, 5, 4)) if n_inputs >= 2 else q
        k = c.input("k", randn(B, 5, 3)) if n_inputs == 3 else v
    out = output or q.shape[-1]
    w = attention_weights(c, "mha/", q.shape[-1], k.shape[-1], v.shape[-1], heads, key_dim, out, use_bias, value_dim)
    y = attention(q, v, k, w, heads, key_dim, causal, key_mask, probs, value_dim)
    if masked:
        c.extra["probs"] = probs[0]
    c.finish(y, store)


def case_position(store):
    c = Case("pos")
    x = c.input("x", randn(B, 4, 6))
    table = c.weight("pos/embeddings", randn(6, 6, scale=0.5))
    c.finish(x + table[:4], store)


def case_token_and_position(store):
    c = Case("tokpos")
    ids = c.input("ids", torch.tensor(IDS_5, dtype=torch.int32))
    y, _ = token_and_position(c, "tokpos", ids, 9, 7, 6)
    c.finish(y, store)


def case_encoder(store, name, gelu, normalize_first, with_ids):
    c = Case(name)
    if with_ids:
        ids = c.input("ids", torch.tensor(IDS_5, dtype=torch.int32))
        x, mask = token_and_position(c, "tokpos", ids, 9, 7, 6)
    else:
        x, mask = c.input("x", randn(B, 4, 6)), None
    y = transformer_block(c, "enc", x, 2, 10, gelu, normalize_first, 1e-5, mask=mask)
    c.finish(y, store)


def case_decoder(store, name, gelu, normalize_first, cross):
    c = Case(name)
    x = c.input("x", randn(B, 4, 6))
    memory = memory_mask = None
    if cross:  # the encoder sequence: padded ids -> token_and_position(mask_zero), width 4
        ids = c.input("enc_ids", torch.tensor(IDS_5, dtype=torch.int32))
        memory, memory_mask = token_and_position(c, "tokpos", ids, 9, 5, 4)
    y = transformer_block(c, "dec", x, 2, 8, gelu, normalize_first, 1e-5, causal=True, memory=memory,
                          memory_mask=memory_mask)
    c.finish(y, store)


def case_conv1d(store, name, T, C, filters, k, s, padding, relu):
    c = Case(name)
    x = c.input("x", randn(B, T, C))
    kernel = c.weight("conv/kernel", randn(k, C, filters, scale=0.5))
    bias = c.weight("conv/bias", randn(filters, scale=0.1))
    before, after = pad_for(padding, T, k, s)
    xp = F.pad(x.transpose(1, 2), (before, after))  # (B, C, T + pads)
    y = F.conv1d(xp, kernel.permute(2, 1, 0), bias, stride=s).transpose(1, 2)
    c.finish(F.relu(y) if relu else y, store)


def case_pool1d(store, name, kind, T, C, pool, s, padding):
    c = Case(name)
    x = c.input("x", randn(B, T, C))
    before, after = pad_for(padding, T, pool, s)
    xt = x.transpose(1, 2)
    if kind == "max":
        y = F.max_pool1d(F.pad(xt, (before, after), value=float("-inf")), pool, s)
    else:
        sums = F.avg_pool1d(F.pad(xt, (before, after)), pool, s) * pool
        counts = F.avg_pool1d(F.pad(torch.ones(1, 1, T, dtype=D), (before, after)), pool, s) * pool
        y = sums / counts
    c.finish(y.transpose(1, 2), store)


def main():
    torch.manual_seed(20260511)
    store = {}
    case_layer_norm(store, "ln", True)
    case_layer_norm(store, "ln_plain", False)
    case_mha(store, "mha_self", 2, 3)
    case_mha(store, "mha_causal", 2, 4, causal=True)
    case_mha(store, "mha_masked", 2, 3, masked=True)
    case_mha(store, "mha_cross", 2, 3, n_inputs=2, output=5)
    case_mha(store, "mha_cross3", 3, 2, n_inputs=3)
    case_position(store)
    case_token_and_position(store)
    case_encoder(store, "enc_post_relu", gelu=False, normalize_first=False, with_ids=True)
    case_encoder(store, "enc_pre_gelu", gelu=True, normalize_first=True, with_ids=True)
    case_encoder(store, "enc_plain", gelu=False, normalize_first=False, with_ids=False)
    case_decoder(store, "dec_self", gelu=False, normalize_first=False, cross=False)
    case_decoder(store, "dec_cross", gelu=True, normalize_first=True, cross=True)
    case_conv1d(store, "conv_valid", 7, 3, 4, 3, 1, "valid", True)
    case_conv1d(store, "conv_same_s2", 7, 3, 4, 3, 2, "same", False)
    case_conv1d(store, "conv_causal_s2", 8, 2, 3, 3, 2, "causal", False)
    case_conv1d(store, "conv_causal", 6, 3, 2, 2, 1, "causal", True)
    case_pool1d(store, "maxpool_valid", "max", 7, 3, 2, 2, "valid")
    case_pool1d(store, "maxpool_same_s2", "max", 7, 3, 3, 2, "same")
    case_pool1d(store, "avgpool_same", "avg", 7, 2, 2, 2, "same")
    case_mha(store, "mha_nobias", 2, 2, n_inputs=2, use_bias=False)
    case_mha(store, "mha_vdim", 2, 3, n_inputs=2, value_dim=4)  # each head's values wider than its keys
    safetensors_writer.write(OUT_PATH, store, {"generator": "tests/ref/gen_seq_layers.py"})
    print("wrote %s (%d tensors)" % (OUT_PATH, len(store)))


if __name__ == "__main__":
    main()
