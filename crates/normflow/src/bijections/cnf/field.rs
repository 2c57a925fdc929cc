//! Vector fields `f(t, z; c)` with forward-mode Jacobian-vector products: the dynamics of a
//! continuous normalizing flow.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::params::{Init, Params};
use crate::{ensure_config, Error, Result};

/// A time-dependent vector field on `R^D` that also returns Jacobian-vector products.
///
/// The products are computed in **forward mode** (tangents propagated alongside the values), so
/// that a continuous flow's log-density needs only first-order gradients for training: candle
/// detaches gradients computed inside a backward pass by default, which would make a
/// gradient of a reverse-mode vector-Jacobian product silently wrong.
pub trait VectorField: Send + Sync + std::fmt::Debug {
    /// Dimension `D` of the state.
    fn features(&self) -> usize;

    /// The trainable tensors `f` computes with (for the adjoint method's gradients).
    fn parameters(&self) -> Vec<Tensor>;

    /// `f(t, z; c)` for `z (B, D)` (and context `c (B, C)`), and, when `tangents (K, B, D)` are
    /// given, the `K` products `J v_k (K, B, D)` with `J = df/dz` evaluated per sample.
    fn eval(
        &self,
        t: f64,
        z: &Tensor,
        context: Option<&Tensor>,
        tangents: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)>;
}

/// Hidden non-linearity of an [`OdeNet`]. Smooth, so that the dynamics has a continuous
/// Jacobian (adaptive solvers take tiny steps at ReLU kinks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OdeActivation {
    /// `tanh(x)`, derivative `1 - tanh(x)^2`.
    #[default]
    Tanh,
    /// `softplus(x) = log(1 + e^x)`, derivative `sigmoid(x)`.
    Softplus,
}

/// `1 / (1 + e^{-x})`, finite for every finite `x`.
fn sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok((x.neg()?.exp()? + 1.0)?.recip()?)
}

impl OdeActivation {
    /// The activation and its derivative at `x`.
    fn apply_with_derivative(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok(match self {
            OdeActivation::Tanh => {
                let y = x.tanh()?;
                let d = (1.0 - y.sqr()?)?;
                (y, d)
            }
            OdeActivation::Softplus => {
                // max(x, 0) + log(1 + e^{-|x|}): no overflow for large |x|.
                let y = (x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
                (y, sigmoid(x)?)
            }
        })
    }
}

/// Shape of an [`OdeNet`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OdeNetConfig {
    /// State dimension `D`.
    pub features: usize,
    /// Context dimension (0 = unconditional); the context is concatenated to the input.
    pub context_features: usize,
    /// Widths of the hidden layers.
    pub hidden: Vec<usize>,
    /// Hidden non-linearity.
    pub activation: OdeActivation,
}

/// One concat-squash layer (FFJORD's `ConcatSquashLinear`):
/// `y = (W x + b) * sigmoid(g_w t + g_b) + h t`.
#[derive(Debug, Clone)]
struct ConcatSquash {
    weight: Tensor,
    bias: Tensor,
    gate_weight: Tensor,
    gate_bias: Tensor,
    time_bias: Tensor,
}

impl ConcatSquash {
    fn new(params: &Params, inputs: usize, outputs: usize, zero: bool) -> Result<Self> {
        let (w, b) = if zero {
            (Init::Const(0.0), Init::Const(0.0))
        } else {
            (Init::LinearDefault { fan_in: inputs }, Init::LinearDefault { fan_in: inputs })
        };
        let time = Init::LinearDefault { fan_in: 1 };
        Ok(Self {
            weight: params.param("weight", (outputs, inputs), w)?,
            bias: params.param("bias", outputs, b)?,
            gate_weight: params.param("gate_weight", outputs, time)?,
            gate_bias: params.param("gate_bias", outputs, time)?,
            time_bias: params.param(
                "time_bias",
                outputs,
                if zero { Init::Const(0.0) } else { time },
            )?,
        })
    }

    /// Values `(B, out)` and tangents `(K, B, out)`; `tangent_inputs` is the number of leading
    /// input columns the tangents live on (the state, not the context).
    fn forward(
        &self,
        t: f64,
        x: &Tensor,
        tangents: Option<&Tensor>,
        tangent_inputs: usize,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let gate = sigmoid(&(self.gate_weight.affine(t, 0.0)? + &self.gate_bias)?)?;
        let shift = self.time_bias.affine(t, 0.0)?;
        let y = crate::nn::linear(x, &self.weight, &self.bias)?
            .broadcast_mul(&gate)?
            .broadcast_add(&shift)?;
        let dy = match tangents {
            Some(v) => {
                let (k, b, d) = v.dims3()?;
                let w = self.weight.narrow(1, 0, tangent_inputs)?;
                let out = w.dim(0)?;
                let dv = v.reshape((k * b, d))?.matmul(&w.t()?)?.reshape((k, b, out))?;
                Some(dv.broadcast_mul(&gate)?)
            }
            None => None,
        };
        Ok((y, dy))
    }
}

/// FFJORD's dynamics network: an MLP of concat-squash layers, each gated and shifted by the time
/// (Grathwohl et al. 2019), with Jacobian-vector products in forward mode.
///
/// ```text
/// h_0 = [z, c],   h_{l+1} = act((W_l h_l + b_l) sigmoid(g_l t + a_l) + s_l t),   f = h_L (no act)
/// ```
///
/// The last layer starts at zero, so the flow starts as the identity.
///
/// # Shapes
/// `z: (B, D)`, `c: (B, C)`, tangents `(K, B, D)` -> `f: (B, D)`, `J v: (K, B, D)`.
#[derive(Debug, Clone)]
pub struct OdeNet {
    layers: Vec<ConcatSquash>,
    activation: OdeActivation,
    features: usize,
    context_features: usize,
}

impl OdeNet {
    /// Creates the layers under `params` (`layers.{i}.weight`, `.bias`, `.gate_weight`,
    /// `.gate_bias`, `.time_bias`).
    pub fn new(params: &Params, config: &OdeNetConfig) -> Result<Self> {
        ensure_config!(config.features >= 1, "features", config.features, "at least 1");
        if let Some(w) = config.hidden.iter().find(|&&w| w == 0) {
            return Err(Error::config("hidden", w, "hidden widths must be at least 1"));
        }
        let widths: Vec<usize> = std::iter::once(config.features + config.context_features)
            .chain(config.hidden.iter().copied())
            .chain(std::iter::once(config.features))
            .collect();
        let n = widths.len() - 1;
        let layers = (0..n)
            .map(|i| {
                ConcatSquash::new(&params.pp("layers").pp(i), widths[i], widths[i + 1], i + 1 == n)
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            activation: config.activation,
            features: config.features,
            context_features: config.context_features,
        })
    }
}

impl VectorField for OdeNet {
    fn features(&self) -> usize {
        self.features
    }

    fn parameters(&self) -> Vec<Tensor> {
        self.layers
            .iter()
            .flat_map(|l| {
                [&l.weight, &l.bias, &l.gate_weight, &l.gate_bias, &l.time_bias].map(Tensor::clone)
            })
            .collect()
    }

    fn eval(
        &self,
        t: f64,
        z: &Tensor,
        context: Option<&Tensor>,
        tangents: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let mut h = match (context, self.context_features) {
            (Some(c), n) if n > 0 => Tensor::cat(&[z, c], 1)?,
            (None, 0) => z.clone(),
            _ => {
                return Err(Error::Context(format!(
                    "this continuous flow takes {} context features",
                    self.context_features
                )))
            }
        };
        let mut dh = tangents.cloned();
        let mut tangent_inputs = self.features;
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let (pre, dpre) = layer.forward(t, &h, dh.as_ref(), tangent_inputs)?;
            tangent_inputs = pre.dim(1)?;
            if i == last {
                h = pre;
                dh = dpre;
            } else {
                let (y, deriv) = self.activation.apply_with_derivative(&pre)?;
                h = y;
                dh = dpre.map(|d| d.broadcast_mul(&deriv)).transpose()?;
            }
        }
        Ok((h, dh))
    }
}

/// `f(t, z) = z A^T` with a learnable `A (D, D)`: linear dynamics, whose flow map over a time
/// `T` is `exp(T A)` with `log|det| = T tr(A)` exactly. For tests and as a simple baseline.
#[derive(Debug, Clone)]
pub struct LinearField {
    matrix: Tensor,
}

impl LinearField {
    /// Creates `matrix (D, D)` under `params`, initialized at zero.
    pub fn new(params: &Params, features: usize) -> Result<Self> {
        ensure_config!(features >= 1, "features", features, "at least 1");
        Ok(Self { matrix: params.param("matrix", (features, features), Init::Const(0.0))? })
    }

    /// The matrix `A`.
    pub fn matrix(&self) -> &Tensor {
        &self.matrix
    }
}

impl VectorField for LinearField {
    fn features(&self) -> usize {
        self.matrix.dim(0).unwrap_or(0)
    }

    fn parameters(&self) -> Vec<Tensor> {
        vec![self.matrix.clone()]
    }

    fn eval(
        &self,
        _t: f64,
        z: &Tensor,
        _context: Option<&Tensor>,
        tangents: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let at = self.matrix.t()?;
        let jv = match tangents {
            Some(v) => Some(v.broadcast_matmul(&at)?),
            None => None,
        };
        Ok((z.matmul(&at)?, jv))
    }
}
