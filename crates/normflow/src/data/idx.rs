//! IDX files, the MNIST format (LeCun et al., <http://yann.lecun.com/exdb/mnist/>).
//!
//! Layout: magic `00 00 <type> <ndim>`, then `ndim` big-endian `u32` dimensions, then the values,
//! big-endian, in C order. Type codes: `08` u8, `09` i8, `0B` i16, `0C` i32, `0D` f32, `0E` f64.
//! An `(N, d1, d2, ...)` array becomes `N` rows of `d1*d2*...` columns (row-major: MNIST pixel
//! `(r, c)` is column `28 r + c`); a 1-D array (labels) becomes one column.

use std::path::Path;

use super::load::LoadOptions;
use super::table::{file_error, from_array, Table};
use crate::{Error, Result};

/// The element type named by an IDX type code: (name, bytes per value).
fn element(code: u8) -> Option<(&'static str, usize)> {
    match code {
        0x08 => Some(("u8", 1)),
        0x09 => Some(("i8", 1)),
        0x0B => Some(("i16", 2)),
        0x0C => Some(("i32", 4)),
        0x0D => Some(("f32", 4)),
        0x0E => Some(("f64", 8)),
        _ => None,
    }
}

/// Whether `bytes` start with a valid IDX magic number.
pub(super) fn has_magic(bytes: &[u8]) -> bool {
    bytes.len() >= 4
        && bytes[0] == 0
        && bytes[1] == 0
        && element(bytes[2]).is_some()
        && bytes[3] > 0
}

/// Whether a (lower-case, `.gz`-stripped) file name says IDX: `*.idx`, `*-ubyte`, `*idx3*`.
pub(super) fn looks_like_idx_name(name: &str) -> bool {
    name.ends_with(".idx")
        || name.ends_with("ubyte")
        || name.as_bytes().windows(4).any(|w| w.starts_with(b"idx") && w[3].is_ascii_digit())
}

/// The error for a file named like IDX whose first bytes are not an IDX magic number.
pub(super) fn bad_magic(path: &Path, bytes: &[u8]) -> Error {
    let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
    file_error(
        path,
        format!(
            "named like an IDX file but its first bytes are [{}], not an IDX magic number \
             (00 00 <type 08/09/0b/0c/0d/0e> <ndim>)",
            head.join(" ")
        ),
    )
}

/// Parses a whole (already decompressed) IDX file.
pub(super) fn parse(path: &Path, bytes: &[u8], opts: &LoadOptions) -> Result<Table> {
    if !has_magic(bytes) {
        return Err(bad_magic(path, bytes));
    }
    let (type_name, size) = element(bytes[2]).ok_or_else(|| bad_magic(path, bytes))?;
    let ndim = usize::from(bytes[3]);
    let header_len = 4 + 4 * ndim;
    if bytes.len() < header_len {
        return Err(file_error(
            path,
            format!(
                "truncated IDX header: {ndim} dimensions need {header_len} header bytes, \
                 the file has {}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let shape = format!("{dims:?} of {type_name}");
    let rows = dims[0];
    let cols = dims[1..].iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let expected = cols.and_then(|c| c.checked_mul(rows)).and_then(|n| n.checked_mul(size));
    let (Some(cols), Some(expected)) = (cols, expected) else {
        return Err(file_error(path, format!("IDX dimensions {shape} are too large")));
    };
    let actual = bytes.len() - header_len;
    if actual != expected {
        let what = if actual < expected { "truncated" } else { "longer than its header says" };
        return Err(file_error(
            path,
            format!(
                "IDX data is {what}: dimensions {shape} need {expected} bytes after the \
                 {header_len}-byte header, found {actual}"
            ),
        ));
    }
    if rows == 0 || cols == 0 {
        return Err(file_error(path, format!("no data: the IDX array has dimensions {shape}")));
    }
    let data = &bytes[header_len..];
    let values: Vec<f64> = match bytes[2] {
        0x08 => data.iter().map(|&b| f64::from(b)).collect(),
        0x09 => data.iter().map(|&b| f64::from(i8::from_be_bytes([b]))).collect(),
        0x0B => data.chunks_exact(2).map(|c| f64::from(i16::from_be_bytes([c[0], c[1]]))).collect(),
        0x0C => data
            .chunks_exact(4)
            .map(|c| f64::from(i32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        0x0D => data
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        // 0x0E, the only code `has_magic` leaves.
        _ => data
            .chunks_exact(8)
            .map(|c| f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
    };
    from_array(path, values, rows, cols, opts)
}
