#!/bin/sh
# Installs what damo needs on Debian, only what is missing, quietly (idempotent).
#   sh scripts/setup.sh          build tools, libraries and the Fashion-MNIST data set
#   sh scripts/setup.sh --peer   also PyTorch, NumPy and OpenBLAS (for `make ref` and `make bench`)
set -e
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
