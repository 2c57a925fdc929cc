//! MADE's inverse degree by degree: the `D` sequential passes of an autoregressive inverse at
//! the cost of one blocked forward pass (no gradients).
//!
//! With units sorted by degree, a hidden unit of degree `d` reads only inputs at positions
//! `0..d`, so it is final as soon as those are; the outputs of the feature at position `k` read
//! only hidden units of degree `<= k`. Step `k` therefore computes only the hidden units of
//! degree `k` (in every layer, bottom up) and the outputs of position `k`, then inverts that one
//! feature: every unit is computed exactly once over the `D` steps, where the textbook inverse
//! (and zuko's, nflows') recomputes the whole network `D` times.

use candle_core::{Tensor, WithDType};

use super::super::fused::{fusable, FusedActivation};
use rayon::prelude::*;

use super::super::gemm::{matmul, Parallelism, Real, View};
use super::Made;
use crate::nn::Activation;
use crate::Result;

/// Inverts one feature: `(z, params of its position) -> (x, log|dx/dz|)`.
pub(crate) type Invert<'a> = &'a (dyn Fn(f64, &[f64]) -> (f64, f64) + Sync);

impl Made {
    /// The inverse of an autoregressive map whose feature at position `k` is
    /// `x_k = invert(z_k, params_k(x_<k, context))`: `(x (B, D), sum of log|dx/dz| (B,))`.
    /// `None` where the fused kernels do not run (other devices and dtypes): the caller falls
    /// back to `D` full passes. No gradients flow through the result.
    pub(crate) fn sequential_inverse(
        &self,
        z: &Tensor,
        context: Option<&Tensor>,
        invert: Invert<'_>,
    ) -> Result<Option<(Tensor, Tensor)>> {
        if !fusable(z) {
            return Ok(None);
        }
        let (_, context) = self.check_inputs(z, context)?;
        match z.dtype() {
            candle_core::DType::F32 => self.run::<f32>(z, context, invert).map(Some),
            _ => self.run::<f64>(z, context, invert).map(Some),
        }
    }

    fn run<T: Real + WithDType>(
        &self,
        z: &Tensor,
        context: Option<&Tensor>,
        invert: Invert<'_>,
    ) -> Result<(Tensor, Tensor)> {
        let (batch, d) = z.dims2()?;
        let flat = |t: &Tensor| -> Result<Vec<T>> { Ok(t.flatten_all()?.to_vec1::<T>()?) };
        let zs = flat(z)?;
        let first = &self.hidden[0];
        let (w0, n_ctx) = match (&self.context, context) {
            (Some(w_c), Some(c)) => (Tensor::cat(&[w_c, &first.weight], 1)?, c.dim(1)?),
            _ => (first.weight.clone(), 0),
        };
        let layers: Vec<_> = self.hidden.iter().chain(std::iter::once(&self.output)).collect();
        let mut weights = Vec::with_capacity(layers.len());
        for (l, layer) in layers.iter().enumerate() {
            let w = if l == 0 { flat(&w0)? } else { flat(&layer.weight)? };
            let ws = layer.plan.sorted_weights(&w).into_owned();
            let bs = layer.plan.sorted_bias(&flat(&layer.bias)?).into_owned();
            weights.push((ws, bs));
        }
        let cs = match context {
            Some(c) => flat(c)?,
            None => Vec::new(),
        };
        // Rows are independent: threads take whole slices of the batch.
        let rows = super::super::dense::rows_per_piece(batch);
        let pieces: Vec<(Vec<T>, Vec<T>)> = zs
            .par_chunks(rows * d)
            .enumerate()
            .map(|(i, zs)| {
                let n = zs.len() / d;
                let cs =
                    if n_ctx > 0 { &cs[i * rows * n_ctx..(i * rows + n) * n_ctx] } else { &[] };
                self.run_rows(&weights, zs, cs, n_ctx, invert)
            })
            .collect::<candle_core::Result<_>>()?;
        let (mut x, mut ladj) = (Vec::with_capacity(batch * d), Vec::with_capacity(batch));
        for (xp, lp) in pieces {
            x.extend_from_slice(&xp);
            ladj.extend_from_slice(&lp);
        }
        let dev = z.device();
        Ok((Tensor::from_vec(x, (batch, d), dev)?, Tensor::from_vec(ladj, batch, dev)?))
    }

    /// [`Made::sequential_inverse`] on the rows `zs (n, D)` with context `cs (n, C)`, given the
    /// sorted weights and biases of every layer.
    fn run_rows<T: Real>(
        &self,
        weights: &[(Vec<T>, Vec<T>)],
        zs: &[T],
        cs: &[T],
        n_ctx: usize,
        invert: Invert<'_>,
    ) -> candle_core::Result<(Vec<T>, Vec<T>)> {
        let d = self.features;
        let p = self.outputs_per_feature;
        let batch = zs.len() / d.max(1);
        // Sorted input of the first layer: the context (degree 0) first, then the features by
        // position, filled in as they are inverted.
        let width0 = self.hidden[0].plan.inputs();
        let mut input = vec![T::ZERO; batch * width0];
        if n_ctx > 0 {
            for (row, src) in input.chunks_exact_mut(width0).zip(cs.chunks_exact(n_ctx)) {
                row[..n_ctx].copy_from_slice(src);
            }
        }
        // Pre-activations (for residual blocks) and activations of every hidden layer, sorted.
        let mut pre: Vec<Vec<T>> =
            self.hidden.iter().map(|h| vec![T::ZERO; batch * h.plan.outputs()]).collect();
        let mut act = pre.clone();
        let mut out = vec![T::ZERO; batch * p];
        let mut x = vec![T::ZERO; batch * d];
        let mut ladj = vec![T::ZERO; batch];
        let mut params = vec![0.0; p];
        let par = Parallelism::None;
        for k in 0..d {
            for l in 0..self.hidden.len() {
                let plan = &self.hidden[l].plan;
                let Some((r0, r1, prefix)) = plan.degree_block(k) else { continue };
                let (n_out, n_in) = (plan.outputs(), plan.inputs());
                let (below, rest) = act.split_at_mut(l);
                let src: &[T] = if l == 0 { &input } else { &below[l - 1] };
                let dst = &mut pre[l];
                let (ws, bs) = &weights[l];
                matmul(
                    dst,
                    View::row_major(n_out, 0, batch, r0, r1 - r0),
                    false,
                    src,
                    View::row_major(n_in, 0, batch, 0, prefix),
                    ws,
                    View::row_major(n_in, r0, r1 - r0, 0, prefix).t(),
                    par,
                )?;
                let skip = l > 0 && self.skip[l];
                let (lower, here) = pre.split_at_mut(l);
                for b in 0..batch {
                    let row = b * n_out;
                    let values = &mut here[0][row + r0..row + r1];
                    for (v, &bias) in values.iter_mut().zip(&bs[r0..r1]) {
                        *v += bias;
                    }
                    if skip {
                        for (v, &s) in values.iter_mut().zip(&lower[l - 1][row + r0..row + r1]) {
                            *v += s;
                        }
                    }
                    activate(self.activation, values, &mut rest[0][row + r0..row + r1]);
                }
            }
            let plan = &self.output.plan;
            // Every position has its P outputs (degree k + 1) by construction.
            let Some((r0, r1, prefix)) = plan.degree_block(k + 1) else {
                candle_core::bail!("MADE: no outputs of degree {}", k + 1)
            };
            let n_in = plan.inputs();
            let (ws, bs) = &weights[weights.len() - 1];
            let last = act.last().map(Vec::as_slice).unwrap_or(&input);
            matmul(
                &mut out,
                View::row_major(p, 0, batch, 0, r1 - r0),
                false,
                last,
                View::row_major(n_in, 0, batch, 0, prefix),
                ws,
                View::row_major(n_in, r0, r1 - r0, 0, prefix).t(),
                par,
            )?;
            let feature = self.order[k];
            for b in 0..batch {
                for (q, v) in params.iter_mut().enumerate() {
                    *v = Real::to_f64(out[b * p + q] + bs[r0 + q]);
                }
                let (value, l) = invert(Real::to_f64(zs[b * d + feature]), &params);
                let value = <T as Real>::from_f64(value);
                x[b * d + feature] = value;
                input[b * width0 + n_ctx + k] = value;
                ladj[b] += <T as Real>::from_f64(l);
            }
        }
        Ok((x, ladj))
    }
}

/// `dst = act(src)`, element-wise.
fn activate<T: Real>(activation: Activation, src: &[T], dst: &mut [T]) {
    let pairs = dst.iter_mut().zip(src);
    let map = |g: fn(f64) -> f64| {
        move |(d, &v): (&mut T, &T)| *d = <T as Real>::from_f64(g(Real::to_f64(v)))
    };
    match activation {
        Activation::Relu => pairs.for_each(|(d, &v)| *d = FusedActivation::Relu.apply(v)),
        Activation::Tanh => pairs.for_each(map(f64::tanh)),
        Activation::Silu => pairs.for_each(map(|v| v / (1.0 + (-v).exp()))),
        Activation::Elu => pairs.for_each(map(|v| if v > 0.0 { v } else { v.exp_m1() })),
    }
}
