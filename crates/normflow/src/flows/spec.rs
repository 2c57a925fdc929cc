//! The serializable description of a flow.

use serde::{Deserialize, Serialize};

use super::base::BaseSpec;
use super::bnaf::BnafSpec;
use super::ffjord::FfjordSpec;
use super::flowpp::FlowppSpec;
use super::image::ImageFlowSpec;
use super::transformer_flows::TransformerFlowSpec;
use super::variational::{self, SylvesterSpec, VariationalSpec};
use crate::bijections::Chain;
use crate::distributions::Distribution;
use crate::nn::{Activation, MadeHiddenDegrees};
use crate::params::Params;
use crate::{ensure_config, Result};

/// How features are reordered between autoregressive layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PermutationKind {
    /// Reverse the features (the MAF paper's choice).
    #[default]
    Reverse,
    /// A fixed random permutation per layer, drawn from the model's seed.
    Random,
}

/// Hyperparameters of the autoregressive presets (`made`, `maf`, `iaf`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoregressiveSpec {
    /// Data dimension D.
    pub features: usize,
    /// Context dimension (0 = unconditional).
    #[serde(default)]
    pub context_features: usize,
    /// Number of flow layers L (`made` requires 1).
    pub layers: usize,
    /// Width of the MADE hidden layers.
    pub hidden: usize,
    /// Hidden layers per MADE.
    pub blocks: usize,
    /// Hidden non-linearity.
    #[serde(default)]
    pub activation: Activation,
    /// Residual MADE blocks.
    #[serde(default)]
    pub residual: bool,
    /// How MADE's hidden units get their degrees: [`MadeHiddenDegrees::Sorted`] for new models;
    /// files written before the field existed read as [`MadeHiddenDegrees::Cyclic`], the
    /// degrees they were trained with.
    #[serde(default)]
    pub hidden_degrees: MadeHiddenDegrees,
    /// Batch normalization between layers (the MAF paper's MAF models use it).
    #[serde(default)]
    pub batch_norm: bool,
    /// Permutation between layers.
    #[serde(default)]
    pub permutation: PermutationKind,
    /// Base distribution.
    #[serde(default)]
    pub base: BaseSpec,
}

impl AutoregressiveSpec {
    /// Defaults for `features` dimensions: 5 layers, MADEs of 2 hidden layers of 128 units.
    pub fn new(features: usize) -> Self {
        Self {
            features,
            context_features: 0,
            layers: 5,
            hidden: 128,
            blocks: 2,
            activation: Activation::Relu,
            residual: false,
            hidden_degrees: MadeHiddenDegrees::Sorted,
            batch_norm: false,
            permutation: PermutationKind::Reverse,
            base: BaseSpec::StandardNormal,
        }
    }
}

/// Hyperparameters of the coupling presets (`nice`, `realnvp`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouplingSpec {
    /// Data dimension D (at least 2).
    pub features: usize,
    /// Context dimension (0 = unconditional).
    #[serde(default)]
    pub context_features: usize,
    /// Number of coupling layers L.
    pub layers: usize,
    /// Width of the conditioner MLPs' hidden layers.
    pub hidden: usize,
    /// Hidden layers per conditioner MLP.
    pub blocks: usize,
    /// Hidden non-linearity.
    #[serde(default)]
    pub activation: Activation,
    /// Batch normalization between coupling layers (RealNVP uses it).
    #[serde(default)]
    pub batch_norm: bool,
    /// Base distribution.
    #[serde(default)]
    pub base: BaseSpec,
}

impl CouplingSpec {
    /// Defaults for `features` dimensions: 5 layers, conditioners of 2 hidden layers of 128 units.
    pub fn new(features: usize) -> Self {
        Self {
            features,
            context_features: 0,
            layers: 5,
            hidden: 128,
            blocks: 2,
            activation: Activation::Relu,
            batch_norm: false,
            base: BaseSpec::StandardNormal,
        }
    }
}

/// A flow architecture: family and hyperparameters. This is what `spec.json` stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "lowercase")]
pub enum FlowSpec {
    /// One Gaussian autoregressive layer.
    Made(AutoregressiveSpec),
    /// Masked autoregressive flow.
    Maf(AutoregressiveSpec),
    /// Inverse autoregressive flow.
    Iaf(AutoregressiveSpec),
    /// Additive coupling (NICE).
    Nice(CouplingSpec),
    /// Affine coupling (RealNVP).
    #[serde(rename = "realnvp")]
    RealNvp(CouplingSpec),
    /// RealNVP's multi-scale image model.
    #[serde(rename = "realnvp-image")]
    RealNvpImage(ImageFlowSpec),
    /// Glow.
    Glow(ImageFlowSpec),
    /// Flow++: logistic-mixture couplings and variational dequantization.
    Flowpp(FlowppSpec),
    /// Coupling layers with any element-wise transformer (e.g. NSF's splines).
    Coupling(TransformerFlowSpec),
    /// MADE-conditioned autoregressive layers with any element-wise transformer.
    Autoregressive(TransformerFlowSpec),
    /// Planar flow (Rezende & Mohamed 2015).
    Planar(VariationalSpec),
    /// Radial flow (Rezende & Mohamed 2015).
    Radial(VariationalSpec),
    /// Sylvester flow (van den Berg et al. 2018).
    Sylvester(SylvesterSpec),
    /// Continuous normalizing flow (FFJORD).
    Ffjord(FfjordSpec),
    /// Block neural autoregressive flow.
    Bnaf(BnafSpec),
}

impl FlowSpec {
    /// The family name as the CLI and `spec.json` spell it.
    pub fn family(&self) -> &'static str {
        match self {
            FlowSpec::Made(_) => "made",
            FlowSpec::Maf(_) => "maf",
            FlowSpec::Iaf(_) => "iaf",
            FlowSpec::Nice(_) => "nice",
            FlowSpec::RealNvp(_) => "realnvp",
            FlowSpec::RealNvpImage(_) => "realnvp-image",
            FlowSpec::Glow(_) => "glow",
            FlowSpec::Flowpp(_) => "flowpp",
            FlowSpec::Ffjord(_) => "ffjord",
            FlowSpec::Planar(_) => "planar",
            FlowSpec::Radial(_) => "radial",
            FlowSpec::Sylvester(_) => "sylvester",
            FlowSpec::Coupling(s) => s.transformer.preset_name(false),
            FlowSpec::Autoregressive(s) => s.transformer.preset_name(true),
            FlowSpec::Bnaf(_) => "bnaf",
        }
    }

    /// The image hyperparameters of an image preset (`realnvp-image`, `glow`, `flowpp`): its
    /// data are 8-bit pixel rows, dequantized and scored in bits per dimension.
    pub fn image(&self) -> Option<&ImageFlowSpec> {
        match self {
            FlowSpec::RealNvpImage(s) | FlowSpec::Glow(s) => Some(s),
            FlowSpec::Flowpp(s) => Some(&s.image),
            _ => None,
        }
    }

    /// Whether the data must get uniform dequantization noise from outside the model (training
    /// and scoring): image presets without a variational dequantizer of their own.
    pub fn uniform_dequantization(&self) -> bool {
        match self {
            FlowSpec::Flowpp(s) => s.uniform_dequantization(),
            other => other.image().is_some(),
        }
    }

    /// Data dimension.
    pub fn features(&self) -> usize {
        match self {
            FlowSpec::Made(s) | FlowSpec::Maf(s) | FlowSpec::Iaf(s) => s.features,
            FlowSpec::Nice(s) | FlowSpec::RealNvp(s) => s.features,
            FlowSpec::Coupling(s) | FlowSpec::Autoregressive(s) => s.features,
            FlowSpec::RealNvpImage(s) | FlowSpec::Glow(s) => s.features(),
            FlowSpec::Flowpp(s) => s.image.features(),
            FlowSpec::Planar(s) | FlowSpec::Radial(s) => s.features,
            FlowSpec::Sylvester(s) => s.features,
            FlowSpec::Ffjord(s) => s.features,
            FlowSpec::Bnaf(s) => s.features,
        }
    }

    /// Context dimension (0 = unconditional).
    pub fn context_features(&self) -> usize {
        match self {
            FlowSpec::Made(s) | FlowSpec::Maf(s) | FlowSpec::Iaf(s) => s.context_features,
            FlowSpec::Nice(s) | FlowSpec::RealNvp(s) => s.context_features,
            FlowSpec::Coupling(s) | FlowSpec::Autoregressive(s) => s.context_features,
            FlowSpec::RealNvpImage(_) | FlowSpec::Glow(_) | FlowSpec::Flowpp(_) => 0,
            FlowSpec::Planar(s) | FlowSpec::Radial(s) => s.context_features,
            FlowSpec::Sylvester(s) => s.context_features,
            FlowSpec::Ffjord(s) => s.context_features,
            FlowSpec::Bnaf(s) => s.context_features,
        }
    }

    /// Checks every hyperparameter, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        match self {
            FlowSpec::Made(s) | FlowSpec::Maf(s) | FlowSpec::Iaf(s) => {
                ensure_config!(s.features >= 1, "features", s.features, "must be at least 1");
                ensure_config!(s.layers >= 1, "layers", s.layers, "must be at least 1");
                if let FlowSpec::Made(_) = self {
                    ensure_config!(
                        s.layers == 1,
                        "layers",
                        s.layers,
                        "MADE is a single layer: use maf for more"
                    );
                }
                ensure_config!(s.hidden >= 1, "hidden", s.hidden, "must be at least 1");
                ensure_config!(
                    s.blocks >= 1,
                    "blocks",
                    s.blocks,
                    "a MADE needs at least 1 hidden layer"
                );
                s.base.validate(s.context_features)?;
            }
            FlowSpec::Nice(s) | FlowSpec::RealNvp(s) => {
                ensure_config!(
                    s.features >= 2,
                    "features",
                    s.features,
                    "coupling flows split the features in two: they need at least 2"
                );
                ensure_config!(s.layers >= 1, "layers", s.layers, "must be at least 1");
                ensure_config!(s.hidden >= 1, "hidden", s.hidden, "must be at least 1");
                s.base.validate(s.context_features)?;
            }
            FlowSpec::RealNvpImage(s) | FlowSpec::Glow(s) => s.validate()?,
            FlowSpec::Flowpp(s) => s.validate()?,
            FlowSpec::Coupling(s) => s.validate(true)?,
            FlowSpec::Autoregressive(s) => s.validate(false)?,
            FlowSpec::Planar(s) | FlowSpec::Radial(s) => s.validate()?,
            FlowSpec::Sylvester(s) => s.validate()?,
            FlowSpec::Ffjord(s) => s.validate()?,
            FlowSpec::Bnaf(s) => s.validate()?,
        }
        Ok(())
    }

    /// Validates the spec and builds the transform (data -> latent) and the base distribution,
    /// creating their tensors under `params`.
    pub fn build(&self, params: &Params) -> Result<(Chain, Box<dyn Distribution>)> {
        self.validate()?;
        let transform = match self {
            FlowSpec::Made(s) | FlowSpec::Maf(s) => {
                super::autoregressive::build(&params.pp("transform"), s, false)?
            }
            FlowSpec::Iaf(s) => super::autoregressive::build(&params.pp("transform"), s, true)?,
            FlowSpec::Nice(s) => super::coupling::build(&params.pp("transform"), s, false)?,
            FlowSpec::RealNvp(s) => super::coupling::build(&params.pp("transform"), s, true)?,
            FlowSpec::RealNvpImage(s) => super::image::build_realnvp(&params.pp("transform"), s)?,
            FlowSpec::Glow(s) => super::image::build_glow(&params.pp("transform"), s)?,
            FlowSpec::Flowpp(s) => super::flowpp::build_flowpp(&params.pp("transform"), s)?,
            FlowSpec::Coupling(s) => {
                super::transformer_flows::build_coupling(&params.pp("transform"), s)?
            }
            FlowSpec::Autoregressive(s) => {
                super::transformer_flows::build_autoregressive(&params.pp("transform"), s)?
            }
            FlowSpec::Planar(s) => {
                variational::build(&params.pp("transform"), s, variational::Kind::Planar)?
            }
            FlowSpec::Radial(s) => {
                variational::build(&params.pp("transform"), s, variational::Kind::Radial)?
            }
            FlowSpec::Sylvester(s) => variational::build_sylvester(&params.pp("transform"), s)?,
            FlowSpec::Ffjord(s) => super::ffjord::build(&params.pp("transform"), s)?,
            FlowSpec::Bnaf(s) => super::bnaf::build(&params.pp("transform"), s)?,
        };
        let (features, context, base) = match self {
            FlowSpec::Made(s) | FlowSpec::Maf(s) | FlowSpec::Iaf(s) => {
                (s.features, s.context_features, &s.base)
            }
            FlowSpec::Nice(s) | FlowSpec::RealNvp(s) => (s.features, s.context_features, &s.base),
            FlowSpec::Coupling(s) | FlowSpec::Autoregressive(s) => {
                (s.features, s.context_features, &s.base)
            }
            FlowSpec::RealNvpImage(s) | FlowSpec::Glow(s) => (s.features(), 0, &s.base),
            FlowSpec::Flowpp(s) => (s.image.features(), 0, &s.image.base),
            FlowSpec::Planar(s) | FlowSpec::Radial(s) => (s.features, s.context_features, &s.base),
            FlowSpec::Sylvester(s) => (s.features, s.context_features, &s.base),
            FlowSpec::Ffjord(s) => (s.features, s.context_features, &s.base),
            FlowSpec::Bnaf(s) => (s.features, s.context_features, &s.base),
        };
        let base = base.build(&params.pp("base"), features, context)?;
        Ok((transform, base))
    }
}
