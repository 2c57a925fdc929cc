//! End-to-end tests of the neural autoregressive and polynomial families: `--flow naf`, `bnaf`,
//! `sos`, `bernstein` and their hyperparameter flags.

// Each test file uses part of the shared helpers.
mod common;

use common::*;
use tempfile::tempdir;

fn spec(out: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&read(&out.join("spec.json"))).expect("spec.json is JSON")
}

/// Each family trains, reports finite likelihoods, stores its hyperparameters, and samples
/// (through the numerical inverse) finite values.
#[test]
fn each_family_trains_stores_its_flags_and_samples() {
    let dir = tempdir().unwrap();
    let cases: &[(&str, &[&str], &str, serde_json::Value)] = &[
        (
            "naf",
            &["--naf-units", "3"],
            "/flow/transformer",
            serde_json::json!({"kind": "deep-sigmoid", "hidden": 3, "dense": false}),
        ),
        (
            "naf",
            &["--naf-units", "2", "--naf-dense"],
            "/flow/transformer",
            serde_json::json!({"kind": "deep-sigmoid", "hidden": 2, "dense": true}),
        ),
        (
            "sos",
            &["--sos-polynomials", "2", "--sos-degree", "2"],
            "/flow/transformer",
            serde_json::json!({"kind": "sos", "polynomials": 2, "degree": 2}),
        ),
        (
            "bernstein",
            &["--bernstein-degree", "5"],
            "/flow/transformer",
            serde_json::json!({"kind": "bernstein", "degree": 5}),
        ),
        ("bnaf", &[], "/flow/hidden_factor", serde_json::json!(8)),
    ];
    for (i, (flow, flags, pointer, expected)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("m{i}"));
        let mut extra =
            vec!["--flow", flow, "--n", "300", "--batch", "64", "--test-frac", "0.2", "--json"];
        extra.extend_from_slice(flags);
        let v = json(&train("toy:moons", &out, &extra));
        assert_eq!(v["flow"], *flow, "{v}");
        assert!(v["test_log_prob"].as_f64().is_some_and(f64::is_finite), "{flow}: {v}");
        let spec = spec(&out);
        // TINY's --hidden 16 on 2 columns: 8 units per feature.
        assert_eq!(spec.pointer(pointer), Some(expected), "{flow}: {spec}");
        let samples = dir.path().join(format!("s{i}.csv"));
        ok(&["sample", "--model", s(&out), "-n", "20", "--seed", "1", "--out", s(&samples)]);
        let text = read(&samples);
        assert_eq!(text.lines().count(), 1 + 20, "{flow}");
        for line in text.lines().skip(1) {
            assert!(line.split(',').all(|c| c.parse::<f64>().is_ok_and(f64::is_finite)), "{line}");
        }
    }
}

#[test]
fn invalid_flags_are_named() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("m");
    let cases: &[(&[&str], &[&str])] = &[
        (&["--flow", "naf", "--naf-units", "0"], &["--naf-units", "0"]),
        (&["--flow", "sos", "--sos-polynomials", "0"], &["--sos-polynomials", "0"]),
        (&["--flow", "sos", "--sos-degree", "9"], &["--sos-degree", "9"]),
        (&["--flow", "bernstein", "--bernstein-degree", "0"], &["--bernstein-degree", "0"]),
        (&["--flow", "bnaf", "--batch-norm"], &["--batch-norm", "bnaf"]),
    ];
    for (flags, words) in cases {
        let mut args =
            vec!["train", "--data", "toy:moons", "--n", "200", "--batch", "64", "--out", s(&out)];
        args.extend_from_slice(flags);
        fails(&args, words);
        assert!(!out.exists(), "{flags:?}: a rejected run leaves no model directory");
    }
}
