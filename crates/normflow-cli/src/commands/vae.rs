//! `normflow vae` (train a VAE with a flow posterior, report test ELBO and importance-weighted
//! log-likelihood) and `normflow vae-sample` (sample and reconstruction grids).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use normflow::candle::{DType, Device, Tensor};
use normflow::data::Table;
use normflow::model::io::write_atomic;
use normflow::random::rng_from_seed;
use normflow::vae::{fit, Likelihood, PosteriorSpec, Vae, VaeEpoch, VaeSpec, VaeTrainConfig};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

#[derive(Debug, Args)]
pub struct VaeArgs {
    /// Training images: IDX (e.g. MNIST's, gzip or not), NPY or CSV of 8-bit pixel values,
    /// one image per row.
    #[arg(long)]
    pub data: String,
    /// Test images (same format and width). Without it, --test-rows images of --data are held
    /// out at random.
    #[arg(long)]
    pub test: Option<String>,
    /// Images held out of --data as the test set when --test is not given.
    #[arg(long, default_value_t = 200)]
    pub test_rows: usize,
    /// Variational posterior: diag, planar:K, radial:K, sylvester:K (triangular),
    /// sylvester:K:householder:H, sylvester:K:orthogonal:M, iaf:K or nsf:K.
    #[arg(long, default_value = "diag")]
    pub posterior: String,
    /// Latent dimension.
    #[arg(long, default_value_t = 40)]
    pub latent: usize,
    /// Hidden widths of the encoder MLP, comma separated (the decoder mirrors them).
    #[arg(long, default_value = "300,300", value_delimiter = ',')]
    pub hidden: Vec<usize>,
    /// Decoder likelihood: bernoulli (images dynamically binarized) or gaussian (grey levels
    /// dequantized to [0, 1]).
    #[arg(long, default_value = "bernoulli")]
    pub likelihood: String,
    /// Training epochs.
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 5e-4, allow_negative_numbers = true)]
    pub lr: f64,
    /// Epochs of KL warm-up (β rises linearly to 1) [default: a fifth of --epochs].
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    /// Training images held out for validation: the best epoch (after warm-up) is kept.
    /// 0 = train on all and keep the last epoch.
    #[arg(long, default_value_t = 0)]
    pub val_rows: usize,
    /// Importance samples K of the test log-likelihood estimate.
    #[arg(long, default_value_t = 1000)]
    pub eval_samples: usize,
    /// Test images scored (the first N; 0 = all): K = 1000 on 10k images is slow on a CPU.
    #[arg(long, default_value_t = 0)]
    pub eval_rows: usize,
    /// Image height x width for the PNG grids (e.g. 28x20) [default: square].
    #[arg(long)]
    pub image_shape: Option<String>,
    /// Seed of the initialization, splits, binarizations and samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output model directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Print one JSON object with the results instead of the summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VaeSampleArgs {
    /// A model directory written by `normflow vae`.
    #[arg(long)]
    pub model: PathBuf,
    /// Output PNG of samples from the prior (decoder means).
    #[arg(long)]
    pub out: PathBuf,
    /// Images to draw.
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// Images to reconstruct (up to --n of the first rows, written to --reconstructions as
    /// pairs: the image as the model sees it, then its reconstruction).
    #[arg(long)]
    pub data: Option<String>,
    /// Output PNG of the reconstructions (needs --data).
    #[arg(long)]
    pub reconstructions: Option<PathBuf>,
    /// Image height x width [default: as recorded at training, else square].
    #[arg(long)]
    pub image_shape: Option<String>,
    /// Seed of the samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// What `spec.json` records about the training (its `training` section).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaeRecord {
    /// The loop's settings.
    pub config: VaeTrainConfig,
    /// `[height, width]` of the images.
    pub image_shape: [usize; 2],
    /// Per-epoch records.
    pub epochs: Vec<VaeEpoch>,
    /// The results (the `--json` object), once known.
    pub summary: Option<serde_json::Value>,
}

/// Parses `HxW`, or the square of `features` pixels.
fn image_shape(text: Option<&str>, features: usize) -> Result<[usize; 2]> {
    match text {
        Some(t) => {
            let parsed = t
                .split_once(['x', 'X'])
                .and_then(|(h, w)| Some([h.trim().parse().ok()?, w.trim().parse().ok()?]));
            match parsed {
                Some([h, w]) if h * w == features && h > 0 => Ok([h, w]),
                Some([h, w]) => bail!(
                    "--image-shape {t}: {h} x {w} = {} pixels, but the images have {features}",
                    h * w
                ),
                None => bail!("--image-shape {t}: expected HEIGHTxWIDTH, e.g. 28x20"),
            }
        }
        None => {
            let side = (features as f64).sqrt().round() as usize;
            if side * side != features {
                bail!(
                    "images of {features} pixels are not square: give --image-shape HEIGHTxWIDTH"
                );
            }
            Ok([side, side])
        }
    }
}

fn load_pixels(spec: &str) -> Result<Table> {
    let table = crate::data_source::load(spec, 0, 0, false)?;
    crate::data_source::check_pixels(&table, 256)
        .map_err(|e| anyhow::anyhow!("{e:#}").context("the VAE reads 8-bit images"))?;
    Ok(table)
}

fn rows_tensor(table: &Table, rows: &[usize]) -> Result<Tensor> {
    let d = table.cols;
    let mut values = Vec::with_capacity(rows.len() * d);
    for &r in rows {
        values.extend(table.row(r).iter().map(|&v| v as f32));
    }
    Ok(Tensor::from_vec(values, (rows.len(), d), &Device::Cpu)?)
}

fn check_args(args: &VaeArgs) -> Result<()> {
    super::ensure_counts(&[
        ("--epochs", args.epochs),
        ("--batch", args.batch),
        ("--latent", args.latent),
        ("--eval-samples", args.eval_samples),
    ])?;
    if args.hidden.is_empty() || args.hidden.contains(&0) {
        bail!("--hidden: give one or more widths >= 1, e.g. 300,300");
    }
    super::ensure_lr(args.lr)?;
    if let Some(w) = args.warmup_epochs.filter(|&w| w >= args.epochs) {
        bail!(
            "--warmup-epochs {w}: must be below --epochs {} (the last epochs train the bound)",
            args.epochs
        );
    }
    Ok(())
}

/// Runs `normflow vae`.
pub fn run(args: VaeArgs) -> Result<()> {
    check_args(&args)?;
    let posterior = PosteriorSpec::parse(&args.posterior, args.latent)
        .map_err(|e| anyhow::anyhow!("--posterior {}: {e}", args.posterior))?;
    let likelihood: Likelihood = args
        .likelihood
        .parse()
        .map_err(|e| anyhow::anyhow!("--likelihood {}: {e}", args.likelihood))?;
    let data = load_pixels(&args.data)?;
    let d = data.cols;
    let shape = image_shape(args.image_shape.as_deref(), d)?;
    let mut order: Vec<usize> = (0..data.rows).collect();
    order.shuffle(&mut rng_from_seed(args.seed ^ 0x7e57));
    let (test, test_rows): (Option<Table>, Vec<usize>) = match &args.test {
        Some(path) => {
            let t = load_pixels(path)?;
            if t.cols != d {
                bail!(
                    "--test {path}: images of {} pixels, but the training images ({}) have {d}",
                    t.cols,
                    args.data
                );
            }
            let rows = (0..t.rows).collect();
            (Some(t), rows)
        }
        None => {
            if args.test_rows == 0 || args.test_rows >= data.rows {
                bail!(
                    "--test-rows {}: must be in 1..{} (the rows of --data)",
                    args.test_rows,
                    data.rows
                );
            }
            let held: Vec<usize> = order.drain(..args.test_rows).collect();
            (None, held)
        }
    };
    let test_table = test.as_ref().unwrap_or(&data);
    if args.val_rows >= order.len() {
        bail!(
            "--val-rows {}: leaves no training images ({} available)",
            args.val_rows,
            order.len()
        );
    }
    let val_idx: Vec<usize> = order.drain(..args.val_rows).collect();
    let train = rows_tensor(&data, &order)?;
    let validation = (!val_idx.is_empty()).then(|| rows_tensor(&data, &val_idx)).transpose()?;
    let scored =
        if args.eval_rows == 0 { test_rows.len() } else { args.eval_rows.min(test_rows.len()) };
    let test_x = rows_tensor(test_table, &test_rows[..scored])?;

    let spec = VaeSpec {
        hidden: args.hidden.clone(),
        ..VaeSpec::new(d, args.latent, posterior, likelihood)
    };
    let vae = Vae::new(spec, args.seed, DType::F32, &Device::Cpu)?;
    let config = VaeTrainConfig {
        epochs: args.epochs,
        batch_size: args.batch,
        lr: args.lr,
        warmup_epochs: args.warmup_epochs.unwrap_or(args.epochs / 5),
        seed: args.seed,
        ..VaeTrainConfig::default()
    };
    let mut record =
        VaeRecord { config: config.clone(), image_shape: shape, epochs: vec![], summary: None };
    let started = Instant::now();
    let quiet = args.json;
    let report = fit(&vae, &train, validation.as_ref(), &config, &mut |epoch, best| {
        record.epochs.push(epoch.clone());
        if !quiet {
            let val =
                epoch.val_elbo.map(|v| format!(", validation ELBO {v:.2}")).unwrap_or_default();
            eprintln!(
                "epoch {}/{}: train ELBO {:.2} (beta {:.2}){val}, {:.1}s",
                epoch.epoch, config.epochs, epoch.train_elbo, epoch.beta, epoch.seconds
            );
        }
        if best {
            vae.save(&args.out, serde_json::to_value(&record)?)?;
        }
        Ok(true)
    })?;
    let train_seconds = started.elapsed().as_secs_f64();

    let eval_start = Instant::now();
    let mut rng = rng_from_seed(args.seed.wrapping_add(0xe7a1));
    let observed = vae.observe(&test_x, &mut rng)?;
    let bounds = vae.bounds(&observed, args.eval_samples, &mut rng)?;
    let (elbo, elbo_se) = super::mean_and_stderr(&bounds.elbo);
    let (ll, ll_se) = super::mean_and_stderr(&bounds.iw);
    let mut summary = serde_json::json!({
        "posterior": vae.spec().posterior.to_string(),
        "likelihood": likelihood.to_string(),
        "latent": args.latent,
        "hidden": args.hidden,
        "epochs": report.epochs.len(),
        "best_epoch": report.best_epoch,
        "train_rows": order.len(),
        "val_rows": val_idx.len(),
        "test_rows": scored,
        "eval_samples": args.eval_samples,
        "test_elbo": elbo,
        "test_elbo_stderr": elbo_se,
        "test_log_likelihood": ll,
        "test_log_likelihood_stderr": ll_se,
        "train_seconds": train_seconds,
        "eval_seconds": eval_start.elapsed().as_secs_f64(),
        "parameters": vae.store().num_parameters(),
        "model_dir": args.out.display().to_string(),
    });
    if likelihood == Likelihood::Gaussian {
        // The Gaussian scores dequantized values in [0, 1]: log P(pixels) >= log p(x) - D log 256.
        let bits = -(ll - d as f64 * 256f64.ln()) / (d as f64 * 2f64.ln());
        summary["test_bits_per_dim"] = serde_json::json!(bits);
    }
    record.summary = Some(summary.clone());
    vae.save(&args.out, serde_json::to_value(&record)?)?;
    write_log(&args.out.join("train_log.csv"), &record.epochs)?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{} VAE, {} epochs ({:.0}s): test ELBO {elbo:.2} ± {elbo_se:.2}, test log-likelihood \
             (IW, K = {}) {ll:.2} ± {ll_se:.2} nats on {scored} images; model in {}",
            summary["posterior"].as_str().unwrap_or("?"),
            report.epochs.len(),
            train_seconds,
            args.eval_samples,
            args.out.display()
        );
    }
    Ok(())
}

fn write_log(path: &Path, epochs: &[VaeEpoch]) -> Result<()> {
    let mut out = String::from("epoch,train_elbo,beta,val_elbo,skipped_steps,seconds\n");
    for e in epochs {
        let val = e.val_elbo.map(|v| v.to_string()).unwrap_or_default();
        out.push_str(&format!(
            "{},{},{},{val},{},{}\n",
            e.epoch, e.train_elbo, e.beta, e.skipped_steps, e.seconds
        ));
    }
    Ok(write_atomic(path, out.as_bytes())?)
}

/// Runs `normflow vae-sample`.
pub fn run_sample(args: VaeSampleArgs) -> Result<()> {
    if args.n == 0 {
        bail!("--n 0: must be at least 1");
    }
    if args.reconstructions.is_some() != args.data.is_some() {
        bail!("--reconstructions and --data go together: the images to reconstruct and the PNG");
    }
    let vae = Vae::load(&args.model, &Device::Cpu)
        .with_context(|| format!("cannot load the VAE in {}", args.model.display()))?;
    let file = normflow::vae::read_vae_file(&args.model)?;
    let d = vae.spec().features;
    let recorded = serde_json::from_value::<VaeRecord>(file.training).ok().map(|r| r.image_shape);
    let [h, w] = match (&args.image_shape, recorded) {
        (Some(t), _) => image_shape(Some(t), d)?,
        (None, Some(s)) => s,
        (None, None) => image_shape(None, d)?,
    };
    let mut rng = rng_from_seed(args.seed);
    let means = vae.sample_means(args.n, &mut rng)?;
    grid(&args.out, &means, [h, w])?;
    if let (Some(data), Some(out)) = (&args.data, &args.reconstructions) {
        let table = load_pixels(data)?;
        if table.cols != d {
            bail!("--data {data}: images of {} pixels, but the model's have {d}", table.cols);
        }
        // The grid is ceil(sqrt(2r)) images wide: keep that even, so pairs never straddle rows.
        let mut r = table.rows.min(args.n);
        while r > 1 && ((2 * r) as f64).sqrt().ceil() as usize % 2 == 1 {
            r -= 1;
        }
        let rows: Vec<usize> = (0..r).collect();
        let x = rows_tensor(&table, &rows)?;
        let obs = vae.observe(&x, &mut rng)?;
        let recon = vae.reconstruct(&obs, &mut rng)?;
        // Pairs: each observation (as the model sees it) beside its reconstruction.
        let pairs =
            Tensor::stack(&[&obs.clamp(0f32, 1f32)?, &recon], 1)?.reshape((2 * rows.len(), d))?;
        grid(out, &pairs, [h, w])?;
    }
    Ok(())
}

/// Writes `[0, 1]` images as a PNG grid.
fn grid(path: &Path, images: &Tensor, [h, w]: [usize; 2]) -> Result<()> {
    let values: Vec<f64> = images
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?
        .into_iter()
        .map(|v| v * 255.0)
        .collect();
    crate::plot::image_grid(path, &values, [1, h, w], 256, 3)
}
