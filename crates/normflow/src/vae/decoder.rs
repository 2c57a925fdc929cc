//! The decoder `p(x | z)`: an MLP from the latent to the parameters of independent pixel
//! distributions.

use candle_core::Tensor;

use super::spec::{Likelihood, VaeSpec};
use crate::distributions::HALF_LOG_TWO_PI;
use crate::latent::{bernoulli_log_prob, sum_all_but_first};
use crate::nn::{Mlp, MlpConfig};
use crate::ops::softplus;
use crate::params::Params;
use crate::Result;

/// Smallest Gaussian log-scale: `log(1/256)`, one grey level. A narrower Gaussian would only
/// fit the dequantization noise.
pub const GAUSSIAN_MIN_LOG_SCALE: f64 = -5.545_177_444_479_562;

/// Decoder MLP `latent -> reversed hidden -> outputs` and its likelihood.
#[derive(Debug)]
pub struct Decoder {
    net: Mlp,
    likelihood: Likelihood,
    features: usize,
}

impl Decoder {
    /// Creates the decoder's tensors under `params` (`decoder.*`).
    pub fn new(params: &Params, spec: &VaeSpec) -> Result<Self> {
        let outputs = match spec.likelihood {
            Likelihood::Bernoulli => spec.features,
            Likelihood::Gaussian => 2 * spec.features,
        };
        let net = Mlp::new(
            &params.pp("decoder"),
            &MlpConfig {
                inputs: spec.latent,
                hidden: spec.hidden.iter().rev().copied().collect(),
                outputs,
                activation: spec.activation,
                zero_last: false,
            },
        )?;
        Ok(Self { net, likelihood: spec.likelihood, features: spec.features })
    }

    /// The raw decoder output for `z (N, latent)`: logits `(N, D)` (Bernoulli) or
    /// `[mean, raw log-scale]` `(N, 2D)` (Gaussian).
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        self.net.forward(z)
    }

    /// `log p(x | z)` for decoder outputs `out (N, ·)` and data `x (N, D)`, `(N,)`:
    ///
    /// - Bernoulli: `Σ_j x_j l_j - softplus(l_j)`;
    /// - Gaussian: `Σ_j -(x_j - m_j)²/(2 s_j²) - log s_j - log(2π)/2`, with
    ///   `log s = L + softplus(raw - L)`, `L` = [`GAUSSIAN_MIN_LOG_SCALE`].
    pub fn log_likelihood(&self, out: &Tensor, x: &Tensor) -> Result<Tensor> {
        match self.likelihood {
            Likelihood::Bernoulli => bernoulli_log_prob(out, x),
            Likelihood::Gaussian => {
                let d = self.features;
                let mean = out.narrow(1, 0, d)?;
                let log_s = gaussian_log_scale(&out.narrow(1, d, d)?)?;
                let scaled = ((x - mean)? * (log_s.neg()?.exp()?))?;
                let per_pixel = (((scaled.sqr()? * -0.5)? - log_s)? - HALF_LOG_TWO_PI)?;
                sum_all_but_first(&per_pixel)
            }
        }
    }

    /// The mean image `E[x | z]` for decoder outputs `out`: `sigmoid(logits)` or the Gaussian
    /// mean clamped to `[0, 1]`, `(N, D)`.
    pub fn mean(&self, out: &Tensor) -> Result<Tensor> {
        match self.likelihood {
            Likelihood::Bernoulli => crate::ops::sigmoid(out),
            Likelihood::Gaussian => Ok(out.narrow(1, 0, self.features)?.clamp(0.0, 1.0)?),
        }
    }
}

fn gaussian_log_scale(raw: &Tensor) -> Result<Tensor> {
    Ok((softplus(&(raw - GAUSSIAN_MIN_LOG_SCALE)?)? + GAUSSIAN_MIN_LOG_SCALE)?)
}
