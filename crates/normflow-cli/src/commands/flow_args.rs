//! The flow architecture flags shared by the commands that build a flow (`train`, ...):
//! `--flow`, `--layers`, `--hidden`, `--blocks`, `--activation`, `--batch-norm`, `--base`, and the
//! Sylvester flags `--sylvester-variant`, `--sylvester-m`, `--sylvester-reflections`.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use normflow::flows::{
    AutoregressiveSpec, BaseSpec, CouplingSpec, FlowSpec, SylvesterSpec, SylvesterVariant,
    VariationalSpec,
};
use normflow::nn::Activation;
use serde::{Deserialize, Serialize};

/// Flow families the command trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Family {
    /// Masked autoregressive flow (fast density, sequential sampling).
    Maf,
    /// Affine coupling flow (fast both ways).
    Realnvp,
    /// Additive coupling flow with a final scaling.
    Nice,
    /// A single Gaussian autoregressive layer.
    Made,
    /// Inverse autoregressive flow (fast sampling, sequential density).
    Iaf,
    /// Planar flow (explicit sampling; density by a scalar solve per layer).
    Planar,
    /// Radial flow (closed form both ways).
    Radial,
    /// Sylvester flow (explicit sampling; density by M scalar solves per layer).
    Sylvester,
}

/// How a Sylvester flow parameterizes its orthonormal `Q`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum SylvesterKind {
    /// Gram-Schmidt of a free D x M matrix.
    Orthogonal,
    /// A product of Householder reflections.
    Householder,
    /// Identity and reversal permutation, alternating (M = D).
    Triangular,
}

/// Hidden-layer non-linearities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Act {
    /// max(0, x)
    Relu,
    /// tanh(x)
    Tanh,
    /// x sigmoid(x)
    Silu,
    /// exponential linear unit
    Elu,
}

/// Flags that choose a flow architecture.
#[derive(Debug, Clone, Args)]
pub struct FlowArgs {
    /// Flow family.
    #[arg(long, value_enum, default_value = "maf")]
    pub flow: Family,
    /// Number of flow layers.
    #[arg(long, default_value_t = 5)]
    pub layers: usize,
    /// Width of the conditioner networks' hidden layers.
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// Hidden layers per conditioner network.
    #[arg(long, default_value_t = 2)]
    pub blocks: usize,
    /// Hidden non-linearity.
    #[arg(long, value_enum, default_value = "relu")]
    pub activation: Act,
    /// Batch normalization between layers.
    #[arg(long)]
    pub batch_norm: bool,
    /// Base distribution: normal, diag (learnable diagonal normal) or mixture:K.
    #[arg(long, default_value = "normal")]
    pub base: String,
    /// Sylvester flows: how Q is parameterized.
    #[arg(long, value_enum)]
    pub sylvester_variant: Option<SylvesterKind>,
    /// Sylvester flows: columns M of Q, 1..=D (default D).
    #[arg(long)]
    pub sylvester_m: Option<usize>,
    /// Sylvester flows with --sylvester-variant householder: reflections per layer (default M).
    #[arg(long)]
    pub sylvester_reflections: Option<usize>,
}

/// The base distribution named by `--base`; `conditional` only for a model with context columns.
pub fn base_spec(base: &str, conditional: bool) -> Result<BaseSpec> {
    Ok(match base {
        "normal" => BaseSpec::StandardNormal,
        "diag" => BaseSpec::DiagNormal,
        "conditional" if conditional => BaseSpec::ConditionalDiagNormal { hidden: 64, blocks: 1 },
        other => match other.strip_prefix("mixture:").map(str::parse::<usize>) {
            Some(Ok(k)) if k >= 1 => BaseSpec::GaussianMixture { components: k },
            _ => bail!(
                "--base {other}: expected normal, diag, mixture:K (K >= 1) or, with \
                 --context-columns, conditional"
            ),
        },
    })
}

/// The family as `--flow` spells it.
fn family_name(family: Family) -> String {
    family.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
}

impl FlowArgs {
    /// The validated spec of a flow on `features` data columns with `context` context columns.
    pub fn spec(&self, features: usize, context: usize) -> Result<FlowSpec> {
        let args = self;
        let activation = match args.activation {
            Act::Relu => Activation::Relu,
            Act::Tanh => Activation::Tanh,
            Act::Silu => Activation::Silu,
            Act::Elu => Activation::Elu,
        };
        if matches!(args.flow, Family::Nice | Family::Realnvp) && features < 2 {
            bail!(
                "--flow {} needs at least 2 data columns (its coupling layers split them in two); \
             the data has {features} data column: use --flow maf",
                family_name(args.flow)
            );
        }
        let sylvester_flags = args.sylvester_variant.is_some()
            || args.sylvester_m.is_some()
            || args.sylvester_reflections.is_some();
        if sylvester_flags && args.flow != Family::Sylvester {
            bail!("--sylvester-variant, --sylvester-m and --sylvester-reflections need --flow sylvester");
        }
        if args.sylvester_reflections.is_some()
            && args.sylvester_variant != Some(SylvesterKind::Householder)
        {
            bail!("--sylvester-reflections needs --sylvester-variant householder");
        }
        let vi_family = matches!(args.flow, Family::Planar | Family::Radial | Family::Sylvester);
        if vi_family && context > 0 {
            bail!(
                "--flow {} is unconditional: drop --context-columns (or use maf, iaf, realnvp, \
                 nice or made)",
                family_name(args.flow)
            );
        }
        let base = base_spec(&args.base, context > 0)?;
        let ar = AutoregressiveSpec {
            context_features: context,
            layers: args.layers,
            hidden: args.hidden,
            blocks: args.blocks,
            activation,
            batch_norm: args.batch_norm,
            base: base.clone(),
            ..AutoregressiveSpec::new(features)
        };
        let coupling = CouplingSpec {
            context_features: context,
            layers: args.layers,
            hidden: args.hidden,
            blocks: args.blocks,
            activation,
            batch_norm: args.batch_norm,
            base: base.clone(),
            ..CouplingSpec::new(features)
        };
        let spec = match args.flow {
            Family::Maf => FlowSpec::Maf(ar),
            Family::Iaf => FlowSpec::Iaf(ar),
            Family::Made => FlowSpec::Made(AutoregressiveSpec { layers: 1, ..ar }),
            Family::Nice => FlowSpec::Nice(coupling),
            Family::Realnvp => FlowSpec::RealNvp(coupling),
            Family::Planar | Family::Radial => {
                let v =
                    VariationalSpec { layers: args.layers, base, ..VariationalSpec::new(features) };
                if args.flow == Family::Planar {
                    FlowSpec::Planar(v)
                } else {
                    FlowSpec::Radial(v)
                }
            }
            Family::Sylvester => {
                let m = args.sylvester_m.unwrap_or(features);
                let variant = match args.sylvester_variant.unwrap_or(SylvesterKind::Orthogonal) {
                    SylvesterKind::Orthogonal => SylvesterVariant::Orthogonal,
                    SylvesterKind::Householder => SylvesterVariant::Householder {
                        reflections: args.sylvester_reflections.unwrap_or(m),
                    },
                    SylvesterKind::Triangular => SylvesterVariant::Triangular,
                };
                FlowSpec::Sylvester(SylvesterSpec {
                    layers: args.layers,
                    m,
                    variant,
                    base,
                    ..SylvesterSpec::new(features)
                })
            }
        };
        spec.validate()?;
        Ok(spec)
    }
}
