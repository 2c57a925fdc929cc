//! Adaptive Dormand-Prince 5(4) with step-size control (Hairer, Nørsett & Wanner, Solving
//! Ordinary Differential Equations I, section II.4).

use candle_core::Tensor;

use super::{combine, eval_checked, scalar, Dynamics, SolveStats};
use crate::{Error, Result};

/// Error tolerances of one solve.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tolerances {
    pub atol: f64,
    pub rtol: f64,
}

// Butcher tableau. The 5th-order weights are the last row of `A` (FSAL: the 7th stage is
// evaluated at the new state and is the next step's first stage).
const C: [f64; 6] = [1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0];
const A2: [f64; 1] = [1.0 / 5.0];
const A3: [f64; 2] = [3.0 / 40.0, 9.0 / 40.0];
const A4: [f64; 3] = [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0];
const A5: [f64; 4] = [19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0];
const A6: [f64; 5] =
    [9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0];
const B5: [f64; 6] =
    [35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0];
/// 5th-order minus 4th-order weights, for stages 1..=7.
const E: [f64; 7] = [
    71.0 / 57600.0,
    0.0,
    -71.0 / 16695.0,
    71.0 / 1920.0,
    -17253.0 / 339200.0,
    22.0 / 525.0,
    -1.0 / 40.0,
];

const SAFETY: f64 = 0.9;
const MIN_FACTOR: f64 = 0.2;
const MAX_FACTOR: f64 = 10.0;

/// RMS over every entry of every state tensor of `e_i / (atol + rtol max(|a_i|, |b_i|))`.
fn error_norm(e: &[Tensor], a: &[Tensor], b: &[Tensor], tol: Tolerances) -> Result<f64> {
    let (mut sum, mut count) = (0.0, 0usize);
    for ((e, a), b) in e.iter().zip(a).zip(b) {
        let scale = (a.detach().abs()?.maximum(&b.detach().abs()?)? * tol.rtol)? + tol.atol;
        sum += scalar(&(e.detach() / scale?)?.sqr()?.sum_all()?)?;
        count += e.elem_count();
    }
    Ok((sum / count.max(1) as f64).sqrt())
}

/// Plain RMS of the entries of a state (for the initial step heuristic).
fn rms_scaled(y: &[Tensor], reference: &[Tensor], tol: Tolerances) -> Result<f64> {
    let (mut sum, mut count) = (0.0, 0usize);
    for (y, r) in y.iter().zip(reference) {
        let scale = ((r.detach().abs()? * tol.rtol)? + tol.atol)?;
        sum += scalar(&(y.detach() / scale)?.sqr()?.sum_all()?)?;
        count += y.elem_count();
    }
    Ok((sum / count.max(1) as f64).sqrt())
}

/// Hairer's starting step (one extra evaluation of `f`), signed like `t1 - t0`.
fn initial_step(
    dynamics: &dyn Dynamics,
    t0: f64,
    y0: &[Tensor],
    f0: &[Tensor],
    direction: f64,
    span: f64,
    tol: Tolerances,
) -> Result<f64> {
    let d0 = rms_scaled(y0, y0, tol)?;
    let d1 = rms_scaled(f0, y0, tol)?;
    let h0 = if d0 < 1e-5 || d1 < 1e-5 || !(d0 / d1).is_finite() { 1e-6 } else { 0.01 * d0 / d1 };
    let y1 = combine(y0, &[(direction * h0, f0)])?;
    let f1 = eval_checked(dynamics, t0 + direction * h0, &y1)?;
    let diff: Vec<Tensor> =
        f1.iter().zip(f0).map(|(a, b)| Ok((a.detach() - b.detach())?)).collect::<Result<_>>()?;
    let d2 = rms_scaled(&diff, y0, tol)? / h0;
    if d1.max(d2) <= 1e-15 {
        // A field that vanishes (a flow at its identity initialization) is integrated exactly by
        // any step; should it grow later, the error control rejects and shrinks the step.
        return Ok(direction * span);
    }
    let h1 =
        if !d2.is_finite() { (h0 * 1e-3).max(1e-6) } else { (0.01 / d1.max(d2)).powf(1.0 / 5.0) };
    Ok(direction * (100.0 * h0).min(h1))
}

/// Integrates from `t0` to `t1`; see [`super::Solver::Dopri5`].
pub(super) fn solve(
    dynamics: &dyn Dynamics,
    t0: f64,
    t1: f64,
    y0: &[Tensor],
    tol: Tolerances,
    max_steps: usize,
) -> Result<(Vec<Tensor>, SolveStats)> {
    let direction = (t1 - t0).signum();
    let span = (t1 - t0).abs();
    let mut stats = SolveStats::default();
    let mut y = y0.to_vec();
    let mut k1 = eval_checked(dynamics, t0, &y)?;
    let mut h = initial_step(dynamics, t0, &y, &k1, direction, span, tol)?;
    stats.evaluations = 2;
    let mut t = t0;
    // Steps shorter than this (relative to the time scale) make no progress in f64.
    let min_step = 1e-12 * t0.abs().max(t1.abs()).max(span);
    while (t1 - t) * direction > 0.0 {
        if stats.steps + stats.rejected >= max_steps {
            return Err(Error::Numerical(format!(
                "dopri5 reached its maximum of {max_steps} steps at t = {t} on the way from {t0} \
                 to {t1} (last step size {:.3e}): loosen atol/rtol, raise max_steps, or use a \
                 fixed-step solver",
                h.abs()
            )));
        }
        let last = (t + h - t1) * direction >= -min_step;
        if last {
            h = t1 - t;
        }
        let k2 = eval_checked(dynamics, t + C[0] * h, &combine(&y, &[(h * A2[0], &k1)])?)?;
        let y3 = combine(&y, &[(h * A3[0], &k1), (h * A3[1], &k2)])?;
        let k3 = eval_checked(dynamics, t + C[1] * h, &y3)?;
        let y4 = combine(&y, &[(h * A4[0], &k1), (h * A4[1], &k2), (h * A4[2], &k3)])?;
        let k4 = eval_checked(dynamics, t + C[2] * h, &y4)?;
        let y5 =
            combine(&y, &[(h * A5[0], &k1), (h * A5[1], &k2), (h * A5[2], &k3), (h * A5[3], &k4)])?;
        let k5 = eval_checked(dynamics, t + C[3] * h, &y5)?;
        let y6 = combine(
            &y,
            &[
                (h * A6[0], &k1),
                (h * A6[1], &k2),
                (h * A6[2], &k3),
                (h * A6[3], &k4),
                (h * A6[4], &k5),
            ],
        )?;
        let k6 = eval_checked(dynamics, t + C[4] * h, &y6)?;
        let ks = [&k1, &k2, &k3, &k4, &k5, &k6];
        let terms: Vec<(f64, &[Tensor])> =
            B5.iter().zip(ks).map(|(b, k)| (h * b, k.as_slice())).collect();
        let y_new = combine(&y, &terms)?;
        let t_new = if last { t1 } else { t + h };
        let k7 = eval_checked(dynamics, t_new, &y_new)?;
        stats.evaluations += 6;
        // The error estimate only steers the step size: keep it out of the graph.
        let detached: Vec<Vec<Tensor>> = [&k1, &k2, &k3, &k4, &k5, &k6, &k7]
            .iter()
            .map(|k| k.iter().map(Tensor::detach).collect())
            .collect();
        let zeros: Vec<Tensor> =
            y.iter().map(|v| v.zeros_like()).collect::<candle_core::Result<_>>()?;
        let err_terms: Vec<(f64, &[Tensor])> =
            E.iter().zip(&detached).map(|(e, k)| (h * e, k.as_slice())).collect();
        let err = combine(&zeros, &err_terms)?;
        let norm = error_norm(&err, &y, &y_new, tol)?;
        let accepted = norm.is_finite() && norm <= 1.0;
        let factor = if !norm.is_finite() {
            MIN_FACTOR
        } else if norm == 0.0 {
            MAX_FACTOR
        } else {
            (SAFETY * norm.powf(-1.0 / 5.0)).clamp(MIN_FACTOR, MAX_FACTOR)
        };
        if accepted {
            t = t_new;
            y = super::maybe_detach(y_new);
            k1 = super::maybe_detach(k7);
            stats.steps += 1;
            h *= factor;
        } else {
            stats.rejected += 1;
            h *= factor.min(1.0);
        }
        if h.abs() < min_step && (t1 - t) * direction > 0.0 {
            return Err(Error::Numerical(format!(
                "dopri5 step size underflow ({:.3e}) at t = {t} on the way from {t0} to {t1}: \
                 the dynamics is too stiff or not finite there",
                h.abs()
            )));
        }
    }
    stats.graph_evaluations = 6 * stats.steps;
    Ok((y, stats))
}
