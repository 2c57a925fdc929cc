//! Flow++ end to end: train with variational dequantization on an IDX file of 8-bit images,
//! the same bits/dim bound from `train` and from `eval` of the saved model, sample grids, and
//! the errors of its flags.

mod common;

use common::{fails, is_png, json, ok, s, write_idx};

#[test]
fn flowpp_trains_reports_the_same_bound_after_loading_and_samples_a_grid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("images.idx");
    write_idx(&data, 128);
    let test = dir.path().join("test.idx");
    write_idx(&test, 32);
    let out = dir.path().join("flowpp");
    let summary = json(&ok(&[
        "train",
        "--data",
        s(&data),
        "--flow",
        "flowpp",
        "--levels",
        "2",
        "--layers",
        "1",
        "--hidden",
        "8",
        "--blocks",
        "1",
        "--components",
        "2",
        "--dequant-steps",
        "1",
        "--dequant-hidden",
        "4",
        "--epochs",
        "2",
        "--batch",
        "32",
        "--test",
        s(&test),
        "--json",
        "--out",
        s(&out),
    ]));
    let bpd = summary["test_bits_per_dim"].as_f64().expect("test_bits_per_dim");
    assert!(bpd.is_finite() && bpd > 0.0 && bpd < 12.0, "{summary}");
    let spec = std::fs::read_to_string(out.join("spec.json")).expect("spec.json");
    assert!(spec.contains("\"flowpp\"") && spec.contains("dequantization"), "{spec}");
    // The dequantizer is saved with the model: `eval` of the loaded model reports the bound
    // `train` reported on the same test images (evaluation noise is deterministic).
    let eval = json(&ok(&["eval", "--model", s(&out), "--data", s(&test), "--json"]));
    let eval_bpd = eval["bits_per_dim"].as_f64().expect("bits_per_dim");
    assert!((eval_bpd - bpd).abs() < 1e-9, "train {bpd} vs eval {eval_bpd}");
    let grid = dir.path().join("flowpp.png");
    ok(&["sample", "--model", s(&out), "-n", "4", "--temperature", "0.7", "--out", s(&grid)]);
    assert!(is_png(&grid));
}

#[test]
fn flowpp_flags_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("images.idx");
    write_idx(&data, 40);
    let out = dir.path().join("m");
    let base = ["train", "--data", s(&data), "--out", s(&out), "--batch", "8"];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    fails(&with(&["--flow", "glow", "--components", "4"]), &["--components", "--flow flowpp"]);
    fails(&with(&["--flow", "flowpp", "--components", "0"]), &["components"]);
    fails(
        &with(&["--flow", "flowpp", "--dequant-steps", "0", "--dequant-hidden", "8"]),
        &["--dequant-hidden", "--dequant-steps 0"],
    );
    fails(&["train", "--resume", s(&out), "--components", "3"], &["--components"]);
}
