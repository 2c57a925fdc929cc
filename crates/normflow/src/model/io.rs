//! Atomic file writes and checksums for model directories.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, flushed to disk,
/// then renamed over `path`. A crash leaves either the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_sibling(path);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        // Best effort: the temporary file is garbage now, and the error that matters is `e`.
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// CRC-32 of `bytes`, stored in `spec.json` to tie it to its weights file.
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Serializes named tensors to safetensors bytes (in name order).
pub fn safetensors_bytes(tensors: &[(String, candle_core::Tensor)]) -> Result<Vec<u8>> {
    let contiguous: Vec<(String, candle_core::Tensor)> =
        tensors.iter().map(|(n, t)| Ok((n.clone(), t.contiguous()?))).collect::<Result<_>>()?;
    safetensors::tensor::serialize(contiguous.iter().map(|(n, t)| (n.as_str(), t)), None)
        .map_err(|e| Error::Data(format!("cannot serialize tensors: {e}")))
}
