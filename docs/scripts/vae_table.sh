#!/usr/bin/env bash
# The runs behind the tables of docs/VAE.md: one VAE per posterior given, all with the same
# budget, on binarized MNIST (the 10k-image training subset in ../shared/data/mnist) and, with
# FREY=1, on Frey faces (Gaussian decoder). One JSON line per run is appended to
# docs/vae_results.jsonl. Run from the repository root after `cargo build --release`.
#
#   docs/scripts/vae_table.sh diag planar:16 radial:16 sylvester:4 iaf:2 nsf:2
#   FREY=1 docs/scripts/vae_table.sh diag iaf:2
set -euo pipefail
BIN=${NORMFLOW:-target/release/normflow}
OUT=${OUT:-runs/vae}
DATA=${DATA:-../shared/data}
EPOCHS=${EPOCHS:-20}
for posterior in "$@"; do
  name=${posterior//:/-}
  if [ "${FREY:-0}" = 1 ]; then
    nice -n 10 "$BIN" --threads 1 vae --data "$DATA/frey/freyfaces_uint8.npy" --test-rows 200 \
      --val-rows 200 --likelihood gaussian --image-shape 28x20 --posterior "$posterior" \
      --latent 40 --epochs "${FREY_EPOCHS:-100}" --warmup-epochs 20 --lr 1e-3 --seed 0 \
      --eval-samples 1000 --out "$OUT/frey_$name" --json >> docs/vae_results.jsonl
  else
    nice -n 10 "$BIN" --threads 1 vae --data "$DATA/mnist/train10k-images-idx3-ubyte.gz" \
      --test "$DATA/mnist/t10k-images-idx3-ubyte.gz" --posterior "$posterior" --latent 40 \
      --epochs "$EPOCHS" --warmup-epochs 5 --lr 1e-3 --seed 0 --eval-samples 1000 \
      --eval-rows "${EVAL_ROWS:-500}" --out "$OUT/mnist_$name" --json >> docs/vae_results.jsonl
  fi
done
