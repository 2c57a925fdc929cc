//! Models on disk: a flow, its preprocessing and its weights, in one directory.
//!
//! ```text
//! DIR/spec.json               format version, flow spec, seed, dtype, preprocessing,
//!                             checksums of the tensor files, free-form training summary
//! DIR/weights.safetensors     every parameter and buffer, by name
//! DIR/optimizer.safetensors   optimizer state (optional; lets a run resume exactly)
//! ```
//!
//! Every file is written atomically (temporary file, then rename), tensor files first and
//! `spec.json` last, and `spec.json` records the CRC-32 of the tensor files it belongs to: a
//! directory whose writing was interrupted, or whose files were mixed from two runs, fails to
//! load with a message saying so instead of loading something inconsistent.

pub mod io;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::bijections::{Bijection, Chain, Support};
use crate::distributions::{Distribution, Flow};
use crate::flows::FlowSpec;
use crate::params::ParamStore;
use crate::preprocess::{Standardization, Standardize};
use crate::{Error, Result};

/// The `format` field of every `spec.json`.
pub const FORMAT_NAME: &str = "normflow-model";
/// The newest model format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const SPEC_FILE: &str = "spec.json";
const WEIGHTS_FILE: &str = "weights.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// The contents of `spec.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// The format version the directory was written with.
    pub format_version: u32,
    /// The normflow version that wrote it (informative).
    pub normflow_version: String,
    /// The architecture.
    pub flow: FlowSpec,
    /// The seed the model was built with (it fixes random permutations and MADE orders).
    pub seed: u64,
    /// `"f32"` or `"f64"`.
    pub dtype: String,
    /// Where the data lives; a non-real support is mapped onto `R^D` first, before the
    /// preprocessing (whose statistics are then those of the mapped values).
    #[serde(default)]
    pub support: Support,
    /// Standardization of the data columns, applied inside the model.
    pub preprocessing: Option<Standardization>,
    /// Standardization of the context columns (conditional models).
    #[serde(default)]
    pub context_preprocessing: Option<Standardization>,
    /// CRC-32 of `weights.safetensors` (filled in when saving).
    #[serde(default)]
    pub weights_crc32: u32,
    /// CRC-32 of `optimizer.safetensors`, if one was saved.
    #[serde(default)]
    pub optimizer_crc32: Option<u32>,
    /// Set only while [`Model::save`] replaces the weights of this same model: the CRC-32 of the
    /// weights being replaced, which also load. Two files cannot be replaced together
    /// atomically, so without it a save interrupted between them (a killed training run) would
    /// leave a directory that fails the checksum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_weights_crc32: Option<u32>,
    /// Free-form training summary and settings (used by `inspect` and `train --resume`).
    #[serde(default)]
    pub training: Option<serde_json::Value>,
}

/// A flow with its preprocessing and parameters: what a model directory holds.
///
/// `Model` is a [`Distribution`] over data in the user's **original units**: its first bijection
/// is the data standardization, and context rows are standardized before use.
#[derive(Debug)]
pub struct Model {
    spec: ModelSpec,
    store: ParamStore,
    flow: Flow,
    context_standardize: Option<Standardize>,
}

pub(crate) fn dtype_name(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F64 => Ok("f64"),
        other => Err(Error::config("dtype", format!("{other:?}"), "models use f32 or f64")),
    }
}

pub(crate) fn parse_dtype(name: &str) -> Result<DType> {
    match name {
        "f32" => Ok(DType::F32),
        "f64" => Ok(DType::F64),
        other => Err(Error::config("dtype", other, "models use f32 or f64")),
    }
}

impl Model {
    /// Builds a fresh model (parameters at their initialization) from a flow spec.
    pub fn new(
        flow: FlowSpec,
        preprocessing: Option<Standardization>,
        context_preprocessing: Option<Standardization>,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let spec = ModelSpec {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            normflow_version: env!("CARGO_PKG_VERSION").into(),
            flow,
            seed,
            dtype: dtype_name(dtype)?.into(),
            support: Support::Real,
            preprocessing,
            context_preprocessing,
            weights_crc32: 0,
            optimizer_crc32: None,
            replaced_weights_crc32: None,
            training: None,
        };
        Self::from_spec(spec, device)
    }

    fn from_spec(spec: ModelSpec, device: &Device) -> Result<Self> {
        let dtype = parse_dtype(&spec.dtype)?;
        let features = spec.flow.features();
        let context = spec.flow.context_features();
        if let Some(p) = &spec.preprocessing {
            if p.features() != features {
                return Err(Error::Data(format!(
                    "preprocessing has {} features but the flow has {features}",
                    p.features()
                )));
            }
        }
        let context_standardize = match &spec.context_preprocessing {
            Some(p) if p.features() != context => {
                return Err(Error::Data(format!(
                    "context preprocessing has {} features but the flow takes {context}",
                    p.features()
                )))
            }
            Some(p) => Some(p.bijection(dtype, device)?),
            None => None,
        };
        let store = ParamStore::new(dtype, device, spec.seed);
        let (transform, base) = spec.flow.build(&store.root())?;
        let mut layers: Vec<Box<dyn Bijection>> = Vec::new();
        if let Some(map) = spec.support.map()? {
            layers.push(Box::new(map));
        }
        if let Some(p) = &spec.preprocessing {
            layers.push(Box::new(p.bijection(dtype, device)?));
        }
        layers.push(Box::new(transform));
        let flow = Flow::from_boxed(Box::new(Chain::new(layers)), base);
        Ok(Self { spec, store, flow, context_standardize })
    }

    /// The same model on another support (see [`Support`]): its samples lie there and its
    /// density is defined there. Rebuilds the parameters at their initialization, so call it on
    /// a fresh model.
    pub fn with_support(self, support: Support) -> Result<Self> {
        let device = self.device().clone();
        Self::from_spec(ModelSpec { support, ..self.spec }, &device)
    }

    /// The model's description.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Sets the free-form training summary saved in `spec.json`.
    pub fn set_training_summary(&mut self, summary: serde_json::Value) {
        self.spec.training = Some(summary);
    }

    /// The parameters and buffers.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The flow, working on data in original units (standardization included).
    pub fn flow(&self) -> &Flow {
        &self.flow
    }

    /// Data dimension.
    pub fn features(&self) -> usize {
        self.spec.flow.features()
    }

    /// Context dimension (0 = unconditional).
    pub fn context_features(&self) -> usize {
        self.spec.flow.context_features()
    }

    /// The dtype of the model's tensors.
    pub fn dtype(&self) -> DType {
        self.store.dtype()
    }

    /// The device of the model's tensors.
    pub fn device(&self) -> &Device {
        self.store.device()
    }

    fn context(&self, context: Option<&Tensor>) -> Result<Option<Tensor>> {
        match (context, &self.context_standardize) {
            (Some(c), Some(s)) => Ok(Some(s.forward(c, None)?)),
            (Some(c), None) => Ok(Some(c.clone())),
            (None, _) => Ok(None),
        }
    }

    fn check_input(&self, x: &Tensor, context: Option<&Tensor>) -> Result<()> {
        let d = self.features();
        if x.rank() != 2 || x.dim(1)? != d {
            return Err(Error::shape("model input", format!("(rows, {d})"), x.dims()));
        }
        self.check_context(context, x.dim(0)?)
    }

    fn check_context(&self, context: Option<&Tensor>, rows: usize) -> Result<()> {
        let c = self.context_features();
        match context {
            None if c > 0 => Err(Error::Context(format!(
                "this model is conditional on {c} context features: give a context"
            ))),
            Some(_) if c == 0 => Err(Error::Context("this model takes no context".into())),
            Some(ctx) if ctx.rank() != 2 || ctx.dim(1)? != c || ctx.dim(0)? != rows => {
                Err(Error::shape("context", format!("({rows}, {c})"), ctx.dims()))
            }
            _ => Ok(()),
        }
    }

    /// Saves to `dir` (created if needed): weights, optional optimizer state, then `spec.json`
    /// (which records the checksums of the other two).
    ///
    /// Saving over an earlier save of the same model (same flow, seed, dtype and preprocessing,
    /// as a training loop does after every improvement) first writes a `spec.json` that accepts
    /// the old and the new weights: the directory loads at every moment, even if the process is
    /// killed halfway (the optimizer state is then absent until the save completes).
    pub fn save(&self, dir: &Path, optimizer_state: Option<&[(String, Tensor)]>) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut spec = self.spec.clone();
        let weights = io::safetensors_bytes(&self.store.tensors())?;
        spec.weights_crc32 = io::checksum(&weights);
        spec.replaced_weights_crc32 = None;
        if let Some(old) = self.saved_weights_crc(dir).filter(|&c| c != spec.weights_crc32) {
            let interim = ModelSpec {
                replaced_weights_crc32: Some(old),
                optimizer_crc32: None,
                ..spec.clone()
            };
            io::write_atomic(&dir.join(SPEC_FILE), &serde_json::to_vec_pretty(&interim)?)?;
        }
        io::write_atomic(&dir.join(WEIGHTS_FILE), &weights)?;
        spec.optimizer_crc32 = match optimizer_state {
            Some(state) => {
                let bytes = io::safetensors_bytes(state)?;
                io::write_atomic(&dir.join(OPTIMIZER_FILE), &bytes)?;
                Some(io::checksum(&bytes))
            }
            None => {
                // A stale optimizer file from an earlier save must not pass for this model's.
                let stale = dir.join(OPTIMIZER_FILE);
                if stale.exists() {
                    std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
                }
                None
            }
        };
        let json = serde_json::to_vec_pretty(&spec)?;
        io::write_atomic(&dir.join(SPEC_FILE), &json)
    }

    /// The weights checksum of the model saved in `dir`, if that is a save of this same model
    /// (whatever its weights and training summary).
    fn saved_weights_crc(&self, dir: &Path) -> Option<u32> {
        let saved = read_spec(dir).ok()?;
        let mine = &self.spec;
        let same = saved.flow == mine.flow
            && saved.seed == mine.seed
            && saved.dtype == mine.dtype
            && saved.preprocessing == mine.preprocessing
            && saved.context_preprocessing == mine.context_preprocessing;
        same.then_some(saved.weights_crc32)
    }

    /// Loads a model directory written by [`Model::save`], validating the format version, the
    /// spec, the checksum and every tensor's name and shape.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let spec = read_spec(dir)?;
        let weights_path = dir.join(WEIGHTS_FILE);
        let accepted: Vec<u32> =
            std::iter::once(spec.weights_crc32).chain(spec.replaced_weights_crc32).collect();
        let tensors = read_tensors(&weights_path, &accepted)?;
        let model = Self::from_spec(spec, device)?;
        model.store.load_tensors(&tensors, &weights_path)?;
        Ok(model)
    }

    /// The optimizer state saved beside the weights, if any (validated against its checksum).
    pub fn load_optimizer_state(&self, dir: &Path) -> Result<Option<HashMap<String, Tensor>>> {
        match self.spec.optimizer_crc32 {
            None => Ok(None),
            Some(crc) => Ok(Some(read_tensors(&dir.join(OPTIMIZER_FILE), &[crc])?)),
        }
    }
}

/// Reads and validates `DIR/spec.json`.
pub fn read_spec(dir: &Path) -> Result<ModelSpec> {
    let path = dir.join(SPEC_FILE);
    if !dir.is_dir() {
        return Err(Error::model_file(
            dir,
            "not a model directory (it does not exist or is not a directory)",
        ));
    }
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::model_file(&path, format!("not valid JSON ({e}); the file may be truncated"))
    })?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
        return Err(Error::model_file(
            &path,
            format!("not a normflow model (no \"format\": \"{FORMAT_NAME}\")"),
        ));
    }
    match value.get("format_version").and_then(|v| v.as_u64()) {
        None => return Err(Error::model_file(&path, "no format_version")),
        Some(v) if v > u64::from(FORMAT_VERSION) => {
            return Err(Error::model_file(
                &path,
                format!(
                    "written with model format version {v} by a newer normflow; this build reads up to version {FORMAT_VERSION}: upgrade normflow"
                ),
            ))
        }
        Some(_) => {}
    }
    let spec: ModelSpec = serde_json::from_value(value)
        .map_err(|e| Error::model_file(&path, format!("invalid spec: {e}")))?;
    spec.flow
        .validate()
        .map_err(|e| Error::model_file(&path, format!("invalid flow spec: {e}")))?;
    for p in spec.preprocessing.iter().chain(spec.context_preprocessing.iter()) {
        p.validate().map_err(|e| Error::model_file(&path, e.to_string()))?;
    }
    Ok(spec)
}

/// Reads a tensor file whose CRC-32 must be one of `accepted`.
pub(crate) fn read_tensors(path: &Path, accepted: &[u32]) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !accepted.contains(&io::checksum(&bytes)) {
        return Err(Error::model_file(
            path,
            "checksum does not match spec.json: the file is corrupt, truncated, or from another save",
        ));
    }
    candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| Error::model_file(path, format!("not a valid safetensors file: {e}")))
}

impl Distribution for Model {
    fn log_prob(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        self.check_input(x, context)?;
        self.flow.log_prob(x, self.context(context)?.as_ref())
    }

    fn sample(&self, n: usize, context: Option<&Tensor>, rng: &mut dyn RngCore) -> Result<Tensor> {
        self.check_context(context, n)?;
        self.flow.sample(n, self.context(context)?.as_ref(), rng)
    }

    fn sample_and_log_prob(
        &self,
        n: usize,
        context: Option<&Tensor>,
        rng: &mut dyn RngCore,
    ) -> Result<(Tensor, Tensor)> {
        self.check_context(context, n)?;
        self.flow.sample_and_log_prob(n, self.context(context)?.as_ref(), rng)
    }

    fn event_shape(&self) -> Vec<usize> {
        vec![self.features()]
    }

    fn set_training(&self, training: bool) {
        self.flow.set_training(training)
    }

    fn rows_independent(&self) -> bool {
        self.flow.rows_independent()
    }

    fn training_slice_rows(&self) -> Option<usize> {
        self.flow.training_slice_rows()
    }

    fn auxiliary_loss(&self) -> Result<Option<Tensor>> {
        self.flow.auxiliary_loss()
    }

    fn function_evaluations(&self) -> Option<crate::ode::FunctionEvaluations> {
        self.flow.function_evaluations()
    }
}
