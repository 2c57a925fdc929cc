//! The hyperparameters of variational inference.

use serde::{Deserialize, Serialize};

use crate::train::{AdamConfig, LrSchedule, LrScheduler};
use crate::{ensure_config, Result};

/// Everything [`super::fit`] needs besides the flow and the target.
///
/// Deserializes from JSON or TOML with every field optional (missing fields take the
/// [`Default`] values) and unknown fields rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ViConfig {
    /// Optimization steps, `>= 1`.
    pub steps: usize,
    /// Samples of `q` per step (the Monte Carlo batch of the ELBO gradient), `>= 1`.
    pub batch_size: usize,
    /// Base learning rate of Adam, finite and `> 0`.
    pub lr: f64,
    /// How the learning rate changes over steps (the schedule's "epochs" are steps here; a
    /// plateau schedule watches the noisy batch loss, so give it a long patience).
    pub schedule: LrSchedule,
    /// Steps of linear learning-rate warmup, `<= steps`.
    pub warmup_steps: usize,
    /// Inverse-temperature annealing: `beta_t = min(1, initial_beta + (1 - initial_beta) t /
    /// anneal_steps)` multiplies `log p~` in the objective (Rezende & Mohamed 2015, Sec. 6.1,
    /// used `beta_t = min(1, 0.01 + t / 10000)`). 0: no annealing (`beta = 1` throughout);
    /// otherwise below `steps`, so that the run ends on the target itself.
    pub anneal_steps: usize,
    /// `beta` at step 0, in `(0, 1]`.
    pub initial_beta: f64,
    /// Sticking the landing (Roeder, Wu & Duvenaud 2017): drop the score term
    /// `d log q_theta(z) / d theta` at fixed `z` from the gradient. Same expectation, and zero
    /// variance when `q` equals the target.
    pub stl: bool,
    /// Rescale the gradient so that its global L2 norm is at most this (`> 0`). `None`: no
    /// clipping.
    pub clip_grad_norm: Option<f64>,
    /// Seed of the samples drawn for the steps.
    pub seed: u64,
    /// Decoupled weight decay of AdamW, `>= 0`.
    pub weight_decay: f64,
    /// Adam's moment decays `(beta1, beta2)`, each in `[0, 1)`.
    pub adam_betas: (f64, f64),
    /// Adam's `eps`, `> 0`.
    pub adam_eps: f64,
    /// After this many consecutive skipped steps (non-finite loss or gradient), go back to the
    /// last good state and halve the learning rate; `>= 1`.
    pub max_bad_steps: usize,
}

impl Default for ViConfig {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch_size: 256,
            lr: 1e-3,
            schedule: LrSchedule::Constant,
            warmup_steps: 0,
            anneal_steps: 0,
            initial_beta: 0.01,
            stl: false,
            clip_grad_norm: Some(10.0),
            seed: 0,
            weight_decay: 0.0,
            adam_betas: (0.9, 0.999),
            adam_eps: 1e-8,
            max_bad_steps: 10,
        }
    }
}

impl ViConfig {
    /// Checks every field; errors name the field.
    pub fn validate(&self) -> Result<()> {
        ensure_config!(self.steps >= 1, "steps", self.steps, "at least 1");
        ensure_config!(self.batch_size >= 1, "batch_size", self.batch_size, "at least 1");
        ensure_config!(
            self.initial_beta.is_finite() && self.initial_beta > 0.0 && self.initial_beta <= 1.0,
            "initial_beta",
            self.initial_beta,
            "a value in (0, 1]"
        );
        if let Some(clip) = self.clip_grad_norm {
            ensure_config!(
                clip.is_finite() && clip > 0.0,
                "clip_grad_norm",
                clip,
                "a finite value > 0"
            );
        }
        ensure_config!(self.max_bad_steps >= 1, "max_bad_steps", self.max_bad_steps, "at least 1");
        ensure_config!(
            self.anneal_steps < self.steps || self.anneal_steps == 0,
            "anneal_steps",
            self.anneal_steps,
            format!("below steps = {} (or 0: no annealing)", self.steps)
        );
        ensure_config!(
            self.warmup_steps <= self.steps,
            "warmup_steps",
            self.warmup_steps,
            format!("at most steps = {}", self.steps)
        );
        self.scheduler()?;
        self.adam_config().validate()
    }

    /// The inverse temperature of step `t` (0-based).
    pub fn beta(&self, t: usize) -> f64 {
        if self.anneal_steps == 0 {
            return 1.0;
        }
        let ramp = t as f64 / self.anneal_steps as f64;
        (self.initial_beta + (1.0 - self.initial_beta) * ramp).min(1.0)
    }

    /// The optimizer's hyperparameters.
    pub fn adam_config(&self) -> AdamConfig {
        AdamConfig {
            lr: self.lr,
            beta1: self.adam_betas.0,
            beta2: self.adam_betas.1,
            eps: self.adam_eps,
            weight_decay: self.weight_decay,
        }
    }

    /// The learning-rate schedule over the steps.
    pub(crate) fn scheduler(&self) -> Result<LrScheduler> {
        LrScheduler::new(self.schedule, self.lr, self.warmup_steps, self.steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn default_is_valid_and_bad_values_name_their_field() {
        assert!(ViConfig::default().validate().is_ok());
        let ok = ViConfig::default();
        let cases: Vec<(&str, ViConfig)> = vec![
            ("steps", ViConfig { steps: 0, ..ok.clone() }),
            ("batch_size", ViConfig { batch_size: 0, ..ok.clone() }),
            ("lr", ViConfig { lr: 0.0, ..ok.clone() }),
            ("initial_beta", ViConfig { initial_beta: 0.0, ..ok.clone() }),
            ("initial_beta", ViConfig { initial_beta: 1.5, ..ok.clone() }),
            ("clip_grad_norm", ViConfig { clip_grad_norm: Some(-1.0), ..ok.clone() }),
            ("max_bad_steps", ViConfig { max_bad_steps: 0, ..ok.clone() }),
            ("anneal_steps", ViConfig { anneal_steps: 2000, ..ok.clone() }),
            ("warmup_steps", ViConfig { warmup_steps: 2001, ..ok.clone() }),
        ];
        for (field, config) in cases {
            match config.validate() {
                Err(Error::InvalidConfig { name, .. }) => assert_eq!(name, field),
                other => panic!("{field}: expected an invalid-config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn beta_ramps_linearly_to_one_and_stays() {
        let c = ViConfig { anneal_steps: 100, initial_beta: 0.2, ..ViConfig::default() };
        assert_eq!(c.beta(0), 0.2);
        assert!((c.beta(50) - 0.6).abs() < 1e-12);
        assert_eq!(c.beta(100), 1.0);
        assert_eq!(c.beta(5000), 1.0);
        assert_eq!(ViConfig::default().beta(0), 1.0);
    }
}
