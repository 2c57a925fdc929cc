//! A safeguarded, bracketed root finder for element-wise increasing maps: the inverse of every
//! transformer and layer without a closed-form inverse (NAF's sigmoidal flows, SOS and Bernstein
//! polynomials, BNAF).
//!
//! Given `y` and an element-wise strictly increasing `f` (evaluated, with its derivative, on a
//! whole tensor at once), [`solve_increasing`] finds `x` with `f(x) = y` for every element:
//!
//! 1. **Bracket**: start from `[g - w, g + w]` around the guess `g` (default `y`: most maps are
//!    near the identity) and, for the elements whose bracket does not contain the root yet,
//!    move the failing end outwards, doubling the distance each round, until `f(lo) <= y <= f(hi)`.
//! 2. **Refine**: Newton steps `x - (f(x) - y) / f'(x)`, replaced by bisection whenever the step
//!    leaves the current bracket or the derivative is not positive and finite; every evaluation
//!    shrinks the bracket, so the iteration cannot diverge.
//!
//! An element has converged when `|f(x) - y| <= tol * max(1, |y|)`, or when its bracket has
//! shrunk to the floating-point resolution of `x` in the tensor's dtype (no representable `x`
//! does better: the map is steeper than the dtype can resolve there). Anything else after
//! `max_iter` iterations, a root that cannot be bracketed, or a non-finite value is an
//! [`Error::Numerical`]: never a silent wrong answer. The result reports the largest residual.
//!
//! The bracket bookkeeping runs on the host in `f64` (one device-to-host copy of `f` and `f'`
//! per iteration); every evaluation of `f` covers the whole batch. The iterations carry no
//! gradients: the root is a plain tensor. [`invert_transformer`] adds the exact implicit
//! gradient back with one graph-connected Newton step.

use candle_core::{DType, Tensor};

use crate::bijections::Transformer;
use crate::{Error, Result};

/// Tolerances and limits of [`solve_increasing`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SolveOptions {
    /// Residual tolerance: an element is solved when `|f(x) - y| <= tol * max(1, |y|)`.
    pub tol: f64,
    /// Evaluations of `f` (bracketing included) before giving up.
    pub max_iter: usize,
    /// First step from the guess while one end of the bracket is unknown (doubling after each).
    pub initial_width: f64,
    /// Doublings of a bracket end before giving up on bracketing (`2^60` covers any input a
    /// flow sees).
    pub max_expansions: usize,
}

impl SolveOptions {
    /// Defaults for computations in `dtype`: `tol` 1e-10 in f64, 1e-4 in f32, 1e-2 in half
    /// precision; 200 iterations; an initial step of 1; 60 doublings.
    pub fn for_dtype(dtype: DType) -> Self {
        let tol = match dtype {
            DType::F64 => 1e-10,
            DType::F32 => 1e-4,
            _ => 1e-2,
        };
        Self { tol, max_iter: 200, initial_width: 1.0, max_expansions: 60 }
    }
}

/// The result of [`solve_increasing`].
#[derive(Debug, Clone)]
pub struct Solution {
    /// The root, `y`'s shape and dtype, without gradient history.
    pub x: Tensor,
    /// `max |f(x) - y|` over the elements.
    pub max_residual: f64,
    /// Iterations used (one evaluation of `f` each, plus the first).
    pub iterations: usize,
}

/// Relative spacing of representable numbers in `dtype`, times a small safety factor: a bracket
/// narrower than this (relative to its larger end) cannot be split any further.
fn resolution(dtype: DType) -> f64 {
    let eps = match dtype {
        DType::F64 => f64::EPSILON,
        DType::F32 => f32::EPSILON as f64,
        DType::BF16 => 2f64.powi(-7),
        _ => 2f64.powi(-10),
    };
    4.0 * eps
}

/// Evaluator: `x` (host, `f64`) -> `(x as rounded to the dtype, f(x), f'(x))`.
struct Eval<'a, F> {
    f: F,
    shape: &'a [usize],
    dtype: DType,
    device: &'a candle_core::Device,
}

impl<F: FnMut(&Tensor) -> Result<(Tensor, Tensor)>> Eval<'_, F> {
    fn at(&mut self, x: &[f64]) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
        let t = Tensor::from_slice(x, self.shape, self.device)?.to_dtype(self.dtype)?;
        let rounded = host(&t)?;
        let (fx, dfx) = (self.f)(&t)?;
        if fx.dims() != self.shape || dfx.dims() != self.shape {
            return Err(Error::shape("solver: f(x) and f'(x)", format!("{:?}", self.shape), {
                if fx.dims() != self.shape {
                    fx.dims()
                } else {
                    dfx.dims()
                }
            }));
        }
        Ok((rounded, host(&fx)?, host(&dfx)?))
    }
}

fn host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.detach().flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

/// Solves `f(x) = y` element-wise for a strictly increasing `f`.
///
/// - `y`: any shape, any float dtype; `guess`: `y`'s shape, the starting point (default `y`).
/// - `f(x)` returns `(f(x), f'(x))`, both `x`'s shape; it is called on tensors of `y`'s shape,
///   dtype and device only, so it may close over per-element parameters of that shape.
///
/// Returns the root (detached) with the largest residual; see the [module docs](self) for the
/// algorithm and when it fails with [`Error::Numerical`].
pub fn solve_increasing<F>(
    y: &Tensor,
    guess: Option<&Tensor>,
    opts: &SolveOptions,
    f: F,
) -> Result<Solution>
where
    F: FnMut(&Tensor) -> Result<(Tensor, Tensor)>,
{
    crate::ensure_config!(
        opts.tol > 0.0 && opts.tol.is_finite(),
        "tol",
        opts.tol,
        "must be positive and finite"
    );
    crate::ensure_config!(
        opts.initial_width > 0.0 && opts.initial_width.is_finite(),
        "initial_width",
        opts.initial_width,
        "must be positive and finite"
    );
    let shape = y.dims().to_vec();
    let target = host(y)?;
    if let Some(v) = target.iter().find(|v| !v.is_finite()) {
        return Err(Error::NonFinite(format!("solver target contains {v}")));
    }
    let start = match guess {
        Some(g) if g.dims() == y.dims() => host(g)?,
        Some(g) => return Err(Error::shape("solver guess", format!("{shape:?}"), g.dims())),
        None => target.clone(),
    };
    let n = target.len();
    let mut eval = Eval { f, shape: &shape, dtype: y.dtype(), device: y.device() };
    let tol_of = |i: usize| opts.tol * target[i].abs().max(1.0);
    let res = resolution(y.dtype());

    // Every evaluation moves one end of the element's bracket [lo, hi] (initially unbounded) to
    // x. The next x is the Newton point when it lies strictly inside the bracket; otherwise the
    // midpoint when both ends are known, or else a step of doubling length from the guess
    // towards the root (the bracketing phase).
    let mut lo = vec![f64::NEG_INFINITY; n];
    let mut hi = vec![f64::INFINITY; n];
    let mut width = vec![opts.initial_width; n];
    let mut expansions = vec![0usize; n];
    let mut x = start.clone();
    let mut previous = vec![f64::NAN; n];
    let mut iterations = 0;
    loop {
        let (x_r, fx, dfx) = eval.at(&x)?;
        x = x_r;
        let mut all_done = true;
        let mut max_residual: f64 = 0.0;
        let mut worst = 0;
        for i in 0..n {
            let r = fx[i] - target[i];
            if !r.is_finite() {
                return Err(Error::Numerical(format!("solver: f({}) is not finite", x[i])));
            }
            if r.abs() > max_residual {
                max_residual = r.abs();
                worst = i;
            }
            let collapsed = lo[i].is_finite()
                && hi[i].is_finite()
                && hi[i] - lo[i] <= res * lo[i].abs().max(hi[i].abs()) + f64::MIN_POSITIVE;
            if r.abs() <= tol_of(i) || collapsed {
                continue;
            }
            all_done = false;
            if r < 0.0 {
                lo[i] = x[i];
            } else {
                hi[i] = x[i];
            }
            let newton = x[i] - r / dfx[i];
            // A Newton step that rounds back onto the point just evaluated (at a bracket end, in
            // a low-precision dtype) makes no progress: bisect instead.
            let stalled = x[i] == previous[i];
            previous[i] = x[i];
            x[i] = if !stalled
                && dfx[i] > 0.0
                && newton.is_finite()
                && newton > lo[i]
                && newton < hi[i]
            {
                newton
            } else if lo[i].is_finite() && hi[i].is_finite() {
                0.5 * (lo[i] + hi[i])
            } else {
                expansions[i] += 1;
                if expansions[i] > opts.max_expansions {
                    return Err(Error::Numerical(format!(
                        "solver: no bracket for y = {} within {:.3e} of the guess {}",
                        target[i], width[i], start[i]
                    )));
                }
                width[i] *= 2.0;
                if r < 0.0 {
                    (start[i] + width[i]).max(x[i] + width[i])
                } else {
                    (start[i] - width[i]).min(x[i] - width[i])
                }
            };
        }
        if all_done {
            let x = Tensor::from_slice(&x, shape.as_slice(), y.device())?.to_dtype(y.dtype())?;
            return Ok(Solution { x, max_residual, iterations });
        }
        if iterations >= opts.max_iter {
            return Err(Error::Numerical(format!(
                "solver: residual {max_residual:.3e} at y = {} above the tolerance {:.1e} after \
                 {iterations} iterations",
                target[worst],
                tol_of(worst)
            )));
        }
        iterations += 1;
    }
}

/// The inverse of a [`Transformer`] whose forward map has no closed-form inverse:
/// `y (B, D), raw (B, D, P) -> (x, log|dx/dy|)`, both `(B, D)`.
///
/// Solves `tau(x; raw) = y` with [`solve_increasing`] (default options for the dtype, guess
/// `x = y`) on detached parameters, then takes one Newton step on the graph:
///
/// ```text
/// x = x* - (tau(x*; raw) - y) / stop_gradient(tau'(x*; raw))
/// ```
///
/// whose value is `x*` (to the solver's tolerance, improved by the step) and whose gradients
/// are the implicit-function ones, `dx/dy = 1/tau'` and `dx/draw = -(dtau/draw)/tau'`. The
/// log-derivative is `-log tau'(x*)`.
pub fn invert_transformer<T: Transformer + ?Sized>(
    transformer: &T,
    y: &Tensor,
    raw: &Tensor,
) -> Result<(Tensor, Tensor)> {
    crate::bijections::check_raw_shape(y, raw, transformer.params_per_feature())?;
    let detached = raw.detach();
    let opts = SolveOptions::for_dtype(y.dtype());
    let solution = solve_increasing(&y.detach(), None, &opts, |x| {
        let (fx, log_d) = transformer.forward(x, &detached)?;
        Ok((fx, log_d.exp()?))
    })?;
    let (fx, log_d) = transformer.forward(&solution.x, raw)?;
    let step = ((fx - y)? / log_d.detach().exp()?)?;
    Ok(((solution.x - step)?, log_d.neg()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn cubic(x: &Tensor) -> Result<(Tensor, Tensor)> {
        // f(x) = x^3 + x: increasing, superlinear tails.
        Ok(((x.powf(3.0)? + x)?, ((x.sqr()? * 3.0)? + 1.0)?))
    }

    #[test]
    fn solves_a_cubic_far_out_and_reports_the_residual() -> Result<()> {
        let y = Tensor::new(&[-1e12f64, -3.0, 0.0, 0.5, 2.0, 1e9], &Device::Cpu)?;
        let s = solve_increasing(&y, None, &SolveOptions::for_dtype(DType::F64), cubic)?;
        let (fx, _) = cubic(&s.x)?;
        let err = host(&((fx - &y)? / y.abs()?.maximum(1.0)?)?)?;
        assert!(err.iter().all(|e| e.abs() <= 1e-10), "{err:?}");
        assert!(s.max_residual.is_finite() && s.iterations < 60, "{}", s.iterations);
        Ok(())
    }

    /// The graph-connected Newton step gives the implicit gradients: `dx/dy = 1 / tau'(x)`, and
    /// `dx/draw` equal to the finite-difference derivative of the inverse.
    #[test]
    fn inverse_gradients_are_the_implicit_ones() -> Result<()> {
        let t = crate::bijections::BernsteinTransformer::new(5)?;
        let dev = Device::Cpu;
        let y = candle_core::Var::new(&[[0.3f64, -1.2]], &dev)?;
        let raw_values = [[0.5f64, -0.2, 0.1, 0.9, -0.4], [0.0, 0.3, -0.6, 0.2, 0.1]];
        let raw = candle_core::Var::new(&[raw_values], &dev)?;
        let (x, log_dx) = invert_transformer(&t, y.as_tensor(), raw.as_tensor())?;
        let grads = x.sum_all()?.backward()?;
        let gy = host(grads.get(y.as_tensor()).expect("dx/dy"))?;
        let expected = host(&log_dx.exp()?)?;
        for (a, b) in gy.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
        let graw = host(grads.get(raw.as_tensor()).expect("dx/draw"))?;
        let h = 1e-6;
        let mut bumped = raw_values;
        bumped[0][2] += h;
        let x_plus = invert_transformer(&t, y.as_tensor(), &Tensor::new(&[bumped], &dev)?)?.0;
        bumped[0][2] -= 2.0 * h;
        let x_minus = invert_transformer(&t, y.as_tensor(), &Tensor::new(&[bumped], &dev)?)?.0;
        let fd = host(&((x_plus - x_minus)? / (2.0 * h))?)?[0];
        assert!((graw[2] - fd).abs() < 1e-6, "{} vs {fd}", graw[2]);
        Ok(())
    }

    #[test]
    fn a_flat_map_is_an_error_not_a_wrong_answer() -> Result<()> {
        // f = tanh is bounded: y = 2 has no root; no bracket can be found.
        let y = Tensor::new(&[0.5f64, 2.0], &Device::Cpu)?;
        let err = solve_increasing(&y, None, &SolveOptions::for_dtype(DType::F64), |x| {
            Ok((x.tanh()?, (1.0 - x.tanh()?.sqr()?)?))
        })
        .unwrap_err();
        assert!(matches!(err, Error::Numerical(_)), "{err}");
        Ok(())
    }

    #[test]
    fn too_few_iterations_is_an_error() -> Result<()> {
        let y = Tensor::new(&[123.4f64], &Device::Cpu)?;
        // A lying derivative forces bisection, which needs more than 3 steps.
        let opts = SolveOptions { max_iter: 3, ..SolveOptions::for_dtype(DType::F64) };
        let err = solve_increasing(&y, None, &opts, |x| {
            Ok((cubic(x)?.0, x.ones_like()?.affine(0.0, -1.0)?))
        })
        .unwrap_err();
        assert!(err.to_string().contains("residual"), "{err}");
        Ok(())
    }

    #[test]
    fn f32_steep_maps_stop_at_the_dtype_resolution() -> Result<()> {
        // f = 1e6 (x - 1000): f32 spacing near x = 1000 is 6e-5, so no f32 x gets the
        // residual below 1e-4, but the bracket collapses to adjacent floats and the answer is
        // the best one representable.
        let y = Tensor::new(&[3.0f32, -7.5, 0.1], &Device::Cpu)?;
        let s = solve_increasing(&y, None, &SolveOptions::for_dtype(DType::F32), |x| {
            Ok((x.affine(1e6, -1e9)?, (x.ones_like()? * 1e6)?))
        })?;
        let x = host(&s.x)?;
        for (xi, yi) in x.iter().zip([3.0, -7.5, 0.1]) {
            assert!((xi - 1000.0 - yi * 1e-6).abs() <= 2e-4, "{xi} {yi}");
        }
        assert!(s.max_residual > 1e-4);
        Ok(())
    }
}
