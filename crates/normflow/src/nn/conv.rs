//! Convolutional conditioner for image flows.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::Activation;
use crate::params::{Init, Params};
use crate::{ensure_config, Error, Result};

/// Shape of a [`ConvNet`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvNetConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Channels of the hidden feature maps.
    pub hidden: usize,
    /// Residual blocks between the first and the last convolution (0 = Glow's plain
    /// conv-act-conv-act-conv network).
    pub blocks: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Hidden non-linearity.
    pub activation: Activation,
}

/// A `k x k` convolution (k odd) with "same" padding: weight `(out, in, k, k)`, bias `(out,)`.
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    weight: Tensor,
    bias: Tensor,
}

impl Conv {
    /// `zero`: weight and bias start at zero (a network's last layer).
    pub(crate) fn new(
        params: &Params,
        inputs: usize,
        outputs: usize,
        kernel: usize,
        zero: bool,
    ) -> Result<Self> {
        let fan_in = inputs * kernel * kernel;
        let init = if zero { Init::Const(0.0) } else { Init::LinearDefault { fan_in } };
        let weight = params.param("weight", (outputs, inputs, kernel, kernel), init)?;
        let bias = params.param("bias", outputs, if zero { Init::Const(0.0) } else { init })?;
        Ok(Self { weight, bias })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        super::conv2d_same(x, &self.weight, &self.bias)
    }
}

/// The conditioner of image couplings (Dinh et al. 2017, Kingma & Dhariwal 2018):
///
/// ```text
/// h = conv3x3(x)
/// h = h + conv3x3(act(conv3x3(act(h))))      (`blocks` times, residual)
/// y = conv3x3(act(conv1x1(act(h))))          (the last conv starts at zero)
/// ```
///
/// All convolutions keep the spatial size ("same" padding). The zero last layer makes every
/// coupling start as the identity (Glow's "zero initialization").
///
/// # Shapes
/// `x: (B, in_channels, H, W) -> (B, out_channels, H, W)`.
#[derive(Debug, Clone)]
pub struct ConvNet {
    first: Conv,
    blocks: Vec<(Conv, Conv)>,
    middle: Conv,
    last: Conv,
    activation: Activation,
    in_channels: usize,
}

impl ConvNet {
    /// Creates the weights under `params` (`first.*`, `blocks.{i}.{a,b}.*`, `middle.*`, `last.*`).
    pub fn new(params: &Params, config: &ConvNetConfig) -> Result<Self> {
        for (name, v) in [
            ("in_channels", config.in_channels),
            ("hidden", config.hidden),
            ("out_channels", config.out_channels),
        ] {
            ensure_config!(v >= 1, name, v, "must be at least 1");
        }
        let h = config.hidden;
        let first = Conv::new(&params.pp("first"), config.in_channels, h, 3, false)?;
        let blocks = (0..config.blocks)
            .map(|i| {
                let p = params.pp("blocks").pp(i);
                Ok((Conv::new(&p.pp("a"), h, h, 3, false)?, Conv::new(&p.pp("b"), h, h, 3, false)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let middle = Conv::new(&params.pp("middle"), h, h, 1, false)?;
        let last = Conv::new(&params.pp("last"), h, config.out_channels, 3, true)?;
        Ok(Self {
            first,
            blocks,
            middle,
            last,
            activation: config.activation,
            in_channels: config.in_channels,
        })
    }

    /// Applies the network to `x (B, in_channels, H, W)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match x.dims() {
            [_, c, _, _] if *c == self.in_channels => {}
            dims => {
                return Err(Error::shape(
                    "convolutional conditioner input",
                    format!("(batch, {}, height, width)", self.in_channels),
                    dims,
                ))
            }
        }
        let act = |t: &Tensor| self.activation.apply(t);
        let mut h = self.first.forward(x)?;
        for (a, b) in &self.blocks {
            h = (&h + b.forward(&act(&a.forward(&act(&h)?)?)?)?)?;
        }
        self.last.forward(&act(&self.middle.forward(&act(&h)?)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;
    use candle_core::{DType, Device};

    #[test]
    fn keeps_the_spatial_size_and_starts_at_zero() -> Result<()> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
        let config = ConvNetConfig {
            in_channels: 2,
            hidden: 4,
            blocks: 1,
            out_channels: 6,
            activation: Activation::Relu,
        };
        let net = ConvNet::new(&store.root(), &config)?;
        let x = Tensor::ones((3, 2, 5, 4), DType::F64, &Device::Cpu)?;
        let y = net.forward(&x)?;
        assert_eq!(y.dims(), [3, 6, 5, 4]);
        assert_eq!(y.abs()?.max_all()?.to_scalar::<f64>()?, 0.0);
        store.perturb(0.1, 1)?;
        assert!(net.forward(&x)?.abs()?.max_all()?.to_scalar::<f64>()? > 0.0);
        let wrong = Tensor::ones((3, 3, 5, 4), DType::F64, &Device::Cpu)?;
        assert!(matches!(net.forward(&wrong), Err(Error::Shape { .. })));
        Ok(())
    }
}
