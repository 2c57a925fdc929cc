//! Space-to-depth squeezing and reshaping: the shape changes of multi-scale image flows.

use candle_core::Tensor;

use super::{zero_ladj, Bijection};
use crate::{Error, Result};

/// RealNVP's squeeze (Dinh et al. 2017, section 3.6): every 2x2 block of pixels becomes 4
/// channels, `(B, C, H, W) -> (B, 4C, H/2, W/2)`, with
///
/// ```text
/// z[b, 4c + 2i + j, h, w] = x[b, c, 2h + i, 2w + j]        (i, j in {0, 1})
/// ```
///
/// A permutation of the entries: log-det 0. `H` and `W` must be even.
#[derive(Debug, Clone, Copy, Default)]
pub struct Squeeze;

impl Squeeze {
    /// The (parameter-free) squeeze.
    pub fn new() -> Self {
        Self
    }
}

fn image_dims(x: &Tensor, what: &str) -> Result<(usize, usize, usize, usize)> {
    match *x.dims() {
        [b, c, h, w] => Ok((b, c, h, w)),
        ref dims => Err(Error::shape(what, "(batch, channels, height, width)", dims)),
    }
}

impl Bijection for Squeeze {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (b, c, h, w) = image_dims(x, "squeeze input")?;
        if h % 2 != 0 || w % 2 != 0 {
            return Err(Error::shape("squeeze input", "even height and width", x.dims()));
        }
        let z = x.reshape((b, c, h / 2, 2, w / 2, 2))?.permute((0, 1, 3, 5, 2, 4))?.reshape((
            b,
            4 * c,
            h / 2,
            w / 2,
        ))?;
        Ok((z, zero_ladj(x)?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (b, c4, h, w) = image_dims(z, "unsqueeze input")?;
        if c4 % 4 != 0 {
            return Err(Error::shape("unsqueeze input", "channels divisible by 4", z.dims()));
        }
        let c = c4 / 4;
        let x = z.reshape((b, c, 2, 2, h, w))?.permute((0, 1, 4, 2, 5, 3))?.reshape((
            b,
            c,
            2 * h,
            2 * w,
        ))?;
        Ok((x, zero_ladj(z)?))
    }
}

/// Reshapes each sample between a flat vector and an event shape: `(B, D) -> (B, shape...)`
/// forward, back in the inverse; log-det 0. Lets an image flow sit in a model whose data are
/// table rows (e.g. 784 pixel columns).
#[derive(Debug, Clone)]
pub struct Unflatten {
    shape: Vec<usize>,
}

impl Unflatten {
    /// Rows of `shape.iter().product()` values become tensors of `shape`.
    pub fn new(shape: &[usize]) -> Result<Self> {
        if shape.is_empty() || shape.contains(&0) {
            return Err(Error::config("shape", format!("{shape:?}"), "needs non-zero dimensions"));
        }
        Ok(Self { shape: shape.to_vec() })
    }
}

impl Bijection for Unflatten {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let d: usize = self.shape.iter().product();
        let b = match *x.dims() {
            [b, n] if n == d => b,
            ref dims => return Err(Error::shape("flat rows", format!("(batch, {d})"), dims)),
        };
        let mut shape = vec![b];
        shape.extend(&self.shape);
        Ok((x.reshape(shape)?, zero_ladj(x)?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        if z.rank() == 0 || z.dims()[1..] != self.shape[..] {
            return Err(Error::shape(
                "image batch",
                format!("(batch, {:?})", self.shape),
                z.dims(),
            ));
        }
        Ok((z.flatten_from(1)?, zero_ladj(z)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn squeeze_moves_each_2x2_block_into_channels() -> Result<()> {
        let x = Tensor::arange(0f64, 32.0, &Device::Cpu)?.reshape((1, 2, 4, 4))?;
        let (z, _) = Squeeze.forward_and_ladj(&x, None)?;
        assert_eq!(z.dims(), [1, 8, 2, 2]);
        // Channel 0, block (0, 0): pixels (0,0) (0,1) (1,0) (1,1) = 0 1 4 5.
        let z = z.to_dtype(DType::F64)?;
        let at = |c: usize, h: usize, w: usize| -> Result<f64> {
            Ok(z.get(0)?.get(c)?.get(h)?.get(w)?.to_scalar::<f64>()?)
        };
        assert_eq!([at(0, 0, 0)?, at(1, 0, 0)?, at(2, 0, 0)?, at(3, 0, 0)?], [0.0, 1.0, 4.0, 5.0]);
        assert_eq!(at(4, 1, 1)?, 16.0 + 10.0);
        let (back, _) = Squeeze.inverse_and_ladj(&z, None)?;
        assert_eq!(back.flatten_all()?.to_vec1::<f64>()?, x.flatten_all()?.to_vec1::<f64>()?);
        let odd = Tensor::zeros((1, 1, 3, 4), DType::F64, &Device::Cpu)?;
        assert!(matches!(Squeeze.forward_and_ladj(&odd, None), Err(Error::Shape { .. })));
        Ok(())
    }
}
