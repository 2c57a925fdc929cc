//! The root of a cubic that increases on `[0, 1]`: the inverse of one bin of
//! [`CubicSpline`](super::CubicSpline).
//!
//! Closed form first (Cardano with the cancellation-free choice of cube root when the cubic has
//! one real root, the trigonometric form when it has three, the stable quadratic formula when
//! the cubic term is negligible), then a few safeguarded Newton steps, bracketed in `[0, 1]`,
//! which take the closed form's rounding (large when the cubic term is small but not
//! negligible) down to the last bits and can never leave the interval.
//!
//! Plain `f64` scalar code: candle has neither `acos` nor `cbrt`, and the root carries no
//! gradient (the spline re-attaches one with an implicit-function step).

use std::f64::consts::PI;

/// Below this `|a|` the cubic `a t^3 + b t^2 + c t` is solved as a quadratic: with the spline's
/// coefficients (`|b|, |c| <= 8`) dividing by a smaller `a` loses more digits in Cardano's
/// formula than the dropped term costs, and Newton repairs either.
const QUADRATIC_THRESHOLD: f64 = 1e-3;

/// Newton steps after the closed form; each at least halves the bracket, and from the closed
/// form's start two or three reach the last bit.
const MAX_POLISH_STEPS: usize = 60;

/// The root `t` in `[0, 1]` of `a t^3 + b t^2 + c t = r`, for a cubic that is increasing on
/// `[0, 1]` with value 0 at 0 (and about 1 at 1) and `r` in `[0, 1]` (clamped there).
///
/// Never panics; non-finite coefficients give a non-finite or arbitrary in-range answer.
pub(crate) fn monotone_cubic_root(a: f64, b: f64, c: f64, r: f64) -> f64 {
    let r = r.clamp(0.0, 1.0);
    polish(a, b, c, r, closed_form(a, b, c, r))
}

/// The closed-form root nearest `[0, 1]` (clamped into it).
pub(crate) fn closed_form(a: f64, b: f64, c: f64, r: f64) -> f64 {
    let t = if a.abs() < QUADRATIC_THRESHOLD {
        // b t^2 + c t - r = 0 with c > 0: the root that does not cancel.
        let denominator = c + (c * c + 4.0 * b * r).max(0.0).sqrt();
        if denominator > 0.0 {
            2.0 * r / denominator
        } else {
            0.5
        }
    } else {
        nearest_real_root(b / a, c / a, -r / a)
    };
    if t.is_nan() {
        0.5
    } else {
        t.clamp(0.0, 1.0)
    }
}

/// The real root of the monic cubic `t^3 + b t^2 + c t + d` nearest `[0, 1]`.
fn nearest_real_root(b: f64, c: f64, d: f64) -> f64 {
    // Depressed cubic s^3 + p s + q with t = s - b/3.
    let shift = b / 3.0;
    let p = c - b * shift;
    let q = shift * (2.0 * shift * shift - c) + d;
    let (half_q, third_p) = (q / 2.0, p / 3.0);
    let discriminant = half_q * half_q + third_p * third_p * third_p;
    if discriminant >= 0.0 || third_p >= 0.0 {
        // One real root: s = u - p / 3u with the cube root of the larger magnitude (no
        // cancellation between -q/2 and the square root).
        let u = (-half_q - half_q.signum() * discriminant.max(0.0).sqrt()).cbrt();
        let s = if u == 0.0 { 0.0 } else { u - third_p / u };
        return s - shift;
    }
    // Three real roots: s_k = 2 m cos(theta / 3 - 2 pi k / 3), m = sqrt(-p/3).
    let m = (-third_p).sqrt();
    let theta = (-half_q / (m * m * m)).clamp(-1.0, 1.0).acos();
    (0..3)
        .map(|k| 2.0 * m * (theta / 3.0 - 2.0 * PI * k as f64 / 3.0).cos() - shift)
        .min_by(|x, y| distance_to_unit(*x).total_cmp(&distance_to_unit(*y)))
        .unwrap_or(0.5)
}

fn distance_to_unit(t: f64) -> f64 {
    (t - t.clamp(0.0, 1.0)).abs()
}

/// Newton's method on `[0, 1]`, keeping a bracket `[lo, hi]` of the root (the cubic increases)
/// and bisecting whenever a step would leave it.
fn polish(a: f64, b: f64, c: f64, r: f64, start: f64) -> f64 {
    let (mut lo, mut hi, mut t) = (0.0f64, 1.0f64, start);
    for _ in 0..MAX_POLISH_STEPS {
        let f = ((a * t + b) * t + c) * t - r;
        if f == 0.0 {
            break;
        }
        if f < 0.0 {
            lo = t;
        } else {
            hi = t;
        }
        let slope = (3.0 * a * t + 2.0 * b) * t + c;
        let mut step_to = t - f / slope;
        if !(step_to > lo && step_to < hi) {
            step_to = 0.5 * (lo + hi);
        }
        let moved = (step_to - t).abs();
        t = step_to;
        if moved <= 2.0 * f64::EPSILON * t.max(f64::MIN_POSITIVE) || hi - lo <= f64::EPSILON {
            break;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn cubic(alpha: f64, beta: f64) -> (f64, f64, f64) {
        (alpha + beta - 2.0, 3.0 - 2.0 * alpha - beta, alpha)
    }

    fn bisect(a: f64, b: f64, c: f64, r: f64) -> f64 {
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if ((a * mid + b) * mid + c) * mid < r {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }

    /// Random Hermite bins of the spline's family (end slopes alpha, beta in (0, 3] x (0, 2] and
    /// the reverse), the degenerate a = 0 and a ~ 1e-3 families, and r at both ends.
    fn cases() -> Vec<(f64, f64, f64, f64)> {
        let mut rng = crate::random::rng_from_seed(3);
        let mut out = Vec::new();
        for i in 0..20000 {
            let (mut alpha, mut beta): (f64, f64) =
                (rng.random_range(1e-6..3.0), rng.random_range(1e-6..2.0));
            if i % 2 == 0 {
                std::mem::swap(&mut alpha, &mut beta);
            }
            match i % 5 {
                0 => beta = 2.0 - alpha.min(1.999),
                1 => beta = 2.0 - alpha.min(1.9) + rng.random_range(-2e-3..2e-3),
                _ => {}
            }
            let r = match i % 7 {
                0 => 0.0,
                1 => 1.0,
                _ => rng.random_range(0.0..1.0),
            };
            let (a, b, c) = cubic(alpha, beta.max(1e-6));
            out.push((a, b, c, r));
        }
        out
    }

    #[test]
    fn root_matches_bisection() {
        for (a, b, c, r) in cases() {
            let t = monotone_cubic_root(a, b, c, r);
            let reference = bisect(a, b, c, r);
            assert!((t - reference).abs() < 1e-12, "a={a} b={b} c={c} r={r}: {t} vs {reference}");
        }
    }

    /// The closed form alone is already close: within 1e-8 of the root for the cubic formulas;
    /// the quadratic one solves `P(t) - a t^3 = r` exactly, so its residual is at most `|a|`.
    /// The polish only takes the rest.
    #[test]
    fn closed_form_alone_is_accurate() {
        for (a, b, c, r) in cases() {
            let t = closed_form(a, b, c, r);
            let (err, allowed) = if a.abs() < QUADRATIC_THRESHOLD {
                ((((a * t + b) * t + c) * t - r).abs(), a.abs() + 1e-12)
            } else {
                ((t - bisect(a, b, c, r)).abs(), 1e-8)
            };
            assert!(err <= allowed, "a={a} b={b} c={c} r={r}: closed form off by {err:.2e}");
        }
    }

    #[test]
    fn identity_bin_and_non_finite_inputs() {
        // alpha = beta = 1: the cubic is t itself.
        for r in [0.0, 0.25, 0.5, 1.0] {
            assert!((monotone_cubic_root(0.0, 0.0, 1.0, r) - r).abs() < 1e-15);
        }
        let t = monotone_cubic_root(f64::NAN, 0.0, 1.0, 0.5);
        assert!(t.is_nan() || (0.0..=1.0).contains(&t));
    }
}
