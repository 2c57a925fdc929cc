"""normflow against zuko and nflows: training, log-density and sampling throughput, and the
test log-likelihood reached after the same number of epochs, on the same data split, the same
architecture and batch size, on this CPU, in one run.

Run through ./run.sh, which creates the Python environment and builds normflow. Prints a table
of absolute figures (noisy on shared machines) and of ratios normflow / faster peer.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

SHARED = os.environ.get(
    "NORMFLOW_TABULAR",
    os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "tabular"),
)


def load(name, directory=SHARED):
    path = os.path.join(directory, f"{name}.csv")
    x = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    n_test = len(x) // 10
    return x[order[n_test:]], x[order[:n_test]]


def peer_flow(lib, family, features, layers, hidden):
    if lib == "zuko":
        import zuko

        if family == "nsf":
            # Rational-quadratic spline couplings (passes=2), 8 bins on [-5, 5] as normflow's nsf.
            flow = zuko.flows.NSF(features, transforms=layers, hidden_features=(hidden, hidden),
                                  bins=8, passes=2)
        else:
            cls = {"maf": zuko.flows.MAF, "realnvp": zuko.flows.RealNVP}[family]
            flow = cls(features, transforms=layers, hidden_features=(hidden, hidden))
        return flow, (lambda x: flow().log_prob(x)), (lambda n: flow().sample((n,)))
    import nflows.flows as nf

    if family == "nsf":
        from nflows import distributions, transforms
        from nflows.nn.nets import MLP

        class Conditioner(torch.nn.Module):
            """An MLP of two hidden layers; nflows' couplings pass a context it ignores."""

            def __init__(self, n_in, n_out):
                super().__init__()
                self.mlp = MLP((n_in,), (n_out,), [hidden, hidden])

            def forward(self, x, context=None):
                return self.mlp(x)

        steps = []
        for i in range(layers):
            mask = torch.ones(features)
            mask[i % 2::2] = -1  # alternate which half is transformed
            steps.append(transforms.PiecewiseRationalQuadraticCouplingTransform(
                mask, Conditioner, num_bins=8, tails="linear", tail_bound=5.0))
        flow = nf.Flow(transforms.CompositeTransform(steps),
                       distributions.StandardNormal([features]))
    elif family == "maf":
        # One initial masked layer + one masked block = two hidden layers, as in normflow/zuko.
        flow = nf.MaskedAutoregressiveFlow(
            features, hidden, layers, num_blocks_per_layer=1, use_residual_blocks=False
        )
    else:
        # nflows' RealNVP conditioner is a residual net: the closest is one residual block.
        flow = nf.SimpleRealNVP(features, hidden, layers, num_blocks_per_layer=1)
    return flow, flow.log_prob, flow.sample


def evaluation_rows(train, test, minimum=100_000):
    """Train and test rows, repeated to at least `minimum` rows, so that the log-density
    throughput is measured in the steady state for every library (first-call costs amortized)."""
    both = np.concatenate([train, test])
    return np.tile(both, (-(-minimum // len(both)), 1))


def run_peer(lib, family, train, test, args):
    torch.manual_seed(0)
    mean, std = train.mean(0), train.std(0)
    std[std == 0] = 1.0
    xt = torch.tensor((train - mean) / std, dtype=torch.float32)
    xs = torch.tensor((test - mean) / std, dtype=torch.float32)
    log_det = float(np.log(std).sum())
    flow, log_prob, sample = peer_flow(lib, family, train.shape[1], args.layers, args.hidden)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    train_s = 0.0
    for epoch in range(args.epochs):
        start = time.perf_counter()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), args.batch):
            loss = -log_prob(xt[perm[i : i + args.batch]]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch >= args.warmup_epochs:
            train_s += time.perf_counter() - start
    with torch.no_grad():
        evaluation = torch.tensor((evaluation_rows(train, test) - mean) / std, dtype=torch.float32)
        start = time.perf_counter()
        for i in range(0, len(evaluation), 4096):
            log_prob(evaluation[i : i + 4096])
        lp_s = time.perf_counter() - start
        lp = torch.cat([log_prob(xs[i : i + 4096]) for i in range(0, len(xs), 4096)]).double()
        lp = lp.numpy() - log_det
        start = time.perf_counter()
        for _ in range(0, args.samples, 4096):
            sample(4096)
        sample_s = time.perf_counter() - start
    n_samples = 4096 * ((args.samples + 4095) // 4096)
    return {
        "train_rows_per_second": timed_epochs(args) * len(xt) / train_s,
        "log_prob_rows_per_second": len(evaluation) / lp_s,
        "sample_rows_per_second": n_samples / sample_s,
        "test_log_prob": float(lp.mean()),
        "test_stderr": float(lp.std(ddof=1) / np.sqrt(len(lp))),
    }


def median_figures(runs, metrics):
    """One library's figures over the rounds: the median throughput of each metric; the test
    log-likelihood of the first round (every round trains the same seeded model)."""
    out = dict(runs[0])
    for m in metrics:
        out[m] = float(np.median([r[m] for r in runs]))
    return out


def timed_epochs(args):
    """Epochs that count in the training throughput: all but the first `--warmup-epochs`."""
    return args.epochs - args.warmup_epochs


def run_normflow(binary, family, train, test, args):
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, data in (("train", train), ("test", test)):
            paths[name] = os.path.join(tmp, f"{name}.csv")
            np.savetxt(paths[name], data, delimiter=",", fmt="%.17g")
        model = os.path.join(tmp, "model")
        common = ["--json"]
        if args.normflow_threads:
            common += ["--threads", str(args.normflow_threads)]
        out = subprocess.run(
            [binary, "train", "--data", paths["train"], "--test", paths["test"], "--flow", family,
             "--layers", str(args.layers), "--hidden", str(args.hidden), "--blocks", "2",
             "--batch", str(args.batch), "--epochs", str(args.epochs), "--val-frac", "0",
             "--lr", "1e-3", "--clip", "0", "--out", model, "--no-plot"] + common,
            check=True, capture_output=True, text=True,
        )
        trained = json.loads(out.stdout.strip().splitlines()[-1])
        # Per-epoch training seconds (optimization only) from the model's log, as for the peers.
        with open(os.path.join(model, "train_log.csv")) as f:
            log = list(csv.DictReader(f))
        busy = sum(len(train) / float(r["rows_per_second"]) for r in log[args.warmup_epochs:])
        train_rows_per_second = timed_epochs(args) * len(train) / busy
        both = os.path.join(tmp, "both.csv")
        np.savetxt(both, evaluation_rows(train, test), delimiter=",", fmt="%.17g")
        out = subprocess.run([binary, "eval", "--model", model, "--data", both] + common,
                             check=True, capture_output=True, text=True)
        evaluated = json.loads(out.stdout.strip().splitlines()[-1])
        out = subprocess.run([binary, "sample", "--model", model, "-n", str(args.samples),
                              "--out", os.path.join(tmp, "s.npy")] + common,
                             check=True, capture_output=True, text=True)
        sampled = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "train_rows_per_second": train_rows_per_second,
        "log_prob_rows_per_second": evaluated["rows_per_second"],
        "sample_rows_per_second": sampled["rows_per_second"],
        "test_log_prob": trained["test_log_prob"],
        "test_stderr": trained["test_log_prob_stderr"],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--normflow", required=True, help="path to the normflow binary")
    p.add_argument("--data", nargs="+", default=["power_plant", "protein"])
    p.add_argument("--data-dir", default=SHARED,
                   help="folder of the CSV files (default: $NORMFLOW_TABULAR or ../shared/data/tabular)")
    p.add_argument("--flows", nargs="+", default=["maf", "realnvp", "nsf"],
                   choices=["maf", "realnvp", "nsf"])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--warmup-epochs", type=int, default=1,
                   help="first epochs left out of the training throughput, for every library "
                        "(first-touch page faults, lazy initialization); 0 counts them all")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--samples", type=int, default=40960)
    p.add_argument("--normflow-threads", type=int, help="normflow's --threads (default: all cores)")
    p.add_argument("--peer-threads", type=int,
                   help="torch.set_num_threads for zuko and nflows (default: torch's choice). "
                        "On a busy machine, one thread for every library gives the fairer ratio: "
                        "spin-waiting thread teams collapse when cores are oversubscribed")
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds per data set and flow, the libraries interleaved (order rotated "
                        "each round); throughputs are the median over rounds, and the range of "
                        "the per-round ratios is printed. 3 or more on a shared machine")
    p.add_argument("--json", help="also write all figures to this JSON file")
    args = p.parse_args()
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if not 0 <= args.warmup_epochs < args.epochs:
        p.error("--warmup-epochs must be at least 0 and less than --epochs")
    if args.peer_threads:
        torch.set_num_threads(args.peer_threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.layers} layers, 2 hidden layers of {args.hidden}, batch {args.batch}, "
          f"{args.epochs} epochs (training throughput over the last "
          f"{timed_epochs(args)})", file=sys.stderr)
    results = []
    metrics = ["train_rows_per_second", "log_prob_rows_per_second", "sample_rows_per_second"]
    header = f"{'data':<12}{'flow':<9}{'library':<10}" + "".join(
        f"{m.split('_rows')[0] + ' rows/s':>16}" for m in metrics) + f"{'test log-lik':>22}"
    print(header)
    libs = ("normflow", "zuko", "nflows")
    for data in args.data:
        train, test = load(data, args.data_dir)
        for family in args.flows:
            rounds = {lib: [] for lib in libs}
            for k in range(args.repeats):
                # Rotate the order every round: on a shared machine, contention drifts over
                # minutes, and a fixed order would hand one library the same slot each time.
                for lib in libs[k % 3:] + libs[:k % 3]:
                    if lib == "normflow":
                        r = run_normflow(args.normflow, family, train, test, args)
                    else:
                        r = run_peer(lib, family, train, test, args)
                    rounds[lib].append(r)
            row = {lib: median_figures(rounds[lib], metrics) for lib in libs}
            for lib in libs:
                r = row[lib]
                print(f"{data:<12}{family:<9}{lib:<10}" + "".join(f"{r[m]:>16.0f}" for m in metrics)
                      + f"{r['test_log_prob']:>14.3f} ± {2 * r['test_stderr']:.3f}", flush=True)
            ratios = {m: row["normflow"][m] / max(row["zuko"][m], row["nflows"][m]) for m in metrics}
            # Per-round ratios show how far one round could be trusted on this machine.
            spread = {m: [n[m] / max(z[m], f[m]) for n, z, f in
                          zip(rounds["normflow"], rounds["zuko"], rounds["nflows"])] for m in metrics}
            best_peer_ll = max(row["zuko"]["test_log_prob"], row["nflows"]["test_log_prob"])
            print(f"{data:<12}{family:<9}{'ratio':<10}" + "".join(f"{ratios[m]:>15.2f}x" for m in metrics)
                  + f"{row['normflow']['test_log_prob'] - best_peer_ll:>+14.3f} vs best peer")
            if args.repeats > 1:
                print(f"{data:<12}{family:<9}{'(rounds)':<10}" + "".join(
                    f"{min(spread[m]):>9.2f}-{max(spread[m]):.2f}" for m in metrics))
            results.append({"data": data, "flow": family, "figures": row, "ratios": ratios,
                            "round_ratios": spread, "rounds": rounds})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
