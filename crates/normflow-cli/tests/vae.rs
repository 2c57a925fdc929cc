//! `normflow vae` and `vae-sample` end to end on tiny 8x8 IDX images, and their errors.

mod common;

use std::path::Path;

use common::{fails, is_png, json, ok, s};

/// Writes `n` 8x8 images (a bar in one of 8 rows or 8 columns, with grey jitter) as an IDX
/// file of unsigned bytes (MNIST's format: magic 0x00000803, sizes N, H, W, then pixels).
fn write_idx(path: &Path, n: usize, h: usize, w: usize) {
    let mut bytes = vec![0, 0, 8, 3];
    for dim in [n, h, w] {
        bytes.extend((dim as u32).to_be_bytes());
    }
    for i in 0..n {
        let (vertical, at) = (i % 2 == 0, (i / 2) % 8);
        for p in 0..h * w {
            let on = if vertical { p % w == at % w } else { p / w == at % h };
            let jitter = ((i * 31 + p * 17) % 9) as u8;
            bytes.push(if on { 246 + jitter } else { jitter });
        }
    }
    std::fs::write(path, bytes).expect("write the IDX file");
}

const TINY: &[&str] = &["--latent", "3", "--hidden", "24", "--batch", "20", "--lr", "3e-3"];

#[test]
fn vae_reports_test_bounds_as_json_and_vae_sample_writes_grids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (train, test) = (dir.path().join("train.idx"), dir.path().join("test.idx"));
    write_idx(&train, 200, 8, 8);
    write_idx(&test, 40, 8, 8);
    for posterior in ["diag", "sylvester:2", "iaf:1"] {
        let out = dir.path().join(posterior.replace(':', "-"));
        let mut args = vec![
            "--threads",
            "1",
            "vae",
            "--data",
            s(&train),
            "--test",
            s(&test),
            "--posterior",
            posterior,
            "--epochs",
            "3",
            "--eval-samples",
            "50",
            "--val-rows",
            "40",
            "--json",
            "--out",
            s(&out),
        ];
        args.extend_from_slice(TINY);
        let summary = json(&ok(&args));
        let elbo = summary["test_elbo"].as_f64().expect("test_elbo");
        let ll = summary["test_log_likelihood"].as_f64().expect("test_log_likelihood");
        // 64 binary pixels: a model that learned nothing scores 64 ln 2 = 44 nats.
        assert!(elbo.is_finite() && elbo < 0.0 && elbo > -60.0, "{summary}");
        assert!(ll >= elbo && ll < 0.0, "{summary}");
        assert_eq!(summary["test_rows"], 40);
        assert_eq!(summary["posterior"], posterior);
        assert!(out.join("spec.json").exists() && out.join("train_log.csv").exists());
    }
    let model = dir.path().join("diag");
    let (samples, recon) = (dir.path().join("samples.png"), dir.path().join("recon.png"));
    ok(&[
        "vae-sample",
        "--model",
        s(&model),
        "--out",
        s(&samples),
        "--n",
        "16",
        "--data",
        s(&test),
        "--reconstructions",
        s(&recon),
    ]);
    assert!(is_png(&samples) && is_png(&recon));
}

#[test]
fn grey_levels_with_a_held_out_split_and_a_rectangular_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("faces.idx");
    write_idx(&data, 150, 8, 6);
    let out = dir.path().join("gauss");
    let mut args = vec![
        "vae",
        "--data",
        s(&data),
        "--test-rows",
        "30",
        "--likelihood",
        "gaussian",
        "--posterior",
        "planar:2",
        "--epochs",
        "20",
        "--eval-samples",
        "20",
        "--image-shape",
        "8x6",
        "--json",
        "--out",
        s(&out),
    ];
    args.extend_from_slice(TINY);
    let summary = json(&ok(&args));
    assert_eq!(summary["test_rows"], 30);
    assert_eq!(summary["train_rows"], 120);
    let bits = summary["test_bits_per_dim"].as_f64().expect("bits per dim");
    assert!(bits.is_finite() && bits > 0.0 && bits < 8.0, "{summary}");
    let png = dir.path().join("faces.png");
    // The shape recorded at training is used.
    ok(&["vae-sample", "--model", s(&out), "--out", s(&png), "--n", "4"]);
    assert!(is_png(&png));
}

#[test]
fn bad_posteriors_shapes_and_files_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let train = dir.path().join("train.idx");
    let other = dir.path().join("other.idx");
    write_idx(&train, 60, 8, 8);
    write_idx(&other, 10, 6, 6);
    let out = dir.path().join("m");
    let base = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> =
            ["vae", "--data", s(&train), "--out", s(&out)].iter().map(|x| x.to_string()).collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let run = |extra: &[&'static str], words: &[&str]| {
        let args = base(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&refs, words);
    };
    run(&["--posterior", "planar"], &["--posterior planar", "planar:K"]);
    run(&["--posterior", "maf:3"], &["--posterior maf:3"]);
    run(&["--posterior", "sylvester:2:orthogonal:99"], &["sylvester m"]);
    run(&["--likelihood", "poisson"], &["--likelihood poisson"]);
    run(&["--test", s(&other).to_string().leak()], &["36 pixels", "64"]);
    run(&["--image-shape", "7x7"], &["--image-shape 7x7", "64"]);
    run(&["--epochs", "0"], &["--epochs 0"]);
    let csv = common::write(dir.path(), "neg.csv", "a,b\n-1,3\n");
    fails(&["vae", "--data", s(&csv), "--out", s(&out)], &["8-bit"]);
    fails(
        &["vae-sample", "--model", s(&dir.path().join("none")), "--out", s(&out)],
        &["cannot load the VAE"],
    );
}
