//! Neural networks used as conditioners: MLPs, masked (MADE) networks.

mod made;
mod mlp;

pub use made::{Made, MadeConfig, MadeHiddenDegrees, MadeOrder};
pub use mlp::{Activation, Mlp, MlpConfig};
