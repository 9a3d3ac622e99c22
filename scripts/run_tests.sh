#!/bin/sh
# Runs the layering check and every test binary of a build folder, and sums their
# "N passed, N failed" lines.
# usage: sh scripts/run_tests.sh BUILD_DIR   (exit status 1 if any test failed)
build=${1:-build}
# Products and loops take threads only where the measured cost of starting a parallel region
# is repaid; 0 keeps the fixed thresholds alone, so small shapes still take the threaded paths
# the tests compare with one thread (test_gemm measures the cost itself).
export DAMO_PARALLEL_REGION_US=0
total_pass=0
total_fail=0
failed_suites=""
# The layering check first: a source file that includes a header of a higher layer (the
# order is ARCHITECTURE.md's layer table) turns the run red.
start=$(date +%s)
if python3 "$(dirname "$0")/check_layers.py" >"$build/check_layers.log" 2>&1; then
  total_pass=$((total_pass + 1))
  printf '%-14s %5s passed, %s failed  (%ss)\n' "check_layers" 1 0 "$(( $(date +%s) - start ))"
else
  total_fail=$((total_fail + 1))
  printf '%-14s %5s passed, %s failed  (%ss)\n' "check_layers" 0 1 "$(( $(date +%s) - start ))"
  failed_suites="$failed_suites check_layers"
  head -n 20 "$build/check_layers.log"
fi
# suite NAME COMMAND...: runs one suite (its standard error in $build/NAME.log) and adds the
# last "N passed, N failed" line of its output to the totals; no such line, or a non-zero
# exit status with no failure counted, counts as one failure.
suite() {
  name=$1
  shift
  start=$(date +%s)
  out=$("$@" 2>"$build/$name.log")
  rc=$?
  line=$(printf '%s\n' "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -n 1)
  p=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) passed.*/\1/')
  f=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
  [ -n "$line" ] || { p=0; f=1; }
  [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  total_pass=$((total_pass + p))
  total_fail=$((total_fail + f))
  printf '%-14s %5s passed, %s failed  (%ss)\n' "$name" "$p" "$f" "$(( $(date +%s) - start ))"
  if [ "$f" -ne 0 ]; then
    failed_suites="$failed_suites $name"
    grep -E 'FAIL|ERROR|runtime error|Sanitizer' "$build/$name.log" | head -n 20
  fi
}
# The installed library (scripts/check_install.sh: make install into a staging folder,
# programs built on it with pkg-config, find_package and add_subdirectory, make uninstall);
# not in a quick run or a sanitizer build (make test-asan), whose build folder it would
# reconfigure for a Release install.
if [ -z "${DAMO_TEST_QUICK:-}" ] && ! grep -q '^DAMO_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  suite check_install sh "$(dirname "$0")/check_install.sh" "$build"
fi
for t in "$build"/test_*; do
  [ -x "$t" ] || continue
  suite "$(basename "$t")" "$t"
done
[ -n "$failed_suites" ] && echo "failing suites:$failed_suites (logs in $build/*.log)"
echo "total: $total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
