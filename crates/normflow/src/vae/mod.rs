//! Variational autoencoders with flow posteriors.
//!
//! A VAE (Kingma & Welling 2014) models images `x` through a latent `z ~ N(0, I)` and a decoder
//! `p(x | z)` (Bernoulli pixels for binarized images, Gaussian for dequantized grey levels),
//! trained on the ELBO with an amortized posterior `q(z | x)`: a diagonal Gaussian from the
//! encoder followed by a flow ([`PosteriorSpec`]): amortized planar and radial (Rezende &
//! Mohamed 2015) or Sylvester (van den Berg et al. 2018) maps whose parameters the encoder
//! outputs, or IAF (Kingma et al. 2016) / spline autoregressive layers conditioned on an
//! encoder context. Test log-likelihoods are importance-weighted bounds with `K` samples
//! ([`Vae::bounds`], batched so that `K` in the thousands fits), the bound pieces shared with
//! other latent models living in [`crate::latent`].
//!
//! Files: [`spec`] (serde description, CLI parsing), [`posterior`] (encoder, sampling and
//! `log q`), [`decoder`] (likelihoods), [`model`] ([`Vae`], ELBO, bounds), [`fit`] (training
//! with KL warm-up), [`io`] (model directories).

pub mod decoder;
pub mod fit;
pub mod io;
pub mod model;
pub mod posterior;
pub mod spec;
#[cfg(test)]
mod tests;

pub use fit::{fit, VaeEpoch, VaeFitReport, VaeTrainConfig};
pub use io::{read_vae_file, VaeFile};
pub use model::{Bounds, LogWeights, Vae, PIXEL_LEVELS};
pub use spec::{Likelihood, PosteriorSpec, VaeSpec};
