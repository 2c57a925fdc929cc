//! `normflow log-prob`: one log-density per row.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use normflow::data::write_csv;

use super::ModelData;

#[derive(Debug, Args)]
pub struct LogProbArgs {
    #[command(flatten)]
    pub input: ModelData,
    /// Output CSV, one column `log_prob`, one row per input row.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `normflow log-prob`.
pub fn run(args: LogProbArgs) -> Result<()> {
    let (lp, _) = args.input.log_probs()?;
    write_csv(&args.out, &["log_prob".to_string()], &lp, 1)?;
    eprintln!("wrote {} log-densities to {}", lp.len(), args.out.display());
    Ok(())
}
