//! `normflow`: fit, evaluate, sample and plot normalizing flows from the command line.

// Library and CLI code never unwrap what a user controls; tests may (clippy.toml).
#![warn(clippy::unwrap_used)]

mod commands;
mod data_source;
mod plot;
mod progress;

use std::process::ExitCode;

/// candle allocates a fresh buffer for every op; glibc returns large ones to the kernel and
/// faults them back in on the next op (a third of `eval`'s time in the profile). mimalloc keeps
/// and reuses them (see [`keep_freed_memory`]).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay`, its index in mimalloc's `mi_option_t` (mimalloc.h, the same in v2
/// and v3; libmimalloc-sys names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to return freed pages to the kernel. By default it purges pages free
/// for a while, and the kernel zero-fills them again on the next touch: with every op of a
/// training step allocating its result, that was 2,300 page faults and ~19% of the CPU time of
/// a short MAF training run (`perf stat`, 284 faults with purging off). The cost: the process
/// keeps its peak memory until it exits, which for one training or sampling run is what it
/// needs anyway.
fn keep_freed_memory() {
    // SAFETY: sets one integer option; called first thing in `main`, before other threads.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1)
    };
}

use clap::{Parser, Subcommand};

/// Normalizing flows: fit a density to your data, evaluate it, sample from it.
#[derive(Debug, Parser)]
#[command(name = "normflow", version, about, long_about = None)]
struct Cli {
    /// Worker threads for tensor operations [default: every core]. At small batches one thread
    /// can be faster than several (see docs/PERFORMANCE.md).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fit a flow to a data file (CSV, NPY, IDX) or a built-in toy density.
    // Boxed: its flags (architecture, solver, training) make it the largest variant by far.
    Train(Box<commands::train::TrainArgs>),
    /// Mean log-likelihood of a data set under a trained model.
    Eval(commands::eval::EvalArgs),
    /// One log-density per input row, written as CSV.
    LogProb(commands::log_prob::LogProbArgs),
    /// Draw samples from a trained model.
    Sample(commands::sample::SampleArgs),
    /// Plot a trained model: density and samples (2-D) or pair plots.
    Plot(commands::plot::PlotArgs),
    /// Fit the maximum-entropy distribution under moment constraints (a JSON file) as a flow.
    Maxent(commands::maxent::MaxEntArgs),
    /// Write samples of a built-in 2-D toy density.
    Toy(commands::toy::ToyArgs),
    /// Fit a flow to a built-in unnormalized density by variational inference (reverse KL).
    Vi(commands::vi::ViArgs),
    /// Latent normalizing flows (AF/AF, AF/SCF, IAF/SCF) and baselines on note sequences.
    Seq(Box<commands::seq::SeqArgs>),
    /// Draw note sequences from a model trained by `normflow seq` (JSON and a piano-roll PNG).
    SeqSample(commands::seq::SeqSampleArgs),
    /// Train a variational autoencoder with a flow posterior on 8-bit images; report the test
    /// ELBO and importance-weighted log-likelihood.
    Vae(Box<commands::vae::VaeArgs>),
    /// Sample and reconstruction grids (PNG) of a trained VAE.
    VaeSample(commands::vae::VaeSampleArgs),
    /// Describe a trained model: spec, parameters, preprocessing, training summary.
    Inspect(commands::inspect::InspectArgs),
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        if n == 0 {
            eprintln!("error: --threads must be at least 1");
            return ExitCode::FAILURE;
        }
        // candle and gemm size their thread pools from this variable when they first run,
        // which is after this point: nothing has touched a tensor yet.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    } else if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Without this variable candle recounts the physical cores (reading sysfs) each time
        // an op asks for its thread count: 32% more CPU time in a MAF training run.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", cores.to_string());
    }
    // candle runs its element-wise ops on a separate spin-waiting pool. On a machine whose
    // cores are busy with other work, the caller spins while a descheduled worker finishes:
    // with the default pool, training ran 2x (Glow on MNIST) to 8x (MAF on power_plant) slower
    // under load than with the pool off (docs/PERFORMANCE.md). normflow's heavy ops (gemm,
    // dense layers, convolutions, splines) parallelize through rayon and keep every core.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let result = match cli.command {
        Command::Train(args) => commands::train::run(*args),
        Command::Eval(args) => commands::eval::run(args),
        Command::LogProb(args) => commands::log_prob::run(args),
        Command::Sample(args) => commands::sample::run(args),
        Command::Plot(args) => commands::plot::run(args),
        Command::Maxent(args) => commands::maxent::run(args),
        Command::Toy(args) => commands::toy::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Vi(args) => commands::vi::run(args),
        Command::Seq(args) => commands::seq::run(*args),
        Command::SeqSample(args) => commands::seq::run_sample(args),
        Command::Vae(args) => commands::vae::run(*args),
        Command::VaeSample(args) => commands::vae::run_sample(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
