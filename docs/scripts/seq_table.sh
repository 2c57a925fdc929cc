#!/usr/bin/env bash
# Reproduces the table of docs/SEQUENCES.md: the three latent flow priors and the two baselines
# on the music21 Bach chorales, one at a time on one thread, then the sampling speed of the
# flows. Usage: docs/scripts/seq_table.sh [NORMFLOW_BINARY] [OUT_DIR]
set -euo pipefail
BIN=${1:-target/release/normflow}
OUT=${2:-runs/seq}
# The shared data folder sits beside the checkout (../shared from the repository root).
DATA=${DATA:-$(dirname "$0")/../../../shared/data/jsb-chorales/bach_chorales_music21.json}
export RAYON_NUM_THREADS=1
mkdir -p "$OUT"
FLOW=(--latent 16 --layers 2 --hidden 64 --spline-bins 8 --batch-size 8 --lr 2e-3
      --warmup-steps 600 --iw-samples 100 --iw-chunk 10 --epochs 300 --seed 0)
"$BIN" seq --data "$DATA" --prior bernoulli --out "$OUT/bernoulli" --json >> "$OUT/results.jsonl"
"$BIN" seq --data "$DATA" --prior gru --hidden 64 --batch-size 8 --lr 2e-3 --epochs 300 \
    --time-limit-min 3 --seed 0 --out "$OUT/gru" --json >> "$OUT/results.jsonl"
for prior in iaf-scf af-scf af-af; do
    "$BIN" seq --data "$DATA" --prior "$prior" "${FLOW[@]}" --time-limit-min 6 \
        --out "$OUT/$prior" --json >> "$OUT/results.jsonl"
done
for prior in iaf-scf af-scf af-af; do
    for seed in 1 2 3; do
        "$BIN" seq-sample --model "$OUT/$prior" --count 16 --steps 64 --seed "$seed" \
            --out "$OUT/$prior-samples-$seed.json" --png "$OUT/$prior-roll-$seed.png" --json \
            >> "$OUT/sampling.jsonl"
    done
done
