#!/usr/bin/env python3
"""Renders docs/vae_results.jsonl (written by vae_table.sh) as the markdown rows of docs/VAE.md:
-ELBO and -log p (the importance-weighted bound) in nats per image, lower is better."""
import json
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "docs/vae_results.jsonl"
rows = [json.loads(line) for line in open(path) if line.strip()]
for r in rows:
    data = "Frey faces" if r["likelihood"] == "gaussian" else "MNIST"
    extra = f" | {r['test_bits_per_dim']:.3f}" if "test_bits_per_dim" in r else ""
    print(
        f"| {data} | `{r['posterior']}` | {-r['test_elbo']:.2f} ± {r['test_elbo_stderr']:.2f} | "
        f"{-r['test_log_likelihood']:.2f} ± {r['test_log_likelihood_stderr']:.2f} | "
        f"{r['epochs']} (best {r['best_epoch']}) | {r['parameters']:,} | "
        f"{r['train_seconds']:.0f} + {r['eval_seconds']:.0f}{extra} |"
    )
