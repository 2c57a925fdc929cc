//! ODE solvers on tensors: fixed-step Euler and RK4, adaptive Dormand-Prince 5(4), and the
//! adjoint method.
//!
//! A state is a list of tensors (`&[Tensor]`), so that a continuous flow can carry its sample
//! `z (B, D)` together with accumulated per-sample integrals (`(B,)` log-determinant, kinetic
//! energy, ...). [`Dynamics`] gives its time derivative; [`solve`] integrates
//! `dy/dt = f(t, y)` from `t0` to `t1` (either direction: `t1 < t0` integrates backwards).
//!
//! # Gradients
//! Every solver step is made of ordinary tensor operations, so the result of [`solve`] is
//! differentiable by candle's backward pass ("discretize-then-optimize", backpropagation
//! through the solver): exact gradients of the discrete solution, memory linear in the number
//! of steps. Dopri5's step sizes are chosen from host values and are constants to the graph.
//! [`adjoint_gradients`] computes the same gradients of the continuous solution with constant
//! memory by integrating the adjoint system backwards (Chen et al. 2018,
//! "Neural Ordinary Differential Equations").

mod adjoint;
mod dopri5;
mod fixed;
#[cfg(test)]
mod tests;

pub use adjoint::{adjoint_gradients, AdjointGradients};

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::{ensure_config, Result};

/// The right-hand side `f(t, y)` of `dy/dt = f(t, y)`.
///
/// `state` holds the tensors of `y`; the result must have one tensor of the same shape per
/// state tensor.
pub trait Dynamics {
    /// `dy/dt` at time `t`.
    fn eval(&self, t: f64, state: &[Tensor]) -> Result<Vec<Tensor>>;
}

impl<F: Fn(f64, &[Tensor]) -> Result<Vec<Tensor>>> Dynamics for F {
    fn eval(&self, t: f64, state: &[Tensor]) -> Result<Vec<Tensor>> {
        self(t, state)
    }
}

/// An ODE solver and its settings.
///
/// | method | order | evaluations of `f` |
/// |---|---|---|
/// | `euler` | 1 | `steps` |
/// | `rk4` | 4 (classic Runge-Kutta) | `4 steps` |
/// | `dopri5` | 5 with a 4th-order error estimate (Dormand & Prince 1980), FSAL | `2 + 6` per step, rejected steps included |
///
/// Dopri5 accepts a step when the RMS over all state entries of
/// `err_i / (atol + rtol max(|y_i|, |y_new_i|))` is at most 1, and scales the step by
/// `clamp(0.9 norm^(-1/5), 0.2, 10)` (at most 1 after a rejection); the first step comes from
/// Hairer's heuristic (one extra evaluation). It fails with [`crate::Error::Numerical`], naming
/// the time reached, after `max_steps` steps (accepted and rejected) or when the step size
/// underflows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum Solver {
    /// Explicit Euler with `steps` equal steps.
    Euler {
        /// Number of steps.
        steps: usize,
    },
    /// Classic 4th-order Runge-Kutta with `steps` equal steps.
    Rk4 {
        /// Number of steps.
        steps: usize,
    },
    /// Adaptive Dormand-Prince 5(4).
    Dopri5 {
        /// Absolute tolerance.
        atol: f64,
        /// Relative tolerance.
        rtol: f64,
        /// Most steps (accepted and rejected) before giving up.
        max_steps: usize,
    },
}

impl Default for Solver {
    /// Dopri5 with `atol = rtol = 1e-5` and at most 1000 steps (FFJORD's training setting).
    fn default() -> Self {
        Solver::Dopri5 { atol: 1e-5, rtol: 1e-5, max_steps: 1000 }
    }
}

impl Solver {
    /// Checks the settings, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Solver::Euler { steps } | Solver::Rk4 { steps } => {
                ensure_config!(steps >= 1, "steps", steps, "at least 1");
            }
            Solver::Dopri5 { atol, rtol, max_steps } => {
                ensure_config!(atol.is_finite() && atol > 0.0, "atol", atol, "a finite value > 0");
                ensure_config!(rtol.is_finite() && rtol > 0.0, "rtol", rtol, "a finite value > 0");
                ensure_config!(max_steps >= 1, "max_steps", max_steps, "at least 1");
            }
        }
        Ok(())
    }
}

/// What one solve did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SolveStats {
    /// Evaluations of `f` (the number of function evaluations, NFE).
    pub evaluations: usize,
    /// Evaluations whose results the returned state depends on: what backpropagation through
    /// the solver differentiates (rejected dopri5 steps and step-size selection excluded).
    pub graph_evaluations: usize,
    /// Accepted steps.
    pub steps: usize,
    /// Rejected steps (dopri5 only).
    pub rejected: usize,
}

/// Function evaluations of a layer's last call, forward and backward, for reporting.
///
/// `backward` counts the evaluations that the gradient computation differentiates (with
/// backpropagation through the solver) or re-evaluates (with the adjoint method).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FunctionEvaluations {
    /// Evaluations of the dynamics in the forward computation.
    pub forward: usize,
    /// Evaluations of the dynamics in the backward computation.
    pub backward: usize,
}

impl std::ops::Add for FunctionEvaluations {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self { forward: self.forward + other.forward, backward: self.backward + other.backward }
    }
}

/// Integrates `dy/dt = dynamics(t, y)` from `(t0, y0)` to `t1` with `solver`; returns `y(t1)`
/// and what the solve did.
///
/// `t0 == t1` returns `y0` unchanged. Errors: invalid solver settings, non-finite times, a
/// dynamics whose result does not match the state, and (dopri5) the step guards.
pub fn solve(
    dynamics: &dyn Dynamics,
    solver: &Solver,
    t0: f64,
    t1: f64,
    y0: &[Tensor],
) -> Result<(Vec<Tensor>, SolveStats)> {
    solver.validate()?;
    ensure_config!(t0.is_finite(), "t0", t0, "a finite time");
    ensure_config!(t1.is_finite(), "t1", t1, "a finite time");
    if t0 == t1 {
        return Ok((y0.to_vec(), SolveStats::default()));
    }
    match *solver {
        Solver::Euler { steps } => fixed::euler(dynamics, t0, t1, y0, steps),
        Solver::Rk4 { steps } => fixed::rk4(dynamics, t0, t1, y0, steps),
        Solver::Dopri5 { atol, rtol, max_steps } => {
            dopri5::solve(dynamics, t0, t1, y0, dopri5::Tolerances { atol, rtol }, max_steps)
        }
    }
}

/// Evaluates `dynamics` and checks that its result matches the state tensor by tensor.
fn eval_checked(dynamics: &dyn Dynamics, t: f64, y: &[Tensor]) -> Result<Vec<Tensor>> {
    let dy = dynamics.eval(t, y)?;
    if dy.len() != y.len() {
        return Err(crate::Error::shape(
            "ODE dynamics",
            format!("{} state tensors", y.len()),
            &[dy.len()],
        ));
    }
    for (a, b) in dy.iter().zip(y) {
        if a.dims() != b.dims() {
            return Err(crate::Error::shape(
                "ODE dynamics (dy/dt must have the state's shape)",
                format!("{:?}", b.dims()),
                a.dims(),
            ));
        }
    }
    Ok(dy)
}

/// `y + sum_j c_j k_j`, tensor by tensor (terms with `c_j = 0` are skipped).
fn combine(y: &[Tensor], terms: &[(f64, &[Tensor])]) -> Result<Vec<Tensor>> {
    y.iter()
        .enumerate()
        .map(|(i, yi)| {
            let mut acc = yi.clone();
            for (c, k) in terms {
                if *c != 0.0 {
                    acc = (acc + (&k[i] * *c)?)?;
                }
            }
            Ok(acc)
        })
        .collect()
}

/// Drops the graph of a state between steps when nothing will be differentiated
/// ([`crate::inference::without_gradients`]): memory then stays that of one step.
fn maybe_detach(y: Vec<Tensor>) -> Vec<Tensor> {
    if crate::inference::gradients_enabled() {
        y
    } else {
        y.iter().map(Tensor::detach).collect()
    }
}

/// A scalar tensor as `f64` (moved to the host first: some devices have no f64).
fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_device(&candle_core::Device::Cpu)?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}
