//! Row bookkeeping of training: the seeded validation split, per-epoch shuffles, row gathers.
//!
//! Every random permutation comes from ChaCha8 seeded with the run's seed, on its own stream:
//! stream 0 for the split, stream `epoch + 1` for the shuffle of epoch `epoch` (0-based). An
//! epoch's order therefore depends only on `(seed, epoch)`, which is what lets a run resumed at
//! an epoch boundary continue exactly without saving generator state.

use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::config::TrainConfig;
use crate::random::rng_from_seed;
use crate::{Error, Result};

fn rng_on_stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = rng_from_seed(seed);
    rng.set_stream(stream);
    rng
}

/// The row indices `(train, validation)` of `n_rows` rows under `config` (`val_frac`, `seed`,
/// `batch_size`), each sorted. The validation rows are `round(val_frac * n_rows)` rows drawn
/// by a seeded shuffle. Fails with the counts when the rows are too few for the split or for
/// one training batch.
pub fn validation_split(n_rows: usize, config: &TrainConfig) -> Result<(Vec<usize>, Vec<usize>)> {
    config.check_rows(n_rows)?;
    let n_val = config.val_rows(n_rows);
    let mut order: Vec<usize> = (0..n_rows).collect();
    if n_val > 0 {
        order.shuffle(&mut rng_on_stream(config.seed, 0));
    }
    let mut val = order[..n_val].to_vec();
    let mut train = order[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    Ok((train, val))
}

/// The order in which epoch `epoch` (0-based) visits `n` training rows.
pub(crate) fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng_on_stream(seed, epoch as u64 + 1));
    order
}

/// Seeds of the dequantization noise differ from the split and shuffle seeds by this tag, so the
/// noise never repeats a permutation's random stream.
const DEQUANTIZATION_TAG: u64 = 0x6465_7175_616e_7421;

/// Stream of the validation rows' one fixed dequantization draw.
pub(crate) const VALIDATION_NOISE_STREAM: u64 = u64::MAX;

/// `x + u` with `u ~ U[0, 1)` of `x`'s shape, from ChaCha8 seeded with `(seed, stream)`: the
/// uniform dequantization of integer data (see `TrainConfig::uniform_dequantization`).
pub(crate) fn add_uniform_noise(x: &Tensor, seed: u64, stream: u64) -> Result<Tensor> {
    let mut rng = rng_on_stream(seed ^ DEQUANTIZATION_TAG, stream);
    let u = crate::random::uniform(x.dims(), x.dtype(), x.device(), &mut rng)?;
    Ok((x + u)?)
}

/// Rows `idx` of `x` (along axis 0), in that order.
pub(crate) fn gather_rows(x: &Tensor, idx: &[usize]) -> Result<Tensor> {
    let idx = idx
        .iter()
        .map(|&i| u32::try_from(i))
        .collect::<std::result::Result<Vec<u32>, _>>()
        .map_err(|_| Error::Data("more than 2^32 rows are not supported".into()))?;
    let n = idx.len();
    let idx = Tensor::from_vec(idx, n, x.device())?;
    Ok(x.index_select(&idx, 0)?)
}

/// Whether every entry of `t` is finite: `0 t` is 0 exactly where `t` is finite and NaN
/// elsewhere, and NaN is the only value not equal to itself.
pub(crate) fn all_finite(t: &Tensor) -> Result<bool> {
    if t.elem_count() == 0 {
        return Ok(true);
    }
    let d = t.affine(0.0, 0.0)?;
    let bad = d.ne(&d)?.flatten_all()?.max(0)?;
    Ok(bad.to_device(&Device::Cpu)?.to_dtype(DType::U32)?.to_scalar::<u32>()? == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_seeded_disjoint_and_complete() -> Result<()> {
        let config =
            TrainConfig { val_frac: 0.25, batch_size: 4, seed: 5, ..TrainConfig::default() };
        let (train, val) = validation_split(20, &config)?;
        assert_eq!((train.len(), val.len()), (15, 5));
        let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
        assert_eq!(validation_split(20, &config)?, (train.clone(), val.clone()));
        let other = TrainConfig { seed: 6, ..config.clone() };
        assert_ne!(validation_split(20, &other)?.1, val);
        // Not simply the last rows.
        assert_ne!(val, (15..20).collect::<Vec<_>>());
        Ok(())
    }

    #[test]
    fn epoch_orders_depend_on_seed_and_epoch_only() {
        assert_eq!(epoch_order(1, 3, 50), epoch_order(1, 3, 50));
        assert_ne!(epoch_order(1, 3, 50), epoch_order(1, 4, 50));
        assert_ne!(epoch_order(1, 3, 50), epoch_order(2, 3, 50));
        let mut sorted = epoch_order(1, 3, 50);
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn finiteness_and_gathers() -> Result<()> {
        let x = Tensor::new(&[[1f32, 2.0], [3.0, 4.0], [5.0, 6.0]], &Device::Cpu)?;
        assert!(all_finite(&x)?);
        assert_eq!(
            gather_rows(&x, &[2, 0])?.to_vec2::<f32>()?,
            vec![vec![5.0, 6.0], vec![1.0, 2.0]]
        );
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let y = Tensor::new(&[[1f32, bad]], &Device::Cpu)?;
            assert!(!all_finite(&y)?, "{bad}");
        }
        Ok(())
    }
}
