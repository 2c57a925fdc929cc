//! The flow architecture flags shared by the commands that build a flow (`train`, ...):
//! `--flow`, `--layers`, `--hidden`, `--blocks`, `--activation`, `--batch-norm`, `--base`, and
//! the hyperparameters of the non-affine families (`--naf-units`, `--naf-dense`,
//! `--sos-polynomials`, `--sos-degree`, `--bernstein-degree`).

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use normflow::flows::{
    AutoregressiveSpec, BaseSpec, BnafSpec, CouplingSpec, FlowSpec, TransformerFlowSpec,
    TransformerSpec, BERNSTEIN_DEGREE, NAF_HIDDEN, SOS_DEGREE, SOS_POLYNOMIALS,
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
    /// Neural autoregressive flow: MADE layers with a deep sigmoidal map (DSF; DDSF with
    /// --naf-dense); sampling inverts it numerically.
    Naf,
    /// Block neural autoregressive flow: --layers BNAF layers of --blocks hidden layers with
    /// about --hidden units each (rounded up to a multiple of the data columns).
    Bnaf,
    /// Sum-of-squares polynomial flow (MADE layers; --sos-polynomials, --sos-degree).
    Sos,
    /// Bernstein polynomial flow (MADE layers; --bernstein-degree).
    Bernstein,
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
    /// naf: sigmoid units per layer of the deep sigmoidal map.
    #[arg(long, default_value_t = NAF_HIDDEN)]
    pub naf_units: usize,
    /// naf: the dense two-layer form (DDSF) instead of DSF.
    #[arg(long)]
    pub naf_dense: bool,
    /// sos: number of squared polynomials.
    #[arg(long, default_value_t = SOS_POLYNOMIALS)]
    pub sos_polynomials: usize,
    /// sos: degree of each squared polynomial (the map has degree 2r + 1).
    #[arg(long, default_value_t = SOS_DEGREE)]
    pub sos_degree: usize,
    /// bernstein: degree of the Bernstein polynomial.
    #[arg(long, default_value_t = BERNSTEIN_DEGREE)]
    pub bernstein_degree: usize,
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
        if matches!(args.flow, Family::Nice | Family::Realnvp) && features < 2 {
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
        let transformer = match args.flow {
            Family::Naf => {
                if args.naf_units == 0 {
                    bail!("--naf-units 0: a sigmoidal flow needs at least 1 unit");
                }
                Some(TransformerSpec::DeepSigmoid { hidden: args.naf_units, dense: args.naf_dense })
            }
            Family::Sos => {
                if args.sos_polynomials == 0 {
                    bail!("--sos-polynomials 0: must be at least 1");
                }
                if args.sos_degree > 8 {
                    bail!("--sos-degree {}: must be at most 8", args.sos_degree);
                }
                Some(TransformerSpec::Sos {
                    polynomials: args.sos_polynomials,
                    degree: args.sos_degree,
                })
            }
            Family::Bernstein => {
                if args.bernstein_degree == 0 {
                    bail!("--bernstein-degree 0: must be at least 1");
                }
                Some(TransformerSpec::Bernstein { degree: args.bernstein_degree })
            }
            _ => None,
        };
        if args.flow == Family::Bnaf && args.batch_norm {
            bail!("--batch-norm: bnaf has no batch normalization between its layers");
        }
        let spec = match (args.flow, transformer) {
            (_, Some(transformer)) => FlowSpec::Autoregressive(TransformerFlowSpec {
                context_features: context,
                layers: args.layers,
                hidden: args.hidden,
                blocks: args.blocks,
                activation,
                batch_norm: args.batch_norm,
                base: ar.base.clone(),
                ..TransformerFlowSpec::new(features, transformer)
            }),
            (Family::Bnaf, _) => FlowSpec::Bnaf(BnafSpec {
                context_features: context,
                layers: args.layers,
                hidden_factor: args.hidden.div_ceil(features.max(1)),
                hidden_layers: args.blocks,
                base: ar.base.clone(),
                ..BnafSpec::new(features)
            }),
            (Family::Maf, _) => FlowSpec::Maf(ar),
            (Family::Iaf, _) => FlowSpec::Iaf(ar),
            (Family::Made, _) => FlowSpec::Made(AutoregressiveSpec { layers: 1, ..ar }),
            (Family::Nice, _) => FlowSpec::Nice(coupling),
            (Family::Realnvp, _) => FlowSpec::RealNvp(coupling),
            (Family::Naf | Family::Sos | Family::Bernstein, None) => {
                bail!("internal: no transformer for a transformer family")
            }
        };
        spec.validate()?;
        Ok(spec)
    }
}
