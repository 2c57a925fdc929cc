//! `normflow maxent` end to end: fits that reach their closed forms, the saved model working
//! with `sample`, `log-prob` and `plot`, every option, and bad input.

// Each test file compiles `common` anew and uses only part of it.
mod common;

use common::{fails, is_png, json, ok, read, s, write, TINY};

const ISSUE_FORM: &str = r#"{"dim": 2,
 "constraints": [
   {"statistic": "moment",     "powers": [1, 0], "target": 0.0},
   {"statistic": "moment",     "powers": [1, 1], "target": 0.5},
   {"statistic": "log-moment", "powers": [1, 0], "target": -1.2}
 ]}"#;

/// Dirichlet(2, 3, 4) on the 2-simplex: E[log x_i] = psi(alpha_i) - psi(9); entropy -1.3126.
const DIRICHLET: &str = r#"{"dim": 2, "constraints": [
 {"statistic": "log-moment", "powers": [1, 0], "target": -1.7178571428571427},
 {"statistic": "log-moment", "powers": [0, 1], "target": -1.2178571428571427},
 {"statistic": "log-remainder", "target": -0.8845238095238095}]}"#;

fn maxent(
    constraints: &str,
    support: &str,
    out: &std::path::Path,
    extra: &[&str],
) -> serde_json::Value {
    let mut args = vec![
        "maxent",
        "--constraints",
        constraints,
        "--support",
        support,
        "--out",
        s(out),
        "--json",
    ];
    args.extend_from_slice(TINY);
    if !extra.contains(&"--flow") {
        // IAF samples in one pass.
        args.extend_from_slice(&["--flow", "iaf"]);
    }
    args.extend_from_slice(extra);
    json(&ok(&args))
}

#[test]
fn dirichlet_fit_reaches_the_closed_form_and_the_model_works_with_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "dirichlet.json", DIRICHLET);
    let out = dir.path().join("model");
    let v = maxent(
        s(&file),
        "simplex",
        &out,
        &["--outer", "8", "--inner", "80", "--lr", "5e-3", "--samples", "20000"],
    );
    let entropy = v["entropy"].as_f64().unwrap();
    let violation = v["max_constraint_violation"].as_f64().unwrap();
    // The initial flow (the centroid-centred logistic-normal) is 0.3 nats off.
    assert!((entropy + 1.3126).abs() < 0.06, "entropy {entropy}");
    assert!(violation < 0.05, "violation {violation}: {v}");
    assert_eq!(v["samples"], 20000);
    assert!(is_png(&out.join("density.png")));
    assert!(read(&out.join("maxent_log.csv")).lines().count() == 9);

    // The saved model samples on the simplex and evaluates its density there.
    let samples = dir.path().join("x.csv");
    ok(&["sample", "--model", s(&out), "-n", "500", "--out", s(&samples)]);
    let text = read(&samples);
    for line in text.lines().skip(1) {
        let row: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
        assert!(row.iter().all(|&x| x > 0.0) && row.iter().sum::<f64>() < 1.0, "{line}");
    }
    let lp = dir.path().join("lp.csv");
    ok(&["log-prob", "--model", s(&out), "--data", s(&samples), "--out", s(&lp)]);
    let values: Vec<f64> = read(&lp).lines().skip(1).map(|l| l.parse().unwrap()).collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    assert!((mean - 1.3126).abs() < 0.15, "mean log p {mean}");
    let png = dir.path().join("p.png");
    ok(&["plot", "--model", s(&out), "--out", s(&png)]);
    assert!(is_png(&png));
    let info = json(&ok(&["inspect", "--model", s(&out), "--json"]));
    assert_eq!(info["training"]["command"], "maxent");
    assert_eq!(info["training"]["constraints"]["dim"], 2);
}

#[test]
fn a_mean_on_the_half_line_gives_the_exponential_entropy() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "mean.json",
        r#"{"dim": 2, "constraints": [
            {"statistic": "moment", "powers": [1, 0], "target": 1.0},
            {"statistic": "moment", "powers": [0, 1], "target": 0.5}]}"#,
    );
    let out = dir.path().join("m");
    let v = maxent(
        s(&file),
        "positive",
        &out,
        &[
            "--flow",
            "realnvp",
            "--outer",
            "8",
            "--inner",
            "80",
            "--lr",
            "5e-3",
            "--no-plot",
            "--samples",
            "20000",
        ],
    );
    // Product of exponentials with means 1 and 1/2: entropy 1 + (1 - ln 2).
    let want = 2.0 - 2f64.ln();
    let entropy = v["entropy"].as_f64().unwrap();
    assert!((entropy - want).abs() < 0.08, "entropy {entropy} vs {want}");
    assert!(v["max_constraint_violation"].as_f64().unwrap() < 0.06, "{v}");
    assert!(!out.join("density.png").exists(), "--no-plot");
}

#[test]
fn the_issue_form_runs_and_options_reach_the_fit() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "issue.json", ISSUE_FORM);
    let run = |name: &str, extra: &[&str]| {
        let mut args =
            vec!["--outer", "2", "--inner", "5", "--batch", "64", "--samples", "500", "--no-plot"];
        args.extend_from_slice(extra);
        maxent(s(&file), "interval:0,3", &dir.path().join(name), &args)
    };
    let a = run("a", &["--seed", "4", "--penalty", "2", "--penalty-max", "8"]);
    let b = run("b", &["--seed", "4", "--penalty", "2", "--penalty-max", "8"]);
    let c = run("c", &["--seed", "5", "--lr", "1e-2"]);
    assert_eq!(a["entropy"], b["entropy"], "same seed, same run");
    assert_ne!(a["entropy"], c["entropy"]);
    assert_eq!(a["outer_iterations"], 2);
    assert_eq!(a["samples"], 500);
    assert_eq!(a["statistics"][1], "E[x1 x2]");
    let penalty = a["penalty"].as_f64().unwrap();
    assert!((2.0..=8.0).contains(&penalty), "penalty {penalty}");
    // Without --json: a readable summary.
    let text = ok(&[
        "maxent",
        "--constraints",
        s(&file),
        "--support",
        "positive",
        "--out",
        s(&dir.path().join("d")),
        "--outer",
        "1",
        "--inner",
        "2",
        "--samples",
        "100",
        "--flow",
        "realnvp",
        "--layers",
        "1",
        "--hidden",
        "8",
    ]);
    assert!(text.contains("max constraint violation") && text.contains("E[log x1]"), "{text}");
}

#[test]
fn bad_constraints_and_flags_fail_with_located_messages() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    let bad = |name: &str, text: &str, support: &str, words: &[&str]| {
        let file = write(dir.path(), name, text);
        fails(
            &["maxent", "--constraints", s(&file), "--support", support, "--out", s(&out)],
            words,
        );
    };
    bad(
        "dim.json",
        r#"{"dim": 3, "constraints": [{"statistic": "moment", "powers": [1, 0], "target": 0}]}"#,
        "real",
        &["dim.json", "constraints[0].powers", "dim is 3"],
    );
    bad(
        "stat.json",
        r#"{"dim": 1, "constraints": [{"statistic": "kurtosis", "powers": [1], "target": 0}]}"#,
        "real",
        &["constraints[0].statistic", "kurtosis", "log-remainder"],
    );
    bad(
        "inf.json",
        r#"{"dim": 1, "constraints": [{"statistic": "moment", "powers": [1], "target": 1e400}]}"#,
        "real",
        &["inf.json", "out of range"],
    );
    bad(
        "nul.json",
        r#"{"dim": 1, "constraints": [{"statistic": "moment", "powers": [1], "target": null}]}"#,
        "real",
        &["constraints[0].target", "finite"],
    );
    bad("log.json", ISSUE_FORM, "real", &["constraints[2].statistic", "x > 0"]);
    bad(
        "rest.json",
        r#"{"dim": 1, "constraints": [{"statistic": "log-remainder", "target": -1}]}"#,
        "positive",
        &["simplex"],
    );
    bad("ok.json", ISSUE_FORM, "interval:2,1", &["--support", "low < high"]);
    bad("ok2.json", ISSUE_FORM, "sphere", &["--support", "interval:A,B"]);
    let file = write(dir.path(), "fine.json", ISSUE_FORM);
    let flag = |extra: &[&str], words: &[&str]| {
        let mut args =
            vec!["maxent", "--constraints", s(&file), "--support", "positive", "--out", s(&out)];
        args.extend_from_slice(extra);
        fails(&args, words);
    };
    flag(&["--batch", "33"], &["--batch", "even"]);
    flag(&["--outer", "0"], &["--outer"]);
    flag(&["--inner", "0"], &["--inner"]);
    flag(&["--lr", "-1"], &["--lr"]);
    flag(&["--penalty", "0"], &["--penalty"]);
    flag(&["--penalty", "4", "--penalty-max", "2"], &["--penalty-max"]);
    flag(&["--samples", "1"], &["--samples"]);
    fails(
        &["maxent", "--constraints", s(&dir.path().join("missing.json")), "--out", s(&out)],
        &["missing.json"],
    );
}
