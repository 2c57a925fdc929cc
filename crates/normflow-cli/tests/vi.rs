//! End-to-end tests of `normflow vi`: variational fits to the built-in targets, the model
//! directory they write (usable by `sample`, `log-prob`, `plot`, `inspect`), and bad input.

mod common;

use std::path::Path;

use common::*;
use tempfile::tempdir;

fn number(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("`{key}` is not a number in {v}"))
}

/// `vi` with a tiny flow and a short run, plus `extra`; returns stdout.
fn vi(target: &str, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["vi", "--target", target, "--out", s(out)];
    args.extend_from_slice(TINY);
    args.extend_from_slice(&["--iterations", "30", "--batch", "32", "--eval-samples", "500"]);
    args.extend_from_slice(extra);
    ok(&args)
}

/// The rows of a CSV log after its header, split into cells.
fn log_rows(p: &Path) -> Vec<Vec<String>> {
    read(p).lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect()
}

/// The width of a PNG, from its header.
fn png_width(p: &Path) -> u32 {
    let bytes = std::fs::read(p).unwrap();
    u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]])
}

#[test]
fn vi_fits_each_family_and_reports_the_estimates() {
    let dir = tempdir().unwrap();
    for flow in ["iaf", "realnvp", "maf"] {
        let out = dir.path().join(flow);
        let v = json(&vi("mixture", &out, &["--flow", flow, "--json", "--no-plot"]));
        let (elbo, log_z, ess) =
            (number(&v, "elbo"), number(&v, "log_z_estimate"), number(&v, "ess"));
        assert!(elbo.is_finite() && elbo <= log_z, "{flow}: {v}");
        assert!((1.0..=500.0).contains(&ess), "{flow}: {v}");
        assert!((number(&v, "true_log_z") - 10f64.ln()).abs() < 1e-12, "{v}");
        assert!(elbo <= number(&v, "true_log_z") + 4.0 * number(&v, "elbo_stderr"), "{v}");
        assert_eq!(v["eval_samples"], 500, "{v}");
        assert_eq!(v["steps"], 30, "{v}");
        assert_eq!(v["flow"], flow, "{v}");
        for file in ["spec.json", "weights.safetensors", "vi_log.csv"] {
            assert!(out.join(file).is_file(), "{flow}: no {file}");
        }
        assert_eq!(log_rows(&out.join("vi_log.csv")).len(), 30, "{flow}");
        assert!(!out.join("elbo.png").exists(), "{flow}: --no-plot wrote a plot");
    }
}

#[test]
fn a_vi_model_on_the_box_works_with_sample_log_prob_plot_and_inspect() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("u3");
    let summary = vi("u3", &out, &["--flow", "realnvp"]);
    assert!(summary.contains("true log Z") && summary.contains("ELBO"), "{summary}");
    // Its own plots: the ELBO curve, and model | target | samples.
    assert!(is_png(&out.join("elbo.png")));
    assert_eq!(png_width(&out.join("density.png")), 1800, "three panels");

    let samples = dir.path().join("s.csv");
    ok(&["sample", "--model", s(&out), "-n", "300", "--out", s(&samples)]);
    let rows: Vec<Vec<f64>> = read(&samples)
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 300);
    assert!(rows.iter().flatten().all(|v| v.abs() < 4.0), "U3 samples lie in the box");
    let lp = dir.path().join("lp.csv");
    ok(&["log-prob", "--model", s(&out), "--data", s(&samples), "--out", s(&lp)]);
    let values: Vec<f64> = read(&lp).lines().skip(1).map(|l| l.parse().unwrap()).collect();
    assert!(values.len() == 300 && values.iter().all(|v| v.is_finite()), "{values:?}");

    let plot = dir.path().join("p.png");
    ok(&["plot", "--model", s(&out), "--out", s(&plot)]);
    assert_eq!(png_width(&plot), 1800, "plot draws the target beside the fit");
    let info = json(&ok(&["inspect", "--model", s(&out), "--json"]));
    assert_eq!(info["training"]["vi"]["target"]["name"], "u3", "{info}");
    assert_eq!(info["training"]["summary"]["target"], "u3", "{info}");

    // A density-estimation model still gets the two-panel plot.
    let moons = moons_model(dir.path(), "moons");
    let plot2 = dir.path().join("p2.png");
    ok(&["plot", "--model", s(&moons), "--out", s(&plot2)]);
    assert_eq!(png_width(&plot2), 1200);
}

#[test]
fn vi_options_reach_the_run() {
    let dir = tempdir().unwrap();
    // Annealing: from --initial-beta over --anneal-steps, then 1; 0 turns it off.
    let out = dir.path().join("anneal");
    vi("u1", &out, &["--anneal-steps", "10", "--initial-beta", "0.5", "--no-plot"]);
    let rows = log_rows(&out.join("vi_log.csv"));
    assert_eq!(rows[0][2], "0.5");
    assert_eq!(rows[10][2], "1");
    let out = dir.path().join("flat");
    vi("u1", &out, &["--anneal-steps", "0", "--no-plot"]);
    assert!(log_rows(&out.join("vi_log.csv")).iter().all(|r| r[2] == "1"));
    // The default anneals over a quarter of the steps.
    let out = dir.path().join("default");
    let mut args = vec!["vi", "--target", "u1", "--out", s(&out), "--iterations", "40", "--json"];
    args.extend_from_slice(&["--batch", "16", "--eval-samples", "100", "--no-plot"]);
    args.extend_from_slice(TINY);
    let v = json(&ok(&args));
    assert_eq!(v["anneal_steps"], 10, "{v}");

    // Cosine schedule: the rate falls; --lr sets its start.
    let out = dir.path().join("cosine");
    vi("banana", &out, &["--schedule", "cosine", "--lr", "0.002", "--no-plot"]);
    let lr: Vec<f64> =
        log_rows(&out.join("vi_log.csv")).iter().map(|r| r[3].parse().unwrap()).collect();
    assert_eq!(lr[0], 0.002);
    assert!(lr.windows(2).all(|w| w[1] <= w[0]) && lr[29] < 0.002, "{lr:?}");

    // The seed fixes the run; STL and no clipping change the gradient, not the interface.
    let run = |name: &str, extra: &[&str]| -> f64 {
        let mut args = vec!["--json", "--no-plot"];
        args.extend_from_slice(extra);
        number(&json(&vi("mixture", &dir.path().join(name), &args)), "elbo")
    };
    assert_eq!(run("a", &["--seed", "3"]), run("b", &["--seed", "3"]));
    assert_ne!(run("c", &["--seed", "3"]), run("d", &["--seed", "4"]));
    assert_ne!(run("e", &["--seed", "3", "--stl"]), run("f", &["--seed", "3"]));
    let v = json(&vi("mixture", &dir.path().join("g"), &["--stl", "--clip", "0", "--json"]));
    assert_eq!(v["stl"], true, "{v}");

    // Architecture flags, a learnable base, and a target in more than two dimensions (no
    // density plot there, but the ELBO curve).
    let out = dir.path().join("funnel");
    let v = json(&vi(
        "funnel:3",
        &out,
        &["--flow", "iaf", "--activation", "tanh", "--base", "diag", "--json"],
    ));
    assert_eq!(v["true_log_z"], 0.0, "{v}");
    assert!(is_png(&out.join("elbo.png")) && !out.join("density.png").exists());
    let spec = read(&out.join("spec.json"));
    assert!(spec.contains("\"tanh\"") && spec.contains("diag"), "{spec}");
}

#[test]
fn bad_vi_input_names_the_flag() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("m");
    let o = s(&out);
    let base = ["vi", "--out", o];
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--target", "u5"], vec!["--target u5", "funnel:D"]),
        (vec!["--target", "funnel:1"], vec!["--target funnel:1"]),
        (vec!["--target", "u1", "--iterations", "0"], vec!["--iterations 0"]),
        (
            vec!["--target", "u1", "--iterations", "5", "--anneal-steps", "6"],
            vec!["--anneal-steps 6", "--iterations 5"],
        ),
        (vec!["--target", "u1", "--batch", "0"], vec!["--batch 0"]),
        (vec!["--target", "u1", "--eval-samples", "0"], vec!["--eval-samples 0"]),
        (vec!["--target", "u1", "--lr", "0"], vec!["--lr 0"]),
        (vec!["--target", "u1", "--clip", "-1"], vec!["--clip -1"]),
        (vec!["--target", "u1", "--initial-beta", "0"], vec!["--initial-beta 0"]),
        (vec!["--target", "u1", "--base", "mixture:3"], vec!["--base mixture:3", "gradient"]),
        (vec!["--target", "u1", "--batch-norm"], vec!["--batch-norm"]),
        (vec!["--target", "u1", "--layers", "0"], vec!["--layers 0"]),
    ];
    for (extra, words) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(&extra);
        fails(&args, &words);
    }
    assert!(!out.exists(), "a rejected run writes nothing");
}
