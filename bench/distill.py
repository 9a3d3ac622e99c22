"""KD: knowledge distillation (issue 23), the stronger CNN into the W1 MLP on Fashion-MNIST.

Protocol (every figure measured in the same run):
 1. the teacher: the stronger CNN (examples/configs/cnn_bn_aug_fashion_mnist.json: batch norm,
    augmentation, 15 epochs on 90% of the training rows; KD_TEACHER=CONFIG names another);
 2. temperature and alpha chosen on a validation split (the last 10% of the training rows),
    seed 1, from a small grid; the test split is not looked at;
 3. the W1 MLP trained alone and distilled with the chosen settings, for W1's budget, on all
    60,000 training rows, seeds 1-3; the test accuracy of each.

usage (from bench/run.py, BENCH_ONLY=KD): run(damo, work, env) -> dict; rows(result) -> table rows
"""
import csv
import os
import re
import statistics
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TEACHER = os.environ.get("KD_TEACHER", "examples/configs/cnn_bn_aug_fashion_mnist.json")
STUDENT = "examples/configs/mlp_fashion_mnist.json"
GRID = [(t, a) for t in (2.0, 4.0, 8.0) for a in (0.5, 0.9)]
SEEDS = (1, 2, 3)


def _damo(damo, args, env):
    p = subprocess.run([damo] + args, capture_output=True, text=True, env=dict(os.environ, **env))
    if p.returncode != 0:
        raise RuntimeError("damo %s failed:\n%s%s" % (" ".join(args), p.stdout, p.stderr))
    return p.stdout


def _test_accuracy(out):
    m = re.search(r"test_accuracy: ([0-9.]+)", out)
    return float(m.group(1))


def _last_val_accuracy(folder):
    with open(os.path.join(folder, "history.csv")) as f:
        return float(list(csv.DictReader(f))[-1]["val_accuracy"])


def run(damo, work, env):
    teacher = os.path.join(work, "kd_teacher")
    print("KD: the teacher (%s)" % TEACHER, flush=True)
    teacher_acc = _test_accuracy(_damo(damo, ["train", "--config", os.path.join(ROOT, TEACHER), "--data",
                                              "fashion-mnist", "--out", teacher, "--overwrite", "--verbose", "0"], env))
    student = os.path.join(ROOT, STUDENT)
    out_dir = os.path.join(work, "kd_student")
    common = ["--data", "fashion-mnist", "--out", out_dir, "--overwrite", "--verbose", "0"]
    print("KD: temperature and alpha on the validation split", flush=True)
    _damo(damo, ["train", "--config", student, "--seed", "1", "--validation-split", "0.1"] + common, env)
    grid = {"alone": _last_val_accuracy(out_dir)}
    for t, a in GRID:
        _damo(damo, ["distill", "--teacher", teacher, "--student", student, "--temperature", str(t), "--alpha", str(a),
                     "--seed", "1", "--validation-split", "0.1"] + common, env)
        grid["T %g alpha %g" % (t, a)] = _last_val_accuracy(out_dir)
    best = max(GRID, key=lambda ta: grid["T %g alpha %g" % ta])
    alone, distilled = [], []
    for seed in SEEDS:
        print("KD: seed %d, alone and distilled (T %g, alpha %g)" % (seed, best[0], best[1]), flush=True)
        alone.append(_test_accuracy(_damo(damo, ["train", "--config", student, "--seed", str(seed)] + common, env)))
        distilled.append(_test_accuracy(_damo(damo, ["distill", "--teacher", teacher, "--student", student,
                                                     "--temperature", str(best[0]), "--alpha", str(best[1]), "--seed",
                                                     str(seed)] + common, env)))
    return {"teacher": TEACHER, "teacher_test_accuracy": teacher_acc, "validation_grid": grid, "temperature": best[0], "alpha": best[1],
            "alone": alone, "distilled": distilled}


def rows(r):
    mean_d, mean_a = statistics.mean(r["distilled"]), statistics.mean(r["alone"])
    grid = ", ".join("%s %.4f" % (k, v) for k, v in r["validation_grid"].items())
    return ["| KD measured | %s | | | %s |" % (r["date"], r.get("machine", "machine not recorded")),
            "| KD W1 MLP distilled from %s (teacher test accuracy %.4f), test accuracy, mean of seeds 1-3 | "
            "%.4f | %.4f (alone) | %+.2f points | distilled %s, alone %s; T %g, alpha %g chosen on the validation "
            "split (val accuracy: %s); `BENCH_ONLY=KD make bench` |"
            % (os.path.basename(r.get("teacher", "cnn_fashion_mnist.json")), r["teacher_test_accuracy"], mean_d, mean_a, 100 * (mean_d - mean_a),
               " / ".join("%.4f" % v for v in r["distilled"]), " / ".join("%.4f" % v for v in r["alone"]),
               r["temperature"], r["alpha"], grid)]
