//! Invertible linear map in LU-decomposed form (Glow's invertible 1x1 convolution).

use candle_core::{DType, Device, Tensor};

use super::{Bijection, Permutation};
use crate::linalg::{solve_lower_triangular, solve_upper_triangular};
use crate::params::{Init, Params};
use crate::{Error, Result};

/// `z = W x + b` on the feature axis, with `W = P L (U + diag(s))` (Kingma & Dhariwal 2018,
/// "Glow: Generative Flow with Invertible 1x1 Convolutions", section 3.2):
///
/// - `P`: a fixed permutation (the identity, or a random one from the store's generator);
/// - `L`: unit lower triangular, learnable strictly-lower entries;
/// - `U`: strictly upper triangular, learnable;
/// - `s = sign * exp(log_abs_s)`: the diagonal, with `log_abs_s` learnable and `sign` a fixed
///   buffer (all ones at creation), so `s` never crosses zero and `W` stays invertible.
///
/// `log|det dz/dx| = sum(log_abs_s)` per feature vector, O(D) instead of O(D^3). The inverse
/// `x = W^{-1} (z - b)` uses two triangular solves (see [`crate::linalg`]). Starts as the
/// identity map (with [`LuLinear::new`]).
///
/// The `L` and `U` parameters are full `(D, D)` matrices of which constant triangular masks keep
/// the strictly lower and strictly upper parts; the other entries get zero gradient.
///
/// # Shapes
/// `x: (B, D)` -> `z: (B, D)`. On `(B, C, ...)` inputs `W` mixes the channels (axis 1) at every
/// position of the trailing axes, i.e. Glow's invertible 1x1 convolution on `(B, C, H, W)`; the
/// log-determinant is then multiplied by the number of positions (`H * W`).
#[derive(Debug, Clone)]
pub struct LuLinear {
    lower: Tensor,
    upper: Tensor,
    log_abs_s: Tensor,
    sign: Tensor,
    bias: Tensor,
    strict_upper_mask: Tensor,
    eye: Tensor,
    permutation: Option<Permutation>,
}

impl LuLinear {
    /// A `d`-feature layer with `P = I`, initialized to the identity map (`L = I`, `U = 0`,
    /// `log_abs_s = 0`, `b = 0`). Tensors: `lower`, `upper` `(d, d)`; `log_abs_s`, `bias` `(d,)`;
    /// buffer `sign` `(d,)`.
    pub fn new(params: &Params, d: usize) -> Result<Self> {
        Self::build(params, d, None)
    }

    /// Like [`LuLinear::new`] but with `P` a random permutation drawn from the store's generator
    /// (Glow's fixed `P`): the layer starts as that permutation rather than as the identity.
    pub fn with_random_permutation(params: &Params, d: usize) -> Result<Self> {
        crate::ensure_config!(d > 0, "features", d, "must be at least 1");
        let permutation = Permutation::random(params, d)?;
        Self::build(params, d, Some(permutation))
    }

    fn build(params: &Params, d: usize, permutation: Option<Permutation>) -> Result<Self> {
        crate::ensure_config!(d > 0, "features", d, "must be at least 1");
        let (dtype, device): (DType, &Device) = (params.dtype(), params.device());
        let eye = Tensor::eye(d, dtype, device)?;
        // tril2 is ones on and below the diagonal: its transpose minus I is the strict upper part.
        let strict_upper_mask = (Tensor::tril2(d, dtype, device)?.t()? - &eye)?.contiguous()?;
        Ok(Self {
            lower: params.param("lower", (d, d), Init::Const(0.0))?,
            upper: params.param("upper", (d, d), Init::Const(0.0))?,
            log_abs_s: params.param("log_abs_s", d, Init::Const(0.0))?,
            sign: params.buffer("sign", d, Init::Const(1.0))?.as_tensor().clone(),
            bias: params.param("bias", d, Init::Const(0.0))?,
            strict_upper_mask,
            eye,
            permutation,
        })
    }

    fn features(&self) -> usize {
        self.log_abs_s.elem_count()
    }

    /// `L` with ones on the diagonal and zeros above it.
    fn l_matrix(&self) -> Result<Tensor> {
        let strict_lower = self.strict_upper_mask.t()?;
        Ok(((&self.lower * strict_lower)? + &self.eye)?)
    }

    /// `U + diag(s)`.
    fn u_matrix(&self) -> Result<Tensor> {
        let s = (&self.sign * self.log_abs_s.exp()?)?;
        Ok(((&self.upper * &self.strict_upper_mask)?
            + self.eye.broadcast_mul(&s.unsqueeze(0)?)?)?)
    }

    /// The weight `W = P L (U + diag(s))`, `(D, D)`, such that `z = W x + b`.
    pub fn weight(&self) -> Result<Tensor> {
        let lu = self.l_matrix()?.matmul(&self.u_matrix()?)?;
        match &self.permutation {
            Some(p) => Ok(p.forward(&lu.t()?, None)?.t()?.contiguous()?),
            None => Ok(lu),
        }
    }

    /// Applies the `(D, D)` matrix `m` on the feature axis of `x` (`(B, D)` or `(B, D, ...)`).
    fn apply(&self, m: &Tensor, x: &Tensor) -> Result<Tensor> {
        let d = self.features();
        if x.rank() < 2 || x.dim(1)? != d {
            return Err(Error::shape("LuLinear input", format!("(batch, {d}, ...)"), x.dims()));
        }
        if x.rank() == 2 {
            return Ok(x.matmul(&m.t()?)?);
        }
        let batch = x.dim(0)?;
        let per_channel = x.elem_count() / (batch * d).max(1);
        let flat = x.reshape((batch, d, per_channel))?;
        Ok(m.broadcast_matmul(&flat)?.reshape(x.shape())?)
    }

    fn bias_for(&self, x: &Tensor) -> Result<Tensor> {
        let mut shape = vec![1, self.features()];
        shape.resize(x.rank(), 1);
        Ok(self.bias.reshape(shape)?)
    }

    fn ladj(&self, x: &Tensor) -> Result<Tensor> {
        let batch = x.dim(0)?;
        let positions = x.elem_count() / (batch * self.features()).max(1);
        let total = (self.log_abs_s.sum_all()? * positions as f64)?;
        Ok(total.broadcast_as(batch)?.contiguous()?)
    }
}

impl Bijection for LuLinear {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let lu = self.l_matrix()?.matmul(&self.u_matrix()?)?;
        let mut z = self.apply(&lu, x)?;
        if let Some(p) = &self.permutation {
            z = p.forward(&z, None)?;
        }
        let z = z.broadcast_add(&self.bias_for(x)?)?;
        Ok((z, self.ladj(x)?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let d = self.features();
        if z.rank() < 2 || z.dim(1)? != d {
            return Err(Error::shape("LuLinear input", format!("(batch, {d}, ...)"), z.dims()));
        }
        let mut y = z.broadcast_sub(&self.bias_for(z)?)?;
        if let Some(p) = &self.permutation {
            y = p.inverse(&y, None)?;
        }
        // (L U)^{-1} = U^{-1} L^{-1}, from the identity: O(D) small ops, independent of the batch,
        // then one matmul. `lower` goes in unmasked: a unit-diagonal solve reads only the strictly
        // lower entries.
        let l_inv = solve_lower_triangular(&self.lower, &self.eye, true)?;
        let lu_inv = solve_upper_triangular(&self.u_matrix()?, &l_inv, false)?;
        let x = self.apply(&lu_inv, &y)?;
        Ok((x, self.ladj(z)?.neg()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;

    /// Gauss-Jordan inverse with partial pivoting, on the host: an independent reference.
    fn host_inverse(a: &[f64], n: usize) -> Vec<f64> {
        let mut m = a.to_vec();
        let mut inv: Vec<f64> =
            (0..n * n).map(|i| if i % (n + 1) == 0 { 1.0 } else { 0.0 }).collect();
        for c in 0..n {
            let p = (c..n)
                .max_by(|&i, &j| m[i * n + c].abs().total_cmp(&m[j * n + c].abs()))
                .unwrap_or(c);
            for k in 0..n {
                m.swap(p * n + k, c * n + k);
                inv.swap(p * n + k, c * n + k);
            }
            let pivot = m[c * n + c];
            for k in 0..n {
                m[c * n + k] /= pivot;
                inv[c * n + k] /= pivot;
            }
            for r in (0..n).filter(|&r| r != c) {
                let f = m[r * n + c];
                for k in 0..n {
                    m[r * n + k] -= f * m[c * n + k];
                    inv[r * n + k] -= f * inv[c * n + k];
                }
            }
        }
        inv
    }

    #[test]
    fn inverse_matches_the_matrix_inverse_and_starts_as_identity() -> Result<()> {
        let d = 5;
        let store = ParamStore::new(DType::F64, &Device::Cpu, 3);
        let layer = LuLinear::with_random_permutation(&store.root().pp("lu"), d)?;
        let plain = LuLinear::new(&store.root().pp("plain"), d)?;
        let x = crate::random::standard_normal(
            (4, d),
            DType::F64,
            &Device::Cpu,
            &mut crate::random::rng_from_seed(1),
        )?;
        let (z, ladj) = plain.forward_and_ladj(&x, None)?;
        assert_eq!(z.to_vec2::<f64>()?, x.to_vec2::<f64>()?);
        assert_eq!(ladj.to_vec1::<f64>()?, vec![0.0; 4]);

        store.perturb(0.4, 9)?;
        let w = layer.weight()?.flatten_all()?.to_vec1::<f64>()?;
        let w_inv = Tensor::from_vec(host_inverse(&w, d), (d, d), &Device::Cpu)?;
        let z = layer.forward(&x, None)?;
        let bias = store.root().pp("lu").param("bias", d, Init::Const(0.0))?;
        let expected = z.broadcast_sub(&bias)?.matmul(&w_inv.t()?)?;
        let (x_back, inv_ladj) = layer.inverse_and_ladj(&z, None)?;
        let err = (x_back - &expected)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(err < 1e-10, "inverse differs from W^-1 (z - b) by {err}");
        let err = (&expected - &x)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(err < 1e-10, "W^-1 (z - b) differs from x by {err}");
        // ladj = log|det W|, by the host LU.
        let det = crate::linalg::log_abs_det(&w, d);
        assert!((inv_ladj.to_vec1::<f64>()?[0] + det).abs() < 1e-10);
        Ok(())
    }

    #[test]
    fn rejects_inputs_of_the_wrong_width() -> Result<()> {
        let store = ParamStore::new(DType::F32, &Device::Cpu, 0);
        let layer = LuLinear::new(&store.root(), 3)?;
        let x = Tensor::zeros((2, 4), DType::F32, &Device::Cpu)?;
        assert!(matches!(layer.forward(&x, None), Err(Error::Shape { .. })));
        assert!(matches!(layer.inverse(&x, None), Err(Error::Shape { .. })));
        assert!(LuLinear::new(&store.root().pp("e"), 0).is_err());
        Ok(())
    }

    #[test]
    fn round_trips_in_f32() -> Result<()> {
        crate::bijections::test_support::assert_round_trips_in_f32(|p| {
            LuLinear::with_random_permutation(p, 3)
        })
    }
}
