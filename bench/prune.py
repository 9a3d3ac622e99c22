"""P: magnitude pruning (issue 23) of W1 and W2 at 90% sparsity, and W1's accuracy-vs-sparsity
curve, every figure measured in the same run.

 1. W1 (MLP) and W2 (CNN) trained for their budgets from their configs;
 2. each pruned to 90% (gradual, global scope) while fine-tuning on the training split, W1 for
    10 epochs and W2 for 3; test accuracy of the dense and the pruned model, and the sizes of
    their model.safetensors (a pruned kernel is stored as a bit mask and its nonzeros);
 3. `damo prune --sweep 0.5,0.7,0.8,0.9,0.95 --curve bench/prune_curve_w1.png` on W1 (each
    sparsity from the dense model, 10 epochs);
 4. `damo bench predict` of the dense and the 90% models (the pruned W2 multiplies its
    3136 x 1024 kernel through the CSR product);
 5. `damo bench sparse 64 3136 1024`: W2's dense layer at batch 64 by the dense GEMM and by the
    CSR product, 50-99% zeros: where the sparse kernel starts to win;
 6. `damo bench sparse-conv 64 28 28 1 5 32` and `64 14 14 32 5 64`: W2's two convolutions at
    batch 64 by the dense conv2d op and by the direct sparse convolution, 50-99% zeros.

usage (from bench/run.py, BENCH_ONLY=P): run(damo, work, env) -> dict; rows(result) -> table rows
"""
import json
import os
import re
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = (("W1", "examples/configs/mlp_fashion_mnist.json", 10), ("W2", "examples/configs/cnn_fashion_mnist.json", 3))
SWEEP = "0.5,0.7,0.8,0.9,0.95"
CURVE = "prune_curve_w1.png"
CONVS = ("64 28 28 1 5 32", "64 14 14 32 5 64")  # W2's convolutions at batch 64: N H W C K F


def _damo(damo, args, env):
    p = subprocess.run([damo] + args, capture_output=True, text=True, env=dict(os.environ, **env))
    if p.returncode != 0:
        raise RuntimeError("damo %s failed:\n%s%s" % (" ".join(args), p.stdout, p.stderr))
    return p.stdout


def run(damo, work, env):
    out = {}
    for wid, config, epochs in MODELS:
        dense, pruned = os.path.join(work, "p_%s" % wid.lower()), os.path.join(work, "p_%s_90" % wid.lower())
        print("P: %s trained, then pruned to 90%% (%d epochs)" % (wid, epochs), flush=True)
        _damo(damo, ["train", "--config", os.path.join(ROOT, config), "--data", "fashion-mnist", "--out", dense,
                     "--overwrite", "--verbose", "0"], env)
        text = _damo(damo, ["prune", "--model", dense, "--out", pruned, "--data", "fashion-mnist", "--sparsity", "0.9",
                            "--epochs", str(epochs), "--verbose", "0"], env)
        m = re.search(r"test accuracy: dense ([0-9.]+), pruned ([0-9.]+)", text)
        z = re.search(r"all kernels +(\d+) of +(\d+)", text)
        sizes = [os.path.getsize(os.path.join(d, "model.safetensors")) for d in (dense, pruned)]
        out[wid] = {"epochs": epochs, "dense": float(m.group(1)), "pruned": float(m.group(2)),
                    "sparsity": int(z.group(1)) / int(z.group(2)), "sizes": sizes, "output": text.strip().splitlines()}
        if wid == "W1":
            print("P: W1 sparsity sweep", flush=True)
            text = _damo(damo, ["prune", "--model", dense, "--data", "fashion-mnist", "--sweep", SWEEP, "--epochs",
                                str(epochs), "--curve", os.path.join(HERE, CURVE)], env)
            out["sweep"] = [(float(s), float(a)) for s, a in re.findall(r"sparsity +([0-9.]+)%: test accuracy ([0-9.]+)",
                                                                        text)]
    print("P: inference of the dense and the 90% models (damo bench predict, batch 64)", flush=True)
    for wid in ("W1", "W2"):
        dense, pruned = os.path.join(work, "p_%s" % wid.lower()), os.path.join(work, "p_%s_90" % wid.lower())
        out[wid]["predict"] = [json.loads(_damo(damo, ["bench", "predict", "--model", d, "--data", "fashion-mnist",
                                                       "--repeats", "5"], env))["examples_per_s"] for d in (dense, pruned)]
    print("P: sparse against dense product", flush=True)
    out["sparse"] = json.loads(_damo(damo, ["bench", "sparse", "64", "3136", "1024"], env))
    print("P: sparse against dense convolutions", flush=True)
    out["sparse_conv"] = [json.loads(_damo(damo, ["bench", "sparse-conv"] + shape.split(), env)) for shape in CONVS]
    return out


def rows(r):
    table = ["| P measured | %s | | | %s |" % (r["date"], r.get("machine", "machine not recorded"))]
    for wid in ("W1", "W2"):
        p = r[wid]
        size = ("; model.safetensors %d -> %d bytes (%.1f%%: kernels stored as bit masks and their nonzeros)"
                % (p["sizes"][0], p["sizes"][1], 100.0 * p["sizes"][1] / p["sizes"][0])) if "sizes" in p else ""
        table.append("| P %s pruned to 90%% (gradual, global), test accuracy | %.4f | %.4f (dense) | %+.2f points | "
                     "%.1f%% of the kernel weights zero after %d epochs of fine-tuning; goal: within 1 point%s |"
                     % (wid, p["pruned"], p["dense"], 100 * (p["pruned"] - p["dense"]), 100 * p["sparsity"], p["epochs"],
                        size))
    for wid in ("W1", "W2"):
        p = r[wid]
        if "predict" in p:
            table.append("| P %s inference, examples/s at batch 64: 90%% pruned against dense | %.0f | %.0f | %.2fx | "
                         "`damo bench predict`; dense kernels of a million weights or more past 70%% zeros multiply "
                         "through the sparse (CSR) product, smaller ones stay dense; conv2d kernels past 70%% zeros "
                         "convolve directly from theirs |"
                         % (wid, p["predict"][1], p["predict"][0], p["predict"][1] / p["predict"][0]))
    curve = ", ".join("%g%% %.4f" % tuple(s) for s in r["sweep"])
    table.append("| P W1 test accuracy against sparsity | %s | | | bench/%s; each sparsity from the dense model, %d "
                 "epochs |" % (curve, CURVE, r["W1"]["epochs"]))
    sp = r.get("sparse")
    if sp:
        levels = ", ".join("%.0f%% %.2fx" % (100 * v["sparsity"], v["speedup"]) for v in sp["levels"])
        faster = [v["sparsity"] for v in sp["levels"] if v["speedup"] > 1]
        table.append("| P sparse (CSR) against dense product, x (%d x %d) W (%d x %d), speedup by sparsity | %s | | | "
                     "first faster at %s; `damo bench sparse %d %d %d` (W2's dense layer at batch 64) |" % (sp["b"], sp["k"], sp["k"], sp["n"], levels,
                                          "%.0f%% zeros" % (100 * faster[0]) if faster else "none measured",
                                          sp["b"], sp["k"], sp["n"]))
    for sc in r.get("sparse_conv", []):
        levels = ", ".join("%.0f%% %.2fx" % (100 * v["sparsity"], v["speedup"]) for v in sc["levels"])
        faster = [v["sparsity"] for v in sc["levels"] if v["speedup"] > 1]
        shape = "%d %d %d %d %d %d" % (sc["batch"], sc["height"], sc["width"], sc["channels"], sc["kernel"], sc["filters"])
        table.append("| P direct sparse against dense conv2d, %d x %d x %d images, %d x %d kernel, %d filters, batch %d, "
                     "speedup by sparsity | %s | | | first faster at %s; `damo bench sparse-conv %s` (a convolution of "
                     "W2) |" % (sc["height"], sc["width"], sc["channels"], sc["kernel"], sc["kernel"], sc["filters"],
                                sc["batch"], levels, "%.0f%% zeros" % (100 * faster[0]) if faster else "none measured",
                                shape))
    return table
