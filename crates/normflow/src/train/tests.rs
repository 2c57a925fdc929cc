//! Tests of the training loop on models with known answers.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use rand::RngCore;

use super::*;
use crate::bijections::ElementwiseAffine;
use crate::distributions::{StandardNormal, HALF_LOG_TWO_PI};
use crate::random::{rng_from_seed, standard_normal};
use crate::{Distribution, Error, Flow, ParamStore, Result};

/// `n` rows of `N(mu, diag(sigma^2))`, in f32.
fn gaussian_rows(n: usize, mu: &[f64], sigma: &[f64], seed: u64) -> Result<Tensor> {
    let d = mu.len();
    let mut rng = rng_from_seed(seed);
    let z = standard_normal((n, d), DType::F64, &Device::Cpu, &mut rng)?;
    let mu = Tensor::new(mu, &Device::Cpu)?;
    let sigma = Tensor::new(sigma, &Device::Cpu)?;
    Ok(z.broadcast_mul(&sigma)?.broadcast_add(&mu)?.to_dtype(DType::F32)?)
}

/// `z = x exp(s) + t` onto `N(0, I)`: fits a diagonal Gaussian.
fn affine_flow(d: usize) -> Result<(Flow, ParamStore)> {
    let store = ParamStore::new(DType::F32, &Device::Cpu, 0);
    let flow = Flow::new(
        ElementwiseAffine::new(&store.root(), &[d])?,
        StandardNormal::new(&[d], DType::F32, &Device::Cpu),
    );
    Ok((flow, store))
}

/// Every tensor of a store, by name.
type Values = Vec<(String, Vec<f32>)>;

fn values(store: &ParamStore) -> Result<Values> {
    store.all().into_iter().map(|(n, v)| Ok((n, v.as_tensor().flatten_all()?.to_vec1()?))).collect()
}

fn param(store: &ParamStore, name: &str) -> Result<Vec<f64>> {
    let (_, var) = store
        .all()
        .into_iter()
        .find(|(n, _)| n == name)
        .ok_or_else(|| Error::Data(format!("no tensor {name}")))?;
    Ok(var.as_tensor().to_dtype(DType::F64)?.to_vec1()?)
}

fn quiet(config: TrainConfig) -> TrainConfig {
    TrainConfig { patience: None, clip_grad_norm: None, ..config }
}

#[test]
fn gaussian_fit_reaches_the_closed_form_mle() -> Result<()> {
    let (mu, sigma) = ([1.0, -2.0], [0.5, 2.0]);
    let x = gaussian_rows(1000, &mu, &sigma, 1)?;
    let (flow, store) = affine_flow(2)?;
    let config = quiet(TrainConfig {
        epochs: 40,
        batch_size: 100,
        lr: 0.05,
        schedule: LrSchedule::Cosine { min_lr: 1e-4 },
        val_frac: 0.0,
        ..TrainConfig::default()
    });
    let report = fit(&flow, &store, &x, None, &config, &mut NoopObserver)?;

    // MLE of a Gaussian: sample mean and (biased) sample standard deviation. The flow's
    // optimum is exp(s) = 1 / sigma_hat, t = -mu_hat / sigma_hat.
    let x64 = x.to_dtype(DType::F64)?;
    let mu_hat = x64.mean(0)?;
    let sigma_hat = x64.broadcast_sub(&mu_hat)?.sqr()?.mean(0)?.sqrt()?;
    let (mu_hat, sigma_hat): (Vec<f64>, Vec<f64>) = (mu_hat.to_vec1()?, sigma_hat.to_vec1()?);
    let scale: Vec<f64> = param(&store, "log_scale")?.iter().map(|s| s.exp()).collect();
    let shift = param(&store, "shift")?;
    for i in 0..2 {
        let want_scale = 1.0 / sigma_hat[i];
        let want_shift = -mu_hat[i] / sigma_hat[i];
        assert!((scale[i] / want_scale - 1.0).abs() < 5e-3, "scale {scale:?} vs {want_scale}");
        assert!((shift[i] - want_shift).abs() < 1e-2, "shift {shift:?} vs {want_shift}");
    }
    // The mean NLL at the MLE: sum_i (log sigma_i + 1/2 + log(2 pi) / 2).
    let nll: f64 = sigma_hat.iter().map(|s| s.ln() + 0.5 + HALF_LOG_TWO_PI).sum();
    assert!((report.final_train_loss - nll).abs() < 1e-2, "{} vs {nll}", report.final_train_loss);
    // Without validation, the last epoch is the best and nothing stops early.
    assert_eq!((report.epochs_run, report.best_epoch, report.history.len()), (40, 40, 40));
    assert_eq!(report.best_val_log_prob, None);
    assert!(!report.stopped_early && !report.interrupted);
    assert!(report.rows_per_second > 0.0 && report.train_seconds > 0.0);
    Ok(())
}

/// A wrapper that misbehaves on purpose.
#[derive(Debug)]
struct Rigged {
    inner: Flow,
    /// A parameter, for gradients that are infinite while the loss is finite.
    param: Tensor,
    /// Training-mode calls (0-based) whose loss is NaN.
    nan_loss: HashSet<usize>,
    /// Training-mode calls whose gradient is infinite.
    inf_grad: HashSet<usize>,
    /// Added to the log-density in evaluation mode, indexed by the number of completed
    /// validation passes (clamped to the last entry); empty: no offset.
    val_offsets: Vec<f64>,
    training: AtomicBool,
    train_calls: AtomicUsize,
    evals: AtomicUsize,
}

impl Rigged {
    fn new(inner: Flow, store: &ParamStore) -> Self {
        let param = store.parameters()[0].1.as_tensor().clone();
        Self {
            inner,
            param,
            nan_loss: HashSet::new(),
            inf_grad: HashSet::new(),
            val_offsets: Vec::new(),
            training: AtomicBool::new(false),
            train_calls: AtomicUsize::new(0),
            evals: AtomicUsize::new(0),
        }
    }
}

impl Distribution for Rigged {
    fn log_prob(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let lp = self.inner.log_prob(x, context)?;
        if !self.training.load(Ordering::SeqCst) {
            let k = self.evals.load(Ordering::SeqCst).saturating_sub(1);
            let offset = self.val_offsets.get(k.min(self.val_offsets.len().saturating_sub(1)));
            return Ok((lp + offset.copied().unwrap_or(0.0))?);
        }
        let call = self.train_calls.fetch_add(1, Ordering::SeqCst);
        if self.nan_loss.contains(&call) {
            return Ok((lp * f64::NAN)?);
        }
        if self.inf_grad.contains(&call) {
            // sqrt(p - p) is 0, but its derivative at 0 is infinite.
            let zero = (&self.param - self.param.detach())?.sqrt()?.sum_all()?;
            return Ok(lp.broadcast_add(&zero)?);
        }
        Ok(lp)
    }
    fn sample(&self, n: usize, context: Option<&Tensor>, rng: &mut dyn RngCore) -> Result<Tensor> {
        self.inner.sample(n, context, rng)
    }
    fn event_shape(&self) -> Vec<usize> {
        self.inner.event_shape()
    }
    fn set_training(&self, training: bool) {
        if !training {
            self.evals.fetch_add(1, Ordering::SeqCst);
        }
        self.training.store(training, Ordering::SeqCst);
    }
}

#[test]
fn non_finite_steps_are_skipped_and_counted() -> Result<()> {
    let x = gaussian_rows(64, &[1.0], &[2.0], 2)?;
    let (flow, store) = affine_flow(1)?;
    let mut model = Rigged::new(flow, &store);
    model.nan_loss.insert(1);
    model.inf_grad.insert(6);
    let config = quiet(TrainConfig {
        epochs: 3,
        batch_size: 16,
        lr: 0.05,
        val_frac: 0.0,
        ..TrainConfig::default()
    });
    let report = fit(&model, &store, &x, None, &config, &mut NoopObserver)?;
    assert_eq!(report.skipped_steps, 2);
    assert_eq!(report.rollbacks, 0);
    let per_epoch: Vec<usize> = report.history.iter().map(|s| s.skipped_steps).collect();
    assert_eq!(per_epoch, vec![1, 1, 0]);
    // An infinite gradient reaching Adam would have made the parameters NaN.
    for (name, v) in values(&store)? {
        assert!(v.iter().all(|x| x.is_finite()), "{name}: {v:?}");
    }
    assert!(report.history.iter().all(|s| s.train_loss.is_finite()));
    Ok(())
}

/// Records the store at chosen moments.
struct Recorder {
    store: ParamStore,
    epoch: usize,
    at_batch: Option<(usize, usize)>,
    at_batch_values: Option<Values>,
    best: Vec<(usize, Values)>,
    stop_after: Option<usize>,
    state: Option<TrainState>,
}

impl Recorder {
    fn new(store: &ParamStore) -> Self {
        Self {
            store: store.clone(),
            epoch: 0,
            at_batch: None,
            at_batch_values: None,
            best: Vec::new(),
            stop_after: None,
            state: None,
        }
    }
}

impl TrainObserver for Recorder {
    fn on_batch(&mut self, done: usize, _total: usize) {
        if self.at_batch == Some((self.epoch, done)) {
            self.at_batch_values = values(&self.store).ok();
        }
    }
    fn on_epoch(&mut self, stats: &EpochStats) -> Control {
        self.epoch = stats.epoch;
        if self.stop_after == Some(stats.epoch) {
            Control::Stop
        } else {
            Control::Continue
        }
    }
    fn on_new_best(&mut self, epoch: usize, store: &ParamStore, _adam: &Adam) -> Result<()> {
        self.best.push((epoch, values(store)?));
        Ok(())
    }
    fn on_checkpoint(&mut self, state: &TrainState) -> Result<()> {
        self.state = Some(state.clone());
        Ok(())
    }
}

#[test]
fn repeated_failures_roll_back_to_the_best_state_with_half_the_rate() -> Result<()> {
    let x = gaussian_rows(64, &[1.0], &[2.0], 2)?;
    let (flow, store) = affine_flow(1)?;
    let mut model = Rigged::new(flow, &store);
    // Epoch 2 (calls 4..8): its 2nd and 3rd steps fail.
    model.nan_loss.extend([5, 6]);
    let config = quiet(TrainConfig {
        epochs: 3,
        batch_size: 16,
        lr: 0.05,
        val_frac: 0.0,
        max_bad_steps: 2,
        ..TrainConfig::default()
    });
    let mut recorder = Recorder::new(&store);
    recorder.at_batch = Some((1, 3)); // right after the rollback, in epoch 2
    let report = fit(&model, &store, &x, None, &config, &mut recorder)?;
    assert_eq!((report.skipped_steps, report.rollbacks), (2, 1));
    let lrs: Vec<f64> = report.history.iter().map(|s| s.lr).collect();
    assert_eq!(lrs, vec![0.05, 0.025, 0.025]);
    // Without validation the best state is the end of epoch 1: that is what came back.
    let (best_epoch, best_values) = &recorder.best[0];
    assert_eq!(*best_epoch, 1);
    assert_eq!(recorder.at_batch_values.as_ref(), Some(best_values));
    Ok(())
}

#[test]
fn early_stopping_stops_and_keeps_the_best_epoch() -> Result<()> {
    let x = gaussian_rows(100, &[0.0], &[1.0], 3)?;
    let (flow, store) = affine_flow(1)?;
    let mut model = Rigged::new(flow, &store);
    // Validation gets much better until epoch 3, then much worse.
    model.val_offsets = vec![0.0, 100.0, 200.0, 100.0, 0.0, -100.0];
    let config = TrainConfig {
        epochs: 20,
        batch_size: 20,
        lr: 0.01,
        val_frac: 0.2,
        patience: Some(2),
        ..TrainConfig::default()
    };
    let mut recorder = Recorder::new(&store);
    let report = fit(&model, &store, &x, None, &config, &mut recorder)?;
    assert!(report.stopped_early && !report.interrupted);
    assert_eq!((report.epochs_run, report.best_epoch), (5, 3));
    let best = report.best_val_log_prob.ok_or_else(|| Error::Data("no best".into()))?;
    assert!(best > 150.0, "{best}");
    let bests: Vec<usize> = recorder.best.iter().map(|(e, _)| *e).collect();
    assert_eq!(bests, vec![1, 2, 3]);
    assert_eq!(values(&store)?, recorder.best[2].1);
    Ok(())
}

#[test]
fn the_best_model_is_restored() -> Result<()> {
    let x = gaussian_rows(200, &[1.0, -1.0], &[0.3, 3.0], 4)?;
    let (flow, store) = affine_flow(2)?;
    // A large constant rate: validation keeps moving up and down.
    let config = TrainConfig {
        epochs: 12,
        batch_size: 8,
        lr: 0.3,
        val_frac: 0.3,
        patience: None,
        seed: 11,
        ..TrainConfig::default()
    };
    let report = fit(&flow, &store, &x, None, &config, &mut NoopObserver)?;
    assert!(report.best_epoch < report.epochs_run, "the test needs a best epoch before the last");
    let best = report.best_val_log_prob.ok_or_else(|| Error::Data("no best".into()))?;
    let vals: Vec<f64> = report.history.iter().filter_map(|s| s.val_log_prob).collect();
    assert!(vals.iter().all(|&v| v <= best));
    assert_eq!(vals[report.best_epoch - 1], best);

    let (_, val_idx) = validation_split(200, &config)?;
    let val = data::gather_rows(&x, &val_idx)?;
    flow.set_training(false);
    assert_eq!(mean_log_prob(&flow, &val, None, config.batch_size)?, best);
    Ok(())
}

#[test]
fn same_seed_same_parameters() -> Result<()> {
    let x = gaussian_rows(120, &[0.5, 2.0], &[1.0, 0.2], 5)?;
    let run = |seed: u64| -> Result<(Values, Vec<f64>)> {
        let (flow, store) = affine_flow(2)?;
        let config =
            TrainConfig { epochs: 3, batch_size: 16, lr: 0.05, seed, ..TrainConfig::default() };
        let report = fit(&flow, &store, &x, None, &config, &mut NoopObserver)?;
        Ok((values(&store)?, report.history.iter().map(|s| s.train_loss).collect()))
    };
    let a = run(7)?;
    assert_eq!(a, run(7)?);
    assert_ne!(a.0, run(8)?.0);
    Ok(())
}

#[test]
fn resumed_run_is_bit_identical_to_an_uninterrupted_one() -> Result<()> {
    let x = gaussian_rows(150, &[1.0, -3.0], &[0.7, 1.5], 6)?;
    let config = TrainConfig {
        epochs: 4,
        batch_size: 16,
        lr: 0.1,
        warmup_epochs: 2,
        schedule: LrSchedule::ReduceOnPlateau { factor: 0.5, patience: 1, min_lr: 1e-4 },
        val_frac: 0.2,
        patience: Some(10),
        clip_grad_norm: Some(1.0),
        weight_decay: 0.01,
        seed: 3,
        ..TrainConfig::default()
    };

    let (flow, store) = affine_flow(2)?;
    let full = fit(&flow, &store, &x, None, &config, &mut NoopObserver)?;
    let full_values = values(&store)?;

    // Interrupted after 2 epochs...
    let (flow, store) = affine_flow(2)?;
    let mut recorder = Recorder::new(&store);
    recorder.stop_after = Some(2);
    let first = fit(&flow, &store, &x, None, &config, &mut recorder)?;
    assert!(first.interrupted && first.epochs_run == 2);
    let state = recorder.state.ok_or_else(|| Error::Data("no checkpoint".into()))?;

    // ...saved the way a checkpoint file holds it (JSON + tensors)...
    let progress: TrainProgress = serde_json::from_str(&serde_json::to_string(&state.progress)?)?;
    let tensors: HashMap<String, Tensor> = state.tensors().into_iter().collect();

    // ...and resumed in a fresh process: a new model, built the same way.
    let (flow, store) = affine_flow(2)?;
    let state = TrainState::from_tensors(progress, &tensors, &store, config.adam_config())?;
    let resumed = fit_from(&flow, &store, &x, None, &config, &mut NoopObserver, Some(state))?;

    assert_eq!(values(&store)?, full_values);
    assert_eq!(resumed.epochs_run, 4);
    assert_eq!(resumed.best_epoch, full.best_epoch);
    assert_eq!(resumed.best_val_log_prob, full.best_val_log_prob);
    let losses = |r: &TrainReport| -> Vec<(f64, Option<f64>, f64)> {
        r.history.iter().map(|s| (s.train_loss, s.val_log_prob, s.lr)).collect()
    };
    assert_eq!(losses(&resumed), losses(&full));
    // The warmup spans the interruption.
    assert_eq!(full.history[0].lr, 0.05);
    Ok(())
}

#[test]
fn resuming_with_another_seed_or_data_is_refused() -> Result<()> {
    let x = gaussian_rows(60, &[0.0], &[1.0], 7)?;
    let (flow, store) = affine_flow(1)?;
    let config = TrainConfig { epochs: 2, batch_size: 10, val_frac: 0.2, ..TrainConfig::default() };
    let mut recorder = Recorder::new(&store);
    fit(&flow, &store, &x, None, &config, &mut recorder)?;
    let state = recorder.state.ok_or_else(|| Error::Data("no checkpoint".into()))?;
    let other_seed = TrainConfig { seed: 1, ..config.clone() };
    let err =
        fit_from(&flow, &store, &x, None, &other_seed, &mut NoopObserver, Some(state.clone()));
    assert!(matches!(err, Err(Error::InvalidConfig { ref name, .. }) if name == "seed"), "{err:?}");
    let fewer = x.narrow(0, 0, 50)?;
    let err = fit_from(&flow, &store, &fewer, None, &config, &mut NoopObserver, Some(state));
    assert!(matches!(err, Err(Error::Data(_))), "{err:?}");
    Ok(())
}

/// `x | c ~ N(a c, 1)` with a learnable `a`.
#[derive(Debug)]
struct LinearGaussian {
    a: Tensor,
}

impl Distribution for LinearGaussian {
    fn log_prob(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let c = context.ok_or_else(|| Error::Context("needs a context".into()))?;
        let r = (x - c.broadcast_mul(&self.a)?)?;
        Ok(r.sqr()?.sum(1)?.affine(-0.5, -HALF_LOG_TWO_PI)?)
    }
    fn sample(&self, _n: usize, _c: Option<&Tensor>, _rng: &mut dyn RngCore) -> Result<Tensor> {
        Err(Error::Data("not needed".into()))
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![1]
    }
}

#[test]
fn context_rows_stay_paired_with_their_data_rows() -> Result<()> {
    let n = 200;
    let mut rng = rng_from_seed(8);
    let c = standard_normal((n, 1), DType::F32, &Device::Cpu, &mut rng)?;
    let noise = standard_normal((n, 1), DType::F32, &Device::Cpu, &mut rng)?;
    let x = ((&c * 2.0)? + (noise * 0.5)?)?;
    let store = ParamStore::new(DType::F32, &Device::Cpu, 0);
    let model = LinearGaussian { a: store.root().param("a", 1, crate::Init::Const(0.0))? };
    let config = quiet(TrainConfig {
        epochs: 30,
        batch_size: 32,
        lr: 0.1,
        schedule: LrSchedule::Cosine { min_lr: 1e-4 },
        val_frac: 0.25,
        ..TrainConfig::default()
    });
    let mut recorder = Recorder::new(&store);
    let report = fit(&model, &store, &x, Some(&c), &config, &mut recorder)?;
    // Validation rows paired with their own contexts: the log-likelihood of N(2c, 1/4) data under
    // N(a c, 1) with a near 2 is about -(0.25 + log(2 pi)) / 2 = -1.04, far from what mispaired
    // rows (residual variance 4 + 1/4) would give.
    let best = report.best_val_log_prob.ok_or_else(|| Error::Data("no best".into()))?;
    assert!(best > -1.2, "{best}");
    // The final (converged) model, before the best one was restored: least squares on the
    // training rows, a = sum(x c) / sum(c^2).
    let (train_idx, _) = validation_split(n, &config)?;
    let (xs, cs): (Vec<f32>, Vec<f32>) = (x.flatten_all()?.to_vec1()?, c.flatten_all()?.to_vec1()?);
    let sxc: f64 = train_idx.iter().map(|&i| xs[i] as f64 * cs[i] as f64).sum();
    let scc: f64 = train_idx.iter().map(|&i| (cs[i] as f64).powi(2)).sum();
    let last = recorder.state.ok_or_else(|| Error::Data("no checkpoint".into()))?;
    let a = last.model.tensors()[0].1.to_vec1::<f32>()?[0] as f64;
    assert!((a - sxc / scc).abs() < 1e-3, "{a} vs {}", sxc / scc);
    Ok(())
}

#[test]
fn bad_inputs_are_errors_not_panics() -> Result<()> {
    let x = gaussian_rows(40, &[0.0], &[1.0], 9)?;
    let (flow, store) = affine_flow(1)?;
    let ok = TrainConfig { epochs: 1, batch_size: 10, val_frac: 0.2, ..TrainConfig::default() };
    let run = |x: &Tensor, c: Option<&Tensor>, config: &TrainConfig| {
        fit(&flow, &store, x, c, config, &mut NoopObserver)
    };
    let zero_batch = TrainConfig { batch_size: 0, ..ok.clone() };
    assert!(matches!(run(&x, None, &zero_batch), Err(Error::InvalidConfig { .. })));
    let big_batch = TrainConfig { batch_size: 33, ..ok.clone() };
    let err = run(&x, None, &big_batch).expect_err("must fail").to_string();
    assert!(err.contains("32 training rows") && err.contains("batch_size = 33"), "{err}");
    let ctx = Tensor::zeros((39, 1), DType::F32, &Device::Cpu)?;
    assert!(matches!(run(&x, Some(&ctx), &ok), Err(Error::Context(_))));
    let nan = Tensor::new(&[[f32::NAN]], &Device::Cpu)?;
    let with_nan = Tensor::cat(&[&x, &nan], 0)?;
    assert!(matches!(run(&with_nan, None, &ok), Err(Error::Data(_))));
    let empty = Tensor::zeros((0, 1), DType::F32, &Device::Cpu)?;
    assert!(matches!(run(&empty, None, &ok), Err(Error::Data(_))));
    Ok(())
}

/// A MAF with context (f64), whose rows are independent: the sliced step applies to it.
fn small_maf(batch_norm: bool) -> Result<crate::model::Model> {
    let mut spec = crate::flows::AutoregressiveSpec::new(3);
    spec.context_features = 2;
    spec.layers = 2;
    spec.hidden = 16;
    spec.batch_norm = batch_norm;
    crate::model::Model::new(
        crate::flows::FlowSpec::Maf(spec),
        None,
        None,
        3,
        DType::F64,
        &Device::Cpu,
    )
}

#[test]
fn sliced_gradients_equal_the_whole_batch_gradients() -> Result<()> {
    let model = small_maf(false)?;
    model.set_training(true);
    assert!(model.rows_independent());
    let mut rng = rng_from_seed(5);
    let x = standard_normal((450, 3), DType::F64, &Device::Cpu, &mut rng)?;
    let c = standard_normal((450, 2), DType::F64, &Device::Cpu, &mut rng)?;
    let store = model.store();

    let whole = model.log_prob(&x, Some(&c))?.mean_all()?.neg()?;
    let whole_grads = whole.backward()?;
    // 100-row slices: four of them, unequal in size (113, 113, 112, 112).
    let (loss, grads) = step::sliced_nll_and_gradients(&model, store, &x, Some(&c), 100)?;
    let grads = grads.expect("finite loss");
    assert!((loss - whole.to_scalar::<f64>()?).abs() < 1e-10, "{loss} vs {whole}");
    let params = store.parameters();
    assert!(params.len() > 4);
    for (name, var) in params {
        let (a, b) = (whole_grads.get(var.as_tensor()), grads.get(var.as_tensor()));
        let (Some(a), Some(b)) = (a, b) else {
            panic!("{name}: gradient present in one computation only");
        };
        let err = (a - b)?.abs()?.max_all()?.to_scalar::<f64>()?;
        let scale = a.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(err <= 1e-10 * scale.max(1.0), "{name}: error {err:e} (scale {scale:e})");
    }
    Ok(())
}

/// A two-level Glow on 2 x 4 x 4 images (f64), ActNorm initialized on a first batch.
fn small_glow(rng: &mut dyn RngCore) -> Result<(crate::model::Model, Tensor)> {
    let mut spec = crate::flows::ImageFlowSpec::new(2, 4, 4);
    spec.steps = 2;
    spec.hidden = 4;
    let model = crate::model::Model::new(
        crate::flows::FlowSpec::Glow(spec),
        None,
        None,
        32,
        DType::F64,
        &Device::Cpu,
    )?;
    // Pixel values in [0, 256), as the dequantized data the image presets expect.
    let x = (crate::random::uniform((40, 32), DType::F64, &Device::Cpu, rng)? * 255.0)?;
    model.set_training(true);
    model.log_prob(&x, None)?;
    Ok((model, x))
}

#[test]
fn image_flows_train_on_small_slices() -> Result<()> {
    let mut rng = rng_from_seed(8);
    let (model, x) = small_glow(&mut rng)?;
    assert_eq!(model.training_slice_rows(), Some(crate::parallel::IMAGE_SLICE_ROWS));
    assert_eq!(small_maf(false)?.training_slice_rows(), None);
    assert!(model.rows_independent(), "ActNorm is initialized");

    let whole = model.log_prob(&x, None)?.mean_all()?.neg()?;
    let whole_grads = whole.backward()?;
    // 40 rows in 16-row slices: two slices of 20.
    let store = model.store();
    let (loss, grads) =
        step::sliced_nll_and_gradients(&model, store, &x, None, crate::parallel::IMAGE_SLICE_ROWS)?;
    let grads = grads.expect("finite loss");
    assert!((loss - whole.to_scalar::<f64>()?).abs() < 1e-9 * loss.abs(), "{loss} vs {whole}");
    for (name, var) in store.parameters() {
        let (Some(a), Some(b)) = (whole_grads.get(var.as_tensor()), grads.get(var.as_tensor()))
        else {
            panic!("{name}: gradient present in one computation only");
        };
        let err = (a - b)?.abs()?.max_all()?.to_scalar::<f64>()?;
        let scale = a.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(err <= 1e-9 * scale.max(1.0), "{name}: error {err:e} (scale {scale:e})");
    }
    Ok(())
}

#[test]
fn a_non_finite_slice_skips_the_step() -> Result<()> {
    let model = small_maf(false)?;
    let mut rng = rng_from_seed(6);
    let x = standard_normal((300, 3), DType::F64, &Device::Cpu, &mut rng)?;
    let c = standard_normal((300, 2), DType::F64, &Device::Cpu, &mut rng)?;
    // Context rows of the last slice are infinite: its loss is not finite.
    let bad = Tensor::cat(&[&c.narrow(0, 0, 200)?, &(c.narrow(0, 200, 100)? * f64::INFINITY)?], 0)?;
    let (loss, grads) = step::sliced_nll_and_gradients(&model, model.store(), &x, Some(&bad), 100)?;
    assert!(!loss.is_finite());
    assert!(grads.is_none());
    Ok(())
}

#[test]
fn batch_statistics_keep_whole_batches() -> Result<()> {
    // Batch norm in training mode couples rows: such a model is never sliced.
    let model = small_maf(true)?;
    model.set_training(true);
    assert!(!model.rows_independent());
    model.set_training(false);
    assert!(model.rows_independent());
    Ok(())
}

/// Hides [`Distribution::rows_independent`] of a model, so that training takes whole batches.
#[derive(Debug)]
struct WholeBatches(crate::model::Model);

impl Distribution for WholeBatches {
    fn log_prob(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        self.0.log_prob(x, context)
    }
    fn sample(&self, n: usize, context: Option<&Tensor>, rng: &mut dyn RngCore) -> Result<Tensor> {
        self.0.sample(n, context, rng)
    }
    fn event_shape(&self) -> Vec<usize> {
        self.0.event_shape()
    }
    fn set_training(&self, training: bool) {
        self.0.set_training(training)
    }
}

#[test]
fn sliced_training_follows_whole_batch_training() -> Result<()> {
    let mut rng = rng_from_seed(7);
    let x = (standard_normal((1100, 3), DType::F64, &Device::Cpu, &mut rng)? * 3.0)?;
    let c = standard_normal((1100, 2), DType::F64, &Device::Cpu, &mut rng)?;
    let config = quiet(TrainConfig {
        epochs: 3,
        batch_size: 512,
        lr: 1e-2,
        val_frac: 0.0,
        ..TrainConfig::default()
    });
    let sliced = small_maf(false)?;
    let whole = WholeBatches(small_maf(false)?);
    let a = fit(&sliced, sliced.store(), &x, Some(&c), &config, &mut NoopObserver)?;
    let b = fit(&whole, whole.0.store(), &x, Some(&c), &config, &mut NoopObserver)?;
    let losses: Vec<f64> = a.history.iter().map(|s| s.train_loss).collect();
    assert!(losses[2] < losses[0] - 0.1, "{losses:?}");
    for (sa, sb) in a.history.iter().zip(&b.history) {
        assert!(
            (sa.train_loss - sb.train_loss).abs() < 1e-9,
            "{} vs {}",
            sa.train_loss,
            sb.train_loss
        );
    }
    // Same parameters after 9 steps (batches of 512, 512, 76: two sliced, one whole).
    for ((name, pa), (_, pb)) in
        values_f64(sliced.store())?.iter().zip(&values_f64(whole.0.store())?)
    {
        let err = pa.iter().zip(pb).map(|(u, v)| (u - v).abs()).fold(0.0, f64::max);
        assert!(err < 1e-9, "{name}: {err:e}");
    }
    Ok(())
}

fn values_f64(store: &ParamStore) -> Result<Vec<(String, Vec<f64>)>> {
    store.all().into_iter().map(|(n, v)| Ok((n, v.as_tensor().flatten_all()?.to_vec1()?))).collect()
}
