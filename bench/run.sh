#!/bin/sh
# make bench: damo and PyTorch side by side (see bench/run.py). usage: sh bench/run.sh BUILD_DIR
set -e
sh scripts/setup.sh --peer
exec /usr/bin/python3 bench/run.py "${1:-build}" ${BENCH_QUICK:+--quick}
