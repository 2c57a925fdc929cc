//! The flow architecture flags shared by the commands that build a flow (`train`, ...):
//! `--flow`, `--layers`, `--hidden`, `--blocks`, `--activation`, `--batch-norm`, `--base`,
//! `--bins`, `--bound`.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use normflow::flows::{
    AutoregressiveSpec, BaseSpec, CouplingSpec, FlowSpec, TransformerFlowSpec, TransformerSpec,
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
    /// Coupling flow with piecewise-linear splines (Müller et al. 2019).
    LinearSpline,
    /// Autoregressive flow with piecewise-linear splines.
    LinearSplineAr,
    /// Coupling flow with piecewise-quadratic splines (Müller et al. 2019).
    QuadraticSpline,
    /// Autoregressive flow with piecewise-quadratic splines.
    QuadraticSplineAr,
    /// Coupling flow with monotone cubic splines (Durkan et al. 2019, "Cubic-Spline Flows").
    Cubic,
    /// Autoregressive flow with monotone cubic splines.
    CubicAr,
}

impl Family {
    /// Whether the family's layers are couplings (they need at least 2 data columns).
    fn is_coupling(self) -> bool {
        matches!(
            self,
            Family::Nice
                | Family::Realnvp
                | Family::LinearSpline
                | Family::QuadraticSpline
                | Family::Cubic
        )
    }
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
    /// Spline families: number of bins.
    #[arg(long, default_value_t = 8)]
    pub bins: usize,
    /// Spline families: half-width B of the interval [-B, B] the spline acts on (identity
    /// outside; the data are standardized first).
    #[arg(long, default_value_t = 3.0)]
    pub bound: f64,
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
        if args.flow.is_coupling() && features < 2 {
            let flow = args.flow.to_possible_value().map(|v| v.get_name().to_string());
            bail!(
                "--flow {} needs at least 2 data columns (its coupling layers split them in two); \
             the data has {features} data column: use --flow maf",
                flow.unwrap_or_default()
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
            base,
            ..CouplingSpec::new(features)
        };
        let (bins, bound) = (args.bins, args.bound);
        let transformer_flow = |transformer: TransformerSpec| TransformerFlowSpec {
            context_features: context,
            layers: args.layers,
            hidden: args.hidden,
            blocks: args.blocks,
            activation,
            batch_norm: args.batch_norm,
            base: ar.base.clone(),
            ..TransformerFlowSpec::new(features, transformer)
        };
        let linear = TransformerSpec::LinearSpline { bins, bound };
        let quadratic = TransformerSpec::QuadraticSpline { bins, bound };
        let cubic = TransformerSpec::CubicSpline { bins, bound };
        let spec = match args.flow {
            Family::LinearSpline => FlowSpec::Coupling(transformer_flow(linear)),
            Family::LinearSplineAr => FlowSpec::Autoregressive(transformer_flow(linear)),
            Family::QuadraticSpline => FlowSpec::Coupling(transformer_flow(quadratic)),
            Family::QuadraticSplineAr => FlowSpec::Autoregressive(transformer_flow(quadratic)),
            Family::Cubic => FlowSpec::Coupling(transformer_flow(cubic)),
            Family::CubicAr => FlowSpec::Autoregressive(transformer_flow(cubic)),
            Family::Maf => FlowSpec::Maf(ar),
            Family::Iaf => FlowSpec::Iaf(ar),
            Family::Made => FlowSpec::Made(AutoregressiveSpec { layers: 1, ..ar }),
            Family::Nice => FlowSpec::Nice(coupling),
            Family::Realnvp => FlowSpec::RealNvp(coupling),
        };
        spec.validate()?;
        Ok(spec)
    }
}
