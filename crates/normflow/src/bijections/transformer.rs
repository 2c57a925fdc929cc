//! Element-wise monotone transformers: the part of a coupling or autoregressive layer that maps
//! each feature given its parameters (Papamakarios et al. 2021, "Normalizing Flows for
//! Probabilistic Modeling and Inference", section 3.1: transformer vs conditioner).
//!
//! A conditioner (an MLP in a coupling layer, a MADE in an autoregressive one) outputs `P` raw,
//! unconstrained numbers per transformed feature; a [`Transformer`] turns them into a strictly
//! increasing scalar map and applies it. Affine maps (MAF, RealNVP) are the simplest case;
//! splines, NAF and polynomial flows are others. The generic layers
//! [`TransformerCoupling`](super::TransformerCoupling),
//! [`TransformerAutoregressive`](super::TransformerAutoregressive) and [`ElementwiseTransformer`]
//! put any transformer in a flow.

use std::sync::Arc;

use candle_core::Tensor;

use super::affine_params::log_scale;
use super::{sum_per_sample, Bijection};
use crate::params::{Init, Params};
use crate::{Error, Result};

/// A strictly increasing element-wise map `y = tau(x; theta)` with `P` raw parameters per element.
///
/// # Contract
/// - Shapes: `x`, `y`: `(B, D)`; `raw`: `(B, D, P)`, the unconstrained conditioner outputs for
///   each element (feature-major: the `P` numbers of feature `d` are `raw[:, d, :]`). Both maps
///   return the element-wise `log|d tau / dx|` of shape `(B, D)` (the layer sums it).
/// - `forward` is `tau` (data -> latent), `inverse` is `tau^{-1}` (latent -> data) with its own
///   element-wise log-derivative `log|d tau^{-1}/dy| = -log|d tau/dx|`.
/// - All-zero raw parameters give the identity map, or the closest map the family allows
///   (conditioners start with a zero last layer, so flows start at or near the identity).
/// - Values and gradients are finite for every finite input, far outside any bounded region
///   included, and for every finite `raw`.
/// - Works in any float dtype; never panics on input values.
pub trait Transformer: Send + Sync + std::fmt::Debug {
    /// Number `P` of raw parameters per element.
    fn params_per_feature(&self) -> usize;

    /// `x (B, D), raw (B, D, P) -> (y, log|dy/dx|)`, both `(B, D)`.
    fn forward(&self, x: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)>;

    /// `y (B, D), raw (B, D, P) -> (x, log|dx/dy|)`, both `(B, D)`.
    fn inverse(&self, y: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)>;
}

/// Checks `raw`'s shape against `x (B, D)` and `P`; layers and transformers call it so that a
/// mismatch names both shapes instead of failing inside a broadcast.
pub fn check_raw_shape(x: &Tensor, raw: &Tensor, params_per_feature: usize) -> Result<()> {
    let (b, d) = x.dims2()?;
    if raw.dims() != [b, d, params_per_feature] {
        return Err(Error::shape(
            "transformer parameters",
            format!("({b}, {d}, {params_per_feature})"),
            raw.dims(),
        ));
    }
    Ok(())
}

/// The `p`-th raw parameter of every element: `(B, D, P) -> (B, D)`.
pub fn raw_param(raw: &Tensor, p: usize) -> Result<Tensor> {
    Ok(raw.narrow(2, p, 1)?.squeeze(2)?)
}

/// The affine transformer of MAF and RealNVP, as a [`Transformer`]: `P = 2` raw parameters
/// `(t, r)` per element,
///
/// ```text
/// s = soft_clamp(r, LOG_SCALE_BOUND),   y = x exp(s) + t,   log|dy/dx| = s
/// ```
///
/// The reference transformer for the generic layers' tests: with it, [`TransformerCoupling`]
/// and [`TransformerAutoregressive`] compute exactly what `AffineCoupling` and
/// `MaskedAffineAutoregressive` do.
///
/// [`TransformerCoupling`]: super::TransformerCoupling
/// [`TransformerAutoregressive`]: super::TransformerAutoregressive
#[derive(Debug, Clone, Copy, Default)]
pub struct AffineTransformer;

impl Transformer for AffineTransformer {
    fn params_per_feature(&self) -> usize {
        2
    }

    fn forward(&self, x: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        check_raw_shape(x, raw, 2)?;
        let s = log_scale(&raw_param(raw, 1)?)?;
        let y = ((x * s.exp()?)? + raw_param(raw, 0)?)?;
        Ok((y, s))
    }

    fn inverse(&self, y: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        check_raw_shape(y, raw, 2)?;
        let s = log_scale(&raw_param(raw, 1)?)?;
        let x = ((y - raw_param(raw, 0)?)? * s.neg()?.exp()?)?;
        Ok((x, s.neg()?))
    }
}

/// A transformer applied to every feature with its own learned, unconditioned parameters:
/// `z_d = tau(x_d; theta_d)`, `theta` a `(D, P)` parameter starting at zero (the identity, see
/// the [`Transformer`] contract). Diagonal Jacobian.
///
/// Useful on its own (a learned marginal transform, e.g. a spline on every feature) and as the
/// simplest way to put a transformer through the checker.
///
/// # Shapes
/// `x: (B, D)`; ladj `(B,)`.
#[derive(Debug, Clone)]
pub struct ElementwiseTransformer {
    transformer: Arc<dyn Transformer>,
    raw: Tensor,
}

impl ElementwiseTransformer {
    /// Creates the raw parameters `raw` of shape `(features, P)` under `params`.
    pub fn new(
        params: &Params,
        features: usize,
        transformer: Arc<dyn Transformer>,
    ) -> Result<Self> {
        let p = transformer.params_per_feature();
        let raw = params.param("raw", &[features, p], Init::Const(0.0))?;
        Ok(Self { transformer, raw })
    }

    fn raw_for(&self, x: &Tensor) -> Result<Tensor> {
        let (b, d) = x.dims2()?;
        let (features, p) = self.raw.dims2()?;
        if d != features {
            return Err(Error::shape(
                "element-wise transformer input",
                format!("(batch, {features})"),
                x.dims(),
            ));
        }
        Ok(self.raw.unsqueeze(0)?.broadcast_as((b, d, p))?)
    }
}

impl Bijection for ElementwiseTransformer {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (z, ladj) = self.transformer.forward(x, &self.raw_for(x)?)?;
        Ok((z, sum_per_sample(&ladj)?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (x, ladj) = self.transformer.inverse(z, &self.raw_for(z)?)?;
        Ok((x, sum_per_sample(&ladj)?))
    }

    fn jacobian_order(&self) -> Option<Vec<usize>> {
        Some((0..self.raw.dim(0).unwrap_or(0)).collect())
    }
}
