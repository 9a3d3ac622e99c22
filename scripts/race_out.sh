#!/bin/sh
# Races two `damo train` runs into one --out, N times (default 30), and counts what each
# trial left: the second run refused by the directory lock, both run one after the other,
# or a broken directory (does not load, or a failure without the lock's message).
#   sh scripts/race_out.sh [build/damo] [N]
set -u
damo=$(cd "$(dirname "${1:-build/damo}")" && pwd)/$(basename "${1:-build/damo}")
n=${2:-30}
work=$(mktemp -d "${TMPDIR:-/tmp}/damo_race_XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
awk 'BEGIN { srand(3); print "f0,f1,f2,f3,f4,f5,label";
  for (i = 0; i < 3000; i++) { c = int(rand() * 3); line = "";
    for (k = 0; k < 6; k++) line = line sprintf("%.4f,", rand() - 0.5 + (k == c ? 2 : 0)); print line c } }' > data.csv
cat > mlp.json <<'JSON'
{"input_shape": [6], "layers": [{"type": "dense", "units": 32, "activation": "relu"},
 {"type": "dense", "units": 3, "activation": "softmax"}],
 "optimizer": {"type": "adam", "learning_rate": 0.01}, "metrics": ["accuracy"]}
JSON
refused=0 serial=0 broken=0
i=0
while [ "$i" -lt "$n" ]; do
  i=$((i + 1))
  rm -rf out
  ("$damo" train --config mlp.json --data data.csv --epochs 3 --verbose 0 --out out > a.log 2>&1; echo $? > a.rc) &
  ("$damo" train --config mlp.json --data data.csv --epochs 3 --verbose 0 --out out > b.log 2>&1; echo $? > b.rc) &
  wait
  a=$(cat a.rc) b=$(cat b.rc)
  if ! "$damo" summary --model out > /dev/null 2>&1; then
    broken=$((broken + 1))
  elif [ "$a" = 0 ] && [ "$b" = 0 ]; then
    serial=$((serial + 1))
  elif { [ "$a" = 0 ] || [ "$b" = 0 ]; } && grep -q "being written by process [0-9]" a.log b.log; then
    refused=$((refused + 1))
    rows=$(wc -l < out/history.csv)
    [ "$rows" -eq 4 ] || { echo "trial $i: history.csv has $rows lines, expected 4"; broken=$((broken + 1)); }
  else
    broken=$((broken + 1))
  fi
done
echo "$n trials: $refused refused the second run, $serial ran one after the other, $broken broken"
[ "$broken" -eq 0 ]
