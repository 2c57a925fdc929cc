//! End-to-end tests of the spline families: `--flow linear-spline|quadratic-spline|cubic` (and
//! their `-ar` forms) with `--bins` and `--bound`.

mod common;

use common::*;
use tempfile::tempdir;

#[test]
fn every_spline_family_trains_samples_and_records_its_bins_and_bound() {
    let dir = tempdir().unwrap();
    let families = [
        ("linear-spline", "coupling", "linear-spline"),
        ("linear-spline-ar", "autoregressive", "linear-spline"),
        ("quadratic-spline", "coupling", "quadratic-spline"),
        ("quadratic-spline-ar", "autoregressive", "quadratic-spline"),
        ("cubic", "coupling", "cubic-spline"),
        ("cubic-ar", "autoregressive", "cubic-spline"),
    ];
    for (flow, family, kind) in families {
        let out = dir.path().join(flow);
        let extra = [
            "--flow",
            flow,
            "--bins",
            "5",
            "--bound",
            "2.5",
            "--n",
            "300",
            "--batch",
            "64",
            "--test-frac",
            "0.2",
            "--json",
        ];
        let v = json(&train("toy:moons", &out, &extra));
        assert_eq!(v["flow"], flow, "{v}");
        let lp = v["test_log_prob"].as_f64().unwrap_or(f64::NAN);
        assert!(lp.is_finite(), "{flow}: {v}");

        let info = json(&ok(&["inspect", "--model", s(&out), "--json"]));
        let spec = &info["flow"];
        assert_eq!(spec["family"], family, "{flow}: {info}");
        assert_eq!(spec["transformer"]["kind"], kind, "{flow}: {info}");
        assert_eq!(spec["transformer"]["bins"], 5, "{flow}: {info}");
        assert_eq!(spec["transformer"]["bound"], 2.5, "{flow}: {info}");

        // Sampling runs the inverse (the cubic's closed-form root on the autoregressive side).
        let samples = dir.path().join(format!("{flow}.csv"));
        ok(&["sample", "--model", s(&out), "-n", "20", "--seed", "1", "--out", s(&samples)]);
        let text = read(&samples);
        assert_eq!(text.lines().count(), 1 + 20, "{flow}");
        for line in text.lines().skip(1) {
            assert!(line.split(',').all(|c| c.parse::<f64>().is_ok_and(f64::is_finite)), "{line}");
        }
    }
}

#[test]
fn bins_and_bound_default_to_8_and_3() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("m");
    train("toy:moons", &out, &["--flow", "cubic", "--n", "200", "--batch", "64"]);
    let info = json(&ok(&["inspect", "--model", s(&out), "--json"]));
    assert_eq!(info["flow"]["transformer"]["bins"], 8, "{info}");
    assert_eq!(info["flow"]["transformer"]["bound"], 3.0, "{info}");
}

#[test]
fn invalid_bins_bound_and_widths_are_named() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("m");
    let run = |extra: &[&str], words: &[&str]| {
        let mut args = vec!["train", "--data", "toy:moons", "--n", "200", "--batch", "64"];
        args.extend_from_slice(&["--out", s(&out)]);
        args.extend_from_slice(extra);
        fails(&args, words);
    };
    run(&["--flow", "cubic", "--bins", "1"], &["bins", "1"]);
    run(&["--flow", "linear-spline", "--bins", "100000"], &["bins"]);
    run(&["--flow", "quadratic-spline-ar", "--bound", "0"], &["bound"]);
    run(&["--flow", "cubic-ar", "--bound=-2"], &["bound"]);
    let one_column = write(dir.path(), "one.csv", "a\n1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n");
    let args =
        ["train", "--data", s(&one_column), "--out", s(&out), "--flow", "cubic", "--batch", "4"];
    fails(&args, &["--flow cubic", "2 data columns"]);
}
