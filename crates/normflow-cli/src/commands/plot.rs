//! `normflow plot`: density and samples (2-D) or pair plots (more dimensions).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use normflow::candle::{DType, Device};
use normflow::data::Table;
use normflow::model::Model;
use normflow::vi::{log_density_on_grid, BuiltinTarget};

use super::log_probs;
use super::sample::{data_columns, draw};
use super::train::{split_like_training, training_record};
use crate::data_source;

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Model directory written by `normflow train` or `normflow vi` (a 2-D model fitted by `vi`
    /// is drawn beside its target's density).
    #[arg(long)]
    pub model: PathBuf,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
    /// Data to draw beside the samples [default: the model's training data, when it can still
    /// be read from where it was].
    #[arg(long)]
    pub data: Option<String>,
    /// Dimensions for pair plots (comma separated, at most 6) [default: the first 6].
    #[arg(long)]
    pub dims: Option<String>,
    /// Number of samples to draw.
    #[arg(short = 'n', long = "n", default_value_t = 2000)]
    pub n: usize,
    #[command(flatten)]
    pub ode: super::flow_args::OdeArgs,
    /// Seed of the samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

const GRID: usize = 200;

/// Heatmap of a 2-D model's density beside its samples (and `data`, if given).
pub fn density_plot(model: &Model, data: Option<&Table>, out: &Path, seed: u64) -> Result<()> {
    density_panels(model, data, None, out, seed)
}

/// Heatmaps of a 2-D model's density and of the `target` it was fitted to by variational
/// inference, over the target's plotting box, beside the model's samples.
pub fn density_plot_with_target(
    model: &Model,
    target: &BuiltinTarget,
    out: &Path,
    seed: u64,
) -> Result<()> {
    density_panels(model, None, Some(target), out, seed)
}

fn density_panels(
    model: &Model,
    data: Option<&Table>,
    target: Option<&BuiltinTarget>,
    out: &Path,
    seed: u64,
) -> Result<()> {
    let samples = draw(model, 2000, seed)?;
    let reference: Vec<f64> = match data {
        Some(d) => d.values.iter().take(2 * 5000).copied().collect(),
        None => samples.clone(),
    };
    let (lo, hi) = match target.and_then(super::vi::plot_box) {
        Some(b) => b,
        None => crate::plot::square_bounds(&reference),
    };
    let h = (hi - lo) / GRID as f64;
    let mut grid = Vec::with_capacity(GRID * GRID * 2);
    for i in 0..GRID {
        for j in 0..GRID {
            grid.push(lo + (i as f64 + 0.5) * h);
            grid.push(lo + (j as f64 + 0.5) * h);
        }
    }
    let grid = Table {
        columns: vec!["x".into(), "y".into()],
        rows: GRID * GRID,
        cols: 2,
        values: grid,
        source: "grid".into(),
        dropped_rows: 0,
    };
    let density: Vec<f64> = log_probs(model, &grid, None)?.iter().map(|v| v.exp()).collect();
    let target_density = match target {
        // The same cell centers as `grid`, scaled to the peak (the plot shows shape, not Z).
        Some(t) => {
            let lp = log_density_on_grid(t, lo, hi, GRID, DType::F64, &Device::Cpu)?;
            let max = lp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            Some(lp.iter().map(|v| (v - max).exp()).collect::<Vec<f64>>())
        }
        None => None,
    };
    let names = data_columns(model);
    crate::plot::density_and_samples(
        out,
        &density,
        target_density.as_deref(),
        GRID,
        (lo, hi),
        &samples,
        data.map(|d| &d.values[..d.values.len().min(2 * 5000)]),
        (&names[0], &names[1]),
    )
}

/// Runs `normflow plot`.
pub fn run(args: PlotArgs) -> Result<()> {
    let model = super::flow_args::load_model_with(&args.model, &args.ode)?;
    if model.context_features() > 0 {
        bail!("plotting conditional models is not supported yet");
    }
    let data = match &args.data {
        Some(spec) => {
            let table = data_source::load(spec, 5000, 1, true)?;
            super::check_width(&model, &table, spec)?;
            Some(split_like_training(&model, &table)?.0)
        }
        // The training data is a convenience here, not a requirement: a moved or deleted file
        // only means the plot shows the samples alone.
        None => training_record(&model).and_then(|r| {
            let s = r.settings;
            data_source::load(&s.data, s.toy_rows.min(5000), s.config.seed, true)
                .ok()
                .filter(|t| t.cols == model.features() + model.context_features())
                .and_then(|t| split_like_training(&model, &t).ok())
                .map(|(t, _)| t)
        }),
    };
    let d = model.features();
    let target = super::vi::fitted_target(&model);
    if let (2, Some(target)) = (d, target) {
        density_panels(&model, data.as_ref(), Some(&target), &args.out, args.seed)?;
    } else if d == 2 {
        density_plot(&model, data.as_ref(), &args.out, args.seed)?;
    } else {
        let dims: Vec<usize> = match &args.dims {
            Some(list) => list
                .split(',')
                .map(|s| s.trim().parse::<usize>().ok().filter(|&i| i < d))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    anyhow::anyhow!("--dims {list}: expected comma-separated indices below {d}")
                })?,
            None => (0..d.min(6)).collect(),
        };
        if dims.is_empty() || dims.len() > 6 {
            bail!("--dims: choose between 1 and 6 dimensions");
        }
        let samples = draw(&model, args.n, args.seed)?;
        let names = data_columns(&model);
        crate::plot::pair_plot(
            &args.out,
            &samples,
            data.as_ref().map(|t| &t.values[..]),
            d,
            &dims,
            &names,
        )?;
    }
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
