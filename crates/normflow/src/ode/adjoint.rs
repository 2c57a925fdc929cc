//! The adjoint method: gradients of an ODE solution with memory independent of the number of
//! steps (Chen et al. 2018, "Neural Ordinary Differential Equations", algorithm 1).

use candle_core::{Tensor, Var};

use super::{solve, Dynamics, SolveStats, Solver};
use crate::{Error, Result};

/// The result of [`adjoint_gradients`].
#[derive(Debug, Clone)]
pub struct AdjointGradients {
    /// `dL/dy(t0)`, one tensor per state tensor.
    pub initial_state: Vec<Tensor>,
    /// `dL/dθ`, one tensor per parameter (zeros for a parameter `f` does not use).
    pub params: Vec<Tensor>,
    /// The state recovered at `t0` by integrating backwards (a check of the solve's accuracy).
    pub recovered_initial_state: Vec<Tensor>,
    /// What the backward solve did; each of its evaluations runs `f` and one backward pass.
    pub stats: SolveStats,
}

/// Gradients of a loss `L(y(t1))` with respect to the initial state and the parameters of the
/// dynamics, by the adjoint method.
///
/// Integrates the augmented system backwards from `t1` to `t0`:
///
/// ```text
/// dy/dt = f(t, y),   da/dt = -a^T df/dy,   dg/dt = -a^T df/dθ,
/// y(t1) = final_state,   a(t1) = dL/dy(t1) = grad_final,   g(t1) = 0
/// ```
///
/// so that `a(t0) = dL/dy(t0)` and `g(t0) = dL/dθ`. The vector-Jacobian products
/// `a^T df/dy`, `a^T df/dθ` are one first-order backward pass of `sum(a * f(t, y))` per
/// evaluation, with `y` a fresh variable and the parameters the tensors in `params` (the
/// `Var`-backed tensors `f` computes with). Nothing of the forward solve is kept: memory does
/// not grow with the number of steps.
///
/// The result approximates the gradient of the continuous solution; backpropagation through
/// [`solve`] gives the exact gradient of the discrete one. They agree to the solvers'
/// accuracy (tested).
pub fn adjoint_gradients(
    dynamics: &dyn Dynamics,
    solver: &Solver,
    t0: f64,
    t1: f64,
    final_state: &[Tensor],
    grad_final: &[Tensor],
    params: &[Tensor],
) -> Result<AdjointGradients> {
    if grad_final.len() != final_state.len() {
        return Err(Error::shape(
            "adjoint: one gradient per state tensor",
            format!("{}", final_state.len()),
            &[grad_final.len()],
        ));
    }
    let n = final_state.len();
    let adjoint = AdjointDynamics { inner: dynamics, n, params };
    let mut y1: Vec<Tensor> = final_state.iter().map(Tensor::detach).collect();
    y1.extend(grad_final.iter().map(Tensor::detach));
    for p in params {
        y1.push(p.zeros_like()?);
    }
    let (y0, stats) = solve(&adjoint, solver, t1, t0, &y1)?;
    Ok(AdjointGradients {
        recovered_initial_state: y0[..n].to_vec(),
        initial_state: y0[n..2 * n].to_vec(),
        params: y0[2 * n..].to_vec(),
        stats,
    })
}

/// The augmented system `(y, a, g)` of [`adjoint_gradients`].
struct AdjointDynamics<'a> {
    inner: &'a dyn Dynamics,
    n: usize,
    params: &'a [Tensor],
}

impl Dynamics for AdjointDynamics<'_> {
    fn eval(&self, t: f64, state: &[Tensor]) -> Result<Vec<Tensor>> {
        let (y, a) = (&state[..self.n], &state[self.n..2 * self.n]);
        let vars: Vec<Var> =
            y.iter().map(|v| Var::from_tensor(&v.detach())).collect::<candle_core::Result<_>>()?;
        let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let f = super::eval_checked(self.inner, t, &inputs)?;
        let mut inner_product: Option<Tensor> = None;
        for (fi, ai) in f.iter().zip(a) {
            let term = (fi * ai.detach())?.sum_all()?;
            inner_product = Some(match inner_product {
                Some(acc) => (acc + term)?,
                None => term,
            });
        }
        let grads = match &inner_product {
            Some(s) => Some(s.backward()?),
            None => None,
        };
        let grad_of = |t: &Tensor| -> Result<Tensor> {
            match grads.as_ref().and_then(|g| g.get(t)) {
                Some(g) => Ok(g.detach().neg()?),
                None => Ok(t.zeros_like()?),
            }
        };
        let mut out: Vec<Tensor> = f.iter().map(Tensor::detach).collect();
        for v in &inputs {
            out.push(grad_of(v)?);
        }
        for p in self.params {
            out.push(grad_of(p)?);
        }
        Ok(out)
    }
}
