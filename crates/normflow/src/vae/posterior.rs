//! The amortized posterior `q(z | x)`: an encoder MLP, a diagonal Gaussian and a flow.
//!
//! Sampling (reparameterized) with `ε ~ N(0, I)`:
//!
//! ```text
//! z₀ = μ(x) + σ(x) ⊙ ε,                  log q₀(z₀) = Σ_j -ε_j²/2 - log σ_j - log(2π)/2
//! z_k = f_k(z_{k-1}; x),  k = 1..K,      log q(z_K | x) = log q₀(z₀) - Σ_k log|det ∂f_k/∂z_{k-1}|
//! ```
//!
//! The maps `f_k` are planar, radial or Sylvester maps whose parameters the encoder outputs
//! per example (Rezende & Mohamed 2015; van den Berg et al. 2018), or IAF / spline
//! autoregressive layers whose MADEs take an encoder context `h(x)` (Kingma et al. 2016;
//! Durkan et al. 2019). Every map runs in its explicit (sampling) direction: no inverse is
//! ever solved, so `log q` of a sample costs one pass.

use candle_core::{Tensor, D};
use rand::RngCore;

use super::spec::{PosteriorSpec, VaeSpec};
use crate::bijections::{
    householder_columns, orthonormal_columns, Bijection, Chain, PlanarParams, RadialParams,
    SylvesterParams,
};
use crate::distributions::HALF_LOG_TWO_PI;
use crate::flows::{
    AutoregressiveSpec, FlowSpec, SylvesterVariant, TransformerFlowSpec, TransformerSpec,
};
use crate::nn::{MadeHiddenDegrees, Mlp, MlpConfig};
use crate::params::Params;
use crate::{Error, Result};

/// Bound of the soft clamp on the encoder's `log σ` (`σ` in `[e^-8, e^8]`): a runaway
/// encoder cannot overflow `exp`.
const LOG_SIGMA_BOUND: f64 = 8.0;

/// The MADE degrees of the `iaf` and `nsf` posteriors. A VAE file records its posterior by
/// name and size, not its MADEs' degrees, so they stay those its models were trained with.
const LEGACY_DEGREES: MadeHiddenDegrees = MadeHiddenDegrees::Cyclic;

/// Half-width of the spline interval of `nsf:K` (identity outside; the latent is near
/// standard normal).
const NSF_BOUND: f64 = 5.0;

/// What the encoder gives for a batch `x (B, features)`.
#[derive(Debug, Clone)]
pub struct Encoding {
    /// `μ(x)`, `(B, latent)`.
    pub mu: Tensor,
    /// `log σ(x)`, `(B, latent)`.
    pub log_sigma: Tensor,
    /// The amortized flow parameters, `(B, P)` (planar, radial, Sylvester).
    pub flow: Option<Tensor>,
    /// The context `h(x)`, `(B, C)` (IAF, NSF).
    pub context: Option<Tensor>,
}

/// Each row repeated `k` times, sample-major: row `s B + b` is example `b`.
fn repeat_rows(t: &Tensor, k: usize) -> Result<Tensor> {
    Ok(t.repeat((k, 1))?)
}

/// Encoder and posterior flow of a VAE; tensors live under `encoder.*` and `posterior.*`.
#[derive(Debug)]
pub struct Posterior {
    spec: PosteriorSpec,
    latent: usize,
    trunk: Mlp,
    activation: crate::nn::Activation,
    head: Mlp,
    /// The conditional flow of IAF / NSF (data direction = `z_K -> z₀`).
    chain: Option<Chain>,
}

impl Posterior {
    /// Creates the encoder (`features -> hidden... -> [μ, log σ, flow parameters, h]`) and,
    /// for IAF / NSF, the conditional flow.
    pub fn new(params: &Params, spec: &VaeSpec) -> Result<Self> {
        spec.validate()?;
        let (l, post) = (spec.latent, &spec.posterior);
        let last = *spec.hidden.last().ok_or_else(|| Error::config("hidden", "[]", "not empty"))?;
        let trunk = Mlp::new(
            &params.pp("encoder").pp("trunk"),
            &MlpConfig {
                inputs: spec.features,
                hidden: spec.hidden[..spec.hidden.len() - 1].to_vec(),
                outputs: last,
                activation: spec.activation,
                zero_last: false,
            },
        )?;
        let outputs = 2 * l + post.amortized_parameters(l) + post.context();
        let head = Mlp::new(
            &params.pp("encoder").pp("head"),
            &MlpConfig {
                inputs: last,
                hidden: vec![],
                outputs,
                activation: spec.activation,
                zero_last: false,
            },
        )?;
        let chain = match post {
            PosteriorSpec::Iaf { layers, hidden, context } => {
                let flow = FlowSpec::Iaf(AutoregressiveSpec {
                    context_features: *context,
                    layers: *layers,
                    hidden: *hidden,
                    blocks: 2,
                    hidden_degrees: LEGACY_DEGREES,
                    ..AutoregressiveSpec::new(l)
                });
                Some(flow.build(&params.pp("posterior"))?.0)
            }
            PosteriorSpec::Nsf { layers, hidden, context, bins } => {
                let flow = FlowSpec::Autoregressive(TransformerFlowSpec {
                    context_features: *context,
                    layers: *layers,
                    hidden: *hidden,
                    blocks: 2,
                    inverse: true,
                    hidden_degrees: LEGACY_DEGREES,
                    ..TransformerFlowSpec::new(
                        l,
                        TransformerSpec::rational_quadratic(*bins, NSF_BOUND),
                    )
                });
                Some(flow.build(&params.pp("posterior"))?.0)
            }
            _ => None,
        };
        Ok(Self { spec: post.clone(), latent: l, trunk, activation: spec.activation, head, chain })
    }

    /// Encodes `x (B, features)`.
    pub fn encode(&self, x: &Tensor) -> Result<Encoding> {
        let h = self.activation.apply(&self.trunk.forward(x)?)?;
        let out = self.head.forward(&h)?;
        let l = self.latent;
        let p = self.spec.amortized_parameters(l);
        let c = self.spec.context();
        let mu = out.narrow(1, 0, l)?;
        let log_sigma = crate::ops::soft_clamp(&out.narrow(1, l, l)?, LOG_SIGMA_BOUND)?;
        let flow = (p > 0).then(|| out.narrow(1, 2 * l, p)).transpose()?;
        let context = (c > 0).then(|| out.narrow(1, 2 * l + p, c)).transpose()?;
        Ok(Encoding { mu, log_sigma, flow, context })
    }

    /// `k` reparameterized samples per example and their `log q(z | x)`:
    /// `z (k B, latent)`, `log q (k B,)`, sample-major (row `s B + b` belongs to example `b`).
    pub fn sample_and_log_q(
        &self,
        encoding: &Encoding,
        k: usize,
        rng: &mut dyn RngCore,
    ) -> Result<(Tensor, Tensor)> {
        let (mu, log_sigma) = (repeat_rows(&encoding.mu, k)?, repeat_rows(&encoding.log_sigma, k)?);
        let eps = crate::random::standard_normal(mu.shape(), mu.dtype(), mu.device(), rng)?;
        let z0 = (&mu + (log_sigma.exp()? * &eps)?)?;
        let log_q0 = ((eps.sqr()? * -0.5)? - &log_sigma)?.sum(D::Minus1)?;
        let log_q0 = (log_q0 - HALF_LOG_TWO_PI * self.latent as f64)?;
        let (z, ladj) = self.flow(&z0, encoding, k)?;
        Ok((z, (log_q0 - ladj)?))
    }

    /// Pushes `z₀ (k B, latent)` (sample-major) through the flow of the encoding `e` of `B`
    /// examples: `(z_K, Σ_k log|det ∂f_k/∂z_{k-1}|)`.
    ///
    /// Each layer's constrained parameters are built once per example and repeated for the
    /// `k` samples (constraining `k` copies of the raw parameters would cost `k` times more).
    pub fn flow(&self, z0: &Tensor, e: &Encoding, k: usize) -> Result<(Tensor, Tensor)> {
        let mut z = z0.clone();
        let mut ladj = Tensor::zeros(z0.dim(0)?, z0.dtype(), z0.device())?;
        if z0.dim(0)? != k * e.mu.dim(0)? {
            return Err(Error::shape(
                "posterior flow input",
                format!("({} samples x {} examples, latent)", k, e.mu.dim(0)?),
                z0.dims(),
            ));
        }
        if let Some(chain) = &self.chain {
            let context = e.context.as_ref().map(|c| repeat_rows(c, k)).transpose()?;
            return chain.inverse_and_ladj(z0, context.as_ref());
        }
        let Some(raw) = &e.flow else { return Ok((z, ladj)) };
        let l = self.latent;
        let n = raw.dim(0)?;
        let per_layer = self.spec.amortized_parameters(l) / self.spec.layers().max(1);
        for i in 0..self.spec.layers() {
            let r = raw.narrow(1, i * per_layer, per_layer)?;
            let (next, layer_ladj) = match &self.spec {
                PosteriorSpec::Planar { .. } => {
                    let (u, w) = (r.narrow(1, 0, l)?, r.narrow(1, l, l)?);
                    let b = r.narrow(1, 2 * l, 1)?.flatten_all()?;
                    PlanarParams::new(&u, &w, &b)?.repeat(k)?.map(&z)?
                }
                PosteriorSpec::Radial { .. } => {
                    let z_ref = r.narrow(1, 0, l)?;
                    let (a, b) =
                        (r.narrow(1, l, 1)?.flatten_all()?, r.narrow(1, l + 1, 1)?.flatten_all()?);
                    RadialParams::new(&z_ref, &a, &b)?.repeat(k)?.map(&z)?
                }
                PosteriorSpec::Sylvester { m, variant, .. } => {
                    let m = *m;
                    let mm = m * m;
                    let rr = r.narrow(1, 0, mm)?.reshape((n, m, m))?;
                    let rt = r.narrow(1, mm, mm)?.reshape((n, m, m))?;
                    let b = r.narrow(1, 2 * mm, m)?;
                    let q_raw = r.narrow(1, 2 * mm + m, per_layer - 2 * mm - m)?;
                    let q = match variant {
                        SylvesterVariant::Orthogonal => {
                            orthonormal_columns(&q_raw.reshape((n, l, m))?)?
                        }
                        SylvesterVariant::Householder { reflections } => {
                            householder_columns(&q_raw.reshape((n, *reflections, l))?, m)?
                        }
                        SylvesterVariant::Triangular => {
                            triangular_basis(i, l, z.dtype(), z.device())?
                                .unsqueeze(0)?
                                .broadcast_as((n, l, l))?
                                .contiguous()?
                        }
                    };
                    SylvesterParams::new(&q, &rr, &rt, &b)?.repeat(k)?.map(&z)?
                }
                PosteriorSpec::Diag | PosteriorSpec::Iaf { .. } | PosteriorSpec::Nsf { .. } => {
                    unreachable_layout()?
                }
            };
            z = next;
            ladj = (ladj + layer_ladj)?;
        }
        Ok((z, ladj))
    }
}

/// T-SNF's `Q`: the identity for even layers, the reversal permutation for odd ones, so that
/// consecutive layers are upper and lower triangular (van den Berg et al. 2018, section 3).
fn triangular_basis(
    layer: usize,
    d: usize,
    dtype: candle_core::DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let values: Vec<f64> = (0..d * d)
        .map(|k| {
            let (row, col) = (k / d, k % d);
            let hit = if layer % 2 == 0 { row == col } else { row + col == d - 1 };
            if hit {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    crate::random::from_f64(values, (d, d).into(), dtype, device)
}

/// Amortized parameters exist only for planar, radial and Sylvester posteriors.
fn unreachable_layout() -> Result<(Tensor, Tensor)> {
    Err(Error::config(
        "posterior",
        "amortized parameters",
        "only planar, radial and Sylvester flows have them",
    ))
}
