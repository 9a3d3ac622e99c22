#!/usr/bin/python3
"""Writes the BERT reference fixtures for tests/test_bert.c:

  tests/fixtures/bert_tiny/config.json         a HuggingFace BERT config (extra fields too)
  tests/fixtures/bert_tiny/model.safetensors   a small random BertForPreTraining-style state
                                               dict: "bert." prefix, pooler, classifier,
                                               cls.predictions.* with the tied decoder weight
                                               and its copy of the bias
  tests/fixtures/bert_tiny_ref.safetensors     input_ids, token_type_ids, attention_mask
                                               (B, T) I32 with padding, labels (B) I32;
                                               logits (B, L); loss (1,); grad.<name> for
                                               every encoder, pooler and classifier tensor;
                                               mlm_positions, mlm_labels (B, 4) I32 (-100:
                                               an unused slot), mlm_loss, grad_mlm.<name>;
                                               pooled_cls, pooled_mean (B, H): the [CLS]
                                               pooler output and the masked mean of the
                                               last hidden states; attention (L, B, heads, T, T)
                                               the softmax probabilities of every layer

No transformers library: BERT is written out below with HuggingFace's parameter names and
layouts (nn.Linear weights (out, in): y = x W^T + b), post-LN layers, erf GELU, attention
with padded keys masked out, the pooled [CLS] (tanh) and a linear classifier; dropout off.
Parameters are drawn in float64, rounded to float32 (what is stored), wider than BERT's
init (random LayerNorms and biases too) so every tensor matters; the reference is computed
in float64 from exactly those values. Seeded. Run: /usr/bin/python3 tests/ref/gen_bert.py
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
MODEL_DIR = os.path.join(FIXTURES, "bert_tiny")
REF_PATH = os.path.join(FIXTURES, "bert_tiny_ref.safetensors")
D = torch.float64

V, P, TV, H, L, NH, I, LABELS = 99, 24, 2, 32, 2, 4, 64, 3
B, T = 3, 12
EPS = 1e-12
LENGTHS = [12, 7, 4]  # real tokens per row; the rest is padding


def randn(*shape, scale=1.0, shift=0.0):
    return (torch.randn(*shape, dtype=D) * scale + shift).float().double()


def make_params():
    p = {"embeddings.word_embeddings.weight": randn(V, H, scale=0.3),
         "embeddings.position_embeddings.weight": randn(P, H, scale=0.1),
         "embeddings.token_type_embeddings.weight": randn(TV, H, scale=0.1),
         "embeddings.LayerNorm.weight": randn(H, scale=0.2, shift=1.0),
         "embeddings.LayerNorm.bias": randn(H, scale=0.1)}
    for i in range(L):
        e = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):
            p[e + name + ".weight"] = randn(H, H, scale=0.2)
            p[e + name + ".bias"] = randn(H, scale=0.1)
        p[e + "attention.output.LayerNorm.weight"] = randn(H, scale=0.2, shift=1.0)
        p[e + "attention.output.LayerNorm.bias"] = randn(H, scale=0.1)
        p[e + "intermediate.dense.weight"] = randn(I, H, scale=0.2)
        p[e + "intermediate.dense.bias"] = randn(I, scale=0.1)
        p[e + "output.dense.weight"] = randn(H, I, scale=0.15)
        p[e + "output.dense.bias"] = randn(H, scale=0.1)
        p[e + "output.LayerNorm.weight"] = randn(H, scale=0.2, shift=1.0)
        p[e + "output.LayerNorm.bias"] = randn(H, scale=0.1)
    p["pooler.dense.weight"] = randn(H, H, scale=0.2)
    p["pooler.dense.bias"] = randn(H, scale=0.1)
    p["classifier.weight"] = randn(LABELS, H, scale=0.3)
    p["classifier.bias"] = randn(LABELS, scale=0.1)
    return p


def mlm_head_params():
    """Stored in the checkpoint (the loader must take them) but not part of this loss."""
    return {"cls.predictions.transform.dense.weight": randn(H, H, scale=0.2),
            "cls.predictions.transform.dense.bias": randn(H, scale=0.1),
            "cls.predictions.transform.LayerNorm.weight": randn(H, scale=0.2, shift=1.0),
            "cls.predictions.transform.LayerNorm.bias": randn(H, scale=0.1),
            "cls.predictions.bias": randn(V, scale=0.1)}


def layer_norm(x, w, b):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, EPS)


def linear(x, p, name):
    return x @ p[name + ".weight"].t() + p[name + ".bias"]


def encoder(p, ids, types, mask, probs=None):
    Bx, Tx = ids.shape
    x = (p["embeddings.word_embeddings.weight"][ids] + p["embeddings.position_embeddings.weight"][torch.arange(Tx)]
         + p["embeddings.token_type_embeddings.weight"][types])
    x = layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"])
    d = H // NH
    keep = mask[:, None, None, :].bool()  # (B, 1, 1, Tk)
    for i in range(L):
        e = f"encoder.layer.{i}."
        split = lambda t: t.view(Bx, Tx, NH, d).transpose(1, 2)  # noqa: E731
        q = split(linear(x, p, e + "attention.self.query"))
        k = split(linear(x, p, e + "attention.self.key"))
        v = split(linear(x, p, e + "attention.self.value"))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        s = s.masked_fill(~keep, float("-inf"))
        pr = torch.softmax(s, dim=-1)
        if probs is not None:
            probs.append(pr)
        a = (pr @ v).transpose(1, 2).reshape(Bx, Tx, H)
        x = layer_norm(x + linear(a, p, e + "attention.output.dense"), p[e + "attention.output.LayerNorm.weight"],
                       p[e + "attention.output.LayerNorm.bias"])
        h = torch.nn.functional.gelu(linear(x, p, e + "intermediate.dense"))
        x = layer_norm(x + linear(h, p, e + "output.dense"), p[e + "output.LayerNorm.weight"],
                       p[e + "output.LayerNorm.bias"])
    return x


def forward(p, ids, types, mask):
    pooled = torch.tanh(linear(encoder(p, ids, types, mask)[:, 0], p, "pooler.dense"))
    return linear(pooled, p, "classifier")


def mlm_loss(p, ids, types, mask, positions, labels):
    """BertForMaskedLM's loss over the predicted slots: the hidden states at the positions,
    transform (dense, GELU, LayerNorm), logits against the word embeddings plus the bias;
    slots labelled -100 are left out."""
    x = encoder(p, ids, types, mask)
    picked = x[torch.arange(x.shape[0])[:, None], positions.clamp(min=0)]  # (B, M, H)
    t = torch.nn.functional.gelu(linear(picked, p, "cls.predictions.transform.dense"))
    t = layer_norm(t, p["cls.predictions.transform.LayerNorm.weight"], p["cls.predictions.transform.LayerNorm.bias"])
    logits = t @ p["embeddings.word_embeddings.weight"].t() + p["cls.predictions.bias"]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100)


def f32(t):
    return t.detach().float().numpy()


def main():
    torch.manual_seed(4321)
    params = make_params()
    head = mlm_head_params()
    ids = torch.randint(1, V, (B, T))
    types = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(LENGTHS):
        mask[b, :n] = 1
        ids[b, n:] = 0                     # [PAD]
        types[b, n // 2:n] = 1             # a sentence pair: the second half is segment B
    labels = torch.tensor([2, 0, 1])

    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    logits = forward(leaves, ids, types, mask)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()

    state = {}
    for k, v in params.items():
        state[("" if k.startswith("classifier.") else "bert.") + k] = f32(v)
    for k, v in head.items():
        state[k] = f32(v)
    state["cls.predictions.decoder.weight"] = f32(params["embeddings.word_embeddings.weight"])
    state["cls.predictions.decoder.bias"] = f32(head["cls.predictions.bias"])
    os.makedirs(MODEL_DIR, exist_ok=True)
    safetensors_writer.write(os.path.join(MODEL_DIR, "model.safetensors"), state, {"format": "pt"})
    config = {
        "_name_or_path": "bert-tiny-random", "architectures": ["BertForPreTraining"],
        "attention_probs_dropout_prob": 0.0, "classifier_dropout": None, "gradient_checkpointing": False,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "hidden_size": H,
        "id2label": {str(i): "LABEL_%d" % i for i in range(LABELS)},
        "label2id": {"LABEL_%d" % i: i for i in range(LABELS)}, "initializer_range": 0.02,
        "intermediate_size": I, "layer_norm_eps": EPS, "max_position_embeddings": P, "model_type": "bert",
        "num_attention_heads": NH, "num_hidden_layers": L, "pad_token_id": 0,
        "position_embedding_type": "absolute", "torch_dtype": "float32", "transformers_version": "4.30.0",
        "type_vocab_size": TV, "use_cache": True, "vocab_size": V,
    }
    with open(os.path.join(MODEL_DIR, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")

    ref = {"input_ids": ids.numpy().astype(np.int32), "token_type_ids": types.numpy().astype(np.int32),
           "attention_mask": mask.numpy().astype(np.int32), "labels": labels.numpy().astype(np.int32),
           "logits": f32(logits), "loss": np.array([loss.item()], np.float32)}
    for k, v in leaves.items():
        ref["grad." + k] = f32(v.grad)
    # sentence embeddings (damo_bert_embed): BertModel's pooler_output, and the last hidden
    # states averaged over the real positions (sentence-transformers' mean pooling)
    with torch.no_grad():
        probs = []
        hidden = encoder(params, ids, types, mask, probs)
        ref["attention"] = f32(torch.stack(probs))  # (layers, B, heads, T, T): each row a distribution
        ref["pooled_cls"] = f32(torch.tanh(linear(hidden[:, 0], params, "pooler.dense")))
        m = mask[:, :, None].to(hidden.dtype)
        ref["pooled_mean"] = f32((hidden * m).sum(1) / m.sum(1))

    # The masked-LM loss on the same inputs: 4 slots per row, unused ones -100 (row 2 has 2).
    positions = torch.tensor([[1, 4, 9, 11], [2, 3, 6, 0], [1, 2, 0, 0]])
    mlm_labels = torch.randint(0, V, (B, 4))
    mlm_labels[2, 2:] = -100
    all_leaves = {k: v.clone().requires_grad_(True) for k, v in {**params, **head}.items()}
    loss_mlm = mlm_loss(all_leaves, ids, types, mask, positions, mlm_labels)
    loss_mlm.backward()
    ref["mlm_positions"] = positions.numpy().astype(np.int32)
    ref["mlm_labels"] = mlm_labels.numpy().astype(np.int32)
    ref["mlm_loss"] = np.array([loss_mlm.item()], np.float32)
    for k, v in all_leaves.items():
        if v.grad is not None:
            ref["grad_mlm." + k] = f32(v.grad)
    safetensors_writer.write(REF_PATH, ref)
    print(f"loss {loss.item():.6f}, logits {f32(logits).round(4).tolist()}, masked-LM loss {loss_mlm.item():.6f}")


if __name__ == "__main__":
    main()
