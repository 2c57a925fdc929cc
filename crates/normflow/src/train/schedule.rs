//! Learning-rate schedules, advanced once per epoch.

use serde::{Deserialize, Serialize};

use crate::{ensure_config, Result};

/// How the learning rate changes over epochs (after the optional linear warmup).
///
/// In a config file: `{"kind": "constant"}`, `{"kind": "cosine", "min_lr": 1e-5}`,
/// `{"kind": "reduce_on_plateau", "factor": 0.5, "patience": 5, "min_lr": 1e-6}`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// The base learning rate throughout.
    #[default]
    Constant,
    /// Cosine annealing (Loshchilov & Hutter 2017, "SGDR") from the base rate to `min_lr` over
    /// the epochs after warmup: `lr(t) = min_lr + (lr - min_lr) (1 + cos(pi t / T)) / 2`, with
    /// `t` the epoch after warmup and `T` the number of such epochs.
    Cosine {
        /// The rate approached at the end, `0 <= min_lr <= lr`.
        min_lr: f64,
    },
    /// Multiplies the rate by `factor` whenever the monitored loss (the validation loss,
    /// `-mean log p`, or the training loss without a validation set) has not improved for
    /// `patience` epochs, never going below `min_lr`.
    ReduceOnPlateau {
        /// Multiplier of a reduction, in `(0, 1)`.
        factor: f64,
        /// Epochs without improvement before a reduction, `>= 1`.
        patience: usize,
        /// Floor of the rate, `0 <= min_lr <= lr`.
        min_lr: f64,
    },
}

impl LrSchedule {
    /// Checks the schedule's fields against the base learning rate `lr`.
    pub fn validate(&self, lr: f64) -> Result<()> {
        let check_min = |min_lr: f64| -> Result<()> {
            ensure_config!(
                min_lr.is_finite() && (0.0..=lr).contains(&min_lr),
                "min_lr",
                min_lr,
                format!("a value in [0, lr = {lr}]")
            );
            Ok(())
        };
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Cosine { min_lr } => check_min(min_lr),
            LrSchedule::ReduceOnPlateau { factor, patience, min_lr } => {
                ensure_config!(factor > 0.0 && factor < 1.0, "factor", factor, "a value in (0, 1)");
                ensure_config!(patience >= 1, "patience", patience, "at least 1 epoch");
                check_min(min_lr)
            }
        }
    }
}

/// The mutable part of a [`LrScheduler`]: what a resumed run must carry over.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlateauState {
    /// The current rate of a [`LrSchedule::ReduceOnPlateau`] schedule (the base rate otherwise).
    pub lr: f64,
    /// The lowest loss seen so far, if any.
    pub best_loss: Option<f64>,
    /// Epochs since the last improvement or reduction.
    pub bad_epochs: usize,
}

/// A [`LrSchedule`] applied to a run: base rate, warmup, length, and the plateau state.
///
/// Epochs are numbered from 0. During the first `warmup_epochs` epochs the rate is
/// `lr_schedule(epoch) * (epoch + 1) / warmup_epochs` (linear warmup, Goyal et al. 2017), and
/// plateau tracking is paused.
#[derive(Debug, Clone, PartialEq)]
pub struct LrScheduler {
    schedule: LrSchedule,
    base_lr: f64,
    warmup_epochs: usize,
    total_epochs: usize,
    state: PlateauState,
}

impl LrScheduler {
    /// A scheduler for a run of `total_epochs` epochs starting at `base_lr`.
    pub fn new(
        schedule: LrSchedule,
        base_lr: f64,
        warmup_epochs: usize,
        total_epochs: usize,
    ) -> Result<Self> {
        ensure_config!(base_lr.is_finite() && base_lr > 0.0, "lr", base_lr, "a finite value > 0");
        ensure_config!(total_epochs >= 1, "epochs", total_epochs, "at least 1");
        ensure_config!(
            warmup_epochs <= total_epochs,
            "warmup_epochs",
            warmup_epochs,
            format!("at most epochs = {total_epochs}")
        );
        schedule.validate(base_lr)?;
        let state = PlateauState { lr: base_lr, best_loss: None, bad_epochs: 0 };
        Ok(Self { schedule, base_lr, warmup_epochs, total_epochs, state })
    }

    /// Continues from a saved plateau state (see [`LrScheduler::state`]).
    pub fn with_state(mut self, state: PlateauState) -> Result<Self> {
        ensure_config!(
            state.lr.is_finite() && state.lr > 0.0,
            "plateau lr",
            state.lr,
            "a finite value > 0"
        );
        self.state = state;
        Ok(self)
    }

    /// The plateau state, to save with a checkpoint.
    pub fn state(&self) -> PlateauState {
        self.state
    }

    /// The learning rate of epoch `epoch` (0-based).
    pub fn lr_for_epoch(&self, epoch: usize) -> f64 {
        let warmup = if epoch < self.warmup_epochs {
            (epoch + 1) as f64 / self.warmup_epochs as f64
        } else {
            1.0
        };
        let lr = match self.schedule {
            LrSchedule::Constant => self.base_lr,
            LrSchedule::Cosine { min_lr } => {
                let span = self.total_epochs.saturating_sub(self.warmup_epochs).max(1) as f64;
                let t = (epoch.saturating_sub(self.warmup_epochs) as f64).min(span);
                min_lr
                    + (self.base_lr - min_lr)
                        * 0.5
                        * (1.0 + (std::f64::consts::PI * t / span).cos())
            }
            LrSchedule::ReduceOnPlateau { .. } => self.state.lr,
        };
        warmup * lr
    }

    /// Records the monitored loss at the end of epoch `epoch` (0-based); returns whether the
    /// rate was reduced. Only [`LrSchedule::ReduceOnPlateau`] reacts, and not during warmup.
    /// A non-finite loss counts as no improvement.
    pub fn observe(&mut self, epoch: usize, loss: f64) -> bool {
        let LrSchedule::ReduceOnPlateau { factor, patience, min_lr } = self.schedule else {
            return false;
        };
        if epoch < self.warmup_epochs {
            return false;
        }
        let state = &mut self.state;
        if loss.is_finite() && state.best_loss.is_none_or(|best| loss < best) {
            state.best_loss = Some(loss);
            state.bad_epochs = 0;
            return false;
        }
        state.bad_epochs += 1;
        if state.bad_epochs < patience {
            return false;
        }
        state.bad_epochs = 0;
        let reduced = (state.lr * factor).max(min_lr);
        let changed = reduced < state.lr;
        state.lr = reduced;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn constant_is_constant_and_warmup_ramps_linearly() -> Result<()> {
        let s = LrScheduler::new(LrSchedule::Constant, 0.1, 0, 5)?;
        assert!((0..5).all(|e| s.lr_for_epoch(e) == 0.1));
        let s = LrScheduler::new(LrSchedule::Constant, 0.1, 4, 10)?;
        let lrs: Vec<f64> = (0..6).map(|e| s.lr_for_epoch(e)).collect();
        let expected = [0.025, 0.05, 0.075, 0.1, 0.1, 0.1];
        for (a, b) in lrs.iter().zip(expected) {
            assert!((a - b).abs() < 1e-15, "{lrs:?}");
        }
        Ok(())
    }

    #[test]
    fn cosine_goes_from_base_to_min_monotonically() -> Result<()> {
        let s = LrScheduler::new(LrSchedule::Cosine { min_lr: 0.01 }, 1.0, 2, 12)?;
        // After a 2-epoch warmup, 10 cosine epochs: t = 0..9 of T = 10.
        assert_eq!(s.lr_for_epoch(2), 1.0);
        let mid = s.lr_for_epoch(7); // t = 5: half way
        assert!((mid - (0.01 + 0.99 * 0.5)).abs() < 1e-12, "{mid}");
        let lrs: Vec<f64> = (2..12).map(|e| s.lr_for_epoch(e)).collect();
        assert!(lrs.windows(2).all(|w| w[1] < w[0]), "{lrs:?}");
        // Past the end (a resumed run made longer) it stays at min_lr.
        assert!((s.lr_for_epoch(40) - 0.01).abs() < 1e-15);
        assert!(s.lr_for_epoch(11) > 0.01);
        Ok(())
    }

    #[test]
    fn plateau_reduces_after_patience_down_to_the_floor() -> Result<()> {
        let schedule = LrSchedule::ReduceOnPlateau { factor: 0.5, patience: 2, min_lr: 0.03 };
        let mut s = LrScheduler::new(schedule, 0.1, 1, 20)?;
        // Warmup epoch: ignored even though the loss is the best ever.
        assert!(!s.observe(0, -100.0));
        assert_eq!(s.state().best_loss, None);
        assert!(!s.observe(1, 1.0));
        assert!(!s.observe(2, 0.9)); // improvement resets the count
        assert!(!s.observe(3, 0.95));
        assert!(s.observe(4, f64::NAN)); // second bad epoch: reduce
        assert_eq!(s.lr_for_epoch(5), 0.05);
        assert!(!s.observe(5, 0.91));
        assert!(s.observe(6, 0.92));
        assert_eq!(s.lr_for_epoch(7), 0.03); // 0.025 floored at 0.03
        assert!(!s.observe(7, 1.0));
        assert!(!s.observe(8, 1.0)); // at the floor: no further change
        assert_eq!(s.lr_for_epoch(9), 0.03);

        // The state carries over exactly.
        let resumed = LrScheduler::new(schedule, 0.1, 1, 20)?.with_state(s.state())?;
        assert_eq!(resumed, s);
        Ok(())
    }

    #[test]
    fn schedules_serialize_with_a_kind_tag_and_validate() -> Result<()> {
        let s = LrSchedule::ReduceOnPlateau { factor: 0.5, patience: 3, min_lr: 1e-6 };
        let json = serde_json::to_string(&s)?;
        assert_eq!(json, r#"{"kind":"reduce_on_plateau","factor":0.5,"patience":3,"min_lr":1e-6}"#);
        assert_eq!(serde_json::from_str::<LrSchedule>(&json)?, s);
        assert_eq!(
            serde_json::from_str::<LrSchedule>(r#"{"kind":"constant"}"#)?,
            LrSchedule::Constant
        );
        assert!(serde_json::from_str::<LrSchedule>(r#"{"kind":"cosine","min":0}"#).is_err());

        for bad in [
            LrSchedule::Cosine { min_lr: 0.2 },
            LrSchedule::Cosine { min_lr: -1.0 },
            LrSchedule::ReduceOnPlateau { factor: 1.0, patience: 1, min_lr: 0.0 },
            LrSchedule::ReduceOnPlateau { factor: 0.5, patience: 0, min_lr: 0.0 },
        ] {
            assert!(matches!(bad.validate(0.1), Err(Error::InvalidConfig { .. })), "{bad:?}");
        }
        assert!(LrScheduler::new(LrSchedule::Constant, 0.1, 6, 5).is_err());
        Ok(())
    }
}
