//! Masked autoregressive flow layer (MAF, Papamakarios et al. 2017) and, as its inverse, the
//! inverse autoregressive flow layer (IAF, Kingma et al. 2016).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::affine_op::affine_forward;
use super::affine_params::{log_scale, LOG_SCALE_BOUND};
use super::Bijection;
use crate::nn::{Activation, Made, MadeConfig, MadeHiddenDegrees, MadeOrder};
use crate::params::Params;
use crate::Result;

/// Configuration of a [`MaskedAffineAutoregressive`] layer.
///
/// A separate struct rather than a [`MadeConfig`]: the layer fixes MADE's outputs per feature to
/// 2 (shift, raw log-scale), so that field cannot be set wrong. [`MafLayerConfig::made_config`]
/// gives the MADE it builds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MafLayerConfig {
    /// Number of features `D`.
    pub features: usize,
    /// Hidden widths of the MADE (at least one layer).
    pub hidden: Vec<usize>,
    /// Width `C` of the context; 0 for an unconditional layer.
    #[serde(default)]
    pub context_features: usize,
    /// The autoregressive order.
    #[serde(default)]
    pub order: MadeOrder,
    /// How MADE's hidden units get their degrees.
    #[serde(default)]
    pub hidden_degrees: MadeHiddenDegrees,
    /// Residual connections between equal-width hidden layers of the MADE.
    #[serde(default)]
    pub residual: bool,
    /// Hidden non-linearity of the MADE.
    #[serde(default)]
    pub activation: Activation,
}

impl MafLayerConfig {
    /// `features` features, the given hidden widths, and MADE's defaults for everything else.
    pub fn new(features: usize, hidden: Vec<usize>) -> Self {
        Self {
            features,
            hidden,
            context_features: 0,
            order: MadeOrder::Natural,
            hidden_degrees: MadeHiddenDegrees::Cyclic,
            residual: false,
            activation: Activation::Relu,
        }
    }

    /// The MADE conditioner's config: this one with 2 outputs per feature.
    pub fn made_config(&self) -> MadeConfig {
        MadeConfig {
            features: self.features,
            hidden: self.hidden.clone(),
            context_features: self.context_features,
            outputs_per_feature: 2,
            order: self.order.clone(),
            hidden_degrees: self.hidden_degrees,
            residual: self.residual,
            activation: self.activation,
        }
    }

    /// Checks every field (see [`MadeConfig::validate`]).
    pub fn validate(&self) -> Result<()> {
        self.made_config().validate()
    }
}

/// One MAF layer: an affine autoregressive map conditioned by a [`Made`] network
/// (Papamakarios et al. 2017, "Masked Autoregressive Flow for Density Estimation").
///
/// ```text
/// forward (data -> latent, one MADE pass):
///     (t, raw) = MADE(x, context),  s = soft_clamp(raw, LOG_SCALE_BOUND)
///     z = x * exp(s) + t,           log|det dz/dx| = sum_i s_i
/// inverse (latent -> data, D MADE passes):
///     x_i = (z_i - t_i(x_<i)) * exp(-s_i(x_<i)),  log|det dx/dz| = -sum_i s_i
/// ```
///
/// `t_i` and `s_i` depend only on the features before `i` in the MADE order, so the Jacobian is
/// triangular in that order ([`Bijection::jacobian_order`]) with diagonal `exp(s)`. The layer
/// starts as the identity (MADE's last layer is zero). See
/// [`LOG_SCALE_BOUND`](super::LOG_SCALE_BOUND) for the clamp.
///
/// The inverse runs MADE `D` times: after pass `k`, the features at positions `0..=k` are exact
/// (each depends only on earlier positions, already exact after pass `k - 1`), so after `D`
/// passes all are. Every pass recomputes every feature rather than committing one: the result
/// is the same, the graph stays differentiable, and no masking is needed.
///
/// **IAF** (Kingma et al. 2016) is `Inverse::new(MaskedAffineAutoregressive::new(..)?)`: fast
/// sampling (one pass), sequential density evaluation.
///
/// # Shapes
/// `x: (B, D)`, `context: (B, C)`; ladj `(B,)`. An unconditional layer ignores a context.
#[derive(Debug, Clone)]
pub struct MaskedAffineAutoregressive {
    made: Made,
}

impl MaskedAffineAutoregressive {
    /// Builds the MADE conditioner under `params` (tensors `made.*`).
    pub fn new(params: &Params, config: &MafLayerConfig) -> Result<Self> {
        let made = Made::new(&params.pp("made"), &config.made_config())?;
        Ok(Self { made })
    }

    /// The conditioner.
    pub fn made(&self) -> &Made {
        &self.made
    }

    /// The shift `t` and log-scale `s`, each `(B, D)`, computed from `x`.
    fn shift_and_log_scale(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let params = self.made.forward(x, context)?;
        Ok((Made::select(&params, 0)?, log_scale(&Made::select(&params, 1)?)?))
    }
}

impl Bijection for MaskedAffineAutoregressive {
    fn forward_and_ladj(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        affine_forward(x, &self.made.forward(x, context)?)
    }

    fn inverse_and_ladj(&self, z: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        // Without gradients, the degree-by-degree inverse computes every MADE unit once instead
        // of D times (see `Made::sequential_inverse`).
        if !crate::inference::gradients_enabled() {
            let invert = |z: f64, p: &[f64]| {
                let s = soft_clamp_scalar(p[1], LOG_SCALE_BOUND);
                ((z - p[0]) * (-s).exp(), -s)
            };
            if let Some(result) = self.made.sequential_inverse(z, context, &invert)? {
                return Ok(result);
            }
        }
        // The starting value is never read by the exact positions (see the type docs).
        let mut x = z.zeros_like()?;
        let mut s = z.zeros_like()?;
        // Without gradients, each pass's graph is dropped as soon as the next pass starts.
        let keep_graph = crate::inference::gradients_enabled();
        for _ in 0..self.made.features() {
            let (t, s_k) = self.shift_and_log_scale(&x, context)?;
            x = ((z - t)? * s_k.neg()?.exp()?)?;
            s = s_k;
            if !keep_graph {
                x = x.detach();
                s = s.detach();
            }
        }
        Ok((x, s.sum(1)?.neg()?))
    }

    fn jacobian_order(&self) -> Option<Vec<usize>> {
        Some(self.made.order().to_vec())
    }
}

/// [`crate::ops::soft_clamp`] on one value: `v / (1 + |v| / bound)`.
fn soft_clamp_scalar(v: f64, bound: f64) -> f64 {
    v / (1.0 + v.abs() / bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bijections::Inverse;
    use crate::{Error, ParamStore};
    use candle_core::{DType, Device};

    /// The degree-by-degree inverse (inference mode) gives the values of the D full passes, for
    /// f32 and f64, with and without context, residual blocks, random degrees, tanh.
    #[test]
    fn inverse_without_gradients_gives_the_same_values() -> Result<()> {
        let configs = [
            MafLayerConfig::new(4, vec![8]),
            MafLayerConfig {
                hidden_degrees: MadeHiddenDegrees::Sorted,
                context_features: 2,
                ..MafLayerConfig::new(5, vec![24, 24])
            },
            MafLayerConfig::new(1, vec![4]),
            MafLayerConfig { context_features: 2, ..MafLayerConfig::new(1, vec![4]) },
            MafLayerConfig {
                context_features: 3,
                order: MadeOrder::Random,
                ..MafLayerConfig::new(5, vec![40, 24])
            },
            MafLayerConfig {
                residual: true,
                hidden_degrees: MadeHiddenDegrees::Random,
                activation: Activation::Tanh,
                context_features: 2,
                ..MafLayerConfig::new(6, vec![12, 12, 12])
            },
        ];
        for config in &configs {
            for dtype in [DType::F32, DType::F64] {
                let store = ParamStore::new(dtype, &Device::Cpu, 4);
                let maf = MaskedAffineAutoregressive::new(&store.root(), config)?;
                store.perturb(0.5, 2)?;
                let mut rng = crate::random::rng_from_seed(1);
                let z = crate::random::standard_normal(
                    (2 * crate::nn::dense::MIN_PIECE_ROWS + 5, config.features),
                    dtype,
                    &Device::Cpu,
                    &mut rng,
                )?;
                let c =
                    crate::random::standard_normal((z.dim(0)?, 3), dtype, &Device::Cpu, &mut rng)?;
                let c = c.narrow(1, 0, config.context_features.max(1))?;
                let c = (config.context_features > 0).then_some(c);
                let (x, ladj) = maf.inverse_and_ladj(&z, c.as_ref())?;
                let (x2, ladj2) =
                    crate::inference::without_gradients(|| maf.inverse_and_ladj(&z, c.as_ref()))?;
                let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
                for (a, b) in [(x, x2), (ladj, ladj2)] {
                    let scale = b.abs()?.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    let err =
                        (a - b)?.abs()?.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    assert!(err < tol * scale.max(1.0), "{config:?} {dtype:?}: {err} of {scale}");
                }
            }
        }
        Ok(())
    }

    fn round_trip(config: &MafLayerConfig) -> Result<()> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 4);
        let maf = MaskedAffineAutoregressive::new(&store.root(), config)?;
        store.perturb(0.5, 2)?;
        let mut rng = crate::random::rng_from_seed(1);
        let x = crate::random::standard_normal(
            (7, config.features),
            DType::F64,
            &Device::Cpu,
            &mut rng,
        )?;
        let c = crate::random::standard_normal((7, 2), DType::F64, &Device::Cpu, &mut rng)?;
        let c = (config.context_features > 0).then_some(c);
        let (z, ladj) = maf.forward_and_ladj(&x, c.as_ref())?;
        let (x_back, ladj_inv) = maf.inverse_and_ladj(&z, c.as_ref())?;
        let err = (x_back - &x)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(err < 1e-10, "round trip error {err}");
        let ladj_err = (ladj.clone() + ladj_inv)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(ladj_err < 1e-10, "ladj mismatch {ladj_err}");
        let moved = (z - &x)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(moved > 1e-2, "the perturbed layer should not be the identity");
        // IAF: the same map, directions swapped.
        let iaf = Inverse::new(maf);
        let (x_iaf, ladj_iaf) = iaf.inverse_and_ladj(&x, c.as_ref())?;
        let (z_check, _) = iaf.inner().forward_and_ladj(&x, c.as_ref())?;
        assert_eq!(x_iaf.to_vec2::<f64>()?, z_check.to_vec2::<f64>()?);
        assert_eq!(ladj_iaf.to_vec1::<f64>()?, ladj.to_vec1::<f64>()?);
        Ok(())
    }

    #[test]
    fn inverse_matches_forward_for_one_and_five_features() -> Result<()> {
        round_trip(&MafLayerConfig { context_features: 2, ..MafLayerConfig::new(1, vec![4]) })?;
        round_trip(&MafLayerConfig::new(1, vec![4]))?;
        round_trip(&MafLayerConfig {
            order: MadeOrder::Random,
            residual: true,
            context_features: 2,
            activation: Activation::Tanh,
            ..MafLayerConfig::new(5, vec![8, 8])
        })?;
        round_trip(&MafLayerConfig::new(5, vec![8, 6]))
    }

    #[test]
    fn starts_as_the_identity_and_rejects_bad_configs() -> Result<()> {
        let store = ParamStore::new(DType::F32, &Device::Cpu, 0);
        let maf = MaskedAffineAutoregressive::new(&store.root(), &MafLayerConfig::new(3, vec![4]))?;
        let x = Tensor::new(&[[1f32, -2.0, 3.0]], &Device::Cpu)?;
        let (z, ladj) = maf.forward_and_ladj(&x, None)?;
        assert_eq!(z.to_vec2::<f32>()?, x.to_vec2::<f32>()?);
        assert_eq!(ladj.to_vec1::<f32>()?, [0.0]);
        let bad = MafLayerConfig {
            order: MadeOrder::Given(vec![0, 2]),
            ..MafLayerConfig::new(3, vec![4])
        };
        let result = MaskedAffineAutoregressive::new(&store.root().pp("bad"), &bad);
        assert!(matches!(result, Err(Error::InvalidConfig { .. })), "{result:?}");
        Ok(())
    }
}
