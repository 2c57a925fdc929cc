//! `normflow eval`: mean log-likelihood of a data set.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::train::split_like_training;
use super::{check_width, load_model, log_probs, mean_and_stderr};
use crate::data_source;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model directory written by `normflow train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Data file (same columns as training) or `toy:NAME`.
    #[arg(long)]
    pub data: String,
    /// Rows to draw for a `toy:` data set.
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// Seed for `toy:` data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Skip rows with NaN or infinite values instead of failing.
    #[arg(long)]
    pub drop_nonfinite: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `normflow eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    let model = load_model(&args.model)?;
    let table = data_source::load(&args.data, args.n, args.seed, args.drop_nonfinite)?;
    check_width(&model, &table, &args.data)?;
    let (data, context) = split_like_training(&model, &table)?;
    let lp = log_probs(&model, &data, context.as_ref())?;
    if let Some(i) = lp.iter().position(|v| !v.is_finite()) {
        anyhow::bail!(
            "row {} has log-density {} under the model (outside its support?)",
            i + 1,
            lp[i]
        );
    }
    let (mean, stderr) = mean_and_stderr(&lp);
    if args.json {
        let out = serde_json::json!({ "mean_log_prob": mean, "stderr": stderr, "rows": lp.len() });
        println!("{out}");
    } else {
        println!("mean log-likelihood: {mean:.6} ± {stderr:.6} nats/row over {} rows", lp.len());
    }
    Ok(())
}
