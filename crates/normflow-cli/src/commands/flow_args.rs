//! The flow architecture flags shared by the commands that build a flow (`train`, ...):
//! `--flow`, `--layers`, `--hidden`, `--blocks`, `--activation`, `--batch-norm`, `--base`, and
//! for continuous flows (`--flow ffjord`) `--time`, `--kinetic-weight`, `--jacobian-weight`,
//! `--noise` and the solver flags ([`OdeArgs`]: `--solver`, `--atol`, `--rtol`, `--steps`,
//! `--max-steps`, `--trace`), which `eval`, `sample` and `plot` also take to override a saved
//! model's solver.

use std::path::Path;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use normflow::bijections::cnf::{HutchinsonNoise, OdeActivation, TraceEstimator};
use normflow::flows::{AutoregressiveSpec, BaseSpec, CouplingSpec, FfjordSpec, FlowSpec};
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
    /// Continuous normalizing flow (FFJORD): CNF blocks solved by an ODE solver.
    Ffjord,
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
    /// Number of flow layers.
    #[arg(long, default_value_t = 5)]
    pub layers: usize,
    /// Width of the conditioner networks' hidden layers.
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// Hidden layers per conditioner network.
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
        let spec = match args.flow {
            Family::Maf => FlowSpec::Maf(ar),
            Family::Iaf => FlowSpec::Iaf(ar),
            Family::Made => FlowSpec::Made(AutoregressiveSpec { layers: 1, ..ar }),
            Family::Nice => FlowSpec::Nice(coupling),
            Family::Realnvp => FlowSpec::RealNvp(coupling),
            Family::Ffjord => return args.ffjord_spec(features, context),
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
