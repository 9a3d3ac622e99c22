"""PyTorch's side of `make bench` (run by Debian's /usr/bin/python3 with python3-torch).

Same workloads, shapes, data and thread count as `damo bench`; prints one JSON object.

  torch_bench.py gemm THREADS M N K [M N K ...]
  torch_bench.py w1 THREADS INIT_DIR [--repeats R] [--accuracy-epochs E] [--probe-steps S]

w1 loads damo's initial weights from INIT_DIR/model.safetensors (dense kernels are
(in, out); torch.nn.Linear keeps (out, in)), reports the first batch's loss (the bench
refuses to compare speed unless it matches damo's), then whole-epoch training time and
the test accuracy after E epochs with the same schedule (Adam 1e-3, cosine to 0 per step).
"""
import gzip
import json
import math
import os
import resource
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "ref"))
from safetensors_writer import read as read_safetensors  # noqa: E402


def data_dir():
    for root in (os.environ.get("DAMO_DATA_DIR"), "/usr/share/datasets"):
        if root and os.path.exists(os.path.join(root, "fashion-mnist", "train-labels-idx1-ubyte.gz")):
            return os.path.join(root, "fashion-mnist")
    raise SystemExit("fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")


def load_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split):
    d = data_dir()
    prefix = "train" if split == "train" else "t10k"
    x = load_idx(os.path.join(d, prefix + "-images-idx3-ubyte.gz"))
    y = load_idx(os.path.join(d, prefix + "-labels-idx1-ubyte.gz"))
    # Keep uint8 like damo does; each batch is scaled by /255 inside the model.
    return torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))


def peak_rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def bench_gemm(threads, sizes):
    torch.set_num_threads(threads)
    out = []
    for m, n, k in sizes:
        g = torch.Generator().manual_seed(1)
        a = torch.rand(m, k, generator=g) - 0.5
        b = torch.rand(k, n, generator=g) - 0.5
        c = torch.empty(m, n)
        torch.mm(a, b, out=c)
        flop = 2.0 * m * n * k
        reps = int(max(3, min(1e6, 0.2e9 / flop)))
        samples = []
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b, out=c)
            samples.append(flop * reps / (time.perf_counter() - t0) / 1e9)
        samples.sort()
        out.append({"m": m, "n": n, "k": k, "gflops": round(samples[3], 2), "min": round(samples[0], 2),
                    "max": round(samples[-1], 2)})
    return {"threads": threads, "gemm": out}


class W1(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.d1 = torch.nn.Linear(784, 256)
        self.d2 = torch.nn.Linear(256, 128)
        self.d3 = torch.nn.Linear(128, 10)

    def forward(self, x):
        x = x.reshape(x.shape[0], -1).float() * (1.0 / 255.0)
        return self.d3(torch.relu(self.d2(torch.relu(self.d1(x)))))


def w1_from(init_dir):
    weights, _ = read_safetensors(os.path.join(init_dir, "model.safetensors"))
    model = W1()
    with torch.no_grad():
        for i, layer in enumerate((model.d1, model.d2, model.d3)):
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(weights["dense_%d.kernel" % (i + 1)].T)))
            layer.bias.copy_(torch.from_numpy(weights["dense_%d.bias" % (i + 1)]))
    return model


def train(model, x, y, epochs, batch, seed, max_steps=None):
    """Adam 1e-3 with the per-step cosine decay damo uses; returns seconds."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps_per_epoch = (x.shape[0] + batch - 1) // batch
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    loss_fn = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    steps = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        for s in range(steps_per_epoch):
            idx = perm[s * batch:(s + 1) * batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
            if max_steps and steps >= max_steps:
                return time.perf_counter() - t0
    return time.perf_counter() - t0


def bench_w1(threads, init_dir, repeats, accuracy_epochs, probe_steps):
    torch.set_num_threads(threads)
    x, y = load_split("train")
    model = w1_from(init_dir)
    with torch.no_grad():
        first_loss = torch.nn.functional.cross_entropy(model(x[:64]), y[:64]).item()
    result = {"threads": threads, "first_loss": first_loss}
    train(model, x[:64 * 20], y[:64 * 20], 1, 64, 0)  # warm-up
    if probe_steps:  # a short run to rank configurations
        t = train(model, x, y, 1, 64, 1, max_steps=probe_steps)
        result["probe_steps_per_s"] = probe_steps / t
        result["peak_rss_kb"] = peak_rss_kb()
        return result
    result["epoch_seconds"] = [round(train(model, x, y, 1, 64, r + 1), 4) for r in range(repeats)]
    result["train_examples"] = int(x.shape[0])
    if accuracy_epochs:
        xt, yt = load_split("test")
        fresh = w1_from(init_dir)
        result["accuracy_seconds"] = round(train(fresh, x, y, accuracy_epochs, 64, 42), 2)
        with torch.no_grad():
            logits = fresh(xt)
            result["test_loss"] = torch.nn.functional.cross_entropy(logits, yt).item()
            result["test_accuracy"] = (logits.argmax(1) == yt).float().mean().item()
        result["accuracy_epochs"] = accuracy_epochs
    result["peak_rss_kb"] = peak_rss_kb()
    return result


def option(args, name, default):
    return int(args[args.index(name) + 1]) if name in args else default


def main(argv):
    what, threads = argv[1], int(argv[2])
    if what == "gemm":
        nums = [int(v) for v in argv[3:]]
        res = bench_gemm(threads, [tuple(nums[i:i + 3]) for i in range(0, len(nums), 3)])
    elif what == "w1":
        rest = argv[4:]
        res = bench_w1(threads, argv[3], option(rest, "--repeats", 3), option(rest, "--accuracy-epochs", 10),
                       option(rest, "--probe-steps", 0))
    else:
        raise SystemExit(__doc__)
    res["torch"] = torch.__version__
    print(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv)
