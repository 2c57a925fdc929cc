//! Householder reflections (Tomczak & Welling 2016, "Improving Variational Auto-Encoders using
//! Householder Flow").

use candle_core::Tensor;

use super::param_batch::{check_param_batch, check_rows, tiny};
use super::{zero_ladj, Bijection};
use crate::params::{Init, Params};
use crate::{Error, Result};

/// `2 / ||v||²` along the last axis (keeping it), or 0 where `||v||²` is below the dtype's tiny
/// value: a zero direction reflects nothing, so the map stays orthogonal.
fn reflection_factor(v: &Tensor) -> Result<Tensor> {
    let norm2 = v.sqr()?.sum_keepdim(v.rank() - 1)?;
    let usable = norm2.gt(tiny(v.dtype()))?;
    let safe = usable.where_cond(&norm2, &norm2.ones_like()?)?;
    Ok(usable.where_cond(&(safe.recip()? * 2.0)?, &norm2.zeros_like()?)?)
}

fn check_directions(v: &Tensor, features: usize) -> Result<()> {
    if !matches!(v.rank(), 2 | 3) || v.dim(v.rank() - 1)? != features {
        return Err(Error::shape(
            "Householder directions",
            format!("(K, {features}) or (B, K, {features})"),
            v.dims(),
        ));
    }
    Ok(())
}

/// Applies `H_K ⋯ H_1` (or, with `reverse`, `H_1 ⋯ H_K`, its inverse) to every row of `x`, where
/// `H_k = I - 2 v_k v_kᵀ / ||v_k||²` is the reflection through the hyperplane orthogonal to `v_k`.
/// A product of `D` reflections can be any orthogonal matrix; the map is volume preserving.
///
/// # Shapes
/// `x: (B, D)`; `v: (K, D)` or `(B, K, D)` (one product per row) -> `(B, D)`.
pub fn householder_reflect(x: &Tensor, v: &Tensor, reverse: bool) -> Result<Tensor> {
    check_directions(v, x.dim(x.rank().saturating_sub(1))?)?;
    check_rows(x, v.dim(v.rank() - 1)?, "Householder reflection")?;
    check_param_batch(v, 2, x.dim(0)?, "Householder reflection")?;
    let k_axis = v.rank() - 2;
    let k = v.dim(k_axis)?;
    let mut y = x.clone();
    for i in 0..k {
        let index = if reverse { k - 1 - i } else { i };
        let vk = v.narrow(k_axis, index, 1)?.squeeze(k_axis)?;
        // (x · v) 2/||v||², (B, 1), times v.
        let proj = y.broadcast_mul(&vk)?.sum_keepdim(1)?.broadcast_mul(&reflection_factor(&vk)?)?;
        y = (y - proj.broadcast_mul(&vk)?)?;
    }
    Ok(y)
}

/// The first `m` columns of `H_1 ⋯ H_K`: a `(D, m)` matrix with orthonormal columns (the `Q` of
/// a Householder-Sylvester flow, van den Berg et al. 2018).
///
/// # Shapes
/// `v: (K, D)` -> `(D, m)`; `v: (B, K, D)` -> `(B, D, m)`.
pub fn householder_columns(v: &Tensor, m: usize) -> Result<Tensor> {
    let d = v.dim(v.rank().saturating_sub(1))?;
    check_directions(v, d)?;
    crate::ensure_config!(m >= 1 && m <= d, "m", m, format!("must be in 1..={d}"));
    let k_axis = v.rank() - 2;
    let mut q = Tensor::eye(d, v.dtype(), v.device())?.narrow(1, 0, m)?;
    // H_1 ⋯ H_K E: the last reflection applies first.
    for index in (0..v.dim(k_axis)?).rev() {
        let vk = v.narrow(k_axis, index, 1)?.squeeze(k_axis)?;
        let factor = reflection_factor(&vk)?.unsqueeze(vk.rank())?; // (1, 1) or (B, 1, 1)
        let column = vk.unsqueeze(vk.rank())?; // (D, 1) or (B, D, 1)
        let proj = column.broadcast_mul(&q)?.sum_keepdim(column.rank() - 2)?; // (.., 1, m)
        q = q.broadcast_sub(&column.broadcast_mul(&proj)?.broadcast_mul(&factor)?)?;
    }
    Ok(q)
}

/// A product of `K` Householder reflections as a layer: `z = H_K ⋯ H_1 x`, orthogonal and
/// volume preserving (`log|det| = 0`). Useful inside other flows (between planar or Sylvester
/// layers, or as the orthogonal factor of a Sylvester flow); alone it cannot change a density's
/// shape.
///
/// Parameters `v`: `(K, D)`, standard normal.
///
/// # Shapes
/// `x: (B, D)` -> `z: (B, D)`, ladj `(B,)` of zeros.
#[derive(Debug, Clone)]
pub struct Householder {
    v: Tensor,
}

impl Householder {
    /// `reflections` reflections of `features`-dimensional vectors.
    pub fn new(params: &Params, features: usize, reflections: usize) -> Result<Self> {
        crate::ensure_config!(features > 0, "features", features, "must be at least 1");
        crate::ensure_config!(reflections > 0, "reflections", reflections, "must be at least 1");
        Ok(Self { v: params.param("v", (reflections, features), Init::Normal { std: 1.0 })? })
    }
}

impl Bijection for Householder {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        Ok((householder_reflect(x, &self.v, false)?, zero_ladj(x)?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        Ok((householder_reflect(z, &self.v, true)?, zero_ladj(z)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn columns_are_orthonormal_and_match_the_reflections() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = crate::random::rng_from_seed(3);
        let v = crate::random::standard_normal((3, 4), DType::F64, &dev, &mut rng)?;
        let q = householder_columns(&v, 4)?;
        let gram = q.t()?.matmul(&q)?;
        let err =
            (gram - Tensor::eye(4, DType::F64, &dev)?)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(err < 1e-14, "{err}");
        // Rows: x Q = (Qᵀ x)ᵀ = (H_K ⋯ H_1 x)ᵀ.
        let x = crate::random::standard_normal((2, 4), DType::F64, &dev, &mut rng)?;
        let err = (x.matmul(&q)? - householder_reflect(&x, &v, false)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
        assert!(err < 1e-14, "{err}");
        // A zero direction reflects nothing (instead of dividing by zero).
        let zero = Tensor::zeros((1, 4), DType::F64, &dev)?;
        assert_eq!(householder_reflect(&x, &zero, false)?.to_vec2::<f64>()?, x.to_vec2::<f64>()?);
        assert!(householder_columns(&v, 5).is_err());
        Ok(())
    }
}
