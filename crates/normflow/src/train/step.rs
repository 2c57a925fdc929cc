//! One guarded optimization step, shared by every loop that minimizes a stochastic loss over a
//! store's parameters with Adam (maximum likelihood [`super::fit`], variational inference
//! [`crate::vi::fit`], maximum entropy [`crate::maxent::fit`]): none may let a non-finite loss or
//! gradient reach the parameters or the optimizer's moments.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

use rayon::prelude::*;

use super::adam::Adam;
use super::adam_fused::sum_of_squares;
use crate::distributions::Distribution;
use crate::parallel::{map_row_slices, training_rows};
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
    let grads = loss.backward()?;
    Ok(guarded_update(store, adam, grads, clip, lr)?.then_some(loss_value))
}

/// The second half of [`guarded_step`], for gradients computed elsewhere (e.g. summed over row
/// slices, [`sum_gradients`]): clips the global gradient norm to `clip` and takes one Adam step.
/// Returns false, changing nothing, when the gradient norm is not finite.
pub fn guarded_update(
    store: &ParamStore,
    adam: &mut Adam,
    grads: GradStore,
    clip: Option<f64>,
    lr: f64,
) -> Result<bool> {
    let params = store.parameters();
    let norm = grad_norm(&params, &grads)?;
    if !norm.is_finite() {
        return Ok(false);
    }
    // PyTorch's clip_grad_norm_ factor (the small constant keeps it finite at 0), applied by
    // Adam as it reads each gradient.
    let scale = match clip {
        Some(max) if norm > max => max / (norm + 1e-6),
        _ => 1.0,
    };
    adam.step_scaled(store, &grads, lr, scale)?;
    Ok(true)
}

/// One maximum-likelihood optimization step on the batch `x` (with `context`): loss
/// `-mean log p(x | c)`, backward, gradient-norm clipping to `clip`, one Adam step with `lr`.
/// Returns `None`, changing nothing, when the loss or the gradient is not finite, otherwise
/// the batch's loss. This is the step [`super::fit`] takes for every batch.
///
/// The optimized loss adds the model's auxiliary term ([`Distribution::auxiliary_loss`], e.g.
/// RNODE's penalties) to `-mean log p`; the reported loss is `-mean log p` alone. Batches of at
/// least two slices of a model whose rows are independent ([`Distribution::rows_independent`])
/// are cut into row slices ([`Distribution::training_slice_rows`], by default
/// [`crate::parallel::TRAINING_SLICE_ROWS`]), each with its own graph on its own core
/// ([`crate::parallel`]), and the slices' gradients summed.
pub fn maximum_likelihood_step(
    model: &dyn Distribution,
    store: &ParamStore,
    adam: &mut Adam,
    x: &Tensor,
    context: Option<&Tensor>,
    clip: Option<f64>,
    lr: f64,
) -> Result<Option<f64>> {
    let slice_rows = training_rows(model.training_slice_rows());
    // The row count before `rows_independent`, which reads a tensor in every ActNorm.
    if x.dim(0)? >= 2 * slice_rows && model.rows_independent() {
        let (loss, grads) = sliced_nll_and_gradients(model, store, x, context, slice_rows)?;
        let Some(grads) = grads else {
            return Ok(None);
        };
        return Ok(guarded_update(store, adam, grads, clip, lr)?.then_some(loss));
    }
    let nll = model.log_prob(x, context)?.mean_all()?.neg()?;
    // Regularizers a layer reports (e.g. FFJORD's RNODE terms) join the optimized loss;
    // the reported loss stays the negative log-likelihood.
    let loss = match model.auxiliary_loss()? {
        Some(aux) => (&nll + aux.to_dtype(x.dtype())?)?,
        None => nll.clone(),
    };
    match guarded_step(store, adam, &loss, clip, lr)? {
        Some(_) => Ok(Some(to_f64(&nll)?)),
        None => Ok(None),
    }
}

/// `-mean log p(x | c)` over the `n` rows of `x` and its gradients, with the batch cut into
/// slices of about `slice_rows` rows ([`crate::parallel::row_slices`]), each with its own graph,
/// forward and backward, on its own core. Slice `s` contributes `-sum_{i in s} log p(x_i) / n`,
/// so the slices' losses and gradients sum to those of the whole batch's loss.
///
/// Returns the loss and, when every slice's loss is finite, the summed gradients (`None`:
/// skip the step). Only for models whose rows are independent
/// ([`Distribution::rows_independent`]), which have no auxiliary loss.
pub(crate) fn sliced_nll_and_gradients(
    model: &dyn Distribution,
    store: &ParamStore,
    x: &Tensor,
    context: Option<&Tensor>,
    slice_rows: usize,
) -> Result<(f64, Option<GradStore>)> {
    let n = x.dim(0)?;
    let parts = map_row_slices(n, slice_rows, |start, len| {
        let xs = x.narrow(0, start, len)?;
        let cs = context.map(|c| c.narrow(0, start, len)).transpose()?;
        let nll = (model.log_prob(&xs, cs.as_ref())?.sum_all()?.neg()? / n as f64)?;
        let value = to_f64(&nll)?;
        // A non-finite slice skips the step: no need for its gradients.
        let grads = if value.is_finite() { Some(nll.backward()?) } else { None };
        Ok((value, grads))
    })?;
    let loss: f64 = parts.iter().map(|p| p.0).sum();
    match parts.into_iter().map(|p| p.1).collect::<Option<Vec<_>>>() {
        Some(grads) => Ok((loss, Some(sum_gradients(store, grads)?))),
        None => Ok((loss, None)),
    }
}

/// The gradients of a sum of losses from their separate gradient stores: for every parameter
/// of `store`, the sum of its gradients in `parts` (absent where no part has one). Parameters
/// are summed in parallel: on one core this pass kept the other idle for ~3% of a step.
pub fn sum_gradients(store: &ParamStore, parts: Vec<GradStore>) -> Result<GradStore> {
    let mut parts = parts.into_iter();
    let Some(mut total) = parts.next() else {
        return Err(crate::Error::Numerical("no gradients to sum".into()));
    };
    let rest: Vec<GradStore> = parts.collect();
    let params = store.parameters();
    let sums = params
        .par_iter()
        .map(|(_, var)| {
            let param = var.as_tensor();
            let mut sum = total.get(param).cloned();
            for part in &rest {
                if let Some(g) = part.get(param) {
                    sum = Some(match sum {
                        Some(acc) => (acc + g)?,
                        None => g.clone(),
                    });
                }
            }
            Ok(sum)
        })
        .collect::<Result<Vec<_>>>()?;
    for ((_, var), sum) in params.iter().zip(sums) {
        if let Some(sum) = sum {
            total.insert(var.as_tensor(), sum);
        }
    }
    Ok(total)
}

/// Global L2 norm of the gradients of `params`: CPU f32 / f64 gradients summed in f64 on the
/// host, in parallel; others on their device (one host sync), in at least `f32` so that
/// half-precision squares do not overflow.
fn grad_norm(params: &[(String, Var)], grads: &GradStore) -> Result<f64> {
    let present: Vec<&Tensor> =
        params.iter().filter_map(|(_, var)| grads.get(var.as_tensor())).collect();
    // Host tensors: summed in place, in parallel; others on their device.
    let host: Vec<Option<f64>> = present.par_iter().map(|g| sum_of_squares(g)).collect();
    let mut total: f64 = host.iter().flatten().sum();
    let mut squares = Vec::new();
    for (g, done) in present.iter().zip(&host) {
        if done.is_some() {
            continue;
        }
        let g = match g.dtype() {
            DType::F16 | DType::BF16 => g.to_dtype(DType::F32)?,
            _ => (*g).clone(),
        };
        squares.push(g.sqr()?.sum_all()?);
    }
    if !squares.is_empty() {
        total += to_f64(&Tensor::stack(&squares, 0)?.sum_all()?)?;
    }
    Ok(total.sqrt())
}

/// A scalar tensor's value on the host.
pub(crate) fn to_f64(scalar: &Tensor) -> Result<f64> {
    // Host first: some devices (Metal) have no f64.
    Ok(scalar.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}
