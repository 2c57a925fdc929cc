//! [`Vae`]: encoder, posterior flow, decoder and prior `N(0, I)`, with the ELBO and the
//! importance-weighted bound.

use candle_core::{DType, Device, Tensor, D};
use rand::RngCore;

use super::decoder::Decoder;
use super::posterior::Posterior;
use super::spec::{Likelihood, VaeSpec};
use crate::distributions::HALF_LOG_TWO_PI;
use crate::latent::{dynamic_binarize, log_mean_exp};
use crate::params::ParamStore;
use crate::{Error, Result};

/// Grey levels of the 8-bit images the VAE reads.
pub const PIXEL_LEVELS: f64 = 256.0;

/// Rows of `(samples x examples)` pushed through the decoder at once when evaluating: bounds the
/// memory of the importance-weighted bound with large `K` (a 784-pixel decoder output of this
/// many rows is about 25 MB in f32).
pub const EVAL_ROWS: usize = 8192;

/// The `(K, B)` log-weights `log w = log p(x | z) + log p(z) - log q(z | x)` of `K` posterior
/// samples per example, and their parts.
#[derive(Debug, Clone)]
pub struct LogWeights {
    /// `log p(x | z)`, `(K, B)`.
    pub log_px_z: Tensor,
    /// `log p(z) - log q(z | x)`, `(K, B)` (minus the single-sample KL estimate).
    pub log_pz_minus_log_qz: Tensor,
}

impl LogWeights {
    /// `log w` with the prior-minus-posterior term weighted by `beta` (1 for the bound).
    pub fn weighted(&self, beta: f64) -> Result<Tensor> {
        Ok((&self.log_px_z + (&self.log_pz_minus_log_qz * beta)?)?)
    }
}

/// Per-example evaluation of a VAE on `K` samples: the ELBO estimate `mean_k log w_k` and the
/// importance-weighted bound `L_K = log mean_k w_k`, both from the same samples (so
/// `L_K >= ELBO` holds example by example, by Jensen's inequality).
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    /// `(1/K) Σ_k log w_k` per example, nats.
    pub elbo: Vec<f64>,
    /// `log (1/K) Σ_k w_k` per example, nats.
    pub iw: Vec<f64>,
}

/// A variational autoencoder with a flow posterior.
#[derive(Debug)]
pub struct Vae {
    spec: VaeSpec,
    seed: u64,
    store: ParamStore,
    posterior: Posterior,
    decoder: Decoder,
}

impl Vae {
    /// A fresh model: tensors initialized from `seed` in a new store.
    pub fn new(spec: VaeSpec, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        spec.validate()?;
        let store = ParamStore::new(dtype, device, seed);
        let root = store.root();
        let posterior = Posterior::new(&root, &spec)?;
        let decoder = Decoder::new(&root, &spec)?;
        Ok(Self { spec, seed, store, posterior, decoder })
    }

    /// The architecture.
    pub fn spec(&self) -> &VaeSpec {
        &self.spec
    }

    /// The initialization seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The tensors.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The encoder and posterior flow.
    pub fn posterior(&self) -> &Posterior {
        &self.posterior
    }

    /// The decoder.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    fn check_data(&self, x: &Tensor) -> Result<()> {
        let d = self.spec.features;
        if x.rank() != 2 || x.dim(1)? != d {
            return Err(Error::shape("VAE data", format!("(rows, {d})"), x.dims()));
        }
        Ok(())
    }

    /// The observation the likelihood scores, from 8-bit pixel values `(B, D)` in `[0, 255]`:
    /// a fresh binarization of `pixel / 255` (Bernoulli) or the pixels dequantized,
    /// `(pixel + u) / 256` with `u ~ U[0, 1)` (Gaussian).
    /// The result has the model's dtype and device, whatever the input's.
    pub fn observe(&self, pixels: &Tensor, rng: &mut dyn RngCore) -> Result<Tensor> {
        self.check_data(pixels)?;
        let pixels = &pixels.to_dtype(self.store.dtype())?.to_device(self.store.device())?;
        match self.spec.likelihood {
            Likelihood::Bernoulli => dynamic_binarize(&(pixels / (PIXEL_LEVELS - 1.0))?, rng),
            Likelihood::Gaussian => {
                let u =
                    crate::random::uniform(pixels.shape(), pixels.dtype(), pixels.device(), rng)?;
                Ok(((pixels + u)? / PIXEL_LEVELS)?)
            }
        }
    }

    /// The log-weights of `k` posterior samples for each row of the observation `x (B, D)`
    /// (see [`Vae::observe`]); differentiable (reparameterized).
    pub fn log_weights(&self, x: &Tensor, k: usize, rng: &mut dyn RngCore) -> Result<LogWeights> {
        self.check_data(x)?;
        crate::ensure_config!(k >= 1, "samples", k, "at least 1");
        let b = x.dim(0)?;
        let encoding = self.posterior.encode(x)?;
        let (z, log_q) = self.posterior.sample_and_log_q(&encoding, k, rng)?;
        let out = self.decoder.forward(&z)?;
        let log_px_z = self.decoder.log_likelihood(&out, &x.repeat((k, 1))?)?;
        let log_pz =
            ((z.sqr()?.sum(D::Minus1)? * -0.5)? - HALF_LOG_TWO_PI * self.spec.latent as f64)?;
        Ok(LogWeights {
            log_px_z: log_px_z.reshape((k, b))?,
            log_pz_minus_log_qz: (log_pz - log_q)?.reshape((k, b))?,
        })
    }

    /// The training loss on an observation batch: `-mean_b [log p(x|z) + β (log p(z) - log q(z|x))]`
    /// with one sample per example (a scalar tensor), and the batch's mean ELBO (`β = 1`).
    pub fn loss(&self, x: &Tensor, beta: f64, rng: &mut dyn RngCore) -> Result<(Tensor, f64)> {
        let w = self.log_weights(x, 1, rng)?;
        let loss = w.weighted(beta)?.mean_all()?.neg()?;
        let elbo = w.weighted(1.0)?.mean_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        Ok((loss, elbo))
    }

    /// The ELBO estimate and the importance-weighted bound with `k` samples for every row of
    /// the observation `x`, without gradients, in chunks of at most [`EVAL_ROWS`] decoder rows
    /// (so `k` of 1000 or more fits in memory).
    pub fn bounds(&self, x: &Tensor, k: usize, rng: &mut dyn RngCore) -> Result<Bounds> {
        self.check_data(x)?;
        crate::ensure_config!(k >= 1, "samples", k, "at least 1");
        crate::inference::without_gradients(|| {
            let rows = x.dim(0)?;
            let examples = (EVAL_ROWS / k).clamp(1, rows.max(1));
            let chunk_k = k.min(EVAL_ROWS);
            let mut out = Bounds { elbo: Vec::with_capacity(rows), iw: Vec::with_capacity(rows) };
            let mut start = 0;
            while start < rows {
                let n = examples.min(rows - start);
                let xb = x.narrow(0, start, n)?;
                let mut parts = Vec::new();
                let mut done = 0;
                while done < k {
                    let kc = chunk_k.min(k - done);
                    parts.push(self.log_weights(&xb, kc, rng)?.weighted(1.0)?.detach());
                    done += kc;
                }
                let w = Tensor::cat(&parts, 0)?.to_dtype(DType::F64)?; // (k, n)
                out.elbo.extend(w.mean(0)?.to_vec1::<f64>()?);
                out.iw.extend(log_mean_exp(&w, 0)?.to_vec1::<f64>()?);
                start += n;
            }
            Ok(out)
        })
    }

    /// `n` images from the model: `z ~ N(0, I)`, then the decoder's mean image, `(n, D)` in
    /// `[0, 1]`.
    pub fn sample_means(&self, n: usize, rng: &mut dyn RngCore) -> Result<Tensor> {
        let z = crate::random::standard_normal(
            (n, self.spec.latent),
            self.store.dtype(),
            self.store.device(),
            rng,
        )?;
        crate::inference::without_gradients(|| self.decoder.mean(&self.decoder.forward(&z)?))
    }

    /// Reconstructions of the observation `x`: one `z ~ q(z | x)` per row, then the decoder's
    /// mean image, `(B, D)` in `[0, 1]`.
    pub fn reconstruct(&self, x: &Tensor, rng: &mut dyn RngCore) -> Result<Tensor> {
        self.check_data(x)?;
        crate::inference::without_gradients(|| {
            let encoding = self.posterior.encode(x)?;
            let (z, _) = self.posterior.sample_and_log_q(&encoding, 1, rng)?;
            self.decoder.mean(&self.decoder.forward(&z)?)
        })
    }
}
