#!/usr/bin/env python3
"""Renders the table of docs/VI.md from docs/vi_results.jsonl (written by vi_table.sh).

One row per flow and K, one column per target: final ELBO / importance-weighted log Z, both
from 20000 samples; the first row is the true log Z (grid integration). Flows appear in the
order of their first fit, by K; the last fit of each (target, flow, K) wins.
"""
import json
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "docs/vi_results.jsonl"
targets = ["u1", "u2", "u3", "u4"]
fits, truth, rows = {}, {}, []
with open(path) as f:
    for line in f:
        r = json.loads(line)
        key = (r["flow"], r["layers"])
        if key not in rows:
            rows.append(key)
        fits[(r["target"],) + key] = r
        truth[r["target"]] = r["true_log_z"]

print("| flow | K | " + " | ".join(t.upper() for t in targets) + " |")
print("|---|---|" + "---|" * len(targets))
print("| true log Z | | " + " | ".join(
    f"{truth[t]:.4f}" if t in truth else "" for t in targets) + " |")
flows = list(dict.fromkeys(flow for flow, _ in rows))
for flow, k in sorted(rows, key=lambda r: (flows.index(r[0]), r[1])):
    cells = []
    for t in targets:
        r = fits.get((t, flow, k))
        cells.append(f"{r['elbo']:.4f} / {r['log_z_estimate']:.4f}" if r else "")
    print(f"| {flow} | {k} | " + " | ".join(cells) + " |")
