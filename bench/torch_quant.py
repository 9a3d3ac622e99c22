"""PyTorch's side of Q1 (int8 inference of a trained classifier), run by torch_bench.py.

  torch_bench.py quant THREADS MODEL_DIR [--calibration N] [--repeats R]

MODEL_DIR is a trained f32 damo model directory (config.json + model.safetensors) of
rescaling, flatten, dense, conv2d, pooling and ReLU layers (the W1 MLP, the W2 CNN). The same weights are loaded into
torch, then quantised as a PyTorch user would: eager-mode static post-training quantisation
(torch.ao.quantization: Linear + ReLU fused, the engine's default qconfig, per-channel int8
weights where the engine has them), calibrated on the same N training examples damo's
`quantize` spreads over the split, for each quantised engine this build has. The whole test
split is predicted at batch 64, R times (median), forward only, for f32 and each engine.
"""
import statistics
import time

import torch

from torch_bench import load_split, load_workload, model_from_config


def quantised(f32_seq, engine, calib):
    """f32_seq quantised as eager-mode PTQ wants it: the layers before the first Linear or
    Conv2d (rescaling, flatten, a layout permute) stay f32, torch's quantising module
    (torch.ao.quantization.QuantStub) turns their output into int8, the body runs int8
    (Linear/Conv2d + ReLU fused; pooling and flatten on int8 tensors), and the matching
    dequantising module turns the logits back into f32."""
    mods = list(f32_seq)
    kinds = (torch.nn.Linear, torch.nn.Conv2d)
    first = next(i for i, m in enumerate(mods) if isinstance(m, kinds))
    prefix, body = torch.nn.Sequential(*mods[:first]), torch.nn.Sequential(*mods[first:])
    pairs = [[str(i), str(i + 1)] for i in range(len(body) - 1)
             if isinstance(body[i], kinds) and isinstance(body[i + 1], torch.nn.ReLU)]
    model = torch.nn.Sequential(prefix, torch.ao.quantization.QuantStub(), body,
                                torch.ao.quantization.DeQuantStub()).eval()
    if pairs:
        torch.ao.quantization.fuse_modules(model[2], pairs, inplace=True)
    torch.backends.quantized.engine = engine
    model.qconfig = torch.ao.quantization.get_default_qconfig(engine)
    model[0].qconfig = None
    torch.ao.quantization.prepare(model, inplace=True)
    with torch.no_grad():
        for i in range(0, len(calib), 64):
            model(calib[i:i + 64])
    return torch.ao.quantization.convert(model, inplace=True)


def rate(model, x, y, repeats, batch=64):
    times = []
    with torch.no_grad():
        for r in range(repeats + 1):  # the first pass untimed
            t0 = time.perf_counter()
            pred = torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(y), batch)])
            if r:
                times.append(time.perf_counter() - t0)
    return {"examples_per_s": len(y) / statistics.median(times), "accuracy": (pred == y).float().mean().item(),
            "seconds": [round(t, 4) for t in times]}


def bench_quant(threads, model_dir, calibration=2048, repeats=3):
    torch.set_num_threads(threads)
    config, weights = load_workload(model_dir)
    f32 = model_from_config(config, weights).eval()
    xtr, _ = load_split("train")
    xte, yte = load_split("test")
    step = len(xtr) // min(calibration, len(xtr))
    calib = xtr[::step][:calibration]  # the examples damo's calibration reads
    res = {"threads": threads, "f32": rate(f32, xte, yte, repeats), "engines": {}}
    for engine in ("fbgemm", "x86", "onednn", "qnnpack"):
        if engine not in torch.backends.quantized.supported_engines:
            continue
        try:
            res["engines"][engine] = rate(quantised(f32, engine, calib), xte, yte, repeats)
        except (RuntimeError, AssertionError) as e:  # an engine without a kernel for this shape
            res["engines"][engine] = {"error": str(e)[:200]}
    ok = {k: v for k, v in res["engines"].items() if "examples_per_s" in v}
    if ok:
        res["best_engine"] = max(ok, key=lambda k: ok[k]["examples_per_s"])
    return res
