# compare_ids.sh - sourced by check_bpe.sh and check_wordpiece.sh. report_ids CORPUS compares
# $tmp/ref with $tmp/damo (two "FILE<TAB>ids" listings, through compare_ids.awk: the same
# files and, line by line, the same ids; the first differing id is shown), prints the counts,
# the mismatches and both sides' timing logs ($tmp/ref.log, $tmp/damo.log), and sets
# status=1 on any mismatch.
report_ids() {
  result=$(awk -F'\t' -f "$root/scripts/compare_ids.awk" "$tmp/ref" "$tmp/damo")
  echo "$1: $(echo "$result" | tail -n 1)"
  echo "$result" | sed '$d'
  echo "  reference: $(cat "$tmp/ref.log")"
  echo "  damo:      $(cat "$tmp/damo.log")"
  echo "$result" | tail -n 1 | grep -q 'mismatches 0$' || status=1
}
