//! `normflow`: fit, evaluate, sample and plot normalizing flows from the command line.

// Library and CLI code never unwrap what a user controls; tests may (clippy.toml).
#![warn(clippy::unwrap_used)]

mod commands;
mod data_source;
mod plot;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Normalizing flows: fit a density to your data, evaluate it, sample from it.
#[derive(Debug, Parser)]
#[command(name = "normflow", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fit a flow to a data file (CSV, NPY, IDX) or a built-in toy density.
    Train(commands::train::TrainArgs),
    /// Mean log-likelihood of a data set under a trained model.
    Eval(commands::eval::EvalArgs),
    /// One log-density per input row, written as CSV.
    LogProb(commands::log_prob::LogProbArgs),
    /// Draw samples from a trained model.
    Sample(commands::sample::SampleArgs),
    /// Plot a trained model: density and samples (2-D) or pair plots.
    Plot(commands::plot::PlotArgs),
    /// Write samples of a built-in 2-D toy density.
    Toy(commands::toy::ToyArgs),
    /// Describe a trained model: spec, parameters, preprocessing, training summary.
    Inspect(commands::inspect::InspectArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => commands::train::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::LogProb(args) => commands::log_prob::run(args),
        Command::Sample(args) => commands::sample::run(args),
        Command::Plot(args) => commands::plot::run(args),
        Command::Toy(args) => commands::toy::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
