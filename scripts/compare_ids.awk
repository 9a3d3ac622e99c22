# compare_ids.awk - compares two "FILE<TAB>ids" listings (the reference's first, damo's
# second): every reference file must be in damo's and have the same ids; the first differing
# token of each mismatch is shown. The last line: "files N tokens N mismatches N".
# Used through compare_ids.sh (report_ids) by check_bpe.sh and check_wordpiece.sh.
NR == FNR { ref[$1] = $2; order[++n] = $1; next }
{ got[$1] = $2 }
END {
  bad = 0; tokens = 0
  for (i = 1; i <= n; i++) {
    f = order[i]; k = split(ref[f], r, " "); tokens += k
    if (!(f in got)) { print "  missing in damo: " f; bad++; continue }
    if (got[f] != ref[f]) {
      m = split(got[f], g, " "); j = 1
      while (j <= k && j <= m && g[j] == r[j]) j++
      printf "  MISMATCH %s: first difference at token %d (damo %s, reference %s)\n", f, j, g[j], r[j]
      bad++
    }
  }
  printf "files %d tokens %d mismatches %d\n", n, tokens, bad
}
