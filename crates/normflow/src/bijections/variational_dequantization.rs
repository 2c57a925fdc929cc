//! Variational dequantization (Ho et al. 2019, "Flow++", section 3.1): the noise added to
//! integer pixels comes from a learned conditional flow `q(u | x)` instead of `U[0, 1)`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::{
    sum_per_sample, Bijection, Chain, ImageMask, ImageTransformerCoupling,
    ImageTransformerCouplingConfig, Inverse, Sigmoid, Transformer, Unflatten,
};
use crate::nn::Activation;
use crate::params::{Init, Params};
use crate::{ensure_config, Error, Result};

/// Seeds of the dequantization noise differ from the model's other seeds by this tag.
const NOISE_TAG: u64 = 0x7661_7264_6571_7521;

/// Hyperparameters of the dequantizing flow `q(u | x)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DequantizationSpec {
    /// Coupling layers of `q` (checkerboard masks, alternating parity).
    pub steps: usize,
    /// Channels of their conditioners' hidden feature maps.
    pub hidden: usize,
    /// Gated residual blocks per conditioner.
    pub blocks: usize,
}

/// Variational dequantization of integer data as the first layer of a model: a layer whose
/// density-direction map adds learned noise, `x -> x + u` with `u ~ q(u | x)` on `[0, 1)^D`,
/// and whose "log-determinant" is `-log q(u | x)`. A flow after it then computes
///
/// ```text
/// log p(x + u) - log q(u | x),   u ~ q(. | x)
/// ```
///
/// a one-sample estimate of the variational lower bound on the log-probability of the integer
/// data `x` (its expectation over `q` is at most `log P(x)`, Ho et al. 2019, eq. 12); training
/// by maximum likelihood on integer rows therefore trains the model and `q` together, and
/// bits per dimension computed from it upper-bound the discrete model's. Uniform dequantization
/// is the special case `q = U[0, 1)^D`.
///
/// `q` is a conditional flow on Gaussian noise (`eps ~ N(0, I)` of the data's shape):
/// `steps` [`ImageTransformerCoupling`]s with checkerboard masks, each conditioned on the scaled
/// image `x / levels - 1/2` (appended to its network's input), then a sigmoid onto `(0, 1)`:
///
/// ```text
/// u = sigmoid(g(eps; x)),   log q(u | x) = log N(eps; 0, I) - log|det d u / d eps|
/// ```
///
/// Sampling `u` runs `g` in its explicit (forward) direction, so training never inverts a
/// coupling numerically.
///
/// **Noise.** The `eps` of training call `n` are drawn from ChaCha8 seeded with `(seed, n)`;
/// `n` is a buffer (`draws`) saved with the model, so a run resumed from a checkpoint draws the
/// same noise as an uninterrupted one. In evaluation mode the draws restart from a fixed stream
/// at every switch to evaluation, so a given data set always gets the same bound.
///
/// **Sampling direction.** `inverse` is the identity with log-det 0: samples of the model are
/// the continuous (dequantized) values `x + u`, as with uniform dequantization.
///
/// # Shapes
/// `x: (B, C H W)` rows of pixel values (integers in `[0, levels)`); ladj `(B,)`.
#[derive(Debug)]
pub struct VariationalDequantization {
    flow: Chain,
    features: usize,
    levels: f64,
    seed: u64,
    draws: Var,
    training: AtomicBool,
    eval_draws: AtomicU64,
}

impl VariationalDequantization {
    /// Builds `q` for `(C, H, W)` images with `levels` pixel values under `params` (tensors
    /// `flow.*` and the buffer `draws`); `transformer` is the couplings' element-wise map.
    pub fn new(
        params: &Params,
        shape: [usize; 3],
        levels: u32,
        spec: &DequantizationSpec,
        transformer: Arc<dyn Transformer>,
        seed: u64,
    ) -> Result<Self> {
        ensure_config!(spec.steps >= 1, "dequantization steps", spec.steps, "must be at least 1");
        ensure_config!(levels >= 2, "pixel_levels", levels, "at least 2");
        let flow = Self::noise_flow(&params.pp("flow"), shape, spec, transformer)?;
        Ok(Self {
            flow,
            features: shape.iter().product(),
            levels: f64::from(levels),
            seed,
            draws: params.buffer("draws", 1, Init::Const(0.0))?,
            training: AtomicBool::new(false),
            eval_draws: AtomicU64::new(0),
        })
    }

    /// The conditional flow `g` as a bijection `eps (B, D) -> g(eps; x) (B, D)` with context
    /// `(B, D)` (the scaled image): `[Unflatten, couplings, Flatten]`. The sigmoid onto `(0, 1)`
    /// comes after it.
    pub fn noise_flow(
        params: &Params,
        [c, h, w]: [usize; 3],
        spec: &DequantizationSpec,
        transformer: Arc<dyn Transformer>,
    ) -> Result<Chain> {
        let mut layers: Vec<Box<dyn Bijection>> = vec![Box::new(Unflatten::new(&[c, h, w])?)];
        for i in 0..spec.steps {
            let config = ImageTransformerCouplingConfig {
                channels: c,
                mask: ImageMask::Checkerboard { parity: i % 2 },
                hidden: spec.hidden,
                blocks: spec.blocks,
                activation: Activation::Elu,
                context_channels: c,
            };
            layers.push(Box::new(ImageTransformerCoupling::new(
                &params.pp(i),
                &config,
                transformer.clone(),
            )?));
        }
        layers.push(Box::new(Inverse::new(Unflatten::new(&[c, h, w])?)));
        Ok(Chain::new(layers))
    }

    /// The flow `g` (see [`noise_flow`](Self::noise_flow)).
    pub fn flow(&self) -> &Chain {
        &self.flow
    }

    /// The next noise stream: the training counter (incremented), or the evaluation one.
    fn next_stream(&self) -> Result<u64> {
        if self.training.load(Ordering::Relaxed) {
            let n = self.draws.as_tensor().to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
            let n = if n.is_finite() && n >= 0.0 { n.round() } else { 0.0 };
            self.draws.set(
                &Tensor::full(n + 1.0, 1, self.draws.device())?.to_dtype(self.draws.dtype())?,
            )?;
            Ok(n as u64)
        } else {
            Ok(u64::MAX - self.eval_draws.fetch_add(1, Ordering::Relaxed))
        }
    }

    /// `x (B, D)` integer pixels -> `(u, log q(u | x))`, `u (B, D)` in `(0, 1)`, `log q (B,)`.
    pub fn sample_noise(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let b = match *x.dims() {
            [b, d] if d == self.features => b,
            ref dims => {
                return Err(Error::shape(
                    "dequantized rows",
                    format!("(batch, {})", self.features),
                    dims,
                ))
            }
        };
        let mut rng = crate::random::rng_from_seed(self.seed ^ NOISE_TAG);
        rng.set_stream(self.next_stream()?);
        let eps =
            crate::random::standard_normal((b, self.features), x.dtype(), x.device(), &mut rng)?;
        let context = x.affine(1.0 / self.levels, -0.5)?;
        let (v, ladj_g) = self.flow.forward_and_ladj(&eps, Some(&context))?;
        let (u, ladj_sigmoid) = Sigmoid::new().forward_and_ladj(&v, None)?;
        let ladj = (ladj_g + ladj_sigmoid)?;
        let log_normal = (sum_per_sample(&eps.sqr()?)? * -0.5)?
            .affine(1.0, -0.5 * self.features as f64 * (2.0 * std::f64::consts::PI).ln())?;
        Ok((u, (log_normal - ladj)?))
    }
}

impl Bijection for VariationalDequantization {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (u, log_q) = self.sample_noise(x)?;
        Ok(((x + u)?, log_q.neg()?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        Ok((z.clone(), super::zero_ladj(z)?))
    }

    fn set_training(&self, training: bool) {
        if !training {
            self.eval_draws.store(0, Ordering::Relaxed);
        }
        self.training.store(training, Ordering::Relaxed);
        self.flow.set_training(training);
    }

    /// Each call draws its noise from the next stream of one counter.
    fn rows_independent(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bijections::LogisticMixtureTransformer;
    use crate::ParamStore;
    use candle_core::Device;

    fn build(store: &ParamStore) -> Result<VariationalDequantization> {
        let spec = DequantizationSpec { steps: 1, hidden: 4, blocks: 1 };
        let t: Arc<dyn Transformer> = Arc::new(LogisticMixtureTransformer::new(2)?);
        VariationalDequantization::new(&store.root(), [1, 2, 2], 256, &spec, t, 7)
    }

    fn noise(layer: &VariationalDequantization, x: &Tensor) -> Result<Vec<f64>> {
        Ok((layer.forward(x, None)? - x)?.flatten_all()?.to_vec1::<f64>()?)
    }

    /// Training call `n` draws the noise of stream `n`, `n` being the saved `draws` buffer: a
    /// layer restored with the counter at 1 draws what the original drew on its second call.
    /// Evaluation draws the same noise after every switch to evaluation mode.
    #[test]
    fn noise_depends_on_the_saved_counter_and_evaluation_is_fixed() -> Result<()> {
        let x = Tensor::new(&[[0f64, 17.0, 255.0, 128.0]], &Device::Cpu)?;
        let store = ParamStore::new(DType::F64, &Device::Cpu, 1);
        let layer = build(&store)?;
        layer.set_training(true);
        let (first, second) = (noise(&layer, &x)?, noise(&layer, &x)?);
        assert_ne!(first, second);
        assert!(first.iter().chain(&second).all(|u| *u > 0.0 && *u < 1.0));
        let other_store = ParamStore::new(DType::F64, &Device::Cpu, 1);
        let other = build(&other_store)?;
        other.draws.set(&Tensor::ones(1, DType::F64, &Device::Cpu)?)?;
        other.set_training(true);
        assert_eq!(noise(&other, &x)?, second);
        let count = layer.draws.as_tensor().to_vec1::<f64>()?[0];
        assert_eq!(count, 2.0);
        layer.set_training(false);
        let eval = noise(&layer, &x)?;
        layer.set_training(false);
        assert_eq!(noise(&layer, &x)?, eval);
        assert_eq!(layer.draws.as_tensor().to_vec1::<f64>()?[0], 2.0, "evaluation counts nothing");
        Ok(())
    }
}
