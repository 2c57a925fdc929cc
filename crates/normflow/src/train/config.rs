//! The hyperparameters of maximum-likelihood training.

use serde::{Deserialize, Serialize};

use super::adam::AdamConfig;
use super::schedule::LrSchedule;
use crate::{ensure_config, Error, Result};

/// Everything [`super::fit`] needs besides the model and the data.
///
/// Deserializes from JSON or TOML with every field optional (missing fields take the
/// [`Default`] values) and unknown fields rejected, so a typo in a config file is an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Number of passes over the training rows, `>= 1`.
    pub epochs: usize,
    /// Rows per optimization step, `>= 1`; the last batch of an epoch may be smaller.
    pub batch_size: usize,
    /// Base learning rate, finite and `> 0`.
    pub lr: f64,
    /// How the learning rate changes over epochs.
    pub schedule: LrSchedule,
    /// Epochs of linear warmup at the start, `<= epochs`.
    pub warmup_epochs: usize,
    /// Fraction of the rows held out for validation, in `[0, 1)`. With 0, there is no
    /// validation: training runs for exactly `epochs` and the final model is the last one.
    pub val_frac: f64,
    /// Early stopping: stop after this many epochs without a better validation log-likelihood
    /// (`>= 1`; needs `val_frac > 0`). `None`: never stop early.
    pub patience: Option<usize>,
    /// Rescale the gradient so that its global L2 norm is at most this (`> 0`). `None`: no
    /// clipping. The default, 5, is safe for every family; MADE- and coupling-conditioned
    /// affine and rational-quadratic flows reach better likelihoods without it (0.3-0.5 nats on
    /// UCI protein, docs/PERFORMANCE.md), which is what the CLI uses for them.
    pub clip_grad_norm: Option<f64>,
    /// Seed of the validation split and of every epoch's shuffle.
    pub seed: u64,
    /// Decoupled weight decay of AdamW, `>= 0`.
    pub weight_decay: f64,
    /// Adam's moment decays `(beta1, beta2)`, each in `[0, 1)`.
    pub adam_betas: (f64, f64),
    /// Adam's `eps`, `> 0`.
    pub adam_eps: f64,
    /// After this many consecutive skipped steps (non-finite loss or gradient), roll back to
    /// the best state and halve the learning rate; `>= 1`.
    pub max_bad_steps: usize,
    /// Uniform dequantization of integer data (Theis et al. 2016; e.g. 8-bit pixels): every
    /// training batch gets fresh `u ~ U[0, 1)^D` added, drawn from `(seed, epoch, batch)` so a
    /// resumed run sees the same noise; validation rows get one fixed draw. The model then
    /// fits a density on `[k, k + 1)` cells whose integral lower-bounds the discrete
    /// likelihood.
    pub uniform_dequantization: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            batch_size: 256,
            lr: 1e-3,
            schedule: LrSchedule::Constant,
            warmup_epochs: 0,
            val_frac: 0.1,
            patience: Some(20),
            clip_grad_norm: Some(5.0),
            seed: 0,
            weight_decay: 0.0,
            adam_betas: (0.9, 0.999),
            adam_eps: 1e-8,
            max_bad_steps: 10,
            uniform_dequantization: false,
        }
    }
}

impl TrainConfig {
    /// Checks every field and their combinations; errors name the field.
    pub fn validate(&self) -> Result<()> {
        ensure_config!(self.epochs >= 1, "epochs", self.epochs, "at least 1");
        ensure_config!(self.batch_size >= 1, "batch_size", self.batch_size, "at least 1");
        ensure_config!(
            self.val_frac.is_finite() && (0.0..1.0).contains(&self.val_frac),
            "val_frac",
            self.val_frac,
            "a fraction in [0, 1)"
        );
        if let Some(patience) = self.patience {
            ensure_config!(patience >= 1, "patience", patience, "at least 1 epoch (or none)");
            if self.val_frac <= 0.0 {
                return Err(Error::config(
                    "patience",
                    patience,
                    "early stopping needs a validation set: set val_frac > 0 or patience to none",
                ));
            }
        }
        if let Some(clip) = self.clip_grad_norm {
            ensure_config!(
                clip.is_finite() && clip > 0.0,
                "clip_grad_norm",
                clip,
                "a finite value > 0"
            );
        }
        ensure_config!(self.max_bad_steps >= 1, "max_bad_steps", self.max_bad_steps, "at least 1");
        // The scheduler checks lr, warmup_epochs and the schedule's own fields.
        super::schedule::LrScheduler::new(self.schedule, self.lr, self.warmup_epochs, self.epochs)?;
        self.adam_config().validate()
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

    /// Number of validation rows for `n` rows: `round(val_frac * n)`.
    pub fn val_rows(&self, n: usize) -> usize {
        (self.val_frac * n as f64).round() as usize
    }

    /// Checks that `n` rows are enough for the split and for one batch; the message gives the
    /// counts and what to change.
    pub fn check_rows(&self, n: usize) -> Result<()> {
        let n_val = self.val_rows(n);
        if self.val_frac > 0.0 && n_val == 0 {
            return Err(Error::Data(format!(
                "val_frac = {} of {n} rows leaves no validation row: give more rows or a larger \
                 val_frac (or 0 for no validation)",
                self.val_frac
            )));
        }
        let n_train = n - n_val.min(n);
        if n_train < self.batch_size {
            return Err(Error::Data(format!(
                "{n_train} training rows ({n} rows, {n_val} held out for validation) are fewer \
                 than batch_size = {}: lower batch_size or val_frac, or give more rows",
                self.batch_size
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_values_name_their_field() {
        assert!(TrainConfig::default().validate().is_ok());
        let ok = TrainConfig::default();
        let cases: Vec<(&str, TrainConfig)> = vec![
            ("epochs", TrainConfig { epochs: 0, ..ok.clone() }),
            ("batch_size", TrainConfig { batch_size: 0, ..ok.clone() }),
            ("lr", TrainConfig { lr: -1e-3, ..ok.clone() }),
            ("lr", TrainConfig { lr: f64::INFINITY, ..ok.clone() }),
            ("val_frac", TrainConfig { val_frac: 1.0, ..ok.clone() }),
            ("val_frac", TrainConfig { val_frac: -0.1, ..ok.clone() }),
            ("patience", TrainConfig { patience: Some(0), ..ok.clone() }),
            ("patience", TrainConfig { val_frac: 0.0, ..ok.clone() }),
            ("clip_grad_norm", TrainConfig { clip_grad_norm: Some(0.0), ..ok.clone() }),
            ("max_bad_steps", TrainConfig { max_bad_steps: 0, ..ok.clone() }),
            ("warmup_epochs", TrainConfig { warmup_epochs: 101, ..ok.clone() }),
            ("weight_decay", TrainConfig { weight_decay: -0.1, ..ok.clone() }),
            ("beta2", TrainConfig { adam_betas: (0.9, 1.0), ..ok.clone() }),
            ("min_lr", TrainConfig { schedule: LrSchedule::Cosine { min_lr: 1.0 }, ..ok.clone() }),
        ];
        for (field, config) in cases {
            match config.validate() {
                Err(Error::InvalidConfig { name, .. }) => assert_eq!(name, field),
                other => panic!("{field}: expected an invalid-config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn row_counts_are_checked_with_a_clear_message() {
        let config = TrainConfig { batch_size: 10, val_frac: 0.2, ..TrainConfig::default() };
        assert!(config.check_rows(12).is_ok()); // 2 validation rows, 10 training rows
        let err = config.check_rows(11).expect_err("must fail").to_string();
        assert!(err.contains("9 training rows") && err.contains("batch_size = 10"), "{err}");
        let few = TrainConfig { batch_size: 1, val_frac: 0.1, ..TrainConfig::default() };
        let err = few.check_rows(4).expect_err("must fail").to_string();
        assert!(err.contains("no validation row"), "{err}");
    }

    #[test]
    fn config_files_may_omit_fields_but_not_misspell_them() -> Result<()> {
        let c: TrainConfig =
            serde_json::from_str(r#"{"epochs": 3, "schedule": {"kind": "cosine", "min_lr": 0}}"#)?;
        assert_eq!(c.epochs, 3);
        assert_eq!(c.batch_size, TrainConfig::default().batch_size);
        assert!(serde_json::from_str::<TrainConfig>(r#"{"epoch": 3}"#).is_err());
        Ok(())
    }
}
