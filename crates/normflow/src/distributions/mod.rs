//! Probability distributions: base densities and the [`Flow`] type.
//!
//! All densities are per sample: `log_prob` maps `(B, event...)` to `(B,)`. When a context
//! `(B, C)` is given, sample `i` is drawn from (or evaluated under) the distribution
//! conditioned on context row `i`, so `sample(n, Some(ctx))` needs `ctx` to have `n` rows.

mod flow;

pub use flow::Flow;

use candle_core::Tensor;
use rand::RngCore;

use crate::{Error, Result};

/// A distribution with a tractable log-density that can be sampled.
pub trait Distribution: Send + Sync + std::fmt::Debug {
    /// `log p(x | context)`: `(B, event...) -> (B,)`.
    fn log_prob(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor>;

    /// `n` samples `(n, event...)`, drawn with `rng`.
    fn sample(&self, n: usize, context: Option<&Tensor>, rng: &mut dyn RngCore) -> Result<Tensor>;

    /// `n` samples with their log-densities; cheaper than sampling then evaluating for flows.
    fn sample_and_log_prob(
        &self,
        n: usize,
        context: Option<&Tensor>,
        rng: &mut dyn RngCore,
    ) -> Result<(Tensor, Tensor)> {
        let x = self.sample(n, context, rng)?;
        let lp = self.log_prob(&x, context)?;
        Ok((x, lp))
    }

    /// The shape of one sample (without the batch axis).
    fn event_shape(&self) -> Vec<usize>;

    /// Switches training / evaluation behaviour (see [`crate::Bijection::set_training`]).
    fn set_training(&self, _training: bool) {}

    /// Whether `log_prob` on a batch may be cut into row slices evaluated separately (and
    /// concurrently, see [`crate::parallel`]) with the same per-row results and no other effect
    /// (see [`crate::Bijection::rows_independent`]). The training loop then splits batches
    /// across cores. False unless an implementation promises it.
    fn rows_independent(&self) -> bool {
        false
    }

    /// Rows per training slice the model asks for (see
    /// [`crate::Bijection::training_slice_rows`]); `None`: the default.
    fn training_slice_rows(&self) -> Option<usize> {
        None
    }

    /// The regularization term of the last `log_prob` call, which training adds to the loss
    /// (see [`crate::Bijection::auxiliary_loss`]).
    fn auxiliary_loss(&self) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// Solver function evaluations of the last call (see
    /// [`crate::Bijection::function_evaluations`]).
    fn function_evaluations(&self) -> Option<crate::ode::FunctionEvaluations> {
        None
    }
}

impl<D: Distribution + ?Sized> Distribution for Box<D> {
    fn log_prob(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        (**self).log_prob(x, context)
    }
    fn sample(&self, n: usize, context: Option<&Tensor>, rng: &mut dyn RngCore) -> Result<Tensor> {
        (**self).sample(n, context, rng)
    }
    fn sample_and_log_prob(
        &self,
        n: usize,
        context: Option<&Tensor>,
        rng: &mut dyn RngCore,
    ) -> Result<(Tensor, Tensor)> {
        (**self).sample_and_log_prob(n, context, rng)
    }
    fn event_shape(&self) -> Vec<usize> {
        (**self).event_shape()
    }
    fn set_training(&self, training: bool) {
        (**self).set_training(training)
    }
    fn rows_independent(&self) -> bool {
        (**self).rows_independent()
    }
    fn training_slice_rows(&self) -> Option<usize> {
        (**self).training_slice_rows()
    }
    fn auxiliary_loss(&self) -> Result<Option<Tensor>> {
        (**self).auxiliary_loss()
    }
    fn function_evaluations(&self) -> Option<crate::ode::FunctionEvaluations> {
        (**self).function_evaluations()
    }
}

/// Checks that `x` is `(B, event_shape...)` and returns `B`.
pub fn check_event_shape(x: &Tensor, event_shape: &[usize], what: &str) -> Result<usize> {
    let dims = x.dims();
    if dims.len() != event_shape.len() + 1 || &dims[1..] != event_shape {
        let expected = std::iter::once("batch".to_string())
            .chain(event_shape.iter().map(|d| d.to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Error::shape(what, format!("({expected})"), dims));
    }
    Ok(dims[0])
}

/// Checks that a context, if given, has `n` rows, and that one is given iff `required`.
pub fn check_context(context: Option<&Tensor>, n: usize, required: bool) -> Result<()> {
    match (context, required) {
        (None, true) => {
            Err(Error::Context("this distribution is conditional: give a context".into()))
        }
        (Some(_), false) => {
            Err(Error::Context("this distribution is not conditional: it takes no context".into()))
        }
        (Some(c), true) if c.dim(0)? != n => Err(Error::Context(format!(
            "{n} samples requested but the context has {} rows (one sample per context row)",
            c.dim(0)?
        ))),
        _ => Ok(()),
    }
}

mod normal;
pub use normal::{StandardNormal, HALF_LOG_TWO_PI};

mod conditional_normal;
mod diag_normal;
mod mixture;
mod uniform;
pub use conditional_normal::ConditionalDiagNormal;
pub use diag_normal::DiagNormal;
pub use mixture::GaussianMixture;
pub use uniform::UniformBox;
