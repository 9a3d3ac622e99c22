#!/bin/sh
# Runs damo's libFuzzer harnesses (built by `make fuzz-build` into BUILD) one after the
# other, each for FUZZ_SECONDS (default 20) on its committed seeds, and prints per harness
# its executions, new corpus entries and outcome, then a summary line. Exit status 1 if any
# harness found a crash, leak, hang (-timeout=10) or out-of-memory (-rss_limit_mb=2048).
#   sh scripts/fuzz.sh [BUILD] [NAME[,NAME...]]    (names: npy, config, email, ... ; default all)
# Environment: FUZZ_SECONDS; FUZZ_WORK, a folder kept between runs for the working corpora
# (new inputs the fuzzer finds) and the artifacts (crash-*, leak-*, timeout-*, oom-*),
# default a fresh temp folder, so the committed corpora under tests/fuzz/corpus are only
# read; FUZZ_ARGS, extra libFuzzer flags. Every run is single-process and niced.
cd "$(dirname "$0")/.."
build=${1:-build-fuzz}
only=$(printf '%s' "${2:-}" | tr ',' ' ')
seconds=${FUZZ_SECONDS:-20}
work=${FUZZ_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/damo-fuzz.XXXXXX")}
mkdir -p "$work"
# The harnesses' scratch files: libFuzzer ends a run with _Exit, so their atexit cleanup
# does not run; a folder of this run, removed at the end, keeps /dev/shm clean.
export FUZZ_TMPDIR="$work/scratch"
mkdir -p "$FUZZ_TMPDIR"
# One thread: the kernels' OpenMP would compete with the fuzzer for the cores.
export OMP_NUM_THREADS=1 DAMO_NUM_THREADS=1

# Largest input per harness: a few times its largest seed.
max_len() {
  case $1 in
    seqdir | gpt2dir | bertdir | image | email | bpe_vocab) echo 32768 ;;
    safetensors) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

total_execs=0
total_secs=0
n=0
failed=""
for bin in "$build"/fuzz_*; do
  name=${bin##*/fuzz_}
  [ -x "$bin" ] && [ -d "tests/fuzz/corpus/$name" ] || continue
  if [ -n "$only" ]; then
    case " $only " in *" $name "*) ;; *) continue ;; esac
  fi
  mkdir -p "$work/corpus/$name" "$work/artifacts/$name"
  dict=""
  [ -f "tests/fuzz/$name.dict" ] && dict="-dict=tests/fuzz/$name.dict"
  log="$work/$name.log"
  start=$(date +%s)
  # The first folder receives new inputs; the committed seeds are only read.
  # shellcheck disable=SC2086
  nice -n 10 "$bin" "$work/corpus/$name" "tests/fuzz/corpus/$name" -max_total_time="$seconds" \
    -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 -max_len="$(max_len "$name")" \
    -artifact_prefix="$work/artifacts/$name/" $dict ${FUZZ_ARGS:-} >"$log" 2>&1 &
  pid=$!
  wait "$pid"
  rc=$?
  # libomp's registration file, which _Exit leaves behind (nice execs, so the pid is the fuzzer's)
  rm -f "/dev/shm/__KMP_REGISTERED_LIB_${pid}_0"
  secs=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  [ -n "$execs" ] || execs=$(grep -Eo '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
  [ -n "$execs" ] || execs=0
  corpus=$(find "$work/corpus/$name" "tests/fuzz/corpus/$name" -type f | wc -l)
  if [ "$rc" -eq 0 ]; then
    outcome="ok"
  else
    outcome="FAILED (exit $rc): $(grep -Eo 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer|UndefinedBehaviorSanitizer)[^(]*|runtime error: .*|fuzz: property broken.*' "$log" | head -n 1)"
    failed="$failed $name"
    grep -E '^(==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written| *#[0-9]+ 0x)' "$log" | head -n 20 | sed 's/^/    /'
  fi
  printf 'fuzz_%-17s %10s execs %5ss  corpus %5s  %s\n' "$name" "$execs" "$secs" "$corpus" "$outcome"
  total_execs=$((total_execs + execs))
  total_secs=$((total_secs + secs))
  n=$((n + 1))
done
rm -rf "$FUZZ_TMPDIR"
[ "$n" -gt 0 ] || { echo "fuzz: no harness found in $build (run make fuzz-build)"; exit 1; }
summary="fuzz: $n harnesses, $total_execs executions in ${total_secs}s, $(echo "$failed" | wc -w) failed${failed:+:$failed}"
# A scratch work folder (no FUZZ_WORK) is kept only when there is something to look at.
if [ -z "$failed" ] && [ -z "${FUZZ_WORK:-}" ]; then
  rm -rf "$work"
  echo "$summary"
else
  echo "$summary (logs, corpora and artifacts in $work)"
fi
[ -z "$failed" ]
