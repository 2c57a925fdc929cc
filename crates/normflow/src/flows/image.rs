//! Image presets: RealNVP's multi-scale model and Glow, on 8-bit images given as rows of
//! pixel values (e.g. 784 columns for MNIST).

use serde::{Deserialize, Serialize};

use super::base::BaseSpec;
use crate::bijections::{
    ActNorm, Bijection, Chain, ImageAffineCoupling, ImageCouplingConfig, ImageMask, Logit,
    LuLinear, MultiScaleBuilder, Unflatten, IMAGE_LOG_SCALE_BOUND, LOG_SCALE_BOUND,
};
use crate::nn::Activation;
use crate::params::Params;
use crate::preprocess::Standardization;
use crate::{ensure_config, Result};

/// Hyperparameters of the image presets (`realnvp-image`, `glow`).
///
/// The model's data are rows of `C H W` pixel values in `[0, levels)` (dequantized: integer
/// pixels plus `U[0, 1)` noise, see `TrainConfig::uniform_dequantization`). Inside the flow the
/// rows are reshaped to `(C, H, W)`, scaled to `[0, 1)` (log-det `-D ln levels`, so densities
/// are per pixel unit and bits per dimension are `-log p / (D ln 2)`), passed through RealNVP's
/// logit with margin `logit_alpha`, then through the multi-scale flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageFlowSpec {
    /// Channels `C`.
    pub channels: usize,
    /// Height `H`.
    pub height: usize,
    /// Width `W`.
    pub width: usize,
    /// Scales `L`: each but the last squeezes, runs its steps and factors out half the
    /// channels. `H` and `W` must stay even for every squeeze (28x28: at most 2 squeezes).
    pub levels: usize,
    /// Couplings per stage: Glow's `K` steps per level; RealNVP's couplings before and after
    /// each squeeze (3 in the paper; the last scale gets one more).
    pub steps: usize,
    /// Channels of the conditioners' hidden feature maps.
    pub hidden: usize,
    /// Residual blocks per conditioner (RealNVP uses residual networks; Glow none).
    #[serde(default)]
    pub blocks: usize,
    /// Pixel levels (256 for 8-bit images).
    #[serde(default = "default_levels")]
    pub pixel_levels: u32,
    /// Margin of the logit pre-processing, in `[0, 0.5)`.
    #[serde(default = "default_alpha")]
    pub logit_alpha: f64,
    /// Base distribution (standard normal; the learned priors of the split halves are inside
    /// the flow).
    #[serde(default)]
    pub base: BaseSpec,
    /// Bound of the affine couplings' log-scales ([`ImageCouplingConfig::log_scale_bound`]):
    /// [`IMAGE_LOG_SCALE_BOUND`] for new models. Model files written before this field existed
    /// used the tabular flows' bound, [`LOG_SCALE_BOUND`], and load with it.
    #[serde(default = "legacy_log_scale_bound")]
    pub log_scale_bound: f64,
}

fn legacy_log_scale_bound() -> f64 {
    LOG_SCALE_BOUND
}

fn default_levels() -> u32 {
    256
}

fn default_alpha() -> f64 {
    0.05
}

impl ImageFlowSpec {
    /// Defaults for `(channels, height, width)` images: 2 levels, 4 steps, 64 hidden channels,
    /// 1 residual block, 8-bit pixels, logit margin 0.05.
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
            levels: 2,
            steps: 4,
            hidden: 64,
            blocks: 1,
            pixel_levels: 256,
            logit_alpha: 0.05,
            base: BaseSpec::StandardNormal,
            log_scale_bound: IMAGE_LOG_SCALE_BOUND,
        }
    }

    /// Number of pixel values per image, `C H W`.
    pub fn features(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Checks every hyperparameter, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("channels", self.channels),
            ("height", self.height),
            ("width", self.width),
            ("levels", self.levels),
            ("steps", self.steps),
            ("hidden", self.hidden),
        ] {
            ensure_config!(v >= 1, name, v, "must be at least 1");
        }
        ensure_config!(self.pixel_levels >= 2, "pixel_levels", self.pixel_levels, "at least 2");
        crate::bijections::image_coupling::check_log_scale_bound(self.log_scale_bound)?;
        ensure_config!(
            (0.0..0.5).contains(&self.logit_alpha),
            "logit_alpha",
            self.logit_alpha,
            "must be in [0, 0.5)"
        );
        let squeezes = self.levels - 1;
        let fits = |n: usize| n % (1 << squeezes.min(30)) == 0;
        ensure_config!(
            squeezes < 30 && fits(self.height) && fits(self.width),
            "levels",
            self.levels,
            format!(
                "{} levels squeeze {squeezes} times, which needs height and width divisible by \
                 2^{squeezes} (the images are {}x{})",
                self.levels, self.height, self.width
            )
        );
        ensure_config!(
            matches!(self.base, BaseSpec::StandardNormal),
            "base",
            format!("{:?}", self.base),
            "image flows use a standard normal base (their split priors are learned)"
        );
        Ok(())
    }

    fn coupling(
        &self,
        params: &Params,
        channels: usize,
        mask: ImageMask,
    ) -> Result<Box<dyn Bijection>> {
        let config = ImageCouplingConfig {
            channels,
            mask,
            hidden: self.hidden,
            blocks: self.blocks,
            activation: Activation::Relu,
            log_scale_bound: self.log_scale_bound,
        };
        Ok(Box::new(ImageAffineCoupling::new(params, &config)?))
    }

    /// The fixed pre-processing: rows to images, pixel units to `[0, 1)`, logit.
    pub(super) fn preprocessing(&self, params: &Params) -> Result<Vec<Box<dyn Bijection>>> {
        let d = self.features();
        let scale =
            Standardization { shift: vec![0.0; d], scale: vec![f64::from(self.pixel_levels); d] };
        Ok(vec![
            Box::new(scale.bijection(params.dtype(), params.device())?),
            Box::new(Unflatten::new(&[self.channels, self.height, self.width])?),
            Box::new(Logit::new(self.logit_alpha)?),
        ])
    }
}

/// RealNVP's multi-scale model (Dinh et al. 2017, section 3.6): at each scale but the last,
/// `steps` checkerboard couplings, a squeeze, `steps` channel couplings and a split; the last
/// scale has `steps + 1` checkerboard couplings. ActNorm (in place of the paper's batch
/// normalization) follows every coupling; masks alternate their parity.
pub(super) fn build_realnvp(params: &Params, spec: &ImageFlowSpec) -> Result<Chain> {
    let mut layers = spec.preprocessing(params)?;
    let mut flow = MultiScaleBuilder::new([spec.channels, spec.height, spec.width])?;
    let mut n = 0usize;
    let mut add = |flow: MultiScaleBuilder, mask: ImageMask| -> Result<MultiScaleBuilder> {
        let p = params.pp("flow").pp(n);
        n += 1;
        let c = flow.shape()[0];
        let coupling = spec.coupling(&p.pp("coupling"), c, mask)?;
        let shape = flow.shape();
        Ok(flow.step(coupling).step(Box::new(ActNorm::new(&p.pp("actnorm"), &shape)?)))
    };
    for level in 0..spec.levels {
        let last = level + 1 == spec.levels;
        let checkerboards = if last { spec.steps + 1 } else { spec.steps };
        for i in 0..checkerboards {
            flow = add(flow, ImageMask::Checkerboard { parity: i % 2 })?;
        }
        if last {
            break;
        }
        flow = flow.squeeze()?;
        for i in 0..spec.steps {
            flow = add(flow, ImageMask::Channel { parity: i % 2 })?;
        }
        flow = flow.split(&params.pp("split").pp(level), spec.hidden)?;
    }
    layers.push(Box::new(flow.build()));
    Ok(Chain::new(layers))
}

/// Glow (Kingma & Dhariwal 2018): at each level, a squeeze and `steps` steps of
/// `[ActNorm, invertible 1x1 convolution (LU), affine coupling on the channel halves]`, then a
/// split with the learned prior (all levels but the last).
pub(super) fn build_glow(params: &Params, spec: &ImageFlowSpec) -> Result<Chain> {
    let mut layers = spec.preprocessing(params)?;
    let mut flow = MultiScaleBuilder::new([spec.channels, spec.height, spec.width])?;
    for level in 0..spec.levels {
        // The last level squeezes only if the image allows it (28x28 -> 14 -> 7 stops there).
        let [_, h, w] = flow.shape();
        if level + 1 < spec.levels || (h % 2 == 0 && w % 2 == 0) {
            flow = flow.squeeze()?;
        }
        for k in 0..spec.steps {
            let p = params.pp("flow").pp(level).pp(k);
            let shape = flow.shape();
            let c = shape[0];
            flow = flow
                .step(Box::new(ActNorm::new(&p.pp("actnorm"), &shape)?))
                .step(Box::new(LuLinear::new(&p.pp("conv1x1"), c)?))
                .step(spec.coupling(&p.pp("coupling"), c, ImageMask::Channel { parity: 0 })?);
        }
        if level + 1 < spec.levels {
            flow = flow.split(&params.pp("split").pp(level), spec.hidden)?;
        }
    }
    layers.push(Box::new(flow.build()));
    Ok(Chain::new(layers))
}

/// Bits per dimension of a log-likelihood of `dims`-dimensional data in pixel units:
/// `-log p(x) / (dims ln 2)`.
///
/// With uniform dequantization, `log p(x + u)` averaged over `u` lower-bounds the log
/// probability of the integer image (Theis et al. 2016), so this upper-bounds the discrete
/// model's bits per dimension; the image presets' density is already per pixel unit (their
/// `1 / levels` scaling counts in the log-det), so no `ln 256` term is added here.
pub fn bits_per_dim(log_prob: f64, dims: usize) -> f64 {
    -log_prob / (dims as f64 * std::f64::consts::LN_2)
}
