//! Named, seeded parameter storage.
//!
//! Every learnable tensor (and every non-learnable state tensor, a *buffer*, such as batch-norm
//! running statistics) of a model lives in one [`ParamStore`], under a dotted path such as
//! `flow.3.made.layers.0.weight`. Layers receive a [`Params`] handle (a store plus a path prefix)
//! and create their tensors through it, the way `candle_nn::VarBuilder` works, with two
//! differences that the library needs:
//!
//! - **Seeded initialization.** candle's CPU random generator cannot be seeded, so random
//!   initial values come from the store's own ChaCha generator, seeded at creation. The same
//!   seed and the same construction order give bit-identical models, which is what makes
//!   training reproducible and what lets a model be rebuilt from its spec before its weights
//!   are loaded.
//! - **Parameters and buffers are told apart**, so the optimizer only sees parameters while
//!   save/load covers both.
//!
//! Tensors are `candle_core::Var`s: a layer keeps a clone of the var's tensor, and updates
//! through [`candle_core::Var::set`] are seen by every clone (they share storage).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Shape, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// How a tensor is initialized when it is first created.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Every entry equal to the value.
    Const(f64),
    /// Independent normal entries with mean 0 and the given standard deviation.
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// Independent uniform entries on `[lo, hi)`.
    Uniform {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// PyTorch's default for linear layers: uniform on `[-1/sqrt(fan_in), 1/sqrt(fan_in))`.
    LinearDefault {
        /// Number of inputs of the layer.
        fan_in: usize,
    },
}

/// Whether a stored tensor is trained by the optimizer or is state updated by other means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// Trained by gradient descent.
    Parameter,
    /// Saved with the model but not trained (running statistics, initialization flags).
    Buffer,
}

#[derive(Debug)]
struct Entry {
    var: Var,
    kind: TensorKind,
}

#[derive(Debug)]
struct Inner {
    entries: BTreeMap<String, Entry>,
    rng: ChaCha8Rng,
}

/// The set of all named tensors of a model, with the generator that initializes them.
///
/// Cloning a store gives another handle to the same tensors.
#[derive(Debug, Clone)]
pub struct ParamStore {
    inner: Arc<Mutex<Inner>>,
    dtype: DType,
    device: Device,
}

impl ParamStore {
    /// An empty store whose random initializations are drawn from a generator seeded by `seed`.
    pub fn new(dtype: DType, device: &Device, seed: u64) -> Self {
        let inner = Inner { entries: BTreeMap::new(), rng: ChaCha8Rng::seed_from_u64(seed) };
        Self { inner: Arc::new(Mutex::new(inner)), dtype, device: device.clone() }
    }

    /// A handle at the root path, to pass to layer constructors.
    pub fn root(&self) -> Params {
        Params { store: self.clone(), prefix: String::new() }
    }

    /// The floating-point type of every tensor in the store.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device every tensor lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked while holding it; the map itself
        // is still consistent (every mutation is a single insert), so carry on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The trainable parameters, sorted by name.
    pub fn parameters(&self) -> Vec<(String, Var)> {
        self.of_kind(Some(TensorKind::Parameter))
    }

    /// The buffers (non-trainable state), sorted by name.
    pub fn buffers(&self) -> Vec<(String, Var)> {
        self.of_kind(Some(TensorKind::Buffer))
    }

    /// Every tensor, parameters and buffers, sorted by name.
    pub fn all(&self) -> Vec<(String, Var)> {
        self.of_kind(None)
    }

    fn of_kind(&self, kind: Option<TensorKind>) -> Vec<(String, Var)> {
        self.lock()
            .entries
            .iter()
            .filter(|(_, e)| kind.is_none_or(|k| e.kind == k))
            .map(|(n, e)| (n.clone(), e.var.clone()))
            .collect()
    }

    /// The kind of the tensor called `name`, if there is one.
    pub fn kind_of(&self, name: &str) -> Option<TensorKind> {
        self.lock().entries.get(name).map(|e| e.kind)
    }

    /// Total number of scalar parameters (buffers excluded).
    pub fn num_parameters(&self) -> usize {
        self.parameters().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Gets the tensor `name`, creating it with `init` if it does not exist yet.
    fn get_or_create(
        &self,
        name: String,
        shape: Shape,
        init: Init,
        kind: TensorKind,
    ) -> Result<Var> {
        let mut inner = self.lock();
        if let Some(e) = inner.entries.get(&name) {
            if e.var.shape() != &shape {
                return Err(Error::shape(
                    format!("parameter {name}"),
                    format!("{:?}", shape.dims()),
                    e.var.dims(),
                ));
            }
            if e.kind != kind {
                return Err(Error::Data(format!("{name} is both a parameter and a buffer")));
            }
            return Ok(e.var.clone());
        }
        let values = draw(&mut inner.rng, shape.elem_count(), init);
        let tensor = Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_dtype(self.dtype)?
            .to_device(&self.device)?;
        let var = Var::from_tensor(&tensor)?;
        inner.entries.insert(name, Entry { var: var.clone(), kind });
        Ok(var)
    }

    /// Draws `n` values from the store's generator (for layers that need randomness at
    /// construction, such as random permutations), keeping construction reproducible.
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut ChaCha8Rng) -> T) -> T {
        f(&mut self.lock().rng)
    }

    /// All tensors as a name -> tensor map (for saving).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.all().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect()
    }

    /// Writes every tensor to a safetensors file (not atomically; see `model` for that).
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let tensors: std::collections::HashMap<String, Tensor> =
            self.tensors().into_iter().collect();
        candle_core::safetensors::save(&tensors, path)?;
        Ok(())
    }

    /// Overwrites every tensor of the store with the one of the same name in `tensors`.
    ///
    /// Fails, naming the tensor, when one is missing, has another shape, or when `tensors` holds
    /// names the store does not know; nothing is changed in that case.
    pub fn load_tensors(
        &self,
        tensors: &std::collections::HashMap<String, Tensor>,
        origin: &Path,
    ) -> Result<()> {
        let entries = self.all();
        for (name, var) in &entries {
            let t = tensors
                .get(name)
                .ok_or_else(|| Error::model_file(origin, format!("tensor `{name}` is missing")))?;
            if t.dims() != var.dims() {
                return Err(Error::model_file(
                    origin,
                    format!(
                        "tensor `{name}` has shape {:?}, the model expects {:?}",
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
        }
        if let Some(extra) = tensors.keys().find(|k| !entries.iter().any(|(n, _)| n == *k)) {
            return Err(Error::model_file(
                origin,
                format!("tensor `{extra}` does not belong to this model"),
            ));
        }
        for (name, var) in &entries {
            let t = &tensors[name];
            var.set(&t.to_dtype(self.dtype)?.to_device(&self.device)?)?;
        }
        Ok(())
    }

    /// Reads a safetensors file written by [`ParamStore::save_safetensors`] into the store.
    pub fn load_safetensors(&self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| Error::model_file(path, format!("not a valid safetensors file: {e}")))?;
        self.load_tensors(&tensors, path)
    }

    /// Adds independent normal noise of standard deviation `std` to every parameter (not to
    /// buffers). Tests use it to move layers away from their identity initialization.
    pub fn perturb(&self, std: f64, seed: u64) -> Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for (_, var) in self.parameters() {
            let noise = draw(&mut rng, var.elem_count(), Init::Normal { std });
            let noise = Tensor::from_vec(noise, var.shape(), &Device::Cpu)?
                .to_dtype(self.dtype)?
                .to_device(&self.device)?;
            var.set(&(var.as_tensor() + noise)?)?;
        }
        Ok(())
    }
}

fn draw(rng: &mut ChaCha8Rng, n: usize, init: Init) -> Vec<f64> {
    match init {
        Init::Const(c) => vec![c; n],
        Init::Normal { std } => {
            (0..n).map(|_| std * rng.sample::<f64, _>(rand_distr::StandardNormal)).collect()
        }
        Init::Uniform { lo, hi } => (0..n).map(|_| rng.random_range(lo..hi)).collect(),
        Init::LinearDefault { fan_in } => {
            let b = 1.0 / (fan_in.max(1) as f64).sqrt();
            (0..n).map(|_| rng.random_range(-b..b)).collect()
        }
    }
}

/// A handle into a [`ParamStore`] at a path prefix: what layer constructors receive.
#[derive(Debug, Clone)]
pub struct Params {
    store: ParamStore,
    prefix: String,
}

impl Params {
    /// A handle one level down: `params.pp("layer3")` names tensors `<prefix>.layer3.<name>`.
    pub fn pp(&self, segment: impl std::fmt::Display) -> Params {
        let prefix = if self.prefix.is_empty() {
            segment.to_string()
        } else {
            format!("{}.{}", self.prefix, segment)
        };
        Params { store: self.store.clone(), prefix }
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    /// A trainable parameter `name` of the given shape (created with `init` on first use).
    pub fn param(&self, name: &str, shape: impl Into<Shape>, init: Init) -> Result<Tensor> {
        let var =
            self.store.get_or_create(self.path(name), shape.into(), init, TensorKind::Parameter)?;
        Ok(var.as_tensor().clone())
    }

    /// Like [`Params::param`], but returns the `Var` itself, for layers that overwrite their
    /// parameters outside of gradient descent (ActNorm's data-dependent initialization). The
    /// tensor a layer computes with is `var.as_tensor()`, which shares the var's storage.
    pub fn param_var(&self, name: &str, shape: impl Into<Shape>, init: Init) -> Result<Var> {
        self.store.get_or_create(self.path(name), shape.into(), init, TensorKind::Parameter)
    }

    /// A buffer `name`: saved with the model, never trained. The `Var` lets the owner update it.
    pub fn buffer(&self, name: &str, shape: impl Into<Shape>, init: Init) -> Result<Var> {
        self.store.get_or_create(self.path(name), shape.into(), init, TensorKind::Buffer)
    }

    /// The store this handle points into.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The path prefix of this handle.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The dtype of the store's tensors.
    pub fn dtype(&self) -> DType {
        self.store.dtype
    }

    /// The device of the store's tensors.
    pub fn device(&self) -> &Device {
        &self.store.device
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_values_and_names_nest() -> Result<()> {
        let make = |seed| -> Result<Vec<f32>> {
            let store = ParamStore::new(DType::F32, &Device::Cpu, seed);
            let p = store.root().pp("a").pp(3);
            let t = p.param("w", (2, 3), Init::Normal { std: 1.0 })?;
            assert_eq!(store.parameters()[0].0, "a.3.w");
            Ok(t.flatten_all()?.to_vec1()?)
        };
        assert_eq!(make(7)?, make(7)?);
        assert_ne!(make(7)?, make(8)?);
        Ok(())
    }

    #[test]
    fn buffers_are_not_parameters_and_shapes_are_checked() -> Result<()> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
        let p = store.root();
        p.param("w", 4, Init::Const(1.0))?;
        p.buffer("running_mean", 4, Init::Const(0.0))?;
        assert_eq!(store.parameters().len(), 1);
        assert_eq!(store.buffers().len(), 1);
        assert_eq!(store.num_parameters(), 4);
        assert!(p.param("w", 5, Init::Const(1.0)).is_err());
        Ok(())
    }
}
