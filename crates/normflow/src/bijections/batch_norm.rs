//! Batch normalization as a bijection.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{Tensor, Var};

use super::Bijection;
use crate::params::{Init, Params};
use crate::{Error, Result};

/// Per-channel batch normalization used as a flow layer (Dinh et al. 2017, "Density estimation
/// using Real NVP", section 3.7; Papamakarios et al. 2017, "Masked Autoregressive Flow for
/// Density Estimation", section 3.4):
///
/// ```text
/// z = (x - m) / sqrt(v + eps) * exp(log_gamma) + beta
/// log|det dz/dx| = S * sum_c (log_gamma_c - 0.5 log(v_c + eps))
/// ```
///
/// per channel `c` (axis 1), broadcast over the trailing axes, with `S` the number of positions
/// per channel (`H * W` for images, 1 for vectors).
///
/// - **Training mode** ([`Bijection::set_training`]`(true)`): `m`, `v` are the batch mean and
///   biased variance over the batch and trailing axes, and gradients flow through them; each
///   forward call also moves the running statistics (buffers, no gradient):
///   `running = (1 - momentum) * running + momentum * batch`. An empty batch leaves them alone
///   and is treated as in evaluation mode.
/// - **Evaluation mode** (the default): `m`, `v` are the running statistics, so each sample is
///   transformed independently of the batch.
/// - **Inverse**: always uses the running statistics, in either mode (the batch statistics of
///   latent samples are not the data's), so it inverts the evaluation-mode forward.
///
/// Starts as the standardization by the running statistics (`mean = 0`, `var = 1` at
/// creation) with `log_gamma = beta = 0`.
///
/// # Shapes
/// `x: (B, event...)` with `event` the shape given at construction, e.g. `(D,)` or `(C, H, W)`;
/// `log_gamma`, `beta`, `running_mean`, `running_var`: `(C,)` with `C = event[0]`.
#[derive(Debug)]
pub struct BatchNorm {
    log_gamma: Tensor,
    beta: Tensor,
    running_mean: Var,
    running_var: Var,
    event_shape: Vec<usize>,
    momentum: f64,
    eps: f64,
    training: AtomicBool,
}

impl BatchNorm {
    /// A layer for events of shape `event_shape`, with `momentum = 0.1` and `eps = 1e-5`.
    /// Parameters `log_gamma`, `beta` and buffers `running_mean`, `running_var`, all `(C,)`.
    pub fn new(params: &Params, event_shape: &[usize]) -> Result<Self> {
        let channels = channels_of(event_shape)?;
        Ok(Self {
            log_gamma: params.param("log_gamma", channels, Init::Const(0.0))?,
            beta: params.param("beta", channels, Init::Const(0.0))?,
            running_mean: params.buffer("running_mean", channels, Init::Const(0.0))?,
            running_var: params.buffer("running_var", channels, Init::Const(1.0))?,
            event_shape: event_shape.to_vec(),
            momentum: 0.1,
            eps: 1e-5,
            training: AtomicBool::new(false),
        })
    }

    /// Sets the weight of each new batch in the running statistics, in `(0, 1]`.
    pub fn with_momentum(mut self, momentum: f64) -> Result<Self> {
        crate::ensure_config!(
            momentum > 0.0 && momentum <= 1.0,
            "momentum",
            momentum,
            "must be in (0, 1]"
        );
        self.momentum = momentum;
        Ok(self)
    }

    /// Sets the variance offset `eps`, a positive finite number.
    pub fn with_eps(mut self, eps: f64) -> Result<Self> {
        crate::ensure_config!(
            eps > 0.0 && eps.is_finite(),
            "eps",
            eps,
            "must be positive and finite"
        );
        self.eps = eps;
        Ok(self)
    }

    /// Whether the layer is in training mode.
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        check_event(x, &self.event_shape, "BatchNorm")
    }

    /// The statistics the forward pass uses, `(C,)` each, updating the running ones in training.
    fn statistics(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        if !self.is_training() || x.dim(0)? == 0 {
            return Ok((
                self.running_mean.as_tensor().clone(),
                self.running_var.as_tensor().clone(),
            ));
        }
        let (mean, var) = channel_mean_var(x)?;
        let keep = 1.0 - self.momentum;
        let update = |running: &Var, batch: &Tensor| -> Result<()> {
            let next =
                ((running.as_tensor().detach() * keep)? + (batch.detach() * self.momentum)?)?;
            Ok(running.set(&next)?)
        };
        update(&self.running_mean, &mean)?;
        update(&self.running_var, &var)?;
        Ok((mean, var))
    }

    /// `log_gamma - 0.5 log(v + eps)`, `(C,)`: the per-position log-scale.
    fn log_scale(&self, var: &Tensor) -> Result<Tensor> {
        Ok((&self.log_gamma - ((var + self.eps)?.log()? * 0.5)?)?)
    }
}

impl Bijection for BatchNorm {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        let (mean, var) = self.statistics(x)?;
        let log_scale = self.log_scale(&var)?;
        let z = x
            .broadcast_sub(&per_channel(&mean, x.rank())?)?
            .broadcast_mul(&per_channel(&log_scale.exp()?, x.rank())?)?
            .broadcast_add(&per_channel(&self.beta, x.rank())?)?;
        Ok((z, channel_ladj(&log_scale, x)?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.check(z)?;
        let log_scale = self.log_scale(self.running_var.as_tensor())?;
        let x = z
            .broadcast_sub(&per_channel(&self.beta, z.rank())?)?
            .broadcast_mul(&per_channel(&log_scale.neg()?.exp()?, z.rank())?)?
            .broadcast_add(&per_channel(self.running_mean.as_tensor(), z.rank())?)?;
        Ok((x, channel_ladj(&log_scale, z)?.neg()?))
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }

    /// Only in evaluation mode: training normalizes by the batch's statistics and updates the
    /// running averages.
    fn rows_independent(&self) -> bool {
        !self.training.load(Ordering::Relaxed)
    }

    /// Element-wise in evaluation mode (in training mode every output depends on the batch).
    fn jacobian_order(&self) -> Option<Vec<usize>> {
        Some((0..self.event_shape.iter().product()).collect())
    }
}

/// The channel count `event_shape[0]`, validating the shape.
pub(super) fn channels_of(event_shape: &[usize]) -> Result<usize> {
    match event_shape.first() {
        Some(&c) if event_shape.iter().all(|&n| n > 0) => Ok(c),
        _ => Err(Error::config(
            "event_shape",
            format!("{event_shape:?}"),
            "must be (channels, ...) with every size at least 1",
        )),
    }
}

/// Fails unless `x` is `(B, event_shape...)`.
pub(super) fn check_event(x: &Tensor, event_shape: &[usize], layer: &str) -> Result<()> {
    if x.rank() == 0 || x.dims()[1..] != *event_shape {
        return Err(Error::shape(
            format!("{layer} input"),
            format!("(batch, {event_shape:?})"),
            x.dims(),
        ));
    }
    Ok(())
}

/// Per-channel mean and biased variance over the batch and trailing axes: `(C,)` each.
/// Differentiable; `x` must have a non-empty batch.
pub(super) fn channel_mean_var(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let channels = x.dim(1)?;
    let per_channel = x.elem_count() / channels.max(1);
    let rows = x.transpose(0, 1)?.contiguous()?.reshape((channels, per_channel))?;
    let mean = rows.mean_keepdim(1)?;
    let var = rows.broadcast_sub(&mean)?.sqr()?.mean(1)?;
    Ok((mean.squeeze(1)?, var))
}

/// Reshapes a `(C,)` tensor to `(1, C, 1, ...)` for broadcasting against a rank-`rank` input.
pub(super) fn per_channel(t: &Tensor, rank: usize) -> Result<Tensor> {
    let mut shape = vec![1, t.elem_count()];
    shape.resize(rank.max(2), 1);
    Ok(t.reshape(shape)?)
}

/// `S * sum(log_scale)` as a `(B,)` tensor, `S` the number of positions per channel of `x`.
pub(super) fn channel_ladj(log_scale: &Tensor, x: &Tensor) -> Result<Tensor> {
    let batch = x.dim(0)?;
    let positions = x.elem_count() / (batch * log_scale.elem_count()).max(1);
    let total = (log_scale.sum_all()? * positions as f64)?;
    Ok(total.broadcast_as(batch)?.contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;
    use candle_core::{DType, Device};

    fn host(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.flatten_all()?.to_vec1::<f64>()?)
    }

    #[test]
    fn running_statistics_move_in_training_and_serve_evaluation() -> Result<()> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
        let layer = BatchNorm::new(&store.root(), &[2, 2])?.with_momentum(0.5)?;
        // Channel 0 holds 1, 2, 5, 6 (mean 3.5, biased variance 4.25); channel 1 is constant 3.
        let x = Tensor::new(&[[[1f64, 2.], [3., 3.]], [[5., 6.], [3., 3.]]], &Device::Cpu)?;
        let (mean, var) = channel_mean_var(&x)?;
        assert_eq!(host(&mean)?, [3.5, 3.0]);
        assert_eq!(host(&var)?, [4.25, 0.0]);

        // Evaluation (the default) does not touch the buffers.
        layer.forward(&x, None)?;
        assert_eq!(host(layer.running_mean.as_tensor())?, [0.0, 0.0]);

        layer.set_training(true);
        let (z, ladj) = layer.forward_and_ladj(&x, None)?;
        // Half way from (0, 1) to the batch statistics.
        assert_eq!(host(layer.running_mean.as_tensor())?, [1.75, 1.5]);
        assert_eq!(host(layer.running_var.as_tensor())?, [2.625, 0.5]);
        // Training output is standardized by the batch statistics.
        let (zm, zv) = channel_mean_var(&z)?;
        assert!(host(&zm)?.iter().all(|m| m.abs() < 1e-12));
        assert!((host(&zv)?[0] - 4.25 / (4.25 + 1e-5)).abs() < 1e-12);
        let expected = 2.0 * (-0.5 * (4.25f64 + 1e-5).ln() - 0.5 * 1e-5f64.ln());
        assert!((host(&ladj)?[0] - expected).abs() < 1e-9);

        layer.set_training(false);
        let z = layer.forward(&x, None)?;
        let first = host(&z)?[0];
        assert!((first - (1.0 - 1.75) / (2.625f64 + 1e-5).sqrt()).abs() < 1e-12, "{first}");
        // The inverse uses the running statistics in either mode.
        layer.set_training(true);
        let back = layer.inverse(&z, None)?;
        let err = (back - &x)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(err < 1e-12);
        assert_eq!(host(layer.running_mean.as_tensor())?, [1.75, 1.5], "inverse moved the stats");
        Ok(())
    }

    #[test]
    fn rejects_bad_configuration_and_shapes() -> Result<()> {
        let store = ParamStore::new(DType::F32, &Device::Cpu, 0);
        let p = store.root();
        assert!(BatchNorm::new(&p.pp(0), &[]).is_err());
        assert!(BatchNorm::new(&p.pp(1), &[3, 0]).is_err());
        assert!(BatchNorm::new(&p.pp(2), &[3])?.with_momentum(0.0).is_err());
        assert!(BatchNorm::new(&p.pp(3), &[3])?.with_eps(-1.0).is_err());
        let layer = BatchNorm::new(&p.pp(4), &[3])?;
        let x = Tensor::zeros((2, 4), DType::F32, &Device::Cpu)?;
        assert!(matches!(layer.forward(&x, None), Err(Error::Shape { .. })));
        Ok(())
    }

    #[test]
    fn round_trips_in_f32() -> Result<()> {
        crate::bijections::test_support::assert_round_trips_in_f32(|p| {
            BatchNorm::new(p, &[3, 2, 2])
        })
    }
}
