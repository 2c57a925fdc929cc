//! An autoregressive layer with any element-wise [`Transformer`], conditioned by a MADE
//! (Papamakarios et al. 2017 for the affine case; Huang et al. 2018, "Neural Autoregressive
//! Flows", and Durkan et al. 2019, "Neural Spline Flows", for non-affine ones).

use std::sync::Arc;

use candle_core::Tensor;

use super::transformer::Transformer;
use super::{Bijection, MafLayerConfig};
use crate::nn::Made;
use crate::params::Params;
use crate::Result;

/// Autoregressive layer whose features go through a [`Transformer`]:
///
/// ```text
/// forward (data -> latent, one MADE pass):
///     theta = MADE(x, context)  (D x P raw parameters, theta_i depends on x_<i only)
///     z_i = tau(x_i; theta_i),   log|det dz/dx| = sum_i log|d tau / dx_i|
/// inverse (latent -> data, D MADE passes):
///     x_i = tau^{-1}(z_i; theta_i(x_<i))
/// ```
///
/// As in [`MaskedAffineAutoregressive`](super::MaskedAffineAutoregressive), the inverse runs the
/// MADE `D` times, each pass making one more position exact; without gradients each pass's graph
/// is dropped. The layer starts as the transformer's zero-parameter map (MADE's last layer is
/// zero). Wrapped in [`Inverse`](super::Inverse) it is the inverse-autoregressive form (fast
/// sampling).
///
/// # Shapes
/// `x: (B, D)`, `context: (B, C)`; ladj `(B,)`. An unconditional layer ignores a context.
#[derive(Debug, Clone)]
pub struct TransformerAutoregressive {
    made: Made,
    transformer: Arc<dyn Transformer>,
}

impl TransformerAutoregressive {
    /// Builds the MADE conditioner under `params` (tensors `made.*`) with the transformer's `P`
    /// outputs per feature; `config` gives everything else about the MADE.
    pub fn new(
        params: &Params,
        config: &MafLayerConfig,
        transformer: Arc<dyn Transformer>,
    ) -> Result<Self> {
        let made_config = crate::nn::MadeConfig {
            outputs_per_feature: transformer.params_per_feature(),
            ..config.made_config()
        };
        let made = Made::new(&params.pp("made"), &made_config)?;
        Ok(Self { made, transformer })
    }

    /// The element-wise map.
    pub fn transformer(&self) -> &dyn Transformer {
        self.transformer.as_ref()
    }
}

impl Bijection for TransformerAutoregressive {
    fn forward_and_ladj(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let raw = self.made.forward(x, context)?;
        let (z, ladj) = self.transformer.forward(x, &raw)?;
        Ok((z, ladj.sum(1)?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        // The starting value is never read by the exact positions.
        let mut x = z.zeros_like()?;
        let mut ladj = z.zeros_like()?;
        let keep_graph = crate::inference::gradients_enabled();
        for _ in 0..self.made.features() {
            let raw = self.made.forward(&x, context)?;
            (x, ladj) = self.transformer.inverse(z, &raw)?;
            if !keep_graph {
                x = x.detach();
                ladj = ladj.detach();
            }
        }
        Ok((x, ladj.sum(1)?))
    }

    fn jacobian_order(&self) -> Option<Vec<usize>> {
        Some(self.made.order().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bijections::{AffineTransformer, MaskedAffineAutoregressive};
    use crate::ParamStore;
    use candle_core::{DType, Device};

    /// With the affine transformer the generic layer is MAF's layer, both ways.
    #[test]
    fn affine_transformer_autoregressive_equals_maf() -> Result<()> {
        let config = MafLayerConfig::new(4, vec![8]);
        let (s1, s2) = (
            ParamStore::new(DType::F64, &Device::Cpu, 4),
            ParamStore::new(DType::F64, &Device::Cpu, 4),
        );
        let generic =
            TransformerAutoregressive::new(&s1.root(), &config, Arc::new(AffineTransformer))?;
        let maf = MaskedAffineAutoregressive::new(&s2.root(), &config)?;
        s1.perturb(0.5, 9)?;
        s2.perturb(0.5, 9)?;
        let x = crate::random::standard_normal(
            (3, 4),
            DType::F64,
            &Device::Cpu,
            &mut crate::random::rng_from_seed(2),
        )?;
        let close = |a: Tensor, b: Tensor| -> Result<bool> {
            Ok((a - b)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12)
        };
        let (z1, l1) = generic.forward_and_ladj(&x, None)?;
        let (z2, l2) = maf.forward_and_ladj(&x, None)?;
        assert!(close(z1, z2)? && close(l1, l2)?);
        let (x1, m1) = generic.inverse_and_ladj(&x, None)?;
        let (x2, m2) = maf.inverse_and_ladj(&x, None)?;
        assert!(close(x1, x2)? && close(m1, m2)?);
        Ok(())
    }
}
