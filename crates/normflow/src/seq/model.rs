//! One type for every sequence model (the three latent flows and the two baselines), its
//! evaluation in nats per step, sampling, and its model directory.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::baselines::{GruBaseline, IndependentBernoulli};
use super::data::{NoteRange, NoteSequence, SeqBatch};
use super::prior::{PriorKind, SeqPriorConfig};
use super::vae::SeqVae;
use crate::latent::importance_bounds;
use crate::model::io::{checksum, safetensors_bytes, write_atomic};
use crate::params::ParamStore;
use crate::{Error, Result};

/// Which model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeqModelKind {
    /// Latent flow, AF over time and within steps.
    AfAf,
    /// Latent flow, AF over time, split coupling within steps.
    AfScf,
    /// Latent flow, IAF over time, split coupling within steps.
    IafScf,
    /// Baseline: independent notes with fixed probabilities.
    Bernoulli,
    /// Baseline: GRU over steps, notes independent given the history.
    Gru,
}

impl SeqModelKind {
    /// The flow prior's architecture, for the latent flows.
    pub fn prior(&self) -> Option<PriorKind> {
        match self {
            SeqModelKind::AfAf => Some(PriorKind::AfAf),
            SeqModelKind::AfScf => Some(PriorKind::AfScf),
            SeqModelKind::IafScf => Some(PriorKind::IafScf),
            SeqModelKind::Bernoulli | SeqModelKind::Gru => None,
        }
    }

    /// The CLI spelling (`af-af`, `af-scf`, `iaf-scf`, `bernoulli`, `gru`).
    pub fn name(&self) -> &'static str {
        match self {
            SeqModelKind::AfAf => "af-af",
            SeqModelKind::AfScf => "af-scf",
            SeqModelKind::IafScf => "iaf-scf",
            SeqModelKind::Bernoulli => "bernoulli",
            SeqModelKind::Gru => "gru",
        }
    }

    /// Whether the model has parameters to train by gradient descent.
    pub fn trained(&self) -> bool {
        *self != SeqModelKind::Bernoulli
    }
}

/// Everything that determines a sequence model's tensors (with the seed): saved as `spec.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeqModelSpec {
    /// The model.
    pub kind: SeqModelKind,
    /// The modelled pitches.
    pub notes: NoteRange,
    /// Latent width per step (latent flows).
    pub latent: usize,
    /// Prior layers (latent flows).
    pub layers: usize,
    /// GRU and hidden-layer width.
    pub hidden: usize,
    /// Spline bins of the prior's within-step maps (0 = affine).
    pub spline_bins: usize,
    /// The splines' interval `[-B, B]`.
    pub spline_bound: f64,
}

impl SeqModelSpec {
    fn prior_config(&self, kind: PriorKind) -> SeqPriorConfig {
        SeqPriorConfig {
            kind,
            latent: self.latent,
            layers: self.layers,
            hidden: self.hidden,
            spline_bins: self.spline_bins,
            spline_bound: self.spline_bound,
        }
    }
}

#[derive(Debug)]
enum Inner {
    Flow(SeqVae),
    Bernoulli(IndependentBernoulli),
    Gru(GruBaseline),
}

/// A sequence model: spec, seed and the store of its tensors.
#[derive(Debug)]
pub struct SeqModel {
    spec: SeqModelSpec,
    seed: u64,
    store: ParamStore,
    inner: Inner,
}

/// Test-set figures in nats per step: `-sum log p / sum T` over the sequences.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeqEvaluation {
    /// Negative log-likelihood per step: the importance-weighted bound for latent flows (an
    /// upper bound on the true NLL that tightens with `K`), exact for the baselines.
    pub nll_per_step: f64,
    /// Negative ELBO per step (equal to the exact NLL for the baselines).
    pub neg_elbo_per_step: f64,
    /// Number of sequences.
    pub sequences: usize,
    /// Number of steps (the denominator).
    pub steps: usize,
    /// Importance samples per sequence (1 for the baselines).
    pub samples: usize,
}

/// The `spec.json` of a sequence model directory.
#[derive(Debug, Serialize, Deserialize)]
struct SpecFile {
    format: String,
    version: u32,
    spec: SeqModelSpec,
    seed: u64,
    weights_crc32: u32,
    #[serde(default)]
    training: serde_json::Value,
}

const FORMAT: &str = "normflow-seq";
const VERSION: u32 = 1;

impl SeqModel {
    /// Builds a model (random initialization from `seed`).
    pub fn new(spec: SeqModelSpec, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        let store = ParamStore::new(dtype, device, seed);
        let root = store.root();
        let inner = match spec.kind {
            SeqModelKind::Bernoulli => {
                Inner::Bernoulli(IndependentBernoulli::new(&root, spec.notes)?)
            }
            SeqModelKind::Gru => Inner::Gru(GruBaseline::new(&root, spec.notes, spec.hidden)?),
            kind => {
                let prior = kind.prior().ok_or_else(|| Error::config("kind", "?", "unknown"))?;
                Inner::Flow(SeqVae::new(&root, &spec.prior_config(prior), spec.notes)?)
            }
        };
        Ok(Self { spec, seed, store, inner })
    }

    /// The spec.
    pub fn spec(&self) -> &SeqModelSpec {
        &self.spec
    }

    /// The store of every tensor.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The latent flow model, if this is one.
    pub fn vae(&self) -> Option<&SeqVae> {
        match &self.inner {
            Inner::Flow(v) => Some(v),
            _ => None,
        }
    }

    /// Fits the closed-form parts: the Bernoulli baseline's frequencies; for the trained
    /// models, the bias of the Bernoulli read-out starts at the same log-odds.
    pub fn fit_closed_form(&self, train: &[NoteSequence]) -> Result<()> {
        let bias = match &self.inner {
            Inner::Bernoulli(m) => return m.fit(train),
            Inner::Flow(_) => "emission.layers.1.bias",
            Inner::Gru(_) => "readout.bias",
        };
        let var = self
            .store
            .parameters()
            .into_iter()
            .find(|(name, _)| name == bias)
            .map(|(_, v)| v)
            .ok_or_else(|| Error::Data(format!("the model has no tensor {bias}")))?;
        super::baselines::set_to_log_odds(&var, train, self.spec.notes)
    }

    /// A padded batch of `sequences` in this model's dtype and device.
    pub fn batch(&self, sequences: &[&NoteSequence]) -> Result<SeqBatch> {
        SeqBatch::new(sequences, self.spec.notes, self.store.dtype(), self.store.device())
    }

    /// The training loss on `batch` (nats per real step; minus the `beta`-weighted ELBO for
    /// latent flows, minus the log-likelihood for the baselines).
    pub fn loss(&self, batch: &SeqBatch, beta: f64, rng: &mut dyn RngCore) -> Result<Tensor> {
        let scale = -1.0 / batch.real_steps() as f64;
        match &self.inner {
            Inner::Flow(v) => v.loss(batch, beta, rng),
            Inner::Bernoulli(m) => Ok((m.log_prob_steps(batch)?.sum_all()? * scale)?),
            Inner::Gru(m) => Ok((m.log_prob_steps(batch)?.sum_all()? * scale)?),
        }
    }

    /// ELBO and importance-weighted bound per sequence of `batch` with `samples` samples drawn
    /// `chunk` at a time (both exact log-likelihoods for the baselines). Run without gradients.
    pub fn bounds(
        &self,
        batch: &SeqBatch,
        samples: usize,
        chunk: usize,
        rng: &mut dyn RngCore,
    ) -> Result<crate::latent::ImportanceBounds> {
        let exact = |steps: Tensor| -> Result<crate::latent::ImportanceBounds> {
            let v = steps.sum(1)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            Ok(crate::latent::ImportanceBounds { elbo: v.clone(), iw: v })
        };
        match &self.inner {
            Inner::Flow(v) => {
                importance_bounds(samples, chunk, |n| v.elbo_terms(batch, n, rng)?.log_weights())
            }
            Inner::Bernoulli(m) => exact(m.log_prob_steps(batch)?),
            Inner::Gru(m) => exact(m.log_prob_steps(batch)?),
        }
    }

    /// Evaluates `sequences` in batches of `batch_size`: NLL (importance-weighted with
    /// `samples` samples, `chunk` at a time) and negative ELBO per step.
    pub fn evaluate(
        &self,
        sequences: &[NoteSequence],
        samples: usize,
        chunk: usize,
        batch_size: usize,
        rng: &mut dyn RngCore,
    ) -> Result<SeqEvaluation> {
        if sequences.is_empty() {
            return Err(Error::Data("no sequences to evaluate".into()));
        }
        let batch_size = batch_size.max(1);
        let (mut iw, mut elbo) = (0.0, 0.0);
        crate::inference::without_gradients(|| -> Result<()> {
            for group in sequences.chunks(batch_size) {
                let refs: Vec<&NoteSequence> = group.iter().collect();
                let bounds = self.bounds(&self.batch(&refs)?, samples, chunk, rng)?;
                iw += bounds.iw.iter().sum::<f64>();
                elbo += bounds.elbo.iter().sum::<f64>();
            }
            Ok(())
        })?;
        let steps = super::data::total_steps(sequences);
        let samples = if self.vae().is_some() { samples } else { 1 };
        let evaluation = SeqEvaluation {
            nll_per_step: -iw / steps as f64,
            neg_elbo_per_step: -elbo / steps as f64,
            sequences: sequences.len(),
            steps,
            samples,
        };
        if !evaluation.nll_per_step.is_finite() || !evaluation.neg_elbo_per_step.is_finite() {
            return Err(Error::NonFinite(format!("sequence evaluation gave {evaluation:?}")));
        }
        Ok(evaluation)
    }

    /// Draws `count` sequences of `steps` steps (notes drawn from the model's Bernoulli
    /// probabilities; for latent flows the latents come from the flow prior).
    pub fn sample(
        &self,
        count: usize,
        steps: usize,
        rng: &mut dyn RngCore,
    ) -> Result<Vec<NoteSequence>> {
        if count == 0 || steps == 0 {
            return Err(Error::config("count/steps", format!("{count}/{steps}"), "both >= 1"));
        }
        let like = Tensor::zeros(1, self.store.dtype(), self.store.device())?;
        let rolls = crate::inference::without_gradients(|| -> Result<Tensor> {
            match &self.inner {
                Inner::Flow(v) => crate::latent::dynamic_binarize(
                    &v.sample_probabilities(count, steps, &like, rng)?,
                    rng,
                ),
                Inner::Bernoulli(m) => {
                    crate::latent::dynamic_binarize(&m.sample_probabilities(count, steps)?, rng)
                }
                Inner::Gru(m) => m.sample(count, steps, &like, rng),
            }
        })?;
        let values = rolls.to_dtype(DType::F32)?.to_vec3::<f32>()?;
        Ok(values
            .iter()
            .map(|seq| {
                seq.iter()
                    .map(|step| {
                        step.iter()
                            .enumerate()
                            .filter(|(_, &v)| v > 0.5)
                            .map(|(i, _)| self.spec.notes.pitch(i))
                            .collect()
                    })
                    .collect()
            })
            .collect())
    }

    /// Writes `dir/weights.safetensors` then `dir/spec.json` (atomically, each), with a
    /// free-form training record.
    pub fn save(&self, dir: &Path, training: serde_json::Value) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let bytes = safetensors_bytes(&self.store.tensors())?;
        write_atomic(&dir.join("weights.safetensors"), &bytes)?;
        let file = SpecFile {
            format: FORMAT.into(),
            version: VERSION,
            spec: self.spec.clone(),
            seed: self.seed,
            weights_crc32: checksum(&bytes),
            training,
        };
        write_atomic(&dir.join("spec.json"), serde_json::to_string_pretty(&file)?.as_bytes())
    }

    /// Loads a directory written by [`SeqModel::save`], checking format, version, checksum and
    /// every tensor; returns the model and its training record.
    pub fn load(dir: &Path, device: &Device) -> Result<(Self, serde_json::Value)> {
        let spec_path = dir.join("spec.json");
        let text = std::fs::read_to_string(&spec_path).map_err(|e| Error::io(&spec_path, e))?;
        let file: SpecFile = serde_json::from_str(&text).map_err(|e| {
            Error::model_file(&spec_path, format!("not a sequence model spec: {e}"))
        })?;
        if file.format != FORMAT {
            return Err(Error::model_file(
                &spec_path,
                format!("format {:?}, expected {FORMAT:?}", file.format),
            ));
        }
        if file.version > VERSION {
            return Err(Error::model_file(
                &spec_path,
                format!("version {} is newer than this normflow reads ({VERSION})", file.version),
            ));
        }
        let weights = dir.join("weights.safetensors");
        let bytes = std::fs::read(&weights).map_err(|e| Error::io(&weights, e))?;
        if checksum(&bytes) != file.weights_crc32 {
            return Err(Error::model_file(&weights, "checksum does not match spec.json"));
        }
        let model = Self::new(file.spec, file.seed, DType::F32, device)?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| Error::model_file(&weights, format!("not a safetensors file: {e}")))?;
        model.store.load_tensors(&tensors, &weights)?;
        Ok((model, file.training))
    }
}
