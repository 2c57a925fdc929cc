//! Data: loading the user's files into a [`Table`], and writing results back.
//!
//! [`load_table`] reads a numeric matrix (rows = samples, columns = features) from
//!
//! - **CSV / TSV text** (`.csv`, `.tsv`, `.txt`, `.dat`): comma, semicolon, tab or whitespace
//!   separated, with or without a header row (both detected from the content);
//! - **NumPy `.npy`** arrays: 1-D (one column), 2-D, or N-D flattened to `(N, d1*d2*...)`;
//! - **IDX**, the MNIST format (`train-images-idx3-ubyte`): `(N, d1, d2, ...)` flattened the same way;
//!
//! each optionally gzip-compressed (`.gz`, detected from the content). A bad file never panics
//! and never turns into silent NaNs: the error names the file and, where it applies, the line,
//! the column (number and name) and the offending value.
//!
//! [`toy`] holds the eight 2-D toy densities of the FFJORD paper.
//!
//! [`write_csv`] and [`write_npy`] write a row-major matrix (samples, log-densities) back out.

mod delimited;
mod idx;
mod load;
mod npy;
mod table;
pub mod toy;

pub use delimited::write_csv;
pub use load::{load_table, LoadOptions};
pub use npy::{write_npy, NpyValue};
pub use table::Table;
