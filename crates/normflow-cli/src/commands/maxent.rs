//! `normflow maxent`: the maximum-entropy distribution under moment constraints, as a flow.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use normflow::bijections::Support;
use normflow::candle::{DType, Device};
use normflow::maxent::{estimate, fit, Constraints, IterationStats, MaxEntConfig, MaxEntObserver};
use normflow::model::io::write_atomic;
use normflow::model::Model;
use normflow::train::{Control, LrSchedule};

use super::flow_args::FlowArgs;

#[derive(Debug, Args)]
pub struct MaxEntArgs {
    /// Constraint file (JSON): {"dim": D, "constraints": [{"statistic": "moment", "powers":
    /// [...], "target": m}, ...]}; statistics: moment, log-moment, log-one-minus,
    /// log-remainder (see docs/MAXENT.md).
    #[arg(long)]
    pub constraints: PathBuf,
    /// Where the samples live: real, positive, interval:A,B or simplex.
    #[arg(long, default_value = "real")]
    pub support: String,
    #[command(flatten)]
    pub flow: FlowArgs,
    /// Output model directory (created; an existing model there is replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Outer iterations: updates of the multipliers and the penalty weight.
    #[arg(long, default_value_t = 10)]
    pub outer: usize,
    /// Adam steps per outer iteration.
    #[arg(long, default_value_t = 200)]
    pub inner: usize,
    /// Samples per step (even).
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Adam learning rate (cosine decay to 5% of it over the outer iterations).
    #[arg(long, default_value_t = 2e-3, allow_negative_numbers = true)]
    pub lr: f64,
    /// Initial penalty weight of the augmented Lagrangian.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub penalty: f64,
    /// Ceiling of the penalty weight.
    #[arg(long, default_value_t = 20.0, allow_negative_numbers = true)]
    pub penalty_max: f64,
    /// Samples of the final entropy and constraint estimate.
    #[arg(long, default_value_t = 100_000)]
    pub samples: usize,
    /// Seed of the initialization and of every sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object with the results instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Do not write the density plot (2-D models).
    #[arg(long)]
    pub no_plot: bool,
}

/// The progress bar over all steps, with the latest entropy and violation, and a model save
/// after every outer iteration (so a stopped run leaves the last iteration's model).
struct Progress<'a> {
    bar: ProgressBar,
    dir: &'a Path,
    log: String,
}

impl MaxEntObserver for Progress<'_> {
    fn on_step(&mut self, step: usize, total: usize, _batch_entropy: f64) {
        self.bar.set_length(total as u64);
        self.bar.set_position(step as u64);
    }

    fn on_iteration(&mut self, s: &IterationStats, model: &Model) -> normflow::Result<Control> {
        let e = &s.estimate;
        self.bar.set_message(format!(
            "iteration {} | entropy {:.4} | max violation {:.2e} | penalty {}",
            s.iteration, e.entropy, e.max_constraint_violation, s.penalty
        ));
        self.log.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            s.iteration,
            e.entropy,
            e.max_constraint_violation,
            s.penalty,
            s.lr,
            s.skipped_steps,
            s.seconds
        ));
        model.save(self.dir, None)?;
        write_atomic(&self.dir.join("maxent_log.csv"), self.log.as_bytes())?;
        Ok(Control::Continue)
    }
}

fn check_args(args: &MaxEntArgs) -> Result<()> {
    super::ensure_counts(&[
        ("--layers", args.flow.layers),
        ("--hidden", args.flow.hidden),
        ("--blocks", args.flow.blocks),
        ("--outer", args.outer),
        ("--inner", args.inner),
    ])?;
    if args.batch < 2 || args.batch % 2 != 0 {
        bail!("--batch {}: must be an even number >= 2 (the penalty pairs two halves)", args.batch);
    }
    if args.samples < 2 {
        bail!("--samples {}: must be at least 2", args.samples);
    }
    super::ensure_lr(args.lr)?;
    if !(args.penalty.is_finite() && args.penalty > 0.0) {
        bail!("--penalty {}: must be a finite number > 0", args.penalty);
    }
    if !(args.penalty_max.is_finite() && args.penalty_max >= args.penalty) {
        bail!(
            "--penalty-max {}: must be a finite number >= --penalty {}",
            args.penalty_max,
            args.penalty
        );
    }
    Ok(())
}

/// Runs `normflow maxent`.
pub fn run(args: MaxEntArgs) -> Result<()> {
    check_args(&args)?;
    let support = Support::parse(&args.support).map_err(|e| anyhow::anyhow!("--support: {e}"))?;
    let constraints = Constraints::load(&args.constraints)
        .with_context(|| format!("constraints file {}", args.constraints.display()))?;
    constraints
        .check_support(support)
        .with_context(|| format!("constraints file {}", args.constraints.display()))?;
    let spec = args.flow.spec(constraints.dim(), 0)?;
    let config = MaxEntConfig {
        outer_iterations: args.outer,
        inner_steps: args.inner,
        batch_size: args.batch,
        lr: args.lr,
        schedule: LrSchedule::Cosine { min_lr: args.lr * 0.05 },
        penalty: args.penalty,
        penalty_max: args.penalty_max,
        seed: args.seed,
        ..MaxEntConfig::default()
    };
    config.validate()?;
    let mut model =
        Model::new(spec, None, None, args.seed, DType::F32, &Device::Cpu)?.with_support(support)?;
    let record = |summary: Option<&serde_json::Value>| {
        serde_json::json!({
            "command": "maxent",
            "constraints": constraints.to_json(),
            "support": args.support,
            "config": config,
            "summary": summary,
        })
    };
    model.set_training_summary(record(None));
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;

    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if args.json {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {percent:>3}% ETA {eta} | {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut observer = Progress {
        bar,
        dir: &args.out,
        log: "iteration,entropy,max_constraint_violation,penalty,lr,skipped_steps,seconds\n".into(),
    };
    let report = fit(&model, &constraints, &config, &mut observer);
    observer.bar.finish_and_clear();
    let report = report?;

    let mut rng = normflow::random::rng_from_seed(args.seed.wrapping_add(1));
    let est = estimate(&model, &constraints, args.samples, 4096, &mut rng)?;
    let summary = serde_json::json!({
        "flow": model.spec().flow.family(),
        "support": args.support,
        "entropy": est.entropy,
        "entropy_stderr": est.entropy_stderr,
        "max_constraint_violation": est.max_constraint_violation,
        "statistics": constraints.constraints().iter().map(|c| c.statistic.describe()).collect::<Vec<_>>(),
        "targets": constraints.targets(),
        "moments": est.moments,
        "moment_stderr": est.moment_stderr,
        "multipliers": report.multipliers,
        "penalty": report.penalty,
        "samples": est.samples,
        "outer_iterations": report.history.len(),
        "skipped_steps": report.skipped_steps,
        "rollbacks": report.rollbacks,
        "seconds": report.seconds,
        "parameters": model.store().num_parameters(),
        "model_dir": args.out.display().to_string(),
    });
    model.set_training_summary(record(Some(&summary)));
    model.save(&args.out, None)?;
    if !args.no_plot && model.features() == 2 {
        super::plot::density_plot(&model, None, &args.out.join("density.png"), args.seed)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

fn print_summary(s: &serde_json::Value) {
    let num =
        |v: &serde_json::Value| v.as_f64().map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
    println!(
        "max-entropy {} on {}: entropy {} ± {} nats",
        s["flow"].as_str().unwrap_or("?"),
        s["support"].as_str().unwrap_or("?"),
        num(&s["entropy"]),
        num(&s["entropy_stderr"])
    );
    println!("  max constraint violation: {}", num(&s["max_constraint_violation"]));
    let empty = Vec::new();
    let stats = s["statistics"].as_array().unwrap_or(&empty);
    for (k, name) in stats.iter().enumerate() {
        println!(
            "  {:<28} target {:>10}  fitted {:>10}",
            name.as_str().unwrap_or("?"),
            num(&s["targets"][k]),
            num(&s["moments"][k])
        );
    }
    println!("  model written to {}", s["model_dir"].as_str().unwrap_or("?"));
}
