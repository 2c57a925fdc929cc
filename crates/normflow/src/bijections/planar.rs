//! Planar flow (Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows").

use candle_core::Tensor;

use super::param_batch::{check_param_batch, check_rows, dot_rows, repeat_batch, tiny};
use super::Bijection;
use crate::ops::softplus;
use crate::params::{Init, Params};
use crate::solve::{implicit_newton_step, solve_increasing_with, SolveInputs, SolveOptions};
use crate::{Error, Result};

/// The parameters of one planar map `f(z) = z + û tanh(wᵀz + b)`, with the invertibility
/// constraint applied.
///
/// `f` is invertible iff `wᵀû >= -1` (with `tanh`); the raw `u` is reparameterized as
/// `û = u + (m(wᵀu) - wᵀu) w / ||w||²`, `m(a) = -1 + softplus(a)`, so `wᵀû = m(wᵀu) > -1`
/// (Rezende & Mohamed 2015, appendix A.1). When `||w||²` is below the dtype's tiny value the
/// correction is skipped: `f` is then a translation up to terms of order `||w|| ||u||`.
///
/// `f` runs in the **sampling** direction: it is the layer's `inverse` in normflow's convention.
///
/// # Shapes
/// `u`, `w`: `(D,)`, or `(B, D)` for one map per sample (amortized flows); `b`: `(1,)` or `(B,)`.
#[derive(Debug, Clone)]
pub struct PlanarParams {
    u_hat: Tensor,
    w: Tensor,
    b: Tensor,
    /// `wᵀû`, `(1,)` or `(B,)`.
    c: Tensor,
    /// `1 + wᵀû = softplus(wᵀu)`, computed directly so that it keeps its relative precision
    /// when `wᵀû` is close to -1.
    one_plus_c: Tensor,
}

impl PlanarParams {
    /// Applies the constraint to the raw `u`, `w`, `b`.
    pub fn new(u: &Tensor, w: &Tensor, b: &Tensor) -> Result<Self> {
        let ok = matches!(u.rank(), 1 | 2) && u.dims() == w.dims() && b.rank() == 1;
        let rows = if u.rank() == 2 { u.dim(0)? } else { 1 };
        if !ok || b.dim(0)? != rows {
            return Err(Error::shape(
                "planar parameters u, w, b",
                "u, w: (D,) with b: (1,), or u, w: (B, D) with b: (B,)",
                &[u.dims(), w.dims(), b.dims()].concat(),
            ));
        }
        let last = u.rank() - 1;
        let wu = (u * w)?.sum_keepdim(last)?;
        let one_plus_m = softplus(&wu)?;
        let norm2 = w.sqr()?.sum_keepdim(last)?;
        // A safe denominator in the branch where_cond drops keeps its gradient finite too.
        let usable = norm2.gt(tiny(w.dtype()))?;
        let safe = usable.where_cond(&norm2, &norm2.ones_like()?)?;
        let factor =
            usable.where_cond(&((&one_plus_m - 1.0)? - &wu)?.div(&safe)?, &safe.zeros_like()?)?;
        let u_hat = (u + w.broadcast_mul(&factor)?)?;
        let c = (&u_hat * w)?.sum(last)?;
        // Where the correction was skipped, 1 + wᵀû is 1 + wᵀu itself.
        let one_plus_c = usable.where_cond(&one_plus_m, &(&wu + 1.0)?)?.flatten_all()?;
        Ok(Self { u_hat, w: w.clone(), b: b.clone(), c: c.flatten_all()?, one_plus_c })
    }

    /// The constrained `û` (shape of `u`).
    pub fn u_hat(&self) -> &Tensor {
        &self.u_hat
    }

    /// Batched parameters `(B, ..)` repeated `k` times, `(k B, ..)` (row `s B + b` is map `b`):
    /// one map per posterior sample of an amortized flow. Unbatched parameters are unchanged.
    pub fn repeat(&self, k: usize) -> Result<Self> {
        if self.u_hat.rank() < 2 {
            return Ok(self.clone());
        }
        let r = |t: &Tensor| repeat_batch(t, k);
        Ok(Self {
            u_hat: r(&self.u_hat)?,
            w: r(&self.w)?,
            b: r(&self.b)?,
            c: r(&self.c)?,
            one_plus_c: r(&self.one_plus_c)?,
        })
    }

    /// `wᵀû`, `(1,)` or `(B,)`: always above -1.
    pub fn w_dot_u_hat(&self) -> &Tensor {
        &self.c
    }

    fn features(&self) -> Result<usize> {
        Ok(self.w.dim(self.w.rank() - 1)?)
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        check_rows(x, self.features()?, "planar map")?;
        check_param_batch(&self.w, 1, x.dim(0)?, "planar map")
    }

    /// `log|1 + wᵀû tanh'(a)| = log((1 + wᵀû) - wᵀû tanh²(a))`, both terms of the same sign
    /// when `wᵀû < 0`, so the sum keeps its precision near the constraint.
    fn ladj(&self, tanh_a: &Tensor) -> Result<Tensor> {
        let term = tanh_a.sqr()?.broadcast_mul(&self.c)?;
        Ok(term.broadcast_sub(&self.one_plus_c)?.neg()?.log()?)
    }

    /// `y = f(z) = z + û tanh(wᵀz + b)` and `log|det df/dz| = log(1 + wᵀû tanh'(wᵀz + b))`.
    ///
    /// `z: (B, D)` -> `(y (B, D), ladj (B,))`.
    pub fn map(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check_input(z)?;
        let tanh_a = dot_rows(z, &self.w)?.broadcast_add(&self.b)?.tanh()?;
        let y = z.broadcast_add(&tanh_a.unsqueeze(1)?.broadcast_mul(&self.u_hat)?)?;
        Ok((y, self.ladj(&tanh_a)?))
    }

    /// `z = f⁻¹(y)` and `log|det df⁻¹/dy|`, by a bracketed scalar solve.
    ///
    /// Every solution lies on the line `z = y - û tanh(α + b)` where `α = wᵀz` solves
    /// `α + wᵀû tanh(α + b) = wᵀy`: increasing in `α` since `wᵀû > -1`, with the root inside
    /// `wᵀy ± |wᵀû|`. Gradients flow through the root by the implicit function theorem.
    ///
    /// # Errors
    /// [`Error::Numerical`] if a residual stays above the tolerance of `opts`.
    pub fn solve(&self, y: &Tensor, opts: &SolveOptions) -> Result<(Tensor, Tensor)> {
        self.check_input(y)?;
        let w_y = dot_rows(y, &self.w)?;
        let one = w_y.ones_like()?;
        let alpha = solve_tanh_equation("planar inverse", &w_y, &self.c, &one, &self.b, opts)?;
        let tanh_a = alpha.broadcast_add(&self.b)?.tanh()?;
        let z = y.broadcast_sub(&tanh_a.unsqueeze(1)?.broadcast_mul(&self.u_hat)?)?;
        Ok((z, self.ladj(&tanh_a)?.neg()?))
    }
}

/// Solves `x + c tanh(k x + d) = t` element-wise for `x`, given `c k > -1` (so the left side
/// increases in `x`); the root lies in `t ± |c|`, which is given to the solver as the bracket,
/// and the tolerance is relative to `|t| + |c|`, the size of the equation's terms (inside the
/// bracket `|x| <= |t| + |c|`), because the rounding error of the residual grows with them
/// even where `t` is near zero. `t: (B,)`; `c`, `k`, `d` broadcast to it.
///
/// The solve runs detached; the returned root carries gradients with respect to `t`, `c`, `k`
/// and `d` through [`implicit_newton_step`].
pub(crate) fn solve_tanh_equation(
    what: &str,
    t: &Tensor,
    c: &Tensor,
    k: &Tensor,
    d: &Tensor,
    opts: &SolveOptions,
) -> Result<Tensor> {
    let shape = t.shape();
    let (c, k, d) = (c.broadcast_as(shape)?, k.broadcast_as(shape)?, d.broadcast_as(shape)?);
    // `(x + c tanh(k x + d), 1 + c k tanh'(k x + d))`.
    let lhs = |x: &Tensor, c: &Tensor, k: &Tensor, d: &Tensor| -> Result<(Tensor, Tensor)> {
        let tanh = (x * k)?.add(d)?.tanh()?;
        let slope = (((c * k)? * (tanh.sqr()?.neg()? + 1.0)?)? + 1.0)?;
        Ok(((x + (c * &tanh)?)?, slope))
    };
    let (td, cd, kd, dd) = (t.detach(), c.detach(), k.detach(), d.detach());
    let bound = cd.abs()?;
    let (lo, hi) = ((&td - &bound)?, (&td + &bound)?);
    let scale = (td.abs()? + &bound)?;
    let inputs = SolveInputs {
        bracket: Some((&lo, &hi)),
        scale: Some(&scale),
        what,
        ..SolveInputs::default()
    };
    let solution = solve_increasing_with(&td, &inputs, opts, |x| lhs(x, &cd, &kd, &dd))?;
    let (value, slope) = lhs(&solution.x, &c, &k, &d)?;
    implicit_newton_step(&solution.x, &(value - t)?, &slope)
}

/// Planar flow layer: `x = z + û tanh(wᵀz + b)` in the sampling direction (latent `z` to
/// data `x`), with `wᵀû > -1` (see [`PlanarParams`]); its `forward` (data to latent) inverts it
/// by a bracketed scalar solve that fails with [`Error::Numerical`] rather than return a
/// residual above tolerance.
///
/// `log|det dx/dz| = log(1 + wᵀû tanh'(wᵀz + b))`.
///
/// Parameters `u`, `w`: `(D,)`, `b`: `(1,)`. The layer starts as the identity: `w` uniform in
/// `±1/sqrt(D)`, `b = 0` and `u = log(e - 1) w / ||w||²`, for which `m(wᵀu) = 0` and so `û = 0`.
/// (The usual uniform start of all three adds a translation `û tanh(b)` with `|û|` up to
/// `1/||w||`: eight such layers scored a standard normal sample about 6 nats worse than the
/// identity.) The constraint's Jacobian `∂û/∂u = I - (1 - σ(wᵀu)) wwᵀ/||w||²` is full rank there,
/// so gradients reach `u` and `w` from the first step.
///
/// # Shapes
/// `x: (B, D)` -> `z: (B, D)`, ladj `(B,)`.
#[derive(Debug, Clone)]
pub struct Planar {
    u: Tensor,
    w: Tensor,
    b: Tensor,
    solve: SolveOptions,
}

impl Planar {
    /// A planar layer on `features` dimensions, with the solver tolerance of the store's dtype.
    pub fn new(params: &Params, features: usize) -> Result<Self> {
        crate::ensure_config!(features > 0, "features", features, "must be at least 1");
        let u_path = match params.prefix() {
            "" => "u".to_string(),
            prefix => format!("{prefix}.u"),
        };
        let fresh = params.store().kind_of(&u_path).is_none();
        let w = params.param("w", features, Init::LinearDefault { fan_in: features })?;
        let u = params.param_var("u", features, Init::Const(0.0))?;
        if fresh {
            // Only a newly created `u` is set: a layer built on tensors that already exist
            // (shared or loaded) keeps them.
            let norm2 =
                w.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            if norm2 > tiny(w.dtype()) {
                u.set(&(&w * ((std::f64::consts::E - 1.0).ln() / norm2))?)?;
            }
        }
        Ok(Self {
            u: u.as_tensor().clone(),
            w,
            b: params.param("b", 1, Init::Const(0.0))?,
            solve: SolveOptions::for_dtype(params.dtype()),
        })
    }

    /// Replaces the tolerance of the inverse solve.
    pub fn with_solve_options(mut self, solve: SolveOptions) -> Self {
        self.solve = solve;
        self
    }

    /// The current constrained parameters.
    pub fn params(&self) -> Result<PlanarParams> {
        PlanarParams::new(&self.u, &self.w, &self.b)
    }
}

impl Bijection for Planar {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.params()?.solve(x, &self.solve)
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.params()?.map(z)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;
    use candle_core::{DType, Device};

    fn t(v: &[f64]) -> Result<Tensor> {
        Ok(Tensor::new(v, &Device::Cpu)?)
    }

    #[test]
    fn the_constraint_gives_w_dot_u_hat_above_minus_one() -> Result<()> {
        let w = t(&[1.0, -2.0, 0.5])?;
        for scale in [-100.0, -3.0, -1.0, 0.0, 2.0] {
            let u = (&w * scale)?;
            let p = PlanarParams::new(&u, &w, &t(&[0.3])?)?;
            let wu = scale * 5.25;
            let expected = -1.0 + (1.0 + f64::exp(wu)).ln();
            let c = p.w_dot_u_hat().to_vec1::<f64>()?[0];
            assert!((c - expected).abs() < 1e-12 && c > -1.0, "w.u = {wu}: {c} vs {expected}");
        }
        // The correction moves u along w only.
        let u = t(&[0.0, 3.0, 1.0])?;
        let p = PlanarParams::new(&u, &w, &t(&[0.0])?)?;
        let moved = (p.u_hat() - &u)?.to_vec1::<f64>()?;
        assert!(
            (moved[0] * -2.0 - moved[1]).abs() < 1e-12 && (moved[0] * 0.5 - moved[2]).abs() < 1e-12
        );
        // w = 0: no correction, no NaN.
        let p = PlanarParams::new(&u, &t(&[0.0; 3])?, &t(&[0.0])?)?;
        assert_eq!(p.u_hat().to_vec1::<f64>()?, vec![0.0, 3.0, 1.0]);
        Ok(())
    }

    #[test]
    fn a_new_layer_is_the_identity_and_keeps_existing_tensors() -> Result<()> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 4);
        let layer = Planar::new(&store.root().pp("p"), 3)?;
        let z = Tensor::new(&[[0.5f64, -1.0, 2.0]], &Device::Cpu)?;
        let (x, ladj) = layer.inverse_and_ladj(&z, None)?;
        let err = (x - &z)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(err < 1e-15 && ladj.abs()?.max_all()?.to_scalar::<f64>()? < 1e-15, "{err}");
        store.perturb(0.5, 1)?;
        let before = layer.u.to_vec1::<f64>()?;
        let again = Planar::new(&store.root().pp("p"), 3)?;
        assert_eq!(again.u.to_vec1::<f64>()?, before);
        Ok(())
    }

    #[test]
    fn the_inverse_is_finite_and_exact_far_out() -> Result<()> {
        for dtype in [DType::F64, DType::F32] {
            let store = ParamStore::new(dtype, &Device::Cpu, 4);
            let layer = Planar::new(&store.root(), 2)?;
            store.perturb(1.0, 2)?;
            let z = Tensor::new(&[[1e4, -1e4], [-7e3, 7e3], [1e4, 1e4], [0.1, 0.2]], &Device::Cpu)?
                .to_dtype(dtype)?;
            let (x, ladj) = layer.inverse_and_ladj(&z, None)?;
            let (back, inv_ladj) = layer.forward_and_ladj(&x, None)?;
            let host = |t: &Tensor| -> Result<Vec<f64>> {
                Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
            };
            let (zh, bh) = (host(&z)?, host(&back)?);
            let tol = if dtype == DType::F64 { 1e-9 } else { 2e-2 };
            for (a, b) in zh.iter().zip(&bh) {
                assert!(
                    b.is_finite() && (a - b).abs() <= tol * (1.0 + a.abs()),
                    "{dtype:?}: {a} {b}"
                );
            }
            let sum = host(&(ladj + inv_ladj)?)?;
            assert!(sum.iter().all(|v| v.abs() < 1e-4), "{dtype:?}: {sum:?}");
        }
        Ok(())
    }

    #[test]
    fn gradients_through_the_solve_are_the_implicit_ones() -> Result<()> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 4);
        let layer = Planar::new(&store.root(), 3)?;
        store.perturb(0.8, 2)?;
        let x = Tensor::new(&[[0.5f64, -1.0, 2.0], [-0.3, 0.1, 0.7]], &Device::Cpu)?;
        crate::testing::assert_solved_gradients_match(&store, &layer, &x)
    }

    #[test]
    fn an_unconverged_inverse_is_an_error() -> Result<()> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 4);
        let no_iterations = SolveOptions { max_iter: 0, ..SolveOptions::for_dtype(DType::F64) };
        let layer = Planar::new(&store.root(), 3)?.with_solve_options(no_iterations);
        store.perturb(1.0, 2)?;
        let z = Tensor::new(&[[0.5f64, -1.0, 2.0]], &Device::Cpu)?;
        let x = layer.inverse(&z, None)?;
        let err = layer.forward(&x, None).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("planar inverse") && err.contains("did not converge"), "{err}");
        Ok(())
    }

    #[test]
    fn batched_parameters_match_one_map_per_row() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = crate::random::rng_from_seed(1);
        let u = crate::random::standard_normal((3, 4), DType::F64, &dev, &mut rng)?;
        let w = crate::random::standard_normal((3, 4), DType::F64, &dev, &mut rng)?;
        let b = crate::random::standard_normal(3, DType::F64, &dev, &mut rng)?;
        let z = crate::random::standard_normal((3, 4), DType::F64, &dev, &mut rng)?;
        let batched = PlanarParams::new(&u, &w, &b)?;
        let (y, ladj) = batched.map(&z)?;
        let opts = SolveOptions::for_dtype(DType::F64);
        for i in 0..3 {
            let row = |t: &Tensor| t.get(i);
            let single = PlanarParams::new(&row(&u)?, &row(&w)?, &b.narrow(0, i, 1)?)?;
            let (yi, li) = single.map(&z.narrow(0, i, 1)?)?;
            let err = (yi.squeeze(0)? - row(&y)?)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(err < 1e-14);
            assert!((li.to_vec1::<f64>()?[0] - ladj.to_vec1::<f64>()?[i]).abs() < 1e-14);
        }
        let (back, _) = batched.solve(&y, &opts)?;
        let err = (back - &z)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(err < 1e-10, "{err}");
        // Parameters for another batch size are a shape error, not a broadcast.
        assert!(matches!(batched.map(&z.narrow(0, 0, 2)?), Err(Error::Shape { .. })));
        Ok(())
    }
}
