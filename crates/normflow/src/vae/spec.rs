//! The serializable description of a VAE: sizes, posterior family, decoder likelihood.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::flows::SylvesterVariant;
use crate::nn::Activation;
use crate::{ensure_config, Error, Result};

/// The variational posterior `q(z | x)`: a diagonal Gaussian `N(μ(x), σ(x)²)` followed by
/// `layers` flow layers in the sampling direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PosteriorSpec {
    /// The diagonal Gaussian alone (Kingma & Welling 2014).
    Diag,
    /// Amortized planar flow (Rezende & Mohamed 2015): the encoder outputs `u`, `w`, `b` of
    /// every layer, `2D + 1` numbers per layer.
    Planar {
        /// Number of layers K.
        layers: usize,
    },
    /// Amortized radial flow (Rezende & Mohamed 2015): `z₀`, `a`, `b'` per layer (`D + 2`).
    Radial {
        /// Number of layers K.
        layers: usize,
    },
    /// Amortized Sylvester flow (van den Berg et al. 2018): `R`, `R̃` (`M x M` each, entries
    /// below the diagonal unused), `b` (`M`) and the variant's `Q` parameters per layer.
    Sylvester {
        /// Number of layers K.
        layers: usize,
        /// Columns of `Q` (`D` for the triangular variant).
        m: usize,
        /// How `Q` is parameterized (orthogonal: amortized `D x M` matrix orthonormalized by
        /// Gram-Schmidt; Householder: amortized reflections; triangular: identity / reversal
        /// alternating, nothing amortized).
        variant: SylvesterVariant,
    },
    /// Inverse autoregressive flow conditioned on an encoder context `h` (Kingma et al. 2016):
    /// MADE layers with context units, affine (`z ← μ + σ z`, log-scale soft-clamped).
    Iaf {
        /// Number of layers K.
        layers: usize,
        /// Hidden units of each MADE (two hidden layers).
        hidden: usize,
        /// Width of the context `h` the encoder outputs.
        context: usize,
    },
    /// Rational-quadratic spline autoregressive flow (Durkan et al. 2019) in the IAF form
    /// (one MADE pass per layer to sample), conditioned on an encoder context `h`.
    Nsf {
        /// Number of layers K.
        layers: usize,
        /// Hidden units of each MADE (two hidden layers).
        hidden: usize,
        /// Width of the context `h`.
        context: usize,
        /// Spline bins.
        bins: usize,
    },
}

/// Hidden width of the MADEs of `iaf:K` and `nsf:K` and width of their context `h`.
const DEFAULT_MADE_HIDDEN: usize = 320;
const DEFAULT_CONTEXT: usize = 64;

impl PosteriorSpec {
    /// Number of flow layers (0 for `diag`).
    pub fn layers(&self) -> usize {
        match self {
            PosteriorSpec::Diag => 0,
            PosteriorSpec::Planar { layers }
            | PosteriorSpec::Radial { layers }
            | PosteriorSpec::Sylvester { layers, .. }
            | PosteriorSpec::Iaf { layers, .. }
            | PosteriorSpec::Nsf { layers, .. } => *layers,
        }
    }

    /// Width of the encoder context `h` (IAF, NSF; 0 otherwise).
    pub fn context(&self) -> usize {
        match self {
            PosteriorSpec::Iaf { context, .. } | PosteriorSpec::Nsf { context, .. } => *context,
            _ => 0,
        }
    }

    /// Number of flow parameters the encoder outputs per example, for `latent` dimensions.
    pub fn amortized_parameters(&self, latent: usize) -> usize {
        let (d, k) = (latent, self.layers());
        match self {
            PosteriorSpec::Planar { .. } => k * (2 * d + 1),
            PosteriorSpec::Radial { .. } => k * (d + 2),
            PosteriorSpec::Sylvester { m, variant, .. } => {
                let q = match variant {
                    SylvesterVariant::Orthogonal => d * m,
                    SylvesterVariant::Householder { reflections } => reflections * d,
                    SylvesterVariant::Triangular => 0,
                };
                k * (2 * m * m + m + q)
            }
            _ => 0,
        }
    }

    /// Checks the hyperparameters against the latent dimension, naming the first bad one.
    pub fn validate(&self, latent: usize) -> Result<()> {
        if !matches!(self, PosteriorSpec::Diag) {
            ensure_config!(self.layers() >= 1, "posterior layers", self.layers(), "at least 1");
        }
        match self {
            PosteriorSpec::Sylvester { m, variant, .. } => {
                ensure_config!(*m >= 1 && *m <= latent, "sylvester m", m, "in 1..=latent");
                if *variant == SylvesterVariant::Triangular {
                    ensure_config!(*m == latent, "sylvester m", m, "triangular needs m = latent");
                }
                if let SylvesterVariant::Householder { reflections } = variant {
                    ensure_config!(*reflections >= 1, "reflections", reflections, "at least 1");
                }
            }
            PosteriorSpec::Iaf { hidden, context, .. }
            | PosteriorSpec::Nsf { hidden, context, .. } => {
                ensure_config!(*hidden >= 1, "posterior hidden", hidden, "at least 1");
                ensure_config!(*context >= 1, "posterior context", context, "at least 1");
                if let PosteriorSpec::Nsf { bins, .. } = self {
                    ensure_config!(*bins >= 2, "nsf bins", bins, "at least 2");
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Parses the CLI form for `latent` dimensions: `diag`, `planar:K`, `radial:K`,
    /// `sylvester:K` (triangular, `M = latent`), `sylvester:K:householder:H` (`M = latent`),
    /// `sylvester:K:orthogonal:M`, `iaf:K`, `nsf:K`.
    pub fn parse(text: &str, latent: usize) -> Result<Self> {
        let bad = |reason: &str| Error::config("posterior", text, reason.to_string());
        const FORMS: &str = "expected diag, planar:K, radial:K, sylvester:K, \
                             sylvester:K:householder:H, sylvester:K:orthogonal:M, iaf:K or nsf:K \
                             (K >= 1 layers)";
        let parts: Vec<&str> = text.trim().split(':').collect();
        let number = |s: &str| -> Result<usize> {
            s.parse::<usize>().ok().filter(|&n| n >= 1).ok_or_else(|| bad(FORMS))
        };
        let spec = match parts.as_slice() {
            ["diag"] => PosteriorSpec::Diag,
            ["planar", k] => PosteriorSpec::Planar { layers: number(k)? },
            ["radial", k] => PosteriorSpec::Radial { layers: number(k)? },
            ["sylvester", k] => PosteriorSpec::Sylvester {
                layers: number(k)?,
                m: latent,
                variant: SylvesterVariant::Triangular,
            },
            ["sylvester", k, "householder", h] => PosteriorSpec::Sylvester {
                layers: number(k)?,
                m: latent,
                variant: SylvesterVariant::Householder { reflections: number(h)? },
            },
            ["sylvester", k, "orthogonal", m] => PosteriorSpec::Sylvester {
                layers: number(k)?,
                m: number(m)?,
                variant: SylvesterVariant::Orthogonal,
            },
            ["iaf", k] => PosteriorSpec::Iaf {
                layers: number(k)?,
                hidden: DEFAULT_MADE_HIDDEN,
                context: DEFAULT_CONTEXT,
            },
            ["nsf", k] => PosteriorSpec::Nsf {
                layers: number(k)?,
                hidden: DEFAULT_MADE_HIDDEN,
                context: DEFAULT_CONTEXT,
                bins: 8,
            },
            _ => return Err(bad(FORMS)),
        };
        spec.validate(latent)?;
        Ok(spec)
    }
}

impl fmt::Display for PosteriorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PosteriorSpec::Diag => write!(f, "diag"),
            PosteriorSpec::Planar { layers } => write!(f, "planar:{layers}"),
            PosteriorSpec::Radial { layers } => write!(f, "radial:{layers}"),
            PosteriorSpec::Sylvester { layers, m, variant } => match variant {
                SylvesterVariant::Triangular => write!(f, "sylvester:{layers}"),
                SylvesterVariant::Householder { reflections } => {
                    write!(f, "sylvester:{layers}:householder:{reflections}")
                }
                SylvesterVariant::Orthogonal => write!(f, "sylvester:{layers}:orthogonal:{m}"),
            },
            PosteriorSpec::Iaf { layers, .. } => write!(f, "iaf:{layers}"),
            PosteriorSpec::Nsf { layers, .. } => write!(f, "nsf:{layers}"),
        }
    }
}

/// The decoder's observation model `p(x | z)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Likelihood {
    /// Independent Bernoulli pixels from logits (binarized images).
    Bernoulli,
    /// Independent Gaussians with per-pixel mean and log-scale (both decoder outputs), for
    /// grey levels scaled to `[0, 1]` and dequantized by uniform noise of one level's width.
    Gaussian,
}

impl FromStr for Likelihood {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bernoulli" => Ok(Likelihood::Bernoulli),
            "gaussian" => Ok(Likelihood::Gaussian),
            _ => Err(Error::config("likelihood", s, "expected bernoulli or gaussian")),
        }
    }
}

impl fmt::Display for Likelihood {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Likelihood::Bernoulli => "bernoulli",
            Likelihood::Gaussian => "gaussian",
        })
    }
}

/// A VAE: data width, latent width, MLP sizes (the decoder mirrors the encoder), posterior and
/// likelihood.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeSpec {
    /// Data dimension (pixels per image).
    pub features: usize,
    /// Latent dimension.
    pub latent: usize,
    /// Hidden widths of the encoder; the decoder uses them in reverse.
    pub hidden: Vec<usize>,
    /// Hidden non-linearity of encoder and decoder.
    pub activation: Activation,
    /// The variational posterior.
    pub posterior: PosteriorSpec,
    /// The observation model.
    pub likelihood: Likelihood,
}

impl VaeSpec {
    /// The papers' MNIST architecture: 300-300 ELU MLPs, given latent, posterior, likelihood.
    pub fn new(
        features: usize,
        latent: usize,
        posterior: PosteriorSpec,
        likelihood: Likelihood,
    ) -> Self {
        Self {
            features,
            latent,
            hidden: vec![300, 300],
            activation: Activation::Elu,
            posterior,
            likelihood,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        ensure_config!(self.features >= 1, "features", self.features, "at least 1");
        ensure_config!(self.latent >= 1, "latent", self.latent, "at least 1");
        ensure_config!(!self.hidden.is_empty(), "hidden", "[]", "at least one hidden layer");
        if let Some(w) = self.hidden.iter().find(|&&w| w == 0) {
            return Err(Error::config("hidden", w, "hidden widths must be at least 1"));
        }
        self.posterior.validate(self.latent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posterior_strings_round_trip_and_bad_ones_are_clear_errors() {
        for text in [
            "diag",
            "planar:8",
            "radial:3",
            "sylvester:4",
            "sylvester:2:householder:3",
            "sylvester:2:orthogonal:5",
            "iaf:2",
            "nsf:1",
        ] {
            let spec = PosteriorSpec::parse(text, 6).unwrap();
            assert_eq!(spec.to_string(), text);
        }
        for bad in
            ["", "planar", "planar:0", "planar:x", "flow:3", "sylvester:2:orthogonal:9", "iaf:2:3"]
        {
            let err = PosteriorSpec::parse(bad, 6).unwrap_err().to_string();
            assert!(err.contains("posterior") || err.contains("sylvester m"), "{bad}: {err}");
        }
    }

    #[test]
    fn amortized_parameter_counts_follow_the_layouts() {
        assert_eq!(PosteriorSpec::Planar { layers: 3 }.amortized_parameters(4), 27);
        assert_eq!(PosteriorSpec::Radial { layers: 2 }.amortized_parameters(4), 12);
        let tri = PosteriorSpec::parse("sylvester:2", 4).unwrap();
        assert_eq!(tri.amortized_parameters(4), 2 * (32 + 4));
        assert_eq!(PosteriorSpec::Diag.amortized_parameters(4), 0);
    }
}
