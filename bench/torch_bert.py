"""PyTorch's side of W5 (a BERT classifier fine-tuned on SpamAssassin), run by torch_bench.py.

  torch_bench.py bert THREADS CONFIG INIT_DIR [--epochs E] [--probe-steps P] [--bf16 1]

INIT_DIR is what `damo bench bert` wrote: config.json + model.safetensors (the initial
weights, HuggingFace names and layouts) and the WordPiece-encoded splits as raw int32 files
(train_/test_ ids, types, mask (N, T) and labels (N)). The model is BERT written plainly in
torch (post-LN layers, erf GELU, padded keys masked out, pooled [CLS], hidden and
attention-probability dropout as configured), trained on the very same batches in
the same order with the same recipe: AdamW with decay on 2-D tensors only, linear warm-up
then cosine to min_lr, global-norm clipping. --bf16 1 runs each step's forward and loss
under torch.autocast("cpu", dtype=torch.bfloat16) (W5-bf16).
"""
import json
import math
import os
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

from safetensors_writer import read as read_safetensors


class Bert(torch.nn.Module):
    def __init__(self, config, weights):
        super().__init__()
        self.L, self.NH = config["num_hidden_layers"], config["num_attention_heads"]
        self.eps = config["layer_norm_eps"]
        self.drop = config.get("hidden_dropout_prob", 0.1)
        self.attn_drop = config.get("attention_probs_dropout_prob", 0.1)
        for k, v in weights.items():
            self.register_parameter(k.replace(".", "__"), torch.nn.Parameter(torch.from_numpy(v.copy())))

    def p(self, name):
        return getattr(self, name.replace(".", "__"))

    def linear(self, x, name):
        return F.linear(x, self.p(name + ".weight"), self.p(name + ".bias"))

    def ln(self, x, name):
        return F.layer_norm(x, (x.shape[-1],), self.p(name + ".weight"), self.p(name + ".bias"), self.eps)

    def forward(self, ids, types, mask):
        B, T = ids.shape
        x = (self.p("embeddings.word_embeddings.weight")[ids] + self.p("embeddings.position_embeddings.weight")[:T]
             + self.p("embeddings.token_type_embeddings.weight")[types])
        x = F.dropout(self.ln(x, "embeddings.LayerNorm"), self.drop, self.training)
        H = x.shape[-1]
        d = H // self.NH
        masked = (mask == 0)[:, None, None, :]
        for i in range(self.L):
            e = "encoder.layer.%d." % i
            split = lambda t: t.view(B, T, self.NH, d).transpose(1, 2)  # noqa: E731
            q, k, v = (split(self.linear(x, e + "attention.self." + n)) for n in ("query", "key", "value"))
            s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d))
            p = F.dropout(torch.softmax(s.masked_fill(masked, float("-inf")), dim=-1), self.attn_drop, self.training)
            a = (p @ v).transpose(1, 2).reshape(B, T, H)
            a = F.dropout(self.linear(a, e + "attention.output.dense"), self.drop, self.training)
            x = self.ln(x + a, e + "attention.output.LayerNorm")
            h = F.gelu(self.linear(x, e + "intermediate.dense"))
            h = F.dropout(self.linear(h, e + "output.dense"), self.drop, self.training)
            x = self.ln(x + h, e + "output.LayerNorm")
        pooled = F.dropout(torch.tanh(self.linear(x[:, 0], "pooler.dense")), self.drop, self.training)
        return self.linear(pooled, "classifier")


def lr_at(step, o, total):
    warm = o.get("warmup_steps", 0)
    if step < warm:
        return o["lr"] * (step + 1) / warm
    p = 1.0 if total <= warm else min(1.0, max(0.0, (step - warm) / (total - warm)))
    lo = o.get("min_lr", 0.0)
    return lo + (o["lr"] - lo) * 0.5 * (1.0 + math.cos(math.pi * p))


def load_split(init_dir, name, T):
    r = lambda f: np.fromfile(os.path.join(init_dir, "%s_%s.i32" % (name, f)), dtype="<i4")  # noqa: E731
    labels = torch.from_numpy(r("labels").astype(np.int64))
    n = len(labels)
    ids, types, mask = (torch.from_numpy(r(f).astype(np.int64).reshape(n, T)) for f in ("ids", "types", "mask"))
    return ids, types, mask, labels


def f1_score(pred, labels):
    tp = int(((pred == 1) & (labels == 1)).sum())
    fp = int(((pred == 1) & (labels == 0)).sum())
    fn = int(((pred == 0) & (labels == 1)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def bench_bert(threads, config_path, init_dir, epochs, probe_steps, bf16=0):
    torch.set_num_threads(threads)
    with open(config_path) as f:
        o = json.load(f)["finetune"]
    with open(os.path.join(init_dir, "config.json")) as f:
        config = json.load(f)
    tensors, _ = read_safetensors(os.path.join(init_dir, "model.safetensors"))
    weights = {(k[5:] if k.startswith("bert.") else k): v for k, v in tensors.items() if not k.startswith("cls.")}
    B, T = o["batch_size"], o["seq_len"]
    ids, types, mask, labels = load_split(init_dir, "train", T)
    model = Bert(config, weights)
    model.eval()
    with torch.no_grad():
        first_loss = F.cross_entropy(model(ids[:B], types[:B], mask[:B]), labels[:B]).item()
    model.train()
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.get("weight_decay", 0.01)},
                             {"params": no_decay, "weight_decay": 0.0}], lr=o["lr"], betas=(0.9, 0.999), eps=1e-6)
    per_epoch = len(labels) // B
    total = epochs * per_epoch
    n_steps = probe_steps or total
    step_seconds = []
    for step in range(n_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, o, total)
        first = (step % per_epoch) * B
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(bf16)):
            loss = F.cross_entropy(model(ids[first:first + B], types[first:first + B], mask[first:first + B]),
                                   labels[first:first + B])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step_seconds.append(time.perf_counter() - t0)
    res = {"threads": threads, "first_loss": first_loss, "steps": n_steps, "batch": B, "seq_len": T, "bf16": bf16,
           "train_examples": len(labels), "step_seconds": [round(s, 5) for s in step_seconds]}
    if not probe_steps:
        model.eval()
        tids, ttypes, tmask, tlabels = load_split(init_dir, "test", T)
        with torch.no_grad():
            pred = torch.cat([model(tids[i:i + B], ttypes[i:i + B], tmask[i:i + B]).argmax(1)
                              for i in range(0, len(tlabels), B)])
        res.update({"epochs": epochs, "test_accuracy": (pred == tlabels).float().mean().item(),
                    "test_f1": f1_score(pred, tlabels), "test_examples": len(tlabels)})
    res["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return res
