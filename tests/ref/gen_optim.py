#!/usr/bin/python3
"""Writes tests/fixtures/optim.safetensors: PyTorch 1.13 references for damo's optimizers.

Run from anywhere with Debian's interpreter (python3-torch, python3-numpy):
    /usr/bin/python3 tests/ref/gen_optim.py

One flat vector of 50 float32 parameters is split into two torch Parameters, shapes (5, 6)
and (20,), so the optimizers see more than one tensor (the global clipping norm spans both).
Each case takes 5 steps with fixed gradients that are assigned to p.grad, not computed.
The file holds
    init                  (50,)     the starting parameters (flattened in order p1, p2)
    grads                 (5, 50)   the gradient of each step
    grads_clip            (5, 50)   large gradients for the clipping case
    <case>.params         (5, 50)   the parameters after each step
    <case>.lr             (5,)      the learning rate each step used (scheduled cases)
    <case>.norm           (5,)      clip_grad_norm_'s pre-clip total norm (clipping case)
tests/test_optim.c carries the matching case table (the damo config of each case name).
Seeded: the output is the same bytes every run.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_writer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_PATH = os.path.join(ROOT, "tests", "fixtures", "optim.safetensors")

STEPS = 5
SHAPES = [(5, 6), (20,)]
N = sum(int(np.prod(s)) for s in SHAPES)

rng = np.random.default_rng(20240611)
INIT = rng.standard_normal(N).astype(np.float32)
GRADS = rng.standard_normal((STEPS, N)).astype(np.float32)
# Norm ~ 7 * 8 per step: far above the clipping threshold 0.5.
GRADS_CLIP = (GRADS * np.float32(8.0)).astype(np.float32)


def split(flat):
    """Flat (N,) float32 numpy -> list of float32 tensors of SHAPES."""
    out, at = [], 0
    for s in SHAPES:
        k = int(np.prod(s))
        out.append(torch.from_numpy(flat[at : at + k].copy()).reshape(s))
        at += k
    return out


def flat(params):
    return np.concatenate([p.detach().reshape(-1).numpy() for p in params]).astype(np.float32)


def run(make_opt, grads, make_sched=None, clip=None):
    """Runs STEPS updates; returns (params after each step, lr of each step, pre-clip norms)."""
    params = [torch.nn.Parameter(t) for t in split(INIT)]
    opt = make_opt(params)
    sched = make_sched(opt) if make_sched else None
    after, lrs, norms = [], [], []
    for step in range(STEPS):
        for p, g in zip(params, split(grads[step])):
            p.grad = g.clone()
        if clip is not None:
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, max_norm=clip)))
        lrs.append(opt.param_groups[0]["lr"])  # what this step uses
        opt.step()
        if sched:
            sched.step()  # after the update: step t runs with lr(t)
        after.append(flat(params))
    return np.stack(after), np.array(lrs, dtype=np.float32), np.array(norms, dtype=np.float32)


SGD = torch.optim.SGD
ADAM = torch.optim.Adam
ADAMW = torch.optim.AdamW

CASES = {
    # name: (optimizer factory, gradients, scheduler factory, clip max_norm)
    "sgd": (lambda p: SGD(p, lr=0.1, foreach=False), GRADS, None, None),
    "sgd_momentum": (lambda p: SGD(p, lr=0.1, momentum=0.9, foreach=False), GRADS, None, None),
    "sgd_nesterov_wd": (
        lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, foreach=False),
        GRADS,
        None,
        None,
    ),
    "adam": (lambda p: ADAM(p, lr=1e-2, foreach=False), GRADS, None, None),
    "adam_wd": (lambda p: ADAM(p, lr=1e-2, weight_decay=0.1, foreach=False), GRADS, None, None),
    "adamw": (lambda p: ADAMW(p, lr=1e-2, weight_decay=0.1, foreach=False), GRADS, None, None),
    "adam_clip": (lambda p: ADAM(p, lr=1e-2, foreach=False), GRADS_CLIP, None, 0.5),
    "sgd_steplr": (
        lambda p: SGD(p, lr=0.1, foreach=False),
        GRADS,
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
        None,
    ),
    "sgd_cosine": (
        lambda p: SGD(p, lr=0.1, foreach=False),
        GRADS,
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=0.001),
        None,
    ),
}


def main():
    torch.manual_seed(0)
    tensors = {"init": INIT, "grads": GRADS, "grads_clip": GRADS_CLIP}
    for name, (make_opt, grads, make_sched, clip) in CASES.items():
        after, lrs, norms = run(make_opt, grads, make_sched, clip)
        tensors[name + ".params"] = after
        if make_sched:
            tensors[name + ".lr"] = lrs
        if clip is not None:
            tensors[name + ".norm"] = norms
    meta = {"generator": "tests/ref/gen_optim.py", "torch": torch.__version__, "steps": str(STEPS)}
    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    size = safetensors_writer.write(OUT_PATH, tensors, meta)
    print(f"wrote {OUT_PATH} ({size} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
