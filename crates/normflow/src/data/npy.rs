//! NumPy `.npy` files (format spec: <https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html>).
//!
//! Reading accepts bool, int8..int64, uint8..uint64, float32 and float64 arrays in either byte
//! order. A 1-D array is one column; an `(N, d1, d2, ...)` array becomes `N` rows of
//! `d1*d2*...` columns in C order (for a stack of images, column `c + W r` is pixel `(r, c)`),
//! whichever order (C or Fortran) the file stores.

use std::path::Path;

use npyz::{NpyFile, NpyHeader, Order, TypeChar, WriterBuilder};

use super::load::LoadOptions;
use super::table::{file_error, from_array, Table};
use crate::{Error, Result};

/// Parses a whole (already decompressed) `.npy` file.
pub(super) fn parse(path: &Path, bytes: &[u8], opts: &LoadOptions) -> Result<Table> {
    let mut data: &[u8] = bytes;
    let header = NpyHeader::from_reader(&mut data)
        .map_err(|e| file_error(path, format!("invalid NPY header: {e}")))?;
    let too_large = || file_error(path, format!("NPY shape {:?} is too large", header.shape()));
    let shape = header
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| too_large())?;
    let Some((&rows, inner)) = shape.split_first() else {
        return Err(file_error(
            path,
            "holds a single number (a 0-d array); expected a 1-D or 2-D array of samples",
        ));
    };
    let cols = inner.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(too_large)?;
    let dtype = header.dtype();
    let descr = dtype.descr();
    let type_str = match &dtype {
        npyz::DType::Plain(ts) if !header.uses_pickled_array() => ts,
        _ => return Err(unsupported(path, &descr)),
    };
    let (kind, size) = (type_str.type_char(), type_str.size_field());
    let supported = match kind {
        TypeChar::Float => matches!(size, 4 | 8),
        TypeChar::Int | TypeChar::Uint => matches!(size, 1 | 2 | 4 | 8),
        TypeChar::Bool => size == 1,
        _ => false,
    };
    if !supported {
        return Err(unsupported(path, &descr));
    }
    // For the supported types the size field is the byte count.
    let expected = cols
        .checked_mul(rows)
        .and_then(|n| n.checked_mul(usize::try_from(size).ok()?))
        .ok_or_else(too_large)?;
    if data.len() != expected {
        let what = if data.len() < expected { "truncated" } else { "longer than its header says" };
        return Err(file_error(
            path,
            format!(
                "NPY data is {what}: shape {shape:?} of {descr} needs {expected} bytes after the \
                 header, found {}",
                data.len()
            ),
        ));
    }
    if rows == 0 || cols == 0 {
        return Err(file_error(path, format!("no data: the NPY array has shape {shape:?}")));
    }

    let file = NpyFile::with_header(header.clone(), data);
    let values = match (kind, size) {
        (TypeChar::Float, 8) => read::<f64>(path, file, |x| x)?,
        (TypeChar::Float, 4) => read::<f32>(path, file, f64::from)?,
        (TypeChar::Int, 1) => read::<i8>(path, file, f64::from)?,
        (TypeChar::Int, 2) => read::<i16>(path, file, f64::from)?,
        (TypeChar::Int, 4) => read::<i32>(path, file, f64::from)?,
        // Exact up to 2^53, like numpy's own float64 conversion.
        (TypeChar::Int, 8) => read::<i64>(path, file, |x| x as f64)?,
        (TypeChar::Uint, 1) => read::<u8>(path, file, f64::from)?,
        (TypeChar::Uint, 2) => read::<u16>(path, file, f64::from)?,
        (TypeChar::Uint, 4) => read::<u32>(path, file, f64::from)?,
        (TypeChar::Uint, 8) => read::<u64>(path, file, |x| x as f64)?,
        (TypeChar::Bool, 1) => read::<bool>(path, file, |b| f64::from(u8::from(b)))?,
        _ => return Err(unsupported(path, &descr)),
    };
    let values = match header.order() {
        Order::Fortran if shape.len() > 1 => to_c_order(&values, &shape, header.strides()),
        _ => values,
    };
    from_array(path, values, rows, cols, opts)
}

fn unsupported(path: &Path, descr: &str) -> Error {
    file_error(
        path,
        format!(
            "unsupported NPY element type {descr}; supported: float32, float64, int8..int64, \
             uint8..uint64, bool (convert with array.astype(numpy.float32) before numpy.save)"
        ),
    )
}

/// All values of `file` as `T`, converted to `f64`.
fn read<T: npyz::Deserialize>(
    path: &Path,
    file: NpyFile<&[u8]>,
    to_f64: impl Fn(T) -> f64,
) -> Result<Vec<f64>> {
    let reader =
        file.data::<T>().map_err(|e| file_error(path, format!("NPY element type: {e}")))?;
    reader
        .map(|v| v.map(&to_f64).map_err(|e| file_error(path, format!("reading NPY data: {e}"))))
        .collect()
}

/// Reorders `values`, stored with element `strides` (Fortran order), into C order for `shape`.
fn to_c_order(values: &[f64], shape: &[usize], strides: &[u64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(values.len());
    let mut index = vec![0usize; shape.len()];
    for _ in 0..values.len() {
        // Strides come from the shape itself, so `at` is always within `values`.
        let at: u64 = index.iter().zip(strides).map(|(&i, &s)| i as u64 * s).sum();
        out.push(values[at as usize]);
        for k in (0..shape.len()).rev() {
            index[k] += 1;
            if index[k] < shape[k] {
                break;
            }
            index[k] = 0;
        }
    }
    out
}

mod sealed {
    /// Keeps [`super::NpyValue`] closed: `npyz` stays an implementation detail.
    pub trait Sealed: npyz::Serialize + npyz::AutoSerialize + Copy {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// Element types [`write_npy`] writes: `f32` (`<f4`) and `f64` (`<f8`).
pub trait NpyValue: sealed::Sealed {}
impl NpyValue for f32 {}
impl NpyValue for f64 {}

/// Writes the row-major `rows x cols` matrix `values` to `path` as a 2-D `.npy` array, readable
/// with `numpy.load(path)` (and by [`super::load_table`]).
pub fn write_npy<T: NpyValue>(path: &Path, values: &[T], rows: usize, cols: usize) -> Result<()> {
    if rows.checked_mul(cols) != Some(values.len()) {
        return Err(Error::shape(
            format!("write_npy to {}", path.display()),
            format!("{rows} x {cols} values"),
            &[values.len()],
        ));
    }
    let io = |e| Error::io(path, e);
    let mut buf = Vec::new();
    let mut writer = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(&[rows as u64, cols as u64])
        .writer(&mut buf)
        .begin_nd()
        .map_err(io)?;
    writer.extend(values.iter().copied()).map_err(io)?;
    writer.finish().map_err(io)?;
    std::fs::write(path, buf).map_err(io)
}
