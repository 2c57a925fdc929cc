//! A safeguarded, bracketed solver for many independent monotone scalar equations at once.
//!
//! Bijections without a closed-form inverse (planar and Sylvester flows here; later monotone
//! networks) reduce their inverse to one increasing scalar equation `g(x) = 0` per element of a
//! tensor. [`solve_increasing`] solves them all together: each iteration evaluates `g` and `g'`
//! on the whole tensor (a few element-wise ops, no per-element host loop), keeps a bracket
//! `lo <= root <= hi` per element, and takes the Newton step where it stays inside the bracket
//! and shrinks at least as fast as bisection would, the midpoint elsewhere (Press et al.,
//! *Numerical Recipes*, `rtsafe`). It converges quadratically near a simple root and never
//! leaves the bracket, so a flat or kinked `g` only slows it down to bisection.
//!
//! The answer is accepted only when every residual is within tolerance; otherwise the solve
//! fails with [`Error::Numerical`], naming the largest residual: never a silent wrong answer.
//!
//! The iteration itself is not differentiated (it runs on detached tensors). To give the root
//! its gradients, [`implicit_newton_step`] adds one Newton step evaluated with the graph: its
//! value is the root (to second order) and its gradient is the implicit-function-theorem one,
//! `dx/dθ = -(∂g/∂θ) / g'(x)`.

use candle_core::{DType, Tensor};

use crate::{Error, Result};

/// When a residual counts as solved, and how long to try.
///
/// An element with residual `g(x)` is solved when `|g(x)| <= abs_tol + rel_tol * magnitude`,
/// where `magnitude` (from [`Residual::magnitude`]) is the size of the terms `g` adds up: the
/// rounding error of evaluating `g` itself grows with it, so a tolerance relative to it never
/// asks for more than the dtype can give.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SolveOptions {
    /// Absolute part of the residual tolerance.
    pub abs_tol: f64,
    /// Relative part of the residual tolerance (of the residual's magnitude).
    pub rel_tol: f64,
    /// Largest number of iterations (each one evaluation of `g` on the whole tensor).
    pub max_iter: usize,
}

impl SolveOptions {
    /// Tolerances a few hundred units in the last place of `dtype`: `1e-12` in f64, `1e-5` in f32
    /// (relative; absolute `1e-6`), `1e-2` in the 16-bit types; at most 100 iterations, which
    /// bisection alone needs only for brackets wider than `2^100` times the tolerance.
    pub fn for_dtype(dtype: DType) -> Self {
        let (abs_tol, rel_tol) = match dtype {
            DType::F64 => (1e-12, 1e-12),
            DType::F32 => (1e-6, 1e-5),
            _ => (1e-3, 1e-2),
        };
        Self { abs_tol, rel_tol, max_iter: 100 }
    }
}

/// The value of an equation at a point, element-wise: what the closure given to
/// [`solve_increasing`] returns. All three tensors have the shape of the point.
#[derive(Debug, Clone)]
pub struct Residual {
    /// `g(x)`.
    pub value: Tensor,
    /// `g'(x)`, positive for an increasing `g` (a zero or non-finite slope only forces bisection).
    pub slope: Tensor,
    /// The sum of the magnitudes of the terms of `g(x)` (e.g. `|x| + |c tanh(x)| + |t|` for
    /// `g = x + c tanh(x) - t`): the scale of the tolerance.
    pub magnitude: Tensor,
}

/// The result of [`solve_increasing`].
#[derive(Debug, Clone)]
pub struct Solution {
    /// The roots, detached from the graph, in the shape of the bracket.
    pub root: Tensor,
    /// Iterations used.
    pub iterations: usize,
    /// Largest `|g(root)|` over the elements.
    pub max_residual: f64,
}

fn max_of(t: &Tensor) -> Result<f64> {
    Ok(t.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Solves `g(x) = 0` element-wise for an increasing `g` with `g(lo) <= 0 <= g(hi)`.
///
/// `equation` maps a point (shape of `lo`) to its [`Residual`]; it should compute on detached
/// tensors, since nothing here is differentiated (see [`implicit_newton_step`]). `start`, if
/// given, is the first iterate (clamped into the bracket); otherwise the midpoint. `what` names
/// the caller in error messages.
///
/// # Errors
/// [`Error::Numerical`] when the bracket does not enclose a sign change (beyond tolerance), or
/// when after `max_iter` iterations (or once no element can move any more) some residual still
/// exceeds its tolerance; [`Error::Shape`] when `lo` and `hi` differ in shape.
pub fn solve_increasing(
    what: &str,
    equation: impl Fn(&Tensor) -> Result<Residual>,
    lo: &Tensor,
    hi: &Tensor,
    start: Option<&Tensor>,
    opts: &SolveOptions,
) -> Result<Solution> {
    if lo.dims() != hi.dims() {
        return Err(Error::shape(
            format!("{what}: bracket"),
            format!("{:?}", lo.dims()),
            hi.dims(),
        ));
    }
    let (mut lo, mut hi) = (lo.detach(), hi.detach());
    if lo.elem_count() == 0 {
        return Ok(Solution { root: lo, iterations: 0, max_residual: 0.0 });
    }
    let tolerance =
        |r: &Residual| -> Result<Tensor> { Ok(r.magnitude.affine(opts.rel_tol, opts.abs_tol)?) };
    let at_lo = equation(&lo)?;
    let at_hi = equation(&hi)?;
    // `g(lo) - tol > 0` or `g(hi) + tol < 0` (or NaN there) means no root inside; so does lo > hi.
    let lo_bad = (&at_lo.value - tolerance(&at_lo)?)?.gt(0.0)?;
    let hi_bad = (&at_hi.value + tolerance(&at_hi)?)?.lt(0.0)?;
    let nan = (at_lo.value.ne(&at_lo.value)? + at_hi.value.ne(&at_hi.value)?)?;
    let inverted = lo.gt(&hi)?;
    let bad = (((lo_bad + hi_bad)? + nan)? + inverted)?;
    if max_of(&bad)? > 0.0 {
        return Err(Error::Numerical(format!(
            "{what}: the bracket [lo, hi] does not enclose a root of the equation \
             (g(lo) > 0, g(hi) < 0, lo > hi, or non-finite values)"
        )));
    }
    let mut x = match start {
        Some(s) => s.detach().maximum(&lo)?.minimum(&hi)?,
        None => ((&lo + &hi)? * 0.5)?,
    };
    let mut step_old = (&hi - &lo)?;
    let mut iterations = 0;
    let mut residual = equation(&x)?;
    for _ in 0..opts.max_iter {
        let done = residual.value.abs()?.le(&tolerance(&residual)?)?;
        if done.to_dtype(DType::F64)?.flatten_all()?.min(0)?.to_scalar::<f64>()? > 0.0 {
            break;
        }
        iterations += 1;
        let value = &residual.value;
        lo = value.lt(0.0)?.where_cond(&x, &lo)?;
        hi = value.gt(0.0)?.where_cond(&x, &hi)?;
        let newton = (&x - (value / &residual.slope)?)?;
        let step = (&newton - &x)?.abs()?;
        // NaN fails every comparison, so a non-finite Newton step falls back to bisection.
        let inside = (newton.gt(&lo)? * newton.lt(&hi)?)?;
        let fast = (step * 2.0)?.le(&step_old)?;
        let midpoint = ((&lo + &hi)? * 0.5)?;
        let proposal = (inside * fast)?.where_cond(&newton, &midpoint)?;
        let next = done.where_cond(&x, &proposal)?;
        let moved = (&next - &x)?.abs()?;
        if max_of(&moved)? == 0.0 {
            // Every unsolved element is stuck at the resolution of the dtype.
            break;
        }
        step_old = done.where_cond(&step_old, &moved)?;
        x = next;
        residual = equation(&x)?;
    }
    let excess = (residual.value.abs()? - tolerance(&residual)?)?;
    let max_residual = max_of(&residual.value.abs()?)?;
    // Counting the solved elements (rather than the failed ones) counts NaN as failed.
    let solved = excess.le(0.0)?.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
    let failed = x.elem_count() as f64 - solved;
    if failed > 0.0 {
        return Err(Error::Numerical(format!(
            "{what}: the iterative inverse did not converge: the largest residual is \
             {max_residual:.3e} (tolerance {:.1e} + {:.1e} x magnitude), at {failed} of {} \
             points, after {iterations} iterations",
            opts.abs_tol,
            opts.rel_tol,
            x.elem_count()
        )));
    }
    Ok(Solution { root: x, iterations, max_residual })
}

/// `root - g(root) / g'(root)` with `g(root)` (`value`) computed with the graph and the slope
/// detached.
///
/// At a solved root the value moves by at most the residual, while the gradient becomes the
/// implicit-function one, `-(∂g/∂θ) / g'`, for every parameter `θ` (and input) `g` depends on.
pub fn implicit_newton_step(root: &Tensor, value: &Tensor, slope: &Tensor) -> Result<Tensor> {
    Ok((root.detach() - (value / slope.detach())?)?)
}

/// Test support for the layers that invert through this solver.
#[cfg(test)]
pub(crate) mod gradient_check {
    use candle_core::Tensor;

    use crate::bijections::Bijection;
    use crate::{ParamStore, Result};

    /// Checks, in f64, that the gradients of `sum(z) + sum(ladj)` of `layer.forward(x)` (the
    /// solved direction) with respect to every parameter and to `x` match central finite
    /// differences: the implicit gradient is right, not only finite.
    pub(crate) fn assert_solved_gradients_match(
        store: &ParamStore,
        layer: &dyn Bijection,
        x: &Tensor,
    ) -> Result<()> {
        let loss = |x: &Tensor| -> Result<f64> {
            let (z, ladj) = layer.forward_and_ladj(x, None)?;
            Ok((z.sum_all()? + ladj.sum_all()?)?.to_scalar::<f64>()?)
        };
        let input = candle_core::Var::from_tensor(x)?;
        let (z, ladj) = layer.forward_and_ladj(input.as_tensor(), None)?;
        let grads = (z.sum_all()? + ladj.sum_all()?)?.backward()?;
        let h = 1e-6;
        let mut targets: Vec<(String, candle_core::Var)> = store.parameters();
        targets.push(("input".into(), input));
        for (name, var) in targets {
            let analytic = match grads.get(var.as_tensor()) {
                Some(g) => g.flatten_all()?.to_vec1::<f64>()?,
                None => vec![0.0; var.elem_count()],
            };
            let original = var.as_tensor().copy()?;
            let flat = original.flatten_all()?.to_vec1::<f64>()?;
            for (k, &g) in analytic.iter().enumerate() {
                let at = |delta: f64| -> Result<f64> {
                    let mut values = flat.clone();
                    values[k] += delta;
                    var.set(&Tensor::from_vec(values, original.shape(), original.device())?)?;
                    let value = if name == "input" { loss(var.as_tensor()) } else { loss(x) };
                    var.set(&original)?;
                    value
                };
                let numeric = (at(h)? - at(-h)?) / (2.0 * h);
                assert!(
                    (numeric - g).abs() <= 1e-5 * (1.0 + numeric.abs()),
                    "d loss / d {name}[{k}]: autodiff {g}, finite differences {numeric}"
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn cube_minus(target: &Tensor) -> impl Fn(&Tensor) -> Result<Residual> + '_ {
        move |x: &Tensor| {
            let cube = x.powf(3.0)?;
            Ok(Residual {
                value: (&cube - target)?,
                slope: (x.sqr()? * 3.0)?,
                magnitude: (cube.abs()? + target.abs()?)?,
            })
        }
    }

    #[test]
    fn solves_cube_roots_accurately_in_both_dtypes() -> Result<()> {
        for dtype in [DType::F64, DType::F32] {
            let targets = [-8f64, -1e-6, 0.0, 2.0, 27.0, 1e6];
            let t = Tensor::new(&targets, &Device::Cpu)?.to_dtype(dtype)?;
            let lo = Tensor::full(-200f64, 6, &Device::Cpu)?.to_dtype(dtype)?;
            let hi = Tensor::full(200f64, 6, &Device::Cpu)?.to_dtype(dtype)?;
            let opts = SolveOptions::for_dtype(dtype);
            let sol = solve_increasing("cube", cube_minus(&t), &lo, &hi, None, &opts)?;
            let roots = sol.root.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            for (r, t) in roots.iter().zip(targets) {
                // The contract: |g| <= abs + rel (|r^3| + |t|), with slack for the f64 check.
                let bound = 1.01 * (opts.abs_tol + opts.rel_tol * (r.powi(3).abs() + t.abs()));
                assert!((r.powi(3) - t).abs() <= bound, "{dtype:?}: {r}^3 != {t}");
            }
            if dtype == DType::F64 {
                assert!((roots[4] - 3.0).abs() < 1e-12 && (roots[5] - 100.0).abs() < 1e-9);
            }
            // The slope vanishes at 0: Newton alone would stall there, bisection does not.
            assert!(sol.iterations < 100, "{} iterations", sol.iterations);
        }
        Ok(())
    }

    #[test]
    fn an_impossible_tolerance_is_an_error_not_a_wrong_answer() -> Result<()> {
        // x^2 = 2 has no f64 root: the residual at the two doubles around sqrt(2) is +-4e-16,
        // never 0, so a tolerance of 1e-20 cannot be met.
        let t = Tensor::new(&[2f64, 4.0], &Device::Cpu)?;
        let eq = |x: &Tensor| {
            let sq = x.sqr()?;
            Ok(Residual { value: (&sq - &t)?, slope: (x * 2.0)?, magnitude: (sq + &t)? })
        };
        let lo = Tensor::new(&[0f64, 0.0], &Device::Cpu)?;
        let hi = Tensor::new(&[4f64, 4.0], &Device::Cpu)?;
        let strict = SolveOptions { abs_tol: 1e-20, rel_tol: 0.0, max_iter: 100 };
        let err = solve_increasing("sqrt", eq, &lo, &hi, None, &strict).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("did not converge") && msg.contains("sqrt"), "{msg}");
        assert!(msg.contains("at 1 of 2 points"), "{msg}");
        // The same problem with the default tolerance converges.
        let sol =
            solve_increasing("sqrt", eq, &lo, &hi, None, &SolveOptions::for_dtype(DType::F64))?;
        let roots = sol.root.to_vec1::<f64>()?;
        assert!(
            (roots[0] - 2f64.sqrt()).abs() < 1e-11 && (roots[1] - 2.0).abs() < 1e-11,
            "{roots:?}"
        );
        // Too few iterations is an error too.
        let short = SolveOptions { max_iter: 1, ..SolveOptions::for_dtype(DType::F64) };
        assert!(matches!(
            solve_increasing("sqrt", eq, &lo, &hi, None, &short),
            Err(Error::Numerical(_))
        ));
        Ok(())
    }

    #[test]
    fn a_bracket_without_a_root_is_an_error() -> Result<()> {
        let t = Tensor::new(&[8f64], &Device::Cpu)?;
        let lo = Tensor::new(&[0f64], &Device::Cpu)?;
        let hi = Tensor::new(&[1f64], &Device::Cpu)?;
        let opts = SolveOptions::for_dtype(DType::F64);
        let err = solve_increasing("cube", cube_minus(&t), &lo, &hi, None, &opts).err();
        assert!(err.is_some_and(|e| e.to_string().contains("does not enclose")));
        let wide = Tensor::new(&[1f64, 2.0], &Device::Cpu)?;
        assert!(matches!(
            solve_increasing("cube", cube_minus(&t), &lo, &wide, None, &opts),
            Err(Error::Shape { .. })
        ));
        Ok(())
    }

    #[test]
    fn the_implicit_step_gives_the_implicit_gradient() -> Result<()> {
        // x^3 = t: dx/dt = 1 / (3 x^2) = 1/12 at t = 8.
        let t = Var::new(&[8f64], &Device::Cpu)?;
        let opts = SolveOptions::for_dtype(DType::F64);
        let lo = Tensor::new(&[0f64], &Device::Cpu)?;
        let hi = Tensor::new(&[10f64], &Device::Cpu)?;
        let target = t.as_tensor().detach();
        let sol = solve_increasing("cube", cube_minus(&target), &lo, &hi, None, &opts)?;
        let attached = cube_minus(t.as_tensor())(&sol.root)?;
        let x = implicit_newton_step(&sol.root, &attached.value, &attached.slope)?;
        assert!((x.to_vec1::<f64>()?[0] - 2.0).abs() < 1e-12);
        let grads = x.sum_all()?.backward()?;
        let g = grads.get(t.as_tensor()).map(|g| g.to_vec1::<f64>()).transpose()?;
        assert!(g.is_some_and(|g| (g[0] - 1.0 / 12.0).abs() < 1e-12));
        Ok(())
    }
}
