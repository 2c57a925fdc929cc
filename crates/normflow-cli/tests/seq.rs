//! `normflow seq` and `normflow seq-sample` end to end on the tiny chorale fixture of the
//! library (`crates/normflow/tests/fixtures/chorales_tiny.json`, the first steps of six Bach
//! chorales from music21's corpus).

mod common;

use common::{fails, json, ok, read, s, write};

fn fixture() -> String {
    format!("{}/../normflow/tests/fixtures/chorales_tiny.json", env!("CARGO_MANIFEST_DIR"))
}

const TINY_SEQ: &[&str] = &[
    "--latent",
    "4",
    "--hidden",
    "8",
    "--layers",
    "2",
    "--epochs",
    "2",
    "--batch-size",
    "2",
    "--iw-samples",
    "6",
    "--iw-chunk",
    "3",
    "--warmup-steps",
    "4",
    "--json",
];

/// Every prior and baseline trains and reports both figures in nats per step, with the
/// importance-weighted NLL at most the negative ELBO; samples come back as JSON and a PNG.
#[test]
fn every_model_trains_reports_and_samples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = fixture();
    for prior in ["af-af", "af-scf", "iaf-scf", "gru", "bernoulli"] {
        let out = dir.path().join(prior);
        let mut args = vec!["seq", "--data", &data, "--prior", prior, "--out", s(&out)];
        args.extend_from_slice(TINY_SEQ);
        let summary = json(&ok(&args));
        let nll = summary["test_nll_per_step"].as_f64().expect("test_nll_per_step");
        let elbo = summary["test_elbo_per_step"].as_f64().expect("test_elbo_per_step");
        assert!(nll.is_finite() && nll > 0.0 && elbo.is_finite(), "{summary}");
        assert!(nll <= -elbo + 1e-6, "{prior}: NLL {nll} above -ELBO {}", -elbo);
        assert_eq!(summary["test_steps"], 10, "{summary}");
        assert!(read(&out.join("spec.json")).contains("normflow-seq"));

        let samples = dir.path().join(format!("{prior}-samples.json"));
        let png = dir.path().join(format!("{prior}-roll.png"));
        let report = json(&ok(&[
            "seq-sample",
            "--model",
            s(&out),
            "--count",
            "3",
            "--steps",
            "7",
            "--out",
            s(&samples),
            "--png",
            s(&png),
            "--json",
        ]));
        assert!(report["sample_seconds"].as_f64().is_some_and(|t| t >= 0.0), "{report}");
        let file: serde_json::Value = serde_json::from_str(&read(&samples)).expect("JSON");
        let sequences = file["sequences"].as_array().expect("sequences");
        assert_eq!(sequences.len(), 3);
        for seq in sequences {
            let steps = seq.as_array().expect("steps");
            assert_eq!(steps.len(), 7);
            for pitch in steps.iter().flat_map(|st| st.as_array().expect("pitches")) {
                assert!((21..=108).contains(&pitch.as_u64().expect("pitch")), "{pitch}");
            }
        }
        assert!(std::fs::metadata(&png).expect("png written").len() > 100);
    }
}

/// Bad inputs: a pickle gets the conversion command, bad content names its place.
#[test]
fn bad_sequence_files_are_reported_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("m");
    let run = |file: &std::path::Path, words: &[&str]| {
        fails(&["seq", "--data", s(file), "--prior", "gru", "--out", s(&out)], words);
    };
    run(&write(dir.path(), "JSB.pickle", "x"), &["pickle", "json.dump"]);
    let bad_pitch = r#"{"train": [[[60]], [[61], [200]]], "valid": [[[60]]], "test": [[[60]]]}"#;
    run(&write(dir.path(), "a.json", bad_pitch), &["train[1]", "step 1", "200"]);
    let empty = r#"{"train": [[[60]]], "valid": [], "test": [[[60]]]}"#;
    run(&write(dir.path(), "b.json", empty), &["valid", "no sequences"]);
    run(&write(dir.path(), "c.json", "{\"train\": [[[60]]"), &["not valid JSON"]);
    run(&dir.path().join("missing.json"), &["missing.json"]);
    fails(
        &["seq-sample", "--model", s(&dir.path().join("nowhere")), "--out", s(&out)],
        &["cannot load the sequence model"],
    );
}
