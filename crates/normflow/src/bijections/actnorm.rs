//! Activation normalization with data-dependent initialization.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Tensor, Var};

use super::batch_norm::{channel_ladj, channel_mean_var, channels_of, check_event, per_channel};
use super::Bijection;
use crate::params::{Init, Params};
use crate::Result;

/// Added to the batch standard deviation at initialization, so a constant channel gets a large
/// but finite scale.
const INIT_STD_OFFSET: f64 = 1e-6;

/// Per-channel affine normalization (Kingma & Dhariwal 2018, "Glow: Generative Flow with
/// Invertible 1x1 Convolutions", section 3.1):
///
/// ```text
/// z = (x - loc) * exp(log_scale)
/// log|det dz/dx| = S * sum_c log_scale_c
/// ```
///
/// per channel `c` (axis 1), broadcast over the trailing axes, `S` the number of positions per
/// channel (`H * W` for images, 1 for vectors).
///
/// **Data-dependent initialization**: the first forward call in training mode
/// ([`Bijection::set_training`]`(true)`) sets `loc` to the batch's per-channel mean and
/// `log_scale` to `-log(std + 1e-6)` (biased standard deviation over the batch and trailing
/// axes), so that this batch leaves the layer with zero mean and unit variance per channel; from
/// then on both are ordinary parameters. A buffer `initialized` (`(1,)`, 0 or 1) records that this
/// happened and is saved with the model, so a loaded model is not initialized again. Until then
/// the layer is the identity (`loc = log_scale = 0`).
///
/// The layer starts in **evaluation mode** (no initialization); the trainer switches it to
/// training mode. Reading the flag costs one scalar device-to-host copy per training forward.
///
/// # Shapes
/// `x: (B, event...)` with `event` the shape given at construction, e.g. `(D,)` or `(C, H, W)`;
/// `loc`, `log_scale`: `(C,)` with `C = event[0]`.
#[derive(Debug)]
pub struct ActNorm {
    loc: Var,
    log_scale: Var,
    initialized: Var,
    event_shape: Vec<usize>,
    training: AtomicBool,
}

impl ActNorm {
    /// A layer for events of shape `event_shape`, with parameters `loc`, `log_scale` `(C,)` and
    /// the buffer `initialized` `(1,)`.
    pub fn new(params: &Params, event_shape: &[usize]) -> Result<Self> {
        let channels = channels_of(event_shape)?;
        Ok(Self {
            loc: params.param_var("loc", channels, Init::Const(0.0))?,
            log_scale: params.param_var("log_scale", channels, Init::Const(0.0))?,
            initialized: params.buffer("initialized", 1, Init::Const(0.0))?,
            event_shape: event_shape.to_vec(),
            training: AtomicBool::new(false),
        })
    }

    /// Whether the data-dependent initialization has run (here or in the model that was loaded).
    pub fn is_initialized(&self) -> Result<bool> {
        let flag = self.initialized.as_tensor().to_dtype(DType::F64)?.sum_all()?;
        Ok(flag.to_scalar::<f64>()? > 0.5)
    }

    /// Sets `loc` and `log_scale` from the batch `x` (non-empty) and raises the flag.
    fn initialize(&self, x: &Tensor) -> Result<()> {
        let (mean, var) = channel_mean_var(&x.detach())?;
        let log_scale = (var.sqrt()? + INIT_STD_OFFSET)?.log()?.neg()?;
        self.loc.set(&mean)?;
        self.log_scale.set(&log_scale)?;
        self.initialized.set(&Tensor::ones(1, self.initialized.dtype(), x.device())?)?;
        Ok(())
    }
}

impl Bijection for ActNorm {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        check_event(x, &self.event_shape, "ActNorm")?;
        if self.training.load(Ordering::Relaxed) && x.dim(0)? > 0 && !self.is_initialized()? {
            self.initialize(x)?;
        }
        let (loc, log_scale) = (self.loc.as_tensor(), self.log_scale.as_tensor());
        let z = x
            .broadcast_sub(&per_channel(loc, x.rank())?)?
            .broadcast_mul(&per_channel(&log_scale.exp()?, x.rank())?)?;
        Ok((z, channel_ladj(log_scale, x)?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        check_event(z, &self.event_shape, "ActNorm")?;
        let (loc, log_scale) = (self.loc.as_tensor(), self.log_scale.as_tensor());
        let x = z
            .broadcast_mul(&per_channel(&log_scale.neg()?.exp()?, z.rank())?)?
            .broadcast_add(&per_channel(loc, z.rank())?)?;
        Ok((x, channel_ladj(log_scale, z)?.neg()?))
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }

    /// Not while the data-dependent initialization is still to run on a training batch.
    fn rows_independent(&self) -> bool {
        !self.training.load(Ordering::Relaxed) || self.is_initialized().unwrap_or(false)
    }

    fn jacobian_order(&self) -> Option<Vec<usize>> {
        Some((0..self.event_shape.iter().product()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;
    use candle_core::Device;

    #[test]
    fn initialization_standardizes_the_first_training_batch_once() -> Result<()> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
        let layer = ActNorm::new(&store.root().pp("an"), &[2, 3])?;
        let mut rng = crate::random::rng_from_seed(4);
        let x = crate::random::standard_normal((8, 2, 3), DType::F64, &Device::Cpu, &mut rng)?;
        let x = x.broadcast_mul(&Tensor::new(&[[[3f64], [0.5]]], &Device::Cpu)?)?;
        let x = (x + 2.0)?;

        // Evaluation mode (the default): no initialization, the identity.
        let z = layer.forward(&x, None)?;
        assert_eq!(z.flatten_all()?.to_vec1::<f64>()?, x.flatten_all()?.to_vec1::<f64>()?);
        assert!(!layer.is_initialized()?);

        layer.set_training(true);
        let (z, ladj) = layer.forward_and_ladj(&x, None)?;
        let (mean, var) = channel_mean_var(&z)?;
        for (m, v) in mean.to_vec1::<f64>()?.iter().zip(var.to_vec1::<f64>()?) {
            assert!(m.abs() < 1e-12 && (v - 1.0).abs() < 1e-5, "mean {m}, variance {v}");
        }
        let (_, x_var) = channel_mean_var(&x)?;
        let expected = -1.5 * x_var.log()?.sum_all()?.to_scalar::<f64>()?;
        assert!((ladj.to_vec1::<f64>()?[0] - expected).abs() < 1e-4);
        let flag = store.buffers().into_iter().find(|(n, _)| n == "an.initialized");
        let flag = flag.map(|(_, v)| v.as_tensor().to_vec1::<f64>()).transpose()?;
        assert_eq!(flag, Some(vec![1.0]));

        // A second training batch does not re-initialize.
        let before = layer.loc.as_tensor().to_vec1::<f64>()?;
        layer.forward(&(x * 10.0)?, None)?;
        assert_eq!(layer.loc.as_tensor().to_vec1::<f64>()?, before);

        // A fresh layer loading these tensors keeps them, even in training mode.
        let other_store = ParamStore::new(DType::F64, &Device::Cpu, 1);
        let other = ActNorm::new(&other_store.root().pp("an"), &[2, 3])?;
        other_store
            .load_tensors(&store.tensors().into_iter().collect(), std::path::Path::new("mem"))?;
        other.set_training(true);
        let x2 = crate::random::standard_normal((8, 2, 3), DType::F64, &Device::Cpu, &mut rng)?;
        other.forward(&x2, None)?;
        assert_eq!(other.loc.as_tensor().to_vec1::<f64>()?, before);
        Ok(())
    }

    #[test]
    fn round_trips_in_f32() -> Result<()> {
        crate::bijections::test_support::assert_round_trips_in_f32(|p| ActNorm::new(p, &[3, 2, 2]))
    }
}
