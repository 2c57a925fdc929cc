//! Gated recurrent unit (Cho et al. 2014), PyTorch's formulation, on [`Params`].
//!
//! candle-nn has a GRU, but it creates its weights through a `VarBuilder`; the library's
//! parameters live in a seeded [`crate::ParamStore`], so the cell is written here.

use candle_core::{Tensor, D};

use super::linear;
use crate::params::{Init, Params};
use crate::{ensure_config, Error, Result};

/// A GRU cell with `I` inputs and `H` hidden units:
///
/// ```text
/// r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
/// u = sigmoid(W_iu x + b_iu + W_hu h + b_hu)
/// n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
/// h' = (1 - u) * n + u * h
/// ```
///
/// Weights `weight_ih (3H, I)`, `weight_hh (3H, H)` and biases `(3H,)` hold the reset, update
/// and candidate rows in that order (PyTorch's layout), initialized uniform on
/// `[-1/sqrt(H), 1/sqrt(H))` as PyTorch does.
///
/// # Shapes
/// [`Gru::step`]: `x (B, I)`, `h (B, H)` -> `(B, H)`. [`Gru::run`]: `x (B, T, I)` -> `(B, T, H)`.
#[derive(Debug, Clone)]
pub struct Gru {
    weight_ih: Tensor,
    bias_ih: Tensor,
    weight_hh: Tensor,
    bias_hh: Tensor,
    inputs: usize,
    hidden: usize,
}

impl Gru {
    /// Creates the weights under `params`.
    pub fn new(params: &Params, inputs: usize, hidden: usize) -> Result<Self> {
        ensure_config!(inputs > 0, "gru inputs", inputs, "must be at least 1");
        ensure_config!(hidden > 0, "gru hidden", hidden, "must be at least 1");
        let init = Init::LinearDefault { fan_in: hidden };
        Ok(Self {
            weight_ih: params.param("weight_ih", (3 * hidden, inputs), init)?,
            bias_ih: params.param("bias_ih", 3 * hidden, init)?,
            weight_hh: params.param("weight_hh", (3 * hidden, hidden), init)?,
            bias_hh: params.param("bias_hh", 3 * hidden, init)?,
            inputs,
            hidden,
        })
    }

    /// Number of hidden units `H`.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Number of inputs `I`.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// The zero state `(B, H)` in `like`'s dtype and device.
    pub fn zero_state(&self, batch: usize, like: &Tensor) -> Result<Tensor> {
        Ok(Tensor::zeros((batch, self.hidden), like.dtype(), like.device())?)
    }

    /// `W_i x + b_i` for every step at once: `x (B, T, I) -> (B, T, 3H)` (one product instead
    /// of `T`).
    pub fn project_inputs(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, i) = x.dims3()?;
        if i != self.inputs {
            return Err(Error::shape("gru input", format!("(B, T, {})", self.inputs), x.dims()));
        }
        let flat = linear(&x.reshape((b * t, i))?, &self.weight_ih, &self.bias_ih)?;
        Ok(flat.reshape((b, t, 3 * self.hidden))?)
    }

    /// One step from a projected input `gi = W_i x + b_i (B, 3H)` and the state `h (B, H)`.
    pub fn step_projected(&self, gi: &Tensor, h: &Tensor) -> Result<Tensor> {
        let hs = self.hidden;
        let gh = linear(h, &self.weight_hh, &self.bias_hh)?;
        let part = |t: &Tensor, k: usize| t.narrow(D::Minus1, k * hs, hs);
        let r = candle_nn::ops::sigmoid(&(part(gi, 0)? + part(&gh, 0)?)?)?;
        let u = candle_nn::ops::sigmoid(&(part(gi, 1)? + part(&gh, 1)?)?)?;
        let n = (part(gi, 2)? + (r * part(&gh, 2)?)?)?.tanh()?;
        // h' = n + u (h - n): the same value as (1 - u) n + u h with one product fewer.
        Ok((&n + (u * (h - &n)?)?)?)
    }

    /// One step: `x (B, I)`, `h (B, H)` -> `h' (B, H)`.
    pub fn step(&self, x: &Tensor, h: &Tensor) -> Result<Tensor> {
        let gi = linear(x, &self.weight_ih, &self.bias_ih)?;
        self.step_projected(&gi, h)
    }

    /// The states after each step from the zero state: `x (B, T, I) -> (B, T, H)`, entry `t`
    /// having read `x_0 .. x_t`.
    pub fn run(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let gi = self.project_inputs(x)?;
        let mut h = self.zero_state(b, x)?;
        let mut states = Vec::with_capacity(t);
        for s in 0..t {
            h = self.step_projected(&gi.narrow(1, s, 1)?.squeeze(1)?.contiguous()?, &h)?;
            states.push(h.clone());
        }
        Ok(Tensor::stack(&states, 1)?)
    }

    /// The states *before* each step: `x (B, T, I) -> (B, T, H)`, entry `t` having read
    /// `x_0 .. x_{t-1}` (entry 0 is the zero state). This is the history a causal model
    /// conditions step `t` on. The last input is never read.
    pub fn run_shifted(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let zero = self.zero_state(b, x)?.unsqueeze(1)?;
        if t == 1 {
            return Ok(zero);
        }
        let states = self.run(&x.narrow(1, 0, t - 1)?)?;
        Ok(Tensor::cat(&[&zero, &states], 1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;
    use candle_core::{DType, Device};

    fn sigmoid(v: f64) -> f64 {
        1.0 / (1.0 + (-v).exp())
    }

    /// One step against the formula computed by hand on the host.
    #[test]
    fn step_matches_a_hand_computation() -> Result<()> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 3);
        let gru = Gru::new(&store.root(), 2, 2)?;
        let host = |t: &Tensor| -> Result<Vec<f64>> { Ok(t.flatten_all()?.to_vec1::<f64>()?) };
        let (wi, bi, wh, bh) = (
            host(&gru.weight_ih)?,
            host(&gru.bias_ih)?,
            host(&gru.weight_hh)?,
            host(&gru.bias_hh)?,
        );
        let x = [0.3, -1.2];
        let h = [0.5, -0.25];
        let dot = |w: &[f64], row: usize, v: &[f64]| -> f64 {
            (0..v.len()).map(|j| w[row * v.len() + j] * v[j]).sum()
        };
        let mut expected = [0.0; 2];
        for k in 0..2 {
            let gi = |g: usize| dot(&wi, g * 2 + k, &x) + bi[g * 2 + k];
            let gh = |g: usize| dot(&wh, g * 2 + k, &h) + bh[g * 2 + k];
            let r = sigmoid(gi(0) + gh(0));
            let u = sigmoid(gi(1) + gh(1));
            let n = (gi(2) + r * gh(2)).tanh();
            expected[k] = (1.0 - u) * n + u * h[k];
        }
        let got = gru.step(&Tensor::new(&[x], &Device::Cpu)?, &Tensor::new(&[h], &Device::Cpu)?)?;
        let got = host(&got)?;
        for k in 0..2 {
            assert!((got[k] - expected[k]).abs() < 1e-12, "{got:?} vs {expected:?}");
        }
        Ok(())
    }

    /// `run` is `step` repeated; `run_shifted` is `run` one step late, starting from zero.
    #[test]
    fn run_and_run_shifted_agree_with_steps() -> Result<()> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 5);
        let gru = Gru::new(&store.root(), 3, 4)?;
        let mut rng = crate::random::rng_from_seed(1);
        let x = crate::random::standard_normal((2, 3, 3), DType::F64, &Device::Cpu, &mut rng)?;
        let states = gru.run(&x)?;
        let shifted = gru.run_shifted(&x)?;
        let mut h = gru.zero_state(2, &x)?;
        let diff = |a: &Tensor, b: &Tensor| -> Result<f64> {
            Ok((a - b)?.abs()?.max_all()?.to_scalar::<f64>()?)
        };
        for t in 0..3 {
            assert!(diff(&shifted.narrow(1, t, 1)?.squeeze(1)?, &h)? < 1e-14);
            h = gru.step(&x.narrow(1, t, 1)?.squeeze(1)?, &h)?;
            assert!(diff(&states.narrow(1, t, 1)?.squeeze(1)?, &h)? < 1e-14);
        }
        assert!(gru.run(&x.narrow(2, 0, 2)?).is_err());
        Ok(())
    }
}
