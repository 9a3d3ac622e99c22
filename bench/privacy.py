"""DP: differentially private training (issue 26), every figure measured in the same run.

 1. the cost of DP-SGD: the tempered-sigmoid (tanh) CNN (examples/configs/dp_cnn_fashion_mnist.json) for
    2 epochs without privacy and with it (clip 0.12, noise 2.2), ms per step side by side;
 2. Fashion-MNIST at (epsilon 3, delta 1e-5): the config's 40 epochs, test accuracy, the noise
    the target asked for and epsilon by both conversions;
 3. the epsilon-vs-accuracy curve: `damo train --dp-sweep` (a model per epsilon), bench/dp_curve.png;
 4. the spam BiLSTM (examples/configs/spam_bilstm.json) without privacy and at epsilon 8: test F1;
 5. GPT-2 (W4's shape, examples/configs/gpt2_w4.json) on Moby Dick for GPT_STEPS steps of 64 windows
    (batch 8 x accum 8) without privacy and at epsilon 8 (an example: a disjoint window of 129 tokens,
    Poisson-sampled): tokens/s side by side and the validation loss each reaches;
 6. federated averaging of McMahan et al.'s 2NN (examples/configs/fed_2nn_fashion_mnist.json) over 100
    clients, 10 a round: rounds to 0.85 test accuracy for FedAvg (E 5, B 10) on 2 label shards a client
    and on an IID split, and for FedSGD (one full-batch step per client) on the shards.

usage (from bench/run.py, BENCH_ONLY=DP): run(damo, work, env) -> dict; rows(result) -> table rows.
DP_PARTS=cost,cnn,sweep,spam,gpt2,fed reruns only those parts and keeps the others from bench/results.json.
"""
import json
import os
import re

from prune import _damo  # one way to run damo for every bench section

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CNN = os.path.join(ROOT, "examples/configs/dp_cnn_fashion_mnist.json")
SPAM = os.path.join(ROOT, "examples/configs/spam_bilstm.json")
SWEEP = "1,2,4,8"
CURVE = "dp_curve.png"
CLIP = "0.12"
FED = os.path.join(ROOT, "examples/configs/fed_2nn_fashion_mnist.json")
# (name, extra options, round cap); learning rates fixed beforehand: 0.1 (the config's) for FedAvg,
# 0.5 for FedSGD, whose one full-batch step per round wants a longer one
FED_RUNS = (("FedAvg, 2 label shards", ["--partition", "shards:2"], 400),
            ("FedAvg, IID", ["--partition", "iid"], 400),
            ("FedSGD, 2 label shards", ["--partition", "shards:2", "--algorithm", "fedsgd", "--lr", "0.5"], 6000))
SPAM_DP = ["--dp-clip", "1", "--dp-epsilon", "8", "--batch-size", "128", "--epochs", "6", "--lr", "0.01"]
GPT2 = os.path.join(ROOT, "examples/configs/gpt2_w4.json")
GPT_STEPS = 60
# one recipe for both runs, fixed beforehand: 64 windows a step, a short warm-up, a rate for few steps
GPT_RECIPE = ["--batch-size", "8", "--grad-accum", "8", "--steps", str(GPT_STEPS), "--warmup-steps", "5", "--lr", "1e-3",
              "--eval-every", str(GPT_STEPS), "--log-every", "10", "--checkpoint-every", "0"]
GPT_DP = ["--dp-clip", "1", "--dp-epsilon", "8"]


def _ms_per_step(text):
    return sum(float(v) for v in re.findall(r"(\d+)ms/step", text)) / max(1, len(re.findall(r"ms/step", text)))


def run(damo, work, env):
    parts = [p for p in os.environ.get("DP_PARTS", "").split(",") if p]
    out = {}
    if parts and os.path.exists(os.path.join(HERE, "results.json")):
        with open(os.path.join(HERE, "results.json")) as f:
            out = {k: v for k, v in json.load(f).get("DP", {}).items() if k not in ("date", "machine")}
    wanted = lambda part: not parts or part in parts
    train = ["train", "--data", "fashion-mnist", "--overwrite", "--verbose", "2"]
    if wanted("cost"):
        _cost(damo, work, env, train, out)
    if wanted("cnn"):
        _cnn(damo, work, env, train, out)
    if wanted("sweep"):
        _sweep(damo, work, env, out)
    if wanted("spam"):
        _spam(damo, work, env, out)
    if wanted("gpt2"):
        _gpt2(damo, work, env, out)
    if wanted("fed"):
        _fed(damo, work, env, out)
    return out


def _cost(damo, work, env, train, out):
    print("DP: cost of DP-SGD against plain SGD, 2 epochs each", flush=True)
    plain = _damo(damo, train + ["--config", CNN, "--out", os.path.join(work, "dp_plain"), "--epochs", "2"], env)
    private = _damo(damo, train + ["--config", CNN, "--out", os.path.join(work, "dp_cost"), "--epochs", "2",
                                   "--dp-clip", CLIP, "--dp-noise", "2.2"], env)
    out["cost"] = [_ms_per_step(plain), _ms_per_step(private)]


def _cnn(damo, work, env, train, out):
    print("DP: Fashion-MNIST at epsilon 3 (40 epochs)", flush=True)
    text = _damo(damo, train + ["--config", CNN, "--out", os.path.join(work, "dp_cnn"), "--dp-clip", CLIP,
                                "--dp-epsilon", "3"], env)
    m = re.search(r"privacy: epsilon ([0-9.]+) at delta ([0-9.e-]+) after (\d+) DP-SGD steps .*noise multiplier "
                  r"([0-9.]+)", text)
    out["cnn"] = {"accuracy": float(re.search(r"test_accuracy: ([0-9.]+)", text).group(1)), "epsilon": float(m.group(1)),
                  "steps": int(m.group(3)), "noise": float(m.group(4)),
                  "ms_per_step": _ms_per_step(text)}


def _sweep(damo, work, env, out):
    print("DP: the epsilon sweep %s" % SWEEP, flush=True)
    text = _damo(damo, ["train", "--config", CNN, "--data", "fashion-mnist", "--dp-clip", CLIP, "--dp-sweep", SWEEP,
                        "--dp-curve", os.path.join(HERE, CURVE), "--out", os.path.join(work, "dp_sweep"),
                        "--overwrite", "--verbose", "0"], env)
    out["sweep"] = [(float(e), float(a)) for e, a in re.findall(r"^epsilon ([0-9.]+) .*test accuracy ([0-9.]+)", text,
                                                                 re.M)]


def _spam(damo, work, env, out):
    print("DP: the spam BiLSTM without privacy and at epsilon 8", flush=True)
    out["spam"] = {}
    for name, extra in (("plain", []), ("private", SPAM_DP)):
        text = _damo(damo, ["train", "--config", SPAM, "--data", "spam-assassin", "--out",
                            os.path.join(work, "dp_spam_" + name), "--overwrite", "--verbose", "2"] + extra, env)
        f1 = re.search(r"precision: [0-9.]+ - recall: [0-9.]+ - f1: ([0-9.]+) - roc_auc", text)  # the test report
        eps = re.search(r"privacy: epsilon ([0-9.]+)", text)
        out["spam"][name] = {"f1": float(f1.group(1)) if f1 else None,
                             "accuracy": float(re.search(r"test_accuracy: ([0-9.]+)", text).group(1)),
                             "epsilon": float(eps.group(1)) if eps else None}


def _gpt2(damo, work, env, out):
    out["gpt2"] = {}
    for name, extra in (("plain", []), ("private", GPT_DP)):
        print("DP: GPT-2 W4, %d steps of 64 windows, %s" % (GPT_STEPS, name), flush=True)
        text = _damo(damo, ["train", "--config", GPT2, "--data", "moby-dick", "--out", os.path.join(work, "dp_gpt2_" + name),
                            "--overwrite"] + GPT_RECIPE + extra, env)
        rates = [float(v) for v in re.findall(r"\| (\d+) tokens/s", text)][1:]  # the first window holds start-up
        val = re.findall(r"val loss ([0-9.]+)", text)
        eps = re.search(r"privacy: epsilon ([0-9.]+) .*noise multiplier ([0-9.]+).*sampling rate ([0-9.]+)", text)
        out["gpt2"][name] = {"tokens_per_s": sorted(rates)[len(rates) // 2] if rates else None,
                             "val_loss": float(val[-1]) if val else None,
                             "epsilon": float(eps.group(1)) if eps else None,
                             "noise": float(eps.group(2)) if eps else None, "rate": float(eps.group(3)) if eps else None}


def _fed(damo, work, env, out):
    out["fed"] = []
    for name, extra, cap in FED_RUNS:
        print("DP: %s (to 0.85, at most %d rounds)" % (name, cap), flush=True)
        text = _damo(damo, ["federate", "--config", FED, "--data", "fashion-mnist", "--out", os.path.join(work, "fed"),
                            "--overwrite", "--clients", "100", "--fraction", "0.1", "--rounds", str(cap),
                            "--target-accuracy", "0.85"] + extra, env)
        hit = re.search(r"reached test accuracy [0-9.]+ in (\d+) rounds", text)
        secs = [float(v) for v in re.findall(r" - ([0-9.]+)s - loss", text)]
        best = max(float(v) for v in re.findall(r"test_accuracy: ([0-9.]+)", text))
        out["fed"].append({"name": name, "rounds": int(hit.group(1)) if hit else None, "cap": cap, "best": best,
                           "s_per_round": sum(secs) / max(1, len(secs)), "options": " ".join(extra)})


def rows(r):
    table = ["| DP measured | %s | | | %s |" % (r["date"], r.get("machine", "machine not recorded"))]
    c = r["cost"]
    table.append("| DP DP-SGD step against a plain step, ms/step (tempered-sigmoid CNN, batch 2048) | %.0f | %.0f | "
                 "%.2fx the cost | per-example norms in a second backward pass, then the weighted backward; "
                 "same model and batch, 2 epochs each |" % (c[1], c[0], c[1] / c[0]))
    n = r["cnn"]
    table.append("| DP Fashion-MNIST, test accuracy at epsilon %.3g (delta 1e-5) | %.4f | | | %d steps, noise %.3f, "
                 "clip %s, Poisson sampling q = 2048/60000; goal 0.86 |" % (n["epsilon"], n["accuracy"], n["steps"],
                                                                          n["noise"], CLIP))
    curve = ", ".join("eps %g: %.4f" % tuple(e) for e in r["sweep"])
    table.append("| DP Fashion-MNIST test accuracy against epsilon | %s | | | bench/%s; a model per epsilon, 40 "
                 "epochs each |" % (curve, CURVE))
    s = r["spam"]
    table.append("| DP spam BiLSTM, test F1 at epsilon %.3g against without privacy | %.4f | %.4f | %+.4f | "
                 "accuracy %.4f vs %.4f; `%s` |" % (s["private"]["epsilon"], s["private"]["f1"], s["plain"]["f1"],
                                                  s["private"]["f1"] - s["plain"]["f1"], s["private"]["accuracy"],
                                                  s["plain"]["accuracy"], " ".join(SPAM_DP)))
    g = r.get("gpt2")
    if g:
        p, q = g["private"], g["plain"]
        table.append("| DP GPT-2 W4 (Moby Dick), validation loss after %d steps of 64 windows at epsilon %.3g against "
                     "without privacy | %.4f | %.4f | %+.4f | noise %.3f, Poisson q %.4f over the disjoint windows of 129 "
                     "tokens, delta 1e-5; `%s` |" % (GPT_STEPS, p["epsilon"], p["val_loss"], q["val_loss"],
                                                    p["val_loss"] - q["val_loss"], p["noise"], p["rate"],
                                                    " ".join(GPT_RECIPE + GPT_DP)))
        table.append("| DP GPT-2 W4 step against a plain step, tokens/s (median window) | %.0f | %.0f | %.2fx the cost | "
                     "a norm pass (the tied head by T x T Gram matrices) and a weighted backward; same expected batch |"
                     % (p["tokens_per_s"], q["tokens_per_s"], q["tokens_per_s"] / p["tokens_per_s"]))
    for f in r.get("fed", []):
        table.append("| DP %s (2NN, 100 clients, F 0.1), rounds to 0.85 test accuracy | %s | | | best %.4f; %.2f s a round; "
                     "`damo federate ... %s` |" % (f["name"], f["rounds"] if f["rounds"] else "not in %d" % f["cap"],
                                                  f["best"], f["s_per_round"], f["options"]))
    return table
