#!/usr/bin/env bash
# The fits behind the table of docs/VI.md: every FLOW:K given, on each of U1-U4, with the same
# settings; one JSON line per fit is appended to docs/vi_results.jsonl (render the table with
# docs/scripts/vi_table.py). Run from the repository root after `cargo build --release`.
#
#   docs/scripts/vi_table.sh iaf:2 iaf:8 realnvp:2 realnvp:8 maf:8
#   docs/scripts/vi_table.sh planar:2 planar:8 planar:32 radial:8 radial:32
set -euo pipefail
BIN=${NORMFLOW:-target/release/normflow}
OUT=${OUT:-runs/vi}
for spec in "$@"; do
  flow=${spec%%:*}
  k=${spec##*:}
  for target in u1 u2 u3 u4; do
    nice -n 10 "$BIN" vi --target "$target" --flow "$flow" --layers "$k" --hidden 64 \
      --iterations 3000 --batch 256 --lr 3e-3 --schedule cosine --seed 0 \
      --out "$OUT/${target}_${flow}${k}" --json >> docs/vi_results.jsonl
  done
done
