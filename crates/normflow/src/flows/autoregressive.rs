//! MADE, MAF and IAF presets.

use super::spec::{AutoregressiveSpec, PermutationKind};
use crate::bijections::{
    BatchNorm, Bijection, Chain, Inverse, MafLayerConfig, MaskedAffineAutoregressive, Permutation,
};
use crate::params::Params;
use crate::Result;

/// `L x [MAF layer (inverted for IAF), batch norm?, permutation]`, without the trailing
/// batch norm and permutation (they would only reorder the base's input).
pub(super) fn build(params: &Params, spec: &AutoregressiveSpec, inverse: bool) -> Result<Chain> {
    let d = spec.features;
    let stack = AutoregressiveStack {
        features: d,
        layers: spec.layers,
        batch_norm: spec.batch_norm,
        permutation: spec.permutation,
        inverse,
    };
    stack.build(params, |p| {
        let config = MafLayerConfig {
            context_features: spec.context_features,
            residual: spec.residual,
            hidden_degrees: spec.hidden_degrees,
            activation: spec.activation,
            ..MafLayerConfig::new(d, vec![spec.hidden; spec.blocks])
        };
        MaskedAffineAutoregressive::new(&p.pp("made"), &config)
    })
}

/// How autoregressive layers are stacked: `L x [layer (inverted if asked), batch norm?,
/// permutation]` with the trailing batch norm and permutation left out (they would only
/// reorder the base's input). Layer `i`'s tensors live under `params.pp(i)`.
pub(super) struct AutoregressiveStack {
    pub features: usize,
    pub layers: usize,
    pub batch_norm: bool,
    pub permutation: PermutationKind,
    pub inverse: bool,
}

impl AutoregressiveStack {
    /// Builds the chain, creating layer `i` with `make_layer(&params.pp(i))`.
    pub fn build<B: Bijection + 'static>(
        &self,
        params: &Params,
        mut make_layer: impl FnMut(&Params) -> Result<B>,
    ) -> Result<Chain> {
        let d = self.features;
        let mut layers: Vec<Box<dyn Bijection>> = Vec::new();
        for i in 0..self.layers {
            let p = params.pp(i);
            let layer = make_layer(&p)?;
            if self.inverse {
                layers.push(Box::new(Inverse::new(layer)));
            } else {
                layers.push(Box::new(layer));
            }
            if i + 1 == self.layers {
                break;
            }
            if self.batch_norm {
                layers.push(Box::new(BatchNorm::new(&p.pp("batch_norm"), &[d])?));
            }
            if d > 1 {
                let permutation = match self.permutation {
                    PermutationKind::Reverse => Permutation::reverse(d)?,
                    PermutationKind::Random => Permutation::random(&p.pp("permutation"), d)?,
                };
                layers.push(Box::new(permutation));
            }
        }
        Ok(Chain::new(layers))
    }
}
