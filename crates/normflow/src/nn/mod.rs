//! Neural networks used as conditioners: MLPs, masked (MADE) networks.

mod mlp;

pub use mlp::{Activation, Mlp, MlpConfig};
