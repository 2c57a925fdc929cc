//! `normflow vi`: fit a flow to a built-in unnormalized density by variational inference.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use normflow::candle::{DType, Device};
use normflow::model::io::write_atomic;
use normflow::model::Model;
use normflow::train::{Control, LrSchedule};
use normflow::vi::{estimate, fit, BuiltinTarget, Target, ViConfig, ViObserver, ViStep};
use serde::{Deserialize, Serialize};

use super::flow_args::FlowArgs;
use crate::progress::ViProgressBar;

/// Learning-rate schedules over the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum ViSchedule {
    /// Constant learning rate.
    Constant,
    /// Cosine decay to 1% of the initial rate.
    Cosine,
}

#[derive(Debug, Args)]
pub struct ViArgs {
    /// Target density: u1, u2, u3, u4 (Rezende & Mohamed's energies; U2-U4 on the box
    /// [-4, 4]^2), banana (Rosenbrock), funnel:D (Neal's funnel, D >= 2) or mixture.
    #[arg(long)]
    pub target: String,
    #[command(flatten)]
    pub flow: FlowArgs,
    /// Output model directory (created; an existing model there is replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Optimization steps (named `--iterations` because `--steps` is the ODE solver's, for
    /// ffjord).
    #[arg(long = "iterations", id = "iterations", default_value_t = 2000)]
    pub steps: usize,
    /// Samples of the flow per step.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    pub lr: f64,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value = "constant")]
    pub schedule: ViSchedule,
    /// Steps over which the inverse temperature rises linearly from --initial-beta to 1
    /// (0 = no annealing) [default: a quarter of --iterations].
    #[arg(long)]
    pub anneal_steps: Option<usize>,
    /// Inverse temperature at the first step, in (0, 1].
    #[arg(long, default_value_t = 0.01, allow_negative_numbers = true)]
    pub initial_beta: f64,
    /// Sticking-the-landing gradient (drops the score term; zero variance at the optimum).
    #[arg(long)]
    pub stl: bool,
    /// Clip the global gradient norm to this value (0 = no clipping).
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    pub clip: f64,
    /// Seed of the initialization and of the samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Samples K for the final ELBO, importance-weighted log Z and effective sample size.
    #[arg(long, default_value_t = 20_000)]
    pub eval_samples: usize,
    /// Print one JSON object with the results instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Do not write the ELBO and density plots.
    #[arg(long)]
    pub no_plot: bool,
}

/// What `spec.json` records about a variational fit (its `training` section): the target and
/// settings (so that `plot` can draw the target) and the results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViRecord {
    /// The target and the settings.
    pub vi: ViSettings,
    /// Results (the same object `--json` prints).
    pub summary: Option<serde_json::Value>,
}

/// The target and configuration of a fit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViSettings {
    /// The built-in target.
    pub target: BuiltinTarget,
    /// The loop's configuration.
    pub config: ViConfig,
}

/// The target a model was fitted to, if `normflow vi` wrote it.
pub fn fitted_target(model: &Model) -> Option<BuiltinTarget> {
    let record = model.spec().training.as_ref()?;
    serde_json::from_value::<ViRecord>(record.clone()).ok().map(|r| r.vi.target)
}

/// The square that plots of `target` cover: its support's box, or where its mass is; `None`
/// to take the samples' extent.
pub fn plot_box(target: &BuiltinTarget) -> Option<(f64, f64)> {
    match target {
        BuiltinTarget::U1
        | BuiltinTarget::U2
        | BuiltinTarget::U3
        | BuiltinTarget::U4
        | BuiltinTarget::Mixture => Some((-normflow::vi::ENERGY_BOX, normflow::vi::ENERGY_BOX)),
        _ => None,
    }
}

fn check_args(args: &ViArgs) -> Result<()> {
    let counts = [
        ("--layers", args.flow.layers),
        ("--hidden", args.flow.hidden),
        ("--blocks", args.flow.blocks),
        ("--iterations", args.steps),
        ("--batch", args.batch),
        ("--eval-samples", args.eval_samples),
    ];
    super::ensure_counts(&counts)?;
    super::ensure_lr(args.lr)?;
    super::ensure_clip(args.clip)?;
    if let Some(a) = args.anneal_steps.filter(|&a| a > 0 && a >= args.steps) {
        bail!("--anneal-steps {a}: must be below --iterations {} (or 0: no annealing)", args.steps);
    }
    if !(args.initial_beta > 0.0 && args.initial_beta <= 1.0) {
        bail!("--initial-beta {}: must be in (0, 1]", args.initial_beta);
    }
    if args.flow.base.starts_with("mixture") {
        bail!(
            "--base {}: sampling a mixture picks a component at random, which passes no gradient \
             to the mixture weights; variational inference needs reparameterized samples: use \
             --base normal or diag",
            args.flow.base
        );
    }
    if args.flow.batch_norm {
        bail!(
            "--batch-norm: batch statistics are for density estimation; variational inference \
             samples through the flow: drop --batch-norm"
        );
    }
    Ok(())
}

fn vi_config(args: &ViArgs) -> ViConfig {
    ViConfig {
        steps: args.steps,
        batch_size: args.batch,
        lr: args.lr,
        schedule: match args.schedule {
            ViSchedule::Constant => LrSchedule::Constant,
            ViSchedule::Cosine => LrSchedule::Cosine { min_lr: args.lr * 0.01 },
        },
        anneal_steps: args.anneal_steps.unwrap_or(args.steps / 4),
        initial_beta: args.initial_beta,
        stl: args.stl,
        clip_grad_norm: (args.clip > 0.0).then_some(args.clip),
        seed: args.seed,
        ..ViConfig::default()
    }
}

struct Progress(ViProgressBar);

impl ViObserver for Progress {
    fn on_step(&mut self, stats: &ViStep) -> Control {
        self.0.step(stats);
        Control::Continue
    }
}

/// Runs `normflow vi`.
pub fn run(args: ViArgs) -> Result<()> {
    check_args(&args)?;
    let target = BuiltinTarget::parse(&args.target).map_err(|_| {
        anyhow::anyhow!("--target {}: expected {}", args.target, BuiltinTarget::NAMES)
    })?;
    let config = vi_config(&args);
    config.validate()?;
    let spec = args.flow.spec(target.dim(), 0)?;
    let mut model = Model::new(spec, None, None, args.seed, DType::F32, &Device::Cpu)?
        .with_support(target.support())?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.out.display()))?;

    let report = {
        let mut progress = Progress(ViProgressBar::new(config.steps, args.json));
        let report = fit(&model, model.store(), &target, &config, &mut progress);
        progress.0.finish();
        report?
    };
    let mut rng = normflow::random::rng_from_seed(args.seed.wrapping_add(1));
    let e = estimate(&model, &target, args.eval_samples, super::EVAL_BATCH, &mut rng)?;
    let true_log_z = target.log_normalizer();
    let summary = serde_json::json!({
        "target": target.name(),
        "flow": model.spec().flow.family(),
        "layers": args.flow.layers,
        "steps": report.steps_run,
        "elbo": e.elbo,
        "elbo_stderr": e.elbo_stderr,
        "log_z_estimate": e.log_z,
        "ess": e.ess,
        "ess_fraction": e.ess_fraction(),
        "eval_samples": e.samples,
        "true_log_z": true_log_z,
        "stl": config.stl,
        "anneal_steps": config.anneal_steps,
        "train_seconds": report.seconds,
        "skipped_steps": report.skipped_steps,
        "rollbacks": report.rollbacks,
        "parameters": model.store().num_parameters(),
        "model_dir": args.out.display().to_string(),
    });
    model.set_training_summary(serde_json::to_value(ViRecord {
        vi: ViSettings { target, config: config.clone() },
        summary: Some(summary.clone()),
    })?);
    model.save(&args.out, None)?;
    write_log(&args.out.join("vi_log.csv"), &report.history)?;
    if !args.no_plot {
        let elbo: Vec<f64> = report.history.iter().map(|s| s.elbo).collect();
        crate::plot::elbo_curve(&args.out.join("elbo.png"), &elbo, 50, true_log_z)?;
        if target.dim() == 2 {
            super::plot::density_plot_with_target(
                &model,
                &target,
                &args.out.join("density.png"),
                0,
            )?;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

fn write_log(path: &Path, history: &[ViStep]) -> Result<()> {
    let mut out = String::from("step,elbo,beta,lr,skipped\n");
    for s in history {
        let elbo = if s.elbo.is_finite() { s.elbo.to_string() } else { String::new() };
        out.push_str(&format!("{},{elbo},{},{},{}\n", s.step, s.beta, s.lr, s.skipped));
    }
    Ok(write_atomic(path, out.as_bytes())?)
}

fn print_summary(s: &serde_json::Value) {
    let num = |k: &str| s[k].as_f64().map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
    println!(
        "fitted {} to {} in {} steps ({}s)",
        s["flow"].as_str().unwrap_or("?"),
        s["target"].as_str().unwrap_or("?"),
        s["steps"],
        num("train_seconds"),
    );
    println!("  ELBO:                  {} ± {}", num("elbo"), num("elbo_stderr"));
    println!("  log Z (IW, K = {}): {}", s["eval_samples"], num("log_z_estimate"));
    if s["true_log_z"].is_number() {
        println!("  true log Z:            {}", num("true_log_z"));
    }
    println!("  effective sample size: {} ({} of K)", num("ess"), num("ess_fraction"));
    if s["skipped_steps"].as_u64().unwrap_or(0) > 0 {
        println!(
            "  skipped non-finite steps: {} (rollbacks: {})",
            s["skipped_steps"], s["rollbacks"]
        );
    }
    println!("  model written to {}", s["model_dir"].as_str().unwrap_or("?"));
}
