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
//! | `coupling` | L couplings with any [`TransformerSpec`] map (e.g. NSF) | both |
//! | `autoregressive` | L MADE layers with any [`TransformerSpec`] map (e.g. NSF-AR, NAF) | density (sampling with `inverse`) |
//! | `bnaf` | L block neural autoregressive flows (De Cao et al. 2019), permutations between them | density (sampling by a numerical inverse) |
//!
//! `coupling` and `autoregressive` carry their element-wise map in `transformer`; their
//! [`FlowSpec::family`] is the preset name of that map (e.g. `nsf`, `nsf-ar`, `naf`, `sos`,
//! `bernstein`). Maps without a closed-form inverse (NAF, SOS, Bernstein, BNAF) sample through
//! the bracketed solver of [`crate::solve`].

mod autoregressive;
mod base;
mod bnaf;
mod coupling;
mod spec;
mod transformer_flows;

pub use base::BaseSpec;
pub use bnaf::BnafSpec;
pub use spec::{AutoregressiveSpec, CouplingSpec, FlowSpec, PermutationKind};
pub use transformer_flows::{
    TransformerFlowSpec, TransformerSpec, BERNSTEIN_DEGREE, NAF_HIDDEN, SOS_DEGREE, SOS_POLYNOMIALS,
};
