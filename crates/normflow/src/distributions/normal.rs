//! Normal distributions.

use candle_core::{DType, Device, Tensor};
use rand::RngCore;

use super::{check_context, check_event_shape, Distribution};
use crate::bijections::sum_per_sample;
use crate::random::standard_normal;
use crate::Result;

/// `log(2 pi) / 2`.
pub const HALF_LOG_TWO_PI: f64 = 0.918_938_533_204_672_8;

/// The standard normal `N(0, I)` on an event of any shape.
#[derive(Debug, Clone)]
pub struct StandardNormal {
    event_shape: Vec<usize>,
    dtype: DType,
    device: Device,
}

impl StandardNormal {
    /// `N(0, I)` over events of shape `event_shape`, sampling in `dtype` on `device`.
    pub fn new(event_shape: &[usize], dtype: DType, device: &Device) -> Self {
        Self { event_shape: event_shape.to_vec(), dtype, device: device.clone() }
    }
}

impl Distribution for StandardNormal {
    /// `log p(x) = -|x|^2 / 2 - D log(2 pi) / 2`.
    fn log_prob(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let _ = context;
        check_event_shape(x, &self.event_shape, "StandardNormal::log_prob")?;
        let d = self.event_shape.iter().product::<usize>() as f64;
        Ok(sum_per_sample(&x.sqr()?)?.affine(-0.5, -d * HALF_LOG_TWO_PI)?)
    }

    fn sample(&self, n: usize, context: Option<&Tensor>, rng: &mut dyn RngCore) -> Result<Tensor> {
        if let Some(c) = context {
            // An unconditional base inside a conditional flow: the context only fixes n.
            check_context(Some(c), n, true)?;
        }
        let mut shape = vec![n];
        shape.extend(&self.event_shape);
        standard_normal(shape, self.dtype, &self.device, rng)
    }

    fn rows_independent(&self) -> bool {
        true
    }

    fn event_shape(&self) -> Vec<usize> {
        self.event_shape.clone()
    }
}
