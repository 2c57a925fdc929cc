//! A coupling layer with any element-wise [`Transformer`] (Dinh et al. 2016 for the affine case;
//! Durkan et al. 2019, "Neural Spline Flows", for splines).

use std::sync::Arc;

use candle_core::Tensor;

use super::coupling::CouplingCore;
use super::transformer::Transformer;
use super::{Bijection, CouplingConfig};
use crate::params::Params;
use crate::Result;

/// Coupling layer whose transformed half goes through a [`Transformer`]:
///
/// ```text
/// theta = MLP(x_A, context)  (|B| x P raw parameters),   z_A = x_A,   z_B = tau(x_B; theta)
/// log|det dz/dx| = sum_{b in B} log|d tau / dx_b|
/// ```
///
/// `A` are the features where the mask is `true`, `B` the others. The conditioner's last layer
/// starts at zero, so the layer starts as the transformer's zero-parameter map (the identity for
/// the library's transformers). The Jacobian is triangular in the order `A` then `B`.
///
/// # Shapes
/// `x: (B, D)`, `context: (B, C)`; ladj `(B,)`. An unconditional layer ignores a context.
#[derive(Debug, Clone)]
pub struct TransformerCoupling {
    core: CouplingCore,
    transformer: Arc<dyn Transformer>,
}

impl TransformerCoupling {
    /// Builds the conditioner under `params` (tensors `conditioner.layers.*`); its outputs are
    /// feature-major: the `P` raw parameters of each transformed feature in turn.
    pub fn new(
        params: &Params,
        config: &CouplingConfig,
        transformer: Arc<dyn Transformer>,
    ) -> Result<Self> {
        let core = CouplingCore::new(params, config, transformer.params_per_feature())?;
        Ok(Self { core, transformer })
    }

    /// The element-wise map.
    pub fn transformer(&self) -> &dyn Transformer {
        self.transformer.as_ref()
    }
}

impl Bijection for TransformerCoupling {
    fn forward_and_ladj(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (x_a, x_b, raw) = self.core.split(x, context)?;
        let (z_b, ladj) = self.transformer.forward(&x_b, &raw)?;
        Ok((self.core.merge(&x_a, &z_b)?, ladj.sum(1)?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (z_a, z_b, raw) = self.core.split(z, context)?;
        let (x_b, ladj) = self.transformer.inverse(&z_b, &raw)?;
        Ok((self.core.merge(&z_a, &x_b)?, ladj.sum(1)?))
    }

    fn jacobian_order(&self) -> Option<Vec<usize>> {
        Some(self.core.order.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bijections::{alternating_mask, AffineCoupling, AffineTransformer};
    use crate::ParamStore;
    use candle_core::{DType, Device};

    /// With the affine transformer the generic layer is RealNVP's layer, parameter for parameter.
    #[test]
    fn affine_transformer_coupling_equals_affine_coupling() -> Result<()> {
        let config = CouplingConfig::new(alternating_mask(5, 1), vec![6]);
        let (s1, s2) = (
            ParamStore::new(DType::F64, &Device::Cpu, 4),
            ParamStore::new(DType::F64, &Device::Cpu, 4),
        );
        let generic = TransformerCoupling::new(&s1.root(), &config, Arc::new(AffineTransformer))?;
        let affine = AffineCoupling::new(&s2.root(), &config)?;
        s1.perturb(0.5, 9)?;
        s2.perturb(0.5, 9)?;
        let x = crate::random::standard_normal(
            (4, 5),
            DType::F64,
            &Device::Cpu,
            &mut crate::random::rng_from_seed(2),
        )?;
        let (z1, l1) = generic.forward_and_ladj(&x, None)?;
        let (z2, l2) = affine.forward_and_ladj(&x, None)?;
        assert!((z1 - z2)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-14);
        assert!((l1 - l2)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-14);
        Ok(())
    }
}
