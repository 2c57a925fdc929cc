//! End-to-end tests of the variational-inference flow families (`--flow planar | radial |
//! sylvester`) and the Sylvester flags: train a tiny model, then `sample` (the explicit
//! direction) and `log-prob` (the numerically inverted one) must accept it.

// Shared with the other end-to-end test files, which use the helpers this one does not.
mod common;

use std::path::Path;

use common::*;
use tempfile::tempdir;

/// Trains `flow` with `extra` flags on 300 rows of the moons toy, then samples and scores it.
fn train_sample_score(dir: &Path, name: &str, extra: &[&str]) -> serde_json::Value {
    let out = dir.join(name);
    let mut args = vec!["--n", "300", "--batch", "64", "--json"];
    args.extend_from_slice(extra);
    let v = json(&train("toy:moons", &out, &args));
    assert!(v["best_val_log_prob"].as_f64().is_some_and(f64::is_finite), "{name}: {v}");

    let samples = dir.join(format!("{name}-samples.csv"));
    ok(&["sample", "--model", s(&out), "-n", "25", "--seed", "1", "--out", s(&samples)]);
    let text = read(&samples);
    assert_eq!(text.lines().count(), 1 + 25, "{name}: header + 25 rows\n{text}");
    for line in text.lines().skip(1) {
        let values: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
        assert!(values.len() == 2 && values.iter().all(|x| x.is_finite()), "{name}: {line}");
    }

    let lp = dir.join(format!("{name}-lp.csv"));
    ok(&["log-prob", "--model", s(&out), "--data", s(&samples), "--out", s(&lp)]);
    let scores: Vec<f64> = read(&lp).lines().skip(1).map(|x| x.parse().unwrap()).collect();
    assert_eq!(scores.len(), 25, "{name}");
    assert!(scores.iter().all(|x| x.is_finite()), "{name}: {scores:?}");
    let spec = read(&out.join("spec.json"));
    serde_json::from_str::<serde_json::Value>(&spec).unwrap()["flow"].clone()
}

#[test]
fn planar_and_radial_models_sample_and_score() {
    let dir = tempdir().unwrap();
    for flow in ["planar", "radial"] {
        let spec = train_sample_score(dir.path(), flow, &["--flow", flow]);
        assert_eq!(spec["family"], flow, "{spec}");
        assert_eq!(spec["layers"], 2, "{spec}");
    }
}

#[test]
fn each_sylvester_variant_samples_and_scores() {
    let dir = tempdir().unwrap();
    let cases: [(&str, &[&str], serde_json::Value); 3] = [
        ("orthogonal", &["--sylvester-m", "1"], serde_json::json!({"kind": "orthogonal"})),
        (
            "householder",
            &["--sylvester-reflections", "3"],
            serde_json::json!({"kind": "householder", "reflections": 3}),
        ),
        ("triangular", &[], serde_json::json!({"kind": "triangular"})),
    ];
    for (variant, extra, expected) in cases {
        let mut args = vec!["--flow", "sylvester", "--sylvester-variant", variant];
        args.extend_from_slice(extra);
        let spec = train_sample_score(dir.path(), variant, &args);
        assert_eq!(spec["family"], "sylvester", "{spec}");
        assert_eq!(spec["variant"], expected, "{spec}");
        let m = if variant == "orthogonal" { 1 } else { 2 };
        assert_eq!(spec["m"], m, "{spec}");
    }
}

#[test]
fn sylvester_flags_are_checked() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("m");
    let base = [
        "train",
        "--data",
        "toy:moons",
        "--n",
        "100",
        "--batch",
        "30",
        "--out",
        s(&out),
        "--epochs",
        "1",
    ];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        a
    };
    fails(&with(&["--flow", "maf", "--sylvester-m", "1"]), &["--flow sylvester"]);
    fails(
        &with(&["--flow", "sylvester", "--sylvester-reflections", "2"]),
        &["--sylvester-variant householder"],
    );
    fails(&with(&["--flow", "sylvester", "--sylvester-m", "3"]), &["m = 3", "1..=2"]);
    fails(
        &with(&["--flow", "sylvester", "--sylvester-variant", "triangular", "--sylvester-m", "1"]),
        &["m = 1"],
    );
    fails(&with(&["--flow", "sylvester", "--sylvester-variant", "diagonal"]), &["diagonal"]);
    assert!(!out.exists(), "a rejected run wrote a model");
}
