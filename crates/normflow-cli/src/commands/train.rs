//! `normflow train`: fit a flow to a data file or a toy density.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use normflow::candle::{DType, Device};
use normflow::data::Table;
use normflow::flows::bits_per_dim;
use normflow::model::io::write_atomic;
use normflow::model::Model;
use normflow::preprocess::Standardization;
use normflow::train::{
    fit_from, Adam, Control, EpochStats, LrSchedule, TrainConfig, TrainObserver, TrainProgress,
    TrainState,
};
use normflow::ParamStore;
use serde::{Deserialize, Serialize};

use super::flow_args::{base_spec, FlowArgs};
use super::{log_probs, mean_and_stderr};
use crate::data_source;
use crate::progress::TrainProgressBar;

/// Learning-rate schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Schedule {
    /// Constant learning rate.
    Constant,
    /// Cosine decay to 1% of the initial rate.
    Cosine,
    /// Halve the rate after 5 epochs without validation improvement.
    Plateau,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Data: a CSV, NPY or IDX file, or `toy:NAME` (swissroll, circles, rings, moons,
    /// 8gaussians, pinwheel, 2spirals, checkerboard).
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<String>,
    #[command(flatten)]
    pub flow: FlowArgs,
    /// Output model directory (created; an existing model there is replaced).
    #[arg(long, required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the stopped run in this model directory exactly (same data and settings);
    /// `--epochs` may raise the total number of epochs.
    #[arg(long, conflicts_with_all = ["data", "out", "flow", "layers", "hidden", "blocks", "activation", "batch_norm", "base", "image_shape", "levels", "bins", "bound", "batch", "lr", "schedule", "clip", "seed", "val_frac", "patience", "test", "test_frac", "context_columns", "n", "drop_nonfinite", "time", "kinetic_weight", "jacobian_weight", "noise", "adjoint", "solver", "atol", "rtol", "steps", "max_steps", "trace", "components", "dequant_steps", "dequant_hidden"])]
    pub resume: Option<PathBuf>,
    /// Passes over the training rows [default: 100].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Rows per mini-batch.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    pub lr: f64,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value = "constant")]
    pub schedule: Schedule,
    /// Clip the global gradient norm to this value (0 = no clipping). Default: none for made,
    /// maf, iaf, nice, realnvp, nsf and nsf-ar (clipping at 5 cost them 0.3-0.5 nats of test
    /// log-likelihood on UCI protein), 5 for the other families.
    #[arg(long, allow_negative_numbers = true)]
    pub clip: Option<f64>,
    /// Seed of everything random: initialization, splits, shuffles, toy data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction of the training rows held out for validation and early stopping
    /// (0 = train on every row for exactly --epochs).
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub val_frac: f64,
    /// Stop after this many epochs without validation improvement [default: 20 with validation].
    #[arg(long)]
    pub patience: Option<usize>,
    /// A separate test file, never used in training; its log-likelihood is reported.
    #[arg(long, conflicts_with = "test_frac")]
    pub test: Option<String>,
    /// Fraction of the rows held out as a test set, never used in training.
    #[arg(long, allow_negative_numbers = true)]
    pub test_frac: Option<f64>,
    /// Columns (names or 0-based indices, comma separated) to condition on instead of model.
    #[arg(long)]
    pub context_columns: Option<String>,
    /// Rows to draw for a `toy:` data set.
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// Skip rows with NaN or infinite values instead of failing.
    #[arg(long)]
    pub drop_nonfinite: bool,
    /// Print one JSON object with the results instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Do not write the loss and density plots.
    #[arg(long)]
    pub no_plot: bool,
}

impl TrainArgs {
    /// `--clip`, or the family's default (0 = no clipping): see [`Family::default_clip`].
    fn clip(&self) -> f64 {
        self.clip.unwrap_or_else(|| self.flow.flow.default_clip())
    }
}

/// What `--resume` needs to rebuild the data exactly; stored in `spec.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSettings {
    /// `--data` as given.
    pub data: String,
    /// `--test`.
    pub test: Option<String>,
    /// `--test-frac`.
    pub test_frac: Option<f64>,
    /// Context column indices of the data file.
    pub context_indices: Vec<usize>,
    /// Names of every column of the data file.
    pub columns: Vec<String>,
    /// `--n`.
    pub toy_rows: usize,
    /// `--drop-nonfinite`.
    pub drop_nonfinite: bool,
    /// The training configuration.
    pub config: TrainConfig,
}

/// The training section of `spec.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// How to rebuild the run.
    pub settings: RunSettings,
    /// Results so far (absent until the first epoch ends).
    pub summary: Option<serde_json::Value>,
}

/// Reads the training record of a model, if it was trained by this command.
pub fn training_record(model: &Model) -> Option<TrainingRecord> {
    model.spec().training.as_ref().and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// Splits `table` into data and context columns the way the model was trained.
pub fn split_like_training(model: &Model, table: &Table) -> Result<(Table, Option<Table>)> {
    let context = training_record(model).map(|r| r.settings.context_indices).unwrap_or_default();
    if context.is_empty() {
        return Ok((table.clone(), None));
    }
    let data_idx: Vec<usize> = (0..table.cols).filter(|i| !context.contains(i)).collect();
    Ok((table.select_columns(&data_idx)?, Some(table.select_columns(&context)?)))
}

/// The checkpoint's tensors alternate between two files and `checkpoint.json`, written last,
/// names the current one: a run killed while writing either file still leaves the previous
/// epoch's checkpoint whole (two files cannot be replaced together atomically).
const CHECKPOINT_TENSORS: [&str; 2] = ["checkpoint-a.safetensors", "checkpoint-b.safetensors"];
const CHECKPOINT_PROGRESS: &str = "checkpoint.json";

/// The data of a run: train rows (with context) and optional test rows.
struct RunData {
    train: Table,
    train_context: Option<Table>,
    test: Option<(Table, Option<Table>)>,
}

/// Loads `--data` (and `--test`) as `settings` describe, and splits them.
fn load_data(settings: &RunSettings, seed: u64) -> Result<RunData> {
    let full = data_source::load(&settings.data, settings.toy_rows, seed, settings.drop_nonfinite)?;
    split_data(settings, full, seed)
}

/// Splits the loaded `--data` into test rows (`--test-frac`, or loads `--test`), training rows
/// and context columns.
fn split_data(settings: &RunSettings, full: Table, seed: u64) -> Result<RunData> {
    let split = |t: &Table| -> Result<(Table, Option<Table>)> {
        if settings.context_indices.is_empty() {
            return Ok((t.clone(), None));
        }
        let data_idx: Vec<usize> =
            (0..t.cols).filter(|i| !settings.context_indices.contains(i)).collect();
        Ok((t.select_columns(&data_idx)?, Some(t.select_columns(&settings.context_indices)?)))
    };
    let (train_table, test_table) = match (settings.test_frac, &settings.test) {
        (Some(frac), _) => {
            if !(frac > 0.0 && frac < 1.0) {
                bail!("--test-frac must be in (0, 1), got {frac}");
            }
            let n_test = ((full.rows as f64) * frac).round() as usize;
            if n_test == 0 || n_test >= full.rows {
                bail!(
                    "--test-frac {frac} of {} rows leaves no test or no training rows",
                    full.rows
                );
            }
            let order = shuffled(full.rows, seed ^ 0x7e57);
            let (test_idx, train_idx) = order.split_at(n_test);
            (take_rows(&full, train_idx), Some(take_rows(&full, test_idx)))
        }
        (None, Some(path)) => {
            let test = data_source::load(
                path,
                settings.toy_rows,
                seed.wrapping_add(1),
                settings.drop_nonfinite,
            )?;
            if test.cols != full.cols {
                bail!("--test {path} has {} columns but --data has {}", test.cols, full.cols);
            }
            (full, Some(test))
        }
        (None, None) => (full, None),
    };
    let (train, train_context) = split(&train_table)?;
    let test = test_table.as_ref().map(split).transpose()?;
    Ok(RunData { train, train_context, test })
}

fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    use rand::seq::SliceRandom;
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut normflow::random::rng_from_seed(seed));
    idx
}

fn take_rows(t: &Table, rows: &[usize]) -> Table {
    let mut values = Vec::with_capacity(rows.len() * t.cols);
    for &r in rows {
        values.extend_from_slice(t.row(r));
    }
    Table { rows: rows.len(), values, dropped_rows: 0, ..t.clone() }
}

/// Checks the flags of a new run before any data is read; the message names the flag.
fn check_args(args: &TrainArgs) -> Result<()> {
    let counts = [
        ("--layers", args.flow.layers),
        ("--hidden", args.flow.hidden),
        // Image flows' conditioners may have no residual block (Glow's plain network).
        ("--blocks", if args.flow.is_image() { 1 } else { args.flow.blocks }),
        ("--batch", args.batch),
        ("--epochs", args.epochs.unwrap_or(1)),
        ("--patience", args.patience.unwrap_or(1)),
    ];
    super::ensure_counts(&counts)?;
    super::ensure_lr(args.lr)?;
    super::ensure_clip(args.clip())?;
    if !(args.val_frac.is_finite() && (0.0..1.0).contains(&args.val_frac)) {
        bail!("--val-frac {}: must be a fraction in [0, 1) (0 = no validation)", args.val_frac);
    }
    if let (Some(p), true) = (args.patience, args.val_frac == 0.0) {
        bail!(
            "--patience {p}: early stopping needs a validation set; set --val-frac above 0 or \
             drop --patience"
        );
    }
    if let Some(f) = args.test_frac {
        if !(f > 0.0 && f < 1.0) {
            bail!("--test-frac {f}: must be a fraction in (0, 1)");
        }
    }
    base_spec(&args.flow.base, args.context_columns.is_some())?;
    Ok(())
}

/// Checks that `rows` training rows fill the validation split and one batch.
fn check_rows(config: &TrainConfig, rows: usize) -> Result<()> {
    let n_val = config.val_rows(rows);
    if config.val_frac > 0.0 && n_val == 0 {
        bail!(
            "--val-frac {} of {rows} rows leaves no validation row: give more rows, a larger \
             --val-frac, or --val-frac 0 for no validation",
            config.val_frac
        );
    }
    let n_train = rows - n_val.min(rows);
    if n_train < config.batch_size {
        bail!(
            "{n_train} training rows ({rows} rows, {n_val} held out by --val-frac {}) are fewer \
             than --batch {}: lower --batch or --val-frac, or give more rows",
            config.val_frac,
            config.batch_size
        );
    }
    Ok(())
}

fn train_config(args: &TrainArgs) -> TrainConfig {
    let epochs = args.epochs.unwrap_or(100);
    let patience = match args.patience {
        Some(p) => Some(p),
        None if args.val_frac > 0.0 => Some(20),
        None => None,
    };
    TrainConfig {
        epochs,
        batch_size: args.batch,
        lr: args.lr,
        schedule: match args.schedule {
            Schedule::Constant => LrSchedule::Constant,
            Schedule::Cosine => LrSchedule::Cosine { min_lr: args.lr * 0.01 },
            Schedule::Plateau => {
                LrSchedule::ReduceOnPlateau { factor: 0.5, patience: 5, min_lr: args.lr * 1e-3 }
            }
        },
        val_frac: args.val_frac,
        patience,
        clip_grad_norm: Some(args.clip()).filter(|&c| c > 0.0),
        seed: args.seed,
        uniform_dequantization: args.flow.uniform_dequantization(),
        ..TrainConfig::default()
    }
}

/// Writes the best model and a resumable checkpoint while training, and drives the progress bar.
struct Checkpointer<'a> {
    model: &'a Model,
    dir: &'a Path,
    bar: TrainProgressBar,
    epochs: usize,
    rows: usize,
}

impl TrainObserver for Checkpointer<'_> {
    fn on_batch(&mut self, done: usize, total: usize) {
        self.bar.batch(done, total);
    }

    fn on_epoch(&mut self, stats: &EpochStats) -> Control {
        self.bar.epoch(stats, self.epochs);
        Control::Continue
    }

    fn on_new_best(
        &mut self,
        _epoch: usize,
        _store: &ParamStore,
        adam: &Adam,
    ) -> normflow::Result<()> {
        // `store` is the model's own store: saving the model writes exactly the new best.
        self.model.save(self.dir, Some(&adam.state_tensors()))
    }

    fn on_checkpoint(&mut self, state: &TrainState) -> normflow::Result<()> {
        let bytes = normflow::model::io::safetensors_bytes(&state.tensors())?;
        let file = CHECKPOINT_TENSORS[state.progress.epochs_done % 2];
        write_atomic(&self.dir.join(file), &bytes)?;
        let progress = serde_json::json!({
            "progress": state.progress,
            "tensors": file,
            "crc32": normflow::model::io::checksum(&bytes),
            "rows": self.rows,
        });
        write_atomic(&self.dir.join(CHECKPOINT_PROGRESS), &serde_json::to_vec_pretty(&progress)?)
    }
}

fn read_checkpoint(dir: &Path, model: &Model, config: &TrainConfig) -> Result<TrainState> {
    let json_path = dir.join(CHECKPOINT_PROGRESS);
    let text = std::fs::read(&json_path).with_context(|| {
        format!("cannot resume: {} is missing (no epoch finished?)", json_path.display())
    })?;
    let value: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not valid JSON", json_path.display()))?;
    let progress: TrainProgress = serde_json::from_value(value["progress"].clone())
        .with_context(|| format!("{} has no valid progress record", json_path.display()))?;
    let file = value["tensors"].as_str().unwrap_or_default();
    if !CHECKPOINT_TENSORS.contains(&file) {
        bail!("{} names no checkpoint tensor file", json_path.display());
    }
    let tensors_path = dir.join(file);
    let bytes = std::fs::read(&tensors_path)
        .with_context(|| format!("cannot read {}", tensors_path.display()))?;
    if value["crc32"].as_u64() != Some(u64::from(normflow::model::io::checksum(&bytes))) {
        bail!(
            "{} does not match the checksum in {} (corrupt or from another run)",
            tensors_path.display(),
            json_path.display()
        );
    }
    let tensors = normflow::candle::safetensors::load_buffer(&bytes, &Device::Cpu)
        .with_context(|| format!("{} is not a valid safetensors file", tensors_path.display()))?;
    Ok(TrainState::from_tensors(progress, &tensors, model.store(), config.adam_config())?)
}

/// Runs `normflow train`.
pub fn run(args: TrainArgs) -> Result<()> {
    let (dir, settings, mut model, run, resume) = match &args.resume {
        Some(dir) => {
            if args.epochs == Some(0) {
                bail!("--epochs 0: must be at least 1");
            }
            let model = super::load_model(dir)?;
            let Some(record) = training_record(&model) else {
                bail!("{} was not written by `normflow train`: nothing to resume", dir.display());
            };
            let mut settings = record.settings;
            if let Some(e) = args.epochs {
                settings.config.epochs = e;
            }
            let state = read_checkpoint(dir, &model, &settings.config)?;
            let run = load_data(&settings, settings.config.seed)?;
            check_rows(&settings.config, run.train.rows)?;
            (dir.clone(), settings, model, run, Some(state))
        }
        None => {
            let (Some(data), Some(dir)) = (&args.data, &args.out) else {
                bail!("--data and --out are required (or --resume DIR)");
            };
            check_args(&args)?;
            let full = data_source::load(data, args.n, args.seed, args.drop_nonfinite)?;
            let (_, ctx) = data_source::split_context(&full, args.context_columns.as_deref())?;
            let context_indices = match (&ctx, &args.context_columns) {
                (Some(c), Some(_)) => c
                    .columns
                    .iter()
                    .filter_map(|n| full.columns.iter().position(|m| m == n))
                    .collect(),
                _ => Vec::new(),
            };
            let settings = RunSettings {
                data: data.clone(),
                test: args.test.clone(),
                test_frac: args.test_frac,
                context_indices,
                columns: full.columns.clone(),
                toy_rows: args.n,
                drop_nonfinite: args.drop_nonfinite,
                config: train_config(&args),
            };
            settings.config.validate()?;
            let run = split_data(&settings, full, args.seed)?;
            check_rows(&settings.config, run.train.rows)?;
            let spec =
                args.flow.spec(run.train.cols, run.train_context.as_ref().map_or(0, |c| c.cols))?;
            // Image flows scale pixels themselves; other flows standardize the columns.
            let pre = match spec.image() {
                Some(image) => {
                    data_source::check_pixels(&run.train, image.pixel_levels)?;
                    if let Some((test, _)) = &run.test {
                        data_source::check_pixels(test, image.pixel_levels)?;
                    }
                    None
                }
                None => Some(Standardization::fit(&run.train.values, run.train.cols)?),
            };
            let ctx_pre = run
                .train_context
                .as_ref()
                .map(|c| Standardization::fit(&c.values, c.cols))
                .transpose()?;
            let model = Model::new(spec, pre, ctx_pre, args.seed, DType::F32, &Device::Cpu)?;
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            (dir.clone(), settings, model, run, None)
        }
    };
    model.set_training_summary(serde_json::to_value(TrainingRecord {
        settings: settings.clone(),
        summary: None,
    })?);
    let train_x = run.train.to_tensor(DType::F32, &Device::Cpu)?;
    let train_c =
        run.train_context.as_ref().map(|c| c.to_tensor(DType::F32, &Device::Cpu)).transpose()?;
    let config = &settings.config;

    let report = {
        let mut observer = Checkpointer {
            model: &model,
            dir: &dir,
            bar: TrainProgressBar::new(args.json),
            epochs: config.epochs,
            rows: run.train.rows,
        };
        let report = fit_from(
            &model,
            model.store(),
            &train_x,
            train_c.as_ref(),
            config,
            &mut observer,
            resume,
        );
        observer.bar.finish();
        report?
    };

    let test = match &run.test {
        Some((t, c)) => Some(mean_and_stderr(&log_probs(&model, t, c.as_ref())?)),
        None => None,
    };
    let image_dims = model.spec().flow.image().map(|s| s.features());
    let summary = serde_json::json!({
        "flow": model.spec().flow.family(),
        "best_val_log_prob": report.best_val_log_prob,
        "best_epoch": report.best_epoch,
        "test_log_prob": test.map(|t| t.0),
        "test_log_prob_stderr": test.map(|t| t.1),
        "test_rows": run.test.as_ref().map(|t| t.0.rows),
        "train_rows": run.train.rows,
        "epochs": report.epochs_run,
        "final_train_loss": report.final_train_loss,
        "train_seconds": report.train_seconds,
        "train_rows_per_second": report.rows_per_second,
        "skipped_steps": report.skipped_steps,
        "rollbacks": report.rollbacks,
        "stopped_early": report.stopped_early,
        "parameters": model.store().num_parameters(),
        "test_bits_per_dim": image_dims.zip(test).map(|(d, t)| bits_per_dim(t.0, d)),
        "best_val_bits_per_dim":
            image_dims.zip(report.best_val_log_prob).map(|(d, v)| bits_per_dim(v, d)),
        "seconds_per_epoch": report.train_seconds / report.epochs_run.max(1) as f64,
        "function_evaluations_per_step": mean_evaluations(&report.history),
        "model_dir": dir.display().to_string(),
    });
    model.set_training_summary(serde_json::to_value(TrainingRecord {
        settings: settings.clone(),
        summary: Some(summary.clone()),
    })?);
    // The store holds the best model again (fit restores it): save it with its summary.
    model.save(&dir, None)?;
    write_log(&dir.join("train_log.csv"), &report.history)?;
    if !args.no_plot {
        let train: Vec<f64> = report.history.iter().map(|e| e.train_loss).collect();
        let val: Vec<Option<f64>> =
            report.history.iter().map(|e| e.val_log_prob.map(|v| -v)).collect();
        crate::plot::loss_curve(&dir.join("loss.png"), &train, &val)?;
        if model.features() == 2 && model.context_features() == 0 {
            super::plot::density_plot(&model, Some(&run.train), &dir.join("density.png"), 0)?;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(())
}

/// Mean forward and backward function evaluations per training step over the epochs that
/// report them (continuous flows); `null` for other flows.
fn mean_evaluations(history: &[EpochStats]) -> serde_json::Value {
    let counts: Vec<_> = history.iter().filter_map(|e| e.function_evaluations).collect();
    if counts.is_empty() {
        return serde_json::Value::Null;
    }
    let n = counts.len() as f64;
    serde_json::json!({
        "forward": counts.iter().map(|c| c.forward).sum::<f64>() / n,
        "backward": counts.iter().map(|c| c.backward).sum::<f64>() / n,
    })
}

fn write_log(path: &Path, history: &[EpochStats]) -> Result<()> {
    let mut out = String::from(
        "epoch,train_loss,val_log_prob,lr,seconds,rows_per_second,skipped_steps,nfe_forward,\
         nfe_backward\n",
    );
    for e in history {
        let val = e.val_log_prob.map(|v| v.to_string()).unwrap_or_default();
        // Function evaluations per step: continuous flows only.
        let (nfe_f, nfe_b) = e.function_evaluations.map_or((String::new(), String::new()), |c| {
            (c.forward.to_string(), c.backward.to_string())
        });
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{nfe_f},{nfe_b}\n",
            e.epoch, e.train_loss, val, e.lr, e.seconds, e.rows_per_second, e.skipped_steps
        ));
    }
    Ok(write_atomic(path, out.as_bytes())?)
}

fn print_summary(s: &serde_json::Value) {
    let num = |k: &str| s[k].as_f64().map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
    println!(
        "trained {} for {} epochs in {}s ({} rows/s)",
        s["flow"].as_str().unwrap_or("?"),
        s["epochs"],
        num("train_seconds"),
        num("train_rows_per_second")
    );
    println!(
        "  best validation log-likelihood: {} nats/row (epoch {})",
        num("best_val_log_prob"),
        s["best_epoch"]
    );
    if s["test_log_prob"].is_number() {
        println!(
            "  test log-likelihood:            {} ± {} nats/row",
            num("test_log_prob"),
            num("test_log_prob_stderr")
        );
    }
    if let Some(f) = s["function_evaluations_per_step"]["forward"].as_f64() {
        let b = s["function_evaluations_per_step"]["backward"].as_f64().unwrap_or(f64::NAN);
        println!("  function evaluations per step:  {f:.1} forward, {b:.1} backward");
    }
    if s["skipped_steps"].as_u64().unwrap_or(0) > 0 {
        println!(
            "  skipped non-finite steps: {} (rollbacks: {})",
            s["skipped_steps"], s["rollbacks"]
        );
    }
    println!("  model written to {}", s["model_dir"].as_str().unwrap_or("?"));
}
