"""PyTorch's side of W4 (GPT-2 on Moby Dick), run by bench/torch_bench.py.

  torch_bench.py gpt2 THREADS CONFIG INIT_DIR [--steps N] [--probe-steps P] [--checkpoint 1] [--bf16 1]

INIT_DIR is what `damo bench gpt2` wrote: config.json + model.safetensors (the initial
weights, HuggingFace names and layouts) and tokens.bin (the corpus as little-endian int32
GPT-2 ids). CONFIG is the W4 config with its "train" object. The model is GPT-2 written
plainly in torch (pre-LN blocks, tanh GELU, causal softmax attention, tied head), trained
with the same recipe as damo's trainer: windows of T + 1 tokens drawn uniformly from the
first 90% of the tokens, AdamW with decay on 2-D tensors only, linear warm-up then cosine to
min_lr, global-norm clipping; validation on the same evenly spaced windows of the last 10%.

W6 (GPT-2 124M) adds --checkpoint 1 (torch.utils.checkpoint around every block, the peer of
damo's --recompute) and --bf16 1 (the step under torch.autocast("cpu", dtype=torch.bfloat16)).
"""
import json
import math
import os
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from safetensors_writer import read as read_safetensors

VALIDATION_FRACTION = 0.1


class GPT2(torch.nn.Module):
    def __init__(self, config, weights):
        super().__init__()
        self.n_layer, self.n_head = config["n_layer"], config["n_head"]
        self.eps = config.get("layer_norm_epsilon", 1e-5)
        # Parameter names may not contain dots: keep HuggingFace's with "." -> "_".
        self.names = [k for k in weights]
        for k in self.names:
            self.register_parameter(k.replace(".", "_"), torch.nn.Parameter(torch.from_numpy(weights[k].copy())))

    def p(self, name):
        return getattr(self, name.replace(".", "_"))

    def attention(self, x, h):
        B, T, C = x.shape
        qkv = torch.addmm(self.p(h + "attn.c_attn.bias"), x.view(B * T, C), self.p(h + "attn.c_attn.weight"))
        q, k, v = qkv.view(B, T, 3 * C).split(C, dim=2)
        d = C // self.n_head
        q, k, v = (t.reshape(B, T, self.n_head, d).transpose(1, 2) for t in (q, k, v))
        s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d))
        s = s.masked_fill(self.causal[:T, :T], float("-inf"))
        o = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B * T, C)
        return torch.addmm(self.p(h + "attn.c_proj.bias"), o, self.p(h + "attn.c_proj.weight")).view(B, T, C)

    def block(self, x, i):
        B, T, C = x.shape
        h = "h.%d." % i
        a = F.layer_norm(x, (C,), self.p(h + "ln_1.weight"), self.p(h + "ln_1.bias"), self.eps)
        x = x + self.attention(a, h)
        a = F.layer_norm(x, (C,), self.p(h + "ln_2.weight"), self.p(h + "ln_2.bias"), self.eps).view(B * T, C)
        a = F.gelu(torch.addmm(self.p(h + "mlp.c_fc.bias"), a, self.p(h + "mlp.c_fc.weight")), approximate="tanh")
        return x + torch.addmm(self.p(h + "mlp.c_proj.bias"), a, self.p(h + "mlp.c_proj.weight")).view(B, T, C)

    def forward(self, ids, targets):
        B, T = ids.shape
        if not hasattr(self, "causal") or self.causal.shape[0] < T:
            self.causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        wte = self.p("wte.weight")
        x = wte[ids] + self.p("wpe.weight")[:T]
        C = x.shape[-1]
        for i in range(self.n_layer):
            if getattr(self, "checkpoint", False) and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(self.block, x, i, use_reentrant=False)
            else:
                x = self.block(x, i)
        x = F.layer_norm(x, (C,), self.p("ln_f.weight"), self.p("ln_f.bias"), self.eps)
        logits = x.view(B * T, C) @ wte.t()
        return F.cross_entropy(logits, targets.reshape(-1))


def lr_at(step, o):
    """damo_schedule_lr's cosine with linear warm-up."""
    warm = o["warmup_steps"]
    if step < warm:
        return o["lr"] * (step + 1) / warm
    T = o["steps"]
    p = 1.0 if T <= warm else min(1.0, max(0.0, (step - warm) / (T - warm)))
    return o["min_lr"] + (o["lr"] - o["min_lr"]) * 0.5 * (1.0 + math.cos(math.pi * p))


def eval_starts(n_tokens, n_train, T, B, windows):
    n = (windows + B - 1) // B * B
    span = n_tokens - n_train - (T + 1)
    return [n_train + (span * i // (n - 1) if n > 1 else 0) for i in range(n)]


def windows(tokens, starts, T):
    w = np.stack([tokens[s:s + T + 1] for s in starts]).astype(np.int64)
    return torch.from_numpy(w[:, :-1].copy()), torch.from_numpy(w[:, 1:].copy())


def validation_loss(model, tokens, starts, B, T):
    with torch.no_grad():
        losses = [model(*windows(tokens, starts[i:i + B], T)).item() for i in range(0, len(starts), B)]
    return sum(losses) / len(losses)


def load(config_path, init_dir, steps):
    """The W4 recipe (CONFIG's "train", steps overridden if given), the model's config,
    the initial weights (HuggingFace names less "transformer."), the tokens and the size
    of the training part."""
    with open(config_path) as f:
        o = json.load(f)["train"]
    if steps:
        o["steps"] = steps
    with open(os.path.join(init_dir, "config.json")) as f:
        config = json.load(f)
    tensors, _ = read_safetensors(os.path.join(init_dir, "model.safetensors"))
    weights = {k.replace("transformer.", ""): v for k, v in tensors.items()}
    tokens = np.fromfile(os.path.join(init_dir, "tokens.bin"), dtype="<i4")
    n_train = len(tokens) - int(len(tokens) * VALIDATION_FRACTION)
    return o, config, weights, tokens, n_train


def optimizer(model, o):
    """AdamW with decay on 2-D tensors only."""
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() != 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": o["weight_decay"]},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"])


def draw_starts(rng, n_train, T, B):
    """One step's B window starts, uniform over the training part."""
    return rng.integers(0, n_train - T, size=B)


def bench_gpt2(threads, config_path, init_dir, steps, probe_steps, train_losses=None, checkpoint=0, bf16=0):
    """train_losses, if a list, receives each step's training loss (for bench/torch_gpt2_ddp.py's check)."""
    torch.set_num_threads(threads)
    o, config, weights, tokens, n_train = load(config_path, init_dir, steps)
    B, T = o["batch_size"], o["seq_len"]
    model = GPT2(config, weights)
    model.checkpoint = bool(checkpoint)
    starts = eval_starts(len(tokens), n_train, T, B, o["eval_windows"])
    first_loss = validation_loss(model, tokens, starts, B, T)

    opt = optimizer(model, o)
    rng = np.random.default_rng(o["seed"])
    n_steps = probe_steps or o["steps"]
    step_seconds = []
    for step in range(n_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, o)
        t0 = time.perf_counter()
        x, y = windows(tokens, draw_starts(rng, n_train, T, B), T)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(bf16)):
            loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o["clip_norm"])
        opt.step()
        step_seconds.append(time.perf_counter() - t0)
        if train_losses is not None:
            train_losses.append(loss.item())
    res = {"threads": threads, "first_loss": first_loss, "steps": n_steps, "tokens_per_step": B * T,
           "step_seconds": [round(s, 5) for s in step_seconds], "last_train_loss": loss.item()}
    if not probe_steps:
        res["val_loss"] = validation_loss(model, tokens, starts, B, T)
    res["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return res
