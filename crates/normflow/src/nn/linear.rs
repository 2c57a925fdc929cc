//! The affine map of every dense layer.

use std::sync::Arc;

use candle_core::Tensor;

use super::dense::{dense, LayerPlan};
use super::fused::{bias_act, fusable, FusedActivation};
use crate::Result;

/// `y = x W^T + b` for `x: (B, in)`, `w: (out, in)`, `b: (out,)` -> `(B, out)`.
///
/// On the CPU in f32/f64 this is one fused op ([`super::dense::dense`]) whose backward returns
/// `dx`, `dW` and `db` together; elsewhere candle's matmul and a bias op.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    linear_act(x, w, b, FusedActivation::Identity)
}

/// `act(x W^T + b)`, the product, the bias and the activation fused into one op.
pub fn linear_act(x: &Tensor, w: &Tensor, b: &Tensor, act: FusedActivation) -> Result<Tensor> {
    match (fusable(x), x.dims(), w.dims()) {
        (true, &[_, n_in], &[n_out, w_in]) if n_in == w_in => {
            dense(x, w, b, &Arc::new(LayerPlan::dense(n_out, n_in)), act)
        }
        _ => bias_act(&x.matmul(&w.t()?)?, b, act),
    }
}
