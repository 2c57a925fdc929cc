//! Presets: named flow architectures assembled from the generic pieces.
//!
//! A preset is described by a serializable [`FlowSpec`] (what `spec.json` stores): the family and
//! its hyperparameters. [`FlowSpec::build`] validates it and assembles the transform (a
//! [`Chain`](crate::bijections::Chain)) and the base distribution. Every preset is conditional
//! when `context_features > 0`.
//!
//! | family | layers | fast direction |
//! |---|---|---|
//! | `made` | one Gaussian autoregressive layer (MADE, Germain et al. 2015) | density |
//! | `maf` | L MADE affine layers with permutations between them (Papamakarios et al. 2017) | density |
//! | `iaf` | L inverse MADE affine layers (Kingma et al. 2016) | sampling |
//! | `nice` | L additive couplings + a final element-wise scaling (Dinh et al. 2014) | both |
//! | `realnvp` | L affine couplings with alternating masks (Dinh et al. 2016) | both |
//! | `realnvp-image` | multi-scale checkerboard/channel couplings, squeezes, splits (Dinh et al. 2017) | both |
//! | `glow` | levels of [ActNorm, 1x1 conv, coupling] steps with learned split priors (Kingma & Dhariwal 2018) | both |
//! | `coupling` | L couplings with any [`TransformerSpec`] map (e.g. NSF) | both |
//! | `autoregressive` | L MADE layers with any [`TransformerSpec`] map (e.g. NSF-AR, NAF) | density (sampling with `inverse`) |
//! | `bnaf` | L block neural autoregressive flows (De Cao et al. 2019), permutations between them | density (sampling by a numerical inverse) |
//!
//! `coupling` and `autoregressive` carry their element-wise map in `transformer`; their
//! [`FlowSpec::family`] is the preset name of that map (e.g. `nsf`, `nsf-ar`).
//! | `planar` | L planar layers `z + û tanh(wᵀz + b)` (Rezende & Mohamed 2015) | sampling (density by a scalar solve per layer) |
//! | `radial` | L radial layers `z + β (z - z₀)/(α + r)` (Rezende & Mohamed 2015) | both (closed-form inverse) |
//! | `sylvester` | L Sylvester layers `z + Q R tanh(R̃ Qᵀz + b)`, `Q` orthogonal, Householder or triangular (van den Berg et al. 2018) | sampling (density by M scalar solves per layer) |
//!
//! The `planar`, `radial` and `sylvester` presets are unconditional; their hyperparameters are
//! [`VariationalSpec`] and [`SylvesterSpec`].
//! | `ffjord` | L continuous flows, ODE-solved (Grathwohl et al. 2019) | neither (one solve each way) |
//! [`FlowSpec::family`] is the preset name of that map (e.g. `nsf`, `nsf-ar`, `naf`, `sos`,
//! `bernstein`). Maps without a closed-form inverse (NAF, SOS, Bernstein, BNAF) sample through
//! the bracketed solver of [`crate::solve`].

mod autoregressive;
mod base;
mod bnaf;
mod coupling;
mod ffjord;
mod flowpp;
mod image;
mod spec;
mod transformer_flows;
mod variational;

pub use base::BaseSpec;
pub use bnaf::BnafSpec;
pub use ffjord::FfjordSpec;
pub use flowpp::FlowppSpec;
pub use image::{bits_per_dim, ImageFlowSpec};
pub use spec::{AutoregressiveSpec, CouplingSpec, FlowSpec, PermutationKind};
pub use transformer_flows::{
    TransformerFlowSpec, TransformerSpec, BERNSTEIN_DEGREE, LOGISTIC_COMPONENTS, NAF_HIDDEN,
    SOS_DEGREE, SOS_POLYNOMIALS,
};
pub use variational::{SylvesterSpec, SylvesterVariant, VariationalSpec};
