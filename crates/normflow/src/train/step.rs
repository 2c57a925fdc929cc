//! One guarded optimization step, shared by every loop that minimizes a stochastic loss over a
//! store's parameters with Adam (maximum likelihood [`super::fit`], variational inference
//! [`crate::vi::fit`], maximum entropy [`crate::maxent::fit`]): none may let a non-finite loss or
//! gradient reach the parameters or the optimizer's moments.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

use super::adam::Adam;
use crate::params::ParamStore;
use crate::Result;

/// Backpropagates the scalar `loss`, clips the global gradient norm to `clip` (if given) and
/// takes one Adam step with learning rate `lr` on the parameters of `store`.
///
/// Returns `None`, changing nothing, when the loss or the gradient norm is not finite;
/// otherwise the loss's value.
pub fn guarded_step(
    store: &ParamStore,
    adam: &mut Adam,
    loss: &Tensor,
    clip: Option<f64>,
    lr: f64,
) -> Result<Option<f64>> {
    let loss_value = to_f64(loss)?;
    if !loss_value.is_finite() {
        return Ok(None);
    }
    let mut grads = loss.backward()?;
    let params = store.parameters();
    let norm = grad_norm(&params, &grads)?;
    if !norm.is_finite() {
        return Ok(None);
    }
    if let Some(max) = clip {
        if norm > max {
            // PyTorch's clip_grad_norm_ factor: the small constant keeps it finite at 0.
            let scale = max / (norm + 1e-6);
            for (_, var) in &params {
                if let Some(g) = grads.get(var.as_tensor()) {
                    let scaled = (g * scale)?;
                    grads.insert(var.as_tensor(), scaled);
                }
            }
        }
    }
    adam.step(store, &grads, lr)?;
    Ok(Some(loss_value))
}

/// Global L2 norm of the gradients of `params`, accumulated on the device (one host sync), in
/// at least `f32` so that half-precision squares do not overflow.
fn grad_norm(params: &[(String, Var)], grads: &GradStore) -> Result<f64> {
    let mut squares = Vec::new();
    for (_, var) in params {
        if let Some(g) = grads.get(var.as_tensor()) {
            let g = match g.dtype() {
                DType::F16 | DType::BF16 => g.to_dtype(DType::F32)?,
                _ => g.clone(),
            };
            squares.push(g.sqr()?.sum_all()?);
        }
    }
    if squares.is_empty() {
        return Ok(0.0);
    }
    Ok(to_f64(&Tensor::stack(&squares, 0)?.sum_all()?)?.sqrt())
}

/// A scalar tensor's value on the host.
pub(crate) fn to_f64(scalar: &Tensor) -> Result<f64> {
    // Host first: some devices (Metal) have no f64.
    Ok(scalar.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}
