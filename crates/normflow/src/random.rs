//! Seeded random tensors.
//!
//! candle's CPU generator cannot be seeded, so every random draw in normflow goes through a
//! caller-supplied [`rand::RngCore`]: values are drawn on the host and moved to the target
//! device. Runs with the same seed are bit-identical.

use candle_core::{DType, Device, Shape, Tensor};
use rand::{Rng, RngCore};
use rand_distr::StandardNormal;

use crate::Result;

/// A tensor of independent standard normal values.
pub fn standard_normal(
    shape: impl Into<Shape>,
    dtype: DType,
    device: &Device,
    rng: &mut dyn RngCore,
) -> Result<Tensor> {
    let shape = shape.into();
    let values: Vec<f64> = (0..shape.elem_count()).map(|_| rng.sample(StandardNormal)).collect();
    from_f64(values, shape, dtype, device)
}

/// A tensor of independent uniform values on `[0, 1)`.
pub fn uniform(
    shape: impl Into<Shape>,
    dtype: DType,
    device: &Device,
    rng: &mut dyn RngCore,
) -> Result<Tensor> {
    let shape = shape.into();
    let values: Vec<f64> = (0..shape.elem_count()).map(|_| rng.random::<f64>()).collect();
    from_f64(values, shape, dtype, device)
}

/// A tensor from host `f64` values, converted to `dtype` on `device`.
pub fn from_f64(values: Vec<f64>, shape: Shape, dtype: DType, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?)
}

/// A generator seeded from `seed`: the one normflow uses everywhere a seed is given.
pub fn rng_from_seed(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand::SeedableRng::seed_from_u64(seed)
}
