//! Shared pieces of the bounded monotone splines ([`LinearSpline`](super::LinearSpline),
//! [`QuadraticSpline`](super::QuadraticSpline), [`CubicSpline`](super::CubicSpline)): the
//! interval `[-B, B]` with identity tails, normalized bins, knots and the bin search.
//!
//! candle has no `searchsorted`: a bin index is the number of inner knots at or below the point,
//! one comparison per knot, and per-bin quantities are read with `gather` (whose gradient
//! scatters back into the bin it came from).

use candle_core::{DType, Tensor};

use crate::{ensure_config, Result};

/// Smallest bin width (and mass) of a spline on `[0, 1]`, before rescaling to `[-B, B]`: keeps
/// every slope, log-derivative and inverse finite however extreme the raw parameters are
/// (the value of Durkan et al. 2019).
pub(crate) const MIN_BIN: f64 = 1e-3;

/// Largest number of bins: `bins * MIN_BIN` must stay well below 1.
pub(crate) const MAX_BINS: usize = 500;

/// Checks a spline's `bins` and `bound`, naming the invalid one.
pub(crate) fn validate(bins: usize, bound: f64) -> Result<()> {
    ensure_config!(
        (2..=MAX_BINS).contains(&bins),
        "bins",
        bins,
        format!("a spline needs between 2 and {MAX_BINS} bins")
    );
    ensure_config!(
        bound.is_finite() && bound > 0.0,
        "bound",
        bound,
        "the spline's interval [-bound, bound] needs a finite bound > 0"
    );
    Ok(())
}

/// Normalized bin sizes: `MIN_BIN + (1 - K MIN_BIN) softmax(raw)` over the last dimension.
/// `raw (B, D, K) -> (B, D, K)`, each row positive and summing to 1; all-zero `raw` gives equal
/// bins.
pub(crate) fn bin_sizes(raw: &Tensor) -> Result<Tensor> {
    let k = raw.dim(2)? as f64;
    let p = candle_nn::ops::softmax(raw, 2)?;
    Ok(p.affine(1.0 - k * MIN_BIN, MIN_BIN)?)
}

/// Knots of bins of the given sizes: `(B, D, K) -> (B, D, K + 1)`, `0, s_0, s_0 + s_1, ..., 1`.
/// The end knots are exactly 0 and 1 (not a rounded sum), so the spline maps the interval onto
/// itself and meets the identity tails continuously.
pub(crate) fn knots(sizes: &Tensor) -> Result<Tensor> {
    let (b, d, k) = sizes.dims3()?;
    let ends = Tensor::zeros((b, d, 1), sizes.dtype(), sizes.device())?;
    // One (B D, K-1) x (K-1, K-1) product with an upper-triangular matrix of ones: candle's
    // `cumsum` on a 3-D tensor runs one tiny matrix product per element instead.
    let triangle = Tensor::triu2(k - 1, sizes.dtype(), sizes.device())?;
    let inner = sizes.narrow(2, 0, k - 1)?.contiguous()?.reshape((b * d, k - 1))?;
    let inner = inner.matmul(&triangle)?.reshape((b, d, k - 1))?;
    Ok(Tensor::cat(&[&ends, &inner, &(ends.ones_like()?)], 2)?)
}

/// The bin of each point: the number of inner knots at or below it, `knots (B, D, K + 1)`,
/// `u (B, D) -> (B, D, 1)` `u32` indices in `0..K` (a point on a knot belongs to the bin on its
/// right, 1 to the last bin). Computed on detached values: an index carries no gradient.
pub(crate) fn search(knots: &Tensor, u: &Tensor) -> Result<Tensor> {
    let k = knots.dim(2)? - 1;
    let inner = knots.detach().narrow(2, 1, k - 1)?;
    let below = inner.broadcast_le(&u.detach().unsqueeze(2)?)?;
    Ok(below.to_dtype(DType::U32)?.sum_keepdim(2)?)
}

/// `t[b, d, idx[b, d]]`: `t (B, D, N)`, `idx (B, D, 1)` -> `(B, D)`.
pub(crate) fn pick(t: &Tensor, idx: &Tensor) -> Result<Tensor> {
    Ok(t.contiguous()?.gather(idx, 2)?.squeeze(2)?)
}

/// `idx + 1`: the index of a bin's right knot.
pub(crate) fn next(idx: &Tensor) -> Result<Tensor> {
    Ok(idx.broadcast_add(&Tensor::ones(1, DType::U32, idx.device())?)?)
}

/// Applies `spline`, a monotone map of `[0, 1]` onto itself (`u (B, D) -> (v, log dv/du)`), on `[-B, B]` with identity tails:
///
/// ```text
/// |x| <= B:  u = (x + B) / 2B,  y = 2B spline(u) - B,  log|dy/dx| = log spline'(u)
/// |x| >  B:  y = x,             log|dy/dx| = 0
/// ```
///
/// The same rescaling on both sides keeps `dy/dx = dv/du`. The spline runs on clamped inputs
/// and the tails are selected afterwards: a masked select still differentiates the branch it
/// drops, so that branch must be finite too (at `|x| = 1e4` as at `|x| = B`).
/// `x (B, D) -> (y, log|dy/dx|)`, both `(B, D)`.
pub(crate) fn with_identity_tails(
    x: &Tensor,
    bound: f64,
    spline: impl FnOnce(&Tensor) -> Result<(Tensor, Tensor)>,
) -> Result<(Tensor, Tensor)> {
    let inside = x.abs()?.le(bound)?;
    let clamped = x.clamp(-bound, bound)?;
    let u = ((clamped + bound)? * (0.5 / bound))?.clamp(0.0, 1.0)?;
    let (v, log_derivative) = spline(&u)?;
    let y_inside = v.affine(2.0 * bound, -bound)?;
    let y = inside.where_cond(&y_inside, x)?;
    let log_derivative = inside.where_cond(&log_derivative, &log_derivative.zeros_like()?)?;
    Ok((y, log_derivative))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn knots_end_exactly_at_zero_and_one_and_search_finds_the_bin() -> Result<()> {
        let raw = Tensor::new(&[[[0.3f64, -1.0, 2.0]]], &Device::Cpu)?;
        let k = knots(&bin_sizes(&raw)?)?;
        let kv = k.flatten_all()?.to_vec1::<f64>()?;
        assert_eq!((kv[0], kv[3]), (0.0, 1.0));
        assert!(kv.windows(2).all(|w| w[1] - w[0] >= MIN_BIN * 0.999));
        let points = [0.0, kv[1] * 0.5, kv[1], (kv[1] + kv[2]) * 0.5, kv[2], 0.99, 1.0];
        let expected = [0u32, 0, 1, 1, 2, 2, 2];
        for (p, e) in points.iter().zip(expected) {
            let u = Tensor::new(&[[*p]], &Device::Cpu)?;
            let idx = search(&k, &u)?.flatten_all()?.to_vec1::<u32>()?;
            assert_eq!(idx, [e], "point {p}");
        }
        Ok(())
    }

    #[test]
    fn validate_names_the_parameter() {
        assert!(validate(8, 3.0).is_ok());
        assert!(validate(1, 3.0).unwrap_err().to_string().contains("bins"));
        assert!(validate(MAX_BINS + 1, 3.0).unwrap_err().to_string().contains("bins"));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(validate(8, bad).unwrap_err().to_string().contains("bound"));
        }
    }
}
