//! NICE and RealNVP presets.

use super::spec::CouplingSpec;
use crate::bijections::{
    alternating_mask, AdditiveCoupling, AffineCoupling, BatchNorm, Bijection, Chain,
    CouplingConfig, ElementwiseAffine,
};
use crate::params::Params;
use crate::Result;

/// `L` couplings whose alternating masks swap parity every layer, so each feature is
/// transformed in every other layer. NICE (`affine = false`) ends with its element-wise scaling
/// layer, without which an additive flow is volume preserving; RealNVP (`affine = true`) may put
/// batch norm between couplings.
pub(super) fn build(params: &Params, spec: &CouplingSpec, affine: bool) -> Result<Chain> {
    let d = spec.features;
    let mut layers: Vec<Box<dyn Bijection>> = Vec::new();
    for i in 0..spec.layers {
        let p = params.pp(i);
        let config = CouplingConfig {
            context_features: spec.context_features,
            activation: spec.activation,
            ..CouplingConfig::new(alternating_mask(d, i % 2), vec![spec.hidden; spec.blocks])
        };
        if affine {
            layers.push(Box::new(AffineCoupling::new(&p.pp("coupling"), &config)?));
        } else {
            layers.push(Box::new(AdditiveCoupling::new(&p.pp("coupling"), &config)?));
        }
        if spec.batch_norm && i + 1 < spec.layers {
            layers.push(Box::new(BatchNorm::new(&p.pp("batch_norm"), &[d])?));
        }
    }
    if !affine {
        layers.push(Box::new(ElementwiseAffine::new(&params.pp("scaling"), &[d])?));
    }
    Ok(Chain::new(layers))
}
