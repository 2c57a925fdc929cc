//! Standardization of data columns, stored with the model.
//!
//! Flows train best on standardized data, but users want densities in their own units. A
//! [`Standardization`] is computed from the training rows and applied *inside* the model as the
//! first bijection ([`Standardize`]), so every log-density the model reports already includes its
//! log-determinant, `-sum_j log scale_j`, and every sample comes back in original units.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::bijections::Bijection;
use crate::{Error, Result};

/// Per-feature `shift` and `scale`: `z_j = (x_j - shift_j) / scale_j`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardization {
    /// Per-feature shift (the training mean).
    pub shift: Vec<f64>,
    /// Per-feature scale (the training standard deviation; 1 for constant columns).
    pub scale: Vec<f64>,
}

/// Columns whose standard deviation is below this (relative to their magnitude) are treated as
/// constant: they are centred but not scaled, so no division by zero can occur.
const CONSTANT_COLUMN_RTOL: f64 = 1e-12;

impl Standardization {
    /// The identity on `d` features.
    pub fn identity(d: usize) -> Self {
        Self { shift: vec![0.0; d], scale: vec![1.0; d] }
    }

    /// Mean and standard deviation of each column of the row-major `rows x d` matrix `data`.
    ///
    /// A constant column gets scale 1 (it is centred but not scaled). Fails on empty
    /// or non-finite data.
    pub fn fit(data: &[f64], d: usize) -> Result<Self> {
        if d == 0 || data.is_empty() || data.len() % d != 0 {
            return Err(Error::Data(format!(
                "cannot standardize {} values as rows of {d} features",
                data.len()
            )));
        }
        let n = (data.len() / d) as f64;
        let mut shift = vec![0.0; d];
        for row in data.chunks_exact(d) {
            for (s, v) in shift.iter_mut().zip(row) {
                *s += v / n;
            }
        }
        let mut var = vec![0.0; d];
        for row in data.chunks_exact(d) {
            for ((v, x), m) in var.iter_mut().zip(row).zip(&shift) {
                *v += (x - m).powi(2) / n;
            }
        }
        let scale: Vec<f64> = var
            .iter()
            .zip(&shift)
            .map(|(v, m)| {
                let sd = v.sqrt();
                if sd <= CONSTANT_COLUMN_RTOL * m.abs().max(1.0) {
                    1.0
                } else {
                    sd
                }
            })
            .collect();
        if shift.iter().chain(&scale).any(|v| !v.is_finite()) {
            return Err(Error::Data("non-finite values: cannot standardize".into()));
        }
        Ok(Self { shift, scale })
    }

    /// Number of features.
    pub fn features(&self) -> usize {
        self.shift.len()
    }

    /// Checks internal consistency (equal lengths, finite, positive scales).
    pub fn validate(&self) -> Result<()> {
        if self.shift.len() != self.scale.len() {
            return Err(Error::Data(format!(
                "standardization has {} shifts but {} scales",
                self.shift.len(),
                self.scale.len()
            )));
        }
        if let Some(j) = self.scale.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::Data(format!("standardization scale {j} is {}", self.scale[j])));
        }
        if let Some(j) = self.shift.iter().position(|s| !s.is_finite()) {
            return Err(Error::Data(format!("standardization shift {j} is {}", self.shift[j])));
        }
        Ok(())
    }

    /// `log|det dz/dx| = -sum_j log scale_j`, the same for every sample.
    pub fn ladj(&self) -> f64 {
        -self.scale.iter().map(|s| s.ln()).sum::<f64>()
    }

    /// Applies `(x - shift) / scale` to `(B, D)` host rows.
    pub fn apply_rows(&self, data: &mut [f64]) {
        let d = self.features();
        for row in data.chunks_exact_mut(d) {
            for ((v, shift), scale) in row.iter_mut().zip(&self.shift).zip(&self.scale) {
                *v = (*v - shift) / scale;
            }
        }
    }

    /// The bijection `x -> (x - shift) / scale` on `(B, D)` tensors of `dtype` on `device`.
    pub fn bijection(&self, dtype: DType, device: &Device) -> Result<Standardize> {
        self.validate()?;
        let d = self.features();
        let shift = Tensor::from_vec(self.shift.clone(), d, &Device::Cpu)?;
        let inv_scale = Tensor::from_vec(
            self.scale.iter().map(|s| 1.0 / s).collect::<Vec<_>>(),
            d,
            &Device::Cpu,
        )?;
        Ok(Standardize {
            shift: shift.to_dtype(dtype)?.to_device(device)?,
            inv_scale: inv_scale.to_dtype(dtype)?.to_device(device)?,
            ladj: self.ladj(),
        })
    }
}

/// The fixed (non-trainable) bijection of a [`Standardization`]: `z = (x - shift) / scale`,
/// `log|det dz/dx| = -sum log scale`.
///
/// # Shapes
/// `x: (B, D)`.
#[derive(Debug, Clone)]
pub struct Standardize {
    shift: Tensor,
    inv_scale: Tensor,
    ladj: f64,
}

impl Standardize {
    fn ladj_tensor(&self, like: &Tensor) -> Result<Tensor> {
        Ok((Tensor::ones(like.dim(0)?, like.dtype(), like.device())? * self.ladj)?)
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        let d = self.shift.dim(0)?;
        if x.rank() != 2 || x.dim(1)? != d {
            return Err(Error::shape("standardization", format!("(batch, {d})"), x.dims()));
        }
        Ok(())
    }
}

impl Bijection for Standardize {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        let z = x.broadcast_sub(&self.shift)?.broadcast_mul(&self.inv_scale)?;
        Ok((z, self.ladj_tensor(x)?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.check(z)?;
        let x = z.broadcast_div(&self.inv_scale)?.broadcast_add(&self.shift)?;
        Ok((x, self.ladj_tensor(z)?.neg()?))
    }

    fn jacobian_order(&self) -> Option<Vec<usize>> {
        self.shift.dim(0).ok().map(|d| (0..d).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_handles_constant_columns() -> Result<()> {
        let data = [1.0, 5.0, 3.0, 5.0, 5.0, 5.0];
        let s = Standardization::fit(&data, 2)?;
        assert!((s.shift[0] - 3.0).abs() < 1e-12 && (s.shift[1] - 5.0).abs() < 1e-12);
        assert!((s.scale[0] - (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(s.scale[1], 1.0, "a constant column is not scaled");
        assert!(Standardization::fit(&[], 2).is_err());
        assert!(Standardization::fit(&[1.0, f64::NAN], 2).is_err());
        Ok(())
    }
}
