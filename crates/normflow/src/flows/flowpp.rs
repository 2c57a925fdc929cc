//! The Flow++ image preset (Ho et al. 2019): logistic-mixture couplings with gated
//! convolutional conditioners in RealNVP's multi-scale layout, and variational dequantization.

use std::sync::Arc;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::image::ImageFlowSpec;
use crate::bijections::{
    ActNorm, Bijection, Chain, DequantizationSpec, ImageMask, ImageTransformerCoupling,
    ImageTransformerCouplingConfig, LogisticMixtureTransformer, LuLinear, MultiScaleBuilder,
    Transformer, VariationalDequantization,
};
use crate::nn::Activation;
use crate::params::Params;
use crate::{ensure_config, Result};

/// Hyperparameters of the `flowpp` preset.
///
/// Its data are rows of `C H W` integer pixel values. With `dequantization` set (the default
/// of the CLI) the model adds its own learned noise (see [`VariationalDequantization`]) and its
/// log-density of an integer row is a one-sample variational lower bound; without it, training
/// adds uniform noise like the other image presets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowppSpec {
    /// Shape, levels, steps, hidden channels, residual blocks, pixel levels, logit margin.
    pub image: ImageFlowSpec,
    /// Logistic mixture components `K` of every coupling.
    pub components: usize,
    /// The dequantizing flow `q(u | x)`; `None` = uniform dequantization.
    #[serde(default)]
    pub dequantization: Option<DequantizationSpec>,
}

impl FlowppSpec {
    /// Defaults for `(channels, height, width)` images: the image defaults, 8 components and a
    /// dequantizer of 2 couplings with 16 hidden channels and 1 block.
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        Self {
            image: ImageFlowSpec::new(channels, height, width),
            components: super::LOGISTIC_COMPONENTS,
            dequantization: Some(DequantizationSpec { steps: 2, hidden: 16, blocks: 1 }),
        }
    }

    /// Whether training must add uniform noise (no variational dequantizer).
    pub fn uniform_dequantization(&self) -> bool {
        self.dequantization.is_none()
    }

    /// Checks every hyperparameter, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        self.image.validate()?;
        LogisticMixtureTransformer::new(self.components)?;
        if let Some(d) = &self.dequantization {
            ensure_config!(d.steps >= 1, "dequantization steps", d.steps, "must be at least 1");
            ensure_config!(d.hidden >= 1, "dequantization hidden", d.hidden, "must be at least 1");
        }
        Ok(())
    }

    fn coupling(
        &self,
        params: &Params,
        channels: usize,
        mask: ImageMask,
        transformer: &Arc<dyn Transformer>,
    ) -> Result<Box<dyn Bijection>> {
        let config = ImageTransformerCouplingConfig {
            channels,
            mask,
            hidden: self.image.hidden,
            blocks: self.image.blocks,
            activation: Activation::Elu,
            context_channels: 0,
        };
        Ok(Box::new(ImageTransformerCoupling::new(params, &config, transformer.clone())?))
    }
}

/// Flow++ (Ho et al. 2019) on RealNVP's multi-scale layout: at each scale, `steps` steps of
/// `[ActNorm, checkerboard coupling]`; then (all scales but the last) a squeeze, `steps` steps
/// of `[ActNorm, invertible 1x1 convolution, channel coupling]` and a split with Glow's learned
/// prior. Every coupling is an [`ImageTransformerCoupling`] with the logistic-mixture
/// transformer and a gated convolutional conditioner. The variational dequantizer, when
/// configured, comes first; then the image presets' fixed pre-processing (scale to `[0, 1)`,
/// logit).
pub(super) fn build_flowpp(params: &Params, spec: &FlowppSpec) -> Result<Chain> {
    let image = &spec.image;
    let transformer: Arc<dyn Transformer> =
        Arc::new(LogisticMixtureTransformer::new(spec.components)?);
    let mut layers: Vec<Box<dyn Bijection>> = Vec::new();
    if let Some(d) = &spec.dequantization {
        let seed = params.store().with_rng(|r| r.next_u64());
        layers.push(Box::new(VariationalDequantization::new(
            &params.pp("dequantizer"),
            [image.channels, image.height, image.width],
            image.pixel_levels,
            d,
            transformer.clone(),
            seed,
        )?));
    }
    layers.extend(image.preprocessing(params)?);
    let mut flow = MultiScaleBuilder::new([image.channels, image.height, image.width])?;
    let mut n = 0usize;
    for level in 0..image.levels {
        for i in 0..image.steps {
            let p = params.pp("flow").pp(n);
            n += 1;
            let shape = flow.shape();
            let mask = ImageMask::Checkerboard { parity: i % 2 };
            flow = flow
                .step(Box::new(ActNorm::new(&p.pp("actnorm"), &shape)?))
                .step(spec.coupling(&p.pp("coupling"), shape[0], mask, &transformer)?);
        }
        if level + 1 == image.levels {
            break;
        }
        flow = flow.squeeze()?;
        for _ in 0..image.steps {
            let p = params.pp("flow").pp(n);
            n += 1;
            let shape = flow.shape();
            let mask = ImageMask::Channel { parity: 0 };
            flow = flow
                .step(Box::new(ActNorm::new(&p.pp("actnorm"), &shape)?))
                .step(Box::new(LuLinear::new(&p.pp("conv1x1"), shape[0])?))
                .step(spec.coupling(&p.pp("coupling"), shape[0], mask, &transformer)?);
        }
        flow = flow.split(&params.pp("split").pp(level), image.hidden)?;
    }
    layers.push(Box::new(flow.build()));
    Ok(Chain::new(layers))
}
