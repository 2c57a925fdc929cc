//! A fixed permutation of the feature axis.

use candle_core::Tensor;
use rand::Rng;

use super::{zero_ladj, Bijection};
use crate::params::Params;
use crate::{Error, Result};

/// `z[:, i] = x[:, perm[i]]`: reorders the features (axis 1) so that the next coupling or
/// autoregressive layer conditions on a different subset (Dinh et al. 2017, "Density estimation
/// using Real NVP"; Papamakarios et al. 2017, "Masked Autoregressive Flow"). Volume preserving:
/// `log|det dz/dx| = 0`.
///
/// The permutation has no parameters; a random one is drawn from the [`crate::ParamStore`]'s
/// generator, so the same seed and construction order rebuild the same model.
///
/// # Shapes
/// `x: (B, D, ...)` -> `z: (B, D, ...)`; trailing axes (e.g. image height and width) move with
/// their feature.
#[derive(Debug, Clone)]
pub struct Permutation {
    perm: Vec<usize>,
    forward_index: Tensor,
    inverse_index: Tensor,
}

impl Permutation {
    /// The permutation `perm` of `0..perm.len()`; fails with [`Error::InvalidConfig`] when `perm`
    /// is empty, repeats an index or has one out of range.
    pub fn new(perm: Vec<usize>) -> Result<Self> {
        Self::build(perm, &candle_core::Device::Cpu)
    }

    /// Reverses the order of `d` features (the fixed permutation of RealNVP and MAF).
    pub fn reverse(d: usize) -> Result<Self> {
        Self::new((0..d).rev().collect())
    }

    /// A uniformly random permutation of `d` features, drawn from the store's generator.
    pub fn random(params: &Params, d: usize) -> Result<Self> {
        let mut perm: Vec<usize> = (0..d).collect();
        params.store().with_rng(|rng| {
            // Fisher-Yates, written out so that the draw sequence is ours, not a library's.
            for i in (1..d).rev() {
                let j = rng.random_range(0..=i);
                perm.swap(i, j);
            }
        });
        Self::build(perm, params.device())
    }

    /// The permutation: output feature `i` is input feature `perm()[i]`.
    pub fn perm(&self) -> &[usize] {
        &self.perm
    }

    fn build(perm: Vec<usize>, device: &candle_core::Device) -> Result<Self> {
        let d = perm.len();
        crate::ensure_config!(d > 0, "perm", "[]", "a permutation needs at least one feature");
        let mut inverse = vec![usize::MAX; d];
        for (i, &p) in perm.iter().enumerate() {
            let slot = inverse.get_mut(p).filter(|slot| **slot == usize::MAX).ok_or_else(|| {
                Error::config(
                    "perm",
                    format!("{perm:?}"),
                    format!(
                        "must hold each of 0..{d} exactly once ({p} is out of range or repeated)"
                    ),
                )
            })?;
            *slot = i;
        }
        let to_index = |v: &[usize]| -> Result<Tensor> {
            let v: Vec<u32> = v.iter().map(|&i| i as u32).collect();
            Ok(Tensor::new(v, device)?)
        };
        Ok(Self { forward_index: to_index(&perm)?, inverse_index: to_index(&inverse)?, perm })
    }

    fn apply(&self, x: &Tensor, index: &Tensor) -> Result<Tensor> {
        let d = self.perm.len();
        if x.rank() < 2 || x.dim(1)? != d {
            return Err(Error::shape("Permutation input", format!("(batch, {d}, ...)"), x.dims()));
        }
        // Both conversions are no-ops in the usual case; candle's index_select needs a
        // contiguous input, which a narrowed or transposed one is not.
        Ok(x.contiguous()?.index_select(&index.to_device(x.device())?, 1)?)
    }
}

impl Bijection for Permutation {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        Ok((self.apply(x, &self.forward_index)?, zero_ladj(x)?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        Ok((self.apply(z, &self.inverse_index)?, zero_ladj(z)?))
    }

    fn forward(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<Tensor> {
        self.apply(x, &self.forward_index)
    }

    fn inverse(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<Tensor> {
        self.apply(z, &self.inverse_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;
    use candle_core::{DType, Device};

    #[test]
    fn new_rejects_what_is_not_a_permutation() {
        for bad in [vec![], vec![0, 0], vec![0, 2], vec![1, 2, 3]] {
            let err = Permutation::new(bad.clone()).err();
            assert!(matches!(err, Some(Error::InvalidConfig { .. })), "{bad:?} accepted");
        }
        assert!(Permutation::new(vec![2, 0, 1]).is_ok());
    }

    #[test]
    fn random_is_reproducible_and_permutes_values() -> Result<()> {
        let draw = |seed| -> Result<Vec<usize>> {
            let store = ParamStore::new(DType::F64, &Device::Cpu, seed);
            Ok(Permutation::random(&store.root(), 6)?.perm().to_vec())
        };
        let a = draw(1)?;
        assert_eq!(a, draw(1)?);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..6).collect::<Vec<_>>());

        let p = Permutation::new(vec![2, 0, 1])?;
        let x = Tensor::new(&[[10f64, 11., 12.]], &Device::Cpu)?;
        assert_eq!(p.forward(&x, None)?.to_vec2::<f64>()?, [[12., 10., 11.]]);
        assert!(p.forward(&Tensor::zeros((1, 4), DType::F64, &Device::Cpu)?, None).is_err());
        Ok(())
    }

    #[test]
    fn accepts_non_contiguous_inputs() -> Result<()> {
        let p = Permutation::reverse(2)?;
        let x = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu)?.t()?;
        assert_eq!(p.forward(&x, None)?.to_vec2::<f32>()?, [[3., 1.], [4., 2.]]);
        Ok(())
    }
}
