"""`make bench`: runs each workload of ../shared/BENCHMARKS.md in damo and in PyTorch, one
after the other in the same run, with the same thread count, shapes and data, and writes
bench/results.json and bench/RESULTS.md (the table, the command and the machine line).

PyTorch runs at its best configuration: Debian's OpenBLAS can pick the wrong kernel on new
CPUs and oversubscribe the cores, so each workload is probed under several environment
settings (OPENBLAS_CORETYPE, OPENBLAS_NUM_THREADS, OMP_WAIT_POLICY) and the fastest one is
used and named. Speed is compared only after the first-step losses agree.

usage: python3 bench/run.py BUILD_DIR [--quick]
BENCH_ONLY=W2 (comma-separated ids: G1, W1-W6, D data parallel, B bf16, G2 the GEMM rows of B alone,
C contention, Q int8, QG GPT-2 weight blocks, QB BERT dynamic int8, P pruning, KD and KT distillation, DP
differential privacy) reruns
only those figures and keeps the others from the previous bench/results.json; every row carries
the date it was measured.
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = "/usr/bin/python3"
# int8 products: two square ones and W2's dense layer at batch 64 (x 3136 -> 1024)
INT8_SHAPES = [(1024, 1024, 1024), (2048, 2048, 2048), (64, 1024, 3136)]
GEMM_SHAPES = [(1024, 1024, 1024), (2048, 2048, 2048),
               # W1's products at batch 64: forward, input gradient, weight gradient
               (64, 256, 784), (64, 128, 256), (64, 10, 128), (64, 784, 256), (784, 256, 64)]
def cpu_has(flag):
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and flag in line.split() for line in f)
    except OSError:
        return False


TORCH_CONFIGS = [{}]
# OpenBLAS's SkylakeX kernels need AVX-512: on other CPUs they stop with SIGILL.
for core in (None, "SkylakeX") if cpu_has("avx512f") else (None,):
    for extra in ({}, {"OPENBLAS_NUM_THREADS": "1"}, {"OMP_WAIT_POLICY": "PASSIVE"},
                  {"OPENBLAS_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}):
        cfg = dict(extra)
        if core:
            cfg["OPENBLAS_CORETYPE"] = core
        if cfg:
            TORCH_CONFIGS.append(cfg)
LOSS_TOLERANCE = 1e-4  # relative: float32 sums in a different order


def run_json(cmd, env_extra=None, timeout=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit("bench: %s did not finish in %d s" % (" ".join(cmd), timeout))
    if res.returncode != 0:
        raise SystemExit("bench: %s failed:\n%s%s" % (" ".join(cmd), res.stdout, res.stderr))
    return json.loads(res.stdout.strip().splitlines()[-1])


def describe(cfg):
    base = "OPENBLAS_CORETYPE=%s (environment)" % os.environ.get("OPENBLAS_CORETYPE", "unset")
    return " ".join("%s=%s" % kv for kv in sorted(cfg.items())) or base


def cpu_model():
    """The model name and, since a VM may show only "AMD EPYC", the family/model numbers and
    the per-core cache sizes, which tell the micro-architectures apart (the ratios differ
    between them)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    details = []
    if "cpu family" in fields and "model" in fields:
        details.append("family %s model %s" % (fields["cpu family"], fields["model"]))
    caches = []
    for index in range(4):
        base = "/sys/devices/system/cpu/cpu0/cache/index%d/" % index
        try:
            with open(base + "level") as f:
                level = f.read().strip()
            with open(base + "type") as f:
                kind = f.read().strip()
            with open(base + "size") as f:
                size = f.read().strip()
        except OSError:
            continue
        if kind != "Instruction":
            caches.append("L%s%s %s" % (level, "d" if kind == "Data" else "", size))
    if caches:
        details.append(", ".join(caches))
    return "%s (%s)" % (name, "; ".join(details)) if details else name


def blas_in_use():
    try:
        out = subprocess.run(["update-alternatives", "--query", "libblas.so.3-x86_64-linux-gnu"], capture_output=True,
                             text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Value:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


# id, model config, epochs for the accuracy figure (BENCHMARKS.md), timed epochs, probe steps
WORKLOADS = [("W1", "examples/configs/mlp_fashion_mnist.json", "10", 3, 300),
             ("W2", "examples/configs/cnn_fashion_mnist.json", "5", 3, 60),
             ("W3", "examples/configs/lstm_fashion_mnist.json", "5", 3, 300)]

# W4: GPT-2 on Moby Dick. The budget is 200 steps of 8 x 128 tokens (the config trains 2000):
# PyTorch takes seconds per step here, and the bench must finish in a sitting.
W4_CONFIG, W4_STEPS, W4_PROBE_STEPS, W4_WARMUP_STEPS = "examples/configs/gpt2_w4.json", 200, 4, 3

# W5: a BERT classifier fine-tuned on SpamAssassin for one epoch from the same random
# initial weights, on the same batches in the same order (dropout masks differ).
W5_CONFIG, W5_EPOCHS, W5_PROBE_STEPS = "examples/configs/bert_w5.json", 1, 4


def bench_workload(wid, damo, config, acc_epochs, repeats, probe_steps, work, threads, env_threads, quick):
    """damo first; then PyTorch probed under each configuration (losses must agree), then
    PyTorch's fastest configuration measured like damo."""
    print("%s: %s (damo)" % (wid, config), flush=True)
    init = os.path.join(work, wid.lower() + "_init")
    d = run_json([damo, "bench", "fit", "--config", os.path.join(ROOT, config), "--init", init, "--repeats", str(repeats),
                  "--accuracy-epochs", acc_epochs], env_threads)
    print("%s: probing PyTorch configurations" % wid, flush=True)
    probes = []
    script = os.path.join(HERE, "torch_bench.py")
    for cfg in TORCH_CONFIGS if not quick else TORCH_CONFIGS[:1]:
        best = 0.0
        for _ in range(2):  # best of two: a probe is short and the machine is shared
            r = run_json([PY, script, "fit", str(threads), init, "--probe-steps", str(probe_steps)], cfg)
            best = max(best, r["probe_steps_per_s"])
            rel = abs(r["first_loss"] - d["first_loss"]) / abs(d["first_loss"])
            if rel > LOSS_TOLERANCE:
                raise SystemExit("bench: %s first-step loss differs: damo %.7f, PyTorch %.7f (%s); refusing to compare"
                                 % (wid, d["first_loss"], r["first_loss"], describe(cfg)))
        probes.append((best, cfg))
    probes.sort(key=lambda p: -p[0])
    best_cfg = probes[0][1]
    print("%s: PyTorch with %s" % (wid, describe(best_cfg)), flush=True)
    t = run_json([PY, script, "fit", str(threads), init, "--repeats", str(repeats), "--accuracy-epochs", acc_epochs],
                 best_cfg)
    return {"damo": d, "torch": t, "torch_config": describe(best_cfg),
            "torch_probes": [{"config": describe(c), "steps_per_s": round(s, 1)} for s, c in probes]}


def bench_gpt2(damo, work, threads, env_threads, quick):
    """W4: damo trains the budget first (writing the initial weights and tokens), then PyTorch
    is probed under each configuration (initial validation losses must agree) and its
    fastest configuration trains the same budget from the same weights."""
    steps = 20 if quick else W4_STEPS
    init = os.path.join(work, "w4_init")
    config = os.path.join(ROOT, W4_CONFIG)
    print("W4: %s, %d steps (damo)" % (W4_CONFIG, steps), flush=True)
    d = run_json([damo, "bench", "gpt2", "--config", config, "--init", init, "--steps", str(steps)], env_threads)
    script = os.path.join(HERE, "torch_bench.py")
    probes = []
    for cfg in TORCH_CONFIGS if not quick else TORCH_CONFIGS[:1]:
        r = run_json([PY, script, "gpt2", str(threads), config, init, "--steps", str(steps), "--probe-steps",
                      str(W4_PROBE_STEPS)], cfg)
        rel = abs(r["first_loss"] - d["first_loss"]) / abs(d["first_loss"])
        if rel > LOSS_TOLERANCE:
            raise SystemExit("bench: W4 initial validation loss differs: damo %.7f, PyTorch %.7f (%s); refusing to "
                             "compare" % (d["first_loss"], r["first_loss"], describe(cfg)))
        probes.append((min(r["step_seconds"][1:]), cfg))
    probes.sort(key=lambda p: p[0])
    best_cfg = probes[0][1]
    print("W4: PyTorch with %s, %d steps" % (describe(best_cfg), steps), flush=True)
    t = run_json([PY, script, "gpt2", str(threads), config, init, "--steps", str(steps)], best_cfg)
    return {"damo": d, "torch": t, "torch_config": describe(best_cfg), "config": W4_CONFIG, "steps": steps,
            "torch_probes": [{"config": describe(c), "best_step_seconds": round(s, 3)} for s, c in probes]}


# W6: GPT-2 124M (HuggingFace gpt2's shape), T 1024, batch 4, from the same random weights:
# damo with and without --recompute against PyTorch fp32 with and without
# torch.utils.checkpoint and under bf16 autocast with it (only where the CPU has AVX512_BF16:
# without it PyTorch 1.13's CPU autocast took 63 s for a W4 step that takes 1 s in fp32). A
# step takes about a minute, so each side times W6_PROBE_STEPS steps and the first (page
# faults, packing) is left out.
W6_CONFIG, W6_PROBE_STEPS = "examples/configs/gpt2_124m.json", 2
W6_TORCH = [("fp32", 0, 0), ("fp32_checkpoint", 1, 0), ("bf16_autocast_checkpoint", 1, 1)]


def bench_gpt2_124m(damo, work, threads, env_threads, quick):
    """W6: each side in a process of its own (peak RSS is the process's)."""
    init = os.path.join(work, "w6_init")
    config = os.path.join(ROOT, W6_CONFIG)
    probe = str(2 if quick else W6_PROBE_STEPS)
    base = [damo, "bench", "gpt2", "--config", config, "--init", init, "--probe-steps", probe]
    out = {"config": W6_CONFIG, "damo": {}, "torch": {}}
    sides = [("fp32", []), ("fp32_recompute", ["--recompute"])]
    if cpu_has("avx512_bf16") or cpu_has("amx_bf16"):
        sides.append(("bf16_recompute", ["--recompute", "--precision", "bf16"]))
    for name, extra in sides:
        print("W6: damo %s" % name, flush=True)
        out["damo"][name] = run_json(base + extra, env_threads)
    script = os.path.join(HERE, "torch_bench.py")
    for name, ckpt, bf16 in W6_TORCH:
        if bf16 and not cpu_has("avx512_bf16"):
            continue
        print("W6: PyTorch %s" % name, flush=True)
        r = run_json([PY, script, "gpt2", str(threads), config, init, "--probe-steps", probe, "--checkpoint",
                      str(ckpt), "--bf16", str(bf16)], TORCH_CONFIGS[0])
        first = out["damo"]["fp32"]["first_loss"]
        if abs(r["first_loss"] - first) / abs(first) > LOSS_TOLERANCE:
            raise SystemExit("bench: W6 initial validation loss differs: damo %.7f, PyTorch %.7f" % (first,
                                                                                                 r["first_loss"]))
        out["torch"][name] = r
    out["torch_config"] = describe(TORCH_CONFIGS[0])
    return out


def w6_tokens_per_s(side):
    return side["tokens_per_step"] / statistics.median(side["step_seconds"][1:])


def w6_rows(w):
    rows = []
    if "date" in w:
        rows.append(measured_row("W6", w["date"], w.get("machine")))
    d, t = w["damo"], w["torch"]
    for dn, tn, what in (("fp32_recompute", "fp32_checkpoint", "recomputation vs torch.utils.checkpoint, fp32"),
                         ("fp32", "fp32", "everything stored, fp32"),
                         ("fp32_recompute", "bf16_autocast_checkpoint", "damo fp32 + recompute vs PyTorch bf16 "
                                                                          "autocast + checkpoint"),
                         ("bf16_recompute", "bf16_autocast_checkpoint", "bf16 + recompute vs bf16 autocast + "
                                                                          "checkpoint")):
        if dn not in d or tn not in t:
            continue
        dt, tt = w6_tokens_per_s(d[dn]), w6_tokens_per_s(t[tn])
        rows.append("| W6 GPT-2 124M, T 1024, batch 4: tokens/s, %s (median of steps 2-%d) | %.1f | %.1f | %.2fx | %s; "
                    "PyTorch: %s |" % (what, len(d[dn]["step_seconds"]), dt, tt, dt / tt, w["config"],
                                       w["torch_config"]))
        rows.append("| W6 peak RSS, MB, %s | %.0f | %.0f | %.2fx less | whole process incl. data |"
                    % (what, d[dn]["peak_rss_kb"] / 1024, t[tn]["peak_rss_kb"] / 1024,
                       t[tn]["peak_rss_kb"] / d[dn]["peak_rss_kb"]))
    if "fp32" in d and "fp32_recompute" in d:
        a, b = d["fp32"], d["fp32_recompute"]
        rows.append("| W6 damo --recompute against damo storing everything: step time, peak RSS | %.2fx time | "
                    "%.0f vs %.0f MB | | last training loss %.5f vs %.5f (same windows) |"
                    % (w6_tokens_per_s(a) / w6_tokens_per_s(b), b["peak_rss_kb"] / 1024, a["peak_rss_kb"] / 1024,
                       b["last_train_loss"], a["last_train_loss"]))
    return rows


def bench_bert(damo, work, threads, env_threads, quick):
    """W5, as W4: damo first (writing the weights and encoded splits), PyTorch probed (the
    first batch's losses must agree), then PyTorch's fastest configuration."""
    init = os.path.join(work, "w5_init")
    config = os.path.join(ROOT, W5_CONFIG)
    extra = ["--probe-steps", "30"] if quick else ["--epochs", str(W5_EPOCHS)]
    print("W5: %s, %s (damo)" % (W5_CONFIG, "30 steps" if quick else "%d epoch(s)" % W5_EPOCHS), flush=True)
    d = run_json([damo, "bench", "bert", "--config", config, "--init", init] + extra, env_threads)
    script = os.path.join(HERE, "torch_bench.py")
    probes = []
    for cfg in TORCH_CONFIGS if not quick else TORCH_CONFIGS[:1]:
        r = run_json([PY, script, "bert", str(threads), config, init, "--probe-steps", str(W5_PROBE_STEPS)], cfg)
        rel = abs(r["first_loss"] - d["first_loss"]) / abs(d["first_loss"])
        if rel > LOSS_TOLERANCE:
            raise SystemExit("bench: W5 first-batch loss differs: damo %.7f, PyTorch %.7f (%s); refusing to compare"
                             % (d["first_loss"], r["first_loss"], describe(cfg)))
        probes.append((min(r["step_seconds"][1:]), cfg))
    probes.sort(key=lambda p: p[0])
    best_cfg = probes[0][1]
    print("W5: PyTorch with %s" % describe(best_cfg), flush=True)
    t = run_json([PY, script, "bert", str(threads), config, init] + extra, best_cfg)
    return {"damo": d, "torch": t, "torch_config": describe(best_cfg), "config": W5_CONFIG,
            "torch_probes": [{"config": describe(c), "best_step_seconds": round(s, 3)} for s, c in probes]}


# B: bf16 mixed precision (--precision bf16: matmul operands rounded to bfloat16, f32
# accumulation). G2: damo's bf16 GEMM against its f32 GEMM and PyTorch's bf16 matmul; W4 and
# W5 trained for their whole budget at f32 and bf16 from the same weights on the same
# batches (loss curves compared step by step). PyTorch's autocast runs only where the CPU has
# a bf16 unit (AVX512_BF16 or AMX): without one, PyTorch 1.13 took 63 s for a 1 s W4 step.
G2_SHAPES = [(1024, 1024, 1024), (2048, 2048, 2048)]


def bench_g2(damo, threads, env_threads, quick):
    sizes = [str(v) for s in G2_SHAPES[:1 if quick else 2] for v in s]
    print("B: G2 bf16 GEMM (damo f32, damo bf16, PyTorch bf16)", flush=True)
    return {"g2_f32": run_json([damo, "bench", "gemm"] + sizes, env_threads)["gemm"],
            "g2_bf16": run_json([damo, "bench", "gemm-bf16"] + sizes, env_threads),
            "g2_torch": run_json([PY, os.path.join(HERE, "torch_bench.py"), "gemm", str(threads)] + sizes + ["--bf16"],
                                 TORCH_CONFIGS[0])["gemm"],
            "torch_config": describe(TORCH_CONFIGS[0]), "cpu_bf16": cpu_has("avx512_bf16") or cpu_has("amx_bf16")}


def bench_bf16(damo, work, threads, env_threads, quick):
    out = bench_g2(damo, threads, env_threads, quick)
    steps = str(20 if quick else W4_STEPS)
    for wid, cmd in (("w4", [damo, "bench", "gpt2", "--config", os.path.join(ROOT, W4_CONFIG), "--init",
                             os.path.join(work, "b_w4_init"), "--steps", steps]),
                     ("w5", [damo, "bench", "bert", "--config", os.path.join(ROOT, W5_CONFIG), "--init",
                             os.path.join(work, "b_w5_init")] + (["--probe-steps", "30"] if quick else
                                                                  ["--epochs", str(W5_EPOCHS)]))):
        for precision in ("f32", "bf16"):
            print("B: %s %s (damo)" % (wid.upper(), precision), flush=True)
            out["%s_%s" % (wid, precision)] = run_json(cmd + ["--precision", precision], env_threads)
    if out["cpu_bf16"]:
        # PyTorch under bf16 autocast from the same initial weights on the same batches.
        script = os.path.join(HERE, "torch_bench.py")
        print("B: W4 bf16 autocast (PyTorch)", flush=True)
        out["w4_torch_bf16"] = run_json([PY, script, "gpt2", str(threads), os.path.join(ROOT, W4_CONFIG),
                                         os.path.join(work, "b_w4_init"), "--steps", steps, "--bf16", "1"],
                                        TORCH_CONFIGS[0])
        print("B: W5 bf16 autocast (PyTorch)", flush=True)
        out["w5_torch_bf16"] = run_json([PY, script, "bert", str(threads), os.path.join(ROOT, W5_CONFIG),
                                         os.path.join(work, "b_w5_init")] + (["--probe-steps", "30"] if quick else
                                                                             ["--epochs", str(W5_EPOCHS)]) +
                                        ["--bf16", "1"], TORCH_CONFIGS[0])
    return out


# Q1/Q2: int8 inference. W1 (MLP) and W2 (CNN) trained for their budgets, quantised by
# `damo quantize` (histogram calibration on 2048 training examples), then the whole test split
# predicted at batch 64 by damo f32, damo int8 and PyTorch's eager-mode static int8 of the same
# f32 weights (each quantised engine this build has, calibrated on the same examples).
INT8_WORKLOADS = [("W1", "examples/configs/mlp_fashion_mnist.json"), ("W2", "examples/configs/cnn_fashion_mnist.json")]


def bench_int8_one(damo, work, threads, env_threads, wid, config):
    f32, int8 = os.path.join(work, "q_" + wid.lower()), os.path.join(work, "q_%s_int8" % wid.lower())
    print("Q: %s trained, then quantised (damo)" % wid, flush=True)
    subprocess.run([damo, "train", "--config", os.path.join(ROOT, config), "--data", "fashion-mnist", "--out", f32,
                    "--overwrite"], check=True, capture_output=True, env=dict(os.environ, **env_threads))
    q = subprocess.run([damo, "quantize", "--model", f32, "--out", int8, "--data", "fashion-mnist"], check=True,
                       capture_output=True, text=True, env=dict(os.environ, **env_threads))
    out = {"quantize": q.stdout.strip().splitlines(), "config": config}
    for side, d in (("damo_f32", f32), ("damo_int8", int8)):
        print("Q: %s predict %s" % (wid, side), flush=True)
        out[side] = run_json([damo, "bench", "predict", "--model", d, "--data", "fashion-mnist", "--repeats", "5"],
                             env_threads)
    print("Q: %s PyTorch int8" % wid, flush=True)
    out["torch"] = run_json([PY, os.path.join(HERE, "torch_bench.py"), "quant", str(threads), f32, "--repeats", "5"],
                            TORCH_CONFIGS[0])
    out["sizes"] = [os.path.getsize(os.path.join(d, "model.safetensors")) for d in (f32, int8)]
    return out


def bench_int8(damo, work, threads, env_threads):
    out = bench_int8_one(damo, work, threads, env_threads, *INT8_WORKLOADS[0])  # W1 at the top level, as before
    out["w2"] = bench_int8_one(damo, work, threads, env_threads, *INT8_WORKLOADS[1])
    return out


def int8_rows(q):
    rows = [measured_row("Q (int8)", q["date"], q.get("machine"))]
    for n, wid, r in ((1, "W1", q), (2, "W2", q.get("w2"))):
        if r:
            rows += int8_workload_rows(n, wid, r)
    return rows


def int8_workload_rows(n, wid, q):
    rows = []
    f, i, t = q["damo_f32"], q["damo_int8"], q["torch"]
    best = t.get("best_engine")
    rows.append("| Q%d %s int8 inference, examples/s at batch 64: damo int8 against damo f32 | %.0f | %.0f | %.2fx | goal "
                "2.5x; accuracy %.4f vs %.4f (%+.2f points); model.safetensors %.1f%% of f32 (goal <= 27%%) |"
                % (n, wid, i["examples_per_s"], f["examples_per_s"], i["examples_per_s"] / f["examples_per_s"],
                   i["accuracy"], f["accuracy"], 100 * (i["accuracy"] - f["accuracy"]), 100.0 * q["sizes"][1] / q["sizes"][0]))
    if best:
        e = t["engines"][best]
        others = ", ".join("%s %s" % (k, "%.0f/s" % v["examples_per_s"] if "examples_per_s" in v else "failed")
                           for k, v in sorted(t["engines"].items()) if k != best)
        rows.append("| Q%d %s int8 inference, examples/s at batch 64: damo int8 against PyTorch int8 (%s) | %.0f | %.0f | "
                    "%.2fx | goal 1.5x; PyTorch accuracy %.4f (its f32 %.4f at %.0f/s); other engines: %s |"
                    % (n, wid, best, i["examples_per_s"], e["examples_per_s"], i["examples_per_s"] / e["examples_per_s"],
                       e["accuracy"], t["f32"]["accuracy"], t["f32"]["examples_per_s"], others or "none"))
    return rows


def bf16_rows(b):
    rows = [measured_row("B (bf16)", b["date"], b.get("machine"))]
    path = b["g2_bf16"]["bf16_path"]
    unit = "this CPU has a bf16 unit" if b["cpu_bf16"] else "this CPU has no bf16 unit (no AVX512_BF16, no AMX)"
    if "g2_date" in b:
        rows.append(measured_row("G2 (the two GEMM rows next, rerun alone; the W4/W5 bf16 rows are from B above)", b["g2_date"], b.get("g2_machine")))
    for f, h, t in zip(b["g2_f32"], b["g2_bf16"]["gemm"], b["g2_torch"]):
        peak_of = h.get("peak_of", "f32 FMA")
        peak_of = "bf16 (%s)" % peak_of if peak_of != "f32 FMA" else peak_of
        rows.append("| G2 GEMM %dx%dx%d bf16 operands, GFLOP/s | %.1f (%.1f%% of the %s peak measured beside it, %.0f; "
                    "damo f32 %.1f) | %.1f | %.2fx | damo's bf16 path: %s (%s); PyTorch: bf16 torch.mm, %s |"
                    % (h["m"], h["n"], h["k"], h["gflops"], 100 * h["efficiency"], peak_of, h["peak_nearby"],
                       f["gflops"], t["gflops"], h["gflops"] / t["gflops"], path, unit, b["torch_config"]))
    for wid, unit_name, rate in (("w4", "tokens/s", tokens_per_s), ("w5", "sequences/s", sequences_per_s)):
        f, h = b[wid + "_f32"], b[wid + "_bf16"]
        lf, lh = f["step_losses"], h["step_losses"]
        worst = max(abs(a - c) / abs(c) for a, c in zip(lh, lf))
        final = ("validation loss %.4f vs %.4f" % (h["val_loss"], f["val_loss"]) if "val_loss" in f else
                 "test F1 %.4f vs %.4f" % (h["test_f1"], f["test_f1"]) if "test_f1" in f else "probe")
        rows.append("| %s-bf16 training, %s: damo bf16 against damo f32 (%d steps, same weights and batches) | %.1f | "
                    "%.1f | %.2fx | goal 1.6x with a bf16 unit (%s); training loss within %.2f%% of f32 at every "
                    "step (goal 1%%); %s |"
                    % (wid.upper(), unit_name, len(lf), rate(h), rate(f), rate(h) / rate(f), path, 100 * worst, final))
        t = b.get(wid + "_torch_bf16")
        if t:
            tfinal = ("validation loss %.4f vs %.4f" % (h["val_loss"], t["val_loss"]) if "val_loss" in t else
                      "test F1 %.4f vs %.4f" % (h["test_f1"], t["test_f1"]) if "test_f1" in t else "probe")
            rows.append("| %s-bf16 training, %s: damo bf16 against PyTorch bf16 autocast (same weights and batches) | "
                        "%.1f | %.1f | %.2fx | goal 1.3x; %s; PyTorch: %s |"
                        % (wid.upper(), unit_name, rate(h), rate(t), rate(h) / rate(t), tfinal, b["torch_config"]))
    return rows


# D1-D3: data parallel on this host. D1: W4 as 2 ranks x 1 thread against 1 process x 2
# threads (plain, ZeRO-1, and 4 MB buckets for the overlap figures); D2: PyTorch DDP (gloo,
# 2 x 1 thread) on the same model, weights, data and recipe; D3: W1 and W5 as D1. Each run
# twice, in turn with the others; the faster of the two is kept (the host's speed drifts).
D_STEPS, D_RANKS = 24, 2


def mpirun(ranks, threads):
    """mpirun as this bench needs it: as root, in a container, one core per rank."""
    cmd = ["mpirun"] + (["--allow-run-as-root"] if os.geteuid() == 0 else []) + [
        "--oversubscribe", "--bind-to", "core" if threads == 1 else "none", "-x", "DAMO_NUM_THREADS=%d" % threads,
        "-np", str(ranks)]
    return cmd


D_ENV = {"OMPI_MCA_btl_vader_single_copy_mechanism": "none"}


def bench_distributed(damo, work, threads, quick):
    steps = 8 if quick else D_STEPS
    per_rank = max(1, threads // D_RANKS)
    one = {"DAMO_NUM_THREADS": str(threads)}
    out = {"ranks": D_RANKS, "threads_per_rank": per_rank, "threads": threads, "steps": steps}
    config = os.path.join(ROOT, W4_CONFIG)
    init = os.path.join(work, "d1_init")
    gpt = [damo, "bench", "gpt2", "--config", config, "--init", init, "--steps", str(steps)]
    ddp = [PY, os.path.join(HERE, "torch_gpt2_ddp.py"), str(D_RANKS), config, init, "--steps", str(steps),
           "--threads-per-rank", str(per_rank)]
    runs = [("d1_one", "W4 as 1 process x %d threads" % threads, gpt, one),
            ("d1_ranks", "W4 as %d ranks x %d thread(s)" % (D_RANKS, per_rank), mpirun(D_RANKS, per_rank) + gpt, D_ENV),
            ("d1_zero", "the same with --zero 1", mpirun(D_RANKS, per_rank) + gpt + ["--zero", "1"], D_ENV),
            ("d1_buckets", "the same with 4 MB buckets", mpirun(D_RANKS, per_rank) + gpt + ["--bucket-mb", "4"], D_ENV),
            ("d2_ddp", "PyTorch DDP (gloo), %d ranks x %d thread(s)" % (D_RANKS, per_rank), ddp, {})]
    # A shared host's speed drifts over minutes: two rounds in turn, each side's faster round kept.
    for rnd in range(1 if quick else 2):
        for key, what, cmd, env in runs:
            print("D1/D2 round %d: %s, %d steps" % (rnd + 1, what, steps), flush=True)
            try:
                r = run_json(cmd, env, timeout=1800)
            except SystemExit as e:  # a second round that fails keeps the first round's figure
                if key not in out:
                    raise
                print("D: round %d of %s failed (%s); keeping round 1" % (rnd + 1, key, e), flush=True)
                continue
            if key not in out or tokens_per_s(r) > tokens_per_s(out[key]):
                out[key] = r
    rel = abs(out["d2_ddp"]["first_loss"] - out["d1_ranks"]["first_loss"]) / abs(out["d1_ranks"]["first_loss"])
    if rel > LOSS_TOLERANCE:
        raise SystemExit("bench: D2 initial validation loss differs: damo %.7f, DDP %.7f; refusing to compare"
                         % (out["d1_ranks"]["first_loss"], out["d2_ddp"]["first_loss"]))
    w1 = os.path.join(ROOT, WORKLOADS[0][1])
    fit = [damo, "bench", "fit", "--config", w1, "--init", os.path.join(work, "d3_w1_init"), "--repeats",
           "1" if quick else "3"]
    for rnd in range(1 if quick else 2):
        print("D3 round %d: W1, 1 process then %d ranks" % (rnd + 1, D_RANKS), flush=True)
        for key, cmd, env in (("d3_w1_one", fit, one), ("d3_w1_ranks", mpirun(D_RANKS, per_rank) + fit, D_ENV)):
            r = run_json(cmd, env)
            if key not in out or min(r["epoch_seconds"]) < min(out[key]["epoch_seconds"]):
                out[key] = r
    bert = [damo, "bench", "bert", "--config", os.path.join(ROOT, W5_CONFIG), "--init", os.path.join(work, "d3_w5_init"),
            "--probe-steps", "10" if quick else "30"]
    for rnd in range(1 if quick else 2):
        print("D3 round %d: W5, 1 process then %d ranks" % (rnd + 1, D_RANKS), flush=True)
        for key, cmd, env in (("d3_w5_one", bert, one), ("d3_w5_ranks", mpirun(D_RANKS, per_rank) + bert, D_ENV)):
            r = run_json(cmd, env)
            if key not in out or sequences_per_s(r) > sequences_per_s(out[key]):
                out[key] = r
    return out


def sequences_per_s(side):
    """Median over the steps after the first few (warm-up)."""
    return side["batch"] / statistics.median(side["step_seconds"][W4_WARMUP_STEPS:])


def tokens_per_s(side):
    """Median over the steps after the first few (warm-up: page faults, first packing)."""
    return side["tokens_per_step"] / statistics.median(side["step_seconds"][W4_WARMUP_STEPS:])


def main(argv):
    build = argv[1] if len(argv) > 1 else "build"
    quick = "--quick" in argv
    damo = os.path.join(build, "damo")
    threads = int(os.environ.get("DAMO_NUM_THREADS", os.cpu_count() or 1))
    env_threads = {"DAMO_NUM_THREADS": str(threads)}
    work = os.path.join(build, "bench")
    os.makedirs(work, exist_ok=True)
    only = [w for w in os.environ.get("BENCH_ONLY", "").split(",") if w]
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = {"threads": threads, "machine": "%s, %d cores" % (cpu_model(), os.cpu_count() or 0),
               "date": now, "blas_for_torch": blas_in_use()}
    previous = {}
    if only and os.path.exists(os.path.join(HERE, "results.json")):
        with open(os.path.join(HERE, "results.json")) as f:
            previous = json.load(f)
    if only:
        for key, value in previous.items():
            if key in ("G1", "D", "B", "C", "Q", "QG", "QB", "KD", "KT", "P", "DP") or key.startswith("W"):
                results[key] = value
                results[key].setdefault("date", previous.get("date", "?"))
        results["date"] = "%s (%s; other rows as dated)" % (now, ", ".join(only))
    wanted = lambda wid: not only or wid in only

    def record(key, value):  # every section says when and on what it was measured
        results[key] = dict(value, date=now, machine=results["machine"])

    # G1: FMA peak and GEMM
    if wanted("G1"):
        measure_g1(results, damo, threads, env_threads, quick)
        record("G1", results["G1"])
    for wid, config, acc_epochs, repeats, probe_steps in WORKLOADS:
        if not wanted(wid):
            continue
        record(wid, dict(bench_workload(wid, damo, config, "1" if quick else acc_epochs, repeats, probe_steps, work,
                                        threads, env_threads, quick), config=config))
    if wanted("W4"):
        record("W4", bench_gpt2(damo, work, threads, env_threads, quick))
    if wanted("W5"):
        record("W5", bench_bert(damo, work, threads, env_threads, quick))
    if wanted("W6"):
        record("W6", bench_gpt2_124m(damo, work, threads, env_threads, quick))
    if wanted("D"):
        record("D", bench_distributed(damo, work, threads, quick))
    if wanted("B"):
        record("B", bench_bf16(damo, work, threads, env_threads, quick))
    elif wanted("G2") and "B" in results:  # the GEMM rows of B alone, the training rows kept
        results["B"].update(bench_g2(damo, threads, env_threads, quick), g2_date=now, g2_machine=results["machine"])
    if wanted("P"):
        import prune
        record("P", prune.run(damo, work, env_threads))
    if wanted("KD"):
        import distill
        record("KD", distill.run(damo, work, env_threads))
    if wanted("KT"):
        import distill
        record("KT", distill.run_text(damo, work, env_threads))
    if wanted("Q"):
        record("Q", bench_int8(damo, work, threads, env_threads))
    if wanted("QG"):
        import gpt2_blocks
        record("QG", gpt2_blocks.run(damo, work, env_threads, threads))
    if wanted("QB"):  # dynamic int8 of the fine-tuned W5 BERT
        import bert_int8
        record("QB", bert_int8.run(damo, work, env_threads, threads))
    if wanted("DP"):
        import privacy
        record("DP", privacy.run(damo, work, env_threads))
    if wanted("C"):  # sharing the machine: W1-W5 beside one and two busy processes
        import contention
        record("C", contention.measure(build, contention.DEFAULT))
    write_results(results)


def measure_g1(results, damo, threads, env_threads, quick):
    print("G1: FMA peak and GEMM (damo)", flush=True)
    peak = run_json([damo, "bench", "peak"], env_threads)
    sizes = [str(v) for s in GEMM_SHAPES for v in s]
    d_gemm = run_json([damo, "bench", "gemm"] + sizes, env_threads)
    print("G1: GEMM (PyTorch, %d configurations)" % len(TORCH_CONFIGS), flush=True)
    t_best = None
    for cfg in TORCH_CONFIGS if not quick else TORCH_CONFIGS[:1]:
        r = run_json([PY, os.path.join(HERE, "torch_bench.py"), "gemm", str(threads)] + sizes, cfg)
        score = statistics.mean(g["gflops"] for g in r["gemm"][:2])
        if t_best is None or score > t_best[0]:
            t_best = (score, cfg, r)
    print("G1: int8 GEMM (damo)", flush=True)
    q_gemm = run_json([damo, "bench", "gemm-int8"] + [str(v) for s in INT8_SHAPES for v in s], env_threads)
    results["G1"] = {"fma_peak_gflops": peak["fma_peak_gflops"], "simd": peak["simd"], "damo": d_gemm["gemm"],
                     "torch": t_best[2]["gemm"], "torch_config": describe(t_best[1]),
                     "int8_peak_gops": peak.get("int8_peak_gops"), "int8_path": peak.get("int8_path"),
                     "int8": q_gemm["gemm"]}


def write_results(results):
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    table = report(results)
    print(table)
    path = os.path.join(HERE, "RESULTS.md")
    notes = kept_notes(path)
    with open(path, "w") as f:
        f.write("# Benchmark results\n\nThe latest `make bench` (written by bench/run.py; the raw figures are in "
                "bench/results.json).\n\n")
        f.write("- command: `make bench`\n- machine of the latest section: %s (each section's \"measured\" row names "
                "its own)\n- threads: %d (both sides)\n- date: %s\n"
                % (results["machine"], results["threads"], results["date"]))
        some = next((results[w] for w in ("W1", "W2", "W3") if w in results), {"torch": {}})
        f.write("- PyTorch %s with BLAS %s\n\n" % (some["torch"].get("torch", "?"), results["blas_for_torch"]))
        f.write(table + "\n")
        if notes:
            f.write("\n" + notes)


NOTES_HEADING = "## Notes"


def kept_notes(path):
    """The hand-written notes under NOTES_HEADING in RESULTS.md: the table is regenerated, they are not."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return ""
    at = text.find("\n" + NOTES_HEADING + "\n")
    return text[at + 1:] if at >= 0 else ""


def measured_row(wid, date, machine=None):
    """Sections are rerun one at a time (BENCH_ONLY), so each names its own date and machine."""
    return "| %s measured | %s | | | %s |" % (wid, date, machine or "machine not recorded")


def rss_row(wid, dd, tt):
    return ("| %s peak RSS, MB | %.0f | %.0f | %.2fx less | whole process incl. data |"
            % (wid, dd["peak_rss_kb"] / 1024, tt["peak_rss_kb"] / 1024, tt["peak_rss_kb"] / dd["peak_rss_kb"]))


def report(r):
    rows = ["| figure | damo | PyTorch | ratio (damo/PyTorch) | notes |", "| --- | --- | --- | --- | --- |"]
    g1 = r.get("G1")
    if g1:
        rows.append("| FMA peak, GFLOP/s | %.0f | | | register-only loop, %s |" % (g1["fma_peak_gflops"], g1["simd"]))
    for d, t in zip(g1["damo"], g1["torch"]) if g1 else ():
        if "efficiency" in d:  # each GEMM sample against a peak run of the same length just before it
            rows.append("| GEMM %dx%dx%d, GFLOP/s | %.1f (%.1f%% of the sustained peak, median of 7 paired samples; "
                        "%.1f-%.1f%%) | %.1f | %.2fx | GEMM spread %.0f-%.0f, sustained peak %.0f (short bursts %.0f); "
                        "PyTorch: %s |"
                        % (d["m"], d["n"], d["k"], d["gflops"], 100 * d["efficiency"], 100 * d["efficiency_min"],
                           100 * d["efficiency_max"], t["gflops"], d["gflops"] / t["gflops"], d["min"], d["max"],
                           d["peak_nearby"], d["burst_peak"], g1["torch_config"]))
            continue
        rows.append("| GEMM %dx%dx%d, GFLOP/s | %.1f (%.0f%% of the peak measured beside it, %.0f) | %.1f | %.2fx | "
                    "spread %.0f-%.0f; PyTorch: %s |"
                    % (d["m"], d["n"], d["k"], d["gflops"], 100 * d["gflops"] / d["peak_nearby"], d["peak_nearby"],
                       t["gflops"], d["gflops"] / t["gflops"], d["min"], d["max"], g1["torch_config"]))
    if g1 and g1.get("int8"):
        rows.append("| int8 peak (%s), GOP/s | %.0f | | | register-only loop; a multiply-add counts 2 |"
                    % (g1["int8_path"], g1["int8_peak_gops"]))
    for d in g1.get("int8", ()) if g1 else ():
        rows.append("| int8 GEMM %dx%dx%d (u8 x s8, int32 sums), GOP/s | %.1f (%.1f%% of the %s peak, median of 7 paired "
                    "samples; %.1f-%.1f%%) | | | the product of quantised layers (damo bench gemm-int8); Debian's PyTorch "
                    "has no bare int8 GEMM (torch._int_mm came after 1.13): Q1 compares whole quantised models |"
                    % (d["m"], d["n"], d["k"], d["gflops"], 100 * d["efficiency"], d["peak_of"],
                       100 * d["efficiency_min"], 100 * d["efficiency_max"]))
    if g1 and "date" in g1:
        rows.append(measured_row("G1", g1["date"], g1.get("machine")))
    for wid, *_ in WORKLOADS:
        if wid not in r:
            continue
        w = r[wid]
        if "date" in w:
            rows.append(measured_row(wid, w["date"], w.get("machine")))
        dd, tt = w["damo"], w["torch"]
        n = dd["train_examples"]
        d_sps = [n / s for s in dd["epoch_seconds"]]
        t_sps = [n / s for s in tt["epoch_seconds"]]
        rows.append("| %s training, samples/s (median of %d epochs) | %.0f | %.0f | %.2fx | damo %.0f-%.0f, PyTorch "
                    "%.0f-%.0f; PyTorch: %s |" % (wid, len(d_sps), statistics.median(d_sps), statistics.median(t_sps),
                                                 statistics.median(d_sps) / statistics.median(t_sps), min(d_sps),
                                                 max(d_sps), min(t_sps), max(t_sps), w["torch_config"]))
        rows.append("| %s first-batch loss (same initial weights) | %.6f | %.6f | | must agree before timing |"
                    % (wid, dd["first_loss"], tt["first_loss"]))
        if "test_accuracy" in dd:
            rows.append("| %s test accuracy after %d epochs | %.4f | %.4f | %+.4f | %s; %.1f s vs %.1f s |"
                        % (wid, dd["accuracy_epochs"], dd["test_accuracy"], tt["test_accuracy"],
                           dd["test_accuracy"] - tt["test_accuracy"], w["config"], dd["accuracy_seconds"],
                           tt["accuracy_seconds"]))
        rows.append(rss_row(wid, dd, tt))
    w = r.get("W4")
    if w:
        dd, tt = w["damo"], w["torch"]
        if "date" in w:
            rows.append(measured_row("W4", w["date"], w.get("machine")))
        d_tps, t_tps = tokens_per_s(dd), tokens_per_s(tt)
        rows.append("| W4 training, tokens/s (median step of %d) | %.0f | %.0f | %.2fx | %s; PyTorch: %s |"
                    % (w["steps"], d_tps, t_tps, d_tps / t_tps, w["config"], w["torch_config"]))
        rows.append("| W4 validation loss at the initial weights | %.5f | %.5f | | must agree before timing |"
                    % (dd["first_loss"], tt["first_loss"]))
        rows.append("| W4 validation loss after %d steps (%d tokens) | %.4f | %.4f | %+.2f%% | same recipe and "
                    "weights, own window draws |" % (w["steps"], w["steps"] * dd["tokens_per_step"], dd["val_loss"],
                                                     tt["val_loss"], 100 * (dd["val_loss"] / tt["val_loss"] - 1)))
        rows.append(rss_row("W4", dd, tt))
    w = r.get("W5")
    if w:
        dd, tt = w["damo"], w["torch"]
        if "date" in w:
            rows.append(measured_row("W5", w["date"], w.get("machine")))
        d_sps, t_sps = sequences_per_s(dd), sequences_per_s(tt)
        rows.append("| W5 training, sequences/s (median step of %d) | %.1f | %.1f | %.2fx | %s, batch %d x %d; "
                    "PyTorch: %s |" % (dd["steps"], d_sps, t_sps, d_sps / t_sps, w["config"], dd["batch"],
                                       dd["seq_len"], w["torch_config"]))
        rows.append("| W5 first-batch loss (same initial weights, no dropout) | %.6f | %.6f | | must agree before "
                    "timing |" % (dd["first_loss"], tt["first_loss"]))
        if "test_f1" in dd and "test_f1" in tt:
            rows.append("| W5 test F1 after %d epoch(s) from random initialisation | %.4f | %.4f | %+.4f | accuracy "
                        "%.4f vs %.4f, %d test mails |" % (dd["epochs"], dd["test_f1"], tt["test_f1"],
                                                          dd["test_f1"] - tt["test_f1"], dd["test_accuracy"],
                                                          tt["test_accuracy"], dd["test_examples"]))
        rows.append(rss_row("W5", dd, tt))
    if r.get("W6"):
        rows += w6_rows(r["W6"])
    d = r.get("D")
    if d:
        rows += distributed_rows(d)
    if r.get("B"):
        rows += bf16_rows(r["B"])
    if r.get("Q"):
        rows += int8_rows(r["Q"])
    if r.get("QG"):
        import gpt2_blocks
        rows += gpt2_blocks.rows(r["QG"])
    if r.get("QB"):
        import bert_int8
        rows += bert_int8.rows(r["QB"])
    if r.get("P"):
        import prune
        rows += prune.rows(r["P"])
    if r.get("KD"):
        import distill
        rows += distill.rows(r["KD"])
    if r.get("KT"):
        import distill
        rows += distill.rows_text(r["KT"])
    if r.get("DP"):
        import privacy
        rows += privacy.rows(r["DP"])
    if r.get("C"):
        import contention
        rows += [measured_row("C (contention)", r["C"]["date"], r["C"].get("machine"))] + contention.rows(r["C"])
    return "\n".join(rows)


def distributed_rows(d):
    """D1-D3: damo's ranks against damo's one process (the 'PyTorch' column holds the one-process figure), then
    damo's ranks against PyTorch DDP."""
    rows = [measured_row("D", d["date"], d.get("machine"))]
    n, t, k = d["ranks"], d["threads"], d["threads_per_rank"]
    one = tokens_per_s(d["d1_one"])
    for key, what in (("d1_ranks", ""), ("d1_zero", ", ZeRO-1"), ("d1_buckets", ", 4 MB buckets")):
        side = d[key]
        tps = tokens_per_s(side)
        rows.append("| D1 W4 %d ranks x %d thread%s against 1 process x %d threads, tokens/s (damo ranks / damo one "
                    "process) | %.0f | %.0f | %.2fx | goal >= 0.95; %d buckets, %.1f MB reduced per step, exposed "
                    "communication %.1f ms per step of %.0f ms, first step's blocking reduction %.1f ms (%.0f%% hidden)"
                    " |" % (n, k, what, t, tps, one, tps / one, side["buckets"], side["bytes_per_step"] / 1e6,
                            1e3 * side["exposed_comm_seconds"], 1e3 * statistics.median(side["step_seconds"][3:]),
                            1e3 * side["blocking_comm_seconds"], 100 * side["hidden_share"]))
    ddp, dd = d["d2_ddp"], d["d1_ranks"]
    rows.append("| D2 W4 %d ranks x %d thread, tokens/s: damo against PyTorch DDP (gloo) | %.0f | %.0f | %.2fx | goal "
                ">= 1.3; same weights, data and recipe, first validation loss %.5f vs %.5f |"
                % (n, k, tokens_per_s(dd), tokens_per_s(ddp), tokens_per_s(dd) / tokens_per_s(ddp), dd["first_loss"],
                   ddp["first_loss"]))
    ddp_rss = max(ddp["peak_rss_mb_per_rank"])
    rows.append("| D2 peak RSS of the largest rank, MB | %.0f | %.0f | %.2fx less | goal: below DDP's |"
                % (dd["peak_rss_kb_max_rank"] / 1024, ddp_rss, ddp_rss / (dd["peak_rss_kb_max_rank"] / 1024)))
    w1o, w1r = d["d3_w1_one"], d["d3_w1_ranks"]
    so, sr = statistics.median(w1o["epoch_seconds"]), statistics.median(w1r["epoch_seconds"])
    rows.append("| D3 W1 %d ranks x %d thread against 1 process x %d threads, samples/s | %.0f | %.0f | %.2fx | goal "
                ">= 0.95; median epoch of the faster round |"
                % (n, k, t, w1r["train_examples"] / sr, w1o["train_examples"] / so, so / sr))
    w5o, w5r = d["d3_w5_one"], d["d3_w5_ranks"]
    rows.append("| D3 W5 %d ranks x %d thread against 1 process x %d threads, sequences/s | %.1f | %.1f | %.2fx | goal "
                ">= 0.95; %d probe steps |" % (n, k, t, sequences_per_s(w5r), sequences_per_s(w5o),
                                              sequences_per_s(w5r) / sequences_per_s(w5o), w5r["steps"]))
    return rows


if __name__ == "__main__":
    main(sys.argv)
