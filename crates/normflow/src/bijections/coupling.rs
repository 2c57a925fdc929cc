//! Coupling layers: NICE's additive coupling (Dinh et al. 2014) and RealNVP's affine coupling
//! (Dinh et al. 2016), on vectors with any binary mask.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::affine_op::affine_forward;
use super::affine_params::log_scale;
use super::{zero_ladj, Bijection};
use crate::nn::{Activation, Mlp, MlpConfig};
use crate::params::Params;
use crate::{ensure_config, Error, Result};

/// Configuration of a coupling layer ([`AdditiveCoupling`], [`AffineCoupling`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CouplingConfig {
    /// One entry per feature: `true` = the feature passes through unchanged and conditions the
    /// others (set `A`), `false` = it is transformed (set `B`). At least one of each.
    /// [`alternating_mask`] and [`half_mask`] build the usual ones.
    pub mask: Vec<bool>,
    /// Hidden widths of the conditioner MLP (may be empty: an affine conditioner).
    pub hidden: Vec<usize>,
    /// Width `C` of the context, concatenated to the conditioner's input; 0 for none.
    #[serde(default)]
    pub context_features: usize,
    /// Hidden non-linearity of the conditioner.
    #[serde(default)]
    pub activation: Activation,
}

impl CouplingConfig {
    /// A config with the given mask and hidden widths, no context, ReLU.
    pub fn new(mask: Vec<bool>, hidden: Vec<usize>) -> Self {
        Self { mask, hidden, context_features: 0, activation: Activation::Relu }
    }

    /// Checks the mask (at least one identity and one transformed feature) and the widths.
    pub fn validate(&self) -> Result<()> {
        let shown = || format!("{:?}", self.mask);
        ensure_config!(
            self.mask.iter().any(|&m| m),
            "mask",
            shown(),
            "needs at least one `true` (identity) feature to condition on"
        );
        ensure_config!(
            self.mask.iter().any(|&m| !m),
            "mask",
            shown(),
            "needs at least one `false` (transformed) feature, or the layer is the identity"
        );
        if let Some(w) = self.hidden.iter().find(|&&w| w == 0) {
            return Err(Error::config("hidden", w, "hidden widths must be at least 1"));
        }
        Ok(())
    }
}

/// The mask `[i % 2 == parity % 2 for i in 0..d]`: identity features at even indices when
/// `parity` is even, at odd ones otherwise. Alternating `parity` between layers (e.g. passing the
/// layer index) transforms every feature. Valid (for a coupling layer) when `d >= 2`.
pub fn alternating_mask(d: usize, parity: usize) -> Vec<bool> {
    (0..d).map(|i| i % 2 == parity % 2).collect()
}

/// The mask whose identity features are the first `d / 2` (rounded down) when `first_half`,
/// the remaining ones otherwise: the two choices are complements. Valid when `d >= 2`.
pub fn half_mask(d: usize, first_half: bool) -> Vec<bool> {
    (0..d).map(|i| (i < d / 2) == first_half).collect()
}

/// What both coupling layers share: the split by the mask, the conditioner, the merge.
#[derive(Debug, Clone)]
pub(super) struct CouplingCore {
    features: usize,
    context_features: usize,
    /// Indices of the identity features `A`, in index order, then of the transformed ones `B`.
    identity: Tensor,
    transformed: Tensor,
    /// `order = A ++ B`, and the permutation that undoes it: `cat[x_A, x_B][:, inverse] = x`.
    pub(super) order: Vec<usize>,
    inverse: Tensor,
    n_transformed: usize,
    params_per_feature: usize,
    conditioner: Mlp,
}

impl CouplingCore {
    pub(super) fn new(
        params: &Params,
        config: &CouplingConfig,
        params_per_feature: usize,
    ) -> Result<Self> {
        config.validate()?;
        let idx = |want: bool| -> Vec<usize> {
            config.mask.iter().enumerate().filter(|(_, &m)| m == want).map(|(i, _)| i).collect()
        };
        let (a, b) = (idx(true), idx(false));
        let order: Vec<usize> = a.iter().chain(&b).copied().collect();
        let mut inverse = vec![0u32; order.len()];
        for (k, &f) in order.iter().enumerate() {
            inverse[f] = k as u32;
        }
        let dev = params.device();
        let as_index = |v: &[usize]| -> Result<Tensor> {
            Ok(Tensor::new(v.iter().map(|&i| i as u32).collect::<Vec<_>>(), dev)?)
        };
        let conditioner = Mlp::new(
            &params.pp("conditioner"),
            &MlpConfig {
                inputs: a.len() + config.context_features,
                hidden: config.hidden.clone(),
                outputs: b.len() * params_per_feature,
                activation: config.activation,
                zero_last: true,
            },
        )?;
        Ok(Self {
            features: config.mask.len(),
            context_features: config.context_features,
            identity: as_index(&a)?,
            transformed: as_index(&b)?,
            inverse: Tensor::new(inverse, dev)?,
            n_transformed: b.len(),
            order,
            params_per_feature,
            conditioner,
        })
    }

    /// `x (B, D) -> (x_A, x_B, params (B, |B|, P))`, the params computed from `x_A` and context.
    pub(super) fn split(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let batch = match x.dims() {
            &[b, d] if d == self.features => b,
            dims => {
                return Err(Error::shape(
                    "coupling input",
                    format!("(batch, {})", self.features),
                    dims,
                ))
            }
        };
        let x_a = x.index_select(&self.identity, 1)?;
        let x_b = x.index_select(&self.transformed, 1)?;
        let input = if self.context_features > 0 {
            let c = context.ok_or_else(|| {
                Error::Context(format!(
                    "this coupling layer is conditional: give a context of shape (batch, {})",
                    self.context_features
                ))
            })?;
            if c.dims() != [batch, self.context_features] {
                return Err(Error::shape(
                    "coupling context",
                    format!("({batch}, {})", self.context_features),
                    c.dims(),
                ));
            }
            Tensor::cat(&[&x_a, c], 1)?
        } else {
            x_a.clone()
        };
        let params = self.conditioner.forward(&input)?.reshape((
            batch,
            self.n_transformed,
            self.params_per_feature,
        ))?;
        Ok((x_a, x_b, params))
    }

    /// `(x_A, y_B) -> y` with the features back in their original places.
    pub(super) fn merge(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(Tensor::cat(&[a, b], 1)?.index_select(&self.inverse, 1)?)
    }
}

fn param(params: &Tensor, p: usize) -> Result<Tensor> {
    Ok(params.narrow(2, p, 1)?.squeeze(2)?)
}

/// NICE's additive coupling layer (Dinh et al. 2014, "NICE: Non-linear Independent Components
/// Estimation").
///
/// ```text
/// z_A = x_A,   z_B = x_B + t(x_A, context),   log|det dz/dx| = 0
/// ```
///
/// `A` are the features where the mask is `true`, `B` the others; `t` is an [`Mlp`] whose last
/// layer starts at zero, so the layer starts as the identity. The Jacobian is triangular in the
/// order `A` then `B` (each in index order).
///
/// # Shapes
/// `x: (B, D)`, `context: (B, C)`; ladj `(B,)`. An unconditional layer ignores a context.
#[derive(Debug, Clone)]
pub struct AdditiveCoupling {
    core: CouplingCore,
}

impl AdditiveCoupling {
    /// Builds the conditioner under `params` (tensors `conditioner.layers.*`).
    pub fn new(params: &Params, config: &CouplingConfig) -> Result<Self> {
        Ok(Self { core: CouplingCore::new(params, config, 1)? })
    }
}

impl Bijection for AdditiveCoupling {
    fn forward_and_ladj(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (x_a, x_b, p) = self.core.split(x, context)?;
        let z_b = (x_b + param(&p, 0)?)?;
        Ok((self.core.merge(&x_a, &z_b)?, zero_ladj(x)?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (z_a, z_b, p) = self.core.split(z, context)?;
        let x_b = (z_b - param(&p, 0)?)?;
        Ok((self.core.merge(&z_a, &x_b)?, zero_ladj(z)?))
    }

    fn jacobian_order(&self) -> Option<Vec<usize>> {
        Some(self.core.order.clone())
    }
}

/// RealNVP's affine coupling layer (Dinh et al. 2016, "Density estimation using Real NVP").
///
/// ```text
/// (t, raw) = MLP(x_A, context),   s = soft_clamp(raw, LOG_SCALE_BOUND)
/// z_A = x_A,   z_B = x_B * exp(s) + t,   log|det dz/dx| = sum(s)
/// ```
///
/// `A` are the features where the mask is `true`, `B` the others. The conditioner's last layer
/// starts at zero, so the layer starts as the identity; see
/// [`LOG_SCALE_BOUND`](super::LOG_SCALE_BOUND) for the clamp, shared with MAF. The Jacobian is
/// triangular in the order `A` then `B` (each in index order).
///
/// # Shapes
/// `x: (B, D)`, `context: (B, C)`; ladj `(B,)`. An unconditional layer ignores a context.
#[derive(Debug, Clone)]
pub struct AffineCoupling {
    core: CouplingCore,
}

impl AffineCoupling {
    /// Builds the conditioner under `params` (tensors `conditioner.layers.*`); its outputs are
    /// feature-major: `(t_b, raw_b)` for each transformed feature `b`.
    pub fn new(params: &Params, config: &CouplingConfig) -> Result<Self> {
        Ok(Self { core: CouplingCore::new(params, config, 2)? })
    }
}

impl Bijection for AffineCoupling {
    fn forward_and_ladj(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (x_a, x_b, p) = self.core.split(x, context)?;
        let (z_b, ladj) = affine_forward(&x_b, &p)?;
        Ok((self.core.merge(&x_a, &z_b)?, ladj))
    }

    fn inverse_and_ladj(&self, z: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (z_a, z_b, p) = self.core.split(z, context)?;
        let s = log_scale(&param(&p, 1)?)?;
        let x_b = ((z_b - param(&p, 0)?)? * s.neg()?.exp()?)?;
        Ok((self.core.merge(&z_a, &x_b)?, s.sum(1)?.neg()?))
    }

    fn jacobian_order(&self) -> Option<Vec<usize>> {
        Some(self.core.order.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;
    use candle_core::{DType, Device};

    #[test]
    fn masks_are_complementary_and_bad_masks_are_rejected() -> Result<()> {
        assert_eq!(alternating_mask(5, 0), [true, false, true, false, true]);
        assert_eq!(alternating_mask(5, 3), [false, true, false, true, false]);
        assert_eq!(half_mask(5, true), [true, true, false, false, false]);
        assert_eq!(half_mask(5, false), [false, false, true, true, true]);
        let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
        for mask in [vec![true; 3], vec![false; 3], vec![], half_mask(1, true)] {
            let config = CouplingConfig::new(mask, vec![4]);
            let result = AffineCoupling::new(&store.root(), &config);
            assert!(
                matches!(&result, Err(Error::InvalidConfig { name, .. }) if name == "mask"),
                "{result:?}"
            );
        }
        // The message says what is wrong, not only that something is.
        let config = CouplingConfig::new(vec![true; 4], vec![4]);
        match AdditiveCoupling::new(&store.root(), &config) {
            Err(e) => assert!(e.to_string().contains("transformed"), "{e}"),
            Ok(layer) => panic!("an all-true mask was accepted: {layer:?}"),
        }
        Ok(())
    }

    #[test]
    fn identity_features_pass_through_and_the_rest_round_trips() -> Result<()> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 2);
        let mask = vec![false, true, false, false, true];
        let config = CouplingConfig { context_features: 2, ..CouplingConfig::new(mask, vec![6]) };
        let layer = AffineCoupling::new(&store.root(), &config)?;
        store.perturb(0.5, 3)?;
        let mut rng = crate::random::rng_from_seed(0);
        let x = crate::random::standard_normal((4, 5), DType::F64, &Device::Cpu, &mut rng)?;
        let c = crate::random::standard_normal((4, 2), DType::F64, &Device::Cpu, &mut rng)?;
        let (z, ladj) = layer.forward_and_ladj(&x, Some(&c))?;
        let (xs, zs) = (x.to_vec2::<f64>()?, z.to_vec2::<f64>()?);
        for (xr, zr) in xs.iter().zip(&zs) {
            assert_eq!((xr[1], xr[4]), (zr[1], zr[4]));
            assert!((0..5).filter(|i| ![1, 4].contains(i)).all(|i| xr[i] != zr[i]));
        }
        let (x_back, ladj_inv) = layer.inverse_and_ladj(&z, Some(&c))?;
        assert!((x_back - &x)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12);
        assert!((ladj + ladj_inv)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12);
        assert_eq!(layer.jacobian_order(), Some(vec![1, 4, 0, 2, 3]));
        assert!(matches!(layer.forward_and_ladj(&x, None), Err(Error::Context(_))));
        Ok(())
    }
}
