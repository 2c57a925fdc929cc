//! Helpers for maps whose parameters may carry a batch dimension.
//!
//! The variational-inference layers (planar, radial, Sylvester, Householder) are written as
//! functions of their parameter tensors, so that the same code serves a layer with its own
//! learned parameters (`w: (D,)`) and an amortized flow whose parameters come from an encoder,
//! one set per sample (`w: (B, D)`). These helpers contract a batch of rows with either form.

use candle_core::{DType, Tensor};

use crate::{Error, Result};

/// A squared norm below which a direction counts as zero: far below any value a trained layer
/// reaches, far above the dtype's underflow.
pub(crate) fn tiny(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-200,
        DType::F16 => 1e-6,
        _ => 1e-30,
    }
}

/// `sum_j x[b, j] w[.., j]`: `x: (B, D)`, `w: (D,)` or `(B, D)` -> `(B,)`.
pub(crate) fn dot_rows(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.broadcast_mul(w)?.sum(1)?)
}

/// `x[b] m[b]` for row vectors: `x: (B, K)`, `m: (K, N)` or `(B, K, N)` -> `(B, N)`.
pub(crate) fn rows_times(x: &Tensor, m: &Tensor) -> Result<Tensor> {
    if m.rank() == 2 {
        return Ok(x.matmul(m)?);
    }
    Ok(x.unsqueeze(1)?.matmul(m)?.squeeze(1)?)
}

/// Fails unless `x` is `(B, d)`.
pub(crate) fn check_rows(x: &Tensor, d: usize, what: &str) -> Result<()> {
    if x.rank() != 2 || x.dim(1)? != d {
        return Err(Error::shape(format!("{what} input"), format!("(batch, {d})"), x.dims()));
    }
    Ok(())
}

/// Fails unless the batched parameter `t` (if it has a batch axis beyond `event_rank`) has the
/// input's batch size.
pub(crate) fn check_param_batch(
    t: &Tensor,
    event_rank: usize,
    batch: usize,
    what: &str,
) -> Result<()> {
    if t.rank() > event_rank && t.dim(0)? != batch {
        return Err(Error::shape(
            format!("{what}: parameters for a batch of {}", t.dim(0)?),
            format!("inputs of batch {}", t.dim(0)?),
            &[batch],
        ));
    }
    Ok(())
}

/// `t` repeated `k` times along its first (batch) axis, sample-major: row `s B + b` is row `b`.
/// Amortized flows build their constrained parameters once per example and repeat them for `k`
/// posterior samples, instead of repeating raw parameters and constraining each copy.
pub(crate) fn repeat_batch(t: &Tensor, k: usize) -> Result<Tensor> {
    let mut reps = vec![1usize; t.rank()];
    reps[0] = k;
    Ok(t.repeat(reps)?)
}
