//! VAE model directories: `spec.json` (format, version, [`VaeSpec`], seed, dtype, CRC-32 of the
//! weights, free-form training record) and `weights.safetensors`, written atomically (weights
//! first, `spec.json` last) with the mechanism of [`crate::model`].

use std::path::Path;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::model::Vae;
use super::spec::VaeSpec;
use crate::model::io::{checksum, safetensors_bytes, write_atomic};
use crate::model::{dtype_name, parse_dtype, read_tensors};
use crate::{Error, Result};

/// The `format` of a VAE directory's `spec.json`.
pub const VAE_FORMAT: &str = "normflow-vae";
/// The newest format version this build writes and reads.
pub const VAE_FORMAT_VERSION: u32 = 1;
const SPEC_FILE: &str = "spec.json";
const WEIGHTS_FILE: &str = "weights.safetensors";

/// The content of a VAE directory's `spec.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeFile {
    /// Always [`VAE_FORMAT`].
    pub format: String,
    /// [`VAE_FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// The architecture.
    pub spec: VaeSpec,
    /// The initialization seed.
    pub seed: u64,
    /// `f32` or `f64`.
    pub dtype: String,
    /// CRC-32 of `weights.safetensors`.
    pub weights_crc32: u32,
    /// Whatever the trainer recorded (settings, results).
    #[serde(default)]
    pub training: serde_json::Value,
}

impl Vae {
    /// Saves to `dir` (created if needed), recording `training` in `spec.json`.
    ///
    /// The weights are replaced before `spec.json`; a kill between the two leaves a checksum
    /// mismatch that [`Vae::load`] reports (the previous weights are gone either way).
    pub fn save(&self, dir: &Path, training: serde_json::Value) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let weights = safetensors_bytes(&self.store().tensors())?;
        let file = VaeFile {
            format: VAE_FORMAT.into(),
            format_version: VAE_FORMAT_VERSION,
            spec: self.spec().clone(),
            seed: self.seed(),
            dtype: dtype_name(self.store().dtype())?.into(),
            weights_crc32: checksum(&weights),
            training,
        };
        write_atomic(&dir.join(WEIGHTS_FILE), &weights)?;
        write_atomic(&dir.join(SPEC_FILE), &serde_json::to_vec_pretty(&file)?)
    }

    /// Loads a directory written by [`Vae::save`]: checks format, version, spec, checksum and
    /// every tensor's name and shape.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let file = read_vae_file(dir)?;
        let weights_path = dir.join(WEIGHTS_FILE);
        let tensors = read_tensors(&weights_path, &[file.weights_crc32])?;
        let vae = Vae::new(file.spec, file.seed, parse_dtype(&file.dtype)?, device)?;
        vae.store().load_tensors(&tensors, &weights_path)?;
        Ok(vae)
    }
}

/// Reads and validates `DIR/spec.json` of a VAE directory.
pub fn read_vae_file(dir: &Path) -> Result<VaeFile> {
    if !dir.is_dir() {
        return Err(Error::model_file(dir, "not a model directory (missing or not a directory)"));
    }
    let path = dir.join(SPEC_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::model_file(&path, format!("not valid JSON ({e}); the file may be truncated"))
    })?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(VAE_FORMAT) => {}
        Some(other) => {
            return Err(Error::model_file(
                &path,
                format!("a \"{other}\" directory, not a VAE (\"{VAE_FORMAT}\")"),
            ))
        }
        None => return Err(Error::model_file(&path, "no \"format\": not a normflow VAE")),
    }
    match value.get("format_version").and_then(|v| v.as_u64()) {
        None => return Err(Error::model_file(&path, "no format_version")),
        Some(v) if v > u64::from(VAE_FORMAT_VERSION) => {
            return Err(Error::model_file(
                &path,
                format!(
                    "VAE format version {v} is newer than this build reads \
                     ({VAE_FORMAT_VERSION}): upgrade normflow"
                ),
            ))
        }
        Some(_) => {}
    }
    let file: VaeFile = serde_json::from_value(value)
        .map_err(|e| Error::model_file(&path, format!("invalid spec: {e}")))?;
    file.spec.validate()?;
    Ok(file)
}
