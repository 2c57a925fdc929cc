//! `normflow inspect`: describe a model directory.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::load_model;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `normflow inspect`.
pub fn run(args: InspectArgs) -> Result<()> {
    let model = load_model(&args.model)?;
    let spec = model.spec();
    let info = serde_json::json!({
        "format_version": spec.format_version,
        "normflow_version": spec.normflow_version,
        "flow": spec.flow,
        "seed": spec.seed,
        "dtype": spec.dtype,
        "parameters": model.store().num_parameters(),
        "tensors": model.store().all().len(),
        "preprocessing": spec.preprocessing,
        "context_preprocessing": spec.context_preprocessing,
        "training": spec.training,
    });
    if args.json {
        println!("{info}");
        return Ok(());
    }
    println!("model: {}", args.model.display());
    println!("  format version {} (normflow {})", spec.format_version, spec.normflow_version);
    println!(
        "  flow: {} with {} parameters, {}, seed {}",
        spec.flow.family(),
        model.store().num_parameters(),
        spec.dtype,
        spec.seed
    );
    println!("  features: {} data, {} context", model.features(), model.context_features());
    println!("  spec: {}", serde_json::to_string(&spec.flow)?);
    if let Some(p) = &spec.preprocessing {
        println!("  standardization (shift, scale) per feature:");
        for (j, (s, c)) in p.shift.iter().zip(&p.scale).enumerate() {
            println!("    {j}: {s:.6}, {c:.6}");
        }
    }
    if let Some(summary) = spec.training.as_ref().and_then(|t| t.get("summary")) {
        println!("  training summary: {}", serde_json::to_string_pretty(summary)?);
    }
    Ok(())
}
