//! The gated residual convolutional conditioner of Flow++ (Ho et al. 2019, section 3.3).

use candle_core::Tensor;

use super::conv::Conv;
use super::{Activation, ConvNetConfig};
use crate::params::Params;
use crate::{ensure_config, Error, Result};

/// Flow++'s conditioner: residual blocks whose update passes through a gated linear unit,
///
/// ```text
/// h = conv3x3(x)
/// per block:  t = conv3x3(act(h)),  (g_a, g_b) = conv3x3(act(t)),  h = h + g_a * sigmoid(g_b)
/// y = conv3x3(act(h))        (the last convolution starts at zero)
/// ```
///
/// The gate lets each block start close to a pass-through and learn how much of its update to
/// let in. Differences from the paper: no layer normalization inside the blocks and no
/// self-attention (both optional there; the flows add ActNorm between couplings instead), and
/// ELU in place of concatenated ELU. All convolutions keep the spatial size.
///
/// # Shapes
/// `x: (B, in_channels, H, W) -> (B, out_channels, H, W)`.
#[derive(Debug, Clone)]
pub struct GatedConvNet {
    first: Conv,
    blocks: Vec<(Conv, Conv)>,
    last: Conv,
    activation: Activation,
    in_channels: usize,
}

impl GatedConvNet {
    /// Creates the weights under `params` (`first.*`, `blocks.{i}.{a,gate}.*`, `last.*`).
    /// The shape is [`ConvNet`](super::ConvNet)'s: `blocks` counts gated residual blocks here
    /// (0 = `conv -> act -> conv`).
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
                let a = Conv::new(&p.pp("a"), h, h, 3, false)?;
                let gate = Conv::new(&p.pp("gate"), h, 2 * h, 3, false)?;
                Ok((a, gate))
            })
            .collect::<Result<Vec<_>>>()?;
        let last = Conv::new(&params.pp("last"), h, config.out_channels, 3, true)?;
        Ok(Self {
            first,
            blocks,
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
                    "gated convolutional conditioner input",
                    format!("(batch, {}, height, width)", self.in_channels),
                    dims,
                ))
            }
        }
        let act = |t: &Tensor| self.activation.apply(t);
        let mut h = self.first.forward(x)?;
        for (a, gate) in &self.blocks {
            let g = gate.forward(&act(&a.forward(&act(&h)?)?)?)?;
            let hidden = h.dim(1)?;
            let update = (g.narrow(1, 0, hidden)?
                * candle_nn::ops::sigmoid(&g.narrow(1, hidden, hidden)?)?)?;
            h = (h + update)?;
        }
        self.last.forward(&act(&h)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;
    use candle_core::{DType, Device};

    #[test]
    fn keeps_the_spatial_size_starts_at_zero_and_checks_channels() -> Result<()> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
        let config = ConvNetConfig {
            in_channels: 2,
            hidden: 4,
            blocks: 2,
            out_channels: 6,
            activation: Activation::Elu,
        };
        let net = GatedConvNet::new(&store.root(), &config)?;
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
