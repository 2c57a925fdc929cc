//! The multi-scale architecture of RealNVP and Glow: squeeze, steps of flow, and factoring out
//! half of the channels at each scale, with Glow's learned prior for the factored-out half.

use candle_core::Tensor;

use super::affine_params::log_scale;
use super::{sum_per_sample, Bijection, Squeeze};
use crate::nn::{Activation, ConvNet, ConvNetConfig};
use crate::parallel::IMAGE_SLICE_ROWS;
use crate::params::Params;
use crate::{Error, Result};

/// One stage of a [`MultiScale`] flow.
#[derive(Debug)]
enum Stage {
    /// A shape-preserving bijection on the current `(C, H, W)`.
    Step(Box<dyn Bijection>),
    /// `(C, H, W) -> (4C, H/2, W/2)`.
    Squeeze,
    /// Factor out the last `C - C/2` channels, normalized by the learned prior.
    Split(SplitPrior),
}

/// Glow's learned prior for a factored-out half (Kingma & Dhariwal 2018, section 3.3):
/// `p(z_out | h) = N(mu(h), exp(s(h))^2)` with `(mu, raw) = NN(h)` on the kept half `h`,
/// written as the bijection `z_out' = (z_out - mu) exp(-s)` onto a standard normal (ladj
/// `-sum(s)`). The network's last layer is zero: the prior starts as a standard normal.
#[derive(Debug)]
pub struct SplitPrior {
    net: ConvNet,
    kept: usize,
    out: usize,
}

impl SplitPrior {
    /// A prior for splitting `channels` into `channels / 2` kept and the rest factored out.
    pub fn new(params: &Params, channels: usize, hidden: usize) -> Result<Self> {
        if channels < 2 {
            return Err(Error::config("channels", channels, "a split needs at least 2 channels"));
        }
        let (kept, out) = (channels / 2, channels - channels / 2);
        let net = ConvNet::new(
            &params.pp("prior"),
            &ConvNetConfig {
                in_channels: kept,
                hidden,
                blocks: 0,
                out_channels: 2 * out,
                activation: Activation::Relu,
            },
        )?;
        Ok(Self { net, kept, out })
    }

    /// `(mu, s)` of the factored-out half given the kept one.
    fn params(&self, kept: &Tensor) -> Result<(Tensor, Tensor)> {
        let p = self.net.forward(kept)?;
        Ok((p.narrow(1, 0, self.out)?, log_scale(&p.narrow(1, self.out, self.out)?)?))
    }
}

/// A multi-scale flow on images, `(B, C, H, W) -> (B, C H W)`: a sequence of steps, squeezes
/// and splits (Dinh et al. 2017, section 3.6; Kingma & Dhariwal 2018). At each split the
/// factored-out channels leave the flow (normalized by their learned prior) and the rest go
/// on; the latent is the concatenation of every factored-out part and the final state,
/// flattened, so the base is a standard normal on `R^{C H W}`.
///
/// Build with [`MultiScaleBuilder`], which tracks the shape through the stages.
#[derive(Debug)]
pub struct MultiScale {
    stages: Vec<Stage>,
    input: [usize; 3],
    /// Shapes `(C, H, W)` of each factored-out part, in order, then of the final state.
    latent_shapes: Vec<[usize; 3]>,
}

/// Builds a [`MultiScale`] flow stage by stage, tracking the current image shape.
#[derive(Debug)]
pub struct MultiScaleBuilder {
    stages: Vec<Stage>,
    input: [usize; 3],
    shape: [usize; 3],
    latent_shapes: Vec<[usize; 3]>,
}

impl MultiScaleBuilder {
    /// Starts a flow on `(channels, height, width)` images.
    pub fn new(input: [usize; 3]) -> Result<Self> {
        if input.contains(&0) {
            return Err(Error::config("image shape", format!("{input:?}"), "needs non-zero sizes"));
        }
        Ok(Self { stages: Vec::new(), input, shape: input, latent_shapes: Vec::new() })
    }

    /// The current `(C, H, W)`.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Adds a shape-preserving step on the current shape.
    pub fn step(mut self, step: Box<dyn Bijection>) -> Self {
        self.stages.push(Stage::Step(step));
        self
    }

    /// Adds a squeeze; the height and width must be even.
    pub fn squeeze(mut self) -> Result<Self> {
        let [c, h, w] = self.shape;
        if h % 2 != 0 || w % 2 != 0 {
            return Err(Error::config(
                "levels",
                format!("{h}x{w}"),
                "a squeeze needs an even height and width: use fewer levels",
            ));
        }
        self.shape = [4 * c, h / 2, w / 2];
        self.stages.push(Stage::Squeeze);
        Ok(self)
    }

    /// Factors out the last `C - C/2` channels with a learned prior (tensors under `params`).
    pub fn split(mut self, params: &Params, hidden: usize) -> Result<Self> {
        let [c, h, w] = self.shape;
        let prior = SplitPrior::new(params, c, hidden)?;
        self.latent_shapes.push([prior.out, h, w]);
        self.shape = [prior.kept, h, w];
        self.stages.push(Stage::Split(prior));
        Ok(self)
    }

    /// The flow.
    pub fn build(mut self) -> MultiScale {
        self.latent_shapes.push(self.shape);
        MultiScale { stages: self.stages, input: self.input, latent_shapes: self.latent_shapes }
    }
}

impl MultiScale {
    fn check_input(&self, x: &Tensor) -> Result<usize> {
        match *x.dims() {
            [b, c, h, w] if [c, h, w] == self.input => Ok(b),
            ref dims => Err(Error::shape(
                "multi-scale flow input",
                format!("(batch, {}, {}, {})", self.input[0], self.input[1], self.input[2]),
                dims,
            )),
        }
    }

    /// The image shape `(C, H, W)` the flow takes.
    pub fn input_shape(&self) -> [usize; 3] {
        self.input
    }
}

impl Bijection for MultiScale {
    fn forward_and_ladj(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let batch = self.check_input(x)?;
        let mut h = x.clone();
        let mut ladj = super::zero_ladj(x)?;
        let mut parts = Vec::with_capacity(self.latent_shapes.len());
        for stage in &self.stages {
            match stage {
                Stage::Step(step) => {
                    let (y, l) = step.forward_and_ladj(&h, context)?;
                    h = y;
                    ladj = (ladj + l)?;
                }
                Stage::Squeeze => h = Squeeze.forward(&h, None)?,
                Stage::Split(prior) => {
                    let kept = h.narrow(1, 0, prior.kept)?;
                    let out = h.narrow(1, prior.kept, prior.out)?;
                    let (mu, s) = prior.params(&kept)?;
                    parts.push(((out - mu)? * s.neg()?.exp()?)?.reshape((batch, ()))?);
                    ladj = (ladj - sum_per_sample(&s)?)?;
                    h = kept;
                }
            }
        }
        parts.push(h.reshape((batch, ()))?);
        Ok((Tensor::cat(&parts, 1)?, ladj))
    }

    fn inverse_and_ladj(&self, z: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let d: usize = self.input.iter().product();
        let batch = match *z.dims() {
            [b, n] if n == d => b,
            ref dims => {
                return Err(Error::shape("multi-scale latent", format!("(batch, {d})"), dims))
            }
        };
        // Cut the latent into its parts, in the order the forward pass produced them.
        let mut parts = Vec::with_capacity(self.latent_shapes.len());
        let mut offset = 0;
        for &[c, h, w] in &self.latent_shapes {
            parts.push(z.narrow(1, offset, c * h * w)?.reshape((batch, c, h, w))?);
            offset += c * h * w;
        }
        let mut h = parts.pop().ok_or_else(|| Error::Numerical("empty multi-scale flow".into()))?;
        let mut ladj = super::zero_ladj(z)?;
        for stage in self.stages.iter().rev() {
            match stage {
                Stage::Step(step) => {
                    let (x, l) = step.inverse_and_ladj(&h, context)?;
                    h = x;
                    ladj = (ladj + l)?;
                }
                Stage::Squeeze => h = Squeeze.inverse(&h, None)?,
                Stage::Split(prior) => {
                    let normalized = parts.pop().ok_or_else(|| {
                        Error::Numerical("multi-scale latent parts out of step".into())
                    })?;
                    let (mu, s) = prior.params(&h)?;
                    let out = ((normalized * s.exp()?)? + mu)?;
                    ladj = (ladj + sum_per_sample(&s)?)?;
                    h = Tensor::cat(&[&h, &out], 1)?;
                }
            }
        }
        Ok((h, ladj))
    }

    fn set_training(&self, training: bool) {
        for stage in &self.stages {
            if let Stage::Step(step) = stage {
                step.set_training(training);
            }
        }
    }

    fn rows_independent(&self) -> bool {
        self.stages.iter().all(|stage| match stage {
            Stage::Step(step) => step.rows_independent(),
            _ => true,
        })
    }

    // The split priors are convolutional too.
    fn training_slice_rows(&self) -> Option<usize> {
        let steps = self.stages.iter().filter_map(|stage| match stage {
            Stage::Step(step) => step.training_slice_rows(),
            _ => None,
        });
        Some(steps.fold(IMAGE_SLICE_ROWS, usize::min))
    }
}
