//! One module per subcommand.

pub mod eval;
pub mod inspect;
pub mod log_prob;
pub mod plot;
pub mod sample;
pub mod toy;
pub mod train;

use std::path::Path;

use anyhow::{Context, Result};
use normflow::candle::{DType, Device, Tensor};
use normflow::data::Table;
use normflow::distributions::Distribution;
use normflow::model::Model;

/// Rows evaluated per batch when no gradient is needed.
pub const EVAL_BATCH: usize = 4096;

/// Loads a model directory on the CPU, with the path in the error.
pub fn load_model(dir: &Path) -> Result<Model> {
    Model::load(dir, &Device::Cpu)
        .with_context(|| format!("cannot load the model in {}", dir.display()))
}

/// Per-row log-densities of `data` (rows in original units) under `model`, in batches.
pub fn log_probs(model: &Model, data: &Table, context: Option<&Table>) -> Result<Vec<f64>> {
    model.set_training(false);
    let mut out = Vec::with_capacity(data.rows);
    let mut start = 0;
    while start < data.rows {
        let end = (start + EVAL_BATCH).min(data.rows);
        let x = rows_tensor(data, start, end, model)?;
        let c = context.map(|c| rows_tensor(c, start, end, model)).transpose()?;
        let lp = model.log_prob(&x, c.as_ref())?.to_dtype(DType::F64)?;
        out.extend(lp.to_vec1::<f64>()?);
        start = end;
    }
    Ok(out)
}

/// Rows `start..end` of a table as a tensor in the model's dtype and device.
pub fn rows_tensor(t: &Table, start: usize, end: usize, model: &Model) -> Result<Tensor> {
    let values = t.values[start * t.cols..end * t.cols].to_vec();
    Ok(Tensor::from_vec(values, (end - start, t.cols), &Device::Cpu)?
        .to_dtype(model.dtype())?
        .to_device(model.device())?)
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
