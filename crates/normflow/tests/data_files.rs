//! Data file loaders: every format loads with the right shape and values, and every bad input
//! fails with a message that names the file and the line / column / value concerned.

use std::io::Write;
use std::path::{Path, PathBuf};

use normflow::candle::{DType, Device};
use normflow::data::{load_table, write_csv, write_npy, LoadOptions, Table};
use normflow::Error;
use npyz::WriterBuilder;

const KEEP: LoadOptions = LoadOptions { drop_nonfinite: false };
const DROP: LoadOptions = LoadOptions { drop_nonfinite: true };

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

fn load(path: &Path) -> Table {
    load_table(path, &KEEP).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// The error message of a load that must fail; it must name the file.
fn load_err(path: &Path, opts: &LoadOptions) -> String {
    let msg = match load_table(path, opts) {
        Ok(t) => panic!("{} loaded ({} x {}) but should fail", path.display(), t.rows, t.cols),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains(&path.display().to_string()), "message does not name the file: {msg}");
    msg
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message lacks {p:?}: {msg}");
    }
}

fn names(t: &Table) -> Vec<&str> {
    t.columns.iter().map(String::as_str).collect()
}

// ---------------------------------------------------------------- CSV

#[test]
fn csv_header_is_detected_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = load(&write(dir.path(), "h.csv", b"alpha,beta,gamma\n1,2,3\n4.5,-5e-1,6\n"));
    assert_eq!(names(&t), ["alpha", "beta", "gamma"]);
    assert_eq!((t.rows, t.cols, t.dropped_rows), (2, 3, 0));
    assert_eq!(t.values, [1.0, 2.0, 3.0, 4.5, -0.5, 6.0]);
    assert_eq!(t.row(1), [4.5, -0.5, 6.0]);

    let t = load(&write(dir.path(), "n.csv", b"1,2\n3,4\n5,6\n"));
    assert_eq!(names(&t), ["x0", "x1"]);
    assert_eq!((t.rows, t.cols), (3, 2));
    assert_eq!(t.values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}

#[test]
fn csv_separators_are_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, &[u8]); 6] = [
        ("comma.csv", b"a,b\n1.5,2\n3,4\n"),
        ("semicolon.csv", b"a;b\n1.5;2\n3;4\n"),
        ("tab.csv", b"a\tb\n1.5\t2\n3\t4\n"),
        // `.tsv` is tab-separated even when a header name holds a comma.
        ("forced.tsv", b"a\tb\n1.5\t2\n3\t4\n"),
        ("quoted.csv", b"\"a;x\",b\n1.5,\"2\"\n3,4\n"),
        // numpy.savetxt's default: runs of spaces.
        ("spaces.txt", b"# a b\n  1.5   2\n3 4\n"),
    ];
    for (name, text) in cases {
        let t = load(&write(dir.path(), name, text));
        assert_eq!((t.rows, t.cols), (2, 2), "{name}");
        assert_eq!(t.values, [1.5, 2.0, 3.0, 4.0], "{name}");
    }
    let t = load(&write(dir.path(), "x.tsv", b"a,1\tb\n1\t2\n"));
    assert_eq!(names(&t), ["a,1", "b"]);
}

#[test]
fn csv_trims_and_skips_blank_comment_lines_bom_crlf() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = b"\xEF\xBB\xBF# made by hand\r\n\r\n  a , b \r\n 1 ,\t2\r\n\r\n,\r\n# mid\r\n3,4\r\n   \r\n";
    let t = load(&write(dir.path(), "messy.csv", text));
    assert_eq!(names(&t), ["a", "b"]);
    assert_eq!(t.values, [1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn csv_gzipped_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = load(&write(dir.path(), "d.csv.gz", &gzip(b"u,v\n1,2\n")));
    assert_eq!(names(&t), ["u", "v"]);
    assert_eq!(t.values, [1.0, 2.0]);
}

#[test]
fn csv_ragged_row_names_line_and_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "r.csv", b"a,b,c\n1,2,3\n\n# note\n4,5\n");
    assert_contains(&load_err(&p, &KEEP), &["line 5 has 2 fields", "header (line 1) has 3"]);
    let p = write(dir.path(), "r2.csv", b"1,2\n3,4,5\n");
    assert_contains(&load_err(&p, &KEEP), &["line 2 has 3 fields", "first row (line 1) has 2"]);
}

#[test]
fn csv_bad_cells_name_line_column_and_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "t.csv", b"a,temp\n1,2\n\n3,abc\n");
    assert_contains(&load_err(&p, &KEEP), &["line 4, column 2 (temp)", "'abc'"]);
    let p = write(dir.path(), "e.csv", b"1,2,3\n4,,6\n");
    assert_contains(&load_err(&p, &KEEP), &["line 2, column 2 (x1)", "empty cell"]);
    let p = write(dir.path(), "na.csv", b"a,b\n1,NA\n");
    assert_contains(&load_err(&p, &KEEP), &["line 2, column 2 (b)", "'NA'", "missing values"]);
    let p = write(dir.path(), "comma.csv", b"a;b\n1,5;2\n");
    assert_contains(&load_err(&p, &KEEP), &["line 2, column 1 (a)", "'1,5'", "decimal comma"]);
    // Lines count blank, whitespace-only and comment lines, CRLF endings and quoted newlines.
    let p = write(dir.path(), "crlf.csv", b"a,b\r\n   \r\n# c\r\n\r\n1,x\r\n");
    assert_contains(&load_err(&p, &KEEP), &["line 5, column 2 (b)", "'x'"]);
    let p = write(dir.path(), "q.csv", b"a,b\n\"1\n\",2\n3,y\n");
    assert_contains(&load_err(&p, &KEEP), &["line 4, column 2 (b)", "'y'"]);
    let p = write(dir.path(), "ws.txt", b"1 2\n\n3 z\n");
    assert_contains(&load_err(&p, &KEEP), &["line 3, column 2 (x1)", "'z'"]);
    // A second header-like row is data, so it must be reported, not skipped.
    let p = write(dir.path(), "two.csv", b"a,b\nc,d\n1,2\n");
    assert_contains(&load_err(&p, &KEEP), &["line 2, column 1 (a)", "'c'"]);
}

#[test]
fn csv_nonfinite_errors_or_drops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "nan.csv", b"a,b\n1,2\n3,nan\n-inf,4\n5,6\n");
    assert_contains(&load_err(&p, &KEEP), &["line 3, column 2 (b)", "'nan'", "non-finite"]);
    let t = load_table(&p, &DROP).expect("drop");
    assert_eq!((t.rows, t.dropped_rows), (2, 2));
    assert_eq!(t.values, [1.0, 2.0, 5.0, 6.0]);

    let p = write(dir.path(), "inf.csv", b"1,inf\n");
    assert_contains(&load_err(&p, &KEEP), &["line 1, column 2 (x1)", "'inf'"]);
    assert_contains(&load_err(&p, &DROP), &["all 1 data rows", "non-finite"]);
}

#[test]
fn csv_without_data_rows_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "h.csv", b"a,b\n\n");
    assert_contains(&load_err(&p, &KEEP), &["no data rows", "header (line 1)"]);
    let p = write(dir.path(), "e.csv", b"");
    assert_contains(&load_err(&p, &KEEP), &["empty"]);
    let p = write(dir.path(), "c.csv", b"# only a comment\n\n");
    assert_contains(&load_err(&p, &KEEP), &["no data"]);
}

// ---------------------------------------------------------------- NPY

fn npy<T: npyz::AutoSerialize + Copy>(shape: &[u64], order: npyz::Order, data: &[T]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(shape)
        .order(order)
        .writer(&mut buf)
        .begin_nd()
        .expect("npy writer");
    w.extend(data.iter().copied()).expect("npy data");
    w.finish().expect("npy finish");
    buf
}

/// A hand-made NPY v1.0 file, for element types npyz will not write.
fn npy_raw(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}").into_bytes();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend(header);
    out.extend_from_slice(data);
    out
}

#[test]
fn npy_element_types_and_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = npyz::Order::C;
    let t = load(&write(dir.path(), "f32.npy", &npy(&[2, 3], c, &[1.5f32, 2., 3., 4., 5., -6.])));
    assert_eq!((t.rows, t.cols), (2, 3));
    assert_eq!(names(&t), ["x0", "x1", "x2"]);
    assert_eq!(t.values, [1.5, 2., 3., 4., 5., -6.]);

    let t = load(&write(dir.path(), "f64.npy", &npy(&[1, 2], c, &[0.1f64, 1e-300])));
    assert_eq!(t.values, [0.1, 1e-300]);

    // An image stack (N, H, W) becomes N rows of H*W pixels, row-major.
    let pixels: Vec<u8> = (0..12).collect();
    let t = load(&write(dir.path(), "u8.npy", &npy(&[3, 2, 2], c, &pixels)));
    assert_eq!((t.rows, t.cols), (3, 4));
    assert_eq!(t.row(2), [8., 9., 10., 11.]);

    let t = load(&write(dir.path(), "i32.npy", &npy(&[4], c, &[-1i32, 0, 7, 1 << 30])));
    assert_eq!((t.rows, t.cols), (4, 1));
    assert_eq!(t.values, [-1., 0., 7., (1 << 30) as f64]);

    let t = load(&write(dir.path(), "i64.npy", &npy(&[1, 2], c, &[-3i64, 1 << 40])));
    assert_eq!(t.values, [-3., (1u64 << 40) as f64]);
    let t = load(&write(dir.path(), "u16.npy", &npy(&[2, 1], c, &[65535u16, 1])));
    assert_eq!(t.values, [65535., 1.]);

    // Big-endian data, as written on another machine.
    let be = npy_raw(">f8", "(1, 2)", &[2.5f64.to_be_bytes(), (-1f64).to_be_bytes()].concat());
    assert_eq!(load(&write(dir.path(), "be.npy", &be)).values, [2.5, -1.]);

    // Gzipped, with a name that does not say NPY: the content decides.
    let gz = gzip(&npy(&[1, 2], c, &[1f32, 2.]));
    assert_eq!(load(&write(dir.path(), "arr.bin.gz", &gz)).values, [1., 2.]);
}

#[test]
fn npy_fortran_order_is_reordered() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The matrix [[1, 2, 3], [4, 5, 6]] stored column-major.
    let bytes = npy(&[2, 3], npyz::Order::Fortran, &[1f64, 4., 2., 5., 3., 6.]);
    let t = load(&write(dir.path(), "f.npy", &bytes));
    assert_eq!(t.values, [1., 2., 3., 4., 5., 6.]);
    // (2, 2, 2) in Fortran order: element [i, j, k] sits at i + 2j + 4k.
    let data: Vec<f64> = (0..8).map(f64::from).collect();
    let t = load(&write(dir.path(), "f3.npy", &npy(&[2, 2, 2], npyz::Order::Fortran, &data)));
    assert_eq!(t.values, [0., 4., 2., 6., 1., 5., 3., 7.]);
}

#[test]
fn npy_nonfinite_errors_or_drops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = [1f32, 2., 3., 4., 5., f32::NAN, 7., 8., 9.];
    let p = write(dir.path(), "nan.npy", &npy(&[3, 3], npyz::Order::C, &data));
    assert_contains(&load_err(&p, &KEEP), &["NaN", "[1, 2]", "non-finite"]);
    let t = load_table(&p, &DROP).expect("drop");
    assert_eq!((t.rows, t.cols, t.dropped_rows), (2, 3, 1));
    assert_eq!(t.values, [1., 2., 3., 7., 8., 9.]);
}

#[test]
fn npy_bad_files_fail_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = npy(&[2, 3], npyz::Order::C, &[1f32; 6]);
    bytes.truncate(bytes.len() - 5);
    let p = write(dir.path(), "short.npy", &bytes);
    assert_contains(&load_err(&p, &KEEP), &["truncated", "needs 24 bytes", "found 19"]);

    let p = write(dir.path(), "c.npy", &npy_raw("<c16", "(1,)", &[0; 16]));
    assert_contains(&load_err(&p, &KEEP), &["unsupported NPY element type", "c16"]);
    let p = write(dir.path(), "s.npy", &npy_raw("<U2", "(1,)", &[0; 8]));
    assert_contains(&load_err(&p, &KEEP), &["unsupported", "U2"]);
    let p = write(dir.path(), "0d.npy", &npy_raw("<f8", "()", &1f64.to_le_bytes()));
    assert_contains(&load_err(&p, &KEEP), &["0-d"]);
    let p = write(dir.path(), "empty.npy", &npy_raw("<f8", "(0, 3)", &[]));
    assert_contains(&load_err(&p, &KEEP), &["no data", "[0, 3]"]);
    let p = write(dir.path(), "garbage.npy", b"\x93NUMPY\x01\x00\x04\x00{}}\n");
    assert_contains(&load_err(&p, &KEEP), &["invalid NPY header"]);
    let p = write(dir.path(), "text.npy", b"1,2,3\n");
    assert_contains(&load_err(&p, &KEEP), &[".npy extension", "signature"]);
    let p = write(dir.path(), "a.npz", b"PK\x03\x04");
    assert_contains(&load_err(&p, &KEEP), &["NPZ", "numpy.save"]);
}

// ---------------------------------------------------------------- IDX

/// An IDX file: magic `00 00 code ndim`, big-endian dims, then `data` (already big-endian).
fn idx(code: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, code, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[test]
fn idx_element_types_and_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Three 2x2 u8 "images", plain and gzipped.
    let pixels: Vec<u8> = (0..12).map(|i| i * 20).collect();
    let images = idx(0x08, &[3, 2, 2], &pixels);
    for (name, bytes) in [("img-idx3-ubyte", images.clone()), ("img-idx3-ubyte.gz", gzip(&images))]
    {
        let t = load(&write(dir.path(), name, &bytes));
        assert_eq!((t.rows, t.cols), (3, 4), "{name}");
        assert_eq!(t.row(1), [80., 100., 120., 140.], "{name}");
    }
    // Labels: one column.
    let t = load(&write(dir.path(), "labels-idx1-ubyte", &idx(0x08, &[4], &[7, 2, 1, 0])));
    assert_eq!((t.rows, t.cols), (4, 1));
    assert_eq!(t.values, [7., 2., 1., 0.]);

    let t = load(&write(dir.path(), "i8.idx", &idx(0x09, &[2], &[0xff, 0x05])));
    assert_eq!(t.values, [-1., 5.]);
    let i16s = [(-300i16).to_be_bytes(), 2i16.to_be_bytes()].concat();
    assert_eq!(load(&write(dir.path(), "i16.idx", &idx(0x0B, &[1, 2], &i16s))).values, [-300., 2.]);
    let i32s = [(-70000i32).to_be_bytes(), 9i32.to_be_bytes()].concat();
    assert_eq!(
        load(&write(dir.path(), "i32.idx", &idx(0x0C, &[2, 1], &i32s))).values,
        [-70000., 9.]
    );
    let f32s = [0.25f32.to_be_bytes(), (-2f32).to_be_bytes()].concat();
    assert_eq!(load(&write(dir.path(), "f32.idx", &idx(0x0D, &[1, 2], &f32s))).values, [0.25, -2.]);
    let f64s = [0.1f64.to_be_bytes(), 3f64.to_be_bytes()].concat();
    // No IDX-like name at all: the magic number decides.
    assert_eq!(load(&write(dir.path(), "blob", &idx(0x0E, &[2], &f64s))).values, [0.1, 3.]);
}

#[test]
fn idx_bad_files_fail_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "t-idx3-ubyte", &idx(0x08, &[3, 2, 2], &[0; 10]));
    assert_contains(&load_err(&p, &KEEP), &["truncated", "need 12 bytes", "found 10"]);
    let p = write(dir.path(), "long-idx1-ubyte", &idx(0x08, &[2], &[0; 3]));
    assert_contains(&load_err(&p, &KEEP), &["longer", "need 2 bytes", "found 3"]);
    let p = write(dir.path(), "hdr-idx3-ubyte", &[0, 0, 0x08, 3, 0, 0, 0, 5]);
    assert_contains(&load_err(&p, &KEEP), &["truncated IDX header", "16", "has 8"]);
    let p = write(dir.path(), "bad-idx3-ubyte", &[0, 0, 0x07, 1, 0, 0, 0, 1, 9]);
    assert_contains(&load_err(&p, &KEEP), &["IDX magic", "00 00 07 01"]);
    let p = write(dir.path(), "z-idx1-ubyte", &idx(0x08, &[0], &[]));
    assert_contains(&load_err(&p, &KEEP), &["no data"]);

    let f32s = [1f32, 2., f32::INFINITY, 4.].map(f32::to_be_bytes).concat();
    let p = write(dir.path(), "inf.idx", &idx(0x0D, &[2, 2], &f32s));
    assert_contains(&load_err(&p, &KEEP), &["inf", "[1, 0]"]);
    let t = load_table(&p, &DROP).expect("drop");
    assert_eq!((t.rows, t.dropped_rows, t.values.clone()), (1, 1, vec![1., 2.]));

    // A gzip header whose body is cut off.
    let mut gz = gzip(&idx(0x08, &[100], &[1; 100]));
    gz.truncate(12);
    let p = write(dir.path(), "cut-idx1-ubyte.gz", &gz);
    assert_contains(&load_err(&p, &KEEP), &["gzip", "decompress"]);
}

// ---------------------------------------------------------------- dispatch, Table, writers

#[test]
fn unknown_and_missing_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "d.json", b"{\"a\": 1}");
    assert_contains(&load_err(&p, &KEEP), &["unrecognized", "'json'", "CSV", ".npy", "IDX"]);
    let p = write(dir.path(), "noext", b"1,2\n");
    assert_contains(&load_err(&p, &KEEP), &["supported formats"]);

    let p = write(dir.path(), "book.xlsx", b"PK\x03\x04\x14\x00");
    assert_contains(&load_err(&p, &KEEP), &["ZIP archive", "CSV"]);
    let p = write(dir.path(), "bin.csv", b"\x01\x02\x00\x00,1\n");
    assert_contains(&load_err(&p, &KEEP), &["binary data"]);
    let p = write(dir.path(), "u16.csv", b"\xFF\xFEa\x00,\x00b\x00");
    assert_contains(&load_err(&p, &KEEP), &["UTF-16"]);

    let missing = dir.path().join("nope.csv");
    match load_table(&missing, &KEEP) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

#[test]
fn table_columns_and_tensors() {
    let t =
        Table::new(vec!["a".into(), "b".into(), "c".into()], vec![1., 2., 3., 4., 5., 6.], "mem")
            .expect("table");
    let s = t.select_columns(&[2, 0]).expect("select");
    assert_eq!((names(&s), s.rows, s.cols), (vec!["c", "a"], 2, 2));
    assert_eq!(s.values, [3., 1., 6., 4.]);
    assert_eq!(t.column_index("b").expect("b"), 1);
    assert_contains(&t.column_index("z").expect_err("z").to_string(), &["'z'", "a, b, c"]);
    assert_contains(
        &t.select_columns(&[0, 3]).expect_err("3").to_string(),
        &["index 3", "3 columns"],
    );
    assert!(t.select_columns(&[]).is_err());
    assert!(Table::new(vec!["a".into(), "b".into()], vec![1., 2., 3.], "mem").is_err());

    for dtype in [DType::F32, DType::F64] {
        let x = t.to_tensor(dtype, &Device::Cpu).expect("tensor");
        assert_eq!((x.dims(), x.dtype()), (&[2usize, 3][..], dtype));
        let back: Vec<Vec<f64>> = x.to_dtype(DType::F64).and_then(|x| x.to_vec2()).expect("vec");
        assert_eq!(back, [[1., 2., 3.], [4., 5., 6.]]);
    }
    let mut broken = t.clone();
    broken.rows = 3;
    assert!(broken.to_tensor(DType::F32, &Device::Cpu).is_err());
}

#[test]
fn writers_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let values = [0.1, -3., 1e-300, 1e20, 123456.789, -0.0];
    let columns = vec!["x".to_string(), "log prob, nats".to_string()];
    let p = dir.path().join("out.csv");
    write_csv(&p, &columns, &values, 2).expect("write_csv");
    let t = load(&p);
    assert_eq!(t.columns, columns);
    assert_eq!(t.values, values);
    assert!(write_csv(&p, &columns, &values[..5], 2).is_err());
    assert!(write_csv(&p, &columns[..1], &values, 2).is_err());

    let p = dir.path().join("out.npy");
    write_npy(&p, &values, 3, 2).expect("write_npy f64");
    assert_eq!(load(&p).values, values);
    let small = [1.5f32, -2., 0.25];
    write_npy(&p, &small, 3, 1).expect("write_npy f32");
    let t = load(&p);
    assert_eq!((t.rows, t.cols, t.values.clone()), (3, 1, vec![1.5, -2., 0.25]));
    assert!(write_npy(&p, &small, 2, 2).is_err());
}

/// The shared real data sets, when this checkout has them. A fresh clone does not, so the test
/// returns early there: the synthetic tests above already cover each format; this one only
/// confirms the loaders agree with files written by other tools (numpy, the MNIST distribution).
#[test]
fn real_files_when_present() {
    // `../shared/data` next to the project root, where the data README puts it.
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let base = if base.exists() { base } else { PathBuf::from("/work/shared/data") };

    let mnist = base.join("mnist/t10k-images-idx3-ubyte.gz");
    if mnist.exists() {
        let t = load(&mnist);
        assert_eq!((t.rows, t.cols), (10_000, 784));
        assert!(t.values.iter().all(|&v| (0.0..=255.0).contains(&v) && v.fract() == 0.0));
        assert_eq!(t.values.iter().cloned().fold(0.0, f64::max), 255.0);
    }
    let frey = base.join("frey/freyfaces_uint8.npy");
    if frey.exists() {
        let t = load(&frey);
        assert_eq!((t.rows, t.cols), (1965, 560));
        assert!(t.values.iter().all(|&v| (0.0..=255.0).contains(&v)));
    }
    let power = base.join("tabular/power_plant.csv");
    if power.exists() {
        let t = load(&power);
        assert_eq!((t.rows, t.cols), (9568, 5));
        assert_eq!(t.columns[0], "temperature");
        assert_eq!(t.row(0), [8.34, 40.77, 1010.84, 90.01, 480.48]);
    }
}
