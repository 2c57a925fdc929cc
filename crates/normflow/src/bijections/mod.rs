//! Bijections: invertible, differentiable maps with a tractable log-determinant.
//!
//! # Direction convention
//! `forward` maps data `x` to latent `z` (the normalizing direction) and `inverse` maps `z` back
//! to `x` (the sampling direction). Every call returns the log absolute determinant of the
//! Jacobian of the map it computed ("ladj"), one value per sample:
//!
//! ```text
//! forward_and_ladj(x) = (z, log|det dz/dx|)      inverse_and_ladj(z) = (x, log|det dx/dz|)
//! log p(x) = log q0(forward(x)) + log|det dz/dx|
//! ```
//!
//! # Shapes
//! Inputs are `(batch, event...)`: `(B, D)` for vectors, `(B, C, H, W)` for images. Outputs have the
//! input's shape (unless a layer documents otherwise, e.g. squeeze) and ladj is `(B,)`. A context,
//! when given, is `(B, context_features)`.

mod actnorm;
mod affine_op;
mod affine_params;
mod autoregressive;
mod batch_norm;
mod bernstein;
mod bnaf;
mod chain;
pub mod cnf;
mod coupling;
mod cubic_spline;
mod deep_sigmoid;
mod elementwise_affine;
mod householder;
pub(crate) mod image_coupling;
mod image_transformer_coupling;
mod inverse;
mod linear_spline;
mod log_space;
mod logistic_mixture;
mod lu_linear;
mod monotone_cubic;
mod multiscale;
mod param_batch;
mod permutation;
mod planar;
mod quadratic_spline;
mod radial;
mod rq_fused;
mod rq_kernel;
mod rq_spline;
mod sigmoid;
mod sos;
mod spline_knots;
#[cfg(test)]
mod spline_test_support;
mod squeeze;
mod support;
mod sylvester;
mod transformer;
mod transformer_autoregressive;
mod transformer_coupling;
mod variational_dequantization;

pub use actnorm::ActNorm;
pub use affine_params::LOG_SCALE_BOUND;
pub use autoregressive::{MafLayerConfig, MaskedAffineAutoregressive};
pub use batch_norm::BatchNorm;
pub use bernstein::BernsteinTransformer;
pub use bnaf::{Bnaf, BnafConfig};
pub use chain::Chain;
pub use coupling::{alternating_mask, half_mask, AdditiveCoupling, AffineCoupling, CouplingConfig};
pub use cubic_spline::CubicSpline;
pub use deep_sigmoid::DeepSigmoidTransformer;
pub use elementwise_affine::ElementwiseAffine;
pub use householder::{householder_columns, householder_reflect, Householder};
pub use image_coupling::{
    ImageAffineCoupling, ImageCouplingConfig, ImageMask, IMAGE_LOG_SCALE_BOUND,
};
pub use image_transformer_coupling::{ImageTransformerCoupling, ImageTransformerCouplingConfig};
pub use inverse::Inverse;
pub use linear_spline::LinearSpline;
pub use logistic_mixture::{LogisticMixtureTransformer, MAX_COMPONENTS};
pub use lu_linear::LuLinear;
pub use multiscale::{MultiScale, MultiScaleBuilder, SplitPrior};
pub use permutation::Permutation;
pub use planar::{Planar, PlanarParams};
pub use quadratic_spline::QuadraticSpline;
pub use radial::{Radial, RadialParams};
pub use rq_spline::{CircularRationalQuadraticSpline, RationalQuadraticSpline, RqSplineConfig};
pub use sigmoid::{Logit, Sigmoid};
pub use sos::{SosTransformer, SOS_BOUND};
pub use squeeze::{Squeeze, Unflatten};
pub use support::{Support, SupportMap};
pub use sylvester::{
    orthonormal_columns, Sylvester, SylvesterBasis, SylvesterConfig, SylvesterParams,
};
pub use transformer::{
    check_raw_shape, raw_param, AffineTransformer, ElementwiseTransformer, Transformer,
};
pub use transformer_autoregressive::TransformerAutoregressive;
pub use transformer_coupling::TransformerCoupling;
pub use variational_dequantization::{DequantizationSpec, VariationalDequantization};

use candle_core::Tensor;

use crate::Result;

/// An invertible map with its log absolute Jacobian determinant, optionally conditioned on a
/// context.
///
/// See the [module docs](self) for the direction convention and shapes.
pub trait Bijection: Send + Sync + std::fmt::Debug {
    /// `x (B, ...) -> (z, log|det dz/dx| (B,))`.
    fn forward_and_ladj(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)>;

    /// `z (B, ...) -> (x, log|det dx/dz| (B,))`; the ladj is minus the forward one at `x`.
    fn inverse_and_ladj(&self, z: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)>;

    /// `x -> z`, without the log-determinant. Override when that is cheaper.
    fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.forward_and_ladj(x, context)?.0)
    }

    /// `z -> x`, without the log-determinant. Override when that is cheaper.
    fn inverse(&self, z: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.inverse_and_ladj(z, context)?.0)
    }

    /// Switches between training behaviour (batch statistics, data-dependent initialization) and
    /// evaluation behaviour. Layers without such a difference ignore it; containers pass it on.
    fn set_training(&self, _training: bool) {}

    /// Whether a call on a batch may be cut into row slices evaluated separately (and
    /// concurrently, see [`crate::parallel`]) with the same per-row results and no other effect.
    ///
    /// True for almost every layer: each row's output and log-determinant depend on that row,
    /// its context row and the parameters only. False for a layer that couples rows (batch
    /// statistics in training mode, a data-dependent initialization still to run) or that keeps
    /// state from its last call (a regularizer, solver counts, a noise stream). Containers:
    /// true when all of their layers are. [`crate::testing::check_bijection`] verifies the
    /// promise on split batches.
    fn rows_independent(&self) -> bool {
        true
    }

    /// Rows per training slice this layer asks for, when its rows are independent: `None` for
    /// the default ([`crate::parallel::TRAINING_SLICE_ROWS`], right for MLP-conditioned layers,
    /// whose per-slice cost — gathering and differentiating every weight — needs a few hundred
    /// rows to amortize); fewer for layers whose rows are expensive (convolutions over a whole
    /// image, [`crate::parallel::IMAGE_SLICE_ROWS`]). Containers: the fewest their layers ask for.
    /// Depends on the architecture only, so the slicing (and the rounding of the summed
    /// gradients) never depends on the machine.
    fn training_slice_rows(&self) -> Option<usize> {
        None
    }

    /// The autoregressive order this layer promises, if any.
    ///
    /// `Some(order)` promises that output feature `order[i]` depends only on input features
    /// `order[0..=i]` (flattened per sample), i.e. the Jacobian is lower triangular once rows and
    /// columns are permuted by `order`. [`crate::testing::check_bijection`] verifies the promise.
    fn jacobian_order(&self) -> Option<Vec<usize>> {
        None
    }

    /// A scalar regularization term computed by this layer's last `forward_and_ladj` call (in
    /// the graph of that call), for the training loss `-mean log p + auxiliary`; `None` when
    /// that call computed none. Continuous flows report RNODE's kinetic-energy and Jacobian
    /// penalties here (in training mode). Containers sum their layers'.
    fn auxiliary_loss(&self) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// Function evaluations of the numerical solver behind this layer's last call, for layers
    /// that integrate an ODE (`None` for closed-form layers). Containers sum their layers'.
    fn function_evaluations(&self) -> Option<crate::ode::FunctionEvaluations> {
        None
    }
}

/// Sums optional scalar terms, `None` when there are none.
pub(crate) fn sum_optional(
    terms: impl IntoIterator<Item = Result<Option<Tensor>>>,
) -> Result<Option<Tensor>> {
    let mut total: Option<Tensor> = None;
    for term in terms {
        if let Some(t) = term? {
            total = Some(match total {
                Some(acc) => (acc + t)?,
                None => t,
            });
        }
    }
    Ok(total)
}

impl<B: Bijection + ?Sized> Bijection for Box<B> {
    fn forward_and_ladj(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        (**self).forward_and_ladj(x, context)
    }
    fn inverse_and_ladj(&self, z: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        (**self).inverse_and_ladj(z, context)
    }
    fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        (**self).forward(x, context)
    }
    fn inverse(&self, z: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        (**self).inverse(z, context)
    }
    fn set_training(&self, training: bool) {
        (**self).set_training(training)
    }
    fn rows_independent(&self) -> bool {
        (**self).rows_independent()
    }
    fn training_slice_rows(&self) -> Option<usize> {
        (**self).training_slice_rows()
    }
    fn jacobian_order(&self) -> Option<Vec<usize>> {
        (**self).jacobian_order()
    }
    fn auxiliary_loss(&self) -> Result<Option<Tensor>> {
        (**self).auxiliary_loss()
    }
    fn function_evaluations(&self) -> Option<crate::ode::FunctionEvaluations> {
        (**self).function_evaluations()
    }
}

/// Sums a per-element log-derivative over every axis but the batch axis: `(B, ...) -> (B,)`.
pub fn sum_per_sample(t: &Tensor) -> Result<Tensor> {
    if t.rank() == 1 {
        return Ok(t.clone());
    }
    Ok(t.flatten_from(1)?.sum(1)?)
}

/// A `(B,)` tensor of zeros matching the batch size, dtype and device of `x`.
pub fn zero_ladj(x: &Tensor) -> Result<Tensor> {
    Ok(Tensor::zeros(x.dim(0)?, x.dtype(), x.device())?)
}

/// Test support shared by the layers' own unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use candle_core::{DType, Device};

    use super::Bijection;
    use crate::{ParamStore, Params, Result};

    /// Builds a layer in f32 on `(6, 3, 2, 2)` images, runs one training-mode pass (data-dependent
    /// initialization, batch statistics), perturbs its parameters, and checks in evaluation mode
    /// that it round-trips with `inverse ladj = -forward ladj` to f32 precision.
    pub(crate) fn assert_round_trips_in_f32<B: Bijection>(
        build: impl FnOnce(&Params) -> Result<B>,
    ) -> Result<()> {
        let store = ParamStore::new(DType::F32, &Device::Cpu, 2);
        let layer = build(&store.root())?;
        layer.set_training(true);
        let mut rng = crate::random::rng_from_seed(0);
        let x = crate::random::standard_normal((6, 3, 2, 2), DType::F32, &Device::Cpu, &mut rng)?;
        layer.forward(&x, None)?;
        store.perturb(0.3, 1)?;
        layer.set_training(false);
        let (z, ladj) = layer.forward_and_ladj(&x, None)?;
        let (back, inv_ladj) = layer.inverse_and_ladj(&z, None)?;
        assert_eq!((z.dtype(), ladj.dims()), (DType::F32, &[6][..]));
        let err = (back - &x)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let ladj_err = (ladj + inv_ladj)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 1e-5 && ladj_err < 1e-5, "{err} {ladj_err}");
        Ok(())
    }
}
