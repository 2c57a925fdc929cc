//! One module per subcommand.

pub mod eval;
pub mod flow_args;
pub mod inspect;
pub mod log_prob;
pub mod maxent;
pub mod plot;
pub mod sample;
pub mod seq;
pub mod toy;
pub mod train;
pub mod vae;
pub mod vi;

use std::path::Path;

use anyhow::{Context, Result};
use normflow::candle::Device;
use normflow::data::Table;
use normflow::distributions::Distribution;
use normflow::model::Model;

/// Seed of the dequantization noise with which image models score data.
const DEQUANTIZATION_SEED: u64 = 0x5eed;

/// Rows evaluated per batch when no gradient is needed.
pub const EVAL_BATCH: usize = 4096;

/// Values (rows times features) evaluated per batch by [`log_probs`]: candle keeps every
/// intermediate tensor of a forward pass that touches parameters alive until the pass ends, so
/// wide rows need smaller batches (a Flow++ model on 4096 MNIST rows took 23 GB).
const EVAL_VALUES: usize = 1 << 18;

/// Refuses a count flag set to 0, naming the first such flag.
pub fn ensure_counts(counts: &[(&str, usize)]) -> Result<()> {
    if let Some((flag, _)) = counts.iter().find(|(_, value)| *value == 0) {
        anyhow::bail!("{flag} 0: must be at least 1");
    }
    Ok(())
}

/// Refuses a learning rate that is not a finite number > 0.
pub fn ensure_lr(lr: f64) -> Result<()> {
    if !(lr.is_finite() && lr > 0.0) {
        anyhow::bail!("--lr {lr}: the learning rate must be a finite number > 0");
    }
    Ok(())
}

/// Refuses a gradient-clipping norm that is not a finite number >= 0 (0 turns clipping off).
pub fn ensure_clip(clip: f64) -> Result<()> {
    if !(clip.is_finite() && clip >= 0.0) {
        anyhow::bail!("--clip {clip}: must be a finite number >= 0 (0 = no clipping)");
    }
    Ok(())
}

/// Rows per evaluation batch for rows of `features` values: [`EVAL_BATCH`], fewer for wide
/// rows (334 for MNIST's 784 pixels).
pub fn eval_batch(features: usize) -> usize {
    EVAL_BATCH.min(EVAL_VALUES / features.max(1)).max(1)
}

/// Loads a model directory on the CPU, with the path in the error.
pub fn load_model(dir: &Path) -> Result<Model> {
    Model::load(dir, &Device::Cpu)
        .with_context(|| format!("cannot load the model in {}", dir.display()))
}

/// Per-row log-densities of `data` (rows in original units) under `model`, in batches.
pub fn log_probs(model: &Model, data: &Table, context: Option<&Table>) -> Result<Vec<f64>> {
    model.set_training(false);
    let mut x = data.to_tensor(model.dtype(), model.device())?;
    if model.spec().flow.uniform_dequantization() {
        // Pixels are integers; the model is a density on dequantized values: score each image
        // at one fixed uniform draw (a stochastic lower bound on its log-probability). Models
        // with a variational dequantizer draw their own noise (a bound of the same kind).
        let mut rng = normflow::random::rng_from_seed(DEQUANTIZATION_SEED);
        let u = normflow::random::uniform(x.dims(), x.dtype(), x.device(), &mut rng)?;
        x = (x + u)?;
    }
    let c = context.map(|c| c.to_tensor(model.dtype(), model.device())).transpose()?;
    let values = normflow::inference::without_gradients(|| {
        normflow::train::log_probs(model, &x, c.as_ref(), eval_batch(model.features()))
    })?;
    Ok(values)
}

/// A model and a data set to evaluate under it: the arguments `eval` and `log-prob` share.
#[derive(Debug, clap::Args)]
pub struct ModelData {
    /// Model directory written by `normflow train`.
    #[arg(long)]
    pub model: std::path::PathBuf,
    /// Data file (same columns as training) or `toy:NAME`.
    #[arg(long)]
    pub data: String,
    /// Rows to draw for a `toy:` data set.
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// Seed for `toy:` data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Skip rows with NaN or infinite values (they get no log-density) instead of failing.
    #[arg(long)]
    pub drop_nonfinite: bool,
    #[command(flatten)]
    pub ode: flow_args::OdeArgs,
}

impl ModelData {
    /// Loads the model and the data and returns the data's per-row log-densities, with the
    /// seconds spent computing them (loading excluded).
    pub fn log_probs(&self) -> Result<(Vec<f64>, f64)> {
        let model = flow_args::load_model_with(&self.model, &self.ode)?;
        let table = crate::data_source::load(&self.data, self.n, self.seed, self.drop_nonfinite)?;
        check_width(&model, &table, &self.data)?;
        let (data, context) = train::split_like_training(&model, &table)?;
        let start = std::time::Instant::now();
        let values = log_probs(&model, &data, context.as_ref())?;
        Ok((values, start.elapsed().as_secs_f64()))
    }
}

/// Checks that `data` has as many columns as the model has features (+ context).
pub fn check_width(model: &Model, data: &Table, what: &str) -> Result<()> {
    let want = model.features() + model.context_features();
    if data.cols != want {
        anyhow::bail!(
            "{what} has {} columns but the model was trained on {want}{}",
            data.cols,
            if model.context_features() > 0 {
                format!(" ({} data + {} context)", model.features(), model.context_features())
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Mean and standard error of `values`.
pub fn mean_and_stderr(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}
