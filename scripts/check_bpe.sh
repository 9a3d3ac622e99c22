#!/bin/sh
# Compares damo's GPT-2 tokenizer with the reference JavaScript encoder (npm gpt-3-encoder)
# on every file of Moby Dick and of the State of the Union corpus, file by file.
#   sh scripts/check_bpe.sh [path/to/damo]      (default build/damo; needs node and
#                                                 `sh scripts/setup.sh --text`)
# Prints files and tokens compared, the time of each side, and the mismatching files;
# exits 1 on any mismatch.
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
damo=${1:-$root/build/damo}
npm_dir="$HOME/.cache/damo/npm/node_modules"
[ -x "$damo" ] || { echo "check_bpe: $damo not found (build it first)" >&2; exit 2; }
command -v node >/dev/null 2>&1 || { echo "check_bpe: node not found" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$root/scripts/compare_ids.sh"
status=0
for corpus in datasets-moby-dick datasets-sotu; do
  data="$npm_dir/@stdlib/$corpus/data"
  [ -d "$data" ] || { echo "check_bpe: $data missing (sh scripts/setup.sh --text)" >&2; exit 2; }
  ls "$data"/*.txt > "$tmp/files"
  # shellcheck disable=SC2046
  node "$root/tests/ref/bpe_reference.js" $(cat "$tmp/files") > "$tmp/ref" 2> "$tmp/ref.log"
  # shellcheck disable=SC2046
  "$damo" tokenize --tokenizer gpt2 $(cat "$tmp/files") > "$tmp/damo" 2> "$tmp/damo.log"
  report_ids "$corpus"
done
[ $status -eq 0 ] && echo "check_bpe: all equal" || echo "check_bpe: MISMATCHES" >&2
exit $status
