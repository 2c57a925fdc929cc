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
    /// Output file: `.csv` or `.npy`; for image models also `.png` (a grid of the samples).
    #[arg(long)]
    pub out: PathBuf,
    /// Temperature T: base samples are drawn with standard deviation T (T < 1 trades
    /// diversity for typicality, as in Glow's samples).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub temperature: f64,
    /// Print one JSON object (rows, seconds spent sampling, rows per second).
    #[arg(long)]
    pub json: bool,
}

/// `n` samples `(n, D)` in original units, row-major, drawn in batches.
pub fn draw(model: &Model, n: usize, seed: u64) -> Result<Vec<f64>> {
    draw_at_temperature(model, n, seed, 1.0)
}

/// `n` samples whose base draws are scaled by `temperature` before the inverse transform.
pub fn draw_at_temperature(
    model: &Model,
    n: usize,
    seed: u64,
    temperature: f64,
) -> Result<Vec<f64>> {
    if model.context_features() > 0 {
        bail!("this model is conditional: sampling needs context rows, which `sample` does not take yet");
    }
    let mut rng = normflow::random::rng_from_seed(seed);
    let mut out = Vec::with_capacity(n * model.features());
    let mut left = n;
    while left > 0 {
        let k = left.min(EVAL_BATCH);
        let x = normflow::inference::without_gradients(|| {
            if temperature == 1.0 {
                return model.sample(k, None, &mut rng);
            }
            let z = (model.flow().base().sample(k, None, &mut rng)? * temperature)?;
            model.flow().transform().inverse(&z, None)
        })?
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
    if !(args.temperature.is_finite() && args.temperature > 0.0) {
        bail!("--temperature {}: must be a finite number > 0", args.temperature);
    }
    let model = super::flow_args::load_model_with(&args.model, &args.ode)?;
    let start = std::time::Instant::now();
    let values = draw_at_temperature(&model, args.n, args.seed, args.temperature)?;
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
        Some("png") => match model.spec().flow.image() {
            Some(image) => crate::plot::image_grid(
                path,
                values,
                [image.channels, image.height, image.width],
                image.pixel_levels,
                2,
            )?,
            None => bail!(
                "--out {}: PNG grids are for image models (glow, realnvp-image, flowpp); use .csv or .npy",
                path.display()
            ),
        },
        Some("csv") => {
            let names = data_columns(model);
            write_csv(path, &names, values, d)?
        }
        _ => bail!(
            "--out {}: use a .csv or .npy file name (or .png for an image model)",
            path.display()
        ),
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
