//! Brute-force `f64` references for the spline transformers' tests: the log-derivative against
//! a central difference of the map, the inverse against bisection on the forward map,
//! monotonicity on a fine grid, the identity at zero parameters, and finite values and gradients
//! at `+-B` and far beyond.

use candle_core::{DType, Device, Tensor, Var};

use super::Transformer;
use crate::random::{rng_from_seed, standard_normal, uniform};
use crate::{Error, Result};

fn host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_vec1::<f64>()?)
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::CheckFailed(msg()))
    }
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// `x` by bisection on the forward map: the `x` with `forward(x) = y`, elementwise.
fn bisect(t: &dyn Transformer, y: &Tensor, raw: &Tensor, bound: f64) -> Result<Tensor> {
    let reach = 2.0 * bound + 1.0;
    let mut lo = y.ones_like()?.affine(-reach, 0.0)?;
    let mut hi = y.ones_like()?.affine(reach, 0.0)?;
    for _ in 0..70 {
        let mid = ((&lo + &hi)? * 0.5)?;
        let below = t.forward(&mid, raw)?.0.lt(y)?;
        lo = below.where_cond(&mid, &lo)?;
        hi = below.where_cond(&hi, &mid)?;
    }
    Ok(((lo + hi)? * 0.5)?)
}

/// Every check of the module docs at random parameters, moderate and extreme.
pub(crate) fn check_transformer(t: &dyn Transformer, bound: f64) -> Result<()> {
    let dev = Device::Cpu;
    let mut rng = rng_from_seed(17);
    let (n, d, p) = (64, 3, t.params_per_feature());
    for (scale, tol) in [(1.5, 1e-10), (30.0, 1e-8)] {
        let raw = (standard_normal((n, d, p), DType::F64, &dev, &mut rng)? * scale)?;
        let x = uniform((n, d), DType::F64, &dev, &mut rng)?.affine(3.0 * bound, -1.5 * bound)?;
        let (y, ld) = t.forward(&x, &raw)?;
        let (xv, yv, ldv) = (host(&x)?, host(&y)?, host(&ld)?);

        if scale < 2.0 {
            // Extreme parameters make rounding dominate the finite difference; skip them.
            let h = 1e-6;
            let yp = host(&t.forward(&(&x + h)?, &raw)?.0)?;
            let ym = host(&t.forward(&(&x - h)?, &raw)?.0)?;
            let fd: Vec<f64> =
                yp.iter().zip(&ym).map(|(a, b)| ((a - b) / (2.0 * h)).ln()).collect();
            let err = max_diff(&ldv, &fd);
            ensure(err < 1e-5, || format!("log dy/dx vs finite difference: {err:.2e}"))?;
        }

        let (x_back, ld_back) = t.inverse(&y, &raw)?;
        let err = max_diff(&host(&x_back)?, &xv);
        ensure(err < tol, || format!("round trip (scale {scale}): {err:.2e}"))?;
        let reference = host(&bisect(t, &y, &raw, bound)?)?;
        let err = max_diff(&host(&x_back)?, &reference);
        ensure(err < tol, || format!("inverse vs bisection (scale {scale}): {err:.2e}"))?;
        let neg: Vec<f64> = ldv.iter().map(|v| -v).collect();
        let err = max_diff(&host(&ld_back)?, &neg);
        ensure(err < tol, || format!("inverse log-derivative (scale {scale}): {err:.2e}"))?;
        ensure(yv.iter().chain(&ldv).all(|v| v.is_finite()), || "non-finite output".into())?;

        check_monotone(t, &raw, bound)?;
        check_edges(t, &raw.narrow(0, 0, 6)?, bound)?;
    }
    Ok(())
}

/// Strictly increasing on a fine grid over `[-1.2B, 1.2B]` for a few parameter rows, and
/// `+-B` map to themselves (continuity with the identity tails).
fn check_monotone(t: &dyn Transformer, raw: &Tensor, bound: f64) -> Result<()> {
    let m = 4001;
    let grid: Vec<f64> =
        (0..m).map(|i| -1.2 * bound + 2.4 * bound * i as f64 / (m - 1) as f64).collect();
    let grid = Tensor::from_vec(grid, (m, 1), raw.device())?;
    let ends = Tensor::new(&[[-bound], [bound]], raw.device())?;
    for row in 0..4 {
        let theta = raw.narrow(0, row, 1)?.narrow(1, 0, 1)?;
        let y = host(&t.forward(&grid, &theta.broadcast_as((m, 1, theta.dim(2)?))?)?.0)?;
        let bad = y.windows(2).position(|w| w[1] <= w[0]);
        ensure(bad.is_none(), || format!("not increasing at grid point {bad:?}"))?;
        let at_ends = host(&t.forward(&ends, &theta.broadcast_as((2, 1, theta.dim(2)?))?)?.0)?;
        let err = max_diff(&at_ends, &[-bound, bound]);
        ensure(err < 1e-12, || format!("+-B do not map to themselves: {at_ends:?}"))?;
    }
    Ok(())
}

/// Finite values and gradients (input and parameters) in both directions at `+-B`, just past
/// it, at 0 and at `+-1e4`.
fn check_edges(t: &dyn Transformer, raw: &Tensor, bound: f64) -> Result<()> {
    let values = [-1e4, -bound, bound, bound * (1.0 + 1e-12), 0.0, 1e4];
    let d = raw.dim(1)?;
    let x: Vec<f64> = values.iter().flat_map(|v| std::iter::repeat_n(*v, d)).collect();
    let x = Var::from_tensor(&Tensor::from_vec(x, (values.len(), d), raw.device())?)?;
    let raw = Var::from_tensor(raw)?;
    for direction in ["forward", "inverse"] {
        let (y, ld) = if direction == "forward" {
            t.forward(x.as_tensor(), raw.as_tensor())?
        } else {
            t.inverse(x.as_tensor(), raw.as_tensor())?
        };
        let out = [host(&y)?, host(&ld)?].concat();
        ensure(out.iter().all(|v| v.is_finite()), || format!("{direction}: non-finite output"))?;
        let grads = (y.sum_all()? + ld.sum_all()?)?.backward()?;
        for (name, var) in [("input", &x), ("parameters", &raw)] {
            let g = grads
                .get(var.as_tensor())
                .ok_or_else(|| Error::CheckFailed(format!("{direction}: no {name} gradient")))?;
            let g = host(g)?;
            ensure(g.iter().all(|v| v.is_finite()), || {
                format!("{direction}: non-finite {name} gradient at the edges")
            })?;
        }
    }
    Ok(())
}

/// All-zero parameters: `y = x` and `log dy/dx = 0` within `tol`, both directions, on
/// `[-1.5B, 1.5B]` (inside and the tails).
pub(crate) fn check_identity(t: &dyn Transformer, tol: f64) -> Result<()> {
    let mut rng = rng_from_seed(5);
    let x = uniform((50, 2), DType::F64, &Device::Cpu, &mut rng)?.affine(9.0, -4.5)?;
    let raw = Tensor::zeros((50, 2, t.params_per_feature()), DType::F64, &Device::Cpu)?;
    for (y, ld) in [t.forward(&x, &raw)?, t.inverse(&x, &raw)?] {
        let err = max_diff(&host(&y)?, &host(&x)?)
            .max(host(&ld)?.iter().fold(0.0, |m, v| m.max(v.abs())));
        ensure(err < tol, || format!("zero parameters are not the identity: {err:.2e}"))?;
    }
    Ok(())
}

/// `log dy/dx` at `x` for a few moderate random parameter rows (`0.3 N(0, 1)`).
pub(crate) fn log_derivative_at(t: &dyn Transformer, x: f64, seed: u64) -> Result<Vec<f64>> {
    let mut rng = rng_from_seed(seed);
    let raw =
        (standard_normal((8, 1, t.params_per_feature()), DType::F64, &Device::Cpu, &mut rng)?
            * 0.3)?;
    let x = Tensor::full(x, (8, 1), &Device::Cpu)?;
    host(&t.forward(&x, &raw)?.1)
}
