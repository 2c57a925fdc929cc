//! `normflow sample`: draw samples from a model.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use normflow::candle::DType;
use normflow::data::{write_csv, write_npy};
use normflow::distributions::Distribution;
use normflow::model::Model;

use super::train::training_record;
use super::EVAL_BATCH;

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Model directory written by `normflow train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Number of samples.
    #[arg(short = 'n', long = "n", default_value_t = 1000)]
    pub n: usize,
    #[command(flatten)]
    pub ode: super::flow_args::OdeArgs,
    /// Seed of the base samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file: `.csv` or `.npy`.
    #[arg(long)]
    pub out: PathBuf,
    /// Print one JSON object (rows, seconds spent sampling, rows per second).
    #[arg(long)]
    pub json: bool,
}

/// `n` samples `(n, D)` in original units, row-major, drawn in batches.
pub fn draw(model: &Model, n: usize, seed: u64) -> Result<Vec<f64>> {
    if model.context_features() > 0 {
        bail!("this model is conditional: sampling needs context rows, which `sample` does not take yet");
    }
    let mut rng = normflow::random::rng_from_seed(seed);
    let mut out = Vec::with_capacity(n * model.features());
    let mut left = n;
    while left > 0 {
        let k = left.min(EVAL_BATCH);
        let x = normflow::inference::without_gradients(|| model.sample(k, None, &mut rng))?
            .to_dtype(DType::F64)?;
        out.extend(x.flatten_all()?.to_vec1::<f64>()?);
        left -= k;
    }
    Ok(out)
}

/// Runs `normflow sample`.
pub fn run(args: SampleArgs) -> Result<()> {
    if args.n == 0 {
        bail!("-n must be at least 1");
    }
    let model = super::flow_args::load_model_with(&args.model, &args.ode)?;
    let start = std::time::Instant::now();
    let values = draw(&model, args.n, args.seed)?;
    let seconds = start.elapsed().as_secs_f64();
    let d = model.features();
    write_samples(&args.out, &model, &values, d)?;
    if args.json {
        let out = serde_json::json!({
            "rows": args.n,
            "seconds": seconds,
            "rows_per_second": args.n as f64 / seconds.max(1e-12),
            "out": args.out.display().to_string(),
        });
        println!("{out}");
    } else {
        eprintln!("wrote {} samples to {}", args.n, args.out.display());
    }
    Ok(())
}

fn write_samples(path: &Path, model: &Model, values: &[f64], d: usize) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => write_npy(path, values, values.len() / d, d)?,
        Some("csv") => {
            let names = data_columns(model);
            write_csv(path, &names, values, d)?
        }
        _ => bail!("--out {}: use a .csv or .npy file name", path.display()),
    }
    Ok(())
}

/// The names of the model's data columns (from training), or x0, x1, ...
pub fn data_columns(model: &Model) -> Vec<String> {
    let d = model.features();
    if let Some(r) = training_record(model) {
        let names: Vec<String> = r
            .settings
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !r.settings.context_indices.contains(i))
            .map(|(_, n)| n.clone())
            .collect();
        if names.len() == d {
            return names;
        }
    }
    (0..d).map(|i| format!("x{i}")).collect()
}
