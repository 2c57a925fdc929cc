//! End-to-end tests of the `normflow` binary: every command, and every kind of bad input.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use tempfile::tempdir;

fn number(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("`{key}` is not a number in {v}"))
}

fn data_lines(p: &Path) -> Vec<String> {
    read(p).lines().skip(1).map(str::to_string).collect()
}

// ---------------------------------------------------------------- train

#[test]
fn train_each_family_writes_model_log_and_json() {
    let dir = tempdir().unwrap();
    for flow in ["maf", "realnvp", "nice", "made", "iaf"] {
        let out = dir.path().join(flow);
        let stdout = train(
            "toy:moons",
            &out,
            &["--flow", flow, "--n", "600", "--batch", "64", "--test-frac", "0.2", "--json"],
        );
        let v = json(&stdout);
        for file in ["spec.json", "weights.safetensors", "train_log.csv"] {
            assert!(out.join(file).is_file(), "{flow}: no {file}");
        }
        let log = read(&out.join("train_log.csv"));
        assert!(log.starts_with("epoch,train_loss,val_log_prob,"), "{flow}: {log}");
        assert_eq!(log.lines().count(), 1 + 2, "{flow}: header + one line per epoch\n{log}");
        assert_eq!(v["epochs"], 2, "{flow}: {v}");
        assert_eq!(v["flow"], flow, "{v}");
        assert!(number(&v, "best_val_log_prob").is_finite(), "{flow}: {v}");
        assert!(number(&v, "test_log_prob").is_finite(), "{flow}: {v}");
        assert_eq!(v["test_rows"], 120, "{flow}: 20% of 600 rows: {v}");
        assert!(number(&v, "train_seconds") > 0.0, "{flow}: {v}");
        assert!(number(&v, "train_rows_per_second") > 0.0, "{flow}: {v}");
        assert!(!out.join("loss.png").exists(), "{flow}: --no-plot wrote a plot");
    }
}

/// `--clip` defaults to none for the affine and rational-quadratic families and to 5 for the
/// others; an explicit value wins. The resolved value is what the model's settings record
/// (and what `--resume` continues with).
#[test]
fn gradient_clipping_defaults_by_family() {
    let dir = tempdir().unwrap();
    let small = ["--n", "200", "--batch", "64"];
    for (flow, extra, expected) in [
        ("maf", &[][..], None),
        ("realnvp", &[][..], None),
        ("nsf", &[][..], None),
        ("bnaf", &[][..], Some(5.0)),
        ("planar", &[][..], Some(5.0)),
        ("maf", &["--clip", "3"][..], Some(3.0)),
        ("bnaf", &["--clip", "0"][..], None),
    ] {
        let out = dir.path().join(format!("{flow}{}", extra.len()));
        let args: Vec<&str> = ["--flow", flow].iter().chain(&small).chain(extra).copied().collect();
        train("toy:moons", &out, &args);
        let spec: serde_json::Value = serde_json::from_str(&read(&out.join("spec.json"))).unwrap();
        let clip = &spec["training"]["settings"]["config"]["clip_grad_norm"];
        assert_eq!(clip.as_f64(), expected, "{flow} {extra:?}: {clip}");
    }
}

#[test]
fn train_reports_the_log_likelihood_of_a_test_file() {
    let dir = tempdir().unwrap();
    let (train_csv, test_csv) = (dir.path().join("train.csv"), dir.path().join("test.csv"));
    ok(&["toy", "moons", "-n", "400", "--seed", "1", "--out", s(&train_csv)]);
    ok(&["toy", "moons", "-n", "150", "--seed", "2", "--out", s(&test_csv)]);
    let out = dir.path().join("m");
    let v = json(&train(s(&train_csv), &out, &["--batch", "64", "--test", s(&test_csv), "--json"]));
    assert!(number(&v, "test_log_prob").is_finite(), "{v}");
    assert_eq!(v["test_rows"], 150, "{v}");
    assert_eq!(v["train_rows"], 400, "{v}");
}

#[test]
fn no_validation_trains_exactly_the_given_epochs() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("m");
    let stdout = ok(&[
        "train",
        "--data",
        "toy:moons",
        "--n",
        "300",
        "--out",
        s(&out),
        "--epochs",
        "3",
        "--val-frac",
        "0",
        "--batch",
        "100",
        "--layers",
        "2",
        "--hidden",
        "16",
        "--blocks",
        "1",
        "--no-plot",
        "--json",
    ]);
    let v = json(&stdout);
    assert_eq!(v["epochs"], 3, "{v}");
    assert_eq!(v["best_epoch"], 3, "without validation the last epoch is the model: {v}");
    assert!(v["best_val_log_prob"].is_null(), "{v}");
    assert_eq!(data_lines(&out.join("train_log.csv")).len(), 3);
}

#[test]
fn context_columns_make_a_conditional_model_that_eval_and_log_prob_accept() {
    let dir = tempdir().unwrap();
    let csv = csv3(dir.path(), "abc.csv", 300);
    let out = dir.path().join("cond");
    train(s(&csv), &out, &["--batch", "64", "--context-columns", "c"]);
    let info = json(&ok(&["inspect", "--model", s(&out), "--json"]));
    let flow = info["flow"].to_string();
    assert!(flow.contains("\"context_features\":1"), "{flow}");
    assert!(flow.contains("\"features\":2"), "{flow}");

    let v = json(&ok(&["eval", "--model", s(&out), "--data", s(&csv), "--json"]));
    assert_eq!(v["rows"], 300, "{v}");
    assert!(number(&v, "mean_log_prob").is_finite(), "{v}");
    let lp = dir.path().join("lp.csv");
    ok(&["log-prob", "--model", s(&out), "--data", s(&csv), "--out", s(&lp)]);
    assert_eq!(data_lines(&lp).len(), 300);

    // Without the context column the file does not fit the model.
    let two = write(dir.path(), "ab.csv", "a,b\n0.1,0.2\n0.3,0.4\n");
    fails(
        &["eval", "--model", s(&out), "--data", s(&two)],
        &["2 columns", "3 (2 data + 1 context)"],
    );
    fails(&["sample", "--model", s(&out), "--out", s(&dir.path().join("s.csv"))], &["conditional"]);
    // Context columns by index, and a name that is not a column.
    train(s(&csv), &dir.path().join("by_index"), &["--batch", "64", "--context-columns", "2"]);
    fails(
        &["train", "--data", s(&csv), "--out", s(&dir.path().join("x")), "--context-columns", "z"],
        &["--context-columns", "`z`", "a, b, c"],
    );
}

// ---------------------------------------------------------------- eval, log-prob, sample

#[test]
fn eval_and_log_prob_agree_row_by_row() {
    let dir = tempdir().unwrap();
    let model = moons_model(dir.path(), "m");
    let data = dir.path().join("moons.csv");
    ok(&["toy", "moons", "-n", "250", "--seed", "5", "--out", s(&data)]);

    let v = json(&ok(&["eval", "--model", s(&model), "--data", s(&data), "--json"]));
    assert_eq!(v["rows"], 250, "{v}");
    let (mean, stderr) = (number(&v, "mean_log_prob"), number(&v, "stderr"));
    assert!(mean.is_finite() && stderr > 0.0, "{v}");
    assert!(number(&v, "rows_per_second") > 0.0 && number(&v, "seconds") > 0.0, "{v}");
    let text = ok(&["eval", "--model", s(&model), "--data", s(&data)]);
    assert!(text.contains("over 250 rows"), "{text}");

    let lp = dir.path().join("lp.csv");
    ok(&["log-prob", "--model", s(&model), "--data", s(&data), "--out", s(&lp)]);
    let text = read(&lp);
    assert_eq!(text.lines().next(), Some("log_prob"));
    let values: Vec<f64> = data_lines(&lp).iter().map(|l| l.parse().unwrap()).collect();
    assert_eq!(values.len(), 250);
    let lp_mean = values.iter().sum::<f64>() / values.len() as f64;
    assert!((lp_mean - mean).abs() <= 1e-9 * mean.abs().max(1.0), "{lp_mean} vs eval {mean}");
}

#[test]
fn sample_writes_csv_and_npy_reproducibly() {
    let dir = tempdir().unwrap();
    let model = moons_model(dir.path(), "m");
    let p = |name: &str| dir.path().join(name);
    ok(&["sample", "--model", s(&model), "-n", "37", "--seed", "3", "--out", s(&p("a.csv"))]);
    ok(&["sample", "--model", s(&model), "-n", "37", "--seed", "3", "--out", s(&p("b.csv"))]);
    ok(&["sample", "--model", s(&model), "-n", "37", "--seed", "4", "--out", s(&p("c.csv"))]);
    let a = read(&p("a.csv"));
    assert_eq!(a.lines().next(), Some("x,y"));
    assert_eq!(a.lines().count(), 1 + 37);
    for line in a.lines().skip(1) {
        let cells: Vec<f64> = line.split(',').map(|c| c.parse().unwrap()).collect();
        assert!(cells.len() == 2 && cells.iter().all(|v| v.is_finite()), "{line}");
    }
    assert_eq!(a, read(&p("b.csv")), "same seed, same samples");
    assert_ne!(a, read(&p("c.csv")), "another seed, other samples");

    ok(&["sample", "--model", s(&model), "-n", "11", "--seed", "3", "--out", s(&p("a.npy"))]);
    ok(&["sample", "--model", s(&model), "-n", "11", "--seed", "3", "--out", s(&p("b.npy"))]);
    let npy = std::fs::read(p("a.npy")).unwrap();
    assert!(npy.starts_with(b"\x93NUMPY"));
    assert!(String::from_utf8_lossy(&npy).contains("'shape': (11, 2"), "NPY header");
    assert_eq!(npy, std::fs::read(p("b.npy")).unwrap());
    // The NPY file loads back as data of the model's width.
    let v = json(&ok(&["eval", "--model", s(&model), "--data", s(&p("a.npy")), "--json"]));
    assert_eq!(v["rows"], 11);

    fails(&["sample", "--model", s(&model), "--out", s(&p("a.txt"))], &["a.txt", ".csv or .npy"]);
    fails(&["sample", "--model", s(&model), "-n", "0", "--out", s(&p("z.csv"))], &["-n"]);
    fails(
        &["sample", "--model", s(&model), "--out", s(&p("t.csv")), "--threads", "0"],
        &["--threads"],
    );
    let v =
        json(&ok(&["sample", "--model", s(&model), "-n", "9", "--out", s(&p("j.csv")), "--json"]));
    assert_eq!(v["rows"], 9, "{v}");
    assert!(number(&v, "rows_per_second") > 0.0, "{v}");
}

// ---------------------------------------------------------------- plots

#[test]
fn plots_are_png_files() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("m");
    let mut args = vec!["train", "--data", "toy:moons", "--n", "300", "--batch", "100"];
    args.extend_from_slice(&["--out", s(&out), "--epochs", "2"]);
    args.extend_from_slice(TINY);
    ok(&args);
    assert!(is_png(&out.join("loss.png")), "train writes the loss curve");
    assert!(is_png(&out.join("density.png")), "train writes the density of a 2-D model");

    let density = dir.path().join("density.png");
    ok(&["plot", "--model", s(&out), "--out", s(&density), "--data", "toy:moons", "-n", "300"]);
    assert!(is_png(&density));

    let csv = csv3(dir.path(), "abc.csv", 200);
    let model3 = dir.path().join("m3");
    train(s(&csv), &model3, &["--batch", "50"]);
    let pairs = dir.path().join("pairs.png");
    ok(&["plot", "--model", s(&model3), "--out", s(&pairs), "-n", "200"]);
    assert!(is_png(&pairs), "a 3-D model gets a pair plot");
    let some = dir.path().join("some.png");
    ok(&["plot", "--model", s(&model3), "--out", s(&some), "-n", "100", "--dims", "0,2"]);
    assert!(is_png(&some));
    fails(&["plot", "--model", s(&model3), "--out", s(&some), "--dims", "0,3"], &["--dims", "0,3"]);
}

// ---------------------------------------------------------------- toy, inspect

#[test]
fn toy_writes_every_density_and_lists_the_names_it_knows() {
    let dir = tempdir().unwrap();
    let names = [
        "swissroll",
        "circles",
        "rings",
        "moons",
        "8gaussians",
        "pinwheel",
        "2spirals",
        "checkerboard",
    ];
    for name in names {
        let out = dir.path().join(format!("{name}.csv"));
        ok(&["toy", name, "-n", "20", "--seed", "1", "--out", s(&out)]);
        let text = read(&out);
        assert_eq!(text.lines().next(), Some("x,y"), "{name}");
        assert_eq!(text.lines().count(), 21, "{name}");
    }
    let err = fails(&["toy", "spiral", "--out", s(&dir.path().join("x.csv"))], &["spiral"]);
    for name in names {
        assert!(err.contains(name), "the message lists `{name}`: {err}");
    }
    fails(&["train", "--data", "toy:nope", "--out", s(&dir.path().join("m"))], &["nope", "moons"]);
}

#[test]
fn inspect_shows_the_spec_and_parameter_count() {
    let dir = tempdir().unwrap();
    let model = moons_model(dir.path(), "m");
    let v = json(&ok(&["inspect", "--model", s(&model), "--json"]));
    assert_eq!(v["flow"]["family"], "maf", "{v}");
    assert_eq!(v["flow"]["layers"], 2, "{v}");
    assert_eq!(v["flow"]["hidden"], 16, "{v}");
    assert!(v["parameters"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["training"]["summary"]["epochs"], 2, "{v}");
    let text = ok(&["inspect", "--model", s(&model)]);
    assert!(text.contains("maf") && text.contains("parameters"), "{text}");
}

// ---------------------------------------------------------------- resume

/// `train --epochs 2` then `train --resume --epochs 4` gives the very bytes of a straight
/// 4-epoch run, with and without a validation split.
#[test]
fn resuming_equals_an_uninterrupted_run() {
    let dir = tempdir().unwrap();
    for val_frac in ["0", "0.2"] {
        let run = |name: &str, epochs: &str| {
            let out = dir.path().join(format!("{name}-{val_frac}"));
            let mut args = vec!["train", "--data", "toy:moons", "--n", "400", "--batch", "64"];
            args.extend_from_slice(&["--seed", "7", "--val-frac", val_frac, "--no-plot"]);
            args.extend_from_slice(&["--epochs", epochs, "--out", s(&out)]);
            args.extend_from_slice(TINY);
            ok(&args);
            out
        };
        let straight = run("straight", "4");
        let resumed = run("resumed", "2");
        let v =
            json(&ok(&["train", "--resume", s(&resumed), "--epochs", "4", "--json", "--no-plot"]));
        assert_eq!(v["epochs"], 4, "{v}");
        let weights = |d: &Path| std::fs::read(d.join("weights.safetensors")).unwrap();
        assert!(weights(&straight) == weights(&resumed), "val-frac {val_frac}: weights differ");
        let eval = |d: &Path| ok(&["eval", "--model", s(d), "--data", "toy:moons", "--n", "500"]);
        assert_eq!(eval(&straight), eval(&resumed));
        let log = |d: &Path| -> Vec<String> {
            // Losses and validation, not timings.
            data_lines(&d.join("train_log.csv"))
                .iter()
                .map(|l| l.split(',').take(4).collect::<Vec<_>>().join(","))
                .collect()
        };
        assert_eq!(log(&straight), log(&resumed), "val-frac {val_frac}");
    }
    let fresh = dir.path().join("fresh");
    fails(&["train", "--resume", s(&fresh)], &["fresh"]);
    // A resumed run keeps its settings: changing one is refused, not silently ignored.
    let resumed = dir.path().join("resumed-0");
    fails(&["train", "--resume", s(&resumed), "--lr", "0.1"], &["--lr", "--resume"]);
}

// ---------------------------------------------------------------- bad data

#[test]
fn missing_and_unknown_files_are_named() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("m");
    let missing = dir.path().join("nope.csv");
    fails(&["train", "--data", s(&missing), "--out", s(&out)], &["nope.csv", "No such file"]);
    let xyz = dir.path().join("data.xyz");
    std::fs::write(&xyz, [0u8, 1, 2, 3, 0xff, 0xfe, 7, 0, 9]).unwrap();
    fails(&["train", "--data", s(&xyz), "--out", s(&out)], &["data.xyz", "format", "xyz", ".csv"]);
    let model = moons_model(dir.path(), "model");
    fails(&["eval", "--model", s(&model), "--data", s(&missing)], &["nope.csv"]);
    assert!(!out.exists(), "a failed run leaves no model directory");
}

#[test]
fn malformed_csv_cells_are_located() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("m");
    let train_on = |p: &Path, words: &[&str]| {
        fails(&["train", "--data", s(p), "--out", s(&out), "--epochs", "1"], words)
    };
    let ragged = write(dir.path(), "ragged.csv", "a,b,c\n1,2,3\n4,5\n7,8,9\n");
    train_on(&ragged, &["ragged.csv", "line 3", "2 fields", "3"]);
    let text = write(dir.path(), "text.csv", "a,b,c\n1,2,3\n4,abc,6\n7,8,9\n");
    train_on(&text, &["text.csv", "line 3", "(b)", "abc"]);
    let nan = write(dir.path(), "nan.csv", "a,b,c\n1,2,3\n4,5,6\n7,8,NaN\n");
    train_on(&nan, &["nan.csv", "line 4", "(c)", "non-finite", "--drop-nonfinite"]);
    let inf = write(dir.path(), "inf.csv", "a,b,c\n1,2,3\n4,-inf,6\n7,8,9\n");
    train_on(&inf, &["inf.csv", "line 3", "(b)", "-inf"]);
    let empty = write(dir.path(), "empty.csv", "");
    train_on(&empty, &["empty.csv", "empty"]);
    let header = write(dir.path(), "header.csv", "a,b,c\n");
    train_on(&header, &["header.csv", "header", "no data rows"]);
}

#[test]
fn drop_nonfinite_skips_bad_rows_and_trains() {
    let dir = tempdir().unwrap();
    let mut text = read(&csv3(dir.path(), "clean.csv", 200));
    text.push_str("nan,1,2\n1,inf,2\n");
    let csv = write(dir.path(), "dirty.csv", &text);
    let out = dir.path().join("m");
    let mut args = vec!["train", "--data", s(&csv), "--out", s(&out), "--epochs", "2"];
    args.extend_from_slice(&["--batch", "50", "--no-plot", "--json", "--drop-nonfinite"]);
    args.extend_from_slice(TINY);
    let output = run(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("dropped 2 rows"), "{stderr}");
    let v = json(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(v["train_rows"], 200, "{v}");
    let v =
        json(&ok(&["eval", "--model", s(&out), "--data", s(&csv), "--drop-nonfinite", "--json"]));
    assert_eq!(v["rows"], 200, "{v}");
}

#[test]
fn too_few_rows_name_the_flags_to_change() {
    let dir = tempdir().unwrap();
    let csv = csv3(dir.path(), "small.csv", 20);
    let out = dir.path().join("m");
    let base = ["train", "--data", s(&csv), "--out", s(&out), "--epochs", "1"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|a| a.to_string()).collect()
    };
    let fails_with = |extra: &[&str], words: &[&str]| {
        let args = with(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&args, words)
    };
    fails_with(&[], &["20 rows", "--batch 256", "--val-frac"]);
    fails_with(&["--batch", "10", "--val-frac", "0.01"], &["--val-frac 0.01", "no validation row"]);
    fails_with(&["--batch", "10", "--test-frac", "0.01"], &["--test-frac 0.01", "20 rows"]);
    assert!(!out.exists(), "a failed run leaves no model directory");
}

#[test]
fn a_constant_column_trains_to_a_finite_likelihood() {
    let dir = tempdir().unwrap();
    let mut text = String::from("a,b,k\n");
    for i in 0..200 {
        let t = i as f64 * 0.1;
        text.push_str(&format!("{},{},5\n", t.sin(), t.cos() + 0.1 * t.sin()));
    }
    let csv = write(dir.path(), "const.csv", &text);
    let out = dir.path().join("m");
    let v = json(&train(s(&csv), &out, &["--batch", "50", "--json"]));
    assert!(number(&v, "best_val_log_prob").is_finite(), "{v}");
    let v = json(&ok(&["eval", "--model", s(&out), "--data", s(&csv), "--json"]));
    assert!(number(&v, "mean_log_prob").is_finite(), "{v}");
}

// ---------------------------------------------------------------- bad models

#[test]
fn wrong_width_data_says_the_expected_count() {
    let dir = tempdir().unwrap();
    let model = moons_model(dir.path(), "m");
    let csv = csv3(dir.path(), "abc.csv", 10);
    fails(
        &["eval", "--model", s(&model), "--data", s(&csv)],
        &["abc.csv", "3 columns", "trained on 2"],
    );
    let lp = dir.path().join("lp.csv");
    fails(
        &["log-prob", "--model", s(&model), "--data", s(&csv), "--out", s(&lp)],
        &["trained on 2"],
    );
    fails(
        &["plot", "--model", s(&model), "--data", s(&csv), "--out", s(&dir.path().join("p.png"))],
        &["trained on 2"],
    );
}

#[test]
fn broken_model_directories_say_what_is_wrong() {
    let dir = tempdir().unwrap();
    let eval = |m: &Path, words: &[&str]| {
        fails(&["eval", "--model", s(m), "--data", "toy:moons", "--n", "10"], words);
    };
    let missing = dir.path().join("no-such-model");
    eval(&missing, &["no-such-model", "not a model directory"]);
    fails(&["inspect", "--model", s(&missing)], &["no-such-model"]);
    fails(&["sample", "--model", s(&missing), "--out", "x.csv"], &["no-such-model"]);

    let truncated = moons_model(dir.path(), "truncated");
    let weights = truncated.join("weights.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    eval(&truncated, &["weights.safetensors", "checksum"]);

    let newer = moons_model(dir.path(), "newer");
    let spec =
        read(&newer.join("spec.json")).replace("\"format_version\": 1", "\"format_version\": 99");
    assert!(spec.contains("99"));
    write(&newer, "spec.json", &spec);
    eval(&newer, &["spec.json", "version 99", "newer"]);

    let garbled = moons_model(dir.path(), "garbled");
    write(&garbled, "spec.json", "{\"format\": \"normflow-model\", ");
    eval(&garbled, &["spec.json", "JSON"]);
}

// ---------------------------------------------------------------- bad hyperparameters

#[test]
fn invalid_hyperparameters_name_the_flag() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("m");
    let cases: &[(&[&str], &[&str])] = &[
        (&["--layers", "0"], &["--layers", "0"]),
        (&["--hidden", "0"], &["--hidden", "0"]),
        (&["--blocks", "0"], &["--blocks", "0"]),
        (&["--lr", "-1"], &["--lr", "-1"]),
        (&["--lr", "inf"], &["--lr", "inf"]),
        (&["--val-frac", "1.5"], &["--val-frac", "1.5"]),
        (&["--val-frac", "-0.1"], &["--val-frac", "-0.1"]),
        (&["--batch", "0"], &["--batch", "0"]),
        (&["--epochs", "0"], &["--epochs", "0"]),
        (&["--clip", "-1"], &["--clip", "-1"]),
        (&["--patience", "0"], &["--patience", "0"]),
        (&["--val-frac", "0", "--patience", "3"], &["--patience", "--val-frac"]),
        (&["--test-frac", "1"], &["--test-frac", "1"]),
        (&["--base", "mixture:0"], &["--base", "mixture:0"]),
        (&["--base", "gamma"], &["--base", "gamma", "normal"]),
        (&["--n", "0"], &["--n", "0"]),
        (&["--layers", "x"], &["--layers", "x"]),
        (&["--flow", "nope"], &["nope", "maf"]),
    ];
    for (flags, words) in cases {
        let mut args = vec!["train", "--data", "toy:moons", "--out", s(&out)];
        if !flags.contains(&"--n") {
            args.extend_from_slice(&["--n", "200"]);
        }
        args.extend_from_slice(flags);
        fails(&args, words);
        assert!(!out.exists(), "{flags:?}: a rejected run leaves no model directory");
    }
    // Coupling flows need two data columns.
    let one = write(dir.path(), "one.csv", &(0..50).map(|i| format!("{i}\n")).collect::<String>());
    let args = ["train", "--data", s(&one), "--out", s(&out), "--flow", "realnvp", "--batch", "10"];
    fails(&args, &["--flow realnvp", "2", "1 data column"]);
    fails(&["train", "--out", s(&out)], &["--data"]);
}

// ---------------------------------------------------------------- interruption

/// A training run killed at any moment leaves a directory holding a loadable model of its best
/// epoch so far.
#[test]
fn a_killed_training_run_leaves_a_loadable_model() {
    let dir = tempdir().unwrap();
    for (i, delay_ms) in
        [0u64, 0, 1, 2, 3, 5, 7, 10, 13, 17, 23, 30, 37, 50, 61, 97].into_iter().enumerate()
    {
        let out = dir.path().join(format!("killed{i}"));
        let mut child = bin()
            .args(["train", "--data", "toy:moons", "--n", "400", "--batch", "100", "--epochs"])
            .args(["100000", "--val-frac", if i % 2 == 0 { "0" } else { "0.2" }, "--no-plot"])
            .arg("--out")
            .arg(&out)
            .args(TINY)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !out.join("spec.json").exists() {
            assert!(start.elapsed() < Duration::from_secs(60), "no spec.json after 60 s");
            assert!(child.try_wait().unwrap().is_none(), "training ended before the kill");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let v =
            json(&ok(&["eval", "--model", s(&out), "--data", "toy:moons", "--n", "200", "--json"]));
        assert!(number(&v, "mean_log_prob").is_finite(), "{v}");
        ok(&["inspect", "--model", s(&out)]);
        // The checkpoint, once there, is whole too: the run resumes (here with no epoch left).
        if out.join("checkpoint.json").exists() {
            let v =
                json(&ok(&["train", "--resume", s(&out), "--epochs", "1", "--json", "--no-plot"]));
            assert!(v["epochs"].as_u64().unwrap() >= 1, "{v}");
        }
    }
}
