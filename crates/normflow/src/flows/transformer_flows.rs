//! Coupling and autoregressive flows with any element-wise transformer (the non-affine
//! families: neural spline flows, NAF, polynomial flows; affine as the reference).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::base::BaseSpec;
use super::spec::PermutationKind;
use crate::bijections::{
    alternating_mask, AffineTransformer, BatchNorm, BernsteinTransformer, Bijection, Chain,
    CircularRationalQuadraticSpline, CouplingConfig, CubicSpline, DeepSigmoidTransformer,
    LinearSpline, LogisticMixtureTransformer, MafLayerConfig, QuadraticSpline,
    RationalQuadraticSpline, RqSplineConfig, SosTransformer, Transformer,
    TransformerAutoregressive, TransformerCoupling,
};
use crate::nn::{Activation, MadeHiddenDegrees};
use crate::params::Params;
use crate::{ensure_config, Result};

/// The element-wise map of a [`TransformerFlowSpec`] and its hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TransformerSpec {
    /// `y = x exp(s) + t` (the MAF / RealNVP map; see
    /// [`AffineTransformer`](crate::bijections::AffineTransformer)).
    Affine,
    /// The rational-quadratic spline of neural spline flows on `[-bound, bound]` with identity
    /// tails (see [`RationalQuadraticSpline`]); presets `nsf` and `nsf-ar`.
    RationalQuadratic {
        /// Number of bins K.
        #[serde(default = "default_bins")]
        bins: usize,
        /// Half-width B of the spline's interval (the data are standardized: 3 to 5).
        #[serde(default = "default_bound")]
        bound: f64,
        /// Smallest bin width, as a fraction of the interval.
        #[serde(default = "default_minimum")]
        min_bin_width: f64,
        /// Smallest bin height, as a fraction of the interval.
        #[serde(default = "default_minimum")]
        min_bin_height: f64,
        /// Smallest derivative at a knot.
        #[serde(default = "default_minimum")]
        min_derivative: f64,
    },
    /// The circular rational-quadratic spline for angles on `[-pi, pi]` (see
    /// [`CircularRationalQuadraticSpline`]); presets `nsf-circular` and `nsf-circular-ar`.
    CircularRationalQuadratic {
        /// Number of bins K.
        #[serde(default = "default_bins")]
        bins: usize,
        /// Smallest bin width, as a fraction of the circle.
        #[serde(default = "default_minimum")]
        min_bin_width: f64,
        /// Smallest bin height, as a fraction of the circle.
        #[serde(default = "default_minimum")]
        min_bin_height: f64,
        /// Smallest derivative at a knot.
        #[serde(default = "default_minimum")]
        min_derivative: f64,
    },
    /// Piecewise-linear spline of `bins` equal-width bins on `[-bound, bound]`, identity outside
    /// (Müller et al. 2019; see [`LinearSpline`](crate::bijections::LinearSpline)).
    LinearSpline {
        /// Number of bins K (2 to 500).
        bins: usize,
        /// Half-width B of the spline's interval.
        bound: f64,
    },
    /// Piecewise-quadratic spline (piecewise-linear density) on `[-bound, bound]`, identity
    /// outside (Müller et al. 2019; see
    /// [`QuadraticSpline`](crate::bijections::QuadraticSpline)).
    QuadraticSpline {
        /// Number of bins K (2 to 500).
        bins: usize,
        /// Half-width B of the spline's interval.
        bound: f64,
    },
    /// Monotone cubic spline with Steffen's knot derivatives on `[-bound, bound]`, identity
    /// outside (Durkan et al. 2019, "Cubic-Spline Flows"; see
    /// [`CubicSpline`](crate::bijections::CubicSpline)).
    CubicSpline {
        /// Number of bins K (2 to 500).
        bins: usize,
        /// Half-width B of the spline's interval.
        bound: f64,
    },
    /// NAF's deep sigmoidal flow (Huang et al. 2018): DSF, or DDSF with `dense`; `hidden`
    /// sigmoid units per layer (see
    /// [`DeepSigmoidTransformer`](crate::bijections::DeepSigmoidTransformer)).
    DeepSigmoid {
        /// Sigmoid units per layer (8 in the `naf` preset).
        hidden: usize,
        /// The dense two-layer form (DDSF).
        #[serde(default)]
        dense: bool,
    },
    /// Sum-of-squares polynomial (Jaini et al. 2019; see
    /// [`SosTransformer`](crate::bijections::SosTransformer)).
    Sos {
        /// Number of squared polynomials `K`.
        polynomials: usize,
        /// Degree `r` of each polynomial (the map has degree `2r + 1`).
        degree: usize,
    },
    /// Bernstein polynomial with increasing coefficients between a sigmoid and a logit (see
    /// [`BernsteinTransformer`](crate::bijections::BernsteinTransformer)).
    Bernstein {
        /// Degree `M`.
        degree: usize,
    },
    /// Flow++'s logit of a logistic-mixture CDF followed by an affine map (Ho et al. 2019; see
    /// [`LogisticMixtureTransformer`](crate::bijections::LogisticMixtureTransformer)).
    LogisticMixture {
        /// Mixture components `K`.
        components: usize,
    },
}

fn default_bins() -> usize {
    8
}

/// The data are standardized; 5 rather than 3 because heavy-tailed columns (protein has a column
/// reaching 51 standard deviations) otherwise leave many rows on the identity tails: on protein,
/// NSF's test log-likelihood was about 0.25 nats/row better with 5 (docs/NONAFFINE.md).
fn default_bound() -> f64 {
    5.0
}

fn default_minimum() -> f64 {
    1e-3
}

/// Default sigmoid units of the `naf` preset.
pub const NAF_HIDDEN: usize = 8;
/// Default number of squared polynomials of the `sos` preset.
pub const SOS_POLYNOMIALS: usize = 4;
/// Default polynomial degree of the `sos` preset (map degree 7).
pub const SOS_DEGREE: usize = 3;
/// Default mixture components of Flow++'s logistic-mixture transformer (the paper uses 32 on
/// CIFAR-10; fewer keep CPU runs affordable).
pub const LOGISTIC_COMPONENTS: usize = 8;
/// Default degree of the `bernstein` preset.
pub const BERNSTEIN_DEGREE: usize = 16;

impl TransformerSpec {
    /// Checks the hyperparameters, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        self.build_unchecked().map(|_| ())
    }

    /// The rational-quadratic spline of neural spline flows with `bins` bins on `[-bound,
    /// bound]` and nflows' minimum width, height and derivative.
    pub fn rational_quadratic(bins: usize, bound: f64) -> Self {
        TransformerSpec::RationalQuadratic {
            bins,
            bound,
            min_bin_width: default_minimum(),
            min_bin_height: default_minimum(),
            min_derivative: default_minimum(),
        }
    }

    /// The circular rational-quadratic spline with `bins` bins and nflows' minimums.
    pub fn circular_rational_quadratic(bins: usize) -> Self {
        TransformerSpec::CircularRationalQuadratic {
            bins,
            min_bin_width: default_minimum(),
            min_bin_height: default_minimum(),
            min_derivative: default_minimum(),
        }
    }

    fn build_unchecked(&self) -> Result<Arc<dyn Transformer>> {
        Ok(match *self {
            TransformerSpec::Affine => Arc::new(AffineTransformer),
            TransformerSpec::RationalQuadratic {
                bins,
                bound,
                min_bin_width,
                min_bin_height,
                min_derivative,
            } => {
                let config = RqSplineConfig { bins, min_bin_width, min_bin_height, min_derivative };
                Arc::new(RationalQuadraticSpline::new(bound, config)?)
            }
            TransformerSpec::CircularRationalQuadratic {
                bins,
                min_bin_width,
                min_bin_height,
                min_derivative,
            } => {
                let config = RqSplineConfig { bins, min_bin_width, min_bin_height, min_derivative };
                Arc::new(CircularRationalQuadraticSpline::new(config)?)
            }
            TransformerSpec::LinearSpline { bins, bound } => {
                Arc::new(LinearSpline::new(bins, bound)?)
            }
            TransformerSpec::QuadraticSpline { bins, bound } => {
                Arc::new(QuadraticSpline::new(bins, bound)?)
            }
            TransformerSpec::CubicSpline { bins, bound } => {
                Arc::new(CubicSpline::new(bins, bound)?)
            }
            TransformerSpec::DeepSigmoid { hidden, dense } => {
                Arc::new(DeepSigmoidTransformer::new(hidden, dense)?)
            }
            TransformerSpec::Sos { polynomials, degree } => {
                Arc::new(SosTransformer::new(polynomials, degree)?)
            }
            TransformerSpec::Bernstein { degree } => Arc::new(BernsteinTransformer::new(degree)?),
            TransformerSpec::LogisticMixture { components } => {
                Arc::new(LogisticMixtureTransformer::new(components)?)
            }
        })
    }

    /// The transformer this spec describes.
    pub fn build(&self) -> Result<Arc<dyn Transformer>> {
        self.build_unchecked()
    }

    /// The preset name of a flow with this transformer, as the CLI's `--flow` spells it.
    pub fn preset_name(&self, autoregressive: bool) -> &'static str {
        match (self, autoregressive) {
            (TransformerSpec::Affine, false) => "affine-coupling",
            (TransformerSpec::Affine, true) => "affine-autoregressive",
            (TransformerSpec::RationalQuadratic { .. }, false) => "nsf",
            (TransformerSpec::RationalQuadratic { .. }, true) => "nsf-ar",
            (TransformerSpec::CircularRationalQuadratic { .. }, false) => "nsf-circular",
            (TransformerSpec::CircularRationalQuadratic { .. }, true) => "nsf-circular-ar",
            (TransformerSpec::LinearSpline { .. }, false) => "linear-spline",
            (TransformerSpec::LinearSpline { .. }, true) => "linear-spline-ar",
            (TransformerSpec::QuadraticSpline { .. }, false) => "quadratic-spline",
            (TransformerSpec::QuadraticSpline { .. }, true) => "quadratic-spline-ar",
            (TransformerSpec::CubicSpline { .. }, false) => "cubic",
            (TransformerSpec::CubicSpline { .. }, true) => "cubic-ar",
            (TransformerSpec::DeepSigmoid { .. }, false) => "naf-coupling",
            (TransformerSpec::DeepSigmoid { .. }, true) => "naf",
            (TransformerSpec::Sos { .. }, false) => "sos-coupling",
            (TransformerSpec::Sos { .. }, true) => "sos",
            (TransformerSpec::Bernstein { .. }, false) => "bernstein-coupling",
            (TransformerSpec::Bernstein { .. }, true) => "bernstein",
            (TransformerSpec::LogisticMixture { .. }, false) => "logistic-mixture-coupling",
            (TransformerSpec::LogisticMixture { .. }, true) => "logistic-mixture-ar",
        }
    }
}

/// Hyperparameters of the `coupling` and `autoregressive` families: `L` layers of a
/// [`TransformerSpec`] map, conditioned by MLPs (coupling, alternating masks) or MADEs
/// (autoregressive, permutations between layers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerFlowSpec {
    /// Data dimension D (at least 2 for coupling).
    pub features: usize,
    /// Context dimension (0 = unconditional).
    #[serde(default)]
    pub context_features: usize,
    /// Number of layers L.
    pub layers: usize,
    /// Width of the conditioners' hidden layers.
    pub hidden: usize,
    /// Hidden layers per conditioner.
    pub blocks: usize,
    /// Hidden non-linearity.
    #[serde(default)]
    pub activation: Activation,
    /// Batch normalization between layers.
    #[serde(default)]
    pub batch_norm: bool,
    /// Autoregressive only: how MADE's hidden units get their degrees
    /// ([`MadeHiddenDegrees::Sorted`] for new models; files written before the field existed
    /// read as [`MadeHiddenDegrees::Cyclic`], the degrees they were trained with).
    #[serde(default)]
    pub hidden_degrees: MadeHiddenDegrees,
    /// Permutation between autoregressive layers (coupling layers alternate their masks).
    #[serde(default)]
    pub permutation: PermutationKind,
    /// Autoregressive only: use each layer in the inverse direction (IAF form: one pass to
    /// sample, `D` passes to evaluate a density).
    #[serde(default)]
    pub inverse: bool,
    /// The element-wise map.
    pub transformer: TransformerSpec,
    /// Base distribution.
    #[serde(default)]
    pub base: BaseSpec,
}

impl TransformerFlowSpec {
    /// Defaults for `features` dimensions: 5 layers, conditioners of 2 hidden layers of 128.
    pub fn new(features: usize, transformer: TransformerSpec) -> Self {
        Self {
            features,
            context_features: 0,
            layers: 5,
            hidden: 128,
            blocks: 2,
            activation: Activation::Relu,
            batch_norm: false,
            hidden_degrees: MadeHiddenDegrees::Sorted,
            permutation: PermutationKind::Reverse,
            inverse: false,
            transformer,
            base: BaseSpec::StandardNormal,
        }
    }

    /// Checks every hyperparameter, naming the first invalid one.
    pub fn validate(&self, coupling: bool) -> Result<()> {
        if coupling {
            ensure_config!(
                self.features >= 2,
                "features",
                self.features,
                "coupling flows split the features in two: they need at least 2"
            );
            ensure_config!(
                !self.inverse,
                "inverse",
                self.inverse,
                "only autoregressive flows have an inverse (IAF) form"
            );
        } else {
            ensure_config!(self.features >= 1, "features", self.features, "must be at least 1");
        }
        ensure_config!(self.layers >= 1, "layers", self.layers, "must be at least 1");
        ensure_config!(self.hidden >= 1, "hidden", self.hidden, "must be at least 1");
        ensure_config!(self.blocks >= 1, "blocks", self.blocks, "must be at least 1");
        self.transformer.validate()?;
        self.base.validate(self.context_features)
    }
}

/// `L` transformer couplings with alternating masks, batch norm between them if asked.
pub(super) fn build_coupling(params: &Params, spec: &TransformerFlowSpec) -> Result<Chain> {
    let d = spec.features;
    let transformer = spec.transformer.build()?;
    let mut layers: Vec<Box<dyn Bijection>> = Vec::new();
    for i in 0..spec.layers {
        let p = params.pp(i);
        let config = CouplingConfig {
            context_features: spec.context_features,
            activation: spec.activation,
            ..CouplingConfig::new(alternating_mask(d, i % 2), vec![spec.hidden; spec.blocks])
        };
        layers.push(Box::new(TransformerCoupling::new(
            &p.pp("coupling"),
            &config,
            transformer.clone(),
        )?));
        if spec.batch_norm && i + 1 < spec.layers {
            layers.push(Box::new(BatchNorm::new(&p.pp("batch_norm"), &[d])?));
        }
    }
    Ok(Chain::new(layers))
}

/// `L x [transformer autoregressive layer (inverted if asked), batch norm?, permutation]`,
/// without the trailing batch norm and permutation.
pub(super) fn build_autoregressive(params: &Params, spec: &TransformerFlowSpec) -> Result<Chain> {
    let transformer = spec.transformer.build()?;
    let stack = super::autoregressive::AutoregressiveStack {
        features: spec.features,
        layers: spec.layers,
        batch_norm: spec.batch_norm,
        permutation: spec.permutation,
        inverse: spec.inverse,
    };
    stack.build(params, |p| {
        let config = MafLayerConfig {
            context_features: spec.context_features,
            activation: spec.activation,
            hidden_degrees: spec.hidden_degrees,
            ..MafLayerConfig::new(spec.features, vec![spec.hidden; spec.blocks])
        };
        TransformerAutoregressive::new(p, &config, transformer.clone())
    })
}
