#!/bin/sh
# make demo: trains the W1 MLP on Fashion-MNIST with the damo command, saves it, then
# checks that `damo predict` on the test images reproduces the test accuracy.
set -e
build=${1:-build}
damo="$build/damo"
out=damo_model
"$damo" train --config examples/configs/mlp_fashion_mnist.json --data fashion-mnist --out "$out"
"$damo" export --data fashion-mnist --split test --x "$out/test_x.npy" --y "$out/test_y.npy" >/dev/null
echo "damo predict on the 10000 test images with the saved model:"
"$damo" predict --model "$out" --input "$out/test_x.npy" --labels "$out/test_y.npy" --output "$out/test_probs.npy"
