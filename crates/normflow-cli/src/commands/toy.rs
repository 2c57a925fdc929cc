//! `normflow toy`: write samples of a built-in toy density.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use normflow::data::toy::Toy;
use normflow::data::write_csv;

#[derive(Debug, Args)]
pub struct ToyArgs {
    /// swissroll, circles, rings, moons, 8gaussians, pinwheel, 2spirals or checkerboard.
    pub name: String,
    /// Number of rows.
    #[arg(short = 'n', long = "n", default_value_t = 10_000)]
    pub n: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output CSV (header `x,y`).
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `normflow toy`.
pub fn run(args: ToyArgs) -> Result<()> {
    let toy: Toy = args.name.parse()?;
    if args.n == 0 {
        bail!("-n must be at least 1");
    }
    let values = toy.sample(args.n, &mut normflow::random::rng_from_seed(args.seed));
    write_csv(&args.out, &["x".to_string(), "y".to_string()], &values, 2)?;
    eprintln!("wrote {} rows of {toy} to {}", args.n, args.out.display());
    Ok(())
}
