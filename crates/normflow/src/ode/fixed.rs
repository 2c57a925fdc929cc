//! Fixed-step solvers: explicit Euler and classic RK4.

use candle_core::Tensor;

use super::{combine, eval_checked, Dynamics, SolveStats};
use crate::Result;

/// `y_{n+1} = y_n + h f(t_n, y_n)`, `steps` equal steps from `t0` to `t1`.
pub(super) fn euler(
    dynamics: &dyn Dynamics,
    t0: f64,
    t1: f64,
    y0: &[Tensor],
    steps: usize,
) -> Result<(Vec<Tensor>, SolveStats)> {
    let h = (t1 - t0) / steps as f64;
    let mut y = y0.to_vec();
    for n in 0..steps {
        let t = t0 + n as f64 * h;
        let k = eval_checked(dynamics, t, &y)?;
        y = super::maybe_detach(combine(&y, &[(h, &k)])?);
    }
    Ok((y, SolveStats { evaluations: steps, graph_evaluations: steps, steps, rejected: 0 }))
}

/// Classic Runge-Kutta: `y_{n+1} = y_n + h (k1 + 2 k2 + 2 k3 + k4) / 6`.
pub(super) fn rk4(
    dynamics: &dyn Dynamics,
    t0: f64,
    t1: f64,
    y0: &[Tensor],
    steps: usize,
) -> Result<(Vec<Tensor>, SolveStats)> {
    let h = (t1 - t0) / steps as f64;
    let mut y = y0.to_vec();
    for n in 0..steps {
        let t = t0 + n as f64 * h;
        let k1 = eval_checked(dynamics, t, &y)?;
        let k2 = eval_checked(dynamics, t + h / 2.0, &combine(&y, &[(h / 2.0, &k1)])?)?;
        let k3 = eval_checked(dynamics, t + h / 2.0, &combine(&y, &[(h / 2.0, &k2)])?)?;
        // The last step ends exactly at t1, whatever the rounding of t0 + steps * h.
        let t_end = if n + 1 == steps { t1 } else { t + h };
        let k4 = eval_checked(dynamics, t_end, &combine(&y, &[(h, &k3)])?)?;
        let terms = [(h / 6.0, &k1[..]), (h / 3.0, &k2), (h / 3.0, &k3), (h / 6.0, &k4)];
        y = super::maybe_detach(combine(&y, &terms)?);
    }
    let evals = 4 * steps;
    Ok((y, SolveStats { evaluations: evals, graph_evaluations: evals, steps, rejected: 0 }))
}
