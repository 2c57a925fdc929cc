//! Radial flow (Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows").

use candle_core::Tensor;

use super::param_batch::{check_param_batch, check_rows, repeat_batch, tiny};
use super::Bijection;
use crate::ops::softplus;
use crate::params::{Init, Params};
use crate::{Error, Result};

/// The parameters of one radial map `f(z) = z + β h(α, r) (z - z₀)`, `h = 1 / (α + r)`,
/// `r = ||z - z₀||`, with the invertibility constraint applied.
///
/// `f` is invertible iff `β >= -α`; the raw parameters give `α = softplus(a) > 0` and
/// `β = -α + softplus(b')`. The map only ever uses `s = α + β = softplus(b')`, never the
/// difference, so `1 + β h = (s + r) / (α + r)` keeps its precision when `β` is close to `-α`.
///
/// `f` runs in the **sampling** direction: it is the layer's `inverse` in normflow's convention.
///
/// # Shapes
/// `z₀`: `(D,)` or `(B, D)` (one map per sample); `a`, `b'`: `(1,)` or `(B,)`.
#[derive(Debug, Clone)]
pub struct RadialParams {
    z0: Tensor,
    alpha: Tensor,
    /// `α + β`.
    s: Tensor,
}

impl RadialParams {
    /// Applies the constraint to the raw `z₀`, `a`, `b'`.
    pub fn new(z0: &Tensor, a: &Tensor, b: &Tensor) -> Result<Self> {
        let rows = if z0.rank() == 2 { z0.dim(0)? } else { 1 };
        let ok = matches!(z0.rank(), 1 | 2) && a.dims() == [rows] && b.dims() == [rows];
        if !ok {
            return Err(Error::shape(
                "radial parameters z0, a, b",
                "z0: (D,) with a, b: (1,), or z0: (B, D) with a, b: (B,)",
                &[z0.dims(), a.dims(), b.dims()].concat(),
            ));
        }
        // α = 0 would make h singular at z₀; an α below `tiny` is already a degenerate map.
        let alpha = softplus(a)?.maximum(tiny(a.dtype()))?;
        Ok(Self { z0: z0.clone(), alpha, s: softplus(b)? })
    }

    /// Batched parameters `(B, ..)` repeated `k` times, `(k B, ..)` (row `s B + b` is map `b`).
    /// Unbatched parameters are unchanged.
    pub fn repeat(&self, k: usize) -> Result<Self> {
        if self.z0.rank() < 2 {
            return Ok(self.clone());
        }
        let r = |t: &Tensor| repeat_batch(t, k);
        Ok(Self { z0: r(&self.z0)?, alpha: r(&self.alpha)?, s: r(&self.s)? })
    }

    /// `α > 0`, `(1,)` or `(B,)`.
    pub fn alpha(&self) -> &Tensor {
        &self.alpha
    }

    /// `β = softplus(b') - α >= -α`, `(1,)` or `(B,)`.
    pub fn beta(&self) -> Result<Tensor> {
        Ok((&self.s - &self.alpha)?)
    }

    fn features(&self) -> Result<usize> {
        Ok(self.z0.dim(self.z0.rank() - 1)?)
    }

    /// `x - z₀` and its norm `(B,)`, with a tiny floor under the square so that the gradient
    /// stays finite at `x = z₀`.
    fn offset(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        check_rows(x, self.features()?, "radial map")?;
        check_param_batch(&self.z0, 1, x.dim(0)?, "radial map")?;
        let diff = x.broadcast_sub(&self.z0)?;
        let r = (diff.sqr()?.sum(1)? + tiny(x.dtype()))?.sqrt()?;
        Ok((diff, r))
    }

    /// `log|det df/dz| = (D-1) log(1 + βh) + log(1 + βh + βh'(r) r)` at radius `r` (B,), with
    /// `1 + βh = (s + r)/(α + r)` and `1 + βh + βh' r = (r² + 2αr + sα)/(α + r)²`, sums of
    /// positive terms.
    fn ladj(&self, r: &Tensor, d: usize) -> Result<Tensor> {
        let log_a_r = r.broadcast_add(&self.alpha)?.log()?;
        let log_s_r = r.broadcast_add(&self.s)?.log()?;
        let quad = (r.sqr()? + r.broadcast_mul(&(&self.alpha * 2.0)?)?)?
            .broadcast_add(&(&self.s * &self.alpha)?)?;
        let radial = ((&log_s_r - &log_a_r)? * (d as f64 - 1.0))?;
        Ok(((radial + quad.log()?)? - (log_a_r * 2.0)?)?)
    }

    /// `y = f(z) = z₀ + (z - z₀)(s + r)/(α + r)` and `log|det df/dz|`.
    ///
    /// `z: (B, D)` -> `(y (B, D), ladj (B,))`.
    pub fn map(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let (diff, r) = self.offset(z)?;
        let scale = (r.broadcast_add(&self.s)? / r.broadcast_add(&self.alpha)?)?;
        let y = diff.broadcast_mul(&scale.unsqueeze(1)?)?.broadcast_add(&self.z0)?;
        Ok((y, self.ladj(&r, z.dim(1)?)?))
    }

    /// `z = f⁻¹(y)` and `log|det df⁻¹/dy|`, in closed form.
    ///
    /// `z - z₀` is parallel to `y - z₀`, and the radius `r` of `z` solves
    /// `ρ = r (s + r)/(α + r)` with `ρ = ||y - z₀||`: an increasing function of `r`, whose root
    /// is that of the quadratic `r² + (s - ρ) r - ρα = 0`, taken in whichever of its two forms
    /// does not cancel. Then `z = z₀ + (y - z₀)(α + r)/(s + r)`.
    pub fn solve(&self, y: &Tensor) -> Result<(Tensor, Tensor)> {
        let (diff, rho) = self.offset(y)?;
        let p = rho.broadcast_sub(&self.s)?;
        let rho_alpha = rho.broadcast_mul(&self.alpha)?;
        let sq = (p.sqr()? + (&rho_alpha * 4.0)?)?.sqrt()?;
        let positive = p.ge(0.0)?;
        let one = p.ones_like()?;
        // Both forms are computed; each with a denominator that is safe where it is not used.
        let plus = ((&p + &sq)? * 0.5)?;
        let denominator = positive.where_cond(&one, &(&sq - &p)?)?;
        let minus = ((rho_alpha * 2.0)? / denominator)?;
        let r = positive.where_cond(&plus, &minus)?;
        let scale = (r.broadcast_add(&self.alpha)? / r.broadcast_add(&self.s)?)?;
        let z = diff.broadcast_mul(&scale.unsqueeze(1)?)?.broadcast_add(&self.z0)?;
        Ok((z, self.ladj(&r, y.dim(1)?)?.neg()?))
    }
}

/// Radial flow layer: `x = z + β (z - z₀)/(α + ||z - z₀||)` in the sampling direction (latent
/// `z` to data `x`), with `α > 0`, `β >= -α` (see [`RadialParams`]); it contracts or expands
/// the space around `z₀`. Both directions are closed form.
///
/// `log|det dx/dz| = (D-1) log(1 + βh) + log(1 + βh + βh'(r) r)`, `h = 1/(α + r)`.
///
/// Parameters `z0`: `(D,)` (standard normal), `a`, `b`: `(1,)` (uniform in `±1/sqrt(D)`).
///
/// # Shapes
/// `x: (B, D)` -> `z: (B, D)`, ladj `(B,)`.
#[derive(Debug, Clone)]
pub struct Radial {
    z0: Tensor,
    a: Tensor,
    b: Tensor,
}

impl Radial {
    /// A radial layer on `features` dimensions.
    pub fn new(params: &Params, features: usize) -> Result<Self> {
        crate::ensure_config!(features > 0, "features", features, "must be at least 1");
        let init = Init::LinearDefault { fan_in: features };
        Ok(Self {
            z0: params.param("z0", features, Init::Normal { std: 1.0 })?,
            a: params.param("a", 1, init)?,
            b: params.param("b", 1, init)?,
        })
    }

    /// The current constrained parameters.
    pub fn params(&self) -> Result<RadialParams> {
        RadialParams::new(&self.z0, &self.a, &self.b)
    }
}

impl Bijection for Radial {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.params()?.solve(x)
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.params()?.map(z)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn the_constraint_gives_beta_at_least_minus_alpha() -> Result<()> {
        let a = Tensor::new(&[-30f64, 0.0, 2.0, 40.0], &Device::Cpu)?;
        let b = Tensor::new(&[5f64, -40.0, 0.0, -3.0], &Device::Cpu)?;
        let z0 = Tensor::zeros((4, 2), DType::F64, &Device::Cpu)?;
        let p = RadialParams::new(&z0, &a, &b)?;
        let alpha = p.alpha().to_vec1::<f64>()?;
        let beta = p.beta()?.to_vec1::<f64>()?;
        for i in 0..4 {
            assert!(alpha[i] > 0.0 && beta[i] >= -alpha[i], "alpha {alpha:?} beta {beta:?}");
        }
        assert!((alpha[2] - (1.0 + 2f64.exp()).ln()).abs() < 1e-12);
        assert!((beta[2] - (2f64.ln() - alpha[2])).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn the_closed_form_inverse_round_trips_near_the_constraint() -> Result<()> {
        // β close to -α: a strong contraction towards z₀.
        let dev = Device::Cpu;
        let p = RadialParams::new(
            &Tensor::new(&[0.5f64, -1.0, 2.0], &dev)?,
            &Tensor::new(&[0.3f64], &dev)?,
            &Tensor::new(&[-25f64], &dev)?,
        )?;
        let z = Tensor::new(&[[0.5f64, -1.0, 2.0], [0.6, -1.0, 2.0], [10.0, 3.0, -4.0]], &dev)?;
        let (y, ladj) = p.map(&z)?;
        let (back, inv_ladj) = p.solve(&y)?;
        let err = (back - &z)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(err < 1e-10, "{err}");
        let sum = (ladj + inv_ladj)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(sum < 1e-9, "{sum}");
        assert!(p.map(&Tensor::zeros((1, 2), DType::F64, &dev)?).is_err());
        Ok(())
    }
}
