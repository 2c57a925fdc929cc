//! The flow architecture flags shared by the commands that build a flow (`train`, ...):
//! `--flow`, `--layers`, `--hidden`, `--blocks`, `--activation`, `--batch-norm`, `--base`, the
//! spline flags `--bins`, `--bound`, the image flags `--image-shape`, `--levels`, and the
//! Sylvester flags `--sylvester-variant`, `--sylvester-m`, `--sylvester-reflections`.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use normflow::flows::{
    AutoregressiveSpec, BaseSpec, CouplingSpec, FlowSpec, ImageFlowSpec, SylvesterSpec,
    SylvesterVariant, TransformerFlowSpec, TransformerSpec, VariationalSpec,
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
    /// Glow on 8-bit images (rows of pixel values; see --image-shape, --levels).
    Glow,
    /// RealNVP's multi-scale model on 8-bit images (see --image-shape, --levels).
    RealnvpImage,
    /// Neural spline flow: rational-quadratic spline couplings (Durkan et al. 2019).
    Nsf,
    /// Autoregressive neural spline flow: rational-quadratic splines conditioned by MADEs.
    NsfAr,
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
    /// Planar flow (explicit sampling; density by a scalar solve per layer).
    Planar,
    /// Radial flow (closed form both ways).
    Radial,
    /// Sylvester flow (explicit sampling; density by M scalar solves per layer).
    Sylvester,
}

impl Family {
    /// Whether the family's layers are couplings (they need at least 2 data columns).
    fn is_coupling(self) -> bool {
        matches!(
            self,
            Family::Nice
                | Family::Realnvp
                | Family::Nsf
                | Family::LinearSpline
                | Family::QuadraticSpline
                | Family::Cubic
        )
    }

    /// Whether the family's element-wise map is a spline (it takes `--bins` and `--bound`).
    fn is_spline(self) -> bool {
        matches!(
            self,
            Family::Nsf
                | Family::NsfAr
                | Family::LinearSpline
                | Family::LinearSplineAr
                | Family::QuadraticSpline
                | Family::QuadraticSplineAr
                | Family::Cubic
                | Family::CubicAr
        )
    }

    /// The default `--bound`: 5 for the rational-quadratic splines (heavy-tailed columns,
    /// docs/NONAFFINE.md), 3 for the others (the setting their results were measured with).
    fn default_bound(self) -> f64 {
        if matches!(self, Family::Nsf | Family::NsfAr) {
            5.0
        } else {
            3.0
        }
    }
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
    /// Number of flow layers (image flows: coupling steps per level).
    #[arg(long, default_value_t = 5)]
    pub layers: usize,
    /// Width of the conditioner networks' hidden layers (image flows: channels of the
    /// convolutional conditioners).
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// Hidden layers per conditioner network (image flows: residual blocks).
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
    /// Image flows: the shape C,H,W of each row's pixels [default: 1,S,S when the row has S^2
    /// values].
    #[arg(long)]
    pub image_shape: Option<String>,
    /// Image flows: scales of the multi-scale architecture (each but the last squeezes and
    /// factors out half the channels).
    #[arg(long, default_value_t = 2)]
    pub levels: usize,
    /// Spline flows (nsf, cubic, linear-spline, quadratic-spline and their -ar forms): number of
    /// bins [default: 8].
    #[arg(long)]
    pub bins: Option<usize>,
    /// Spline flows: the spline acts on [-bound, bound] of the standardized data, the identity
    /// outside [default: 5 for nsf and nsf-ar, 3 for the other splines].
    #[arg(long, allow_negative_numbers = true)]
    pub bound: Option<f64>,
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

/// `C,H,W` from `--image-shape`, or `1,S,S` for `S^2` features.
fn image_shape(text: Option<&str>, features: usize) -> Result<[usize; 3]> {
    if let Some(text) = text {
        let dims: Vec<usize> =
            text.split(',').map(|v| v.trim().parse()).collect::<Result<_, _>>().map_err(|_| {
                anyhow::anyhow!("--image-shape {text}: expected C,H,W (e.g. 1,28,28)")
            })?;
        let [c, h, w] = dims[..] else {
            bail!("--image-shape {text}: expected three numbers C,H,W (e.g. 1,28,28)");
        };
        if c * h * w != features {
            bail!(
                "--image-shape {text} has {} values per image but the data rows have {features}",
                c * h * w
            );
        }
        return Ok([c, h, w]);
    }
    let side = (features as f64).sqrt().round() as usize;
    if side * side != features {
        bail!("rows of {features} values are not square images: give --image-shape C,H,W");
    }
    Ok([1, side, side])
}

/// The family as `--flow` spells it.
fn family_name(family: Family) -> String {
    family.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
}

impl FlowArgs {
    /// Whether `--flow` is an image flow (pixel data, dequantized in training).
    pub fn is_image(&self) -> bool {
        matches!(self.flow, Family::Glow | Family::RealnvpImage)
    }

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
        let image = || -> Result<ImageFlowSpec> {
            let [c, h, w] = image_shape(args.image_shape.as_deref(), features)?;
            if context > 0 {
                bail!("image flows are unconditional: drop --context-columns");
            }
            Ok(ImageFlowSpec {
                levels: args.levels,
                steps: args.layers,
                hidden: args.hidden,
                blocks: args.blocks,
                ..ImageFlowSpec::new(c, h, w)
            })
        };
        let transformer_base = coupling.base.clone();
        let transformer_flow = |transformer: TransformerSpec| TransformerFlowSpec {
            context_features: context,
            layers: args.layers,
            hidden: args.hidden,
            blocks: args.blocks,
            activation,
            batch_norm: args.batch_norm,
            base: transformer_base.clone(),
            ..TransformerFlowSpec::new(features, transformer)
        };
        for (flag, given) in [("--bins", args.bins.is_some()), ("--bound", args.bound.is_some())] {
            if given && !args.flow.is_spline() {
                bail!(
                    "{flag} applies to the spline flows only (nsf, cubic, linear-spline, \
                     quadratic-spline and their -ar forms)"
                );
            }
        }
        let bins = args.bins.unwrap_or(8);
        if !(2..=4096).contains(&bins) {
            bail!("--bins {bins}: must be between 2 and 4096");
        }
        let bound = args.bound.unwrap_or(args.flow.default_bound());
        if !(bound.is_finite() && bound > 0.0) {
            bail!("--bound {bound}: must be a positive finite number");
        }
        let rq = TransformerSpec::rational_quadratic(bins, bound);
        let linear = TransformerSpec::LinearSpline { bins, bound };
        let quadratic = TransformerSpec::QuadraticSpline { bins, bound };
        let cubic = TransformerSpec::CubicSpline { bins, bound };
        let spec = match args.flow {
            Family::Glow => FlowSpec::Glow(image()?),
            Family::RealnvpImage => FlowSpec::RealNvpImage(image()?),
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
            Family::Nsf => FlowSpec::Coupling(transformer_flow(rq)),
            Family::NsfAr => FlowSpec::Autoregressive(transformer_flow(rq)),
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
