//! Running the built `normflow` binary and checking what it says.

// Each test crate that includes this module uses a subset of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_normflow"))
}

/// Runs `normflow ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the normflow binary runs")
}

/// `p` as a `&str` argument (tempdir paths are UTF-8 here).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "normflow {}\nstatus: {:?}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `normflow ARGS`, asserts success, and returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    let text = describe(args, &out);
    assert!(out.status.success(), "expected success\n{text}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{text}");
    String::from_utf8(out.stdout).expect("UTF-8 stdout")
}

/// Runs `normflow ARGS`, asserts a clean failure (non-zero exit, no panic, an `error:` line)
/// whose stderr holds every one of `words`, and returns stderr.
pub fn fails(args: &[&str], words: &[&str]) -> String {
    let out = run(args);
    let text = describe(args, &out);
    assert!(!out.status.success(), "expected failure\n{text}");
    assert_ne!(out.status.code(), None, "killed by a signal\n{text}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{text}");
    assert!(stderr.contains("error"), "{text}");
    for w in words {
        assert!(stderr.contains(w), "stderr lacks `{w}`\n{text}");
    }
    stderr
}

/// Parses the one JSON object that a `--json` command prints.
pub fn json(stdout: &str) -> serde_json::Value {
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one JSON line, got:\n{stdout}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}

/// Reads a file as text.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Architecture flags of a tiny, fast model.
pub const TINY: &[&str] = &["--layers", "2", "--hidden", "16", "--blocks", "1"];

/// `train` with a tiny model, 2 epochs, no plots, plus `extra`; returns stdout.
pub fn train(data: &str, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["train", "--data", data, "--out", s(out), "--epochs", "2", "--no-plot"];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    ok(&args)
}

/// A tiny 2-epoch MAF on 600 rows of the moons toy in `dir/name`.
pub fn moons_model(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    train("toy:moons", &out, &["--n", "600", "--batch", "64"]);
    out
}

/// A CSV with header `a,b,c` and `rows` rows of a smooth, correlated 3-D cloud (c > 0).
pub fn csv3(dir: &Path, name: &str, rows: usize) -> PathBuf {
    let mut text = String::from("a,b,c\n");
    for i in 0..rows {
        let t = i as f64 * 0.37;
        let (a, b) = (t.sin() + 0.1 * (3.1 * t).cos(), t.cos() * 0.5 + 0.2 * (1.7 * t).sin());
        text.push_str(&format!("{a},{b},{}\n", 1.0 + 0.5 * a * b + 0.05 * (5.3 * t).sin()));
    }
    write(dir, name, &text)
}

/// Whether `p` starts with the PNG signature.
pub fn is_png(p: &Path) -> bool {
    let bytes = std::fs::read(p).unwrap_or_default();
    bytes.len() > 8 && bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}

/// Writes `n` 8x8 images (two patterns with pixel noise) as an IDX file of unsigned bytes, the
/// format of MNIST's files: magic 0x00000803, the sizes N, H, W as big-endian u32, the pixels.
pub fn write_idx(path: &Path, n: usize) {
    let mut bytes = vec![0, 0, 8, 3];
    for dim in [n as u32, 8, 8] {
        bytes.extend(dim.to_be_bytes());
    }
    for i in 0..n {
        for p in 0..64usize {
            let on = if i % 2 == 0 { (p / 8 + p % 8) % 2 == 0 } else { p % 8 < 4 };
            let jitter = ((i * 31 + p * 17) % 7) as u8;
            bytes.push(if on { 240 + jitter } else { jitter });
        }
    }
    std::fs::write(path, bytes).expect("write the IDX file");
}
