//! The one safeguarded, bracketed root finder of the crate: the inverse of every element-wise
//! increasing map without a closed form (NAF's sigmoidal flows, SOS and Bernstein polynomials,
//! BNAF, and the scalar equations of planar and Sylvester flows).
//!
//! Given `y` and an element-wise strictly increasing `f` (evaluated, with its derivative, on a
//! whole tensor at once), [`solve_increasing`] finds `x` with `f(x) = y` for every element:
//!
//! 1. **Bracket**: either the caller's bracket `[lo, hi]` ([`SolveInputs::bracket`], e.g.
//!    `t ± |c|` for `x + c tanh(kx + d) = t`), or, starting from `[g - w, g + w]` around the
//!    guess `g` (default `y`: most maps are near the identity), move the failing end outwards,
//!    doubling the distance each round, until `f(lo) <= y <= f(hi)`.
//! 2. **Refine**: Newton steps `x - (f(x) - y) / f'(x)`, replaced by bisection whenever the step
//!    leaves the current bracket, is not at least half as long as the previous step, or the
//!    derivative is not positive and finite (Press et al., *Numerical Recipes*, `rtsafe`); every
//!    evaluation shrinks the bracket, so the iteration cannot diverge, converges quadratically
//!    near a simple root and never slower than bisection.
//!
//! An element has converged when `|f(x) - y| <= tol * max(1, s)`, where the scale `s` is `|y|`
//! by default or the caller's [`SolveInputs::scale`]: the size of the terms that make up
//! `f(x) - y` (for `x + c tanh(.) - t`, `|t| + |c|`), since the rounding error of evaluating the
//! residual grows with them even where `y` is near zero. It has converged too when its bracket
//! has shrunk to the floating-point resolution of `x` in the tensor's dtype between two
//! *evaluated* ends with `f(lo) < y < f(hi)` (no representable `x` does better: the map is
//! steeper than the dtype can resolve there; the end with the smaller residual is returned).
//! Anything else after `max_iter` iterations, a root that cannot be bracketed or lies outside
//! the caller's bracket, or a non-finite value is an [`Error::Numerical`]: never a silent wrong
//! answer. The result reports the largest residual.
//!
//! The bracket bookkeeping runs on the host in `f64` (one device-to-host copy of `f` and `f'`
//! per iteration); every evaluation of `f` covers the whole batch. The iterations carry no
//! gradients: the root is a plain tensor. [`implicit_newton_step`] gives it the exact implicit
//! gradients with one graph-connected Newton step ([`invert_transformer`] does so for any
//! [`Transformer`]).

use candle_core::{DType, Tensor};

use crate::bijections::Transformer;
use crate::{Error, Result};

/// Tolerances and limits of [`solve_increasing`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SolveOptions {
    /// Residual tolerance: an element is solved when `|f(x) - y| <= tol * max(1, s)`, with the
    /// scale `s = |y|` unless [`SolveInputs::scale`] gives it.
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

/// Optional per-element inputs of [`solve_increasing_with`], all of `y`'s shape (and dtype).
#[derive(Debug, Clone, Copy, Default)]
pub struct SolveInputs<'a> {
    /// The first iterate (default `y`), clamped into the bracket when one is given.
    pub guess: Option<&'a Tensor>,
    /// A known bracket `(lo, hi)` with `f(lo) <= y <= f(hi)` (up to the tolerance), replacing
    /// the bracketing phase. A root outside it is an [`Error::Numerical`], not an answer.
    pub bracket: Option<(&'a Tensor, &'a Tensor)>,
    /// The scale of the tolerance (default `|y|`): the sum of the magnitudes of the terms of
    /// `f(x) - y`, when they can be much larger than `y`.
    pub scale: Option<&'a Tensor>,
    /// Names the caller in error messages (default `"solver"`).
    pub what: &'a str,
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
/// narrower than this (relative to its larger end) spans at most a few representable numbers
/// and cannot usefully be split any further.
fn resolution(dtype: DType) -> f64 {
    let eps = match dtype {
        DType::F64 => f64::EPSILON,
        DType::F32 => f32::EPSILON as f64,
        DType::BF16 => 2f64.powi(-7),
        _ => 2f64.powi(-10),
    };
    2.0 * eps
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

/// An optional per-element input on the host, checked against `y`'s shape.
fn host_input(name: &str, t: Option<&Tensor>, shape: &[usize]) -> Result<Option<Vec<f64>>> {
    match t {
        Some(t) if t.dims() == shape => Ok(Some(host(t)?)),
        Some(t) => Err(Error::shape(format!("solver {name}"), format!("{shape:?}"), t.dims())),
        None => Ok(None),
    }
}

/// Solves `f(x) = y` element-wise for a strictly increasing `f`.
///
/// - `y`: any shape, any float dtype; `guess`: `y`'s shape, the starting point (default `y`).
/// - `f(x)` returns `(f(x), f'(x))`, both `x`'s shape; it is called on tensors of `y`'s shape,
///   dtype and device only, so it may close over per-element parameters of that shape.
///
/// Returns the root (detached) with the largest residual; see the [module docs](self) for the
/// algorithm and when it fails with [`Error::Numerical`]. [`solve_increasing_with`] takes a
/// known bracket and a tolerance scale as well.
pub fn solve_increasing<F>(
    y: &Tensor,
    guess: Option<&Tensor>,
    opts: &SolveOptions,
    f: F,
) -> Result<Solution>
where
    F: FnMut(&Tensor) -> Result<(Tensor, Tensor)>,
{
    solve_increasing_with(y, &SolveInputs { guess, ..SolveInputs::default() }, opts, f)
}

/// One element's search on the host: its bracket and the state of the step rule.
struct Search {
    lo: f64,
    hi: f64,
    /// `f - y` at `lo` and `hi` once evaluated (NaN before): an end the caller gave is not
    /// known to bracket the root until it is evaluated.
    r_lo: f64,
    r_hi: f64,
    start: f64,
    /// Distance from `start` of the next bracketing step, doubled after each.
    width: f64,
    expansions: usize,
    /// The point evaluated before this one.
    previous: f64,
    /// Length of the last step: a Newton step must halve it once both ends are known.
    step_old: f64,
}

/// What [`Search::step`] decided for an unsolved element.
enum Step {
    /// Evaluate here next.
    Next(f64),
    /// The bracket has collapsed between evaluated ends: this end, with its `|f - y|`.
    Collapsed { x: f64, residual: f64 },
    /// The bracket collapsed onto a given end, which does not bracket the root either.
    Outside,
    /// Bracketing gave up after `max_expansions` doublings.
    Unbracketed,
}

impl Search {
    /// Every evaluation moves one end of the bracket to `x` (`r = f(x) - y` above the
    /// tolerance, `slope = f'(x)`). The next point is the Newton point when it lies strictly
    /// inside the bracket (and, once both ends are known, is at most half the last step);
    /// otherwise the midpoint when both ends are known, or else a step of doubling length from
    /// the guess towards the root (the bracketing phase).
    fn step(&mut self, x: f64, r: f64, slope: f64, res: f64, max_expansions: usize) -> Step {
        if r < 0.0 {
            (self.lo, self.r_lo) = (x, r);
        } else {
            (self.hi, self.r_hi) = (x, r);
        }
        let (lo, hi) = (self.lo, self.hi);
        let both = lo.is_finite() && hi.is_finite();
        if both && hi - lo <= res * lo.abs().max(hi.abs()) + f64::MIN_POSITIVE {
            if !self.r_lo.is_nan() && !self.r_hi.is_nan() {
                // f(lo) < y < f(hi) at points the dtype can hardly tell apart: the end with the
                // smaller residual is the best answer.
                return if -self.r_lo <= self.r_hi {
                    Step::Collapsed { x: lo, residual: -self.r_lo }
                } else {
                    Step::Collapsed { x: hi, residual: self.r_hi }
                };
            }
            // Squeezed against an end of the caller's bracket that was never evaluated:
            // evaluate it; if the root is not there either, it is outside.
            let end = if self.r_hi.is_nan() { hi } else { lo };
            return if x == end { Step::Outside } else { Step::Next(end) };
        }
        let newton = x - r / slope;
        // A Newton step that rounds back onto the point just evaluated (at a bracket end, in a
        // low-precision dtype) makes no progress: bisect instead.
        let stalled = x == self.previous;
        self.previous = x;
        let fast = !both || 2.0 * (newton - x).abs() <= self.step_old;
        let next = if !stalled
            && slope > 0.0
            && newton.is_finite()
            && newton > lo
            && newton < hi
            && fast
        {
            newton
        } else if both {
            0.5 * (lo + hi)
        } else {
            self.expansions += 1;
            if self.expansions > max_expansions {
                return Step::Unbracketed;
            }
            self.width *= 2.0;
            if r < 0.0 {
                (self.start + self.width).max(x + self.width)
            } else {
                (self.start - self.width).min(x - self.width)
            }
        };
        self.step_old = (next - x).abs();
        Step::Next(next)
    }
}

/// [`solve_increasing`] with the optional per-element [`SolveInputs`]: a guess, a known bracket
/// (which replaces the bracketing phase), the scale of the tolerance, and the caller's name for
/// error messages.
///
/// # Errors
/// [`Error::Shape`] when an input's shape differs from `y`'s; [`Error::NonFinite`] for a
/// non-finite target, guess or scale; [`Error::Numerical`] as described in the
/// [module docs](self), and for a bracket that is not a finite interval `lo <= hi` or does not
/// contain the root.
pub fn solve_increasing_with<F>(
    y: &Tensor,
    inputs: &SolveInputs,
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
    let what = if inputs.what.is_empty() { "solver" } else { inputs.what };
    let shape = y.dims().to_vec();
    let target = host(y)?;
    let start = host_input("guess", inputs.guess, &shape)?.unwrap_or_else(|| target.clone());
    let scale = host_input("scale", inputs.scale, &shape)?;
    for (name, values) in
        [("target", Some(&target)), ("guess", Some(&start)), ("scale", scale.as_ref())]
    {
        if let Some(v) = values.and_then(|v| v.iter().find(|v| !v.is_finite())) {
            return Err(Error::NonFinite(format!("{what}: the {name} contains {v}")));
        }
    }
    let n = target.len();
    if n == 0 {
        return Ok(Solution { x: y.detach(), max_residual: 0.0, iterations: 0 });
    }
    // Each element's bracket [lo, hi]: the caller's (its ends not yet evaluated), or unbounded.
    let (lo, hi) = match inputs.bracket {
        Some((l, h)) => (
            host_input("bracket", Some(l), &shape)?.unwrap_or_default(),
            host_input("bracket", Some(h), &shape)?.unwrap_or_default(),
        ),
        None => (vec![f64::NEG_INFINITY; n], vec![f64::INFINITY; n]),
    };
    if inputs.bracket.is_some() {
        if let Some(i) =
            (0..n).find(|&i| !(lo[i].is_finite() && hi[i].is_finite() && lo[i] <= hi[i]))
        {
            return Err(Error::Numerical(format!(
                "{what}: the bracket [{}, {}] for y = {} is not a finite interval",
                lo[i], hi[i], target[i]
            )));
        }
    }
    let tol: Vec<f64> = match &scale {
        Some(s) => s.iter().map(|s| opts.tol * s.abs().max(1.0)).collect(),
        None => target.iter().map(|y| opts.tol * y.abs().max(1.0)).collect(),
    };
    let res = resolution(y.dtype());
    let mut eval = Eval { f, shape: &shape, dtype: y.dtype(), device: y.device() };
    let mut search: Vec<Search> = (0..n)
        .map(|i| Search {
            lo: lo[i],
            hi: hi[i],
            r_lo: f64::NAN,
            r_hi: f64::NAN,
            start: start[i],
            width: opts.initial_width,
            expansions: 0,
            previous: f64::NAN,
            step_old: hi[i] - lo[i],
        })
        .collect();
    let mut x: Vec<f64> = (0..n).map(|i| start[i].max(lo[i]).min(hi[i])).collect();
    let mut iterations = 0;
    loop {
        let (x_r, fx, dfx) = eval.at(&x)?;
        x = x_r;
        let mut unsolved = 0usize;
        let mut max_residual: f64 = 0.0;
        let mut worst = 0;
        for i in 0..n {
            let r = fx[i] - target[i];
            if !r.is_finite() {
                return Err(Error::Numerical(format!("{what}: f({}) is not finite", x[i])));
            }
            let mut reported = r.abs();
            if r.abs() > tol[i] {
                match search[i].step(x[i], r, dfx[i], res, opts.max_expansions) {
                    Step::Next(next) => {
                        unsolved += 1;
                        x[i] = next;
                    }
                    Step::Collapsed { x: best, residual } => {
                        x[i] = best;
                        reported = residual;
                    }
                    Step::Outside => {
                        return Err(Error::Numerical(format!(
                            "{what}: the root for y = {} is outside the bracket (f({}) - y = \
                             {r:.3e})",
                            target[i], x[i]
                        )))
                    }
                    Step::Unbracketed => {
                        return Err(Error::Numerical(format!(
                            "{what}: no bracket for y = {} within {:.3e} of the guess {}",
                            target[i], search[i].width, start[i]
                        )))
                    }
                }
            }
            if reported > max_residual {
                max_residual = reported;
                worst = i;
            }
        }
        if unsolved == 0 {
            let x = Tensor::from_slice(&x, shape.as_slice(), y.device())?.to_dtype(y.dtype())?;
            return Ok(Solution { x, max_residual, iterations });
        }
        if iterations >= opts.max_iter {
            return Err(Error::Numerical(format!(
                "{what} did not converge: residual {max_residual:.3e} at y = {} above the \
                 tolerance {:.1e}, at {unsolved} of {n} points, after {iterations} iterations",
                target[worst], tol[worst]
            )));
        }
        iterations += 1;
    }
}

/// One Newton step with the graph attached, from a root found on detached tensors:
/// `root - g(root) / stop_gradient(g'(root))`.
///
/// `value` is the residual `g(root)` (e.g. `f(root) - y`) computed *with* the graph (to `y` and
/// every parameter `g` depends on), `slope` is `g'(root)`; all of `root`'s shape. At a solved
/// root the value moves by at most the residual over the slope (and improves it to second
/// order), while the gradient becomes the implicit-function one, `dx/dθ = -(∂g/∂θ) / g'`.
pub fn implicit_newton_step(root: &Tensor, value: &Tensor, slope: &Tensor) -> Result<Tensor> {
    Ok((root.detach() - (value / slope.detach())?)?)
}

/// The inverse of a [`Transformer`] whose forward map has no closed-form inverse:
/// `y (B, D), raw (B, D, P) -> (x, log|dx/dy|)`, both `(B, D)`.
///
/// Solves `tau(x; raw) = y` with [`solve_increasing`] (default options for the dtype, guess
/// `x = y`) on detached parameters, then takes one [`implicit_newton_step`] on the graph:
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
    let x = implicit_newton_step(&solution.x, &(fx - y)?, &log_d.exp()?)?;
    Ok((x, log_d.neg()?))
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

    /// `x^3 = t` on a known bracket: the slope vanishes at 0, where Newton alone would stall.
    fn cube(x: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((x.powf(3.0)?, (x.sqr()? * 3.0)?))
    }

    #[test]
    fn solves_on_a_given_bracket_in_both_dtypes() -> Result<()> {
        for dtype in [DType::F64, DType::F32] {
            let targets = [-8f64, -1e-6, 0.0, 2.0, 27.0, 1e6];
            let t = Tensor::new(&targets, &Device::Cpu)?.to_dtype(dtype)?;
            let lo = Tensor::full(-200f64, 6, &Device::Cpu)?.to_dtype(dtype)?;
            let hi = Tensor::full(200f64, 6, &Device::Cpu)?.to_dtype(dtype)?;
            let opts = SolveOptions::for_dtype(dtype);
            let inputs = SolveInputs { bracket: Some((&lo, &hi)), ..SolveInputs::default() };
            let s = solve_increasing_with(&t, &inputs, &opts, cube)?;
            let roots = host(&s.x)?;
            for (r, t) in roots.iter().zip(targets) {
                // The contract (with slack for the f64 check of an f32 root): the residual is
                // within the tolerance, or the root is within the dtype's resolution.
                let ok = (r.powi(3) - t).abs() <= 1.01 * opts.tol * t.abs().max(1.0)
                    || (r - t.cbrt()).abs() <= 2.0 * resolution(dtype) * t.cbrt().abs();
                assert!(ok, "{dtype:?}: {r}^3 != {t}");
            }
            if dtype == DType::F64 {
                assert!((roots[4] - 3.0).abs() < 1e-10 && (roots[5] - 100.0).abs() < 1e-8);
            }
            assert!(s.iterations < 100, "{dtype:?}: {} iterations", s.iterations);
        }
        Ok(())
    }

    #[test]
    fn the_scale_sets_the_tolerance_where_y_is_small() -> Result<()> {
        // x + 1e4 tanh(x - 100) = y near 0 in f32: the root is near x = 99.99, where the terms
        // are about 100 and the slope 1e4, so the residuals of representable x are a few 1e-2,
        // far above 1e-4 * max(1, |y|). Without a scale the answer is the collapsed bracket;
        // with the scale |y| + 1e4 (the size of the terms) it is accepted sooner.
        let y = Tensor::new(&[0f32, 1e-3], &Device::Cpu)?;
        let f = |x: &Tensor| -> Result<(Tensor, Tensor)> {
            let th = (x - 100.0)?.tanh()?;
            Ok(((x + (&th * 1e4)?)?, (((th.sqr()?.neg()? + 1.0)? * 1e4)? + 1.0)?))
        };
        let opts = SolveOptions::for_dtype(DType::F32);
        let plain = solve_increasing(&y, None, &opts, f)?;
        let scale = (y.abs()? + 1e4)?;
        let inputs = SolveInputs { scale: Some(&scale), ..SolveInputs::default() };
        let scaled = solve_increasing_with(&y, &inputs, &opts, f)?;
        assert!(plain.max_residual > 1e-4 && plain.max_residual < 0.1, "{}", plain.max_residual);
        assert!(scaled.max_residual <= 1.0, "{}", scaled.max_residual);
        assert!(scaled.iterations < plain.iterations, "{} {}", scaled.iterations, plain.iterations);
        Ok(())
    }

    #[test]
    fn a_root_outside_the_bracket_is_an_error() -> Result<()> {
        let y = Tensor::new(&[8f64, 0.5], &Device::Cpu)?;
        let lo = Tensor::new(&[0f64, 0.0], &Device::Cpu)?;
        let hi = Tensor::new(&[1f64, 1.0], &Device::Cpu)?;
        let opts = SolveOptions::for_dtype(DType::F64);
        let inputs =
            SolveInputs { bracket: Some((&lo, &hi)), what: "cube", ..SolveInputs::default() };
        let err = solve_increasing_with(&y, &inputs, &opts, cube).unwrap_err();
        assert!(err.to_string().contains("cube: the root for y = 8 is outside"), "{err}");
        // Below the bracket, too.
        let y = Tensor::new(&[-1f64, 0.5], &Device::Cpu)?;
        let err = solve_increasing_with(&y, &inputs, &opts, cube).unwrap_err();
        assert!(err.to_string().contains("outside the bracket"), "{err}");
        // An inverted bracket and a bracket of another shape are errors before any evaluation.
        let inverted = SolveInputs { bracket: Some((&hi, &lo)), ..inputs };
        let err = solve_increasing_with(&y, &inverted, &opts, cube).unwrap_err();
        assert!(err.to_string().contains("not a finite interval"), "{err}");
        let wide = Tensor::new(&[1f64, 2.0, 3.0], &Device::Cpu)?;
        let misshaped = SolveInputs { bracket: Some((&lo, &wide)), ..inputs };
        assert!(matches!(
            solve_increasing_with(&y, &misshaped, &opts, cube),
            Err(Error::Shape { .. })
        ));
        Ok(())
    }

    #[test]
    fn an_unreachable_tolerance_stops_at_the_best_representable_root() -> Result<()> {
        // x^2 = 2 has no f64 root: the residual at the doubles around sqrt(2) is about 4e-16,
        // never 0. With a tolerance of 1e-20 the bracket collapses onto adjacent doubles that
        // were both evaluated, which is the answer; the reported residual says how good.
        let y = Tensor::new(&[2f64, 4.0], &Device::Cpu)?;
        let opts = SolveOptions { tol: 1e-20, ..SolveOptions::for_dtype(DType::F64) };
        let s = solve_increasing(&y, None, &opts, |x| Ok((x.sqr()?, (x * 2.0)?)))?;
        let roots = host(&s.x)?;
        assert!((roots[0] - 2f64.sqrt()).abs() <= 4e-16 && roots[1] == 2.0, "{roots:?}");
        assert!(s.max_residual > 0.0 && s.max_residual < 1e-15, "{}", s.max_residual);
        Ok(())
    }

    #[test]
    fn the_implicit_step_gives_the_implicit_gradient() -> Result<()> {
        // x^3 = t: dx/dt = 1 / (3 x^2) = 1/12 at t = 8.
        let t = candle_core::Var::new(&[8f64], &Device::Cpu)?;
        let s = solve_increasing(
            &t.as_tensor().detach(),
            None,
            &SolveOptions::for_dtype(DType::F64),
            cube,
        )?;
        let (value, slope) = cube(&s.x)?;
        let x = implicit_newton_step(&s.x, &(value - t.as_tensor())?, &slope)?;
        assert!((x.to_vec1::<f64>()?[0] - 2.0).abs() < 1e-12);
        let grads = x.sum_all()?.backward()?;
        let g = grads.get(t.as_tensor()).map(|g| g.to_vec1::<f64>()).transpose()?;
        assert!(g.as_ref().is_some_and(|g| (g[0] - 1.0 / 12.0).abs() < 1e-12), "{g:?}");
        Ok(())
    }
}
