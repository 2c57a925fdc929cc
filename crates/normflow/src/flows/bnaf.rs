//! The `bnaf` family: stacked block neural autoregressive flows (De Cao et al. 2019).

use serde::{Deserialize, Serialize};

use super::base::BaseSpec;
use super::spec::PermutationKind;
use crate::bijections::{Bijection, Bnaf, BnafConfig, Chain, Permutation};
use crate::params::Params;
use crate::{ensure_config, Result};

/// Hyperparameters of the `bnaf` family: `L` [`Bnaf`] layers with permutations between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BnafSpec {
    /// Data dimension D.
    pub features: usize,
    /// Context dimension (0 = unconditional).
    #[serde(default)]
    pub context_features: usize,
    /// Number of BNAF layers L.
    pub layers: usize,
    /// Hidden units per feature: each hidden layer has `hidden_factor * D` units.
    pub hidden_factor: usize,
    /// Hidden layers per BNAF layer.
    pub hidden_layers: usize,
    /// Permutation between layers.
    #[serde(default)]
    pub permutation: PermutationKind,
    /// Base distribution.
    #[serde(default)]
    pub base: BaseSpec,
}

impl BnafSpec {
    /// Defaults for `features` dimensions: 5 layers of 1 hidden layer with 16 units per
    /// feature, reversed between layers.
    pub fn new(features: usize) -> Self {
        Self {
            features,
            context_features: 0,
            layers: 5,
            hidden_factor: 16,
            hidden_layers: 1,
            permutation: PermutationKind::Reverse,
            base: BaseSpec::StandardNormal,
        }
    }

    fn config(&self) -> BnafConfig {
        BnafConfig {
            features: self.features,
            context_features: self.context_features,
            hidden_factor: self.hidden_factor,
            hidden_layers: self.hidden_layers,
        }
    }

    /// Checks every hyperparameter, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        ensure_config!(self.layers >= 1, "layers", self.layers, "must be at least 1");
        self.config().validate()?;
        self.base.validate(self.context_features)
    }
}

/// `L x [BNAF, permutation]` without the trailing permutation.
pub(super) fn build(params: &Params, spec: &BnafSpec) -> Result<Chain> {
    let d = spec.features;
    let mut layers: Vec<Box<dyn Bijection>> = Vec::new();
    for i in 0..spec.layers {
        let p = params.pp(i);
        layers.push(Box::new(Bnaf::new(&p, &spec.config())?));
        if i + 1 < spec.layers && d > 1 {
            let permutation = match spec.permutation {
                PermutationKind::Reverse => Permutation::reverse(d)?,
                PermutationKind::Random => Permutation::random(&p.pp("permutation"), d)?,
            };
            layers.push(Box::new(permutation));
        }
    }
    Ok(Chain::new(layers))
}
