//! Block neural autoregressive flow (De Cao, Titov and Aziz 2019, "Block Neural Autoregressive
//! Flow"): a whole autoregressive network as one bijection.

use candle_core::Tensor;

use super::log_space::{constant, log_sum_exp};
use super::Bijection;
use crate::ops::{log_sigmoid, softplus};
use crate::params::{Init, Params};
use crate::solve::{solve_increasing, SolveOptions};
use crate::{ensure_config, Error, Result};

/// Hyperparameters of one [`Bnaf`] layer.
#[derive(Debug, Clone, PartialEq)]
pub struct BnafConfig {
    /// Data dimension `D`.
    pub features: usize,
    /// Context dimension `C` (0 = unconditional).
    pub context_features: usize,
    /// Hidden units per feature `a`: hidden layers have `a D` units.
    pub hidden_factor: usize,
    /// Number of hidden layers (at least 1); the network has one more masked linear map.
    pub hidden_layers: usize,
}

impl BnafConfig {
    /// `features` dimensions, 8 hidden units per feature, 1 hidden layer, no context.
    pub fn new(features: usize) -> Self {
        Self { features, context_features: 0, hidden_factor: 8, hidden_layers: 1 }
    }

    /// Checks every hyperparameter, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        ensure_config!(self.features >= 1, "features", self.features, "must be at least 1");
        ensure_config!(
            self.hidden_factor >= 1,
            "hidden_factor",
            self.hidden_factor,
            "must be at least 1"
        );
        ensure_config!(
            self.hidden_layers >= 1,
            "hidden_layers",
            self.hidden_layers,
            "must be at least 1"
        );
        Ok(())
    }
}

/// A block-masked, weight-normalized linear map `D in_d -> D out_d`.
#[derive(Debug, Clone)]
struct BlockLinear {
    weight: Tensor,
    log_scale: Tensor,
    bias: Tensor,
    /// 1 on the diagonal blocks.
    mask_diag: Tensor,
    /// 1 on the blocks below the diagonal.
    mask_below: Tensor,
    d: usize,
    in_d: usize,
    out_d: usize,
}

impl BlockLinear {
    fn new(params: &Params, d: usize, in_d: usize, out_d: usize) -> Result<Self> {
        let (rows, cols) = (d * out_d, d * in_d);
        let weight = params.param("weight", (rows, cols), Init::LinearDefault { fan_in: cols })?;
        let log_scale =
            params.param("log_scale", (rows, 1), Init::Uniform { lo: -1.0, hi: 0.0 })?;
        let bias = params.param("bias", rows, Init::LinearDefault { fan_in: cols })?;
        let block = |pred: fn(usize, usize) -> bool| -> Vec<f64> {
            (0..rows * cols)
                .map(|i| if pred((i / cols) / out_d, (i % cols) / in_d) { 1.0 } else { 0.0 })
                .collect()
        };
        let mask_diag = constant(block(|r, c| r == c), &[rows, cols], &weight)?;
        let mask_below = constant(block(|r, c| c < r), &[rows, cols], &weight)?;
        Ok(Self { weight, log_scale, bias, mask_diag, mask_below, d, in_d, out_d })
    }

    /// `(W (rows, cols), log of W's diagonal blocks (D, out_d, in_d))`, with
    /// `W = exp(s) V / |V_row|`, `V = exp(weight)` on the diagonal blocks, `weight` below, 0 above.
    fn weights(&self) -> Result<(Tensor, Tensor)> {
        let v = ((self.weight.exp()? * &self.mask_diag)? + (&self.weight * &self.mask_below)?)?;
        let sq_norm = v.sqr()?.sum_keepdim(1)?;
        let w = v.broadcast_mul(&(self.log_scale.exp()? / sq_norm.sqrt()?)?)?;
        let log_w = self.weight.broadcast_add(&(&self.log_scale - (sq_norm.log()? * 0.5)?)?)?;
        // Off-diagonal entries are zeroed, so summing over the column blocks picks the diagonal.
        let diag =
            (log_w * &self.mask_diag)?.reshape((self.d, self.out_d, self.d, self.in_d))?.sum(2)?;
        Ok((w, diag))
    }
}

/// `log(exp(a) @ exp(b))` for `a (D, n, k)`, `b (D, k, B)`, as a plain batched matrix product
/// of `exp(a - max_k a)` and `exp(b - max_k b)` (each has an entry 1 in every row / column),
/// the maxima added back. Unlike a broadcast log-sum-exp it never forms a `(D, n, k, B)` tensor
/// (`k` times the memory traffic, in unfused element-wise ops). The product is floored at
/// 1e-30 before the log, so a product that underflows (only when the two maxima fall on indices
/// where the other factor is below 1e-30 of its own maximum) gives a finite, overestimated
/// value instead of `-inf`.
fn shifted_log_matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let ma = a.max_keepdim(2)?.detach();
    let mb = b.max_keepdim(1)?.detach();
    let product = a.broadcast_sub(&ma)?.exp()?.matmul(&b.broadcast_sub(&mb)?.exp()?)?;
    Ok(product.clamp(1e-30, f64::INFINITY)?.log()?.broadcast_add(&ma)?.broadcast_add(&mb)?)
}

/// Block neural autoregressive flow layer (De Cao et al. 2019), with the gated residual of the
/// paper's code:
///
/// ```text
/// h_0 = x                                   (B, D)
/// h_l = tanh(W_l h_{l-1} + b_l [+ V c])     (B, a D), l = 1..L   (context only at l = 1)
/// f(x) = W_{L+1} h_L + b_{L+1}              (B, D)
/// z = sigmoid(g) f(x) + (1 - sigmoid(g)) x
/// ```
///
/// Each `W_l` is block lower triangular in `D x D` blocks (block `(i, j)` maps feature `j`'s
/// units to feature `i`'s): zero above the diagonal, `exp(.)` of free weights on the diagonal
/// (positive), free below; rows are weight-normalized, `W = exp(s) V / |V_row|`. So `z_i`
/// depends on `x_<=i` only and increases in `x_i`; the Jacobian is lower triangular with
///
/// ```text
/// dz_i/dx_i = sigmoid(g) J_i + 1 - sigmoid(g),   J_i = D_{L+1,i} T_{L,i} D_{L,i} ... T_{1,i} D_{1,i}
/// ```
///
/// where `D_{l,i}` is the `i`-th diagonal block of `W_l` and `T_{l,i}` the diagonal of `tanh'`.
/// `log J_i` is computed from the log-blocks (`log D = s + weight - log|V_row|`, `log tanh'(u) =
/// 2 (log 2 - u - softplus(-2u))`) by max-shifted matrix products: the factors are rescaled by
/// their largest entries before multiplying and the logs of the scales added back, so neither
/// saturated tanh units nor many small factors underflow.
/// The residual gate (`g` starts at 0) makes `z_i` grow at least linearly in `x_i`, so each
/// coordinate map is onto `R` (the network part alone is bounded by the tanh layers).
///
/// **Inverse**: no closed form. Coordinates are solved in order `i = 0..D` with
/// [`solve_increasing`] (each `z_i` is increasing in `x_i` given the `x_<i` already found), one
/// network evaluation of the whole batch per solver step. The result carries no gradient with
/// respect to the parameters (a root, fine for sampling); its ladj does.
///
/// Tensors: `layers.{l}.weight (a D, a D)` (first `(a D, D)`, last `(D, a D)`),
/// `layers.{l}.log_scale`, `layers.{l}.bias`, `context.weight (a D, C)`, `gate (1)`.
///
/// # Shapes
/// `x: (B, D)`, `context: (B, C)`; ladj `(B,)`.
#[derive(Debug, Clone)]
pub struct Bnaf {
    layers: Vec<BlockLinear>,
    context: Option<Tensor>,
    gate: Tensor,
    features: usize,
    context_features: usize,
}

impl Bnaf {
    /// Builds the layer's tensors under `params`.
    pub fn new(params: &Params, config: &BnafConfig) -> Result<Self> {
        config.validate()?;
        let (d, a) = (config.features, config.hidden_factor);
        let mut dims = vec![1];
        dims.extend(std::iter::repeat_n(a, config.hidden_layers));
        dims.push(1);
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(l, w)| BlockLinear::new(&params.pp("layers").pp(l), d, w[0], w[1]))
            .collect::<Result<Vec<_>>>()?;
        let context = if config.context_features > 0 {
            let c = config.context_features;
            Some(params.pp("context").param(
                "weight",
                (a * d, c),
                Init::LinearDefault { fan_in: c },
            )?)
        } else {
            None
        };
        let gate = params.param("gate", 1, Init::Const(0.0))?;
        Ok(Self { layers, context, gate, features: d, context_features: config.context_features })
    }

    /// `x (B, D) -> (z (B, D), log dz_i/dx_i (B, D))`.
    fn forward_diag(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let batch = match x.dims() {
            &[b, d] if d == self.features => b,
            dims => {
                return Err(Error::shape("BNAF input", format!("(batch, {})", self.features), dims))
            }
        };
        let mut h = x.clone();
        // log dh_l/dx along each feature's diagonal blocks, laid out (D, units, B) so that the
        // products with the next diagonal blocks are D matrix products over the whole batch.
        let mut log_j: Option<Tensor> = None;
        for (l, layer) in self.layers.iter().enumerate() {
            let (w, diag) = layer.weights()?;
            h = h.matmul(&w.t()?)?.broadcast_add(&layer.bias)?;
            if l == 0 {
                if let Some(v) = &self.context {
                    let c = self.check_context(context, batch)?;
                    h = (h + c.matmul(&v.t()?)?)?;
                }
            }
            log_j = Some(match log_j {
                None => diag,
                Some(below) => shifted_log_matmul(&diag, &below)?,
            });
            if l + 1 < self.layers.len() {
                // log tanh'(u) = log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).
                let log_dtanh =
                    ((h.neg()? - softplus(&(&h * -2.0)?)?)? + std::f64::consts::LN_2)? * 2.0;
                let log_dtanh =
                    log_dtanh?.reshape((batch, self.features, layer.out_d))?.permute((1, 2, 0))?;
                log_j = log_j.map(|j| j.broadcast_add(&log_dtanh)).transpose()?;
                h = h.tanh()?;
            }
        }
        let log_j = match log_j {
            Some(j) => j.broadcast_as((self.features, 1, batch))?.squeeze(1)?.t()?,
            None => x.zeros_like()?,
        };
        let (lg, lg_neg) = (log_sigmoid(&self.gate)?, log_sigmoid(&self.gate.neg()?)?);
        let z = (h.broadcast_mul(&lg.exp()?)? + x.broadcast_mul(&lg_neg.exp()?)?)?;
        let both = Tensor::stack(
            &[log_j.broadcast_add(&lg)?, lg_neg.broadcast_as((batch, self.features))?],
            2,
        )?;
        Ok((z, log_sum_exp(&both, 2)?))
    }

    fn check_context<'a>(&self, context: Option<&'a Tensor>, batch: usize) -> Result<&'a Tensor> {
        let c = context.ok_or_else(|| {
            Error::Context(format!(
                "this BNAF layer is conditional: give a context of shape (batch, {})",
                self.context_features
            ))
        })?;
        if c.dims() != [batch, self.context_features] {
            return Err(Error::shape(
                "BNAF context",
                format!("({batch}, {})", self.context_features),
                c.dims(),
            ));
        }
        Ok(c)
    }
}

impl Bijection for Bnaf {
    fn forward_and_ladj(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (z, log_diag) = self.forward_diag(x, context)?;
        Ok((z, log_diag.sum(1)?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (batch, d) = match z.dims() {
            &[b, d] if d == self.features => (b, d),
            dims => {
                return Err(Error::shape("BNAF input", format!("(batch, {})", self.features), dims))
            }
        };
        let opts = SolveOptions::for_dtype(z.dtype());
        let z = z.detach();
        let ctx = context.map(Tensor::detach);
        let mut x = z.clone();
        crate::inference::without_gradients(|| -> Result<()> {
            for i in 0..d {
                let target = z.narrow(1, i, 1)?.squeeze(1)?;
                let guess = x.narrow(1, i, 1)?.squeeze(1)?;
                let known = x.clone();
                let solution = solve_increasing(&target, Some(&guess), &opts, |xi| {
                    let mut parts = Vec::with_capacity(3);
                    if i > 0 {
                        parts.push(known.narrow(1, 0, i)?);
                    }
                    parts.push(xi.unsqueeze(1)?);
                    if i + 1 < d {
                        parts.push(known.narrow(1, i + 1, d - i - 1)?);
                    }
                    let (zf, log_diag) =
                        self.forward_diag(&Tensor::cat(&parts, 1)?, ctx.as_ref())?;
                    Ok((
                        zf.narrow(1, i, 1)?.squeeze(1)?,
                        log_diag.narrow(1, i, 1)?.squeeze(1)?.exp()?,
                    ))
                })?;
                let mut parts = Vec::with_capacity(3);
                if i > 0 {
                    parts.push(x.narrow(1, 0, i)?);
                }
                parts.push(solution.x.unsqueeze(1)?);
                if i + 1 < d {
                    parts.push(x.narrow(1, i + 1, d - i - 1)?);
                }
                x = Tensor::cat(&parts, 1)?;
            }
            Ok(())
        })?;
        debug_assert_eq!(x.dim(0).ok(), Some(batch));
        let (_, ladj) = self.forward_and_ladj(&x, context)?;
        Ok((x, ladj.neg()?))
    }

    fn jacobian_order(&self) -> Option<Vec<usize>> {
        Some((0..self.features).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;
    use candle_core::{DType, Device, Var};

    #[test]
    fn far_out_inputs_stay_finite_and_invert() -> Result<()> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 1);
        let layer =
            Bnaf::new(&store.root(), &BnafConfig { hidden_layers: 2, ..BnafConfig::new(3) })?;
        store.perturb(0.5, 2)?;
        let x = Var::from_tensor(&Tensor::new(
            &[[-1e4f64, 0.3, 1e4], [5.0, -1e4, -2.0]],
            &Device::Cpu,
        )?)?;
        let (z, ladj) = layer.forward_and_ladj(x.as_tensor(), None)?;
        let grads = (z.sum_all()? + ladj.sum_all()?)?.backward()?;
        for (_, var) in store.parameters() {
            let g =
                grads.get(var.as_tensor()).expect("gradient").flatten_all()?.to_vec1::<f64>()?;
            assert!(g.iter().all(|v| v.is_finite()));
        }
        let back = layer.inverse(&z, None)?;
        let err = (back - x.as_tensor())?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(err < 1e-6 * 1e4, "{err}");
        Ok(())
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 1);
        for c in [
            BnafConfig { hidden_factor: 0, ..BnafConfig::new(2) },
            BnafConfig { hidden_layers: 0, ..BnafConfig::new(2) },
            BnafConfig::new(0),
        ] {
            assert!(matches!(Bnaf::new(&store.root(), &c), Err(Error::InvalidConfig { .. })));
        }
    }
}
