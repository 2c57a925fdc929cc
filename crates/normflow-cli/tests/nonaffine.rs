//! End-to-end tests of the non-affine (spline) flows: `--flow nsf|nsf-ar` with `--bins` and
//! `--bound`, through train, eval, sample and plot.

// Not every helper is used here.
mod common;

use common::*;
use tempfile::tempdir;

#[test]
fn spline_flows_train_eval_sample_and_plot() {
    let dir = tempdir().unwrap();
    let csv = csv3(dir.path(), "abc.csv", 240);
    for (flow, bins, bound) in [("nsf", "4", "2.5"), ("nsf-ar", "6", "4")] {
        let out = dir.path().join(flow);
        let stdout = train(
            s(&csv),
            &out,
            &[
                "--flow",
                flow,
                "--bins",
                bins,
                "--bound",
                bound,
                "--batch",
                "40",
                "--test-frac",
                "0.2",
                "--json",
            ],
        );
        let v = json(&stdout);
        assert_eq!(v["flow"], flow, "{v}");
        assert!(v["test_log_prob"].as_f64().is_some_and(f64::is_finite), "{v}");
        // The spec on disk carries the spline's hyperparameters.
        let spec: serde_json::Value = serde_json::from_str(&read(&out.join("spec.json"))).unwrap();
        let text = spec.to_string();
        assert!(text.contains("\"rational-quadratic\""), "{text}");
        assert!(text.contains(&format!("\"bins\":{bins}")), "{text}");
        assert!(text.contains(&format!("\"bound\":{}", bound.parse::<f64>().unwrap())), "{text}");

        let e = json(&ok(&["eval", "--model", s(&out), "--data", s(&csv), "--json"]));
        assert!(e["mean_log_prob"].as_f64().is_some_and(f64::is_finite), "{e}");
        assert_eq!(e["rows"], 240, "{e}");

        let samples = dir.path().join(format!("{flow}.csv"));
        ok(&["sample", "--model", s(&out), "-n", "25", "--seed", "1", "--out", s(&samples)]);
        let text = read(&samples);
        assert_eq!(text.lines().count(), 1 + 25);
        for line in text.lines().skip(1) {
            let cells: Vec<f64> = line.split(',').map(|c| c.parse().unwrap()).collect();
            assert!(cells.len() == 3 && cells.iter().all(|c| c.is_finite()), "{flow}: {line}");
        }
        // Samples are in the data's region: their log-density under the model is finite.
        let e = json(&ok(&["eval", "--model", s(&out), "--data", s(&samples), "--json"]));
        assert!(e["mean_log_prob"].as_f64().is_some_and(f64::is_finite), "{e}");

        let png = dir.path().join(format!("{flow}.png"));
        ok(&["plot", "--model", s(&out), "--out", s(&png), "-n", "100"]);
        assert!(is_png(&png), "{flow}: plot");
    }
}

#[test]
fn spline_flags_are_checked_and_named() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("m");
    let cases: &[(&[&str], &[&str])] = &[
        (&["--flow", "nsf", "--bins", "1"], &["--bins", "1"]),
        (&["--flow", "nsf-ar", "--bins", "0"], &["--bins", "0"]),
        (&["--flow", "nsf", "--bound", "0"], &["--bound", "0"]),
        (&["--flow", "nsf-ar", "--bound", "-2"], &["--bound", "-2"]),
        (&["--flow", "nsf", "--bound", "inf"], &["--bound", "inf"]),
        (&["--flow", "maf", "--bins", "8"], &["--bins", "nsf"]),
        (&["--flow", "realnvp", "--bound", "3"], &["--bound", "nsf"]),
    ];
    for (flags, words) in cases {
        let mut args =
            vec!["train", "--data", "toy:moons", "--n", "200", "--batch", "20", "--out", s(&out)];
        args.extend_from_slice(flags);
        fails(&args, words);
        assert!(!out.exists(), "{flags:?}: a rejected run leaves no model directory");
    }
    // Coupling splines need two data columns, as the other coupling flows do.
    let one = write(dir.path(), "one.csv", &(0..50).map(|i| format!("{i}\n")).collect::<String>());
    let args = ["train", "--data", s(&one), "--out", s(&out), "--flow", "nsf", "--batch", "10"];
    fails(&args, &["--flow nsf", "1 data column"]);
    // ... the autoregressive one does not.
    train(s(&one), &out, &["--flow", "nsf-ar", "--batch", "10"]);
}
