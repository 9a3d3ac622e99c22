"""KD: knowledge distillation (issue 23), the stronger CNN into the W1 MLP on Fashion-MNIST;
KT: the fine-tuned W5 BERT into the spam BiLSTM on SpamAssassin.

Protocol (every figure measured in the same run):
 1. the teacher: the stronger CNN (examples/configs/cnn_bn_aug_fashion_mnist.json: batch norm,
    augmentation, 15 epochs on 90% of the training rows; KD_TEACHER=CONFIG names another);
 2. for each student budget in KD_EPOCHS (default "30,10": 30 epochs, where the MLP alone
    overfits, 97% of its training rows right by the end, and W1's own 10), temperature
    and alpha chosen on a validation split (the last 10% of the training rows), seed 1, from a
    small grid; the test split is not looked at;
 3. the W1 MLP trained alone and distilled with the chosen settings, for that budget, on all
    60,000 training rows, seeds 1-3; the test accuracy of each.

KT (the same protocol on text; each model reads the mails its own way, BERT through WordPiece,
the BiLSTM through its vocabulary): the teacher is W5 (examples/configs/bert_w5.json) fine-tuned
KT_BERT_EPOCHS (4) epochs (at 2 its validation F1, 0.928, is below the student's own); T and alpha are chosen by the validation split's F1 (seed 1) from
T in {1, 2, 4} x alpha in {0.5, 0.9}; then the BiLSTM (examples/configs/spam_bilstm.json, its 3
epochs) alone and distilled with seeds 1-3, and the test split's F1 of each.

usage (from bench/run.py, BENCH_ONLY=KD or KT): run(damo, work, env) / run_text(damo, work, env) -> dict;
rows(result) / rows_text(result) -> table rows
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
GRID = [(t, a) for t in (1.0, 2.0, 4.0, 8.0) for a in (0.5, 0.9)]  # T 1 as KT's: the MLP did best there
SEEDS = (1, 2, 3)
BUDGETS = tuple(int(e) for e in os.environ.get("KD_EPOCHS", "30,10").split(","))

TEXT_TEACHER = "examples/configs/bert_w5.json"
TEXT_STUDENT = "examples/configs/spam_bilstm.json"
TEXT_GRID = [(t, a) for t in (1.0, 2.0, 4.0) for a in (0.5, 0.9)]


def _damo(damo, args, env):
    p = subprocess.run([damo] + args, capture_output=True, text=True, env=dict(os.environ, **env))
    if p.returncode != 0:
        raise RuntimeError("damo %s failed:\n%s%s" % (" ".join(args), p.stdout, p.stderr))
    return p.stdout


def _test_accuracy(out):
    return float(re.search(r"test_accuracy: ([0-9.]+)", out).group(1))


def _test_f1(out):
    return float(re.search(r"- f1: ([0-9.]+)", out).group(1))


def _last(folder, column):
    with open(os.path.join(folder, "history.csv")) as f:
        return float(list(csv.DictReader(f))[-1][column])


def _compare(damo, env, tag, teacher, student, common, val_args, grid, val_column, test_of):
    """T and alpha by the validation figure (seed 1), then alone vs distilled for SEEDS on test."""
    out_dir = common[common.index("--out") + 1]
    print("%s: temperature and alpha on the validation split" % tag, flush=True)
    _damo(damo, ["train", "--config", student, "--seed", "1"] + val_args + common, env)
    scores = {"alone": _last(out_dir, val_column)}
    for t, a in grid:
        _damo(damo, ["distill", "--teacher", teacher, "--student", student, "--temperature", str(t), "--alpha", str(a),
                     "--seed", "1"] + val_args + common, env)
        scores["T %g alpha %g" % (t, a)] = _last(out_dir, val_column)
    best = max(grid, key=lambda ta: scores["T %g alpha %g" % ta])
    alone, distilled = [], []
    for seed in SEEDS:
        print("%s: seed %d, alone and distilled (T %g, alpha %g)" % (tag, seed, best[0], best[1]), flush=True)
        alone.append(test_of(_damo(damo, ["train", "--config", student, "--seed", str(seed)] + common, env)))
        distilled.append(test_of(_damo(damo, ["distill", "--teacher", teacher, "--student", student, "--temperature",
                                              str(best[0]), "--alpha", str(best[1]), "--seed", str(seed)] + common, env)))
    return {"validation_grid": scores, "temperature": best[0], "alpha": best[1], "alone": alone, "distilled": distilled}


def run(damo, work, env):
    teacher = os.path.join(work, "kd_teacher")
    print("KD: the teacher (%s)" % TEACHER, flush=True)
    teacher_acc = _test_accuracy(_damo(damo, ["train", "--config", os.path.join(ROOT, TEACHER), "--data",
                                              "fashion-mnist", "--out", teacher, "--overwrite", "--verbose", "0"], env))
    budgets = {}
    for epochs in BUDGETS:
        common = ["--data", "fashion-mnist", "--epochs", str(epochs), "--out", os.path.join(work, "kd_student"),
                  "--overwrite", "--verbose", "0"]
        budgets[str(epochs)] = _compare(damo, env, "KD (%d epochs)" % epochs, teacher, os.path.join(ROOT, STUDENT),
                                        common, ["--validation-split", "0.1"], GRID, "val_accuracy", _test_accuracy)
    return dict(budgets=budgets, teacher=TEACHER, teacher_test_accuracy=teacher_acc)


def run_text(damo, work, env):
    teacher = os.path.join(work, "kt_teacher")
    epochs = int(os.environ.get("KT_BERT_EPOCHS", "4"))
    print("KT: the BERT teacher, %d epochs" % epochs, flush=True)
    out = _damo(damo, ["train", "--config", os.path.join(ROOT, TEXT_TEACHER), "--data", "spam-assassin", "--out", teacher,
                       "--epochs", str(epochs), "--overwrite"], env)
    teacher_f1 = float(re.search(r"test \(weights of epoch.*F1 ([0-9.]+)", out).group(1))
    common = ["--data", "spam-assassin", "--out", os.path.join(work, "kt_student"), "--overwrite", "--verbose", "0"]
    r = _compare(damo, env, "KT", teacher, os.path.join(ROOT, TEXT_STUDENT), common, [], TEXT_GRID, "val_f1", _test_f1)
    return dict(r, teacher=TEXT_TEACHER, teacher_epochs=epochs, teacher_test_f1=teacher_f1)


def _rows(key, r, what, delta, note):
    mean_d, mean_a = statistics.mean(r["distilled"]), statistics.mean(r["alone"])
    grid = ", ".join("%s %.4f" % (k, v) for k, v in r["validation_grid"].items())
    return ["| %s measured | %s | | | %s |" % (key, r["date"], r.get("machine", "machine not recorded")),
            "| %s %s, mean of seeds 1-3 | %.4f | %.4f (alone) | %s | distilled %s, alone %s; T %g, alpha %g chosen on "
            "the validation split (%s: %s); `BENCH_ONLY=%s make bench` |"
            % (key, what, mean_d, mean_a, delta(mean_d - mean_a), " / ".join("%.4f" % v for v in r["distilled"]),
               " / ".join("%.4f" % v for v in r["alone"]), r["temperature"], r["alpha"], note, grid, key)]


def rows(r):
    budgets = r.get("budgets") or {"10": r}  # a run from before the budgets: W1's 10 epochs
    out = []
    for epochs, b in budgets.items():
        got = _rows("KD", dict(b, date=r["date"], machine=r.get("machine", "machine not recorded")),
                    "W1 MLP (%s epochs) distilled from %s (teacher test accuracy %.4f), test accuracy"
                    % (epochs, os.path.basename(r.get("teacher", "cnn_fashion_mnist.json")), r["teacher_test_accuracy"]),
                    lambda d: "%+.2f points" % (100 * d), "val accuracy")
        out += got if not out else got[1:]  # one "measured" line
    return out


def rows_text(r):
    return _rows("KT", r, "spam BiLSTM distilled from the W5 BERT (%d epochs, teacher test F1 %.4f), test F1"
                 % (r["teacher_epochs"], r["teacher_test_f1"]), lambda d: "%+.4f" % d, "val F1")
