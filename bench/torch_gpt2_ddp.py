"""PyTorch's DistributedDataParallel peer of W4 (GPT-2 on Moby Dick), for row D2 of issue 20.

  torch_gpt2_ddp.py RANKS CONFIG INIT_DIR [--steps N] [--probe-steps P] [--threads-per-rank K] [--check]

The model, data and recipe of bench/torch_gpt2.py (whose pieces it imports), trained by
RANKS processes (torch.multiprocessing.spawn, gloo, K torch threads each, K = 1 unless
told) under DistributedDataParallel, with damo's data-parallel definition: every rank
draws the global batch of B windows per step exactly as the single-process run does (the
same rng sequence everywhere) and rank r takes windows [lo_r, lo_r + n_r), n_r = B/N +
(r < B%N), lo_r the sum of the earlier shares. A rank's loss is the mean over its own
tokens; DDP averages gradients over the N ranks, so each rank's loss is scaled by n_r*N/B
before backward and the all-reduced gradient is the gradient of the global batch's mean.
Clipping (global norm of the all-reduced gradient) and AdamW then run identically on every
rank. Validation batches are split the same way and their losses weighted by share.

Prints one JSON object with torch_gpt2.py's keys (step_seconds measured on rank 0,
tokens_per_step of the global batch, first_loss / val_loss of the validation windows,
last_train_loss of the global batch) plus "batch", "train_losses" (each step's global-batch
loss), "ranks", "threads_per_rank", "peak_rss_mb_per_rank" (each rank's getrusage peak);
"threads" is ranks * threads_per_rank and "peak_rss_kb" the sum of the ranks' peaks.

--check first trains the same steps with torch_gpt2.bench_gpt2 in this process (1 thread),
then the data-parallel run, and reports both runs' losses step by step with their relative
differences; it exits 1 if one exceeds CHECK_TOLERANCE.
"""
import json
import os
import resource
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "ref"))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from torch_gpt2 import GPT2, bench_gpt2, draw_starts, eval_starts, load, lr_at, optimizer, windows  # noqa: E402

# Relative, per loss. The check's steps are in the warm-up (lr ~1e-6) and Adam's first steps
# hardly depend on the gradient's scale, so errors show small: correct shares measured
# ~1e-7 (one float32 ulp) with N = 2 and 3; unweighted rank means (N = 3, shares 3/3/2)
# 1.5e-6 and 3e-6 at steps 1 and 2.
CHECK_TOLERANCE = 1e-6


def share(B, N, r):
    """Rank r's windows of a global batch of B: [lo, lo + n)."""
    def n_of(q):
        return B // N + (1 if q < B % N else 0)
    return sum(n_of(q) for q in range(r)), n_of(r)


def validation_loss(model, tokens, starts, B, T, lo, n):
    """torch_gpt2.validation_loss with each batch of B windows split as the training batches:
    a batch's loss is the sum over ranks of share * the mean over the share, over B."""
    with torch.no_grad():
        part = [model(*windows(tokens, starts[i + lo:i + lo + n], T)).item() * n for i in range(0, len(starts), B)]
    t = torch.tensor(part, dtype=torch.float64)
    dist.all_reduce(t)
    return (t / B).mean().item()


def worker(rank, ranks, threads, config_path, init_dir, steps, probe_steps, store, out_path):
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=ranks)
    o, config, weights, tokens, n_train = load(config_path, init_dir, steps)
    B, T = o["batch_size"], o["seq_len"]
    lo, n = share(B, ranks, rank)
    model = GPT2(config, weights)
    starts = eval_starts(len(tokens), n_train, T, B, o["eval_windows"])
    first_loss = validation_loss(model, tokens, starts, B, T, lo, n)

    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = optimizer(model, o)
    rng = np.random.default_rng(o["seed"])
    scale = n * ranks / B  # DDP averages over ranks: (1/N) sum_r (n_r N / B) grad_r = grad of the global mean
    n_steps = probe_steps or o["steps"]
    step_seconds, weighted = [], []
    for step in range(n_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, o)
        t0 = time.perf_counter()
        x, y = windows(tokens, draw_starts(rng, n_train, T, B)[lo:lo + n], T)
        loss = ddp(x, y)
        opt.zero_grad(set_to_none=True)
        (loss * scale).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o["clip_norm"])
        opt.step()
        step_seconds.append(time.perf_counter() - t0)
        weighted.append(loss.item() * n)
    losses = torch.tensor(weighted, dtype=torch.float64)
    dist.all_reduce(losses)
    losses = (losses / B).tolist()
    val_loss = None if probe_steps else validation_loss(model, tokens, starts, B, T, lo, n)
    rss = [None] * ranks
    dist.all_gather_object(rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    if rank == 0:
        res = {"threads": ranks * threads, "first_loss": first_loss, "steps": n_steps, "tokens_per_step": B * T,
               "batch": B, "step_seconds": [round(s, 5) for s in step_seconds], "last_train_loss": losses[-1],
               "train_losses": losses}
        if val_loss is not None:
            res["val_loss"] = val_loss
        res.update({"peak_rss_kb": sum(rss), "ranks": ranks, "threads_per_rank": threads,
                    "peak_rss_mb_per_rank": [round(kb / 1024.0, 1) for kb in rss]})
        with open(out_path + ".part", "w") as f:
            json.dump(res, f)
        os.replace(out_path + ".part", out_path)  # whole, before any teardown (gloo's can hang)
    dist.barrier()


def bench_gpt2_ddp(ranks, threads, config_path, init_dir, steps, probe_steps):
    # Children start fresh interpreters: keep OpenMP/BLAS pools at the rank's thread count.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        store, out_path = os.path.join(tmp, "store"), os.path.join(tmp, "result.json")
        ctx = mp.spawn(worker, args=(ranks, threads, config_path, init_dir, steps, probe_steps, store, out_path),
                       nprocs=ranks, join=False)
        # Wait for the result, not for the ranks' exit: a gloo teardown that never returns (seen
        # on this host) must not hang the bench; ranks still running after it are stopped.
        while not os.path.exists(out_path):
            if ctx.join(timeout=1):  # every rank ended (raises if one failed) without a result
                break
        deadline = time.time() + 30
        while time.time() < deadline and not ctx.join(timeout=1):
            pass
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
        with open(out_path) as f:
            return json.load(f)


def option(args, name, default):
    return int(args[args.index(name) + 1]) if name in args else default


def main(argv):
    if len(argv) < 4:
        raise SystemExit(__doc__)
    ranks, config_path, init_dir, rest = int(argv[1]), argv[2], argv[3], argv[4:]
    steps, probe_steps = option(rest, "--steps", 0), option(rest, "--probe-steps", 0)
    threads = option(rest, "--threads-per-rank", 1)
    if ranks < 1:
        raise SystemExit("torch_gpt2_ddp: RANKS must be at least 1")
    with open(config_path) as f:
        if ranks > json.load(f)["train"]["batch_size"]:
            raise SystemExit("torch_gpt2_ddp: more ranks than windows per step")
    if "--check" in rest:
        single = []
        s = bench_gpt2(1, config_path, init_dir, steps, probe_steps, train_losses=single)
        d = bench_gpt2_ddp(ranks, threads, config_path, init_dir, steps, probe_steps)
        pairs = [("first_loss", s["first_loss"], d["first_loss"])]
        pairs += [("step %d" % i, a, b) for i, (a, b) in enumerate(zip(single, d["train_losses"]))]
        if "val_loss" in s:
            pairs.append(("val_loss", s["val_loss"], d["val_loss"]))
        rows = [{"what": w, "single": a, "ddp": b, "rel": abs(a - b) / abs(a)} for w, a, b in pairs]
        worst = max(r["rel"] for r in rows)
        print(json.dumps({"check": rows, "ranks": ranks, "max_rel": worst, "tolerance": CHECK_TOLERANCE,
                          "torch": torch.__version__}))
        return 0 if worst <= CHECK_TOLERANCE else 1
    res = bench_gpt2_ddp(ranks, threads, config_path, init_dir, steps, probe_steps)
    res["torch"] = torch.__version__
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
