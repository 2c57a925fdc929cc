//! Monte Carlo estimates from the importance weights `w = p~(z) / q(z)`, `z ~ q`: the ELBO, the
//! importance-weighted `log Z` and the effective sample size.

use candle_core::{DType, Device};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::target::Target;
use crate::distributions::Distribution;
use crate::inference::without_gradients;
use crate::{ensure_config, Error, Result};

/// Estimates from `K` samples of `q` with log-weights `log w_k = log p~(z_k) - log q(z_k)`:
///
/// ```text
/// elbo   = mean_k log w_k                          <= log Z   (Jensen)
/// log_z  = log(sum_k w_k / K)                     (importance-weighted; its expectation is
///                                                  the IWAE bound, <= log Z, -> log Z as K grows)
/// ess    = (sum_k w_k)^2 / sum_k w_k^2            (Kish's effective sample size, in [1, K])
/// ```
///
/// Always `elbo <= log_z` for the same samples, and all three are exact (`elbo = log_z =
/// log Z`, `ess = K`) when `q` is the normalized target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ViEstimates {
    /// The number of samples `K`.
    pub samples: usize,
    /// Mean log-weight: the ELBO estimate.
    pub elbo: f64,
    /// Standard error of `elbo` (sample standard deviation over `sqrt(K)`).
    pub elbo_stderr: f64,
    /// Importance-weighted estimate of `log Z`.
    pub log_z: f64,
    /// Effective sample size, in `[1, K]`.
    pub ess: f64,
}

impl ViEstimates {
    /// The estimates from log-weights; `-inf` weights (zero target density) count, NaN or
    /// `+inf` ones are an error, and so is an empty or all-zero set.
    pub fn from_log_weights(log_w: &[f64]) -> Result<Self> {
        let k = log_w.len();
        ensure_config!(k >= 1, "samples", k, "at least 1");
        let log_z = log_sum_exp(log_w)? - (k as f64).ln();
        if log_z == f64::NEG_INFINITY {
            return Err(Error::NonFinite(
                "every sample has zero target density: the estimates are undefined".into(),
            ));
        }
        let twice: Vec<f64> = log_w.iter().map(|v| 2.0 * v).collect();
        let ess = (2.0 * log_sum_exp(log_w)? - log_sum_exp(&twice)?).exp();
        let n = k as f64;
        let elbo = log_w.iter().sum::<f64>() / n;
        let elbo_stderr = if k > 1 && elbo.is_finite() {
            let var = log_w.iter().map(|v| (v - elbo).powi(2)).sum::<f64>() / (n - 1.0);
            (var / n).sqrt()
        } else {
            f64::NAN
        };
        Ok(Self { samples: k, elbo, elbo_stderr, log_z, ess })
    }

    /// `ess / K`, in `(0, 1]`.
    pub fn ess_fraction(&self) -> f64 {
        self.ess / self.samples as f64
    }
}

/// `log w_k = log p~(z_k) - log q(z_k)` of `samples` draws `z_k ~ q`, drawn with `rng` in
/// batches of `batch_size`, without gradients. `q` must be unconditional.
pub fn log_weights(
    q: &dyn Distribution,
    target: &dyn Target,
    samples: usize,
    batch_size: usize,
    rng: &mut dyn RngCore,
) -> Result<Vec<f64>> {
    ensure_config!(samples >= 1, "samples", samples, "at least 1");
    ensure_config!(batch_size >= 1, "batch_size", batch_size, "at least 1");
    check_dims(q, target)?;
    let mut out = Vec::with_capacity(samples);
    without_gradients(|| -> Result<()> {
        let mut left = samples;
        while left > 0 {
            let n = left.min(batch_size);
            let (z, log_q) = q.sample_and_log_prob(n, None, rng)?;
            let log_w = (target.log_density(&z)? - log_q)?;
            out.extend(log_w.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.to_vec1::<f64>()?);
            left -= n;
        }
        Ok(())
    })?;
    Ok(out)
}

/// [`ViEstimates`] of `q` against `target` from `samples` draws (see [`log_weights`]).
pub fn estimate(
    q: &dyn Distribution,
    target: &dyn Target,
    samples: usize,
    batch_size: usize,
    rng: &mut dyn RngCore,
) -> Result<ViEstimates> {
    ViEstimates::from_log_weights(&log_weights(q, target, samples, batch_size, rng)?)
}

/// Checks that `q` draws vectors of the target's dimension.
pub(crate) fn check_dims(q: &dyn Distribution, target: &dyn Target) -> Result<()> {
    let shape = q.event_shape();
    if shape != [target.dim()] {
        return Err(Error::shape(
            "variational distribution's event",
            format!("({},) like the target", target.dim()),
            &shape,
        ));
    }
    Ok(())
}

/// `log sum_k exp(v_k)`, stable; `-inf` for an empty or all `-inf` input; an error for NaN or
/// `+inf` entries.
pub fn log_sum_exp(values: &[f64]) -> Result<f64> {
    if let Some(bad) = values.iter().find(|v| v.is_nan() || **v == f64::INFINITY) {
        return Err(Error::NonFinite(format!(
            "a log-weight or log-density is {bad}: the target or the flow produced an invalid value"
        )));
    }
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return Ok(f64::NEG_INFINITY);
    }
    Ok(max + values.iter().map(|v| (v - max).exp()).sum::<f64>().ln())
}
