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
    let mut layers: Vec<Box<dyn Bijection>> = Vec::new();
    for i in 0..spec.layers {
        let p = params.pp(i);
        let config = MafLayerConfig {
            context_features: spec.context_features,
            residual: spec.residual,
            activation: spec.activation,
            ..MafLayerConfig::new(d, vec![spec.hidden; spec.blocks])
        };
        let layer = MaskedAffineAutoregressive::new(&p.pp("made"), &config)?;
        if inverse {
            layers.push(Box::new(Inverse::new(layer)));
        } else {
            layers.push(Box::new(layer));
        }
        if i + 1 == spec.layers {
            break;
        }
        if spec.batch_norm {
            layers.push(Box::new(BatchNorm::new(&p.pp("batch_norm"), &[d])?));
        }
        if d > 1 {
            let permutation = match spec.permutation {
                PermutationKind::Reverse => Permutation::reverse(d)?,
                PermutationKind::Random => Permutation::random(&p.pp("permutation"), d)?,
            };
            layers.push(Box::new(permutation));
        }
    }
    Ok(Chain::new(layers))
}
