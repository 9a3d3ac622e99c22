#!/bin/sh
# Regenerates the generated seeds of tests/fuzz/corpus: the fuzz build's fuzz_make_seeds
# writes model directories, safetensors, IDX, pictures and vocabularies with damo's own
# writers; the .npy and e-mail fixtures of tests/fixtures are copied. Hand-written seeds
# (CSV, configs, texts, vocabularies) are committed as they are and left alone.
# usage: sh scripts/fuzz_seeds.sh [FUZZ_BUILD]   (after `make fuzz-build`)
set -e
cd "$(dirname "$0")/.."
build=${1:-build-fuzz}
corpus=tests/fuzz/corpus
"$build/fuzz_make_seeds" "$corpus"
mkdir -p "$corpus/npy" "$corpus/email" "$corpus/config"
cp tests/fixtures/npy/*.npy "$corpus/npy/"
for f in tests/fixtures/mail/*.eml; do cp "$f" "$corpus/email/fixture_$(basename "$f")"; done
for f in examples/configs/*_fashion_mnist.json examples/configs/spam_bilstm.json; do
  cp "$f" "$corpus/config/example_$(basename "$f")"
done
echo "fuzz_seeds: $(find "$corpus" -type f | wc -l) seeds, $(du -sk "$corpus" | cut -f1) KB"
