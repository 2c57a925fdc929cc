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
//! | `ffjord` | L continuous flows, ODE-solved (Grathwohl et al. 2019) | neither (one solve each way) |

mod autoregressive;
mod base;
mod coupling;
mod ffjord;
mod spec;

pub use base::BaseSpec;
pub use ffjord::FfjordSpec;
pub use spec::{AutoregressiveSpec, CouplingSpec, FlowSpec, PermutationKind};
