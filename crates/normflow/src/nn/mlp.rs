//! Multi-layer perceptron.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::dense::{dense, LayerPlan};
use super::fused::{fusable, FusedActivation};
use crate::params::{Init, Params};
use crate::{ensure_config, Result};

/// Hidden-layer non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `max(0, x)`.
    #[default]
    Relu,
    /// `tanh(x)`.
    Tanh,
    /// `x * sigmoid(x)`.
    Silu,
    /// Exponential linear unit.
    Elu,
}

impl Activation {
    /// Applies the activation element-wise.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Relu => super::fused::relu(x)?,
            Activation::Tanh => x.tanh()?,
            Activation::Silu => x.silu()?,
            Activation::Elu => x.elu(1.0)?,
        })
    }
}

/// Shape of an [`Mlp`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Input width.
    pub inputs: usize,
    /// Widths of the hidden layers (may be empty: a single affine layer).
    pub hidden: Vec<usize>,
    /// Output width.
    pub outputs: usize,
    /// Hidden non-linearity.
    pub activation: Activation,
    /// Start the last layer at zero, so the network outputs 0 until trained. Flows use this so
    /// that every layer starts as the identity.
    pub zero_last: bool,
}

/// `y = W_L act(... act(W_1 x + b_1) ...) + b_L`.
///
/// # Shapes
/// `x: (B, inputs) -> (B, outputs)`.
///
/// On the CPU in f32/f64 each layer is one fused op (product, bias, ReLU; [`super::dense`]).
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<(Tensor, Tensor, Arc<LayerPlan>)>,
    activation: Activation,
}

impl Mlp {
    /// Creates the weights under `params` (`layers.{i}.weight` `(out, in)`, `layers.{i}.bias`).
    pub fn new(params: &Params, config: &MlpConfig) -> Result<Self> {
        ensure_config!(config.inputs > 0, "mlp inputs", config.inputs, "must be at least 1");
        ensure_config!(config.outputs > 0, "mlp outputs", config.outputs, "must be at least 1");
        if let Some(w) = config.hidden.iter().find(|&&w| w == 0) {
            return Err(crate::Error::config("hidden", w, "hidden widths must be at least 1"));
        }
        let widths: Vec<usize> = std::iter::once(config.inputs)
            .chain(config.hidden.iter().copied())
            .chain(std::iter::once(config.outputs))
            .collect();
        let n = widths.len() - 1;
        let mut layers = Vec::with_capacity(n);
        for i in 0..n {
            let (fan_in, fan_out) = (widths[i], widths[i + 1]);
            let last = i + 1 == n;
            let (w_init, b_init) = if last && config.zero_last {
                (Init::Const(0.0), Init::Const(0.0))
            } else {
                (Init::LinearDefault { fan_in }, Init::LinearDefault { fan_in })
            };
            let p = params.pp("layers").pp(i);
            let w = p.param("weight", (fan_out, fan_in), w_init)?;
            let b = p.param("bias", fan_out, b_init)?;
            layers.push((w, b, Arc::new(LayerPlan::dense(fan_out, fan_in))));
        }
        Ok(Self { layers, activation: config.activation })
    }

    /// Applies the network to `x (B, inputs)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        let fused = fusable(x) && x.rank() == 2;
        for (i, (w, b, plan)) in self.layers.iter().enumerate() {
            let act = match self.activation {
                Activation::Relu if i < last => FusedActivation::Relu,
                _ => FusedActivation::Identity,
            };
            h = if fused { dense(&h, w, b, plan, act)? } else { super::linear_act(&h, w, b, act)? };
            if i < last && self.activation != Activation::Relu {
                h = self.activation.apply(&h)?;
            }
        }
        Ok(h)
    }
}
