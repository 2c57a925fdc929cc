//! Adam with optional decoupled weight decay (AdamW), with a state that can be saved and loaded.
//!
//! candle-nn's optimizers cannot export their moments, so a run could not be resumed exactly;
//! this one keeps its state by parameter *name*, which is also what makes it survive a model
//! being rebuilt from its spec (new `Var`s, same names).

use std::collections::{BTreeMap, HashMap};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};

use rayon::prelude::*;

use super::adam_fused::{self, StepScalars};
use crate::params::ParamStore;
use crate::{ensure_config, Error, Result};

/// The hyperparameters of [`Adam`].
///
/// `lr` is the base learning rate: [`Adam::step`] takes the learning rate of each step
/// explicitly, so that schedules can vary it; the training loop starts from this one.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    /// Base learning rate, finite and `> 0`.
    pub lr: f64,
    /// Decay of the first-moment average, in `[0, 1)`.
    pub beta1: f64,
    /// Decay of the second-moment average, in `[0, 1)`.
    pub beta2: f64,
    /// Added to the root of the second moment, `> 0`.
    pub eps: f64,
    /// Decoupled weight decay `lambda >= 0` (0 gives plain Adam).
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    /// The paper's defaults: `lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8`, no decay.
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

impl AdamConfig {
    /// Checks every field; errors name the field.
    pub fn validate(&self) -> Result<()> {
        ensure_config!(self.lr.is_finite() && self.lr > 0.0, "lr", self.lr, "a finite value > 0");
        for (name, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            ensure_config!((0.0..1.0).contains(&beta), name, beta, "a value in [0, 1)");
        }
        ensure_config!(
            self.eps.is_finite() && self.eps > 0.0,
            "eps",
            self.eps,
            "a finite value > 0"
        );
        ensure_config!(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "weight_decay",
            self.weight_decay,
            "a finite value >= 0"
        );
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub(super) struct Moments {
    pub(super) m: Tensor,
    pub(super) v: Tensor,
}

/// Adam (Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization") with decoupled weight
/// decay (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization").
///
/// At step `t`, for every parameter `theta` with gradient `g`:
///
/// ```text
/// m <- beta1 m + (1 - beta1) g            m_hat = m / (1 - beta1^t)
/// v <- beta2 v + (1 - beta2) g^2          v_hat = v / (1 - beta2^t)
/// theta <- theta (1 - lr lambda) - lr m_hat / (sqrt(v_hat) + eps)
/// ```
///
/// (the decay is scaled by the current `lr`, as in PyTorch's `AdamW`).
///
/// # State
/// The step count `t` and, per parameter name, the moments `m` and `v` (shaped like the
/// parameter, in its dtype and on its device). Every step counts in `t`. A parameter without a
/// gradient in `grads` (not used by the loss) is left untouched and its moments unchanged;
/// parameters first seen get zero moments, so after any step the state covers every parameter
/// of the store. The state is a set of immutable tensors replaced at each step, so cloning an
/// `Adam` is a cheap, exact snapshot.
#[derive(Debug, Clone)]
pub struct Adam {
    config: AdamConfig,
    step: u64,
    moments: BTreeMap<String, Moments>,
}

/// The name of the step-count tensor in [`Adam::state_tensors`].
pub const STEP_TENSOR: &str = "adam.step";

fn m_name(param: &str) -> String {
    format!("adam.m.{param}")
}

fn v_name(param: &str) -> String {
    format!("adam.v.{param}")
}

impl Adam {
    /// A fresh optimizer (step 0, no moments); fails on an invalid `config`.
    pub fn new(config: AdamConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, step: 0, moments: BTreeMap::new() })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// How many steps were taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update of every trainable parameter of `store` that has a gradient in `grads`, with
    /// learning rate `lr` (finite, `>= 0`). The new values are detached: no graph is kept.
    ///
    /// The caller is responsible for the gradients being finite (the training loop checks the
    /// global norm before calling this): a non-finite gradient would poison the moments.
    pub fn step(&mut self, store: &ParamStore, grads: &GradStore, lr: f64) -> Result<()> {
        self.step_scaled(store, grads, lr, 1.0)
    }

    /// [`Adam::step`] with every gradient multiplied by `grad_scale` first (global-norm
    /// clipping, without materializing the scaled gradients).
    ///
    /// Contiguous CPU f32 / f64 parameters are updated in one pass each, in parallel
    /// ([`super::adam_fused`]); others by the candle composition of the same formulas.
    pub(crate) fn step_scaled(
        &mut self,
        store: &ParamStore,
        grads: &GradStore,
        lr: f64,
        grad_scale: f64,
    ) -> Result<()> {
        ensure_config!(lr.is_finite() && lr >= 0.0, "lr", lr, "a finite value >= 0");
        let AdamConfig { beta1, beta2, eps, weight_decay, .. } = self.config;
        let t = self.step.saturating_add(1);
        // powf, not powi: the step count may exceed i32.
        let scalars = StepScalars {
            beta1,
            beta2,
            eps,
            bias1: 1.0 - beta1.powf(t as f64),
            bias2: 1.0 - beta2.powf(t as f64),
            lr,
            weight_decay,
            grad_scale,
        };
        let mut work = Vec::new();
        for (name, var) in store.parameters() {
            let theta = var.as_tensor();
            let moments = match self.moments.remove(&name) {
                Some(moments) => moments,
                None => Moments { m: theta.zeros_like()?, v: theta.zeros_like()? },
            };
            match grads.get(theta) {
                Some(g) => work.push((name, var, g.detach(), moments)),
                None => {
                    self.moments.insert(name, moments);
                }
            }
        }
        // Fused updates write `theta` in place; composed ones return it for `Var::set`.
        let updated = work
            .par_iter()
            .map(|(_, var, g, mo)| {
                let theta = var.as_tensor();
                match adam_fused::update_in_place(theta, g, &mo.m, &mo.v, &scalars)? {
                    Some((m, v)) => Ok((None, m, v)),
                    None => {
                        let (theta, m, v) = composed_update(theta, g, mo, &scalars)?;
                        Ok((Some(theta), m, v))
                    }
                }
            })
            .collect::<Result<Vec<_>>>()?;
        for ((name, var, _, _), (theta, m, v)) in work.into_iter().zip(updated) {
            if let Some(theta) = theta {
                var.set(&theta)?;
            }
            self.moments.insert(name, Moments { m, v });
        }
        self.step = t;
        Ok(())
    }

    /// The state as named tensors: `adam.step` (an `f64` scalar on the CPU) and
    /// `adam.m.<param>`, `adam.v.<param>` for every parameter with moments, sorted by name.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        // An f64 scalar holds every step count up to 2^53 exactly; creating it cannot fail.
        let step = Tensor::new(self.step as f64, &Device::Cpu);
        let mut out = Vec::with_capacity(2 * self.moments.len() + 1);
        if let Ok(step) = step {
            out.push((STEP_TENSOR.to_string(), step));
        }
        for (name, mo) in &self.moments {
            out.push((m_name(name), mo.m.clone()));
            out.push((v_name(name), mo.v.clone()));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// [`Adam::state_tensors`] as a map, the form [`Adam::load_state`] reads.
    pub fn state_map(&self) -> HashMap<String, Tensor> {
        self.state_tensors().into_iter().collect()
    }

    /// Replaces the state with the one in `tensors` (as written by [`Adam::state_tensors`]),
    /// converted to the dtype and device of `store`.
    ///
    /// Keys not starting with `adam.` are ignored, so a whole checkpoint can be passed. Fails,
    /// naming the tensor, when `adam.step` is missing or not a non-negative integer scalar, when
    /// the step is above 0 and a parameter of `store` has no `adam.m.*` / `adam.v.*`, when a
    /// moment's shape differs from its parameter's, or when a moment names no parameter of
    /// `store`. Nothing is changed on error.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        store: &ParamStore,
    ) -> Result<()> {
        let step = tensors.get(STEP_TENSOR).ok_or_else(|| {
            Error::Data(format!("optimizer state: tensor `{STEP_TENSOR}` is missing"))
        })?;
        let step = read_step(step)?;
        let params = store.parameters();
        let mut moments = BTreeMap::new();
        for (name, var) in &params {
            let get = |key: String| -> Result<Option<Tensor>> {
                let Some(t) = tensors.get(&key) else {
                    return if step > 0 {
                        Err(Error::Data(format!("optimizer state: tensor `{key}` is missing")))
                    } else {
                        Ok(None)
                    };
                };
                if t.dims() != var.dims() {
                    return Err(Error::shape(
                        format!("optimizer state tensor `{key}`"),
                        format!("{:?} (the shape of parameter `{name}`)", var.dims()),
                        t.dims(),
                    ));
                }
                Ok(Some(t.to_dtype(store.dtype())?.to_device(store.device())?))
            };
            let (m, v) = (get(m_name(name))?, get(v_name(name))?);
            match (m, v) {
                (Some(m), Some(v)) => {
                    moments.insert(name.clone(), Moments { m, v });
                }
                (None, None) => {}
                _ => {
                    return Err(Error::Data(format!(
                        "optimizer state: parameter `{name}` has only one of its two moments"
                    )))
                }
            }
        }
        for key in tensors.keys() {
            let param = key.strip_prefix("adam.m.").or_else(|| key.strip_prefix("adam.v."));
            let known = match param {
                Some(p) => params.iter().any(|(n, _)| n == p),
                None => key == STEP_TENSOR || !key.starts_with("adam."),
            };
            if !known {
                return Err(Error::Data(format!(
                    "optimizer state: tensor `{key}` does not belong to this model"
                )));
            }
        }
        self.step = step;
        self.moments = moments;
        Ok(())
    }
}

/// [`Adam::step_scaled`]'s update of one parameter composed from candle ops (any device and
/// dtype): the new `(theta, m, v)`.
pub(super) fn composed_update(
    theta: &Tensor,
    g: &Tensor,
    moments: &Moments,
    s: &StepScalars,
) -> Result<(Tensor, Tensor, Tensor)> {
    let g = if s.grad_scale != 1.0 { (g * s.grad_scale)? } else { g.clone() };
    let m = ((&moments.m * s.beta1)? + (&g * (1.0 - s.beta1))?)?;
    let v = ((&moments.v * s.beta2)? + (g.sqr()? * (1.0 - s.beta2))?)?;
    let m_hat = (&m / s.bias1)?;
    let v_hat = (&v / s.bias2)?;
    let update = (m_hat / ((v_hat.sqrt()? + s.eps)?))?;
    let decayed = if s.weight_decay > 0.0 {
        (theta.detach() * (1.0 - s.lr * s.weight_decay))?
    } else {
        theta.detach()
    };
    Ok(((decayed - (update * s.lr)?)?, m, v))
}

fn read_step(t: &Tensor) -> Result<u64> {
    let bad = |why: &str| Error::Data(format!("optimizer state: tensor `{STEP_TENSOR}` {why}"));
    if t.rank() != 0 {
        return Err(bad(&format!("must be a scalar, has shape {:?}", t.dims())));
    }
    let value = t.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if !(value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value < 2f64.powi(53)) {
        return Err(bad(&format!("must be a non-negative integer, is {value}")));
    }
    Ok(value as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Init;

    /// `loss = sum((w - target)^2)`: gradient `2 (w - target)`.
    fn quadratic_grads(w: &Tensor, target: &[f64]) -> Result<GradStore> {
        let target = Tensor::new(target, w.device())?;
        Ok((w - target)?.sqr()?.sum_all()?.backward()?)
    }

    fn values(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.to_vec1::<f64>()?)
    }

    #[test]
    fn steps_match_the_hand_computed_update() -> Result<()> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
        let w0 = [0.5, -1.0, 2.0];
        let target = [1.0, 1.0, -1.0];
        let w = store.root().param("w", 3, Init::Const(0.0))?;
        store.parameters()[0].1.set(&Tensor::new(&w0, &Device::Cpu)?)?;
        let config = AdamConfig { lr: 0.1, beta1: 0.8, beta2: 0.9, eps: 1e-3, weight_decay: 0.5 };
        let mut adam = Adam::new(config)?;

        // Two steps by hand, per coordinate.
        let (lr, b1, b2, eps, wd) = (0.1, 0.8, 0.9, 1e-3, 0.5);
        let mut expected = w0.to_vec();
        let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
        for t in 1..=2 {
            let grads = quadratic_grads(&w, &target)?;
            adam.step(&store, &grads, lr)?;
            for i in 0..3 {
                let g = 2.0 * (expected[i] - target[i]);
                m[i] = b1 * m[i] + (1.0 - b1) * g;
                v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                let m_hat = m[i] / (1.0 - f64::powi(b1, t));
                let v_hat = v[i] / (1.0 - f64::powi(b2, t));
                expected[i] = expected[i] * (1.0 - lr * wd) - lr * m_hat / (v_hat.sqrt() + eps);
            }
            let got = values(&w)?;
            for (a, b) in got.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-12, "step {t}: {got:?} vs {expected:?}");
            }
        }
        assert_eq!(adam.step_count(), 2);
        // The first step of plain Adam moves each coordinate by about lr against the gradient.
        assert!((values(&w)?[0] - w0[0]).abs() > 0.1);
        Ok(())
    }

    #[test]
    fn parameters_without_gradient_are_untouched() -> Result<()> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
        let a = store.root().param("a", 2, Init::Const(1.0))?;
        let b = store.root().param("b", 2, Init::Const(3.0))?;
        let mut adam = Adam::new(AdamConfig { weight_decay: 0.1, ..AdamConfig::default() })?;
        let grads = a.sqr()?.sum_all()?.backward()?;
        adam.step(&store, &grads, 0.1)?;
        assert_eq!(values(&b)?, vec![3.0, 3.0]);
        assert_ne!(values(&a)?, vec![1.0, 1.0]);
        let state = adam.state_map();
        assert_eq!(values(&state["adam.m.b"])?, vec![0.0, 0.0]);
        assert_ne!(values(&state["adam.m.a"])?, vec![0.0, 0.0]);
        Ok(())
    }

    #[test]
    fn saved_state_continues_bit_identically() -> Result<()> {
        let target = [1.0, -2.0, 0.5];
        // `restart`: at step 3, replace the optimizer by a fresh one, loading the saved state
        // into it or not.
        let run = |restart: Option<bool>| -> Result<Vec<f32>> {
            let store = ParamStore::new(DType::F32, &Device::Cpu, 3);
            let w = store.root().param("w", 3, Init::Normal { std: 1.0 })?;
            let config = AdamConfig { lr: 0.05, ..AdamConfig::default() };
            let mut adam = Adam::new(config)?;
            let target = Tensor::new(&target, &Device::Cpu)?.to_dtype(DType::F32)?;
            for step in 0..6 {
                if let (3, Some(load)) = (step, restart) {
                    let saved = adam.state_map();
                    adam = Adam::new(config)?;
                    if load {
                        adam.load_state(&saved, &store)?;
                    }
                }
                let grads = (&w - &target)?.sqr()?.sum_all()?.backward()?;
                adam.step(&store, &grads, 0.05)?;
            }
            Ok(w.to_vec1::<f32>()?)
        };
        let uninterrupted = run(None)?;
        assert_eq!(uninterrupted, run(Some(true))?);
        assert_ne!(uninterrupted, run(Some(false))?);
        Ok(())
    }

    #[test]
    fn load_state_names_missing_and_misshapen_tensors() -> Result<()> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
        let w = store.root().param("w", 2, Init::Const(1.0))?;
        let mut adam = Adam::new(AdamConfig::default())?;
        adam.step(&store, &w.sqr()?.sum_all()?.backward()?, 0.1)?;
        let good = adam.state_map();

        let mut missing = good.clone();
        missing.remove("adam.v.w");
        let err =
            Adam::new(AdamConfig::default())?.load_state(&missing, &store).expect_err("must fail");
        assert!(err.to_string().contains("adam.v.w"), "{err}");

        let mut misshapen = good.clone();
        misshapen.insert("adam.m.w".into(), Tensor::zeros(3, DType::F64, &Device::Cpu)?);
        let err = Adam::new(AdamConfig::default())?
            .load_state(&misshapen, &store)
            .expect_err("must fail");
        assert!(err.to_string().contains("adam.m.w"), "{err}");

        let mut extra = good.clone();
        extra.insert("adam.m.other".into(), Tensor::zeros(2, DType::F64, &Device::Cpu)?);
        let err =
            Adam::new(AdamConfig::default())?.load_state(&extra, &store).expect_err("must fail");
        assert!(err.to_string().contains("adam.m.other"), "{err}");

        let mut no_step = good;
        no_step.remove(STEP_TENSOR);
        assert!(Adam::new(AdamConfig::default())?.load_state(&no_step, &store).is_err());
        Ok(())
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let ok = AdamConfig::default();
        for bad in [
            AdamConfig { lr: -1.0, ..ok },
            AdamConfig { lr: f64::NAN, ..ok },
            AdamConfig { beta1: 1.0, ..ok },
            AdamConfig { beta2: -0.1, ..ok },
            AdamConfig { eps: 0.0, ..ok },
            AdamConfig { weight_decay: -1.0, ..ok },
        ] {
            assert!(matches!(Adam::new(bad), Err(Error::InvalidConfig { .. })), "{bad:?}");
        }
    }
}
