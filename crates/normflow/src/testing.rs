//! The public bijection checker.
//!
//! [`check_bijection`] verifies the whole [`Bijection`] contract of one layer at given inputs:
//!
//! 1. **Round trips**: `inverse(forward(x)) = x` and `forward(inverse(z)) = z`.
//! 2. **Log-determinant**: the forward ladj equals `log|det J|`, with the Jacobian `J = dz/dx`
//!    computed independently of the layer's own formula, by central finite differences in `f64`
//!    (per sample, on the flattened event), and the inverse ladj is its negative.
//! 3. **Consistency**: `forward` / `inverse` give what `forward_and_ladj` / `inverse_and_ladj` give.
//! 4. **Structure**: when the layer declares an autoregressive order
//!    ([`Bijection::jacobian_order`]), the Jacobian is triangular in that order.
//! 5. **Finiteness**: outputs, ladj and the gradients of `sum(z) + sum(ladj)` (with respect to
//!    the input and to every parameter) are finite, in both directions, and also at the optional
//!    edge inputs (domain bounds and beyond, where a layer has a bounded domain or tails).
//! 6. **Row independence**: when the layer promises it in training mode
//!    ([`Bijection::rows_independent`], what lets training split batches across cores), the
//!    two halves of the batch, passed separately, give the whole batch's outputs and ladj in
//!    both directions.
//!
//! Before checking, the layer gets one forward pass in training mode (so data-dependent
//! initializations such as ActNorm's run and batch-norm running statistics move), then is put
//! in evaluation mode, where it must be a deterministic function of each sample alone.
//!
//! The layer must be built in `f64` (a [`crate::ParamStore`] with `DType::F64`).

use candle_core::{DType, Tensor, Var};

use crate::bijections::Bijection;
use crate::linalg::log_abs_det;
use crate::{Error, Result};

/// Tolerances and extra inputs of [`check_bijection`].
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Absolute tolerance of round trips and of ladj against the finite-difference value.
    pub atol: f64,
    /// Relative tolerance (of the magnitude of the compared values).
    pub rtol: f64,
    /// Finite-difference step.
    pub step: f64,
    /// Largest magnitude of a Jacobian entry that counts as zero in the triangularity check.
    pub structural_zero: f64,
    /// Inputs at and beyond the domain bounds, checked for finite values and gradients only.
    pub edge_inputs: Option<Tensor>,
    /// Context rows for `edge_inputs`, if the layer is conditional.
    pub edge_context: Option<Tensor>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            atol: 1e-6,
            rtol: 1e-6,
            step: 1e-5,
            structural_zero: 1e-8,
            edge_inputs: None,
            edge_context: None,
        }
    }
}

/// What the checker measured (all maxima over the batch).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// max |inverse(forward(x)) - x|.
    pub roundtrip_error: f64,
    /// max |ladj - log|det J_fd||.
    pub ladj_error: f64,
    /// max |forward ladj + inverse ladj|.
    pub inverse_ladj_error: f64,
    /// max |ladj|: shows that the layer was not checked at the identity by accident.
    pub max_abs_ladj: f64,
    /// max |z - x| over all entries: likewise.
    pub max_displacement: f64,
}

fn fail(msg: String) -> Error {
    Error::CheckFailed(msg)
}

fn to_host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn close(a: &[f64], b: &[f64], opts: &CheckOptions) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() <= opts.atol + opts.rtol * x.abs().max(y.abs()))
}

fn ensure_finite(values: &[f64], what: &str) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => {
            Err(fail(format!("{what} has a non-finite value {} at flat index {i}", values[i])))
        }
        None => Ok(()),
    }
}

/// Runs the checks listed in the [module docs](self) on `bijection` at the batch `x`
/// (`(B, event...)`, `f64`), with `context` `(B, C)` if the layer is conditional.
///
/// Returns what was measured, or [`Error::CheckFailed`] naming the first broken property.
pub fn check_bijection(
    bijection: &dyn Bijection,
    x: &Tensor,
    context: Option<&Tensor>,
    opts: &CheckOptions,
) -> Result<CheckReport> {
    if x.dtype() != DType::F64 {
        return Err(fail(format!(
            "run the checker in f64 (got {:?}): build the layer with a ParamStore of DType::F64",
            x.dtype()
        )));
    }
    let batch = x.dim(0)?;
    bijection.set_training(true);
    bijection.forward_and_ladj(x, context)?;
    if bijection.rows_independent() && batch >= 2 {
        check_row_halves(bijection, x, context, opts)?;
    }
    bijection.set_training(false);

    // 1-3: round trips, ladj symmetry, consistency of the four entry points.
    let (z, ladj) = bijection.forward_and_ladj(x, context)?;
    if z.dim(0)? != batch || ladj.dims() != [batch] {
        return Err(fail(format!(
            "forward_and_ladj returned z {:?} and ladj {:?} for x {:?}; ladj must be (batch,)",
            z.dims(),
            ladj.dims(),
            x.dims()
        )));
    }
    let (x_host, z_host, ladj_host) = (to_host(x)?, to_host(&z)?, to_host(&ladj)?);
    ensure_finite(&z_host, "forward output")?;
    ensure_finite(&ladj_host, "forward ladj")?;
    let (x_back, ladj_inv) = bijection.inverse_and_ladj(&z, context)?;
    if x_back.dims() != x.dims() || ladj_inv.dims() != [batch] {
        return Err(fail(format!(
            "inverse_and_ladj returned x {:?} and ladj {:?} for z {:?}",
            x_back.dims(),
            ladj_inv.dims(),
            z.dims()
        )));
    }
    let (x_back_host, ladj_inv_host) = (to_host(&x_back)?, to_host(&ladj_inv)?);
    if !close(&x_back_host, &x_host, opts) {
        return Err(fail(format!(
            "inverse(forward(x)) != x: max error {:.3e}",
            max_abs_diff(&x_back_host, &x_host)
        )));
    }
    let neg_ladj: Vec<f64> = ladj_host.iter().map(|v| -v).collect();
    if !close(&ladj_inv_host, &neg_ladj, opts) {
        return Err(fail(format!(
            "inverse ladj != -forward ladj: forward {ladj_host:?}, inverse {ladj_inv_host:?}"
        )));
    }
    let z_again = to_host(&bijection.forward(&x_back, context)?)?;
    if !close(&z_again, &z_host, opts) {
        return Err(fail(format!(
            "forward(inverse(z)) != z: max error {:.3e}",
            max_abs_diff(&z_again, &z_host)
        )));
    }
    if !close(&to_host(&bijection.forward(x, context)?)?, &z_host, opts) {
        return Err(fail("forward() disagrees with forward_and_ladj()".into()));
    }
    if !close(&to_host(&bijection.inverse(&z, context)?)?, &x_back_host, opts) {
        return Err(fail("inverse() disagrees with inverse_and_ladj()".into()));
    }

    // 2 and 4: the Jacobian by central differences.
    let jacobians = finite_difference_jacobians(bijection, x, context, opts.step)?;
    let dim = x.elem_count() / batch.max(1);
    let order = bijection.jacobian_order();
    if let Some(order) = &order {
        let mut sorted = order.clone();
        sorted.sort_unstable();
        if sorted != (0..dim).collect::<Vec<_>>() {
            return Err(fail(format!("jacobian_order {order:?} is not a permutation of 0..{dim}")));
        }
    }
    let mut ladj_error: f64 = 0.0;
    for (b, jac) in jacobians.iter().enumerate() {
        let expected = log_abs_det(jac, dim);
        let err = (expected - ladj_host[b]).abs();
        ladj_error = ladj_error.max(err);
        if err > opts.atol * 10.0 + opts.rtol * expected.abs() * 10.0 {
            return Err(fail(format!(
                "sample {b}: ladj {} but log|det J| by finite differences is {expected} (error {err:.3e})",
                ladj_host[b]
            )));
        }
        if let Some(order) = &order {
            for i in 0..dim {
                for j in i + 1..dim {
                    let entry = jac[order[i] * dim + order[j]];
                    if entry.abs() > opts.structural_zero {
                        return Err(fail(format!(
                            "sample {b}: output {} depends on later input {} (dz/dx = {entry:.3e}) \
                             although the declared order is {order:?}",
                            order[i], order[j]
                        )));
                    }
                }
            }
        }
    }

    // 5: finite gradients, both directions, and at the edge inputs.
    check_gradients(bijection, x, context, "forward at x")?;
    check_gradients_inverse(bijection, &z, context)?;
    if let Some(edge) = &opts.edge_inputs {
        let (ze, le) = bijection.forward_and_ladj(edge, opts.edge_context.as_ref())?;
        ensure_finite(&to_host(&ze)?, "forward output at the edge inputs")?;
        ensure_finite(&to_host(&le)?, "forward ladj at the edge inputs")?;
        check_gradients(bijection, edge, opts.edge_context.as_ref(), "forward at the edge inputs")?;
    }

    Ok(CheckReport {
        roundtrip_error: max_abs_diff(&x_back_host, &x_host),
        ladj_error,
        inverse_ladj_error: max_abs_diff(&ladj_inv_host, &neg_ladj),
        max_abs_ladj: ladj_host.iter().map(|v| v.abs()).fold(0.0, f64::max),
        max_displacement: if z_host.len() == x_host.len() {
            max_abs_diff(&z_host, &x_host)
        } else {
            f64::INFINITY
        },
    })
}

/// Property 6: both halves of the batch, separately, give what the whole batch gives, forward
/// and inverse.
fn check_row_halves(
    bijection: &dyn Bijection,
    x: &Tensor,
    context: Option<&Tensor>,
    opts: &CheckOptions,
) -> Result<()> {
    let batch = x.dim(0)?;
    let half = batch / 2;
    let halves = [(0, half), (half, batch - half)];
    let (z, ladj) = bijection.forward_and_ladj(x, context)?;
    for (inverse, input, whole, whole_ladj) in [(false, x, &z, &ladj), (true, &z, x, &ladj.neg()?)]
    {
        let mut parts = Vec::new();
        let mut part_ladj = Vec::new();
        for (start, len) in halves {
            let c = context.map(|c| c.narrow(0, start, len)).transpose()?;
            let input = input.narrow(0, start, len)?;
            let (out, l) = if inverse {
                bijection.inverse_and_ladj(&input, c.as_ref())?
            } else {
                bijection.forward_and_ladj(&input, c.as_ref())?
            };
            parts.push(out);
            part_ladj.push(l);
        }
        let direction = if inverse { "inverse" } else { "forward" };
        let (got, want) = (to_host(&Tensor::cat(&parts, 0)?)?, to_host(whole)?);
        let (got_ladj, want_ladj) = (to_host(&Tensor::cat(&part_ladj, 0)?)?, to_host(whole_ladj)?);
        if !close(&got, &want, opts) || !close(&got_ladj, &want_ladj, opts) {
            return Err(fail(format!(
                "rows_independent() promises row slices, but in training mode the {direction} of \
                 the two halves of the batch differs from the whole batch's (max error {:.3e} in \
                 the outputs, {:.3e} in ladj)",
                max_abs_diff(&got, &want),
                max_abs_diff(&got_ladj, &want_ladj)
            )));
        }
    }
    Ok(())
}

/// Per-sample Jacobians `dz/dx` (row-major `D x D`, row = output) by central differences.
fn finite_difference_jacobians(
    bijection: &dyn Bijection,
    x: &Tensor,
    context: Option<&Tensor>,
    step: f64,
) -> Result<Vec<Vec<f64>>> {
    let batch = x.dim(0)?;
    let event: Vec<usize> = x.dims()[1..].to_vec();
    let dim: usize = event.iter().product();
    let x_host = to_host(x)?;
    // Rows: for sample b and input j, first +step then -step.
    let mut rows = Vec::with_capacity(batch * 2 * dim * dim);
    for b in 0..batch {
        let sample = &x_host[b * dim..(b + 1) * dim];
        for j in 0..dim {
            for sign in [1.0, -1.0] {
                let mut row = sample.to_vec();
                row[j] += sign * step;
                rows.extend(row);
            }
        }
    }
    let mut shape = vec![batch * 2 * dim];
    shape.extend(&event);
    let perturbed = Tensor::from_vec(rows, shape, x.device())?;
    let ctx = match context {
        Some(c) => {
            let idx: Vec<u32> =
                (0..batch).flat_map(|b| std::iter::repeat_n(b as u32, 2 * dim)).collect();
            Some(c.index_select(&Tensor::new(idx, c.device())?, 0)?)
        }
        None => None,
    };
    let out = to_host(&bijection.forward(&perturbed, ctx.as_ref())?)?;
    if out.len() != batch * 2 * dim * dim {
        return Err(fail("forward changes the number of elements per sample".into()));
    }
    let mut jacobians = Vec::with_capacity(batch);
    for b in 0..batch {
        let mut jac = vec![0.0; dim * dim];
        for j in 0..dim {
            let plus = &out[((b * dim + j) * 2) * dim..((b * dim + j) * 2 + 1) * dim];
            let minus = &out[((b * dim + j) * 2 + 1) * dim..((b * dim + j) * 2 + 2) * dim];
            for i in 0..dim {
                jac[i * dim + j] = (plus[i] - minus[i]) / (2.0 * step);
            }
        }
        jacobians.push(jac);
    }
    Ok(jacobians)
}

fn check_grads_finite(grads: &candle_core::backprop::GradStore, what: &str) -> Result<()> {
    for id in grads.get_ids() {
        if let Some(g) = grads.get_id(*id) {
            ensure_finite(&to_host(g)?, &format!("a gradient ({what})"))?;
        }
    }
    Ok(())
}

fn check_gradients(
    bijection: &dyn Bijection,
    x: &Tensor,
    context: Option<&Tensor>,
    what: &str,
) -> Result<()> {
    let input = Var::from_tensor(x)?;
    let (z, ladj) = bijection.forward_and_ladj(input.as_tensor(), context)?;
    let loss = (z.sum_all()? + ladj.sum_all()?)?;
    let grads = loss.backward()?;
    check_grads_finite(&grads, what)?;
    if grads.get(input.as_tensor()).is_none() {
        return Err(fail(format!("{what}: the output does not depend on the input")));
    }
    Ok(())
}

fn check_gradients_inverse(
    bijection: &dyn Bijection,
    z: &Tensor,
    context: Option<&Tensor>,
) -> Result<()> {
    let input = Var::from_tensor(&z.detach())?;
    let (x, ladj) = bijection.inverse_and_ladj(input.as_tensor(), context)?;
    let loss = (x.sum_all()? + ladj.sum_all()?)?;
    check_grads_finite(&loss.backward()?, "inverse at z")
}

/// Test support for layers whose forward direction is an iterative solve (planar, Sylvester):
/// checks, in f64, that the gradients of `sum(z) + sum(ladj)` of `layer.forward(x)` (the
/// solved direction) with respect to every parameter and to `x` match central finite
/// differences: the implicit gradient is right, not only finite.
#[cfg(test)]
pub(crate) fn assert_solved_gradients_match(
    store: &crate::ParamStore,
    layer: &dyn Bijection,
    x: &Tensor,
) -> Result<()> {
    let loss = |x: &Tensor| -> Result<f64> {
        let (z, ladj) = layer.forward_and_ladj(x, None)?;
        Ok((z.sum_all()? + ladj.sum_all()?)?.to_scalar::<f64>()?)
    };
    let input = Var::from_tensor(x)?;
    let (z, ladj) = layer.forward_and_ladj(input.as_tensor(), None)?;
    let grads = (z.sum_all()? + ladj.sum_all()?)?.backward()?;
    let h = 1e-6;
    let mut targets: Vec<(String, Var)> = store.parameters();
    targets.push(("input".into(), input));
    for (name, var) in targets {
        let analytic = match grads.get(var.as_tensor()) {
            Some(g) => g.flatten_all()?.to_vec1::<f64>()?,
            None => vec![0.0; var.elem_count()],
        };
        let original = var.as_tensor().copy()?;
        let flat = original.flatten_all()?.to_vec1::<f64>()?;
        for (k, &g) in analytic.iter().enumerate() {
            let at = |delta: f64| -> Result<f64> {
                let mut values = flat.clone();
                values[k] += delta;
                var.set(&Tensor::from_vec(values, original.shape(), original.device())?)?;
                let value = if name == "input" { loss(var.as_tensor()) } else { loss(x) };
                var.set(&original)?;
                value
            };
            let numeric = (at(h)? - at(-h)?) / (2.0 * h);
            assert!(
                (numeric - g).abs() <= 1e-5 * (1.0 + numeric.abs()),
                "d loss / d {name}[{k}]: autodiff {g}, finite differences {numeric}"
            );
        }
    }
    Ok(())
}
