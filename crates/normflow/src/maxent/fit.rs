//! The augmented-Lagrangian fit of a maximum-entropy flow.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::constraints::Constraints;
use crate::distributions::Distribution;
use crate::model::Model;
use crate::train::{
    guarded_step, Adam, AdamConfig, Control, LrSchedule, LrScheduler, NoopObserver, Snapshot,
};
use crate::{ensure_config, Error, Result};

/// The hyperparameters of [`fit`]. The defaults are the textbook augmented-Lagrangian
/// settings (`c_0 = 1`, `beta = 4`, `gamma = 1/4`) with a short inner loop, and two changes that
/// matter with stochastic estimates: the penalty weight stops at `penalty_max = 20` (the
/// multiplier update `lambda += c R` multiplies the noise of `R` by `c`; in the closed-form
/// tests a ceiling of 10^4 let the multipliers oscillate by hundreds), and the learning rate
/// decays (cosine over the outer iterations), so that the last multiplier updates see a
/// settled model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaxEntConfig {
    /// Outer iterations `K`: multiplier and penalty updates, `>= 1`.
    pub outer_iterations: usize,
    /// Adam steps per outer iteration, `>= 1`.
    pub inner_steps: usize,
    /// Samples per step, even and `>= 2` (the penalty uses two halves, see [`fit`]).
    pub batch_size: usize,
    /// Adam's base learning rate, finite and `> 0`.
    pub lr: f64,
    /// How the learning rate changes over the outer iterations (`ReduceOnPlateau` monitors
    /// the negative entropy estimate).
    pub schedule: LrSchedule,
    /// Initial penalty weight `c_0 > 0`.
    pub penalty: f64,
    /// Factor `beta > 1` applied to the penalty weight when the violation did not shrink enough.
    pub penalty_growth: f64,
    /// Ceiling of the penalty weight, `>= penalty`: a huge weight makes the inner problem
    /// ill-conditioned and the steps noisy.
    pub penalty_max: f64,
    /// `gamma` in `(0, 1)`: the penalty grows unless `||R_k|| <= gamma ||R_{k-1}||`.
    pub violation_decrease: f64,
    /// Samples of the estimate of `E[T] - m` after each inner loop (the multiplier update and
    /// the reported entropy), `>= 2`.
    pub estimate_samples: usize,
    /// Rescale the gradient so that its global L2 norm is at most this (`> 0`); `None`: never.
    pub clip_grad_norm: Option<f64>,
    /// Seed of every sample drawn.
    pub seed: u64,
    /// After this many consecutive skipped steps (non-finite loss or gradient), roll back to
    /// the state at the start of the outer iteration and halve the learning rate; `>= 1`.
    pub max_bad_steps: usize,
}

impl Default for MaxEntConfig {
    fn default() -> Self {
        Self {
            outer_iterations: 10,
            inner_steps: 200,
            batch_size: 256,
            lr: 2e-3,
            schedule: LrSchedule::Cosine { min_lr: 1e-4 },
            penalty: 1.0,
            penalty_growth: 4.0,
            penalty_max: 20.0,
            violation_decrease: 0.25,
            estimate_samples: 4096,
            clip_grad_norm: Some(5.0),
            seed: 0,
            max_bad_steps: 20,
        }
    }
}

impl MaxEntConfig {
    /// Checks every field; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let c = self;
        ensure_config!(
            c.outer_iterations >= 1,
            "outer_iterations",
            c.outer_iterations,
            "at least 1"
        );
        ensure_config!(c.inner_steps >= 1, "inner_steps", c.inner_steps, "at least 1");
        ensure_config!(
            c.batch_size >= 2 && c.batch_size % 2 == 0,
            "batch_size",
            c.batch_size,
            "an even number >= 2 (the penalty pairs two halves of each batch)"
        );
        AdamConfig { lr: c.lr, ..AdamConfig::default() }.validate()?;
        c.schedule.validate(c.lr)?;
        ensure_config!(
            c.penalty.is_finite() && c.penalty > 0.0,
            "penalty",
            c.penalty,
            "a finite value > 0"
        );
        ensure_config!(
            c.penalty_growth.is_finite() && c.penalty_growth > 1.0,
            "penalty_growth",
            c.penalty_growth,
            "a finite value > 1"
        );
        ensure_config!(
            c.penalty_max.is_finite() && c.penalty_max >= c.penalty,
            "penalty_max",
            c.penalty_max,
            format!("a finite value >= penalty = {}", c.penalty)
        );
        ensure_config!(
            c.violation_decrease > 0.0 && c.violation_decrease < 1.0,
            "violation_decrease",
            c.violation_decrease,
            "a value in (0, 1)"
        );
        ensure_config!(
            c.estimate_samples >= 2,
            "estimate_samples",
            c.estimate_samples,
            "at least 2"
        );
        if let Some(clip) = c.clip_grad_norm {
            ensure_config!(
                clip.is_finite() && clip > 0.0,
                "clip_grad_norm",
                clip,
                "a finite value > 0"
            );
        }
        ensure_config!(c.max_bad_steps >= 1, "max_bad_steps", c.max_bad_steps, "at least 1");
        Ok(())
    }
}

/// Monte-Carlo estimates of a distribution's entropy and constraint statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaxEntEstimate {
    /// Samples used.
    pub samples: usize,
    /// `H = -E[log p(x)]` in nats.
    pub entropy: f64,
    /// Standard error of `entropy`.
    pub entropy_stderr: f64,
    /// `E[T_k(x)]`, one per constraint.
    pub moments: Vec<f64>,
    /// Standard errors of `moments`.
    pub moment_stderr: Vec<f64>,
    /// `E[T_k(x)] - m_k`.
    pub residuals: Vec<f64>,
    /// `max_k |E[T_k(x)] - m_k|` (NaN if any residual is).
    pub max_constraint_violation: f64,
}

/// Estimates the entropy of `model` and the expectations of the constraint statistics from
/// `n >= 2` samples drawn with `rng`, `batch_size` at a time, without gradients. The model is
/// used in its current mode.
pub fn estimate(
    model: &dyn Distribution,
    constraints: &Constraints,
    n: usize,
    batch_size: usize,
    rng: &mut dyn RngCore,
) -> Result<MaxEntEstimate> {
    ensure_config!(n >= 2, "samples", n, "at least 2");
    ensure_config!(batch_size >= 1, "batch_size", batch_size, "at least 1");
    let k = constraints.len();
    let (mut lp_sum, mut lp_sq) = (0.0, 0.0);
    let (mut t_sum, mut t_sq) = (vec![0.0; k], vec![0.0; k]);
    crate::inference::without_gradients(|| -> Result<()> {
        let mut done = 0;
        while done < n {
            let b = batch_size.min(n - done);
            let (x, lp) = model.sample_and_log_prob(b, None, rng)?;
            let t = constraints.evaluate(&x)?;
            let lp = lp.detach().to_device(&Device::Cpu)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            let t = t.detach().to_device(&Device::Cpu)?.to_dtype(DType::F64)?.to_vec2::<f64>()?;
            for v in lp {
                lp_sum += v;
                lp_sq += v * v;
            }
            for row in t {
                for (j, v) in row.into_iter().enumerate() {
                    t_sum[j] += v;
                    t_sq[j] += v * v;
                }
            }
            done += b;
        }
        Ok(())
    })?;
    let nf = n as f64;
    let stderr = |sum: f64, sq: f64| ((sq - sum * sum / nf).max(0.0) / (nf - 1.0) / nf).sqrt();
    let moments: Vec<f64> = t_sum.iter().map(|s| s / nf).collect();
    let residuals: Vec<f64> =
        moments.iter().zip(constraints.targets()).map(|(m, t)| m - t).collect();
    let max_constraint_violation = residuals.iter().map(|r| r.abs()).fold(0.0, |a: f64, r| {
        if r.is_nan() || a.is_nan() {
            f64::NAN
        } else {
            a.max(r)
        }
    });
    Ok(MaxEntEstimate {
        samples: n,
        entropy: -lp_sum / nf,
        entropy_stderr: stderr(lp_sum, lp_sq),
        moment_stderr: t_sum.iter().zip(&t_sq).map(|(&s, &q)| stderr(s, q)).collect(),
        moments,
        residuals,
        max_constraint_violation,
    })
}

/// The state after one outer iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationStats {
    /// Outer iterations completed, counting this one (the first is 1).
    pub iteration: usize,
    /// The estimate after this iteration's inner loop (before the multiplier update).
    pub estimate: MaxEntEstimate,
    /// Multipliers `lambda` after the update.
    pub multipliers: Vec<f64>,
    /// Penalty weight `c` after the update.
    pub penalty: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Steps skipped in this iteration (non-finite loss or gradient).
    pub skipped_steps: usize,
    /// Whether the iteration ended in a rollback (its estimate was not finite).
    pub rolled_back: bool,
    /// Wall time of the iteration, estimate included.
    pub seconds: f64,
}

/// The outcome of [`fit`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaxEntReport {
    /// Every outer iteration.
    pub history: Vec<IterationStats>,
    /// Final multipliers `lambda` (for an exponential-family answer `p ∝ exp(-lambda · T)`
    /// they approach the natural parameters, up to sign).
    pub multipliers: Vec<f64>,
    /// Final penalty weight.
    pub penalty: f64,
    /// Steps skipped because the loss or gradient was not finite.
    pub skipped_steps: usize,
    /// Rollbacks to the start of an outer iteration.
    pub rollbacks: usize,
    /// Whether the observer ended the run.
    pub interrupted: bool,
    /// Wall time of the whole fit.
    pub seconds: f64,
}

/// Hooks called by [`fit`]; every method has a default that does nothing.
pub trait MaxEntObserver {
    /// After each inner step (applied or skipped): `step` of `total` steps of the whole run,
    /// and the batch's entropy estimate `-mean log p` (NaN for a skipped step).
    fn on_step(&mut self, _step: usize, _total: usize, _batch_entropy: f64) {}

    /// After each outer iteration, with the model's parameters in `model` (the place to save
    /// it); [`Control::Stop`] ends the fit. An error ends the fit with that error.
    fn on_iteration(&mut self, _stats: &IterationStats, _model: &Model) -> Result<Control> {
        Ok(Control::Continue)
    }
}

impl MaxEntObserver for NoopObserver {}

/// The augmented Lagrangian on one batch (see [`fit`]) and the batch's `-mean log p`.
fn augmented_lagrangian(
    model: &Model,
    constraints: &Constraints,
    multipliers: &[f64],
    penalty: f64,
    batch_size: usize,
    rng: &mut dyn RngCore,
) -> Result<(Tensor, f64)> {
    let (x, log_p) = model.sample_and_log_prob(batch_size, None, rng)?;
    let t = constraints.evaluate(&x)?;
    let targets = constraints.target_tensor(&t)?;
    let half = batch_size / 2;
    let r_a = t.narrow(0, 0, half)?.mean(0)?.broadcast_sub(&targets)?;
    let r_b = t.narrow(0, half, half)?.mean(0)?.broadcast_sub(&targets)?;
    let r = ((&r_a + &r_b)? * 0.5)?;
    let lambda = Tensor::from_vec(multipliers.to_vec(), multipliers.len(), t.device())?
        .to_dtype(t.dtype())?;
    let neg_entropy = log_p.mean_all()?;
    let loss = ((&neg_entropy + (lambda * r)?.sum_all()?)?
        + ((r_a * r_b)?.sum_all()? * (0.5 * penalty))?)?;
    let h = -neg_entropy.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok((loss, h))
}

/// Fits `model` to the maximum-entropy distribution under `constraints`
/// (Loaiza-Ganem, Gao & Cunningham 2017, "Maximum Entropy Flow Networks", ICLR):
///
/// ```text
/// maximize H(p) = -E_p[log p(x)]   subject to   R(p) = E_p[T(x)] - m = 0
/// ```
///
/// by the augmented Lagrangian method. Outer iteration `k` minimizes, warm-started,
///
/// ```text
/// L_k(theta) = E_p[log p(x)] + lambda_k · R + c_k / 2 ||R||^2
/// ```
///
/// with `inner_steps` Adam steps on batches of reparameterized samples `x = f^{-1}(z)`,
/// `z ~ q0`, whose `log p(x)` comes from the same pass (so gradients flow through the samples
/// and the density alike). `||R||^2` is estimated without bias as `R_a · R_b` from the two
/// halves of the batch (the paper's device); `R` in the linear term uses the whole batch. Then
/// `R_k` is estimated from `estimate_samples` fresh samples and
///
/// ```text
/// lambda_{k+1} = lambda_k + c_k R_k;   c_{k+1} = min(beta c_k, c_max) if ||R_k|| > gamma ||R_{k-1}||
/// ```
///
/// The support is the model's ([`Model::with_support`]): its map's log-determinant enters
/// `log p`, so the entropy is that of the density on the support.
///
/// Non-finite steps are skipped; `max_bad_steps` in a row, or a non-finite estimate, restore
/// the state at the start of the outer iteration (parameters and optimizer) with half the
/// learning rate. The model is left in evaluation mode with the parameters of the last
/// iteration.
///
/// # Errors
/// An invalid config, constraints for another dimension, a conditional model, or a statistic
/// undefined on the model's support ([`Constraints::check_support`]).
pub fn fit(
    model: &Model,
    constraints: &Constraints,
    config: &MaxEntConfig,
    observer: &mut dyn MaxEntObserver,
) -> Result<MaxEntReport> {
    config.validate()?;
    if model.features() != constraints.dim() {
        return Err(Error::config(
            "dim",
            constraints.dim(),
            format!(
                "the constraints are on {} coordinates but the model has {}",
                constraints.dim(),
                model.features()
            ),
        ));
    }
    if model.context_features() > 0 {
        return Err(Error::Context("a maximum-entropy fit needs an unconditional model".into()));
    }
    constraints.check_support(model.spec().support)?;
    let start = Instant::now();
    let store = model.store();
    let mut rng = crate::random::rng_from_seed(config.seed);
    let mut adam = Adam::new(AdamConfig { lr: config.lr, ..AdamConfig::default() })?;
    let mut scheduler = LrScheduler::new(config.schedule, config.lr, 0, config.outer_iterations)?;
    let mut multipliers = vec![0.0; constraints.len()];
    let mut penalty = config.penalty;
    let mut previous_norm = f64::INFINITY;
    let (mut lr_scale, mut skipped_total, mut rollbacks) = (1.0, 0usize, 0usize);
    let mut history = Vec::with_capacity(config.outer_iterations);
    let total_steps = config.outer_iterations * config.inner_steps;
    let mut interrupted = false;
    for it in 0..config.outer_iterations {
        let it_start = Instant::now();
        let (good_model, good_adam) = (Snapshot::capture(store)?, adam.clone());
        let mut lr = scheduler.lr_for_epoch(it) * lr_scale;
        let (mut bad_in_row, mut skipped) = (0usize, 0usize);
        model.set_training(true);
        for s in 0..config.inner_steps {
            let (loss, h) = augmented_lagrangian(
                model,
                constraints,
                &multipliers,
                penalty,
                config.batch_size,
                &mut rng,
            )?;
            let applied =
                guarded_step(store, &mut adam, &loss, config.clip_grad_norm, lr)?.is_some();
            if applied {
                bad_in_row = 0;
            } else {
                skipped += 1;
                bad_in_row += 1;
                if bad_in_row >= config.max_bad_steps {
                    good_model.restore(store)?;
                    adam = good_adam.clone();
                    lr_scale *= 0.5;
                    lr *= 0.5;
                    rollbacks += 1;
                    bad_in_row = 0;
                }
            }
            observer.on_step(
                it * config.inner_steps + s + 1,
                total_steps,
                if applied { h } else { f64::NAN },
            );
        }
        skipped_total += skipped;
        model.set_training(false);
        let est = estimate(
            model,
            constraints,
            config.estimate_samples,
            config.batch_size.max(1024),
            &mut rng,
        )?;
        let finite = est.entropy.is_finite() && est.residuals.iter().all(|r| r.is_finite());
        if finite {
            for (l, r) in multipliers.iter_mut().zip(&est.residuals) {
                *l += penalty * r;
            }
            let norm = est.residuals.iter().map(|r| r * r).sum::<f64>().sqrt();
            if norm > config.violation_decrease * previous_norm {
                penalty = (penalty * config.penalty_growth).min(config.penalty_max);
            }
            previous_norm = norm;
            scheduler.observe(it, -est.entropy);
        } else {
            good_model.restore(store)?;
            adam = good_adam;
            lr_scale *= 0.5;
            rollbacks += 1;
        }
        let stats = IterationStats {
            iteration: it + 1,
            estimate: est,
            multipliers: multipliers.clone(),
            penalty,
            lr,
            skipped_steps: skipped,
            rolled_back: !finite,
            seconds: it_start.elapsed().as_secs_f64(),
        };
        let control = observer.on_iteration(&stats, model)?;
        history.push(stats);
        if control == Control::Stop {
            interrupted = true;
            break;
        }
    }
    model.set_training(false);
    Ok(MaxEntReport {
        history,
        multipliers,
        penalty,
        skipped_steps: skipped_total,
        rollbacks,
        interrupted,
        seconds: start.elapsed().as_secs_f64(),
    })
}
