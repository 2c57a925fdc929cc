//! What the conditioned affine layers (MAF / IAF, RealNVP coupling) share: how a network's raw
//! output becomes a log-scale.

use candle_core::Tensor;

use crate::Result;

/// Bound on the log-scale of conditioned affine layers: `s = soft_clamp(raw, LOG_SCALE_BOUND)`
/// lies in `(-ln 1000, ln 1000)`, so one layer scales a feature by a factor in `(1e-3, 1e3)`
/// (zuko's bound).
///
/// An unbounded `exp(raw)` lets a single bad optimizer step overflow the scale (and the inverse
/// divide by it); `soft_clamp` is the identity near 0, where layers start and usually stay.
pub const LOG_SCALE_BOUND: f64 = 6.907_755_278_982_137;

/// The log-scale `s = raw / (1 + |raw| / LOG_SCALE_BOUND)` of a raw network output.
pub(crate) fn log_scale(raw: &Tensor) -> Result<Tensor> {
    crate::ops::soft_clamp(raw, LOG_SCALE_BOUND)
}
