//! MADE: masked autoencoder for distribution estimation (Germain et al. 2015).
//!
//! An MLP whose weight matrices are multiplied by binary masks so that output `i` depends only on
//! the inputs that come before feature `i` in a chosen order. It is the conditioner of MAF / IAF:
//! one pass gives the parameters of every feature's element-wise transform at once.
//!
//! See [`Made`] for how the masks are built.

use std::sync::Arc;

use candle_core::{Tensor, D as Dim};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::dense::{dense, is_identity, LayerPlan};
use super::fused::{fusable, FusedActivation};
use super::Activation;
use crate::params::{Init, Params};
use crate::{ensure_config, Error, Result};

mod sequential;

/// The autoregressive order of a [`Made`]: which feature comes at which position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MadeOrder {
    /// `0, 1, ..., D-1`.
    #[default]
    Natural,
    /// `D-1, ..., 1, 0`.
    Reversed,
    /// A permutation drawn from the parameter store's generator at construction (reproducible
    /// from the store's seed and the construction order).
    Random,
    /// An explicit permutation of `0..D`: `order[k]` is the feature at position `k`.
    Given(Vec<usize>),
}

/// How the degrees of hidden units are assigned (see [`Made`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MadeHiddenDegrees {
    /// Unit `k` of each hidden layer has degree `k mod (D - 1)`: deterministic, and every degree
    /// is used evenly. The default of files that do not say (models written before
    /// [`MadeHiddenDegrees::Sorted`] existed).
    #[default]
    Cyclic,
    /// The degrees of [`MadeHiddenDegrees::Cyclic`], in increasing order: units of equal degree
    /// are contiguous. The same network up to a relabelling of the hidden units (they are
    /// exchangeable, so the same family and the same initial distribution), but each masked
    /// weight matrix is block lower-triangular in its own layout, so the fused path multiplies
    /// the parameters as they are, without gathering them into degree order first (MAF training
    /// ~3% faster). The presets' choice for new models.
    Sorted,
    /// Degrees drawn uniformly from `min(degrees of the layer below) ..= D - 2` with the store's
    /// generator (Germain et al. 2015), so that no unit is left without inputs.
    Random,
}

fn one() -> usize {
    1
}

/// Configuration of a [`Made`] network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MadeConfig {
    /// Number of autoregressive features `D`.
    pub features: usize,
    /// Widths of the hidden layers (at least one layer).
    pub hidden: Vec<usize>,
    /// Width `C` of the context, fed unmasked to the first hidden layer; 0 for none.
    #[serde(default)]
    pub context_features: usize,
    /// Number `P` of outputs per feature (e.g. 2 for an affine transform's shift and log-scale).
    #[serde(default = "one")]
    pub outputs_per_feature: usize,
    /// The autoregressive order.
    #[serde(default)]
    pub order: MadeOrder,
    /// How hidden units get their degrees.
    #[serde(default)]
    pub hidden_degrees: MadeHiddenDegrees,
    /// Add a skip connection around every hidden layer whose width equals the one below it
    /// (pre-activation residual blocks, as nflows' residual MADE).
    #[serde(default)]
    pub residual: bool,
    /// Hidden non-linearity.
    #[serde(default)]
    pub activation: Activation,
}

impl MadeConfig {
    /// A config with `features` features and the given hidden widths; no context, one output per
    /// feature, natural order, cyclic degrees, no residual connections, ReLU.
    pub fn new(features: usize, hidden: Vec<usize>) -> Self {
        Self {
            features,
            hidden,
            context_features: 0,
            outputs_per_feature: 1,
            order: MadeOrder::Natural,
            hidden_degrees: MadeHiddenDegrees::Cyclic,
            residual: false,
            activation: Activation::Relu,
        }
    }

    /// Checks every field; returns [`Error::InvalidConfig`] naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        ensure_config!(self.features > 0, "features", self.features, "must be at least 1");
        ensure_config!(
            !self.hidden.is_empty(),
            "hidden",
            "[]",
            "MADE needs at least one hidden layer"
        );
        if let Some(w) = self.hidden.iter().find(|&&w| w == 0) {
            return Err(Error::config("hidden", w, "hidden widths must be at least 1"));
        }
        ensure_config!(
            self.outputs_per_feature > 0,
            "outputs_per_feature",
            self.outputs_per_feature,
            "must be at least 1"
        );
        if let MadeOrder::Given(order) = &self.order {
            let mut sorted = order.clone();
            sorted.sort_unstable();
            ensure_config!(
                sorted.iter().copied().eq(0..self.features),
                "order",
                format!("{order:?}"),
                format!("must be a permutation of 0..{}", self.features)
            );
        }
        Ok(())
    }
}

/// `y = x (W ⊙ M)^T + b` with a constant binary mask `M`, and the plan of the same layer with
/// its units sorted by degree (the fused path, [`super::dense`]).
#[derive(Debug, Clone)]
struct MaskedLinear {
    weight: Tensor,
    bias: Tensor,
    mask: Tensor,
    plan: Arc<LayerPlan>,
}

impl MaskedLinear {
    fn new(
        params: &Params,
        mask: Vec<f64>,
        fan_out: usize,
        fan_in: usize,
        zero: bool,
        plan: LayerPlan,
    ) -> Result<Self> {
        let init = if zero { Init::Const(0.0) } else { Init::LinearDefault { fan_in } };
        let weight = params.param("weight", (fan_out, fan_in), init)?;
        let bias = params.param("bias", fan_out, init)?;
        let mask = crate::random::from_f64(
            mask,
            (fan_out, fan_in).into(),
            params.dtype(),
            params.device(),
        )?;
        Ok(Self { weight, bias, mask, plan: Arc::new(plan) })
    }

    fn forward(&self, h: &Tensor) -> Result<Tensor> {
        // Masking the weights (not the outputs) each call keeps masked entries out of the graph's
        // gradient, so an optimizer step cannot break the autoregressive structure.
        let w = (&self.weight * &self.mask)?;
        super::fused::unfused(&h.matmul(&w.t()?)?, &self.bias, FusedActivation::Identity)
    }
}

/// `mask[k][j] = connected(out_deg[k], in_deg[j])`, row-major `(out, in)`.
fn mask(out_deg: &[usize], in_deg: &[usize], connected: impl Fn(usize, usize) -> bool) -> Vec<f64> {
    let connected = &connected;
    out_deg
        .iter()
        .flat_map(|&o| in_deg.iter().map(move |&i| if connected(o, i) { 1.0 } else { 0.0 }))
        .collect()
}

/// A masked autoregressive network (Germain et al. 2015, "MADE").
///
/// ```text
/// a_1 = x (W_1 ⊙ M_1)^T + c W_c^T + b_1
/// a_l = act(a_{l-1}) (W_l ⊙ M_l)^T + b_l  [+ a_{l-1} when residual and widths match]
/// out = act(a_L) (W_o ⊙ M_o)^T + b_o
/// ```
///
/// The masks (see *Degrees* below) make `out[:, i, :]` depend only on the inputs at
/// positions before feature `i`'s position in [`Made::order`], and on the context. The output
/// layer starts at zero, so the network outputs 0 until trained.
///
/// # Shapes
/// `x: (B, D)`, `context: (B, C)` -> `(B, D, P)`.
///
/// # Degrees
/// With `pos(f)` the position of feature `f` in the order (0-based), every unit gets a *degree*:
/// input `f` has degree `pos(f) + 1`, in `1..=D`; hidden units have degrees in `m..=D-1`; the
/// outputs of feature `f` have degree `pos(f) + 1`. A hidden unit of degree `d` is connected to
/// the units of the layer below with degree `<= d`; an output of degree `d` to the hidden units of
/// degree `< d`. So a hidden unit of degree `d` sees only inputs at positions `0..d`, and the
/// outputs of the feature at position `k` see only positions `0..k`: the strict inequality at the
/// output is what makes the map autoregressive.
///
/// The smallest hidden degree `m` is 0 when there is a context and 1 otherwise. A unit of degree
/// 0 sees no input but does see the context (added to every first-layer unit), and it is the only
/// kind of unit the first feature's outputs connect to: without it (nflows' choice), the first
/// feature's parameters would be constants that ignore the context. With `D = 1` and no context
/// every hidden unit has degree 0 and the single output is a learned constant.
///
/// Hidden degrees are [`MadeHiddenDegrees::Cyclic`] by default: unit `k` of every hidden layer has
/// degree `m + k mod (D - m)`, so every degree is represented as soon as a layer has `D - m` units
/// (narrower layers leave the last positions with fewer inputs, which is allowed but wasteful).
/// [`MadeHiddenDegrees::Sorted`] gives the same degrees in increasing order (faster on the fused
/// path), [`MadeHiddenDegrees::Random`] draws them as in the paper. A residual layer copies the degrees
/// of the layer below, so each skip connection joins two units of equal degree and the masks
/// still bound what every unit sees.
///
/// Tensors: `layers.{l}.weight (H_l, H_{l-1})`, `layers.{l}.bias`, `context.weight (H_1, C)`,
/// `output.weight (D * P, H_L)` (rows feature-major: row `i * P + p`), `output.bias`.
#[derive(Debug, Clone)]
pub struct Made {
    features: usize,
    context_features: usize,
    outputs_per_feature: usize,
    order: Vec<usize>,
    hidden: Vec<MaskedLinear>,
    /// `skip[l]`: whether hidden layer `l` adds its input (residual connection).
    skip: Vec<bool>,
    context: Option<Tensor>,
    output: MaskedLinear,
    activation: Activation,
    /// Fused path: the first layer's input `[context, x]` gathered into degree order; `None`
    /// when that order is the identity (the natural order, as in the MAF presets, whose
    /// permutations are separate layers): the gather and its backward's scatter-add were ~2%
    /// of a MAF training step.
    input_index: Option<Tensor>,
    /// Fused path: the output columns gathered back from degree order (`None`: identity).
    output_index: Option<Tensor>,
}

impl Made {
    /// Builds the network under `params`, drawing a random order or random degrees, if asked,
    /// from the store's generator.
    pub fn new(params: &Params, config: &MadeConfig) -> Result<Self> {
        config.validate()?;
        let d = config.features;
        let order: Vec<usize> = match &config.order {
            MadeOrder::Natural => (0..d).collect(),
            MadeOrder::Reversed => (0..d).rev().collect(),
            MadeOrder::Random => {
                let mut order: Vec<usize> = (0..d).collect();
                params.store().with_rng(|rng| order.shuffle(rng));
                order
            }
            MadeOrder::Given(order) => order.clone(),
        };
        let mut input_deg = vec![0; d];
        for (position, &feature) in order.iter().enumerate() {
            input_deg[feature] = position + 1;
        }
        let min_deg = if config.context_features > 0 || d == 1 { 0 } else { 1 };
        let mut below = input_deg.clone();
        let mut hidden = Vec::with_capacity(config.hidden.len());
        let mut skip = Vec::with_capacity(config.hidden.len());
        for (l, &width) in config.hidden.iter().enumerate() {
            let residual = config.residual && l > 0 && config.hidden[l - 1] == width;
            let degrees: Vec<usize> = if residual {
                // A skip connection joins unit k to unit k below: equal degrees keep it legal.
                below.clone()
            } else {
                let cyclic = || (0..width).map(|k| min_deg + k % (d - min_deg));
                match config.hidden_degrees {
                    MadeHiddenDegrees::Cyclic => cyclic().collect(),
                    MadeHiddenDegrees::Sorted => {
                        let mut degrees: Vec<usize> = cyclic().collect();
                        degrees.sort_unstable();
                        degrees
                    }
                    MadeHiddenDegrees::Random => {
                        // Not below the smallest degree of the layer below, so that no unit is
                        // left without inputs (the first layer may use every degree).
                        let lo = if l == 0 {
                            min_deg
                        } else {
                            below.iter().copied().min().unwrap_or(min_deg)
                        };
                        let hi = d - 1;
                        params.store().with_rng(|rng| {
                            (0..width).map(|_| rng.random_range(lo.min(hi)..=hi)).collect()
                        })
                    }
                }
            };
            let m = mask(&degrees, &below, |o, i| o >= i);
            // The context enters the first layer as extra inputs of degree 0, read by every unit.
            let plan = if l == 0 {
                let with_context: Vec<usize> = std::iter::repeat_n(0, config.context_features)
                    .chain(below.iter().copied())
                    .collect();
                LayerPlan::masked(&degrees, &with_context, |o, i| o >= i)
            } else {
                LayerPlan::masked(&degrees, &below, |o, i| o >= i)
            };
            let layer =
                MaskedLinear::new(&params.pp("layers").pp(l), m, width, below.len(), false, plan)?;
            hidden.push(layer);
            skip.push(residual);
            below = degrees;
        }
        let p = config.outputs_per_feature;
        let output_deg: Vec<usize> =
            input_deg.iter().flat_map(|&g| std::iter::repeat_n(g, p)).collect();
        let m = mask(&output_deg, &below, |o, i| o > i);
        let plan = LayerPlan::masked(&output_deg, &below, |o, i| o > i);
        let output = MaskedLinear::new(&params.pp("output"), m, d * p, below.len(), true, plan)?;
        let index = |v: &[usize]| -> Result<Option<Tensor>> {
            if is_identity(v) {
                return Ok(None);
            }
            let v: Vec<u32> = v.iter().map(|&i| i as u32).collect();
            Ok(Some(Tensor::new(v, params.device())?))
        };
        let input_index = index(&hidden[0].plan.cols())?;
        let mut unsort = vec![0; d * p];
        for (a, &r) in output.plan.rows().iter().enumerate() {
            unsort[r] = a;
        }
        let output_index = index(&unsort)?;
        let context = if config.context_features > 0 {
            let fan_in = config.context_features;
            let w = params.pp("context").param(
                "weight",
                (config.hidden[0], fan_in),
                Init::LinearDefault { fan_in },
            )?;
            Some(w)
        } else {
            None
        };
        Ok(Self {
            features: d,
            context_features: config.context_features,
            outputs_per_feature: p,
            order,
            hidden,
            skip,
            context,
            output,
            activation: config.activation,
            input_index,
            output_index,
        })
    }

    /// The autoregressive order: `order()[k]` is the feature at position `k`.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Number of features `D`.
    pub fn features(&self) -> usize {
        self.features
    }

    /// Number of outputs per feature `P`.
    pub fn outputs_per_feature(&self) -> usize {
        self.outputs_per_feature
    }

    /// Context width `C` (0 when unconditional).
    pub fn context_features(&self) -> usize {
        self.context_features
    }

    /// `x (B, D)`, `context (B, C)` -> parameters `(B, D, P)`.
    ///
    /// An unconditional network ignores any context it is given (so that it can sit in a chain
    /// with conditional layers); a conditional one requires it.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let (batch, context) = self.check_inputs(x, context)?;
        let out = if fusable(x) {
            self.forward_fused(x, context)?
        } else {
            self.forward_reference(x, context)?
        };
        Ok(out.reshape((batch, self.features, self.outputs_per_feature))?)
    }

    /// Checks `x (B, D)` and, for a conditional network, `context (B, C)`; returns `B` and the
    /// context to use (`None` when unconditional).
    fn check_inputs<'a>(
        &self,
        x: &Tensor,
        context: Option<&'a Tensor>,
    ) -> Result<(usize, Option<&'a Tensor>)> {
        let batch = match x.dims() {
            &[b, d] if d == self.features => b,
            dims => {
                return Err(Error::shape("MADE input", format!("(batch, {})", self.features), dims))
            }
        };
        let context = match &self.context {
            Some(_) => {
                let c = context.ok_or_else(|| {
                    Error::Context(format!(
                        "this MADE is conditional: give a context of shape (batch, {})",
                        self.context_features
                    ))
                })?;
                if c.dims() != [batch, self.context_features] {
                    return Err(Error::shape(
                        "MADE context",
                        format!("({batch}, {})", self.context_features),
                        c.dims(),
                    ));
                }
                Some(c)
            }
            None => None,
        };
        Ok((batch, context))
    }

    /// The fused path: one [`dense`] op per layer on units sorted by degree, skipping the zero
    /// blocks of the masks. Returns `(B, D * P)`.
    fn forward_fused(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let (input, w0) = match (context, &self.context) {
            (Some(c), Some(w_c)) => {
                (Tensor::cat(&[c, x], 1)?, Tensor::cat(&[w_c, &self.hidden[0].weight], 1)?)
            }
            _ => (x.clone(), self.hidden[0].weight.clone()),
        };
        let input = match &self.input_index {
            Some(index) => input.index_select(index, 1)?,
            None => input,
        };
        // ReLU without residual connections fuses into the layers; otherwise the
        // pre-activations are kept for the skip connections and activated separately.
        let fuse = self.activation == Activation::Relu && !self.skip.iter().any(|&s| s);
        let act = if fuse { FusedActivation::Relu } else { FusedActivation::Identity };
        let first = &self.hidden[0];
        let mut a = dense(&input, &w0, &first.bias, &first.plan, act)?;
        for (layer, &skip) in self.hidden.iter().zip(&self.skip).skip(1) {
            let h = if fuse { a.clone() } else { self.activation.apply(&a)? };
            let y = dense(&h, &layer.weight, &layer.bias, &layer.plan, act)?;
            a = if skip { (a + y)? } else { y };
        }
        let h = if fuse { a } else { self.activation.apply(&a)? };
        let out = &self.output;
        let out = dense(&h, &out.weight, &out.bias, &out.plan, FusedActivation::Identity)?;
        Ok(match &self.output_index {
            Some(index) => out.index_select(index, 1)?,
            None => out,
        })
    }

    /// candle's composition on the parameters' layout: the path on other devices and dtypes,
    /// and the reference the fused path is tested against. Returns `(B, D * P)`.
    fn forward_reference(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let mut a = self.hidden[0].forward(x)?;
        if let (Some(c), Some(w_c)) = (context, &self.context) {
            a = (a + c.matmul(&w_c.t()?)?)?;
        }
        for (layer, &skip) in self.hidden.iter().zip(&self.skip).skip(1) {
            let y = layer.forward(&self.activation.apply(&a)?)?;
            a = if skip { (a + y)? } else { y };
        }
        self.output.forward(&self.activation.apply(&a)?)
    }

    /// The `p`-th output of every feature: `(B, D, P) -> (B, D)`.
    pub fn select(params: &Tensor, p: usize) -> Result<Tensor> {
        Ok(params.narrow(Dim::Minus1, p, 1)?.squeeze(Dim::Minus1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;
    use candle_core::{DType, Device, Var};

    fn build(config: &MadeConfig, seed: u64) -> Result<(Made, ParamStore)> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, seed);
        let made = Made::new(&store.root(), config)?;
        store.perturb(0.5, seed + 1)?;
        Ok((made, store))
    }

    /// Checks by autodiff that `d out[:, i, p] / d x_j` is exactly 0 unless `j` comes strictly
    /// before `i` in the order, and (when `dense`, i.e. every degree is present in every layer)
    /// that it is nonzero when it does and that the context reaches every output.
    fn check_autoregressive(config: &MadeConfig, dense: bool) -> Result<()> {
        let (made, _store) = build(config, 3)?;
        let d = config.features;
        let mut rng = crate::random::rng_from_seed(9);
        let x = Var::from_tensor(&crate::random::standard_normal(
            (6, d),
            DType::F64,
            &Device::Cpu,
            &mut rng,
        )?)?;
        let c = if config.context_features > 0 {
            let c = crate::random::standard_normal(
                (6, config.context_features),
                DType::F64,
                &Device::Cpu,
                &mut rng,
            )?;
            Some(Var::from_tensor(&c)?)
        } else {
            None
        };
        let out = made.forward(x.as_tensor(), c.as_ref().map(|c| c.as_tensor()))?;
        assert_eq!(out.dims(), [6, d, config.outputs_per_feature]);
        let mut position = vec![0; d];
        for (k, &f) in made.order().iter().enumerate() {
            position[f] = k;
        }
        for i in 0..d {
            for p in 0..config.outputs_per_feature {
                let grads = out.narrow(1, i, 1)?.narrow(2, p, 1)?.sum_all()?.backward()?;
                let gx = match grads.get(x.as_tensor()) {
                    Some(g) => g.abs()?.sum(0)?.to_vec1::<f64>()?,
                    None => vec![0.0; d],
                };
                for (j, &g) in gx.iter().enumerate() {
                    if position[j] >= position[i] {
                        assert_eq!(
                            g,
                            0.0,
                            "out {i}.{p} depends on x{j} (order {:?})",
                            made.order()
                        );
                    } else if dense {
                        assert!(g > 0.0, "out {i}.{p} ignores x{j} (order {:?})", made.order());
                    }
                }
                if let (Some(c), true) = (&c, dense) {
                    let gc =
                        grads.get(c.as_tensor()).map(|g| g.abs()?.sum_all()?.to_scalar::<f64>());
                    assert!(
                        gc.transpose()?.unwrap_or(0.0) > 0.0,
                        "out {i}.{p} ignores the context"
                    );
                }
            }
        }
        Ok(())
    }

    fn config(d: usize, hidden: Vec<usize>) -> MadeConfig {
        MadeConfig { activation: Activation::Tanh, ..MadeConfig::new(d, hidden) }
    }

    #[test]
    fn natural_order_with_context_is_autoregressive() -> Result<()> {
        let c = MadeConfig { context_features: 2, outputs_per_feature: 2, ..config(4, vec![8, 8]) };
        check_autoregressive(&c, true)?;
        check_autoregressive(&MadeConfig { context_features: 0, ..c }, true)
    }

    #[test]
    fn random_order_and_degrees_are_autoregressive() -> Result<()> {
        let c = MadeConfig {
            order: MadeOrder::Random,
            context_features: 3,
            outputs_per_feature: 3,
            ..config(5, vec![10, 7, 9])
        };
        check_autoregressive(&c, true)?;
        let c = MadeConfig { hidden_degrees: MadeHiddenDegrees::Random, ..c };
        check_autoregressive(&c, false)?;
        let c = MadeConfig { context_features: 0, ..c };
        check_autoregressive(&c, false)
    }

    #[test]
    fn residual_and_given_order_are_autoregressive() -> Result<()> {
        let c = MadeConfig {
            order: MadeOrder::Given(vec![2, 0, 4, 1, 3]),
            residual: true,
            context_features: 2,
            outputs_per_feature: 2,
            ..config(5, vec![8, 8, 8, 6, 6])
        };
        check_autoregressive(&c, true)?;
        let c = MadeConfig {
            hidden_degrees: MadeHiddenDegrees::Random,
            order: MadeOrder::Reversed,
            ..c
        };
        check_autoregressive(&c, false)
    }

    #[test]
    fn one_feature_depends_on_context_only() -> Result<()> {
        let c = MadeConfig { context_features: 2, outputs_per_feature: 2, ..config(1, vec![4]) };
        check_autoregressive(&c, true)?;
        check_autoregressive(&MadeConfig { context_features: 0, ..c }, true)
    }

    #[test]
    fn output_starts_at_zero_and_random_order_is_seeded() -> Result<()> {
        let c = MadeConfig { order: MadeOrder::Random, ..config(6, vec![8]) };
        let store = ParamStore::new(DType::F32, &Device::Cpu, 1);
        let made = Made::new(&store.root(), &c)?;
        let x = Tensor::ones((2, 6), DType::F32, &Device::Cpu)?;
        let out = made.forward(&x, None)?;
        assert_eq!(out.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
        let again = Made::new(&ParamStore::new(DType::F32, &Device::Cpu, 1).root(), &c)?;
        assert_eq!(made.order(), again.order());
        let mut sorted = made.order().to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..6).collect::<Vec<_>>());
        Ok(())
    }

    /// Sorted degrees are the cyclic ones relabelled: the same multiset per layer, in increasing
    /// order, so that with the natural order no layer of the fused path reorders anything.
    #[test]
    fn sorted_degrees_are_the_cyclic_ones_in_order() -> Result<()> {
        let store = ParamStore::new(DType::F32, &Device::Cpu, 1);
        for context_features in [0, 2] {
            let base = MadeConfig { context_features, ..MadeConfig::new(5, vec![23, 17]) };
            let cyclic = Made::new(&store.root().pp("c").pp(context_features), &base)?;
            let sorted = Made::new(
                &store.root().pp("s").pp(context_features),
                &MadeConfig { hidden_degrees: MadeHiddenDegrees::Sorted, ..base },
            )?;
            for (c, s) in cyclic.hidden.iter().zip(&sorted.hidden) {
                let (mut want, got) = (c.plan.degrees().to_vec(), s.plan.degrees().to_vec());
                want.sort_unstable();
                assert_eq!(got, want);
                assert!(c.plan.reorders(), "cyclic degrees are interleaved");
                assert!(!s.plan.reorders(), "sorted degrees need no reordering");
            }
            assert!(!sorted.output.plan.reorders());
        }
        Ok(())
    }

    /// The fused, block-sorted path gives the values and parameter/input gradients of candle's
    /// masked composition, in f32 and f64, with and without context, residual blocks, tanh.
    #[test]
    fn fused_path_matches_the_masked_composition() -> Result<()> {
        let configs = [
            MadeConfig { outputs_per_feature: 2, ..MadeConfig::new(5, vec![24, 24]) },
            MadeConfig {
                context_features: 3,
                outputs_per_feature: 2,
                order: MadeOrder::Random,
                ..MadeConfig::new(4, vec![16, 12])
            },
            MadeConfig {
                residual: true,
                hidden_degrees: MadeHiddenDegrees::Random,
                context_features: 2,
                ..config(6, vec![20, 20, 10])
            },
            MadeConfig::new(1, vec![4]),
            // Sorted degrees: the parameters' own layout, masked in place (no gathers) ...
            MadeConfig {
                hidden_degrees: MadeHiddenDegrees::Sorted,
                outputs_per_feature: 2,
                ..MadeConfig::new(5, vec![40, 40])
            },
            MadeConfig {
                hidden_degrees: MadeHiddenDegrees::Sorted,
                context_features: 2,
                residual: true,
                ..config(4, vec![36, 36])
            },
            // ... and with a random order, whose input columns still need the gather.
            MadeConfig {
                hidden_degrees: MadeHiddenDegrees::Sorted,
                order: MadeOrder::Random,
                ..MadeConfig::new(6, vec![32, 20])
            },
        ];
        for c in &configs {
            for dtype in [DType::F32, DType::F64] {
                let store = ParamStore::new(dtype, &Device::Cpu, 4);
                let made = Made::new(&store.root(), c)?;
                store.perturb(0.5, 5)?;
                let mut rng = crate::random::rng_from_seed(2);
                let x = Var::from_tensor(&crate::random::standard_normal(
                    (9, c.features),
                    dtype,
                    &Device::Cpu,
                    &mut rng,
                )?)?;
                let ctx = crate::random::standard_normal(
                    (9, c.context_features.max(1)),
                    dtype,
                    &Device::Cpu,
                    &mut rng,
                )?;
                let ctx = (c.context_features > 0).then_some(ctx);
                let probe = crate::random::standard_normal(
                    (9, c.features * c.outputs_per_feature),
                    dtype,
                    &Device::Cpu,
                    &mut rng,
                )?;
                let run = |fused: bool| -> Result<Vec<Vec<f64>>> {
                    let out = if fused {
                        made.forward_fused(x.as_tensor(), ctx.as_ref())?
                    } else {
                        made.forward_reference(x.as_tensor(), ctx.as_ref())?
                    };
                    let grads = (&out * &probe)?.sum_all()?.backward()?;
                    let flat = |t: &Tensor| -> Result<Vec<f64>> {
                        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
                    };
                    let mut all = vec![flat(&out)?];
                    let mut tensors = vec![x.as_tensor().clone()];
                    tensors
                        .extend(store.parameters().into_iter().map(|(_, v)| v.as_tensor().clone()));
                    for t in &tensors {
                        let g = grads.get(t).ok_or_else(|| Error::Data("no gradient".into()))?;
                        all.push(flat(g)?);
                    }
                    Ok(all)
                };
                let (fused, reference) = (run(true)?, run(false)?);
                let tol = if dtype == DType::F32 { 1e-4 } else { 1e-11 };
                for (f, r) in fused.iter().zip(&reference) {
                    for (a, e) in f.iter().zip(r) {
                        assert!((a - e).abs() <= tol * e.abs().max(1.0), "{c:?}: {a} vs {e}");
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn invalid_configs_and_inputs_are_errors() -> Result<()> {
        let bad = [
            MadeConfig::new(0, vec![4]),
            MadeConfig::new(3, vec![]),
            MadeConfig::new(3, vec![4, 0]),
            MadeConfig { outputs_per_feature: 0, ..MadeConfig::new(3, vec![4]) },
            MadeConfig { order: MadeOrder::Given(vec![0, 1, 1]), ..MadeConfig::new(3, vec![4]) },
            MadeConfig { order: MadeOrder::Given(vec![0, 1]), ..MadeConfig::new(3, vec![4]) },
        ];
        for c in &bad {
            assert!(matches!(c.validate(), Err(Error::InvalidConfig { .. })), "{c:?}");
        }
        let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
        let made = Made::new(
            &store.root(),
            &MadeConfig { context_features: 2, ..MadeConfig::new(3, vec![4]) },
        )?;
        let x = Tensor::zeros((2, 3), DType::F64, &Device::Cpu)?;
        assert!(matches!(made.forward(&x, None), Err(Error::Context(_))));
        let wide = Tensor::zeros((2, 3), DType::F64, &Device::Cpu)?;
        assert!(matches!(made.forward(&x, Some(&wide)), Err(Error::Shape { .. })));
        assert!(matches!(made.forward(&wide.narrow(1, 0, 2)?, None), Err(Error::Shape { .. })));
        Ok(())
    }

    #[test]
    fn config_round_trips_through_json() -> Result<()> {
        let c = MadeConfig {
            order: MadeOrder::Given(vec![1, 0]),
            residual: true,
            ..MadeConfig::new(2, vec![3])
        };
        let back: MadeConfig = serde_json::from_str(&serde_json::to_string(&c)?)?;
        assert_eq!(back, c);
        let minimal: MadeConfig = serde_json::from_str(r#"{"features": 2, "hidden": [4]}"#)?;
        assert_eq!(minimal, MadeConfig::new(2, vec![4]));
        Ok(())
    }
}
