//! What variational inference fits to: a log-density known up to an additive constant.

use candle_core::Tensor;

use crate::bijections::Support;
use crate::{Error, Result};

/// An unnormalized target density `p~(z) = Z p(z)` on `R^D` (or on a [`Support`]).
///
/// [`super::fit`] maximizes the ELBO `E_q[log p~(z) - log q(z)] = log Z - KL(q || p)`, which
/// needs only `log p~` and its gradient in `z` (the reparameterization trick of Rezende &
/// Mohamed 2015, "Variational Inference with Normalizing Flows").
pub trait Target: Send + Sync + std::fmt::Debug {
    /// The dimension `D` of `z`.
    fn dim(&self) -> usize;

    /// `log p~(z)`: `(B, D) -> (B,)`, in `z`'s dtype, differentiable in `z`. May be `-inf` where
    /// the density is zero; must not be NaN or `+inf`.
    fn log_density(&self, z: &Tensor) -> Result<Tensor>;

    /// Where the density is normalizable: a target that does not decay in some direction is
    /// defined on a bounded support, and the fitted flow must map onto it
    /// ([`crate::model::Model::with_support`]). `log_density` is only called on that support.
    fn support(&self) -> Support {
        Support::Real
    }

    /// `log Z`, when it is known (analytically or by numerical integration).
    fn log_normalizer(&self) -> Option<f64> {
        None
    }
}

/// Checks that `z` is `(B, dim)` and returns `B`.
pub(crate) fn check_points(z: &Tensor, dim: usize, what: &str) -> Result<usize> {
    if z.rank() != 2 || z.dim(1)? != dim {
        return Err(Error::shape(what, format!("(batch, {dim})"), z.dims()));
    }
    Ok(z.dim(0)?)
}

/// A [`Target`] from a closure `log p~: (B, D) -> (B,)`.
///
/// ```
/// use normflow::vi::{FnTarget, Target};
/// // An unnormalized standard normal in 2-D: log Z = log(2 pi).
/// let target = FnTarget::new(2, |z| Ok((z.sqr()?.sum(1)? * -0.5)?))
///     .with_log_normalizer((2.0 * std::f64::consts::PI).ln());
/// assert_eq!(target.dim(), 2);
/// ```
pub struct FnTarget<F> {
    dim: usize,
    f: F,
    support: Support,
    log_normalizer: Option<f64>,
}

impl<F> FnTarget<F>
where
    F: Fn(&Tensor) -> Result<Tensor> + Send + Sync,
{
    /// A target on `R^dim` with log-density `f`.
    pub fn new(dim: usize, f: F) -> Self {
        Self { dim, f, support: Support::Real, log_normalizer: None }
    }

    /// The same target, defined on `support`.
    pub fn with_support(self, support: Support) -> Self {
        Self { support, ..self }
    }

    /// The same target, with a known `log Z`.
    pub fn with_log_normalizer(self, log_z: f64) -> Self {
        Self { log_normalizer: Some(log_z), ..self }
    }
}

impl<F> std::fmt::Debug for FnTarget<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnTarget")
            .field("dim", &self.dim)
            .field("support", &self.support)
            .field("log_normalizer", &self.log_normalizer)
            .finish_non_exhaustive()
    }
}

impl<F> Target for FnTarget<F>
where
    F: Fn(&Tensor) -> Result<Tensor> + Send + Sync,
{
    fn dim(&self) -> usize {
        self.dim
    }

    fn log_density(&self, z: &Tensor) -> Result<Tensor> {
        let n = check_points(z, self.dim, "target log-density input")?;
        let out = (self.f)(z)?;
        if out.dims() != [n] {
            return Err(Error::shape("target log-density output", format!("({n},)"), out.dims()));
        }
        Ok(out)
    }

    fn support(&self) -> Support {
        self.support
    }

    fn log_normalizer(&self) -> Option<f64> {
        self.log_normalizer
    }
}
