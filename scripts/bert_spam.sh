#!/bin/sh
# The BERT spam classifier of issue 7, start to finish: masked-LM pre-training on all three
# text corpora, a domain stage on the SpamAssassin training mails alone, then fine-tuning.
# About 3 h 20 min on 2 cores (pre-training ~3 h, fine-tuning ~5 min).
#
#   sh scripts/bert_spam.sh [BUILD_DIR [OUT_DIR [SEED]]]     (defaults: build bert_spam_run 42)
#
# The stages are the ones measured in bench/RESULTS.md (Notes): each continues the previous
# directory with a fresh warm-up (--init); a stage that finished is not run again, so the chain
# can be restarted after an interruption. Needs `sh scripts/setup.sh --text`.
# Runs are deterministic for a given build, but not across the builds that made the measured
# chain: p3000 was trained just before attention-probability dropout (7ae9d2a), and every stage
# before the dropout op drew its masks counter-based, in parallel (the commit after deecb35),
# so a rerun draws other masks and its figures will not match to the last digit (on the
# deecb35 build the domain stage, rerun from the measured p11000, matched step for step).
set -e
build=${1:-build}
out=${2:-bert_spam_run}
seed=${3:-42}
damo="$build/damo"
config=examples/configs/bert_w5.json
mkdir -p "$out"

run() { # run LOG ARGS...: damo ARGS, shown and logged; fails when damo fails
  log=$1
  shift
  { status=0; "$damo" "$@" 2>&1 || status=$?; echo $status >"$out/.rc"; } | tee "$log"
  [ "$(cat "$out/.rc")" = 0 ]
}

stage() { # stage NAME ARGS...: pre-trains into $out/NAME unless an earlier run finished it
  name=$1
  shift
  if [ -f "$out/$name.done" ]; then
    echo "== $name: finished earlier"
    return
  fi
  echo "== $name"
  run "$out/$name.log" train --config "$config" --pretrain --out "$out/$name" "$@"
  touch "$out/$name.done" # (the directory alone may be a checkpoint of an interrupted run)
}

# General text (Moby Dick, State of the Union, SpamAssassin's training split): 11,000 steps of
# 32 x 128 in three runs (5e-4 from the config, then 3e-4 twice); val masked-LM loss 4.21.
stage p3000 --data moby-dick,sotu,spam-assassin
stage p5000 --data moby-dick,sotu,spam-assassin --init "$out/p3000" --steps 2000 --lr 3e-4
stage p11000 --data moby-dick,sotu,spam-assassin --init "$out/p5000" --steps 6000 --lr 3e-4
# Domain stage: the training mails only, in longer windows (32 x 256, 40 masked slots each).
stage domain --data spam-assassin --init "$out/p11000" --steps 1500 --seq-len 256 --predictions 40 \
  --lr 2e-4 --warmup-steps 100

# Fine-tuning with the config's recipe (T 128, first 64 + last 62 tokens, 3 epochs, AdamW 1e-4):
# keeps the epoch of best validation F1 and scores the test split once.
run "$out/classifier.log" train --config "$config" --data spam-assassin --init "$out/domain" --seed "$seed" \
  --out "$out/classifier"
