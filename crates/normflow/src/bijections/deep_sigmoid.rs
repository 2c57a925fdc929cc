//! Deep sigmoidal transformers of neural autoregressive flows (Huang et al. 2018, "Neural
//! Autoregressive Flows"): DSF and DDSF.

use candle_core::Tensor;

use super::log_space::{constant, log_matmul, log_sum_exp};
use super::transformer::{check_raw_shape, Transformer};
use crate::ops::{log_sigmoid, softplus};
use crate::{ensure_config, Result};

/// Smallest slope `a` of a sigmoid unit: keeps `log a` finite for any raw value.
const MIN_SLOPE: f64 = 1e-3;

/// One sigmoidal layer `h_in (inputs) -> h_out (outputs)` through `units` sigmoid units.
#[derive(Debug, Clone, Copy)]
struct Layer {
    inputs: usize,
    units: usize,
    outputs: usize,
}

impl Layer {
    /// Raw parameters: slopes `a (K)`, biases `b (K)`, output weights `w (out, K)` and, with
    /// more than one input, input weights `u (K, in)`.
    fn params(&self) -> usize {
        let u = if self.inputs > 1 { self.units * self.inputs } else { 0 };
        2 * self.units + self.outputs * self.units + u
    }
}

/// The deep sigmoidal flow transformer (DSF) and its dense form (DDSF) of Huang et al. 2018.
///
/// One sigmoidal layer maps `h_in` (`in` values) to `h_out` (`out` values) through `K` units:
///
/// ```text
/// a = softplus(r_a + c_a) + 1e-3   (K, positive)        b = r_b + beta          (K)
/// w = softmax_K(r_w + omega)       (out, K, rows sum 1) u = softmax_in(r_u)     (K, in)
/// pre_k = a_k sum_j u_kj h_in_j + b_k
/// h_out_o = logit(sum_k w_ok sigmoid(pre_k))
/// ```
///
/// - **DSF** (`dense = false`): one layer `1 -> K units -> 1`; `P = 3K` raw parameters.
/// - **DDSF** (`dense = true`): two layers `1 -> K units -> K` and `K -> K units -> 1`;
///   `P = 2K^2 + 5K`.
///
/// Every layer is strictly increasing in each input (positive `a`, `u`, `w`), so the
/// composition is a strictly increasing map `R -> R` whose tails are linear (the slowest unit
/// dominates `logit` there), which the inverse's bracketing relies on.
///
/// **Log-space.** `log s` and `log(1 - s)` (with `s = sum_k w_k sigmoid(pre_k)`) are log-sum-exps
/// of `log w + log sigmoid(+-pre)`, since `1 - s = sum_k w_k sigmoid(-pre_k)`; so
/// `h_out = log s - log(1 - s)` never evaluates a saturated sigmoid, and the log-derivative,
///
/// ```text
/// log dh_out_o/dh_in_j = LSE_k(log w_ok + log sigmoid(pre_k) + log sigmoid(-pre_k) + log a_k
///                              + log u_kj) - log s_o - log(1 - s_o)
/// ```
///
/// is combined across layers by a log-space matrix product (the paper's section 3.3): values and
/// gradients are finite at `|x| = 1e4` and beyond.
///
/// **Zero raw parameters.** `c_a` makes every slope 1 and `w`, `u` uniform; fixed offsets
/// `beta_k` spread over `[-1, 1]`, and, for DDSF's first layer, `omega_ok = 0.5 sin(2.4 (oK + k) +
/// 1)`, make the units differ: a conditioner that starts at zero outputs could never tell
/// identical units apart (their gradients would be equal forever). The zero map is therefore not
/// exactly the identity but `x -> logit(mean_k sigmoid(x + beta_k))` for DSF (within 0.21 of
/// `x` everywhere for `K = 8`), and that map applied twice for DDSF.
///
/// **Inverse** by [`invert_transformer`](crate::solve::invert_transformer) (bracketed Newton).
///
/// # Shapes
/// As [`Transformer`]: `x (B, D)`, `raw (B, D, P)`.
#[derive(Debug, Clone)]
pub struct DeepSigmoidTransformer {
    hidden: usize,
    layers: Vec<Layer>,
}

impl DeepSigmoidTransformer {
    /// DSF (`dense = false`) or DDSF (`dense = true`) with `hidden` sigmoid units per layer.
    pub fn new(hidden: usize, dense: bool) -> Result<Self> {
        ensure_config!(hidden >= 1, "hidden", hidden, "a sigmoidal flow needs at least 1 unit");
        let layers = if dense {
            vec![
                Layer { inputs: 1, units: hidden, outputs: hidden },
                Layer { inputs: hidden, units: hidden, outputs: 1 },
            ]
        } else {
            vec![Layer { inputs: 1, units: hidden, outputs: 1 }]
        };
        Ok(Self { hidden, layers })
    }

    /// Sigmoid units per layer `K`.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Whether this is the dense form (DDSF).
    pub fn dense(&self) -> bool {
        self.layers.len() > 1
    }

    /// One layer on `h (n, in)` with raw parameters `raw (n, layer.params())`:
    /// `(h_out (n, out), log dh_out/dh_in (n, out, in))`.
    fn layer(&self, layer: Layer, h: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        let Layer { inputs, units: k, outputs } = layer;
        let n = h.dim(0)?;
        let slope0 = ((1.0 - MIN_SLOPE).exp() - 1.0).ln();
        let a = (softplus(&(raw.narrow(1, 0, k)? + slope0)?)? + MIN_SLOPE)?;
        let beta: Vec<f64> = (0..k)
            .map(|i| if k == 1 { 0.0 } else { -1.0 + 2.0 * i as f64 / (k - 1) as f64 })
            .collect();
        let b = raw.narrow(1, k, k)?.broadcast_add(&constant(beta, &[1, k], raw)?)?;
        let mut rw = raw.narrow(1, 2 * k, outputs * k)?.reshape((n, outputs, k))?;
        if outputs > 1 {
            let omega: Vec<f64> =
                (0..outputs * k).map(|i| 0.5 * (2.4 * i as f64 + 1.0).sin()).collect();
            rw = rw.broadcast_add(&constant(omega, &[1, outputs, k], raw)?)?;
        }
        let log_w = candle_nn::ops::log_softmax(&rw, 2)?;
        let log_u = if inputs > 1 {
            let ru = raw.narrow(1, 2 * k + outputs * k, k * inputs)?.reshape((n, k, inputs))?;
            Some(candle_nn::ops::log_softmax(&ru, 2)?)
        } else {
            None
        };
        let mixed = match &log_u {
            Some(log_u) => log_u.exp()?.matmul(&h.unsqueeze(2)?)?.squeeze(2)?,
            None => h.broadcast_as((n, k))?,
        };
        let pre = ((a.clone() * mixed)? + b)?;
        let (lp, ln) = (log_sigmoid(&pre)?, log_sigmoid(&pre.neg()?)?);
        let log_s = log_sum_exp(&log_w.broadcast_add(&lp.unsqueeze(1)?)?, 2)?;
        let log_1s = log_sum_exp(&log_w.broadcast_add(&ln.unsqueeze(1)?)?, 2)?;
        let h_out = (&log_s - &log_1s)?;
        let inner = ((lp + ln)? + a.log()?)?.unsqueeze(1)?; // (n, 1, K)
        let lj = match &log_u {
            None => log_sum_exp(&log_w.broadcast_add(&inner)?, 2)?.unsqueeze(2)?,
            Some(log_u) => {
                let t = log_w
                    .broadcast_add(&inner)?
                    .unsqueeze(3)?
                    .broadcast_add(&log_u.unsqueeze(1)?)?; // (n, out, K, in)
                log_sum_exp(&t, 2)?
            }
        };
        let lj = lj.broadcast_sub(&(log_s + log_1s)?.unsqueeze(2)?)?;
        Ok((h_out, lj))
    }
}

impl Transformer for DeepSigmoidTransformer {
    fn params_per_feature(&self) -> usize {
        self.layers.iter().map(Layer::params).sum()
    }

    fn forward(&self, x: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        let p = self.params_per_feature();
        check_raw_shape(x, raw, p)?;
        let (b, d) = x.dims2()?;
        let raw = raw.reshape((b * d, p))?;
        let mut h = x.reshape((b * d, 1))?;
        let mut log_j: Option<Tensor> = None;
        let mut offset = 0;
        for &layer in &self.layers {
            let (h_out, lj) = self.layer(layer, &h, &raw.narrow(1, offset, layer.params())?)?;
            offset += layer.params();
            log_j = Some(match log_j {
                None => lj,
                Some(below) => log_matmul(&lj, &below)?,
            });
            h = h_out;
        }
        let log_j = match log_j {
            Some(l) => l.reshape((b, d))?,
            None => x.zeros_like()?,
        };
        Ok((h.reshape((b, d))?, log_j))
    }

    fn inverse(&self, y: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        crate::solve::invert_transformer(self, y, raw)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Far-out inputs: finite values, log-derivatives and gradients (raw and input), and a
    /// round trip through the numerical inverse, for any transformer.
    pub(crate) fn far_out_is_finite_and_invertible(t: &dyn Transformer) -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[-1e4f64, -30.0, 0.0], [0.7, 40.0, 1e4]], &dev)?;
        let p = t.params_per_feature();
        let mut rng = crate::random::rng_from_seed(4);
        let raw = Var::from_tensor(&crate::random::standard_normal(
            (2, 3, p),
            DType::F64,
            &dev,
            &mut rng,
        )?)?;
        let xv = Var::from_tensor(&x)?;
        let (y, ld) = t.forward(xv.as_tensor(), raw.as_tensor())?;
        let grads = (y.sum_all()? + ld.sum_all()?)?.backward()?;
        for g in [grads.get(raw.as_tensor()), grads.get(xv.as_tensor())] {
            let g = g.expect("a gradient").flatten_all()?.to_vec1::<f64>()?;
            assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        }
        let (yv, ldv) = (y.flatten_all()?.to_vec1::<f64>()?, ld.flatten_all()?.to_vec1::<f64>()?);
        assert!(yv.iter().chain(&ldv).all(|v| v.is_finite()), "{yv:?} {ldv:?}");
        let (back, ld_inv) = t.inverse(&y, raw.as_tensor())?;
        let back = back.flatten_all()?.to_vec1::<f64>()?;
        for (a, b) in back.iter().zip(x.flatten_all()?.to_vec1::<f64>()?) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
        let sum = (ld_inv + ld)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(sum < 1e-6, "{sum}");
        Ok(())
    }

    /// The map at zero raw parameters, at `xs`.
    pub(crate) fn zero_map(t: &dyn Transformer, xs: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
        let x = Tensor::new(xs, &Device::Cpu)?.unsqueeze(0)?;
        let raw = Tensor::zeros((1, xs.len(), t.params_per_feature()), DType::F64, &Device::Cpu)?;
        let (y, ld) = t.forward(&x, &raw)?;
        Ok((y.flatten_all()?.to_vec1()?, ld.flatten_all()?.to_vec1()?))
    }

    #[test]
    fn dsf_and_ddsf_are_finite_far_out_and_invert() -> Result<()> {
        far_out_is_finite_and_invertible(&DeepSigmoidTransformer::new(4, false)?)?;
        far_out_is_finite_and_invertible(&DeepSigmoidTransformer::new(3, true)?)
    }

    #[test]
    fn one_unit_at_zero_is_the_identity_and_more_are_close() -> Result<()> {
        let xs = [-50.0, -2.0, 0.0, 1.5, 50.0];
        let (y, ld) = zero_map(&DeepSigmoidTransformer::new(1, false)?, &xs)?;
        for ((a, b), l) in y.iter().zip(xs).zip(&ld) {
            assert!((a - b).abs() < 1e-9 && l.abs() < 1e-9, "{a} {b} {l}");
        }
        let (y, _) = zero_map(&DeepSigmoidTransformer::new(8, false)?, &xs)?;
        for (a, b) in y.iter().zip(xs) {
            assert!((a - b).abs() < 0.25, "{a} {b}");
        }
        Ok(())
    }

    #[test]
    fn parameter_counts() -> Result<()> {
        assert_eq!(DeepSigmoidTransformer::new(8, false)?.params_per_feature(), 24);
        assert_eq!(DeepSigmoidTransformer::new(4, true)?.params_per_feature(), 2 * 16 + 20);
        assert!(DeepSigmoidTransformer::new(0, false).is_err());
        Ok(())
    }
}
