//! Image flows end to end: train on an IDX file of 8-bit images, bits per dimension in `train`
//! and `eval`, sample grids with a temperature, and the errors of non-pixel data.

mod common;

use common::{fails, json, ok, s, write_idx};

#[test]
fn glow_and_realnvp_image_train_report_bits_per_dim_and_sample_grids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("images.idx");
    write_idx(&data, 160);
    for flow in ["glow", "realnvp-image"] {
        let out = dir.path().join(flow);
        let summary = json(&ok(&[
            "train",
            "--data",
            s(&data),
            "--flow",
            flow,
            "--levels",
            "2",
            "--layers",
            "1",
            "--hidden",
            "8",
            "--blocks",
            "1",
            "--epochs",
            "2",
            "--batch",
            "32",
            "--test-frac",
            "0.2",
            "--json",
            "--out",
            s(&out),
        ]));
        let bpd = summary["test_bits_per_dim"].as_f64().expect("test_bits_per_dim");
        // Finite and better than nothing learned at all would be absurd; the bound is loose
        // on purpose (two epochs), the point is that it is reported and sane.
        assert!(bpd.is_finite() && bpd > 0.0 && bpd < 12.0, "{flow}: {summary}");
        let eval = json(&ok(&["eval", "--model", s(&out), "--data", s(&data), "--json"]));
        let eval_bpd = eval["bits_per_dim"].as_f64().expect("bits_per_dim");
        assert!(eval_bpd.is_finite() && eval_bpd > 0.0, "{eval}");
        let grid = dir.path().join(format!("{flow}.png"));
        ok(&["sample", "--model", s(&out), "-n", "9", "--temperature", "0.7", "--out", s(&grid)]);
        let png = std::fs::read(&grid).expect("grid written");
        assert_eq!(&png[1..4], b"PNG");
    }
}

#[test]
fn image_flows_reject_non_pixel_data_and_bad_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("not_pixels.csv");
    let mut text = String::from("a,b,c,d\n");
    for i in 0..40 {
        text.push_str(&format!("{i},1,2,{}\n", if i == 7 { "2.5" } else { "3" }));
    }
    std::fs::write(&csv, text).expect("write");
    let out = dir.path().join("m");
    fails(
        &["train", "--data", s(&csv), "--flow", "glow", "--out", s(&out), "--batch", "8"],
        &["row 8", "column d", "2.5", "integer pixel"],
    );
    let idx = dir.path().join("images.idx");
    write_idx(&idx, 40);
    fails(
        &[
            "train",
            "--data",
            s(&idx),
            "--flow",
            "glow",
            "--image-shape",
            "1,4,4",
            "--out",
            s(&out),
            "--batch",
            "8",
        ],
        &["--image-shape", "16", "64"],
    );
    fails(
        &[
            "train",
            "--data",
            s(&idx),
            "--flow",
            "glow",
            "--levels",
            "5",
            "--out",
            s(&out),
            "--batch",
            "8",
        ],
        &["levels"],
    );
    // PNG output is only for image models.
    let toy = dir.path().join("toy");
    ok(&[
        "train",
        "--data",
        "toy:moons",
        "--n",
        "300",
        "--epochs",
        "1",
        "--out",
        s(&toy),
        "--no-plot",
    ]);
    fails(
        &["sample", "--model", s(&toy), "--out", s(&dir.path().join("x.png"))],
        &["PNG grids are for image models"],
    );
    fails(
        &[
            "sample",
            "--model",
            s(&toy),
            "--temperature",
            "0",
            "--out",
            s(&dir.path().join("x.csv")),
        ],
        &["--temperature"],
    );
}

#[test]
fn the_coupling_scale_bound_is_recorded_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = dir.path().join("images.idx");
    write_idx(&idx, 40);
    let spec_bound = |out: &std::path::Path| -> f64 {
        let text = std::fs::read_to_string(out.join("spec.json")).expect("spec.json");
        let spec: serde_json::Value = serde_json::from_str(&text).expect("json");
        spec.pointer("/flow/log_scale_bound")
            .and_then(|v| v.as_f64())
            .unwrap_or_else(|| panic!("no log_scale_bound in {spec}"))
    };
    let train = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            s(&idx),
            "--flow",
            "glow",
            "--layers",
            "1",
            "--hidden",
            "4",
            "--epochs",
            "1",
            "--batch",
            "8",
            "--val-frac",
            "0",
            "--no-plot",
            "--out",
            s(out),
        ];
        args.extend_from_slice(extra);
        ok(&args);
    };
    let default = dir.path().join("default");
    train(&default, &[]);
    assert_eq!(spec_bound(&default), 2.0);
    let legacy = dir.path().join("legacy");
    train(&legacy, &["--log-scale-bound", "6.9"]);
    assert_eq!(spec_bound(&legacy), 6.9);
    let out = dir.path().join("bad");
    fails(
        &[
            "train",
            "--data",
            s(&idx),
            "--flow",
            "glow",
            "--batch",
            "8",
            "--log-scale-bound",
            "0",
            "--out",
            s(&out),
        ],
        &["log_scale_bound", "positive"],
    );
    fails(
        &[
            "train",
            "--data",
            "toy:moons",
            "--flow",
            "maf",
            "--log-scale-bound",
            "2",
            "--out",
            s(&out),
        ],
        &["--log-scale-bound", "glow"],
    );
}
