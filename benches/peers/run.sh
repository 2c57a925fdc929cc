#!/usr/bin/env bash
# Side-by-side speed and quality of normflow against zuko and nflows (PyTorch) on the same
# data, architectures, batch size and CPU, in one run. See README.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${PEERS_VENV:-$HOME/.cache/normflow-peers-venv}"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, zuko, nflows" 2>/dev/null; then
    echo "== creating the peers' virtual environment in $venv (torch, zuko, nflows; pinned)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -r "$here/requirements.txt"
fi

echo "== building normflow (release)" >&2
cargo build --release -q -p normflow-cli --manifest-path "$root/Cargo.toml"
target="${CARGO_TARGET_DIR:-$root/target}"
# A private copy: a target directory shared with other checkouts may be rebuilt mid-run.
bin_dir="$(mktemp -d)"
trap 'rm -rf "$bin_dir"' EXIT
cp "$target/release/normflow" "$bin_dir/normflow"

"$venv/bin/python" "$here/bench.py" --normflow "$bin_dir/normflow" "$@"
