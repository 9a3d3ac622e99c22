#!/usr/bin/python3
"""Writes the GPT-2 reference fixtures for tests/test_gpt2.c:

  tests/fixtures/gpt2_tiny/config.json         a HuggingFace GPT-2 config (extra fields too)
  tests/fixtures/gpt2_tiny/model.safetensors   a small random GPT-2 as GPT2LMHeadModel's
                                               state dict: "transformer." prefix, the
                                               attn.bias / attn.masked_bias buffers and a
                                               tied lm_head.weight
  tests/fixtures/gpt2_tiny_ref.safetensors     ids, targets (B, T) I32; logits (B, T, V);
                                               loss (1,); grad.<name> for every parameter
                                               (HuggingFace name, no prefix); prompt (P0,)
                                               I32 and generated (N,) I32: greedy decoding

No transformers library: GPT-2 is written out below with HuggingFace's parameter names and
layouts (Conv1D weights (in, out): y = x W + b), pre-LN blocks, tanh GELU ("gelu_new"),
causal softmax attention with heads split from the channel axis, logits = ln_f(h) wte^T.

Parameters are drawn in float64 and rounded to float32 (what is stored), wider than GPT-2's
init (and with random layer norms and biases) so every tensor matters and the logits are
well separated; the reference is computed in float64 from exactly those values. Seeded: the
output is the same bytes every run. Run: /usr/bin/python3 tests/ref/gen_gpt2.py
"""
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_writer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
MODEL_DIR = os.path.join(FIXTURES, "gpt2_tiny")
REF_PATH = os.path.join(FIXTURES, "gpt2_tiny_ref.safetensors")
D = torch.float64

V, P, C, L, H = 97, 32, 32, 2, 4
B, T = 2, 16
EPS = 1e-5
PROMPT_LEN, N_NEW = 5, 10


def randn(*shape, scale=1.0, shift=0.0):
    return (torch.randn(*shape, dtype=D) * scale + shift).float().double()


def make_params():
    p = {"wte.weight": randn(V, C, scale=0.3), "wpe.weight": randn(P, C, scale=0.1)}
    for i in range(L):
        h = f"h.{i}."
        p[h + "ln_1.weight"] = randn(C, scale=0.2, shift=1.0)
        p[h + "ln_1.bias"] = randn(C, scale=0.1)
        p[h + "attn.c_attn.weight"] = randn(C, 3 * C, scale=0.2)
        p[h + "attn.c_attn.bias"] = randn(3 * C, scale=0.1)
        p[h + "attn.c_proj.weight"] = randn(C, C, scale=0.1)
        p[h + "attn.c_proj.bias"] = randn(C, scale=0.1)
        p[h + "ln_2.weight"] = randn(C, scale=0.2, shift=1.0)
        p[h + "ln_2.bias"] = randn(C, scale=0.1)
        p[h + "mlp.c_fc.weight"] = randn(C, 4 * C, scale=0.2)
        p[h + "mlp.c_fc.bias"] = randn(4 * C, scale=0.1)
        p[h + "mlp.c_proj.weight"] = randn(4 * C, C, scale=0.1)
        p[h + "mlp.c_proj.bias"] = randn(C, scale=0.1)
    p["ln_f.weight"] = randn(C, scale=0.2, shift=1.0)
    p["ln_f.bias"] = randn(C, scale=0.1)
    return p


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def layer_norm(x, w, b):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, EPS)


def attention(x, p, h):
    Bx, Tx, _ = x.shape
    qkv = x @ p[h + "attn.c_attn.weight"] + p[h + "attn.c_attn.bias"]
    q, k, v = qkv.split(C, dim=2)
    split = lambda t: t.view(Bx, Tx, H, C // H).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    s = q @ k.transpose(-1, -2) / math.sqrt(C // H)
    causal = torch.tril(torch.ones(Tx, Tx, dtype=torch.bool))
    s = s.masked_fill(~causal, float("-inf"))
    o = torch.softmax(s, dim=-1) @ v
    o = o.transpose(1, 2).reshape(Bx, Tx, C)
    return o @ p[h + "attn.c_proj.weight"] + p[h + "attn.c_proj.bias"]


def forward(p, ids):
    Tx = ids.shape[1]
    x = p["wte.weight"][ids] + p["wpe.weight"][torch.arange(Tx)]
    for i in range(L):
        h = f"h.{i}."
        x = x + attention(layer_norm(x, p[h + "ln_1.weight"], p[h + "ln_1.bias"]), p, h)
        a = layer_norm(x, p[h + "ln_2.weight"], p[h + "ln_2.bias"])
        a = gelu_new(a @ p[h + "mlp.c_fc.weight"] + p[h + "mlp.c_fc.bias"])
        x = x + a @ p[h + "mlp.c_proj.weight"] + p[h + "mlp.c_proj.bias"]
    x = layer_norm(x, p["ln_f.weight"], p["ln_f.bias"])
    return x @ p["wte.weight"].t()


def greedy(p, prompt):
    """Greedy decoding; also returns the smallest top-1 / top-2 logit gap seen."""
    ids = list(prompt)
    min_gap = float("inf")
    with torch.no_grad():
        for _ in range(N_NEW):
            row = forward(p, torch.tensor([ids]))[0, -1]
            top = torch.topk(row, 2).values
            min_gap = min(min_gap, float(top[0] - top[1]))
            ids.append(int(torch.argmax(row)))
    return ids[len(prompt):], min_gap


def f32(t):
    return t.detach().float().numpy()


def main():
    torch.manual_seed(1234)
    params = make_params()
    ids = torch.randint(0, V, (B, T))
    targets = torch.randint(0, V, (B, T))

    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    logits = forward(leaves, ids)
    loss = torch.nn.functional.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T))
    loss.backward()

    # A prompt whose greedy continuation is not decided by a near tie and does not just
    # repeat one id.
    for attempt in range(200):
        prompt = torch.randint(0, V, (PROMPT_LEN,)).tolist()
        generated, gap = greedy(params, prompt)
        if gap > 1e-3 and len(set(generated)) >= 4:
            break
    else:
        raise SystemExit("no prompt without a near tie")

    state = {}
    for k, v in params.items():
        state["transformer." + k] = f32(v)
    for i in range(L):
        state[f"transformer.h.{i}.attn.bias"] = np.tril(np.ones((P, P), np.uint8)).reshape(1, 1, P, P)
        state[f"transformer.h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    state["lm_head.weight"] = f32(params["wte.weight"])
    os.makedirs(MODEL_DIR, exist_ok=True)
    safetensors_writer.write(os.path.join(MODEL_DIR, "model.safetensors"), state, {"format": "pt"})
    config = {
        "_name_or_path": "gpt2-tiny-random", "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1, "bos_token_id": V - 1, "embd_pdrop": 0.1,
        "eos_token_id": V - 1, "initializer_range": 0.02, "layer_norm_epsilon": EPS, "model_type": "gpt2",
        "n_ctx": P, "n_embd": C, "n_head": H, "n_inner": None, "n_layer": L, "n_positions": P,
        "reorder_and_upcast_attn": False, "resid_pdrop": 0.1, "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True, "summary_activation": None, "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True, "summary_type": "cls_index", "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "torch_dtype": "float32", "transformers_version": "4.30.0", "use_cache": True, "vocab_size": V,
    }
    with open(os.path.join(MODEL_DIR, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")

    ref = {
        "ids": ids.numpy().astype(np.int32), "targets": targets.numpy().astype(np.int32),
        "logits": f32(logits), "loss": np.array([loss.item()], np.float32),
        "prompt": np.array(prompt, np.int32), "generated": np.array(generated, np.int32),
    }
    for k, v in leaves.items():
        ref["grad." + k] = f32(v.grad)
    safetensors_writer.write(REF_PATH, ref)
    print(f"loss {loss.item():.6f}, prompt {prompt} -> {generated} (smallest top-2 gap {gap:.4f}, "
          f"prompt attempt {attempt + 1})")


if __name__ == "__main__":
    main()
