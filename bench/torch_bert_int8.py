"""torch_bert_int8.py - PyTorch's side of Q2: a fine-tuned W5 BERT classifier's inference in
f32 and after torch.ao.quantization.quantize_dynamic (nn.Linear -> dynamic int8, PyTorch's
counterpart of `damo quantize` on a BERT directory), on the same weights and the same
encoded test split.

  python3 torch_bert_int8.py MODEL_DIR SPLIT_DIR THREADS [BATCH]

MODEL_DIR is the f32 model `damo train` saved (HuggingFace names); SPLIT_DIR holds the
WordPiece-encoded test split as `damo bench bert` writes it (test_ids/types/mask/labels .i32).
The model is torch_bert.py's BERT with its linear layers as nn.Linear modules (which is what
quantize_dynamic swaps); every engine this PyTorch has is tried and the fastest reported.
Prints one JSON object: accuracy, F1 and examples/s (median of 3 passes) for f32 and int8."""
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "ref"))
from torch_bert import Bert, f1_score, load_split  # noqa: E402
from torch_bench import read_safetensors  # noqa: E402

LINEARS = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
           "intermediate.dense", "output.dense"]


class LinearBert(Bert):
    """torch_bert.py's model with each linear layer an nn.Linear (quantize_dynamic's unit)."""

    def __init__(self, config, weights):
        super().__init__(config, weights)
        names = ["encoder.layer.%d.%s" % (i, n) for i in range(self.L) for n in LINEARS] + ["pooler.dense", "classifier"]
        self.lin = torch.nn.ModuleDict()
        for n in names:
            w = self.p(n + ".weight")
            m = torch.nn.Linear(w.shape[1], w.shape[0])
            m.weight.data.copy_(w.data)
            m.bias.data.copy_(self.p(n + ".bias").data)
            self.lin[n.replace(".", "__")] = m

    def linear(self, x, name):
        return self.lin[name.replace(".", "__")](x)


def run(model, split, batch):
    ids, types, mask, labels = split
    n, seconds, preds = len(labels), [], None
    with torch.no_grad():
        for _ in range(3):
            t0, out = time.perf_counter(), []
            for i in range(0, n, batch):
                out.append(model(ids[i:i + batch], types[i:i + batch], mask[i:i + batch]).argmax(-1))
            seconds.append(time.perf_counter() - t0)
            preds = torch.cat(out)
    return {"accuracy": float((preds == labels).float().mean()), "f1": f1_score(preds, labels),
            "examples_per_s": n / statistics.median(seconds), "examples": n}


def main():
    model_dir, split_dir, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    torch.set_num_threads(threads)
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    config.setdefault("layer_norm_eps", 1e-12)
    tensors, _ = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    weights = {(k[5:] if k.startswith("bert.") else k): v for k, v in tensors.items() if not k.startswith("cls.")}
    split = load_split(split_dir, "test", 128)
    model = LinearBert(config, weights).eval()
    out = {"f32": run(model, split, batch), "batch": batch, "threads": threads, "torch": torch.__version__}
    best = None
    for engine in torch.backends.quantized.supported_engines:
        if engine == "none":
            continue
        torch.backends.quantized.engine = engine
        q = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        r = run(q, split, batch)
        r["engine"] = engine
        if best is None or r["examples_per_s"] > best["examples_per_s"]:
            best = r
    out["int8"] = best
    print(json.dumps(out))


if __name__ == "__main__":
    main()
