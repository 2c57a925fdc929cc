#!/usr/bin/env bash
# The runs behind the bits/dim table of docs/IMAGES.md. Run from the repository root after
# `cargo build --release -p normflow-cli`, with the shared data in $DATA (default ../shared/data).
#
#   docs/scripts/image_table.sh mnist glow          # one data set, one model per call
#   docs/scripts/image_table.sh fashion realnvp-image
#
# Both data sets use 10,000 training images: MNIST's shared file is already that subset; for
# Fashion-MNIST the first 10,000 of its 60,000 training images are cut out here (same budget).
# Every run: one thread (`--threads 1`), 20 epochs, batch 64, Adam 1e-3, 5% of the training
# images held out for model selection, test bits/dim on the 10,000 test images.
set -euo pipefail
BIN=${NORMFLOW:-target/release/normflow}
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/images}
EPOCHS=${EPOCHS:-20}
data=$1
flow=$2
mkdir -p "$OUT"
case "$data" in
  mnist)
    train="$DATA/mnist/train10k-images-idx3-ubyte.gz"
    test="$DATA/mnist/t10k-images-idx3-ubyte.gz" ;;
  fashion)
    train="$OUT/fashion-train10k-images-idx3-ubyte"
    test="$DATA/fashion-mnist/t10k-images-idx3-ubyte.gz"
    [ -f "$train" ] || python3 - "$DATA/fashion-mnist/train-images-idx3-ubyte.gz" "$train" <<'PY'
import gzip, struct, sys
raw = gzip.open(sys.argv[1]).read()
magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
assert (magic, rows, cols) == (0x803, 28, 28) and n >= 10000, "not a 28x28 IDX image file"
open(sys.argv[2], "wb").write(struct.pack(">IIII", 0x803, 10000, 28, 28) + raw[16:16 + 10000 * 784])
PY
    ;;
  *) echo "data set must be mnist or fashion" >&2; exit 2 ;;
esac
case "$flow" in
  # The table's glow and realnvp-image rows were made with the couplings' log-scale bound at
  # 6.9 (before session 5); new models default to 2. LOG_SCALE_BOUND=6.9 reproduces the table.
  glow) arch=(--levels 2 --layers 4 --hidden 32 --blocks 1 --log-scale-bound "${LOG_SCALE_BOUND:-2}") ;;
  realnvp-image) arch=(--levels 2 --layers 3 --hidden 32 --blocks 1 --log-scale-bound "${LOG_SCALE_BOUND:-2}") ;;
  flowpp) arch=(${FLOWPP_ARGS:---levels 2 --layers 4 --hidden 32 --blocks 1}) ;;
  *) echo "flow must be glow, realnvp-image or flowpp" >&2; exit 2 ;;
esac
nice -n 19 "$BIN" --threads 1 train --data "$train" --test "$test" --flow "$flow" "${arch[@]}" \
  --batch 64 --epochs "$EPOCHS" --lr 1e-3 --val-frac 0.05 --seed 0 --json \
  --out "$OUT/$data-$flow" > "$OUT/$data-$flow.json"
