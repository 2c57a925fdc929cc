//! `normflow log-prob`: one log-density per row.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use normflow::data::write_csv;

use super::train::split_like_training;
use super::{check_width, load_model, log_probs};
use crate::data_source;

#[derive(Debug, Args)]
pub struct LogProbArgs {
    /// Model directory written by `normflow train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Data file (same columns as training) or `toy:NAME`.
    #[arg(long)]
    pub data: String,
    /// Output CSV, one column `log_prob`, one row per input row.
    #[arg(long)]
    pub out: PathBuf,
    /// Rows to draw for a `toy:` data set.
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// Seed for `toy:` data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Skip rows with NaN or infinite values (they get no output line) instead of failing.
    #[arg(long)]
    pub drop_nonfinite: bool,
}

/// Runs `normflow log-prob`.
pub fn run(args: LogProbArgs) -> Result<()> {
    let model = load_model(&args.model)?;
    let table = data_source::load(&args.data, args.n, args.seed, args.drop_nonfinite)?;
    check_width(&model, &table, &args.data)?;
    let (data, context) = split_like_training(&model, &table)?;
    let lp = log_probs(&model, &data, context.as_ref())?;
    write_csv(&args.out, &["log_prob".to_string()], &lp, 1)?;
    eprintln!("wrote {} log-densities to {}", lp.len(), args.out.display());
    Ok(())
}
