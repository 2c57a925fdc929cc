//! Continuous normalizing flows (Chen et al. 2018; FFJORD, Grathwohl et al. 2019) with RNODE
//! regularization (Finlay et al. 2020).

mod adjoint_op;
mod field;
#[cfg(test)]
mod tests;

pub use field::{LinearField, OdeActivation, OdeNet, OdeNetConfig, VectorField};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::Tensor;
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::Bijection;
use crate::ode::{solve, Dynamics, FunctionEvaluations, SolveStats, Solver};
use crate::params::Params;
use crate::{ensure_config, Error, Result};

/// How `tr(df/dz)` is computed along the solution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TraceEstimator {
    /// `sum_i (J e_i)_i`: `D` Jacobian-vector products per evaluation (small `D`).
    Exact,
    /// Hutchinson's unbiased estimate `v^T J v` with one noise vector `v` per sample, drawn
    /// once per solve (FFJORD): one Jacobian-vector product per evaluation.
    #[default]
    Hutchinson,
}

/// Distribution of Hutchinson's noise (`E[v v^T] = I` for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HutchinsonNoise {
    /// Independent `±1` entries (the lower-variance choice).
    #[default]
    Rademacher,
    /// Independent standard normal entries.
    Gaussian,
}

/// In evaluation mode a CNF on at most this many features uses the exact trace, so that its
/// log-density is a deterministic function of the input; larger ones keep the estimator.
pub const EXACT_EVAL_MAX_FEATURES: usize = 16;

/// Settings of a [`Cnf`] (everything but its vector field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CnfConfig {
    /// Integration time `T > 0` (fixed, not learned).
    pub time: f64,
    /// The ODE solver.
    pub solver: Solver,
    /// Trace estimator in training mode (see [`EXACT_EVAL_MAX_FEATURES`] for evaluation).
    pub trace: TraceEstimator,
    /// Hutchinson noise distribution.
    pub noise: HutchinsonNoise,
    /// RNODE weight of the kinetic energy `int_0^T ||f||^2 dt`.
    pub kinetic_weight: f64,
    /// RNODE weight of the Jacobian Frobenius norm `int_0^T ||df/dz||_F^2 dt`.
    pub jacobian_weight: f64,
    /// Gradients by the adjoint method (constant memory in the number of steps, CPU only)
    /// instead of backpropagation through the solver's steps.
    #[serde(default)]
    pub adjoint: bool,
}

impl Default for CnfConfig {
    /// `T = 0.5`, dopri5 at `1e-5`, Hutchinson with Rademacher noise, no regularization.
    fn default() -> Self {
        Self {
            time: 0.5,
            solver: Solver::default(),
            trace: TraceEstimator::Hutchinson,
            noise: HutchinsonNoise::Rademacher,
            kinetic_weight: 0.0,
            jacobian_weight: 0.0,
            adjoint: false,
        }
    }
}

impl CnfConfig {
    /// Checks every setting, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        ensure_config!(self.time.is_finite() && self.time > 0.0, "time", self.time, "finite, > 0");
        self.solver.validate()?;
        for (name, w) in
            [("kinetic_weight", self.kinetic_weight), ("jacobian_weight", self.jacobian_weight)]
        {
            ensure_config!(w.is_finite() && w >= 0.0, name, w, "a finite value >= 0");
        }
        Ok(())
    }
}

/// A continuous normalizing flow: the map `x = z(0) -> z(T)` of `dz/dt = f(t, z; c)`.
///
/// ```text
/// forward:  z(T) = x + int_0^T f(t, z(t)) dt,   log|det dz(T)/dx| = int_0^T tr(df/dz) dt
/// inverse:  integrate the same ODE from T back to 0; its ladj is minus the forward one
/// ```
///
/// (instantaneous change of variables, Chen et al. 2018). The trace is exact or Hutchinson's
/// estimate ([`TraceEstimator`]); the Jacobian-vector products come from the field in forward
/// mode ([`VectorField`]), so training needs only first-order gradients, which flow by
/// backpropagation through the solver's steps or, with [`CnfConfig::adjoint`], by the adjoint
/// method ([`crate::ode::adjoint_gradients`]) inside candle's backward pass: a custom op whose
/// memory does not grow with the number of steps (CPU only). [`Cnf::dynamics`] exposes the
/// augmented dynamics for calling the adjoint directly.
///
/// In training mode, with nonzero weights, the forward pass also integrates the RNODE terms
/// and reports `mean_b(λ_K int ||f||^2 dt + λ_J int ||df/dz||_F^2 dt)` (the Frobenius norm by the
/// same estimator as the trace: `||J v||^2`) through [`Bijection::auxiliary_loss`]. Every call
/// records its number of function evaluations ([`Bijection::function_evaluations`]).
///
/// Hutchinson noise comes from the layer's own generator, seeded from the parameter store at
/// construction, and is drawn once per solve. In evaluation mode the exact trace is used up to
/// [`EXACT_EVAL_MAX_FEATURES`] features.
///
/// # Shapes
/// `x: (B, D)`, context `(B, C)` -> `z: (B, D)`, ladj `(B,)`.
#[derive(Debug)]
pub struct Cnf {
    field: Arc<dyn VectorField>,
    config: CnfConfig,
    rng: Mutex<ChaCha8Rng>,
    training: AtomicBool,
    auxiliary: Mutex<Option<Tensor>>,
    // Shared with the adjoint op, whose backward pass reports its evaluations later.
    evaluations: Arc<Mutex<FunctionEvaluations>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked mid-call; the value is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cnf {
    /// A CNF with vector field `field`; `params` seeds its noise generator.
    pub fn new(params: &Params, field: Box<dyn VectorField>, config: CnfConfig) -> Result<Self> {
        config.validate()?;
        let seed = params.store().with_rng(|r| r.next_u64());
        Ok(Self {
            field: Arc::from(field),
            config,
            rng: Mutex::new(rand::SeedableRng::seed_from_u64(seed)),
            training: AtomicBool::new(true),
            auxiliary: Mutex::new(None),
            evaluations: Arc::new(Mutex::new(FunctionEvaluations::default())),
        })
    }

    /// A CNF whose field is an [`OdeNet`] created under `params.pp("net")`.
    pub fn with_net(params: &Params, net: &OdeNetConfig, config: CnfConfig) -> Result<Self> {
        let field = OdeNet::new(&params.pp("net"), net)?;
        Self::new(params, Box::new(field), config)
    }

    /// The settings.
    pub fn config(&self) -> &CnfConfig {
        &self.config
    }

    /// Replaces the solver (e.g. a more accurate one for evaluation); the parameters stay.
    pub fn set_solver(&mut self, solver: Solver) -> Result<()> {
        solver.validate()?;
        self.config.solver = solver;
        Ok(())
    }

    /// The augmented dynamics `(z, ladj[, kinetic, frobenius])` this layer integrates, with the
    /// trace computed as in the current mode (fresh Hutchinson noise): for
    /// [`crate::ode::adjoint_gradients`].
    pub fn dynamics<'a>(
        &'a self,
        z: &Tensor,
        context: Option<&'a Tensor>,
        regularize: bool,
    ) -> Result<CnfDynamics<'a>> {
        let tangents = self.tangents(z)?;
        Ok(CnfDynamics {
            field: self.field.as_ref(),
            context,
            tangents: Some(tangents),
            regularize,
        })
    }

    fn check_input(&self, x: &Tensor) -> Result<usize> {
        let d = self.field.features();
        match x.dims() {
            [b, f] if *f == d => Ok(*b),
            dims => Err(Error::shape("continuous flow input", format!("(batch, {d})"), dims)),
        }
    }

    fn exact_trace(&self) -> bool {
        self.config.trace == TraceEstimator::Exact
            || (!self.training.load(Ordering::Relaxed)
                && self.field.features() <= EXACT_EVAL_MAX_FEATURES)
    }

    /// Tangents `(K, B, D)`: the basis (exact trace, `K = D`) or one noise draw (`K = 1`).
    fn tangents(&self, x: &Tensor) -> Result<Tensor> {
        let (b, d) = x.dims2()?;
        if self.exact_trace() {
            let eye = Tensor::eye(d, x.dtype(), x.device())?;
            return Ok(eye.unsqueeze(1)?.broadcast_as((d, b, d))?.contiguous()?);
        }
        let mut rng = lock(&self.rng);
        let values: Vec<f64> = match self.config.noise {
            HutchinsonNoise::Rademacher => {
                (0..b * d).map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 }).collect()
            }
            HutchinsonNoise::Gaussian => {
                (0..b * d).map(|_| rng.sample(rand_distr::StandardNormal)).collect()
            }
        };
        crate::random::from_f64(values, (1, b, d).into(), x.dtype(), x.device())
    }

    /// Integrates from `t0` to `t1`; with `ladj`, also the trace integral (and, when
    /// `regularize`, the RNODE integrals).
    fn integrate(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        (t0, t1): (f64, f64),
        ladj: bool,
        regularize: bool,
    ) -> Result<(Vec<Tensor>, SolveStats)> {
        let batch = self.check_input(x)?;
        if ladj && self.config.adjoint && crate::inference::gradients_enabled() {
            return self.integrate_adjoint(x, context, (t0, t1), regularize);
        }
        let zeros = || Tensor::zeros(batch, x.dtype(), x.device());
        let (dynamics, state) = if ladj {
            let dynamics = CnfDynamics {
                field: self.field.as_ref(),
                context,
                tangents: Some(self.tangents(x)?),
                regularize,
            };
            let mut state = vec![x.clone(), zeros()?];
            if regularize {
                state.extend([zeros()?, zeros()?]);
            }
            (dynamics, state)
        } else {
            let dynamics =
                CnfDynamics { field: self.field.as_ref(), context, tangents: None, regularize };
            (dynamics, vec![x.clone()])
        };
        let (out, stats) = solve(&dynamics, &self.config.solver, t0, t1, &state)?;
        *lock(&self.evaluations) =
            FunctionEvaluations { forward: stats.evaluations, backward: stats.graph_evaluations };
        Ok((out, stats))
    }

    /// [`Cnf::integrate`] through the adjoint custom op (see `adjoint_op.rs`).
    fn integrate_adjoint(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        span: (f64, f64),
        regularize: bool,
    ) -> Result<(Vec<Tensor>, SolveStats)> {
        if !x.device().is_cpu() {
            return Err(Error::config("adjoint", true, "the adjoint method runs on the CPU only"));
        }
        let params = self.field.parameters();
        let flat: Vec<Tensor> =
            params.iter().map(|p| p.flatten_all()).collect::<candle_core::Result<_>>()?;
        let theta = Tensor::cat(&flat, 0)?;
        let op = adjoint_op::AdjointOp {
            field: self.field.clone(),
            context: context.cloned(),
            tangents: self.tangents(x)?,
            regularize,
            solver: self.config.solver,
            span,
            evaluations: self.evaluations.clone(),
        };
        *lock(&self.evaluations) = FunctionEvaluations::default();
        let out = x.contiguous()?.apply_op2(&theta, op)?;
        let d = self.field.features();
        let mut state = vec![out.narrow(1, 0, d)?];
        for i in 0..if regularize { 3 } else { 1 } {
            state.push(out.narrow(1, d + i, 1)?.squeeze(1)?);
        }
        Ok((state, SolveStats::default()))
    }

    fn adaptive(&self) -> bool {
        matches!(self.config.solver, Solver::Dopri5 { .. })
    }

    fn regularizing(&self) -> bool {
        self.training.load(Ordering::Relaxed)
            && (self.config.kinetic_weight > 0.0 || self.config.jacobian_weight > 0.0)
    }
}

impl Bijection for Cnf {
    fn forward_and_ladj(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let regularize = self.regularizing();
        let (out, _) = self.integrate(x, context, (0.0, self.config.time), true, regularize)?;
        *lock(&self.auxiliary) = if regularize {
            let penalty = ((&out[2] * self.config.kinetic_weight)?
                + (&out[3] * self.config.jacobian_weight)?)?;
            Some(penalty.mean_all()?)
        } else {
            None
        };
        Ok((out[0].clone(), out[1].clone()))
    }

    fn inverse_and_ladj(&self, z: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (out, _) = self.integrate(z, context, (self.config.time, 0.0), true, false)?;
        Ok((out[0].clone(), out[1].clone()))
    }

    // Without the log-determinant a fixed-step solve skips the trace and gives the same `z`.
    // An adaptive solve would choose other steps without the trace in its error norm, so it
    // computes the trace anyway: `forward` and `forward_and_ladj` must agree.
    fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        if self.adaptive() {
            return Ok(self.forward_and_ladj(x, context)?.0);
        }
        let (out, _) = self.integrate(x, context, (0.0, self.config.time), false, false)?;
        Ok(out[0].clone())
    }

    fn inverse(&self, z: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        if self.adaptive() {
            return Ok(self.inverse_and_ladj(z, context)?.0);
        }
        let (out, _) = self.integrate(z, context, (self.config.time, 0.0), false, false)?;
        Ok(out[0].clone())
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }

    /// The last call's regularizer and solver counts are kept for the caller, and an adaptive
    /// solver's steps depend on the whole batch.
    fn rows_independent(&self) -> bool {
        false
    }

    fn auxiliary_loss(&self) -> Result<Option<Tensor>> {
        Ok(lock(&self.auxiliary).clone())
    }

    fn function_evaluations(&self) -> Option<FunctionEvaluations> {
        Some(*lock(self.evaluations.as_ref()))
    }
}

/// The augmented CNF dynamics: state `[z (B, D), ladj (B,)]`, plus `[kinetic (B,), frobenius
/// (B,)]` when regularizing, or `[z]` alone without tangents.
///
/// `d ladj/dt = tr(df/dz) ≈ sum_k v_k^T J v_k`, `d kinetic/dt = ||f||^2`,
/// `d frobenius/dt = sum_k ||J v_k||^2`.
#[derive(Debug)]
pub struct CnfDynamics<'a> {
    field: &'a dyn VectorField,
    context: Option<&'a Tensor>,
    tangents: Option<Tensor>,
    regularize: bool,
}

impl Dynamics for CnfDynamics<'_> {
    fn eval(&self, t: f64, state: &[Tensor]) -> Result<Vec<Tensor>> {
        let z = &state[0];
        let (f, jv) = self.field.eval(t, z, self.context, self.tangents.as_ref())?;
        let (Some(v), Some(jv)) = (&self.tangents, jv) else {
            return Ok(vec![f]);
        };
        let trace = (&jv * v)?.sum(2)?.sum(0)?;
        let mut out = vec![f.clone(), trace];
        if self.regularize {
            out.push(f.sqr()?.sum(1)?);
            out.push(jv.sqr()?.sum(2)?.sum(0)?);
        }
        Ok(out)
    }
}
