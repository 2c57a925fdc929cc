//! Coupling on images with any element-wise transformer and Flow++'s gated convolutional
//! conditioner (Ho et al. 2019), optionally conditioned on a context image.

use std::sync::Arc;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::image_coupling::{checkerboard, halves};
use super::{sum_per_sample, Bijection, ImageMask, Transformer};
use crate::nn::{Activation, ConvNetConfig, GatedConvNet};
use crate::params::Params;
use crate::{ensure_config, Error, Result};

/// Shape of an [`ImageTransformerCoupling`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageTransformerCouplingConfig {
    /// Channels `C` of the input.
    pub channels: usize,
    /// The mask.
    pub mask: ImageMask,
    /// Channels of the conditioner's hidden feature maps.
    pub hidden: usize,
    /// Gated residual blocks of the conditioner.
    pub blocks: usize,
    /// Hidden non-linearity of the conditioner.
    pub activation: Activation,
    /// Channels `C_c` of the context image (0 = unconditional). The context is given as rows
    /// `(B, C_c H W)` (the library's context convention) and read as `(B, C_c, H, W)`.
    pub context_channels: usize,
}

/// A coupling layer on `(B, C, H, W)` images whose transformed entries go through any
/// [`Transformer`] with parameters from a [`GatedConvNet`] (Flow++'s coupling, with the
/// logistic-mixture transformer):
///
/// ```text
/// checkerboard mask b (1 on the conditioning pixels):
///     theta = NN([b * x, context]),   z = b * x + (1 - b) * tau(x; theta)
///     log|det dz/dx| = sum (1 - b) log tau'(x; theta)
/// channel mask, x = (x_a, x_b) along channels, x_a conditions:
///     theta = NN([x_a, context]),     z = (x_a, tau(x_b; theta)),  log|det| = sum log tau'
/// ```
///
/// The network outputs `P` channels per transformed channel (`P` the transformer's raw
/// parameters per element, channel-major: channel `c`'s are `c P .. (c + 1) P`). Its last layer
/// starts at zero, so the layer starts at the transformer's zero map. The inverse applies the
/// transformer's inverse (numerical for transformers without a closed form). With a checkerboard
/// the transformer also runs on the conditioning entries and the mask discards them: simpler
/// than gathering half the pixels, at twice the transformer's (not the network's) cost.
///
/// # Shapes
/// `x: (B, C, H, W)`, context `(B, C_c H W)` when `context_channels > 0`; ladj `(B,)`.
#[derive(Debug, Clone)]
pub struct ImageTransformerCoupling {
    mask: ImageMask,
    channels: usize,
    context_channels: usize,
    transformer: Arc<dyn Transformer>,
    net: GatedConvNet,
}

impl ImageTransformerCoupling {
    /// Builds the conditioner under `params` (tensors `net.*`).
    pub fn new(
        params: &Params,
        config: &ImageTransformerCouplingConfig,
        transformer: Arc<dyn Transformer>,
    ) -> Result<Self> {
        let c = config.channels;
        ensure_config!(c >= 1, "channels", c, "must be at least 1");
        let (cond, transformed) = match config.mask {
            ImageMask::Checkerboard { parity } => {
                ensure_config!(parity < 2, "parity", parity, "must be 0 or 1");
                (c, c)
            }
            ImageMask::Channel { parity } => {
                ensure_config!(parity < 2, "parity", parity, "must be 0 or 1");
                ensure_config!(c >= 2, "channels", c, "a channel mask needs at least 2 channels");
                halves(c, parity)
            }
        };
        let net = GatedConvNet::new(
            &params.pp("net"),
            &ConvNetConfig {
                in_channels: cond + config.context_channels,
                hidden: config.hidden,
                blocks: config.blocks,
                out_channels: transformed * transformer.params_per_feature(),
                activation: config.activation,
            },
        )?;
        Ok(Self {
            mask: config.mask,
            channels: c,
            context_channels: config.context_channels,
            transformer,
            net,
        })
    }

    fn check(&self, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
        match *x.dims() {
            [b, c, h, w] if c == self.channels => Ok((b, c, h, w)),
            ref dims => Err(Error::shape(
                "image coupling input",
                format!("(batch, {}, height, width)", self.channels),
                dims,
            )),
        }
    }

    /// The conditioner's input: `cond` with the context image appended along channels.
    fn net_input(&self, cond: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let (b, _, h, w) = cond.dims4()?;
        let cc = self.context_channels;
        match (cc, context) {
            (0, _) => Ok(cond.clone()),
            (_, Some(ctx)) if ctx.dims() == [b, cc * h * w] => {
                let ctx = ctx.reshape((b, cc, h, w))?.to_dtype(cond.dtype())?;
                Ok(Tensor::cat(&[cond, &ctx], 1)?)
            }
            (_, Some(ctx)) => Err(Error::shape(
                "image coupling context",
                format!("({b}, {})", cc * h * w),
                ctx.dims(),
            )),
            (_, None) => Err(Error::Context(format!(
                "this image coupling is conditional ({cc} context channels) but got none"
            ))),
        }
    }

    /// Applies the transformer (`inverse` or not) to `x (B, n, H, W)` with the network output
    /// `out (B, n P, H, W)`: `(y (B, n, H, W), log-derivatives (B, n, H, W))`.
    fn transform(&self, x: &Tensor, out: &Tensor, inverse: bool) -> Result<(Tensor, Tensor)> {
        let (b, n, h, w) = x.dims4()?;
        let p = self.transformer.params_per_feature();
        let raw = out.reshape((b, n, p, h * w))?.transpose(2, 3)?.contiguous()?.reshape((
            b,
            n * h * w,
            p,
        ))?;
        let flat = x.reshape((b, n * h * w))?;
        let (y, ld) = if inverse {
            self.transformer.inverse(&flat, &raw)?
        } else {
            self.transformer.forward(&flat, &raw)?
        };
        Ok((y.reshape((b, n, h, w))?, ld.reshape((b, n, h, w))?))
    }

    fn apply(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        inverse: bool,
    ) -> Result<(Tensor, Tensor)> {
        let (_, c, h, w) = self.check(x)?;
        match self.mask {
            ImageMask::Checkerboard { parity } => {
                let b = checkerboard(x, h, w, parity)?;
                let keep = b.affine(-1.0, 1.0)?;
                let out = self.net.forward(&self.net_input(&x.broadcast_mul(&b)?, context)?)?;
                let (y, ld) = self.transform(x, &out, inverse)?;
                let z = (x.broadcast_mul(&b)? + y.broadcast_mul(&keep)?)?;
                Ok((z, sum_per_sample(&ld.broadcast_mul(&keep)?)?))
            }
            ImageMask::Channel { parity } => {
                let (na, nb) = halves(c, parity);
                // Conditioning channels first in the parity-0 layout, last in parity 1.
                let (a_start, b_start) = if parity == 0 { (0, na) } else { (nb, 0) };
                let xa = x.narrow(1, a_start, na)?;
                let xb = x.narrow(1, b_start, nb)?;
                let out = self.net.forward(&self.net_input(&xa, context)?)?;
                let (zb, ld) = self.transform(&xb, &out, inverse)?;
                let z = if parity == 0 {
                    Tensor::cat(&[&xa, &zb], 1)?
                } else {
                    Tensor::cat(&[&zb, &xa], 1)?
                };
                Ok((z, sum_per_sample(&ld)?))
            }
        }
    }
}

impl Bijection for ImageTransformerCoupling {
    fn forward_and_ladj(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.apply(x, context, false)
    }

    fn inverse_and_ladj(&self, z: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.apply(z, context, true)
    }

    fn training_slice_rows(&self) -> Option<usize> {
        Some(crate::parallel::IMAGE_SLICE_ROWS)
    }
}
