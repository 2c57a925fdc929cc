//! `normflow seq`: latent normalizing flows for discrete sequences (Ziegler & Rush 2019) and
//! their baselines on polyphonic music; `normflow seq-sample`: new sequences from a trained one.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use normflow::candle::{DType, Device};
use normflow::model::io::write_atomic;
use normflow::seq::{
    fit_sequences, load_sequences, NoteRange, NoteSequence, SeqEpoch, SeqModel, SeqModelKind,
    SeqModelSpec, SeqTrainConfig,
};

/// The model `--prior` selects: a flow prior or a baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PriorArg {
    /// Flow prior autoregressive over time and within each step.
    AfAf,
    /// Flow prior autoregressive over time, split coupling within each step.
    AfScf,
    /// Flow prior inverse-autoregressive over time (parallel sampling), split coupling within.
    IafScf,
    /// Baseline: independent notes with their training frequencies (no latent).
    Bernoulli,
    /// Baseline: a GRU over steps, notes independent given the history (no latent).
    Gru,
}

impl PriorArg {
    fn kind(self) -> SeqModelKind {
        match self {
            PriorArg::AfAf => SeqModelKind::AfAf,
            PriorArg::AfScf => SeqModelKind::AfScf,
            PriorArg::IafScf => SeqModelKind::IafScf,
            PriorArg::Bernoulli => SeqModelKind::Bernoulli,
            PriorArg::Gru => SeqModelKind::Gru,
        }
    }
}

#[derive(Debug, Args)]
pub struct SeqArgs {
    /// Sequence file: JSON with "train", "valid", "test" lists of sequences, each a list of steps
    /// (lists of MIDI pitches) or an object with "steps" (the classic JSB / Nottingham /
    /// Piano-midi / MuseData pickles, converted to JSON; see docs/SEQUENCES.md).
    #[arg(long)]
    pub data: PathBuf,
    /// The prior (af-af, af-scf, iaf-scf) or a baseline (bernoulli, gru).
    #[arg(long, value_enum)]
    pub prior: PriorArg,
    /// Latent width per step.
    #[arg(long, default_value_t = 16)]
    pub latent: usize,
    /// Layers of the flow prior.
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// GRU state and hidden-layer width (encoder, prior conditioners, emission, GRU baseline).
    #[arg(long, default_value_t = 64)]
    pub hidden: usize,
    /// Rational-quadratic spline bins of the prior's within-step maps (0 = affine).
    #[arg(long, default_value_t = 0)]
    pub spline_bins: usize,
    /// The splines' interval [-B, B] (identity outside).
    #[arg(long, default_value_t = 4.0)]
    pub spline_bound: f64,
    /// Passes over the training sequences.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Sequences per minibatch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Clip the global gradient norm to this value (0 = no clipping).
    #[arg(long, default_value_t = 10.0)]
    pub clip: f64,
    /// KL warm-up over this many optimizer steps (0 = none): without it the posterior
    /// collapses onto the prior early and the model stays at the independent-notes baseline.
    #[arg(long, default_value_t = 1000)]
    pub warmup_steps: usize,
    /// Stop after the epoch in which this many minutes of training have passed.
    #[arg(long)]
    pub time_limit_min: Option<f64>,
    /// Importance samples K per test sequence for the NLL bound.
    #[arg(long, default_value_t = 100)]
    pub iw_samples: usize,
    /// Importance samples drawn at once (memory grows with it).
    #[arg(long, default_value_t = 10)]
    pub iw_chunk: usize,
    /// Seed of the initialization, the shuffles and the samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output model directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Print one JSON object with the results instead of the summary.
    #[arg(long)]
    pub json: bool,
}

fn check_args(args: &SeqArgs) -> Result<()> {
    let counts = [
        ("--hidden", args.hidden),
        ("--layers", args.layers),
        ("--batch-size", args.batch_size),
        ("--iw-samples", args.iw_samples),
        ("--iw-chunk", args.iw_chunk),
    ];
    super::ensure_counts(&counts)?;
    super::ensure_lr(args.lr)?;
    super::ensure_clip(args.clip)?;
    if let Some(m) = args.time_limit_min.filter(|m| !(m.is_finite() && *m > 0.0)) {
        bail!("--time-limit-min {m}: must be a finite number > 0");
    }
    Ok(())
}

/// Runs `normflow seq`.
pub fn run(args: SeqArgs) -> Result<()> {
    check_args(&args)?;
    let data = load_sequences(&args.data)?;
    let notes = NoteRange::for_data(&data);
    let spec = SeqModelSpec {
        kind: args.prior.kind(),
        notes,
        latent: args.latent,
        layers: args.layers,
        hidden: args.hidden,
        spline_bins: args.spline_bins,
        spline_bound: args.spline_bound,
    };
    let model = SeqModel::new(spec, args.seed, DType::F32, &Device::Cpu)?;
    let config = SeqTrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        clip: (args.clip > 0.0).then_some(args.clip),
        warmup_steps: args.warmup_steps,
        seed: args.seed,
        time_limit_s: args.time_limit_min.map(|m| m * 60.0),
        valid_samples: 1,
    };
    let quiet = args.json;
    let start = Instant::now();
    let history = fit_sequences(&model, &data.train, &data.valid, &config, |e: &SeqEpoch| {
        if !quiet {
            eprintln!(
                "epoch {:>4}  train loss {:.4}  valid -ELBO {:.4} nats/step  ({:.0}s)",
                e.epoch, e.train_loss, e.valid_nll, e.seconds
            );
        }
    })?;
    let train_seconds = start.elapsed().as_secs_f64();
    let best = history.iter().min_by(|a, b| a.valid_nll.total_cmp(&b.valid_nll));
    let start = Instant::now();
    let mut rng = normflow::random::rng_from_seed(args.seed.wrapping_add(1));
    let test = model.evaluate(&data.test, args.iw_samples, args.iw_chunk, 16, &mut rng)?;
    let eval_seconds = start.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "model": model.spec().kind,
        "test_nll_per_step": test.nll_per_step,
        "test_elbo_per_step": -test.neg_elbo_per_step,
        // The best epoch's validation figure (one posterior sample: a negative ELBO).
        "valid_neg_elbo_per_step": best.map(|e| e.valid_nll),
        "test_steps": test.steps,
        "test_sequences": test.sequences,
        "iw_samples": test.samples,
        "latent": args.latent,
        "layers": args.layers,
        "hidden": args.hidden,
        "spline_bins": args.spline_bins,
        "notes": notes,
        "parameters": model.store().num_parameters(),
        "epochs_run": history.len(),
        "best_epoch": best.map(|e| e.epoch),
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "seed": args.seed,
        "model_dir": args.out.display().to_string(),
    });
    model.save(&args.out, serde_json::json!({ "config": config, "summary": summary }))?;
    let mut log = String::from("epoch,train_loss,valid_neg_elbo_per_step,skipped,seconds\n");
    for e in &history {
        log.push_str(&format!(
            "{},{},{},{},{}\n",
            e.epoch, e.train_loss, e.valid_nll, e.skipped, e.seconds
        ));
    }
    write_atomic(&args.out.join("train_log.csv"), log.as_bytes())?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{} on {}: test NLL {:.4} nats/step (IW, K = {}), test ELBO {:.4} nats/step, \
             {} test steps; model written to {}",
            model.spec().kind.name(),
            args.data.display(),
            test.nll_per_step,
            test.samples,
            -test.neg_elbo_per_step,
            test.steps,
            args.out.display()
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct SeqSampleArgs {
    /// Model directory written by `normflow seq`.
    #[arg(long)]
    pub model: PathBuf,
    /// Number of sequences.
    #[arg(long, default_value_t = 8)]
    pub count: usize,
    /// Steps per sequence.
    #[arg(long, default_value_t = 64)]
    pub steps: usize,
    /// Seed of the draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output JSON file: {"model": ..., "sequences": [...]}, the sequences in the classic
    /// layout (lists of steps, each a list of MIDI pitches).
    #[arg(long)]
    pub out: PathBuf,
    /// Also draw the sequences as a piano roll (PNG).
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// Print one JSON object (with the sampling time) instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// Runs `normflow seq-sample`.
pub fn run_sample(args: SeqSampleArgs) -> Result<()> {
    if args.count == 0 || args.steps == 0 {
        bail!("--count and --steps must be at least 1");
    }
    let (model, _) = SeqModel::load(&args.model, &Device::Cpu)
        .with_context(|| format!("cannot load the sequence model in {}", args.model.display()))?;
    let mut rng = normflow::random::rng_from_seed(args.seed);
    let start = Instant::now();
    let sequences = model.sample(args.count, args.steps, &mut rng)?;
    let seconds = start.elapsed().as_secs_f64();
    let file = serde_json::json!({ "model": model.spec().kind, "sequences": sequences });
    write_atomic(&args.out, serde_json::to_string(&file)?.as_bytes())?;
    if let Some(png) = &args.png {
        crate::plot::piano_roll(png, &sequences, model.spec().notes)?;
    }
    let summary = serde_json::json!({
        "model": model.spec().kind,
        "count": args.count,
        "steps": args.steps,
        "sample_seconds": seconds,
        "mean_notes_per_step": mean_polyphony(&sequences),
        "out": args.out.display().to_string(),
    });
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{} sequences of {} steps from {} in {seconds:.3}s, written to {}",
            args.count,
            args.steps,
            model.spec().kind.name(),
            args.out.display()
        );
    }
    Ok(())
}

/// Mean number of sounding notes per step (about 3.9 in the chorales).
fn mean_polyphony(sequences: &[NoteSequence]) -> f64 {
    let steps: usize = sequences.iter().map(Vec::len).sum();
    let notes: usize = sequences.iter().flatten().map(Vec::len).sum();
    notes as f64 / steps.max(1) as f64
}
