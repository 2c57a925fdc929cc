//! Shared pieces of latent-variable models: variational autoencoders (`vae`) and latent flows for
//! discrete sequences (`seq`).
//!
//! A latent-variable model `p(x) = ∫ p(x | z) p(z) dz` is trained on the evidence lower bound
//! (Kingma & Welling 2014)
//!
//! ```text
//! ELBO(x) = E_q [ log p(x | z) + log p(z) - log q(z | x) ]  <=  log p(x)
//! ```
//!
//! and evaluated by the importance-weighted bound (Burda et al. 2016) with `K` samples
//! `z_k ~ q(z | x)` and weights `log w_k = log p(x, z_k) - log q(z_k | x)`:
//!
//! ```text
//! L_K(x) = log (1/K) Σ_k w_k,    ELBO = L_1 <= L_K <= L_{K+1} -> log p(x)   (in expectation)
//! ```
//!
//! This module holds the model-independent parts: [`log_mean_exp`] (the bound from a tensor of
//! log-weights), [`bernoulli_log_prob`] (the binary emission from logits), [`KlWarmup`] (the KL
//! annealing schedule of Sønderby et al. 2016), [`dynamic_binarize`] and [`importance_bounds`]
//! (both bounds from `K` samples drawn in chunks).

use candle_core::{DType, Tensor, D};
use rand::{Rng, RngCore};

use crate::ops::softplus;
use crate::{Error, Result};

/// `log (1/K) Σ_k exp(v_k)` along `dim`, computed stably (the maximum is subtracted first, and
/// treated as a constant for the gradient, which leaves the value's gradient exact).
///
/// With `v` the `(K, B)` log-weights of `K` importance samples per example, this is the
/// importance-weighted bound `L_K`, shape `(B,)`. `-inf` entries (impossible samples) are fine
/// as long as one entry per slice is finite; NaN propagates.
pub fn log_mean_exp(values: &Tensor, dim: usize) -> Result<Tensor> {
    let count = values.dim(dim)?;
    if count == 0 {
        return Err(Error::Shape {
            context: "log_mean_exp".into(),
            expected: format!("at least one value along dimension {dim}"),
            got: values.dims().to_vec(),
        });
    }
    let max = values.max_keepdim(dim)?.detach();
    // A slice of all -inf has max -inf; shift by 0 there so that exp gives 0, not NaN.
    let finite_max = max.ne(f64::NEG_INFINITY)?.where_cond(&max, &max.zeros_like()?)?;
    let sum = values.broadcast_sub(&finite_max)?.exp()?.sum_keepdim(dim)?;
    let log_mean = ((sum.log()? + finite_max)? - (count as f64).ln())?;
    Ok(log_mean.squeeze(dim)?)
}

/// Per-example ELBO and importance-weighted bound, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportanceBounds {
    /// `mean_k log w_k` per example: the ELBO estimated with `K` samples.
    pub elbo: Vec<f64>,
    /// `log (1/K) sum_k w_k` per example: the bound `L_K`.
    pub iw: Vec<f64>,
}

/// Draws `samples` log-weights per example, `chunk` samples at a time (memory grows with the
/// chunk, not with `K`), and returns both bounds per example.
///
/// `log_weights(n)` must return `(n, B)` log-weights of `n` fresh samples for the same `B`
/// examples; run it under [`crate::inference::without_gradients`] when evaluating.
pub fn importance_bounds(
    samples: usize,
    chunk: usize,
    mut log_weights: impl FnMut(usize) -> Result<Tensor>,
) -> Result<ImportanceBounds> {
    crate::ensure_config!(samples >= 1, "importance samples", samples, "must be at least 1");
    crate::ensure_config!(chunk >= 1, "importance sample chunk", chunk, "must be at least 1");
    let mut rows: Vec<Tensor> = Vec::new();
    let mut drawn = 0;
    while drawn < samples {
        let n = chunk.min(samples - drawn);
        let w = log_weights(n)?;
        if w.rank() != 2
            || w.dim(0)? != n
            || rows.first().is_some_and(|r| r.dim(1).ok() != w.dim(1).ok())
        {
            return Err(Error::shape("importance log-weights", format!("({n}, B)"), w.dims()));
        }
        rows.push(w.detach().to_device(&candle_core::Device::Cpu)?.to_dtype(DType::F64)?);
        drawn += n;
    }
    let all = Tensor::cat(&rows, 0)?;
    Ok(ImportanceBounds {
        elbo: all.mean(0)?.to_vec1::<f64>()?,
        iw: log_mean_exp(&all, 0)?.to_vec1::<f64>()?,
    })
}

/// Log-likelihood of binary data under independent Bernoulli variables with the given logits,
/// summed over every dimension but the first: `Σ_j x_j l_j - softplus(l_j)`, shape `(B,)`.
///
/// Written with logits (never probabilities) so that confident wrong predictions cost a large
/// finite amount instead of `log 0`. `x` may hold any values in `[0, 1]` (the expected
/// log-likelihood of a soft target); the caller binarizes.
pub fn bernoulli_log_prob(logits: &Tensor, x: &Tensor) -> Result<Tensor> {
    if logits.dims() != x.dims() {
        return Err(Error::Shape {
            context: "bernoulli_log_prob: data".into(),
            expected: format!("the logits' shape {:?}", logits.dims()),
            got: x.dims().to_vec(),
        });
    }
    let per_unit = ((x * logits)? - softplus(logits)?)?;
    sum_all_but_first(&per_unit)
}

/// Sums a `(B, ...)` tensor to `(B,)`.
pub fn sum_all_but_first(t: &Tensor) -> Result<Tensor> {
    let batch = t.dim(0)?;
    Ok(t.reshape((batch, ()))?.sum(D::Minus1)?)
}

/// KL warm-up: the weight `β` of `log p(z) - log q(z | x)` in the ELBO grows linearly from
/// `β_0 = 1 / (steps + 1)` to 1 over the first `steps` optimizer steps (Sønderby et al. 2016;
/// Rezende & Mohamed 2015 anneal the same way). `steps = 0` turns it off. The objective is a
/// bound on `log p(x)` only once `β = 1`; reported ELBOs always use `β = 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KlWarmup {
    /// Optimizer steps until `β` reaches 1.
    pub steps: usize,
}

impl KlWarmup {
    /// `β` at optimizer step `step` (counted from 0).
    pub fn beta(&self, step: usize) -> f64 {
        if self.steps == 0 {
            return 1.0;
        }
        ((step + 1) as f64 / (self.steps + 1) as f64).min(1.0)
    }
}

/// Dynamic binarization (Salakhutdinov & Murray 2008): each value `p` in `[0, 1]` becomes 1
/// with probability `p`, freshly per call, so every epoch sees new binary images. Returns a
/// tensor of the input's shape, dtype and device. Values outside `[0, 1]` are an error.
pub fn dynamic_binarize(probabilities: &Tensor, rng: &mut dyn RngCore) -> Result<Tensor> {
    let values = probabilities.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    if let Some((index, bad)) = values.iter().enumerate().find(|(_, p)| !(0.0..=1.0).contains(*p)) {
        return Err(Error::InvalidConfig {
            name: "binarization input".into(),
            value: format!("{bad} at flat index {index}"),
            reason: "pixel intensities must be probabilities in [0, 1]".into(),
        });
    }
    let bits: Vec<f64> =
        values.iter().map(|&p| if rng.random::<f64>() < p { 1.0 } else { 0.0 }).collect();
    Ok(Tensor::from_vec(bits, probabilities.shape(), probabilities.device())?
        .to_dtype(probabilities.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn log_mean_exp_matches_the_naive_formula_and_is_stable() -> Result<()> {
        let v = Tensor::new(&[[0.5f64, -1.0], [2.0, -3.0], [-0.25, 1000.0]], &Device::Cpu)?;
        let got = log_mean_exp(&v, 0)?.to_vec1::<f64>()?;
        let naive0 = ((0.5f64.exp() + 2f64.exp() + (-0.25f64).exp()) / 3.0).ln();
        assert!((got[0] - naive0).abs() < 1e-12, "{} vs {naive0}", got[0]);
        // exp(1000) overflows; the stable form gives 1000 + log(1/3) to rounding.
        let expected1 = 1000.0 - 3f64.ln();
        assert!((got[1] - expected1).abs() < 1e-9, "{}", got[1]);
        Ok(())
    }

    #[test]
    fn log_mean_exp_handles_impossible_samples_and_has_softmax_gradient() -> Result<()> {
        let v = Tensor::new(&[[f64::NEG_INFINITY], [f64::NEG_INFINITY]], &Device::Cpu)?;
        assert_eq!(log_mean_exp(&v, 0)?.to_vec1::<f64>()?, [f64::NEG_INFINITY]);
        let var = Var::new(&[1.0f64, 2.0, 3.0], &Device::Cpu)?;
        let grads = log_mean_exp(var.as_tensor(), 0)?.backward()?;
        let g = grads.get(var.as_tensor()).expect("gradient").to_vec1::<f64>()?;
        let z: f64 = [1f64, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        for (gi, vi) in g.iter().zip([1f64, 2.0, 3.0]) {
            assert!((gi - vi.exp() / z).abs() < 1e-12);
        }
        Ok(())
    }

    #[test]
    fn bernoulli_log_prob_sums_per_example_and_survives_extreme_logits() -> Result<()> {
        let logits = Tensor::new(&[[0.0f64, 2.0], [-200.0, 200.0]], &Device::Cpu)?;
        let x = Tensor::new(&[[1.0f64, 0.0], [1.0, 1.0]], &Device::Cpu)?;
        let got = bernoulli_log_prob(&logits, &x)?.to_vec1::<f64>()?;
        let sig = |l: f64| 1.0 / (1.0 + (-l).exp());
        let expected0 = 0.5f64.ln() + (1.0 - sig(2.0)).ln();
        assert!((got[0] - expected0).abs() < 1e-12);
        // log sigmoid(-200) = -200 (to rounding), log sigmoid(200) = 0.
        assert!((got[1] + 200.0).abs() < 1e-9, "{}", got[1]);
        let wrong = Tensor::new(&[1.0f64, 0.0], &Device::Cpu)?;
        assert!(bernoulli_log_prob(&logits, &wrong).is_err());
        Ok(())
    }

    #[test]
    fn importance_bounds_gather_chunks_and_order_elbo_below_iw() -> Result<()> {
        let mut calls = Vec::new();
        let mut next = 0.0f64;
        let bounds = importance_bounds(5, 2, |n| {
            calls.push(n);
            let rows: Vec<f64> = (0..n * 2)
                .map(|i| {
                    next += 1.0;
                    (next + i as f64).sin()
                })
                .collect();
            Ok(Tensor::from_vec(rows, (n, 2), &Device::Cpu)?)
        })?;
        assert_eq!(calls, [2, 2, 1]);
        for (e, w) in bounds.elbo.iter().zip(&bounds.iw) {
            assert!(e.is_finite() && e <= w, "{e} > {w}");
        }
        assert!(importance_bounds(2, 1, |n| Ok(Tensor::zeros(
            (n + 1, 2),
            DType::F64,
            &Device::Cpu
        )?))
        .is_err());
        assert!(importance_bounds(0, 1, |n| Ok(Tensor::zeros((n, 2), DType::F64, &Device::Cpu)?))
            .is_err());
        Ok(())
    }

    #[test]
    fn warmup_rises_linearly_to_one() {
        let w = KlWarmup { steps: 3 };
        assert_eq!(
            [w.beta(0), w.beta(1), w.beta(2), w.beta(3), w.beta(10)],
            [0.25, 0.5, 0.75, 1.0, 1.0]
        );
        assert_eq!(KlWarmup::default().beta(0), 1.0);
    }

    #[test]
    fn dynamic_binarization_has_the_right_mean_and_rejects_non_probabilities() -> Result<()> {
        let mut rng = crate::random::rng_from_seed(3);
        let p = Tensor::full(0.3f32, (200, 50), &Device::Cpu)?;
        let bits = dynamic_binarize(&p, &mut rng)?;
        assert_eq!(bits.dtype(), DType::F32);
        let values = bits.flatten_all()?.to_vec1::<f32>()?;
        assert!(values.iter().all(|&b| b == 0.0 || b == 1.0));
        let mean = values.iter().sum::<f32>() / values.len() as f32;
        assert!((mean - 0.3).abs() < 0.02, "mean {mean}");
        let bad = Tensor::new(&[0.5f32, 1.5], &Device::Cpu)?;
        assert!(dynamic_binarize(&bad, &mut rng).is_err());
        Ok(())
    }
}
