//! `normflow eval`: mean log-likelihood of a data set.

use anyhow::Result;
use clap::Args;

use super::{mean_and_stderr, ModelData};

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub input: ModelData,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `normflow eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    let (lp, seconds) = args.input.log_probs()?;
    if let Some(i) = lp.iter().position(|v| !v.is_finite()) {
        anyhow::bail!(
            "row {} has log-density {} under the model (outside its support?)",
            i + 1,
            lp[i]
        );
    }
    let (mean, stderr) = mean_and_stderr(&lp);
    let spec = normflow::model::read_spec(&args.input.model)?;
    let image_dims = spec.flow.image().map(|s| s.features());
    let bits = image_dims.map(|d| normflow::flows::bits_per_dim(mean, d));
    if args.json {
        let out = serde_json::json!({
            "bits_per_dim": bits,
            "bits_per_dim_stderr": image_dims.map(|d| normflow::flows::bits_per_dim(-stderr, d)),
            "mean_log_prob": mean,
            "stderr": stderr,
            "rows": lp.len(),
            "seconds": seconds,
            "rows_per_second": lp.len() as f64 / seconds.max(1e-12),
        });
        println!("{out}");
    } else {
        println!("mean log-likelihood: {mean:.6} ± {stderr:.6} nats/row over {} rows", lp.len());
        if let Some(b) = bits {
            let noise = if spec.flow.uniform_dequantization() { "uniform" } else { "variational" };
            println!("bits per dimension:  {b:.4} (an upper bound: one fixed {noise} dequantization draw)");
        }
    }
    Ok(())
}
