//! The in-memory result of loading a data file: a named, row-major `f64` matrix.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::load::LoadOptions;
use crate::{Error, Result};

/// A numeric data matrix: `rows` samples of `cols` features, row-major.
///
/// Values are `f64` whatever the file held (integers and `f32` convert exactly, except 64-bit
/// integers above 2^53), and finite unless built by hand: the loaders reject or drop non-finite
/// rows. [`Table::to_tensor`] hands the matrix to a model as a `(rows, cols)` tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Column names: the file's header, or `x0, x1, ...` when it has none.
    pub columns: Vec<String>,
    /// Number of samples.
    pub rows: usize,
    /// Number of features, `columns.len()`.
    pub cols: usize,
    /// The `rows * cols` values, row-major: sample `i` is `values[i * cols..(i + 1) * cols]`.
    pub values: Vec<f64>,
    /// Where the data came from (the file's path), for messages.
    pub source: String,
    /// Rows skipped because they held NaN or infinite values ([`LoadOptions::drop_nonfinite`]).
    pub dropped_rows: usize,
}

/// Names `x0, x1, ...` for `cols` columns of a file without a header.
pub(super) fn default_names(cols: usize) -> Vec<String> {
    (0..cols).map(|j| format!("x{j}")).collect()
}

/// An [`Error::Data`] whose message starts with the file's path.
pub(super) fn file_error(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Data(format!("{}: {msg}", path.display()))
}

impl Table {
    /// A table of `values` (row-major, `values.len() / columns.len()` rows) named `columns`.
    ///
    /// Fails if there are no columns, no rows, or `values.len()` is not a multiple of the number
    /// of columns.
    pub fn new(columns: Vec<String>, values: Vec<f64>, source: impl Into<String>) -> Result<Self> {
        let source = source.into();
        let cols = columns.len();
        if cols == 0 || values.is_empty() || values.len() % cols != 0 {
            return Err(Error::Data(format!(
                "{source}: cannot arrange {} values as rows of {cols} columns",
                values.len()
            )));
        }
        Ok(Self { rows: values.len() / cols, cols, columns, values, source, dropped_rows: 0 })
    }

    /// Sample `i`, its `cols` values.
    ///
    /// # Panics
    /// If `i >= rows`, like slice indexing.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.cols..(i + 1) * self.cols]
    }

    /// The index of the column named `name` (the first, if several share it).
    pub fn column_index(&self, name: &str) -> Result<usize> {
        self.columns.iter().position(|c| c == name).ok_or_else(|| {
            let shown: Vec<&str> = self.columns.iter().take(20).map(String::as_str).collect();
            let more =
                if self.cols > 20 { format!(", ... ({} in all)", self.cols) } else { "".into() };
            Error::Data(format!(
                "{}: no column named '{name}'; the columns are {}{more}",
                self.source,
                shown.join(", ")
            ))
        })
    }

    /// A new table with the columns `idx` (0-based, in that order; repeats allowed).
    pub fn select_columns(&self, idx: &[usize]) -> Result<Table> {
        self.check_shape()?;
        if idx.is_empty() {
            return Err(Error::Data(format!("{}: no columns selected", self.source)));
        }
        if let Some(&bad) = idx.iter().find(|&&j| j >= self.cols) {
            return Err(Error::Data(format!(
                "{}: column index {bad} is out of range: the table has {} columns (0..{})",
                self.source,
                self.cols,
                self.cols.saturating_sub(1)
            )));
        }
        let mut values = Vec::with_capacity(self.rows * idx.len());
        for i in 0..self.rows {
            let row = self.row(i);
            values.extend(idx.iter().map(|&j| row[j]));
        }
        Ok(Table {
            columns: idx.iter().map(|&j| self.columns[j].clone()).collect(),
            rows: self.rows,
            cols: idx.len(),
            values,
            source: self.source.clone(),
            dropped_rows: self.dropped_rows,
        })
    }

    /// The matrix as a `(rows, cols)` tensor of `dtype` on `device`.
    pub fn to_tensor(&self, dtype: DType, device: &Device) -> Result<Tensor> {
        self.check_shape()?;
        let shape = (self.rows, self.cols);
        let t = match dtype {
            DType::F64 => Tensor::from_slice(&self.values, shape, device)?,
            // Converting on the host avoids a second, f64-sized copy on the device.
            DType::F32 => {
                let v: Vec<f32> = self.values.iter().map(|&x| x as f32).collect();
                Tensor::from_vec(v, shape, device)?
            }
            other => Tensor::from_slice(&self.values, shape, device)?.to_dtype(other)?,
        };
        Ok(t)
    }

    /// The public fields can be edited by hand; methods that index check they still agree.
    fn check_shape(&self) -> Result<()> {
        if self.columns.len() != self.cols || self.values.len() != self.rows * self.cols {
            return Err(Error::shape(
                format!("table from {}", self.source),
                format!(
                    "{} values for {} rows x {} columns ({} names)",
                    self.rows * self.cols,
                    self.rows,
                    self.cols,
                    self.columns.len()
                ),
                &[self.values.len()],
            ));
        }
        Ok(())
    }
}

/// The table of an array file (NPY, IDX) already flattened to `rows x cols`, with non-finite
/// values rejected or their rows dropped as `opts` asks.
///
/// Array files have no lines, so a bad value is reported by its 0-based `[row, column]` index in
/// the flattened matrix, numpy's notation.
pub(super) fn from_array(
    path: &Path,
    values: Vec<f64>,
    rows: usize,
    cols: usize,
    opts: &LoadOptions,
) -> Result<Table> {
    // Callers report empty arrays with their own shapes; this guards `chunks_exact(0)`.
    if rows == 0 || cols == 0 || values.len() != rows * cols {
        return Err(file_error(path, format!("no data: the array flattens to {rows} x {cols}")));
    }
    let mut kept = Vec::with_capacity(if opts.drop_nonfinite { values.len() } else { 0 });
    let mut dropped = 0;
    for (i, row) in values.chunks_exact(cols).enumerate() {
        match row.iter().position(|v| !v.is_finite()) {
            None if opts.drop_nonfinite => kept.extend_from_slice(row),
            None => {}
            Some(_) if opts.drop_nonfinite => dropped += 1,
            Some(j) => {
                return Err(file_error(
                    path,
                    format!(
                        "non-finite value {} at [{i}, {j}] (0-based row and column of the \
                         {rows} x {cols} matrix); remove those rows, or load with \
                         drop_nonfinite to skip them",
                        row[j]
                    ),
                ));
            }
        }
    }
    let values = if opts.drop_nonfinite { kept } else { values };
    if values.is_empty() {
        return Err(file_error(
            path,
            format!(
                "all {dropped} rows hold non-finite values, nothing is left after dropping them"
            ),
        ));
    }
    let mut table = Table::new(default_names(cols), values, path.display().to_string())?;
    table.dropped_rows = dropped;
    Ok(table)
}
