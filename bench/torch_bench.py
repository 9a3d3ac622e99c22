"""PyTorch's side of `make bench` (run by Debian's /usr/bin/python3 with python3-torch).

Same workloads, shapes, data and thread count as `damo bench`; prints one JSON object.

  torch_bench.py gemm THREADS M N K [M N K ...] [--bf16]
  torch_bench.py quant THREADS MODEL_DIR [--calibration N] [--repeats R]   (bench/torch_quant.py)
  torch_bench.py fit THREADS INIT_DIR [--repeats R] [--accuracy-epochs E] [--probe-steps S]
  torch_bench.py gpt2 THREADS CONFIG INIT_DIR [--steps N] [--probe-steps S]   (W4: torch_gpt2.py)
  torch_bench.py bert THREADS CONFIG INIT_DIR [--epochs E] [--probe-steps S]  (W5: torch_bert.py)

fit rebuilds the model of INIT_DIR/config.json (written by `damo bench fit`) in torch with
damo's initial weights from INIT_DIR/model.safetensors (dense kernels are (in, out) where
torch.nn.Linear keeps (out, in); LSTM kernels are (F, 4U) / (U, 4U) with one bias, gate
order i, f, c, o as torch's), reports the first batch's loss (the bench refuses to compare
speed unless it matches damo's), then whole-epoch training times and the test accuracy
after E epochs with the same optimizer, schedule and batch size.
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


def bench_gemm(threads, sizes, bf16=False):
    """bf16: bfloat16 operands and result (G2); 3 samples, as a CPU without a bf16 unit takes
    seconds per product."""
    torch.set_num_threads(threads)
    out = []
    dtype = torch.bfloat16 if bf16 else torch.float32
    for m, n, k in sizes:
        g = torch.Generator().manual_seed(1)
        a = (torch.rand(m, k, generator=g) - 0.5).to(dtype)
        b = (torch.rand(k, n, generator=g) - 0.5).to(dtype)
        c = torch.empty(m, n, dtype=dtype)
        flop = 2.0 * m * n * k
        # Warm-up of at least half a second, samples of ~0.2 s: as damo bench gemm does.
        warm_reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.5 or warm_reps == 0:
            torch.mm(a, b, out=c)
            warm_reps += 1
        reps = int(max(1 if bf16 else 3, min(1e6, 0.2 * warm_reps / (time.perf_counter() - t0))))
        samples = []
        for _ in range(3 if bf16 else 7):
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b, out=c)
            samples.append(flop * reps / (time.perf_counter() - t0) / 1e9)
        samples.sort()
        out.append({"m": m, "n": n, "k": k, "gflops": round(samples[len(samples) // 2], 2), "min": round(samples[0], 2),
                    "max": round(samples[-1], 2)})
    return {"threads": threads, "gemm": out}


class Rescaling(torch.nn.Module):
    def __init__(self, scale, offset):
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, x):
        return x.float() * self.scale + self.offset


class LastState(torch.nn.Module):
    """torch.nn.LSTM returning what a Keras LSTM returns: the last h, or every h."""

    def __init__(self, features, units, return_sequences):
        super().__init__()
        self.lstm = torch.nn.LSTM(features, units, batch_first=True)
        self.return_sequences = return_sequences

    def forward(self, x):
        y, (h, _) = self.lstm(x)
        return y if self.return_sequences else h[-1]


ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}


class ToImage(torch.nn.Module):
    """damo's Reshape to (H, W, C), then NHWC -> NCHW for torch's convolutions."""

    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape).permute(0, 3, 1, 2)


class FlattenNHWC(torch.nn.Module):
    """Flatten in damo's channels-last order, so the next Dense kernel lines up."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1)


def pair(v):
    return tuple(v) if isinstance(v, list) else (v, v)


def model_from_config(config, weights):
    """The same architecture as damo's config.json, with damo's initial weights."""
    shape = list(config["input_shape"])
    mods = []
    image = False  # torch side runs NCHW between a reshape to (H, W, C) and the flatten
    for layer in config["layers"]:
        kind, name = layer["type"], layer.get("name")
        if kind == "rescaling":
            mods.append(Rescaling(layer["scale"], layer.get("offset", 0.0)))
        elif kind == "reshape":
            shape = list(layer["target_shape"])
            image = len(shape) == 3
            mods.append(ToImage(shape) if image else torch.nn.Unflatten(1, shape))
        elif kind == "conv2d":
            k, s = pair(layer["kernel_size"]), pair(layer.get("strides", 1))
            if layer.get("padding") == "same" and (s != (1, 1) or k[0] % 2 == 0 or k[1] % 2 == 0):
                raise SystemExit("torch_bench: only odd kernels with stride 1 map to symmetric 'same' padding")
            pad = (k[0] // 2, k[1] // 2) if layer.get("padding") == "same" else (0, 0)
            conv = torch.nn.Conv2d(shape[-1], layer["filters"], k, stride=s, padding=pad)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(weights[name + ".kernel"].transpose(3, 2, 0, 1))))
                conv.bias.copy_(torch.from_numpy(weights[name + ".bias"]))
            mods.append(conv)
            act = layer.get("activation", "linear")
            if act in ACTIVATIONS:
                mods.append(ACTIVATIONS[act]())
            oh = (shape[0] + 2 * pad[0] - k[0]) // s[0] + 1
            ow = (shape[1] + 2 * pad[1] - k[1]) // s[1] + 1
            shape = [oh, ow, layer["filters"]]
        elif kind in ("max_pooling2d", "average_pooling2d"):
            p = pair(layer.get("pool_size", 2))
            s = pair(layer.get("strides", p))
            if layer.get("padding", "valid") != "valid":
                raise SystemExit("torch_bench: only valid pooling is mapped")
            mods.append((torch.nn.MaxPool2d if kind == "max_pooling2d" else torch.nn.AvgPool2d)(p, s))
            shape = [(shape[0] - p[0]) // s[0] + 1, (shape[1] - p[1]) // s[1] + 1, shape[2]]
        elif kind == "flatten":
            mods.append(FlattenNHWC() if image else torch.nn.Flatten())
            image = False
            shape = [int(np.prod(shape))]
        elif kind == "dropout":
            mods.append(torch.nn.Dropout(layer["rate"]))
        elif kind == "dense":
            lin = torch.nn.Linear(shape[-1], layer["units"])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(weights[name + ".kernel"].T)))
                lin.bias.copy_(torch.from_numpy(weights[name + ".bias"]))
            mods.append(lin)
            act = layer.get("activation", "linear")
            if act in ACTIVATIONS:
                mods.append(ACTIVATIONS[act]())
            elif act not in ("linear", "softmax"):  # softmax: CrossEntropyLoss takes logits
                raise SystemExit("torch_bench: activation %s not mapped" % act)
            shape = shape[:-1] + [layer["units"]]
        elif kind == "lstm":
            units, seq = layer["units"], layer.get("return_sequences", False)
            mod = LastState(shape[-1], units, seq)
            with torch.no_grad():
                mod.lstm.weight_ih_l0.copy_(torch.from_numpy(np.ascontiguousarray(weights[name + ".kernel"].T)))
                mod.lstm.weight_hh_l0.copy_(torch.from_numpy(np.ascontiguousarray(weights[name + ".recurrent_kernel"].T)))
                mod.lstm.bias_ih_l0.copy_(torch.from_numpy(weights[name + ".bias"]))
                mod.lstm.bias_hh_l0.zero_()
            mods.append(mod)
            shape = (shape[:-1] if seq else []) + [units]
        else:
            raise SystemExit("torch_bench: layer type %s not mapped" % kind)
    return torch.nn.Sequential(*mods)


def load_workload(init_dir):
    with open(os.path.join(init_dir, "config.json")) as f:
        config = json.load(f)
    weights, _ = read_safetensors(os.path.join(init_dir, "model.safetensors"))
    return config, weights


def train(model, config, x, y, epochs, batch, seed, max_steps=None):
    """The config's optimizer and schedule (Adam; cosine to 0 per step if asked); seconds."""
    opt_cfg = config.get("optimizer", {})
    lr = opt_cfg.get("learning_rate", 1e-3)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = (x.shape[0] + batch - 1) // batch
    total = epochs * steps_per_epoch
    cosine = opt_cfg.get("schedule", {}).get("type") == "cosine"
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)) if cosine else 1.0)
    loss_fn = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    steps = 0
    model.train()
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


def bench_fit(threads, init_dir, repeats, accuracy_epochs, probe_steps):
    torch.set_num_threads(threads)
    config, weights = load_workload(init_dir)
    batch = config.get("fit", {}).get("batch_size", 64)
    x, y = load_split("train")
    model = model_from_config(config, weights)
    model.eval()
    with torch.no_grad():
        first_loss = torch.nn.functional.cross_entropy(model(x[:batch]), y[:batch]).item()
    result = {"threads": threads, "first_loss": first_loss}
    train(model, config, x[:batch * 20], y[:batch * 20], 1, batch, 0)  # warm-up
    if probe_steps:  # a short run to rank configurations
        t = train(model, config, x, y, 1, batch, 1, max_steps=probe_steps)
        result["probe_steps_per_s"] = probe_steps / t
        result["peak_rss_kb"] = peak_rss_kb()
        return result
    result["epoch_seconds"] = [round(train(model, config, x, y, 1, batch, r + 1), 4) for r in range(repeats)]
    result["train_examples"] = int(x.shape[0])
    if accuracy_epochs:
        xt, yt = load_split("test")
        fresh = model_from_config(config, weights)
        result["accuracy_seconds"] = round(train(fresh, config, x, y, accuracy_epochs, batch, 42), 2)
        fresh.eval()
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
        nums = [int(v) for v in argv[3:] if v != "--bf16"]
        res = bench_gemm(threads, [tuple(nums[i:i + 3]) for i in range(0, len(nums), 3)], "--bf16" in argv)
    elif what == "fit":
        rest = argv[4:]
        res = bench_fit(threads, argv[3], option(rest, "--repeats", 3), option(rest, "--accuracy-epochs", 0),
                        option(rest, "--probe-steps", 0))
    elif what == "gpt2":
        from torch_gpt2 import bench_gpt2
        rest = argv[5:]
        res = bench_gpt2(threads, argv[3], argv[4], option(rest, "--steps", 0), option(rest, "--probe-steps", 0),
                         checkpoint=option(rest, "--checkpoint", 0), bf16=option(rest, "--bf16", 0))
    elif what == "quant":
        from torch_quant import bench_quant
        rest = argv[4:]
        res = bench_quant(threads, argv[3], option(rest, "--calibration", 2048), option(rest, "--repeats", 3))
    elif what == "bert":
        from torch_bert import bench_bert
        rest = argv[5:]
        res = bench_bert(threads, argv[3], argv[4], option(rest, "--epochs", 1), option(rest, "--probe-steps", 0),
                         bf16=option(rest, "--bf16", 0))
    else:
        raise SystemExit(__doc__)
    res["torch"] = torch.__version__
    print(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv)
