//! Neural networks used as conditioners: MLPs, masked (MADE) networks.

mod conv;
pub mod dense;
pub mod fused;
mod gated_conv;
pub mod gemm;
mod linear;
mod made;
mod mlp;

pub use conv::{ConvNet, ConvNetConfig};
pub use gated_conv::{GatedConvNet, GatedConvNetConfig};
pub use linear::{linear, linear_act};
pub use made::{Made, MadeConfig, MadeHiddenDegrees, MadeOrder};
pub use mlp::{Activation, Mlp, MlpConfig};
