//! Affine coupling on images with checkerboard or channel masks (Dinh et al. 2017, section 3.4;
//! Kingma & Dhariwal 2018).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{sum_per_sample, Bijection};
use crate::nn::{Activation, ConvNet, ConvNetConfig};
use crate::params::Params;
use crate::{ensure_config, Error, Result};

/// Which entries of an image condition the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ImageMask {
    /// Pixels with `(h + w + parity)` even pass through and condition the others (all channels).
    Checkerboard {
        /// 0 or 1; alternate it between layers.
        parity: usize,
    },
    /// The first `C / 2` channels (parity 0) or the remaining ones (parity 1) pass through and
    /// condition the rest.
    Channel {
        /// 0 or 1; alternate it between layers (or mix channels with 1x1 convolutions).
        parity: usize,
    },
}

/// Shape of an [`ImageAffineCoupling`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageCouplingConfig {
    /// Channels `C` of the input.
    pub channels: usize,
    /// The mask.
    pub mask: ImageMask,
    /// Channels of the conditioner's hidden feature maps.
    pub hidden: usize,
    /// Residual blocks of the conditioner.
    pub blocks: usize,
    /// Hidden non-linearity of the conditioner.
    pub activation: Activation,
    /// Bound `S` of the log-scale, `s = soft_clamp(r, S)`: one coupling scales a pixel by a
    /// factor in `(e^-S, e^S)`. [`IMAGE_LOG_SCALE_BOUND`] for new models.
    pub log_scale_bound: f64,
}

/// The image couplings' log-scale bound: each coupling scales a pixel by at most `e^2 ≈ 7.4`
/// either way.
///
/// With the tabular flows' bound ([`LOG_SCALE_BOUND`](super::LOG_SCALE_BOUND), factors up to
/// 1000) RealNVP's multi-scale model on MNIST learned large scales in its last scale's
/// checkerboard couplings, which compound from layer to layer: single training batches scored
/// losses of 1e8-1e15 nats (pixels mapped to |z| ~ 1e4 and beyond) and the validation
/// log-likelihood fell back in the early epochs (-2536 -> -45795 nats in one run). With the bound at
/// 2 (1,024 MNIST images, 5 epochs, seeds 0 and 1) no step spiked and the validation
/// log-likelihood after 5 epochs was better (-1607 / -1727 vs -2047 / -2055 nats); 1 learned
/// more slowly, 3 still spiked once; Glow was the same with 2 as with 6.9.
pub const IMAGE_LOG_SCALE_BOUND: f64 = 2.0;

/// The one check of a coupling log-scale bound, for the layer and for the image specs that
/// configure it (which validate before building).
pub(crate) fn check_log_scale_bound(bound: f64) -> Result<()> {
    ensure_config!(
        bound.is_finite() && bound > 0.0,
        "log_scale_bound",
        bound,
        "must be positive and finite"
    );
    Ok(())
}

/// (conditioning, transformed) channel counts of a channel mask.
pub(super) fn halves(c: usize, parity: usize) -> (usize, usize) {
    if parity == 0 {
        (c / 2, c - c / 2)
    } else {
        (c - c / 2, c / 2)
    }
}

/// The checkerboard `b` as a `(1, 1, H, W)` tensor of the input's dtype.
pub(super) fn checkerboard(x: &Tensor, h: usize, w: usize, parity: usize) -> Result<Tensor> {
    let v: Vec<f64> =
        (0..h * w).map(|k| if (k / w + k % w + parity) % 2 == 0 { 1.0 } else { 0.0 }).collect();
    Ok(Tensor::from_vec(v, (1, 1, h, w), x.device())?.to_dtype(x.dtype())?)
}

/// Affine coupling on `(B, C, H, W)` images with a convolutional residual conditioner
/// ([`ConvNet`], last layer zero so the layer starts as the identity):
///
/// ```text
/// checkerboard mask b (1 on the conditioning pixels):
///     (t, r) = NN(b * x),  s = (1 - b) soft_clamp(r),  t <- (1 - b) t
///     z = x exp(s) + t,    log|det dz/dx| = sum(s)
/// channel mask: x = (x_a, x_b) along channels, x_a conditions:
///     (t, r) = NN(x_a),    z_b = x_b exp(s) + t,  z_a = x_a,  log|det| = sum(s)
/// ```
///
/// The log-scale bound is [`ImageCouplingConfig::log_scale_bound`].
///
/// # Shapes
/// `x: (B, C, H, W)`; ladj `(B,)`.
#[derive(Debug, Clone)]
pub struct ImageAffineCoupling {
    mask: ImageMask,
    channels: usize,
    net: ConvNet,
    log_scale_bound: f64,
}

impl ImageAffineCoupling {
    /// Builds the conditioner under `params` (tensors `net.*`).
    pub fn new(params: &Params, config: &ImageCouplingConfig) -> Result<Self> {
        let c = config.channels;
        let (cond, out) = match config.mask {
            ImageMask::Checkerboard { parity } => {
                ensure_config!(parity < 2, "parity", parity, "must be 0 or 1");
                (c, 2 * c)
            }
            ImageMask::Channel { parity } => {
                ensure_config!(parity < 2, "parity", parity, "must be 0 or 1");
                ensure_config!(c >= 2, "channels", c, "a channel mask needs at least 2 channels");
                let (a, b) = halves(c, parity);
                (a, 2 * b)
            }
        };
        let net = ConvNet::new(
            &params.pp("net"),
            &ConvNetConfig {
                in_channels: cond,
                hidden: config.hidden,
                blocks: config.blocks,
                out_channels: out,
                activation: config.activation,
            },
        )?;
        check_log_scale_bound(config.log_scale_bound)?;
        Ok(Self { mask: config.mask, channels: c, net, log_scale_bound: config.log_scale_bound })
    }

    fn check(&self, x: &Tensor) -> Result<(usize, usize, usize)> {
        match *x.dims() {
            [_, c, h, w] if c == self.channels => Ok((c, h, w)),
            ref dims => Err(Error::shape(
                "image coupling input",
                format!("(batch, {}, height, width)", self.channels),
                dims,
            )),
        }
    }

    /// `s = soft_clamp(raw, S)`.
    fn log_scale(&self, raw: &Tensor) -> Result<Tensor> {
        crate::ops::soft_clamp(raw, self.log_scale_bound)
    }

    /// Shift and log-scale `(t, s)` for the transformed entries; zero elsewhere for a
    /// checkerboard. `sign` +1 forward, -1 inverse.
    fn apply(&self, x: &Tensor, sign: f64) -> Result<(Tensor, Tensor)> {
        let (c, h, w) = self.check(x)?;
        match self.mask {
            ImageMask::Checkerboard { parity } => {
                let b = checkerboard(x, h, w, parity)?;
                let keep = b.affine(-1.0, 1.0)?;
                let out = self.net.forward(&x.broadcast_mul(&b)?)?;
                let t = out.narrow(1, 0, c)?.broadcast_mul(&keep)?;
                let s = self.log_scale(&out.narrow(1, c, c)?)?.broadcast_mul(&keep)?;
                let z = if sign > 0.0 {
                    ((x * s.exp()?)? + t)?
                } else {
                    ((x - t)? * s.neg()?.exp()?)?
                };
                Ok((z, (sum_per_sample(&s)? * sign)?))
            }
            ImageMask::Channel { parity } => {
                let (na, nb) = halves(c, parity);
                // Conditioning channels first in the parity-0 layout, last in parity 1.
                let (a_start, b_start) = if parity == 0 { (0, na) } else { (nb, 0) };
                let xa = x.narrow(1, a_start, na)?;
                let xb = x.narrow(1, b_start, nb)?;
                let out = self.net.forward(&xa)?;
                let t = out.narrow(1, 0, nb)?;
                let s = self.log_scale(&out.narrow(1, nb, nb)?)?;
                let zb = if sign > 0.0 {
                    ((xb * s.exp()?)? + t)?
                } else {
                    ((xb - t)? * s.neg()?.exp()?)?
                };
                let z = if parity == 0 {
                    Tensor::cat(&[&xa, &zb], 1)?
                } else {
                    Tensor::cat(&[&zb, &xa], 1)?
                };
                Ok((z, (sum_per_sample(&s)? * sign)?))
            }
        }
    }
}

impl Bijection for ImageAffineCoupling {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.apply(x, 1.0)
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.apply(z, -1.0)
    }

    fn training_slice_rows(&self) -> Option<usize> {
        Some(crate::parallel::IMAGE_SLICE_ROWS)
    }
}
