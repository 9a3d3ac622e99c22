#!/bin/sh
# Installs damo from a build folder into a staging DESTDIR (`make install`), uses it as a
# program outside the source tree would, and uninstalls it:
#  - the installed files, libdamo.so's SONAME, its exports (damo_* only, every function
#    damo.h declares), the installed damo program and its man page;
#  - examples/installed/use_damo.c built with pkg-config (shared, and static through
#    --static) and with CMake's find_package (damo::damo, damo::damo_static), then run;
#  - damo as a CMake subproject (add_subdirectory), linked through damo::damo, then run;
#  - `make uninstall` leaves nothing behind.
# The build folder keeps its install prefix and any install_manifest.txt of a real install.
# usage: sh scripts/check_install.sh [BUILD_DIR]   (prints "N passed, M failed"; exit
#        status 1 if a check failed). make test runs it (scripts/run_tests.sh).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
mkdir -p "$build" && build=$(cd "$build" && pwd)
prefix=/opt/damo-check
cc=${CC:-cc}
jobs=${JOBS:-2}
work=$(mktemp -d "${TMPDIR:-/tmp}/damo-check-install.XXXXXX") || exit 1
stage=$work/stage
log=$work/log
passed=0
failed=0

old_prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$build/CMakeCache.txt" 2>/dev/null)
[ -f "$build/install_manifest.txt" ] && cp "$build/install_manifest.txt" "$work/manifest.saved"
restore() {
  if [ -n "$old_prefix" ] && [ "$old_prefix" != "$prefix" ]; then
    cmake -S "$root" -B "$build" -DCMAKE_INSTALL_PREFIX="$old_prefix" >/dev/null 2>&1
  fi
  rm -f "$build/install_manifest.txt"
  [ -f "$work/manifest.saved" ] && cp "$work/manifest.saved" "$build/install_manifest.txt"
  rm -rf "$work"
}
trap restore EXIT
trap 'exit 1' INT TERM

# check NAME COMMAND...: runs the command with its output in the log; a failure shows the
# log's last lines on standard error.
check() {
  name=$1
  shift
  : >"$log"
  if "$@" >>"$log" 2>&1; then
    passed=$((passed + 1))
    echo "ok    $name"
  else
    failed=$((failed + 1))
    echo "FAIL  $name"
    echo "FAIL  $name" >&2
    tail -n 15 "$log" >&2
  fi
}

version=$(sed -n 's/^#define DAMO_VERSION "\(.*\)"$/\1/p' "$root/include/damo.h")
dest=$stage$prefix
start=$(date +%s)

check "make install PREFIX=$prefix DESTDIR=(staging)" \
  make --no-print-directory -C "$root" install BUILD="$build" PREFIX="$prefix" DESTDIR="$stage"

libdir=$(dirname "$(find "$dest" -name libdamo.so.0 2>/dev/null | head -n 1)")
installed_files() {
  missing=0
  for f in "$libdir/libdamo.so.$version" "$libdir/libdamo.so.0" "$libdir/libdamo.so" "$libdir/libdamo.a" \
           "$dest/include/damo.h" "$libdir/pkgconfig/damo.pc" "$libdir/cmake/damo/damoConfig.cmake" \
           "$libdir/cmake/damo/damoConfigVersion.cmake" "$libdir/cmake/damo/damoTargets.cmake" \
           "$libdir/cmake/damo/damoStaticTargets.cmake" "$dest/bin/damo" "$dest/share/man/man1/damo.1"; do
    [ -e "$f" ] || { echo "missing: $f"; missing=1; }
  done
  [ -L "$libdir/libdamo.so.0" ] && [ -L "$libdir/libdamo.so" ] || { echo "libdamo.so, libdamo.so.0 are not links"; missing=1; }
  return $missing
}
check "installed files (libdamo.so.$version and links, .a, damo.h, damo.pc, CMake package, damo, damo.1)" installed_files

so=$libdir/libdamo.so.$version
check "SONAME libdamo.so.0" sh -c "readelf -d '$so' | grep -q 'Library soname: \[libdamo.so.0\]'"

nm -D --defined-only "$so" 2>/dev/null | awk 'NF == 3 {print $3}' | sort -u >"$work/exports"
exported=$(wc -l <"$work/exports")
only_damo() {
  [ "$exported" -gt 0 ] || { echo "no exports"; return 1; }
  ! grep -v '^damo_' "$work/exports"
}
check "exports: $exported symbols, all damo_*" only_damo

# Every function damo.h declares (a name before "(" in the preprocessed header, less its
# static inline functions and function-pointer types) must be exported.
api_exported() {
  "$cc" -E -P "$dest/include/damo.h" >"$work/damo.i" || return 1
  grep -oE '\bdamo_[A-Za-z0-9_]+ *\([^*]' "$work/damo.i" | sed 's/ *(.$//' | sort -u >"$work/declared"
  grep -oE 'static inline [^(]*\bdamo_[A-Za-z0-9_]+ *\(' "$work/damo.i" |
    grep -oE 'damo_[A-Za-z0-9_]+ *\($' | sed 's/ *($//' | sort -u >"$work/inline"
  comm -23 "$work/declared" "$work/inline" | comm -23 - "$work/exports" >"$work/unexported"
  echo "$(wc -l <"$work/declared") declared"
  [ ! -s "$work/unexported" ] || { echo "declared in damo.h, not exported:"; cat "$work/unexported"; return 1; }
}
check "every function of damo.h exported" api_exported

check "installed damo runs (damo info: $version)" sh -c "'$dest/bin/damo' info | grep -q 'damo $version'"

# The man page: well-formed roff, the installed version, and an entry for every command of
# `damo --help`.
man_page() {
  page=$dest/share/man/man1/damo.1
  if command -v groff >/dev/null 2>&1; then
    groff -man -Tutf8 -ww -z "$page" 2>"$work/groff" || return 1
    [ ! -s "$work/groff" ] || { cat "$work/groff"; return 1; }
  fi
  grep -q "^\.TH DAMO 1 .*\"damo $version\"" "$page" || { echo "damo.1 is not of version $version"; return 1; }
  "$dest/bin/damo" --help | sed -n 's/^  \([a-z][a-z0-9-]*\) .*/\1/p' >"$work/commands"
  [ -s "$work/commands" ] || { echo "no commands in damo --help"; return 1; }
  bad=0
  while IFS= read -r c; do
    grep -q "^\.B damo $c\b" "$page" || { echo "damo.1 lacks the command $c"; bad=1; }
  done <"$work/commands"
  return $bad
}
check "man page damo.1" man_page

# pkg-config, as a staged install is used: damo.pc names PREFIX, which is moved below the
# staging folder (--define-variable; PKG_CONFIG_SYSROOT_DIR would move the paths of the
# system's libraries too).
pc() { PKG_CONFIG_PATH=$libdir/pkgconfig pkg-config --define-variable=prefix="$dest" "$@"; }
example=$root/examples/installed/use_damo.c
check "pkg-config --modversion damo = $version" sh -c "[ \"\$(PKG_CONFIG_PATH='$libdir/pkgconfig' pkg-config --modversion damo)\" = '$version' ]"
pc_shared() {
  flags=$(pc --cflags --libs damo) || return 1
  echo "$cc $example $flags"
  # shellcheck disable=SC2086
  "$cc" -std=c11 -Wall -Wextra -Werror "$example" $flags -o "$work/use_pc" || return 1
  readelf -d "$work/use_pc" | grep -q 'NEEDED.*\[libdamo.so.0\]' || { echo "not linked to libdamo.so.0"; return 1; }
  LD_LIBRARY_PATH=$libdir "$work/use_pc" | tee "$work/out" && grep -q '^use_damo: ok$' "$work/out"
}
check "pkg-config --cflags --libs damo: build, run (libdamo.so)" pc_shared
pc_static() {
  flags=" $(pc --static --cflags --libs damo) " || return 1
  flags=$(echo "$flags" | sed 's/ -ldamo / -l:libdamo.a /')
  echo "$cc $example $flags"
  # shellcheck disable=SC2086
  "$cc" -std=c11 -Wall -Wextra -Werror "$example" $flags -o "$work/use_pc_static" || return 1
  ! readelf -d "$work/use_pc_static" | grep 'NEEDED.*libdamo' || { echo "linked to libdamo.so"; return 1; }
  "$work/use_pc_static" | tee "$work/out" && grep -q '^use_damo: ok$' "$work/out"
}
check "pkg-config --static --libs damo: build, run (libdamo.a)" pc_static

# CMake's find_package, from the staged prefix: damo::damo, then COMPONENTS static.
cmake_example() {
  static=$1
  cmake -S "$root/examples/installed" -B "$work/use_cmake" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$dest" -DUSE_DAMO_STATIC="$static" || return 1
  grep -q "^damo_DIR:PATH=$libdir/cmake/damo\$" "$work/use_cmake/CMakeCache.txt" || { echo "found another damo"; return 1; }
  cmake --build "$work/use_cmake" -j"$jobs" || return 1
  if [ "$static" = ON ]; then
    ! readelf -d "$work/use_cmake/use_damo" | grep 'NEEDED.*libdamo' || { echo "linked to libdamo.so"; return 1; }
  else
    readelf -d "$work/use_cmake/use_damo" | grep -q 'NEEDED.*\[libdamo.so.0\]' || { echo "not linked to libdamo.so.0"; return 1; }
  fi
  "$work/use_cmake/use_damo" | tee "$work/out" && grep -q '^use_damo: ok$' "$work/out"
}
check "find_package(damo CONFIG), damo::damo: build, run" cmake_example OFF
check "find_package(damo CONFIG COMPONENTS static), damo::damo_static: build, run" cmake_example ON

# damo as a subproject: add_subdirectory of the source tree into a parent's build (the
# library compiles again there; its tests and examples are left out).
subproject() {
  mkdir -p "$work/parent"
  cat >"$work/parent/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.16)
project(parent C)
add_subdirectory("$root" damo)
add_executable(use_damo "$example")
target_link_libraries(use_damo PRIVATE damo::damo)
EOF
  cmake -S "$work/parent" -B "$work/parent/build" >"$work/parent/configure.log" 2>&1 || { cat "$work/parent/configure.log"; return 1; }
  cat "$work/parent/configure.log"
  ! grep -E 'CMake (Warning|Error)' "$work/parent/configure.log" || return 1
  cmake --build "$work/parent/build" --target help >"$work/parent/targets" || return 1
  ! grep -E '\.\.\. (test_|example_)' "$work/parent/targets" || { echo "tests or examples in a subproject build"; return 1; }
  cmake --build "$work/parent/build" -j"$jobs" --target use_damo || return 1
  "$work/parent/build/use_damo" | tee "$work/out" && grep -q '^use_damo: ok$' "$work/out"
}
check "add_subdirectory(damo), damo::damo: configure, build, run" subproject

uninstalled() {
  make --no-print-directory -C "$root" uninstall BUILD="$build" DESTDIR="$stage" || return 1
  find "$stage" ! -type d >"$work/left"
  [ ! -s "$work/left" ] || { echo "left after uninstall:"; cat "$work/left"; return 1; }
  [ ! -d "$libdir/cmake/damo" ] || { echo "left after uninstall: $libdir/cmake/damo/"; return 1; }
}
check "make uninstall removes every installed file" uninstalled

echo "check_install: $passed passed, $failed failed ($(( $(date +%s) - start ))s)"
[ "$failed" -eq 0 ]
