//! The flow architecture flags shared by the commands that build a flow (`train`, ...):
//! `--flow`, `--layers`, `--hidden`, `--blocks`, `--activation`, `--batch-norm`, `--base`, the
//! spline flags `--bins`, `--bound`, the image flags `--image-shape`, `--levels`,
//! `--log-scale-bound`, the Sylvester
//! flags `--sylvester-variant`, `--sylvester-m`, `--sylvester-reflections`, the non-affine
//! families' `--naf-units`, `--naf-dense`, `--sos-polynomials`, `--sos-degree`,
//! `--bernstein-degree`, Flow++'s `--components`, `--dequant-steps`, `--dequant-hidden`, and for continuous flows (`--flow ffjord`) `--time`, `--kinetic-weight`,
//! `--jacobian-weight`, `--noise` and the solver flags ([`OdeArgs`]: `--solver`, `--atol`,
//! `--rtol`, `--steps`, `--max-steps`, `--trace`), which `eval`, `sample` and `plot` also take to
//! override a saved model's solver.

use std::path::Path;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use normflow::bijections::cnf::{HutchinsonNoise, OdeActivation, TraceEstimator};
use normflow::bijections::DequantizationSpec;
use normflow::flows::{
    AutoregressiveSpec, BaseSpec, BnafSpec, CouplingSpec, FfjordSpec, FlowSpec, FlowppSpec,
    ImageFlowSpec, SylvesterSpec, SylvesterVariant, TransformerFlowSpec, TransformerSpec,
    VariationalSpec, BERNSTEIN_DEGREE, NAF_HIDDEN, SOS_DEGREE, SOS_POLYNOMIALS,
};
use normflow::model::Model;
use normflow::nn::Activation;
use normflow::ode::Solver;
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
    /// Flow++ on 8-bit images: logistic-mixture couplings with gated convolutions and
    /// variational dequantization (see --components, --dequant-steps, --levels).
    Flowpp,
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
    /// Continuous normalizing flow (FFJORD): CNF blocks solved by an ODE solver.
    Ffjord,
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
    /// log(1 + e^x) (ffjord only)
    Softplus,
}

/// ODE solvers of continuous flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum SolverKind {
    /// Adaptive Dormand-Prince 5(4) (--atol, --rtol, --max-steps).
    Dopri5,
    /// Classic Runge-Kutta with --steps fixed steps.
    Rk4,
    /// Explicit Euler with --steps fixed steps.
    Euler,
}

/// Trace estimators of continuous flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum TraceKind {
    /// D Jacobian-vector products per evaluation (small D).
    Exact,
    /// Hutchinson's estimator: one Jacobian-vector product with random noise.
    Hutchinson,
}

/// Hutchinson noise distributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum NoiseKind {
    /// Independent ±1 entries.
    Rademacher,
    /// Independent standard normal entries.
    Gaussian,
}

/// Solver flags of continuous flows (`--flow ffjord`): chosen at training, and overridable
/// when a saved model is evaluated, sampled or plotted (e.g. a tighter tolerance).
#[derive(Debug, Clone, Default, Args)]
pub struct OdeArgs {
    /// ODE solver of continuous flows [training default: dopri5].
    #[arg(long, value_enum)]
    pub solver: Option<SolverKind>,
    /// Absolute tolerance of dopri5 [default: 1e-5].
    #[arg(long, allow_negative_numbers = true)]
    pub atol: Option<f64>,
    /// Relative tolerance of dopri5 [default: 1e-5].
    #[arg(long, allow_negative_numbers = true)]
    pub rtol: Option<f64>,
    /// Steps of rk4 and euler over each block's time [default: 20].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Most dopri5 steps per solve before failing [default: 1000].
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Trace estimator of continuous flows in training [training default: hutchinson]
    /// (evaluation uses the exact trace up to 16 features).
    #[arg(long, value_enum)]
    pub trace: Option<TraceKind>,
}

impl OdeArgs {
    /// Whether any solver flag was given.
    pub fn any(&self) -> bool {
        self.solver.is_some()
            || self.atol.is_some()
            || self.rtol.is_some()
            || self.steps.is_some()
            || self.max_steps.is_some()
            || self.trace.is_some()
    }

    /// Applies the given flags to `spec`, keeping its other settings; flags that do not fit
    /// the resulting solver (`--steps` with dopri5, `--atol` with rk4) are errors.
    pub fn apply(&self, spec: &mut FfjordSpec) -> Result<()> {
        let kind = self.solver.unwrap_or(match spec.solver {
            Solver::Dopri5 { .. } => SolverKind::Dopri5,
            Solver::Rk4 { .. } => SolverKind::Rk4,
            Solver::Euler { .. } => SolverKind::Euler,
        });
        spec.solver = match kind {
            SolverKind::Dopri5 => {
                if self.steps.is_some() {
                    bail!("--steps applies to --solver rk4 or euler; dopri5 takes --atol, --rtol, --max-steps");
                }
                let (atol, rtol, max_steps) = match spec.solver {
                    Solver::Dopri5 { atol, rtol, max_steps } => (atol, rtol, max_steps),
                    _ => (1e-5, 1e-5, 1000),
                };
                Solver::Dopri5 {
                    atol: self.atol.unwrap_or(atol),
                    rtol: self.rtol.unwrap_or(rtol),
                    max_steps: self.max_steps.unwrap_or(max_steps),
                }
            }
            fixed => {
                if self.atol.is_some() || self.rtol.is_some() || self.max_steps.is_some() {
                    bail!("--atol, --rtol and --max-steps apply to --solver dopri5; rk4 and euler take --steps");
                }
                let steps = match spec.solver {
                    Solver::Rk4 { steps } | Solver::Euler { steps } => steps,
                    Solver::Dopri5 { .. } => 20,
                };
                let steps = self.steps.unwrap_or(steps);
                if fixed == SolverKind::Rk4 {
                    Solver::Rk4 { steps }
                } else {
                    Solver::Euler { steps }
                }
            }
        };
        if let Some(t) = self.trace {
            spec.trace = match t {
                TraceKind::Exact => TraceEstimator::Exact,
                TraceKind::Hutchinson => TraceEstimator::Hutchinson,
            };
        }
        spec.solver.validate()?;
        Ok(())
    }
}

/// Loads a model directory; with solver flags, rebuilds its continuous flow with them (same
/// parameters, same training record).
pub fn load_model_with(dir: &Path, ode: &OdeArgs) -> Result<Model> {
    let model = super::load_model(dir)?;
    if !ode.any() {
        return Ok(model);
    }
    let mut spec = model.spec().clone();
    let FlowSpec::Ffjord(ffjord) = &mut spec.flow else {
        bail!(
            "--solver, --atol, --rtol, --steps, --max-steps and --trace apply to continuous flows              (ffjord); the model in {} is a {}",
            dir.display(),
            spec.flow.family()
        );
    };
    ode.apply(ffjord)?;
    let mut rebuilt = Model::new(
        spec.flow,
        spec.preprocessing,
        spec.context_preprocessing,
        spec.seed,
        model.dtype(),
        model.device(),
    )?;
    rebuilt.store().load_tensors(&model.store().tensors().into_iter().collect(), dir)?;
    if let Some(training) = spec.training {
        rebuilt.set_training_summary(training);
    }
    Ok(rebuilt)
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
    /// Hidden non-linearity [default: relu; tanh for ffjord].
    #[arg(long, value_enum)]
    pub activation: Option<Act>,
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
    /// glow and realnvp-image: bound S of each affine coupling's log-scale (one coupling scales
    /// a pixel by a factor in (e^-S, e^S)) [default: 2; models trained before it existed used
    /// 6.9, the bound of the tabular flows, see docs/IMAGES.md].
    #[arg(long)]
    pub log_scale_bound: Option<f64>,
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
    /// Integration time T of each CNF block (ffjord) [default: 0.5].
    #[arg(long, allow_negative_numbers = true)]
    pub time: Option<f64>,
    /// RNODE kinetic-energy weight (ffjord) [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub kinetic_weight: Option<f64>,
    /// RNODE Jacobian-Frobenius weight (ffjord) [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub jacobian_weight: Option<f64>,
    /// Hutchinson noise (ffjord) [default: rademacher].
    #[arg(long, value_enum)]
    pub noise: Option<NoiseKind>,
    /// Train by the adjoint method (constant memory in the solver steps) instead of
    /// backpropagation through the solver (ffjord).
    #[arg(long)]
    pub adjoint: bool,
    #[command(flatten)]
    pub ode: OdeArgs,
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
    /// flowpp: logistic mixture components per coupling [default: 8].
    #[arg(long)]
    pub components: Option<usize>,
    /// flowpp: coupling layers of the variational dequantizer q(u | x); 0 = uniform
    /// dequantization [default: 2].
    #[arg(long)]
    pub dequant_steps: Option<usize>,
    /// flowpp: hidden channels of the dequantizer's conditioners [default: 16].
    #[arg(long)]
    pub dequant_hidden: Option<usize>,
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

impl Family {
    /// The gradient-norm clipping `train` uses when `--clip` is not given (0 = none).
    ///
    /// None for the MADE- and MLP-conditioned affine and rational-quadratic families: at the
    /// defaults (100 epochs, patience 20) clipping at 5 cost them 0.3-0.5 nats of test
    /// log-likelihood on UCI protein (MAF, RealNVP and NSF, two seeds each) and 0-0.05 on
    /// power_plant. Clipped every step, the gradients reach Adam with a constant norm, so its
    /// moments lose their scale; the non-finite-step guard already handles divergence. 5 for
    /// the others: BNAF was 0.04-0.05 nats better with it on power_plant, and the image,
    /// continuous and variational presets were tuned with it.
    pub fn default_clip(self) -> f64 {
        match self {
            Family::Made
            | Family::Maf
            | Family::Iaf
            | Family::Nice
            | Family::Realnvp
            | Family::Nsf
            | Family::NsfAr => 0.0,
            _ => 5.0,
        }
    }
}

impl FlowArgs {
    /// Whether `--flow` is an image flow (pixel data, dequantized in training).
    pub fn is_image(&self) -> bool {
        matches!(self.flow, Family::Glow | Family::RealnvpImage | Family::Flowpp)
    }

    /// Whether training adds uniform noise to the pixels: image flows without a variational
    /// dequantizer of their own.
    pub fn uniform_dequantization(&self) -> bool {
        self.is_image() && !(self.flow == Family::Flowpp && self.dequant_steps != Some(0))
    }

    /// The validated spec of a flow on `features` data columns with `context` context columns.
    pub fn spec(&self, features: usize, context: usize) -> Result<FlowSpec> {
        let args = self;
        if args.flow == Family::Ffjord {
            return args.ffjord_spec(features, context);
        }
        let continuous = args.ode.any()
            || args.time.is_some()
            || args.kinetic_weight.is_some()
            || args.jacobian_weight.is_some()
            || args.noise.is_some()
            || args.adjoint;
        if continuous {
            bail!(
                "--time, --kinetic-weight, --jacobian-weight, --noise, --adjoint and the solver flags apply to \
                 --flow ffjord only"
            );
        }
        let activation = match args.activation.unwrap_or(Act::Relu) {
            Act::Relu => Activation::Relu,
            Act::Tanh => Activation::Tanh,
            Act::Silu => Activation::Silu,
            Act::Elu => Activation::Elu,
            Act::Softplus => {
                bail!("--activation softplus is for --flow ffjord; use relu, tanh, silu or elu")
            }
        };
        if args.flow.is_coupling() && features < 2 {
            bail!(
                "--flow {} needs at least 2 data columns (its coupling layers split them in two); \
             the data has {features} data column: use --flow maf",
                family_name(args.flow)
            );
        }
        if args.log_scale_bound.is_some()
            && !matches!(args.flow, Family::Glow | Family::RealnvpImage)
        {
            bail!(
                "--log-scale-bound is for --flow glow and realnvp-image (their affine couplings)"
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
                log_scale_bound: args
                    .log_scale_bound
                    .unwrap_or(normflow::bijections::IMAGE_LOG_SCALE_BOUND),
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
        let polynomial_or_sigmoid = match args.flow {
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
        let flowpp_flags = args.components.is_some()
            || args.dequant_steps.is_some()
            || args.dequant_hidden.is_some();
        if flowpp_flags && args.flow != Family::Flowpp {
            bail!("--components, --dequant-steps and --dequant-hidden need --flow flowpp");
        }
        if args.flow == Family::Bnaf && args.batch_norm {
            bail!("--batch-norm: bnaf has no batch normalization between its layers");
        }
        let rq = TransformerSpec::rational_quadratic(bins, bound);
        let linear = TransformerSpec::LinearSpline { bins, bound };
        let quadratic = TransformerSpec::QuadraticSpline { bins, bound };
        let cubic = TransformerSpec::CubicSpline { bins, bound };
        let spec = match args.flow {
            Family::Glow => FlowSpec::Glow(image()?),
            Family::RealnvpImage => FlowSpec::RealNvpImage(image()?),
            Family::Flowpp => {
                let image = image()?;
                let defaults = FlowppSpec::new(image.channels, image.height, image.width);
                let dequantization = match (defaults.dequantization, args.dequant_steps) {
                    (_, Some(0)) => {
                        if args.dequant_hidden.is_some() {
                            bail!("--dequant-hidden needs a dequantizer: drop --dequant-steps 0");
                        }
                        None
                    }
                    (Some(d), steps) => Some(DequantizationSpec {
                        steps: steps.unwrap_or(d.steps),
                        hidden: args.dequant_hidden.unwrap_or(d.hidden),
                        ..d
                    }),
                    (None, _) => bail!("internal: flowpp has no default dequantizer"),
                };
                FlowSpec::Flowpp(FlowppSpec {
                    image,
                    components: args.components.unwrap_or(defaults.components),
                    dequantization,
                })
            }
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
            Family::Ffjord => return args.ffjord_spec(features, context),
            Family::Naf | Family::Sos | Family::Bernstein => match polynomial_or_sigmoid {
                Some(transformer) => FlowSpec::Autoregressive(transformer_flow(transformer)),
                None => bail!("internal: no transformer for a transformer family"),
            },
            Family::Bnaf => FlowSpec::Bnaf(BnafSpec {
                context_features: context,
                layers: args.layers,
                hidden_factor: args.hidden.div_ceil(features.max(1)),
                hidden_layers: args.blocks,
                base: ar.base.clone(),
                ..BnafSpec::new(features)
            }),
        };
        spec.validate()?;
        Ok(spec)
    }

    fn ffjord_spec(&self, features: usize, context: usize) -> Result<FlowSpec> {
        if self.batch_norm {
            bail!("--batch-norm is not available for --flow ffjord");
        }
        let activation = match self.activation.unwrap_or(Act::Tanh) {
            Act::Tanh => OdeActivation::Tanh,
            Act::Softplus => OdeActivation::Softplus,
            other => bail!(
                "--flow ffjord needs a smooth activation (tanh or softplus), not {}",
                other.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
            ),
        };
        let defaults = FfjordSpec::new(features);
        let mut spec = FfjordSpec {
            context_features: context,
            layers: self.layers,
            hidden: self.hidden,
            blocks: self.blocks,
            activation,
            time: self.time.unwrap_or(defaults.time),
            kinetic_weight: self.kinetic_weight.unwrap_or(0.0),
            jacobian_weight: self.jacobian_weight.unwrap_or(0.0),
            noise: match self.noise {
                Some(NoiseKind::Gaussian) => HutchinsonNoise::Gaussian,
                Some(NoiseKind::Rademacher) | None => HutchinsonNoise::Rademacher,
            },
            adjoint: self.adjoint,
            base: base_spec(&self.base, context > 0)?,
            ..defaults
        };
        self.ode.apply(&mut spec)?;
        let spec = FlowSpec::Ffjord(spec);
        spec.validate()?;
        Ok(spec)
    }
}
