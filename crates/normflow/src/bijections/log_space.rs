//! Log-space reductions shared by the sigmoidal and polynomial transformers and BNAF: sums and
//! matrix products of positive quantities kept as logarithms, so that saturated sigmoids and
//! products of many small Jacobian entries stay finite (Huang et al. 2018, section 3.3; De Cao
//! et al. 2019, section 3).

use candle_core::Tensor;

use crate::Result;

/// A finite stand-in for `log 0` in masks: `exp` of it (minus any finite maximum) is 0 and its
/// gradient is 0, where a true `-inf` would turn `0 * inf` into NaN in backward.
pub(crate) const LOG_ZERO: f64 = -1e30;

/// `log sum_dim exp(t)`, the axis removed. The shift by the maximum is detached: the value does
/// not depend on it, and candle would otherwise route a gradient through the arg-max.
pub(crate) fn log_sum_exp(t: &Tensor, dim: usize) -> Result<Tensor> {
    let m = t.max_keepdim(dim)?.detach();
    let s = t.broadcast_sub(&m)?.exp()?.sum_keepdim(dim)?.log()?;
    Ok((s + m)?.squeeze(dim)?)
}

/// Log-space matrix product: `a (..., n, k)`, `b (..., k, m)` (equal leading dims) ->
/// `log(exp(a) @ exp(b))`, `(..., n, m)`.
pub(crate) fn log_matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let r = a.rank();
    let terms = a.unsqueeze(r)?.broadcast_add(&b.unsqueeze(r - 2)?)?;
    log_sum_exp(&terms, r - 1)
}

/// A constant tensor of `shape` in `dtype` on `like`'s device.
pub(crate) fn constant(values: Vec<f64>, shape: &[usize], like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::from_vec(values, shape, like.device())?.to_dtype(like.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn log_matmul_matches_the_plain_product() -> Result<()> {
        let a = Tensor::new(&[[[0.1f64, -2.0], [3.0, 0.5]]], &Device::Cpu)?;
        let b = Tensor::new(&[[[1.0f64, -1.0, 0.0], [2.0, 0.3, -4.0]]], &Device::Cpu)?;
        let plain = a.exp()?.matmul(&b.exp()?)?.log()?;
        let diff = (log_matmul(&a, &b)? - plain)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12, "{diff}");
        let masked = Tensor::new(&[[LOG_ZERO, 1.0f64]], &Device::Cpu)?;
        let lse = log_sum_exp(&masked, 1)?.to_vec1::<f64>()?;
        assert!((lse[0] - 1.0).abs() < 1e-12);
        Ok(())
    }
}
