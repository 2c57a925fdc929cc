//! [`load_table`]: reads a file, undoes gzip, and hands it to the right format's parser.

use std::io::Read;
use std::path::Path;

use super::table::{file_error, Table};
use super::{delimited, idx, npy};
use crate::{Error, Result};

/// How [`load_table`] treats questionable rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Skip rows holding NaN or infinite values (counted in [`Table::dropped_rows`]) instead of
    /// failing on the first one.
    pub drop_nonfinite: bool,
}

/// What every "unknown format" message lists.
const SUPPORTED: &str = "supported formats: CSV/TSV text (.csv, .tsv, .txt, .dat), NumPy arrays \
                         (.npy), IDX (the MNIST format, e.g. train-images-idx3-ubyte); each may \
                         be gzip-compressed (.gz)";

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const NPY_MAGIC: &[u8] = b"\x93NUMPY";
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// Loads the numeric matrix in `path` (see [the module docs](super) for the formats).
///
/// The format comes from the content where it has a signature (gzip, NPY, IDX magic bytes) and
/// from the extension otherwise (text); `name.csv.gz` is a gzip-compressed CSV file. Errors:
/// [`Error::Io`] if the file cannot be read, [`Error::Data`] naming the file (and line, column and
/// value where they apply) for anything wrong with its content.
pub fn load_table(path: &Path, opts: &LoadOptions) -> Result<Table> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bytes = if raw.starts_with(GZIP_MAGIC) { gunzip(path, &raw)? } else { raw };
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");

    if bytes.starts_with(NPY_MAGIC) {
        return npy::parse(path, &bytes, opts);
    }
    if idx::has_magic(&bytes) {
        return idx::parse(path, &bytes, opts);
    }
    if bytes.starts_with(ZIP_MAGIC) && ext != "npz" {
        return Err(file_error(
            path,
            format!(
                "is a ZIP archive (an Excel .xlsx workbook? a numpy .npz?): export the sheet as \
                 CSV, or save the array with numpy.save; {SUPPORTED}"
            ),
        ));
    }
    match ext {
        "csv" | "txt" | "dat" => delimited::parse(path, &bytes, false, opts),
        "tsv" | "tab" => delimited::parse(path, &bytes, true, opts),
        "npy" => Err(file_error(
            path,
            "has the .npy extension but does not start with the NPY signature (\\x93NUMPY); \
             write it with numpy.save",
        )),
        "npz" => Err(file_error(
            path,
            "NPZ archives (numpy.savez) are not supported: save the one array you want with \
             numpy.save(\"data.npy\", array)",
        )),
        _ if idx::looks_like_idx_name(name) => Err(idx::bad_magic(path, &bytes)),
        _ if bytes.is_empty() => Err(file_error(path, format!("the file is empty; {SUPPORTED}"))),
        _ => Err(file_error(
            path,
            format!(
                "unrecognized file format (extension '{ext}', no known signature); {SUPPORTED}"
            ),
        )),
    }
}

/// Decompresses all gzip members of `raw` (as `gzip -d` does).
fn gunzip(path: &Path, raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4));
    flate2::read::MultiGzDecoder::new(raw).read_to_end(&mut out).map_err(|e| {
        file_error(
            path,
            format!("is gzip-compressed but cannot be decompressed ({e}); is it complete?"),
        )
    })?;
    Ok(out)
}
