//! Planar, radial and Sylvester presets: the flows of variational inference.
//!
//! These flows were designed for sampling (their explicit map goes from latent to data, the
//! direction a variational posterior is sampled in); density evaluation inverts each layer
//! numerically (planar, Sylvester) or in closed form (radial).

use serde::{Deserialize, Serialize};

use super::base::BaseSpec;
use crate::bijections::{
    Bijection, Chain, Planar, Radial, Sylvester, SylvesterBasis, SylvesterConfig,
};
use crate::params::Params;
use crate::{ensure_config, Result};

/// Hyperparameters of the `planar` and `radial` presets: `layers` layers of one kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariationalSpec {
    /// Data dimension D.
    pub features: usize,
    /// Context dimension: must be 0 (these presets are unconditional).
    #[serde(default)]
    pub context_features: usize,
    /// Number of layers L.
    pub layers: usize,
    /// Base distribution.
    #[serde(default)]
    pub base: BaseSpec,
}

impl VariationalSpec {
    /// Defaults for `features` dimensions: 8 layers on a standard normal.
    pub fn new(features: usize) -> Self {
        Self { features, context_features: 0, layers: 8, base: BaseSpec::StandardNormal }
    }

    /// Checks every hyperparameter, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        check_common(self.features, self.context_features, self.layers, &self.base)
    }
}

fn check_common(features: usize, context: usize, layers: usize, base: &BaseSpec) -> Result<()> {
    ensure_config!(features >= 1, "features", features, "must be at least 1");
    ensure_config!(
        context == 0,
        "context_features",
        context,
        "planar, radial and Sylvester flows are unconditional: must be 0"
    );
    ensure_config!(layers >= 1, "layers", layers, "must be at least 1");
    base.validate(context)
}

/// How the `Q` of each Sylvester layer is parameterized (van den Berg et al. 2018).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SylvesterVariant {
    /// O-SNF: `Q` from a free `(D, M)` matrix, orthonormalized by Gram-Schmidt.
    #[default]
    Orthogonal,
    /// H-SNF: `Q` = the first `M` columns of a product of Householder reflections (`M` of them
    /// can give any orthonormal `Q`).
    Householder {
        /// Reflections per layer.
        reflections: usize,
    },
    /// T-SNF: `Q` is the identity or the reversal permutation, alternating between layers
    /// (`M = D`).
    Triangular,
}

/// Hyperparameters of the `sylvester` preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SylvesterSpec {
    /// Data dimension D.
    pub features: usize,
    /// Context dimension: must be 0.
    #[serde(default)]
    pub context_features: usize,
    /// Number of layers L.
    pub layers: usize,
    /// Columns of each layer's `Q` (the rank of its update), `1..=D`; `D` for `triangular`.
    pub m: usize,
    /// How `Q` is parameterized.
    #[serde(default)]
    pub variant: SylvesterVariant,
    /// Base distribution.
    #[serde(default)]
    pub base: BaseSpec,
}

impl SylvesterSpec {
    /// Defaults for `features` dimensions: 4 orthogonal layers with `M = D`.
    pub fn new(features: usize) -> Self {
        Self {
            features,
            context_features: 0,
            layers: 4,
            m: features,
            variant: SylvesterVariant::Orthogonal,
            base: BaseSpec::StandardNormal,
        }
    }

    /// The configuration of layer `i`.
    fn layer(&self, i: usize) -> SylvesterConfig {
        let basis = match self.variant {
            SylvesterVariant::Orthogonal => SylvesterBasis::Orthogonal,
            SylvesterVariant::Householder { reflections } => {
                SylvesterBasis::Householder { reflections }
            }
            SylvesterVariant::Triangular if i % 2 == 0 => SylvesterBasis::Identity,
            SylvesterVariant::Triangular => SylvesterBasis::Reversal,
        };
        SylvesterConfig { features: self.features, m: self.m, basis }
    }

    /// Checks every hyperparameter, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        check_common(self.features, self.context_features, self.layers, &self.base)?;
        self.layer(0).validate()
    }
}

/// Which layer a [`VariationalSpec`] stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Planar,
    Radial,
}

/// `L` planar or radial layers.
pub(super) fn build(params: &Params, spec: &VariationalSpec, kind: Kind) -> Result<Chain> {
    spec.validate()?;
    let mut layers: Vec<Box<dyn Bijection>> = Vec::with_capacity(spec.layers);
    for i in 0..spec.layers {
        let p = params.pp(i);
        layers.push(match kind {
            Kind::Planar => Box::new(Planar::new(&p.pp("planar"), spec.features)?),
            Kind::Radial => Box::new(Radial::new(&p.pp("radial"), spec.features)?),
        });
    }
    Ok(Chain::new(layers))
}

/// `L` Sylvester layers (alternating `Q = I` and the reversal for `triangular`).
pub(super) fn build_sylvester(params: &Params, spec: &SylvesterSpec) -> Result<Chain> {
    spec.validate()?;
    let mut layers: Vec<Box<dyn Bijection>> = Vec::with_capacity(spec.layers);
    for i in 0..spec.layers {
        layers.push(Box::new(Sylvester::new(&params.pp(i).pp("sylvester"), &spec.layer(i))?));
    }
    Ok(Chain::new(layers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::FlowSpec;
    use crate::{Distribution, Flow, ParamStore};
    use candle_core::{DType, Device};

    fn specs() -> Vec<FlowSpec> {
        let v = VariationalSpec { layers: 3, ..VariationalSpec::new(3) };
        let s = SylvesterSpec { layers: 3, ..SylvesterSpec::new(3) };
        vec![
            FlowSpec::Planar(v.clone()),
            FlowSpec::Radial(VariationalSpec { base: BaseSpec::DiagNormal, ..v }),
            FlowSpec::Sylvester(SylvesterSpec { m: 2, ..s.clone() }),
            FlowSpec::Sylvester(SylvesterSpec {
                variant: SylvesterVariant::Householder { reflections: 3 },
                ..s.clone()
            }),
            FlowSpec::Sylvester(SylvesterSpec { variant: SylvesterVariant::Triangular, ..s }),
        ]
    }

    #[test]
    fn presets_round_trip_through_json_and_sample_what_they_score() -> Result<()> {
        for spec in specs() {
            let json = serde_json::to_string(&spec)?;
            assert_eq!(serde_json::from_str::<FlowSpec>(&json)?, spec, "{json}");
            let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
            let (transform, base) = spec.build(&store.root())?;
            store.perturb(0.2, 1)?;
            let flow = Flow::from_boxed(Box::new(transform), base);
            let mut rng = crate::random::rng_from_seed(2);
            let (x, lp) = flow.sample_and_log_prob(16, None, &mut rng)?;
            // Density evaluation solves every layer back: it must agree with sampling.
            let err = (flow.log_prob(&x, None)? - lp)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(err < 1e-8, "{}: {err}", spec.family());
        }
        Ok(())
    }

    #[test]
    fn validation_names_the_bad_value() {
        let bad = [
            (FlowSpec::Planar(VariationalSpec { layers: 0, ..VariationalSpec::new(2) }), "layers"),
            (
                FlowSpec::Radial(VariationalSpec {
                    context_features: 2,
                    ..VariationalSpec::new(2)
                }),
                "context_features",
            ),
            (FlowSpec::Sylvester(SylvesterSpec { m: 3, ..SylvesterSpec::new(2) }), "m"),
            (
                FlowSpec::Sylvester(SylvesterSpec {
                    m: 1,
                    variant: SylvesterVariant::Triangular,
                    ..SylvesterSpec::new(2)
                }),
                "m",
            ),
        ];
        for (spec, name) in bad {
            let err = spec.validate().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(&format!("{name} =")), "{spec:?}: {err}");
        }
    }
}
