//! Rational-quadratic spline transformers: the monotone spline of neural spline flows (Durkan et
//! al. 2019, "Neural Spline Flows") with identity tails, and its circular variant for angles
//! (Rezende et al. 2020, "Normalizing Flows on Tori and Spheres").
//!
//! On CPU f32/f64 tensors both run as one fused custom op with a hand-written backward
//! ([`rq_fused`](super::rq_fused)); elsewhere (other devices, other dtypes) they run the unfused
//! composition of tensor ops below, which is also the reference the fused op is tested against.

use std::f64::consts::PI;

use candle_core::{DType, Tensor, D};

use super::rq_fused::fused;
use super::rq_kernel::Geometry;
use super::transformer::{check_raw_shape, Transformer};
use crate::{ensure_config, Result};

/// The shape hyperparameters of a rational-quadratic spline: `K` bins and lower limits that keep
/// it well conditioned (nflows' defaults, `1e-3` each).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RqSplineConfig {
    /// Number of bins `K` (at least 2).
    pub bins: usize,
    /// Smallest bin width, as a fraction of the interval (`bins * min_bin_width < 1`).
    pub min_bin_width: f64,
    /// Smallest bin height, as a fraction of the interval (`bins * min_bin_height < 1`).
    pub min_bin_height: f64,
    /// Smallest derivative at a knot, in `(0, 1)`.
    pub min_derivative: f64,
}

impl RqSplineConfig {
    /// `bins` bins with nflows' minimum width, height and derivative (`1e-3`).
    pub fn new(bins: usize) -> Self {
        Self { bins, min_bin_width: 1e-3, min_bin_height: 1e-3, min_derivative: 1e-3 }
    }

    /// Checks the hyperparameters, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        let k = self.bins as f64;
        ensure_config!(
            (2..=4096).contains(&self.bins),
            "bins",
            self.bins,
            "must be between 2 and 4096"
        );
        ensure_config!(
            self.min_bin_width >= 0.0 && self.min_bin_width * k < 1.0,
            "min_bin_width",
            self.min_bin_width,
            "must be at least 0 with bins * min_bin_width < 1"
        );
        ensure_config!(
            self.min_bin_height >= 0.0 && self.min_bin_height * k < 1.0,
            "min_bin_height",
            self.min_bin_height,
            "must be at least 0 with bins * min_bin_height < 1"
        );
        ensure_config!(
            self.min_derivative > 0.0 && self.min_derivative < 1.0,
            "min_derivative",
            self.min_derivative,
            "must lie in (0, 1): positive for strict monotonicity, below 1 so that unit \
             derivatives (the identity) are reachable"
        );
        Ok(())
    }

    fn geometry(&self, bound: f64, circular: bool) -> Geometry {
        Geometry {
            bins: self.bins,
            bound,
            min_bin_width: self.min_bin_width,
            min_bin_height: self.min_bin_height,
            min_derivative: self.min_derivative,
            circular,
        }
    }
}

impl Default for RqSplineConfig {
    fn default() -> Self {
        Self::new(8)
    }
}

/// The monotone rational-quadratic spline of neural spline flows (Durkan et al. 2019) with
/// linear (identity) tails: `P = 3K - 1` raw parameters per element,
///
/// ```text
/// raw = [u_w (K), u_h (K), u_d (K - 1)]
/// widths  w_i = 2B (m_w + (1 - K m_w) softmax(u_w)_i),  heights likewise with m_h
/// knots   x_0 = -B, x_j = x_{j-1} + w_j ... x_K = B;    y_j likewise
/// derivatives d_0 = d_K = 1,  d_j = m_d + softplus(u_d_j + c),  c = log(e^{1 - m_d} - 1)
/// y = spline(x) on [-B, B] (rational-quadratic in each bin),  y = x outside
/// ```
///
/// The unit boundary derivatives join the identity tails with a continuous derivative. The
/// offset `c` makes zero raw parameters give unit derivatives, so that zero parameters are the
/// identity (the [`Transformer`] contract); nflows feeds `u_d` to the softplus unshifted, which is
/// the only difference from its `unconstrained_rational_quadratic_spline` with linear tails (the
/// golden test feeds it `u_d + c`). The inverse is analytic: the numerically stable root
/// `2c / (-b - sqrt(b^2 - 4ac))` of the quadratic in each bin.
///
/// The spline is evaluated at inputs clamped to `[-B, B]` and the result is selected only inside,
/// so values and gradients stay finite at `+-B` and far beyond (a masked `where` still
/// differentiates the masked branch).
///
/// # Shapes
/// As [`Transformer`]: `x (B, D)`, `raw (B, D, 3K - 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RationalQuadraticSpline {
    geometry: Geometry,
}

impl RationalQuadraticSpline {
    /// The spline on `[-bound, bound]`.
    pub fn new(bound: f64, config: RqSplineConfig) -> Result<Self> {
        config.validate()?;
        ensure_config!(
            bound.is_finite() && bound > 0.0,
            "bound",
            bound,
            "must be a positive finite number"
        );
        Ok(Self { geometry: config.geometry(bound, false) })
    }

    /// The half-width `B` of the spline's interval `[-B, B]`.
    pub fn bound(&self) -> f64 {
        self.geometry.bound
    }

    /// The unfused composition of tensor ops (the reference of the fused op; any device).
    pub fn forward_unfused(&self, x: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        check_raw_shape(x, raw, self.params_per_feature())?;
        unfused(&self.geometry, x, raw, false)
    }

    /// The unfused inverse (the reference of the fused op; any device).
    pub fn inverse_unfused(&self, y: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        check_raw_shape(y, raw, self.params_per_feature())?;
        unfused(&self.geometry, y, raw, true)
    }
}

/// The circular rational-quadratic spline (Rezende et al. 2020, "Normalizing Flows on Tori and
/// Spheres", section 3.2) for angles on `[-pi, pi]`: `P = 3K` raw parameters per element,
///
/// ```text
/// raw = [u_w (K), u_h (K), u_d (K)],  widths, heights and knots as in RationalQuadraticSpline
/// with B = pi,  d_j = m_d + softplus(u_d_j + c) for j < K,  d_K = d_0
/// ```
///
/// The ends stay fixed (`f(-pi) = -pi`, `f(pi) = pi`) and the equal end derivatives make `f` a
/// diffeomorphism of the circle. Off `[-pi, pi]` the map is extended periodically,
/// `f(x + 2 pi n) = f(x) + 2 pi n`: a strictly increasing, smooth map of the whole line whose
/// log-derivative is periodic, so angles need no wrapping first. Zero raw parameters are the
/// identity. Compose with a rotation to move the fixed point.
///
/// # Shapes
/// As [`Transformer`]: `x (B, D)`, `raw (B, D, 3K)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CircularRationalQuadraticSpline {
    geometry: Geometry,
}

impl CircularRationalQuadraticSpline {
    /// The circular spline with `config`'s bins and limits.
    pub fn new(config: RqSplineConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { geometry: config.geometry(PI, true) })
    }

    /// The unfused composition of tensor ops (the reference of the fused op; any device).
    pub fn forward_unfused(&self, x: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        check_raw_shape(x, raw, self.params_per_feature())?;
        unfused(&self.geometry, x, raw, false)
    }

    /// The unfused inverse (the reference of the fused op; any device).
    pub fn inverse_unfused(&self, y: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        check_raw_shape(y, raw, self.params_per_feature())?;
        unfused(&self.geometry, y, raw, true)
    }
}

fn dispatch(g: &Geometry, v: &Tensor, raw: &Tensor, inverse: bool) -> Result<(Tensor, Tensor)> {
    check_raw_shape(v, raw, g.params_per_feature())?;
    if v.device().is_cpu() && matches!(v.dtype(), DType::F32 | DType::F64) {
        fused(g, v, raw, inverse)
    } else {
        unfused(g, v, raw, inverse)
    }
}

impl Transformer for RationalQuadraticSpline {
    fn params_per_feature(&self) -> usize {
        self.geometry.params_per_feature()
    }

    fn forward(&self, x: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        dispatch(&self.geometry, x, raw, false)
    }

    fn inverse(&self, y: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        dispatch(&self.geometry, y, raw, true)
    }
}

impl Transformer for CircularRationalQuadraticSpline {
    fn params_per_feature(&self) -> usize {
        self.geometry.params_per_feature()
    }

    fn forward(&self, x: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        dispatch(&self.geometry, x, raw, false)
    }

    fn inverse(&self, y: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        dispatch(&self.geometry, y, raw, true)
    }
}

/// Knot positions `(B, D, K + 1)` from `(B, D, K)` raw logits: `-B`, the cumulative widths, `B`.
fn knot_positions(u: &Tensor, min: f64, bound: f64) -> Result<Tensor> {
    let (b, d, k) = u.dims3()?;
    let widths = candle_nn::ops::softmax(u, D::Minus1)?.affine(1.0 - min * k as f64, min)?;
    let interior = widths.cumsum(2)?.narrow(2, 0, k - 1)?.affine(2.0 * bound, -bound)?;
    let end = Tensor::full(bound, (b, d, 1), u.device())?.to_dtype(u.dtype())?;
    Ok(Tensor::cat(&[&end.neg()?, &interior, &end], 2)?)
}

/// `(x_j, y_j, d_j)`, each `(B, D, K + 1)`.
fn knots(g: &Geometry, raw: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let k = g.bins;
    let xs = knot_positions(&raw.narrow(2, 0, k)?, g.min_bin_width, g.bound)?;
    let ys = knot_positions(&raw.narrow(2, k, k)?, g.min_bin_height, g.bound)?;
    let ud = raw.narrow(2, 2 * k, g.params_per_feature() - 2 * k)?;
    let inner = (crate::ops::softplus(&(ud + g.derivative_offset())?)? + g.min_derivative)?;
    let ds = if g.circular {
        Tensor::cat(&[&inner, &inner.narrow(2, 0, 1)?], 2)?
    } else {
        let one = inner.narrow(2, 0, 1)?.ones_like()?;
        Tensor::cat(&[&one, &inner, &one], 2)?
    };
    Ok((xs, ys, ds))
}

/// The unfused spline (or its inverse) as tensor ops: the reference composition.
fn unfused(g: &Geometry, v: &Tensor, raw: &Tensor, inverse: bool) -> Result<(Tensor, Tensor)> {
    let k = g.bins;
    let (xs, ys, ds) = knots(g, raw)?;
    // Where the spline acts: a clamped (bounded) or wrapped (circular) input. No clamp lies on
    // a differentiated path: candle halves a clamp's gradient at the bound itself, where the
    // spline's one-sided derivative is wanted.
    let inside = v.abs()?.le(g.bound)?;
    let (inner, shift) = if g.circular {
        let shift = (v.affine(1.0 / (2.0 * PI), 0.5)?.floor()? * (2.0 * PI))?.detach();
        ((v - &shift)?, Some(shift))
    } else {
        (inside.where_cond(v, &v.clamp(-g.bound, g.bound)?.detach())?, None)
    };
    let search = if inverse { &ys } else { &xs };
    let idx = inner
        .unsqueeze(2)?
        .broadcast_ge(&search.narrow(2, 1, k - 1)?)?
        .to_dtype(DType::U32)?
        .sum_keepdim(2)?;
    let pick = |t: &Tensor, offset: usize| -> Result<Tensor> {
        Ok(t.narrow(2, offset, k)?.contiguous()?.gather(&idx, 2)?.squeeze(2)?)
    };
    let (xk, yk, d0) = (pick(&xs, 0)?, pick(&ys, 0)?, pick(&ds, 0)?);
    let w = (pick(&xs, 1)? - &xk)?;
    let h = (pick(&ys, 1)? - &yk)?;
    let d1 = pick(&ds, 1)?;
    let s = (&h / &w)?;
    let e = ((&d0 + &d1)? - (&s * 2.0)?)?;
    let theta = if inverse {
        let dy = (&inner - &yk)?;
        let a = ((&h * (&s - &d0)?)? + (&dy * &e)?)?;
        let b = ((&h * &d0)? - (&dy * &e)?)?;
        let c = (&s * &dy)?.neg()?;
        let disc = ((&b * &b)? - ((&a * &c)? * 4.0)?)?.maximum(0.0)?;
        ((&c * 2.0)? / (b.neg()? - disc.sqrt()?)?)?
    } else {
        ((&inner - &xk)? / &w)?
    };
    let one_minus = theta.affine(-1.0, 1.0)?;
    let t = (&theta * &one_minus)?;
    let den = (&s + (&e * &t)?)?;
    let m = ((((&d1 * &theta)? * &theta)? + ((&s * &t)? * 2.0)?)?
        + ((&d0 * &one_minus)? * &one_minus)?)?;
    let log_deriv = (((s.log()? * 2.0)? + m.log()?)? - (den.log()? * 2.0)?)?;
    let (out, log_deriv) = if inverse {
        ((&xk + (&theta * &w)?)?, log_deriv.neg()?)
    } else {
        let num = ((((&s * &theta)? * &theta)? + (&d0 * &t)?)? * &h)?;
        ((&yk + (num / &den)?)?, log_deriv)
    };
    match shift {
        Some(shift) => Ok(((out + shift)?, log_deriv)),
        None => Ok((
            inside.where_cond(&out, v)?,
            inside.where_cond(&log_deriv, &log_deriv.zeros_like()?)?,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::{rng_from_seed, standard_normal};
    use crate::Error;
    use candle_core::{Device, Var};

    fn flat(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
    }

    /// Inputs spread over `[-4, 4]` with the bound, beyond it, and far beyond.
    fn inputs(rows: usize, dtype: DType, seed: u64) -> Result<Tensor> {
        let x = (standard_normal((rows, 3), DType::F64, &Device::Cpu, &mut rng_from_seed(seed))?
            * 2.0)?;
        // f32's pi lies past pi, where the circular spline's other end gives another (equally
        // valid) derivative of the log-derivative than the f32 unfused composition finds.
        let pi = if dtype == DType::F32 { PI - 1e-3 } else { PI };
        let edges =
            Tensor::new(&[[3.0f64, -3.0, 1e4], [-1e4, 3.5, pi], [-pi, 7.0, 0.0]], x.device())?;
        Ok(Tensor::cat(&[&x, &edges], 0)?.to_dtype(dtype)?)
    }

    type Run<'a> = &'a dyn Fn(&Tensor, &Tensor) -> Result<(Tensor, Tensor)>;

    /// Values and gradients (of a random weighting of output and log-derivative) with respect
    /// to the input and the raw parameters.
    fn values_and_grads(f: Run, x: &Tensor, raw: &Tensor, seed: u64) -> Result<Vec<Vec<f64>>> {
        let (xv, rv) = (Var::from_tensor(x)?, Var::from_tensor(raw)?);
        let (y, l) = f(xv.as_tensor(), rv.as_tensor())?;
        let mut rng = rng_from_seed(seed);
        let wy = standard_normal(y.dims(), y.dtype(), y.device(), &mut rng)?;
        let wl = standard_normal(l.dims(), l.dtype(), l.device(), &mut rng)?;
        let loss = ((&y * &wy)?.sum_all()? + (&l * &wl)?.sum_all()?)?;
        let grads = loss.backward()?;
        let gx = grads.get(xv.as_tensor()).ok_or_else(|| Error::Data("no dx".into()))?;
        let gr = grads.get(rv.as_tensor()).ok_or_else(|| Error::Data("no draw".into()))?;
        Ok(vec![flat(&y)?, flat(&l)?, flat(gx)?, flat(gr)?])
    }

    fn assert_close(a: &[Vec<f64>], b: &[Vec<f64>], tol: f64, what: &str) {
        for (i, (va, vb)) in a.iter().zip(b).enumerate() {
            assert_eq!(va.len(), vb.len());
            for (j, (x, y)) in va.iter().zip(vb).enumerate() {
                assert!(x.is_finite() && y.is_finite(), "{what}: output {i}[{j}] {x} vs {y}");
                assert!(
                    (x - y).abs() <= tol * x.abs().max(y.abs()).max(1.0),
                    "{what}: output {i}[{j}] {x} vs {y}"
                );
            }
        }
    }

    /// The fused op against the unfused composition: values, log-derivatives and gradients, both
    /// directions, both splines, f64 and f32, inputs at and beyond the bound included.
    #[test]
    fn fused_matches_unfused_values_and_gradients() -> Result<()> {
        let config = RqSplineConfig::new(5);
        let bounded = RationalQuadraticSpline::new(3.0, config)?;
        let circular = CircularRationalQuadraticSpline::new(config)?;
        compare("bounded", &bounded, &|x, r| bounded.forward_unfused(x, r), &|y, r| {
            bounded.inverse_unfused(y, r)
        })?;
        compare("circular", &circular, &|x, r| circular.forward_unfused(x, r), &|y, r| {
            circular.inverse_unfused(y, r)
        })
    }

    fn compare(name: &str, spline: &dyn Transformer, fwd: Run, inv: Run) -> Result<()> {
        // In f32 the unfused circular spline wraps 1e4 to [-pi, pi] with an error of 1e4's ulp
        // (1e-3; the fused op wraps in f64), which moves gradients there by about 1e-4.
        for (dtype, tol) in [(DType::F64, 1e-9), (DType::F32, 5e-4)] {
            let x = inputs(6, dtype, 1)?;
            let p = spline.params_per_feature();
            let raw =
                standard_normal((x.dim(0)?, 3, p), dtype, &Device::Cpu, &mut rng_from_seed(2))?;
            let a = values_and_grads(&|x, r| spline.forward(x, r), &x, &raw, 3)?;
            let b = values_and_grads(fwd, &x, &raw, 3)?;
            assert_close(&a, &b, tol, &format!("{name} forward {dtype:?}"));
            let a = values_and_grads(&|y, r| spline.inverse(y, r), &x, &raw, 4)?;
            let b = values_and_grads(inv, &x, &raw, 4)?;
            assert_close(&a, &b, tol, &format!("{name} inverse {dtype:?}"));
        }
        Ok(())
    }

    /// Round trips, inverse log-derivative = -forward, zero parameters = identity.
    #[test]
    fn inverse_undoes_forward_and_zero_parameters_are_the_identity() -> Result<()> {
        let config = RqSplineConfig::new(8);
        let bounded = RationalQuadraticSpline::new(2.0, config)?;
        let circular = CircularRationalQuadraticSpline::new(config)?;
        for spline in [&bounded as &dyn Transformer, &circular] {
            let x = inputs(20, DType::F64, 5)?;
            let p = spline.params_per_feature();
            let raw = (standard_normal(
                (x.dim(0)?, 3, p),
                DType::F64,
                &Device::Cpu,
                &mut rng_from_seed(6),
            )? * 2.0)?;
            let (y, l) = spline.forward(&x, &raw)?;
            let (back, m) = spline.inverse(&y, &raw)?;
            let (xs, bs) = (flat(&x)?, flat(&back)?);
            for (a, b) in xs.iter().zip(&bs) {
                assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{spline:?}: {a} vs {b}");
            }
            for (a, b) in flat(&l)?.iter().zip(flat(&m)?) {
                assert!((a + b).abs() < 1e-9, "{spline:?}: {a} vs {b}");
            }
            assert!(flat(&(&y - &x)?.abs()?)?.iter().any(|d| *d > 0.1), "{spline:?}: identity");
            let (y0, l0) = spline.forward(&x, &raw.zeros_like()?)?;
            for (a, b) in xs.iter().zip(flat(&y0)?) {
                assert!((a - b).abs() <= 1e-12 * a.abs().max(1.0), "{spline:?}: {a} vs {b}");
            }
            assert!(flat(&l0)?.iter().all(|v| v.abs() < 1e-12));
        }
        Ok(())
    }

    /// The circular spline fixes +-pi, has equal derivatives there (a diffeomorphism of the
    /// circle), and commutes with shifts by 2 pi.
    #[test]
    fn circular_spline_is_a_circle_diffeomorphism() -> Result<()> {
        let spline = CircularRationalQuadraticSpline::new(RqSplineConfig::new(6))?;
        let eps = 1e-9;
        let x = Tensor::new(
            &[[-PI, PI, -PI + eps, PI - eps, 0.7, 0.7 + 2.0 * PI, 0.7 - 6.0 * PI]],
            &Device::Cpu,
        )?
        .t()?
        .contiguous()?;
        let raw = standard_normal((7, 1, 18), DType::F64, &Device::Cpu, &mut rng_from_seed(8))?;
        // One element's parameters for every input.
        let raw = raw.narrow(0, 0, 1)?.broadcast_as((7, 1, 18))?.contiguous()?;
        let (y, l) = spline.forward(&x, &raw)?;
        let (y, l) = (flat(&y)?, flat(&l)?);
        assert!((y[0] + PI).abs() < 1e-12 && (y[1] - PI).abs() < 1e-12, "{y:?}");
        assert!((l[2] - l[3]).abs() < 1e-6, "end derivatives differ: {l:?}");
        assert!(l[2].abs() > 1e-3, "the test point has a non-unit end derivative: {l:?}");
        for (i, k) in [(5, 1.0), (6, -3.0)] {
            assert!((y[i] - y[4] - k * 2.0 * PI).abs() < 1e-9, "{y:?}");
            assert!((l[i] - l[4]).abs() < 1e-9, "{l:?}");
        }
        Ok(())
    }

    /// Dtypes the fused op does not take run the unfused composition.
    #[test]
    fn half_precision_runs_the_unfused_composition() -> Result<()> {
        let spline = RationalQuadraticSpline::new(3.0, RqSplineConfig::new(4))?;
        let x = inputs(4, DType::F64, 9)?;
        let raw =
            standard_normal((x.dim(0)?, 3, 11), DType::F64, &Device::Cpu, &mut rng_from_seed(1))?;
        let (y64, _) = spline.forward(&x, &raw)?;
        let (y16, l16) = spline.forward(&x.to_dtype(DType::BF16)?, &raw.to_dtype(DType::BF16)?)?;
        assert_eq!(y16.dtype(), DType::BF16);
        assert!(flat(&l16)?.iter().all(|v| v.is_finite()));
        for (a, b) in flat(&y64)?.iter().zip(flat(&y16)?) {
            assert!((a - b).abs() <= 0.05 * a.abs().max(1.0), "{a} vs {b}");
        }
        Ok(())
    }

    #[test]
    fn invalid_hyperparameters_are_config_errors() {
        for (bound, config) in [
            (3.0, RqSplineConfig::new(1)),
            (0.0, RqSplineConfig::new(8)),
            (f64::NAN, RqSplineConfig::new(8)),
            (3.0, RqSplineConfig { min_bin_width: 0.2, ..RqSplineConfig::new(8) }),
            (3.0, RqSplineConfig { min_bin_height: -0.1, ..RqSplineConfig::new(8) }),
            (3.0, RqSplineConfig { min_derivative: 0.0, ..RqSplineConfig::new(8) }),
            (3.0, RqSplineConfig { min_derivative: 1.0, ..RqSplineConfig::new(8) }),
        ] {
            let err = RationalQuadraticSpline::new(bound, config).expect_err("invalid");
            assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
        }
    }
}
