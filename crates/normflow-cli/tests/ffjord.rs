//! End-to-end tests of continuous flows: `--flow ffjord` with its solver, trace and
//! regularization flags in `train`, and the solver overrides of `eval`, `sample` and `plot`.

// Not every helper of the shared module is used here.
mod common;

use std::path::{Path, PathBuf};

use common::*;
use tempfile::tempdir;

/// A tiny, fast FFJORD (one CNF block of one hidden layer of 8, 400 moons rows, 2 epochs),
/// with rk4 in 2 steps unless `extra` picks a solver.
fn ffjord_model(dir: &Path, name: &str, extra: &[&str]) -> (PathBuf, serde_json::Value) {
    let out = dir.join(name);
    let mut args = vec!["train", "--data", "toy:moons", "--n", "400", "--out", s(&out)];
    args.extend_from_slice(&["--epochs", "2", "--no-plot", "--flow", "ffjord", "--layers", "1"]);
    args.extend_from_slice(&["--hidden", "8", "--blocks", "1", "--batch", "100", "--json"]);
    if !extra.contains(&"--solver") {
        args.extend_from_slice(&["--solver", "rk4", "--steps", "2"]);
    }
    args.extend_from_slice(extra);
    let v = json(&ok(&args));
    (out, v)
}

#[test]
fn train_reports_function_evaluations_and_the_flags_reach_the_spec() {
    let dir = tempdir().unwrap();
    let (out, v) = ffjord_model(
        dir.path(),
        "exact",
        &["--trace", "exact", "--time", "0.8", "--activation", "softplus"],
    );
    assert_eq!(v["flow"], "ffjord", "{v}");
    // rk4, 2 steps, one block: 8 evaluations each way per training step.
    assert_eq!(v["function_evaluations_per_step"]["forward"], 8.0, "{v}");
    assert_eq!(v["function_evaluations_per_step"]["backward"], 8.0, "{v}");
    assert!(v["best_val_log_prob"].as_f64().is_some_and(f64::is_finite), "{v}");
    assert!(v["seconds_per_epoch"].as_f64().is_some_and(|s| s > 0.0), "{v}");
    let log = read(&out.join("train_log.csv"));
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines[0].ends_with(",nfe_forward,nfe_backward"), "{log}");
    assert!(lines[1].ends_with(",8,8"), "{log}");
    let spec = read(&out.join("spec.json"));
    for word in [
        "\"family\": \"ffjord\"",
        "\"trace\": \"exact\"",
        "\"method\": \"rk4\"",
        "\"steps\": 2",
        "\"time\": 0.8",
        "\"activation\": \"softplus\"",
    ] {
        assert!(spec.contains(word), "spec.json lacks {word}:\n{spec}");
    }
}

#[test]
fn adjoint_flag_trains_and_counts_the_adjoint_solve() {
    let dir = tempdir().unwrap();
    let (out, v) = ffjord_model(dir.path(), "adjoint", &["--adjoint"]);
    // The adjoint solve of rk4 with 2 steps: 8 evaluations (each with one vector-Jacobian
    // product), like the forward solve.
    assert_eq!(v["function_evaluations_per_step"]["backward"], 8.0, "{v}");
    assert!(v["best_val_log_prob"].as_f64().is_some_and(f64::is_finite), "{v}");
    assert!(read(&out.join("spec.json")).contains("\"adjoint\": true"));
}

#[test]
fn hutchinson_dopri5_and_rnode_flags_train() {
    let dir = tempdir().unwrap();
    let (out, v) = ffjord_model(
        dir.path(),
        "hutch",
        &[
            "--trace",
            "hutchinson",
            "--noise",
            "gaussian",
            "--kinetic-weight",
            "0.01",
            "--jacobian-weight",
            "0.01",
            "--solver",
            "dopri5",
            "--atol",
            "1e-3",
            "--rtol",
            "1e-3",
            "--max-steps",
            "200",
        ],
    );
    let nfe = v["function_evaluations_per_step"]["forward"].as_f64().unwrap();
    assert!(nfe >= 8.0, "dopri5 takes 2 + 6 per step: {v}");
    let spec = read(&out.join("spec.json"));
    for word in ["\"noise\": \"gaussian\"", "\"kinetic_weight\": 0.01", "\"method\": \"dopri5\""] {
        assert!(spec.contains(word), "spec.json lacks {word}:\n{spec}");
    }
}

#[test]
fn eval_sample_and_plot_take_solver_overrides() {
    let dir = tempdir().unwrap();
    let (model, _) = ffjord_model(dir.path(), "m", &[]);
    let m = s(&model);
    let eval = |extra: &[&str]| -> f64 {
        let mut args = vec!["eval", "--model", m, "--data", "toy:moons", "--n", "200", "--json"];
        args.extend_from_slice(extra);
        json(&ok(&args))["mean_log_prob"].as_f64().unwrap()
    };
    let coarse = eval(&[]);
    let fine = eval(&["--solver", "dopri5", "--atol", "1e-8", "--rtol", "1e-8"]);
    let rk4 = eval(&["--solver", "rk4", "--steps", "50", "--trace", "exact"]);
    assert!(coarse.is_finite() && fine.is_finite());
    assert!((fine - rk4).abs() < 1e-3, "two accurate solvers agree: {fine} vs {rk4}");
    // The step guard of dopri5 names the time it reached.
    let mut args = vec!["eval", "--model", m, "--data", "toy:moons", "--n", "50"];
    args.extend_from_slice(&["--atol", "1e-12", "--rtol", "1e-12", "--max-steps", "1", "--solver"]);
    args.push("dopri5");
    fails(&args, &["maximum of 1 steps at t = "]);

    let samples = dir.path().join("samples.csv");
    ok(&[
        "sample",
        "--model",
        m,
        "-n",
        "30",
        "--out",
        s(&samples),
        "--solver",
        "euler",
        "--steps",
        "3",
    ]);
    assert_eq!(read(&samples).lines().count(), 31);
    let png = dir.path().join("density.png");
    ok(&["plot", "--model", m, "--out", s(&png), "--solver", "rk4", "--steps", "2", "-n", "200"]);
    assert!(is_png(&png));
}

#[test]
fn bad_continuous_flow_flags_are_named() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("x");
    let base = ["train", "--data", "toy:moons", "--n", "400", "--out", s(&out), "--epochs", "1"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|a| a.to_string()).collect()
    };
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--flow", "maf", "--solver", "rk4"], vec!["ffjord only"]),
        (vec!["--flow", "ffjord", "--solver", "dopri5", "--steps", "3"], vec!["--steps"]),
        (vec!["--flow", "ffjord", "--solver", "rk4", "--atol", "1e-3"], vec!["--atol"]),
        (vec!["--flow", "ffjord", "--activation", "relu"], vec!["smooth activation"]),
        (vec!["--flow", "ffjord", "--atol", "0"], vec!["atol"]),
        (vec!["--flow", "ffjord", "--time", "-1"], vec!["time"]),
        (vec!["--flow", "ffjord", "--kinetic-weight", "-1"], vec!["kinetic_weight"]),
        (vec!["--flow", "ffjord", "--solver", "rk4", "--steps", "0"], vec!["steps"]),
        (vec!["--flow", "maf", "--activation", "softplus"], vec!["softplus"]),
        (vec!["--flow", "maf", "--adjoint"], vec!["ffjord only"]),
    ];
    for (extra, words) in cases {
        let args = with(&extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&args, &words);
    }
    // Solver overrides on a model that has no solver.
    let maf = moons_model(dir.path(), "maf");
    let args = ["eval", "--model", s(&maf), "--data", "toy:moons", "--n", "50", "--solver", "rk4"];
    fails(&args, &["continuous flows", "maf"]);
}
