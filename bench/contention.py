"""How much of its quiet speed each damo workload keeps while other processes compete for
the cores (issue 22, item 6): quiet, beside one and beside two busy processes (plain CPU
spinners at normal priority), every figure measured in this run. W1-W3 time whole epochs;
W4-W6 (GPT-2, BERT, GPT-2 124M) time a few training steps and take the median of those after
the first. `make bench` runs W1-W5 (BENCH_ONLY=C); W6 takes about 20 minutes and runs only
when named.

  /usr/bin/python3 bench/contention.py BUILD_DIR [W1,W2,W3,W4,W5,W6] [--repeats R]

The environment is passed on (e.g. OMP_WAIT_POLICY=spin to see what passive waiting saves).
Prints one JSON object and a table.
"""
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from run import W4_CONFIG, W5_CONFIG, W6_CONFIG, WORKLOADS, run_json  # noqa: E402

# id -> (damo bench kind, config, extra arguments, unit); probe steps sized to ~10-60 s quiet
STEP_WORKLOADS = {"W4": ("gpt2", W4_CONFIG, ["--probe-steps", "8"], "tokens/s"),
                  "W5": ("bert", W5_CONFIG, ["--probe-steps", "12"], "sequences/s"),
                  "W6": ("gpt2", W6_CONFIG, ["--probe-steps", "3", "--recompute"], "tokens/s")}
DEFAULT = ["W1", "W2", "W3", "W4", "W5"]


def spinners(k):
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(k)]


def rate(wid, out):
    if wid in STEP_WORKLOADS:
        per_step = out["tokens_per_step"] if "tokens_per_step" in out else out["batch"]
        return per_step / statistics.median(out["step_seconds"][1:])
    return statistics.median(out["train_examples"] / s for s in out["epoch_seconds"])


def command(damo, work, wid, repeats):
    init = os.path.join(work, wid.lower() + "_contention_init")
    if wid in STEP_WORKLOADS:
        kind, config, extra, _ = STEP_WORKLOADS[wid]
        return [damo, "bench", kind, "--config", os.path.join(ROOT, config), "--init", init] + extra
    config = next(c for w, c, *_ in WORKLOADS if w == wid)
    return [damo, "bench", "fit", "--config", os.path.join(ROOT, config), "--init", init, "--repeats", str(repeats),
            "--accuracy-epochs", "0"]


def measure(build, wanted, repeats=1):
    damo = os.path.join(build, "damo")
    work = os.path.join(build, "bench")
    os.makedirs(work, exist_ok=True)
    result = {"wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: damo waits passively)"), "workloads": {}}
    for wid in wanted:
        figures = {}
        for busy in (0, 1, 2):
            procs = spinners(busy)
            time.sleep(0.5)
            try:
                out = run_json(command(damo, work, wid, repeats))
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
            figures[busy] = rate(wid, out)
            print("%s beside %d busy: %.1f" % (wid, busy, figures[busy]), file=sys.stderr, flush=True)
        unit = STEP_WORKLOADS[wid][3] if wid in STEP_WORKLOADS else "samples/s"
        result["workloads"][wid] = {"unit": unit, "quiet": figures[0], "one": figures[1], "two": figures[2],
                                    "one_share": figures[1] / figures[0], "two_share": figures[2] / figures[0]}
    return result


def rows(result):
    out = []
    for wid, f in result["workloads"].items():
        out.append("| %s beside 1 / 2 busy processes, %s (quiet %.1f) | %.1f / %.1f | | %.0f%% / %.0f%% of quiet | "
                   "goal >= 45%% / 30%%; OpenMP wait policy: %s |"
                   % (wid, f.get("unit", "samples/s"), f["quiet"], f["one"], f["two"], 100 * f["one_share"],
                      100 * f["two_share"], result["wait_policy"]))
    return out


def main(argv):
    build = argv[1] if len(argv) > 1 else "build"
    wanted = argv[2].split(",") if len(argv) > 2 and not argv[2].startswith("--") else DEFAULT
    repeats = int(argv[argv.index("--repeats") + 1]) if "--repeats" in argv else 1
    result = measure(build, wanted, repeats)
    print(json.dumps(result))
    print("\n".join(rows(result)))


if __name__ == "__main__":
    main(sys.argv)
