#!/bin/sh
# bench/serve.sh - what damo serve's batching and slots buy, measured side by side in one run
# on loopback (nothing else may run meanwhile: the machine has 2 cores).
#   sh bench/serve.sh [BUILD]      (default build; needs wrk: apt-get install wrk)
# 1. The W1 MLP and the W2 CNN (each trained for one epoch here) under wrk, 16 connections
#    each POSTing one 28x28 example to /v1/predict for 10 s: dynamic batching (--max-batch 32
#    --batch-wait-ms 2) against one row per model run (--max-batch 1).
# 2. GPT-2 124M (gpt2_124m.json after one training step; needs the GPT-2 vocabulary and
#    Moby Dick): 4 concurrent streamed completions of 64 tokens on 4 slots (their tokens in one
#    step of the 4 caches) against 1 slot (one request after another), total tokens/s.
# Prints a Markdown table for bench/RESULTS.md.
set -e
build=${1:-build}
damo="$build/damo"
command -v wrk >/dev/null 2>&1 || { echo "serve.sh: wrk is missing (apt-get install wrk)" >&2; exit 2; }
work=$(mktemp -d /tmp/damo_bench_serve_XXXXXX)
trap 'pkill -TERM -f "damo serve --model $work" 2>/dev/null; rm -rf "$work"' EXIT

start() { # MODEL ARGS...: starts the server, sets $port
  log="$work/serve.log"
  "$damo" serve --model "$@" --port 0 > "$log" 2>&1 &
  for _ in $(seq 100); do
    port=$(sed -n 's/.*http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$log" | head -n 1)
    [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "serve.sh: the server did not start:" >&2
  cat "$log" >&2
  exit 1
}
stop() { pkill -TERM -f "damo serve --model $1" 2>/dev/null; sleep 0.5; }

for m in mlp cnn; do
  "$damo" train --config "examples/configs/${m}_fashion_mnist.json" --data fashion-mnist --epochs 1 --out "$work/$m" \
    --verbose 0 > /dev/null
done
awk 'BEGIN { printf "{\"inputs\": [["; for (i = 0; i < 784; i++) printf "%s%d", i ? "," : "", (i * 37) % 256; print "]]}" }' \
  > "$work/example.json"
cat > "$work/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/example.json")
wrk.body = f:read("*a")
f:close()
EOF
echo "| damo serve, 16 connections, one example per request (wrk, 10 s) | requests/s | latency p50 | p99 |"
echo "| --- | --- | --- | --- |"
for m in mlp cnn; do
for mode in "--max-batch 32 --batch-wait-ms 2" "--max-batch 1 --batch-wait-ms 0"; do
  # shellcheck disable=SC2086
  start "$work/$m" $mode
  wrk -t1 -c16 -d10s --latency -s "$work/post.lua" "http://127.0.0.1:$port/v1/predict" > "$work/wrk.txt"
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$work/wrk.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
  rows=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^damo_batch_size_sum/ {s=$2} /^damo_batch_size_count/ {c=$2} END {printf "%.1f", c ? s / c : 0}')
  echo "| $m ($([ $m = mlp ] && echo W1 || echo W2)), \`$mode\` (mean rows per run $rows) | $rps | $p50 | $p99 |"
  stop "$work/$m"
done
done

if ! "$damo" tokenize --tokenizer gpt2 < /dev/null > /dev/null 2>&1; then
  echo "(GPT-2 part skipped: the vocabulary is missing; sh scripts/setup.sh --text)"
  exit 0
fi
"$damo" train --config examples/configs/gpt2_124m.json --data moby-dick --out "$work/gpt" --steps 1 --batch-size 1 \
  --seq-len 64 --grad-accum 1 --overwrite > /dev/null 2>&1 ||
  { echo "(GPT-2 part skipped: damo train of gpt2_124m.json on moby-dick failed)"; exit 0; }
echo
echo "| damo serve, GPT-2 124M (f32), 4 concurrent streams of 64 tokens | total tokens/s | seconds |"
echo "| --- | --- | --- |"
for slots in 4 1; do
  start "$work/gpt" --slots "$slots"
  t0=$(date +%s.%N)
  pids=""
  for i in 1 2 3 4; do
    curl -sN "http://127.0.0.1:$port/v1/completions" -d "{\"prompt\": \"Call me Ishmael $i\", \"max_tokens\": 64, \
\"temperature\": 0, \"ignore_eos\": true, \"stream\": true}" > "$work/stream$i.txt" &
    pids="$pids $!"
  done
  # shellcheck disable=SC2086
  wait $pids
  t1=$(date +%s.%N)
  tokens=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^damo_completion_tokens_total/ {print $2}')
  echo "| --slots $slots | $(echo "$tokens $t0 $t1" | awk '{printf "%.1f", $1 / ($3 - $2)}') | $(echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}') |"
  stop "$work/gpt"
done
