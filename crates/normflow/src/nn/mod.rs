//! Neural networks used as conditioners: MLPs, masked (MADE) networks.

mod conv;
mod conv2d;
pub mod dense;
pub mod fused;
mod gated_conv;
pub mod gemm;
mod gru;
pub(crate) mod host_op;
mod linear;
mod made;
mod mlp;

pub use conv::{ConvNet, ConvNetConfig};
pub use conv2d::conv2d_same;
pub use gated_conv::GatedConvNet;
pub use gru::Gru;
pub use linear::{linear, linear_act};
pub use made::{Made, MadeConfig, MadeHiddenDegrees, MadeOrder};
pub use mlp::{Activation, Mlp, MlpConfig};
