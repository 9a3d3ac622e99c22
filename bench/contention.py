"""How much of its quiet speed each damo workload keeps while other processes compete for
the cores (issue 22, item 6): W1-W3 one timed epoch each, quiet, beside one and beside two
busy processes (plain CPU spinners at normal priority), every figure measured in this run.

  /usr/bin/python3 bench/contention.py BUILD_DIR [W1,W2,W3] [--repeats R]

The environment is passed on (e.g. OMP_WAIT_POLICY=passive to compare wait policies).
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
from run import WORKLOADS, run_json  # noqa: E402


def spinners(k):
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(k)]


def samples_per_s(out):
    return statistics.median(out["train_examples"] / s for s in out["epoch_seconds"])


def main(argv):
    build = argv[1] if len(argv) > 1 else "build"
    wanted = argv[2].split(",") if len(argv) > 2 and not argv[2].startswith("--") else ["W1", "W2", "W3"]
    repeats = int(argv[argv.index("--repeats") + 1]) if "--repeats" in argv else 1
    damo = os.path.join(build, "damo")
    work = os.path.join(build, "bench")
    os.makedirs(work, exist_ok=True)
    result = {"wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"), "workloads": {}}
    for wid, config, _, _, _ in WORKLOADS:
        if wid not in wanted:
            continue
        init = os.path.join(work, wid.lower() + "_contention_init")
        figures = {}
        for busy in (0, 1, 2):
            procs = spinners(busy)
            time.sleep(0.5)
            try:
                out = run_json([damo, "bench", "fit", "--config", os.path.join(ROOT, config), "--init", init,
                                "--repeats", str(repeats), "--accuracy-epochs", "0"])
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
            figures[busy] = samples_per_s(out)
            print("%s beside %d busy: %.0f samples/s" % (wid, busy, figures[busy]), file=sys.stderr, flush=True)
        result["workloads"][wid] = {"quiet": figures[0], "one": figures[1], "two": figures[2],
                                    "one_share": figures[1] / figures[0], "two_share": figures[2] / figures[0]}
    print(json.dumps(result))
    for wid, f in result["workloads"].items():
        print("| %s (OMP_WAIT_POLICY %s) | %.0f | %.0f (%.0f%%) | %.0f (%.0f%%) |"
              % (wid, result["wait_policy"], f["quiet"], f["one"], 100 * f["one_share"], f["two"],
                 100 * f["two_share"]))


if __name__ == "__main__":
    main(sys.argv)
