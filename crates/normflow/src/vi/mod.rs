//! Variational inference with flows: fit a flow `q` to a density known up to a constant,
//! `p~(z) = Z p(z)`, by maximizing the evidence lower bound
//!
//! ```text
//! ELBO(q) = E_{z ~ q}[log p~(z) - log q(z)] = log Z - KL(q || p) <= log Z
//! ```
//!
//! with reparameterized samples (Rezende & Mohamed 2015, "Variational Inference with
//! Normalizing Flows"): `z = T(eps)` is a differentiable function of the flow's parameters, so
//! the gradient of a Monte Carlo estimate is unbiased.
//!
//! - [`Target`]: `log p~` for a batch (any closure through [`FnTarget`]), and the built-in
//!   [`BuiltinTarget`]s (U1-U4, banana, funnel, mixture);
//! - [`fit`]: the loop (Adam, schedules, annealing, sticking the landing, non-finite step
//!   guards), configured by [`ViConfig`];
//! - [`estimate`]: ELBO, importance-weighted `log Z` and effective sample size from `K` samples;
//! - [`log_normalizer_on_grid`]: the true `log Z` of a low-dimensional target by numerical
//!   integration.
//!
//! ```
//! use normflow::candle::{DType, Device};
//! use normflow::flows::{AutoregressiveSpec, FlowSpec};
//! use normflow::model::Model;
//! use normflow::train::NoopObserver;
//! use normflow::vi::{estimate, fit, BuiltinTarget, Target, ViConfig};
//!
//! # fn main() -> normflow::Result<()> {
//! let target = BuiltinTarget::Mixture; // log Z = log 10
//! let spec = FlowSpec::Iaf(AutoregressiveSpec { layers: 2, hidden: 16, ..AutoregressiveSpec::new(2) });
//! let q = Model::new(spec, None, None, 0, DType::F32, &Device::Cpu)?.with_support(target.support())?;
//! let config = ViConfig { steps: 20, batch_size: 64, lr: 1e-2, ..ViConfig::default() };
//! fit(&q, q.store(), &target, &config, &mut NoopObserver)?;
//! let mut rng = normflow::random::rng_from_seed(1);
//! let e = estimate(&q, &target, 2000, 1000, &mut rng)?;
//! assert!(e.elbo <= e.log_z); // and both are below log Z up to Monte Carlo error
//! # Ok(())
//! # }
//! ```

mod builtin;
mod config;
mod estimates;
mod fit;
mod grid;
mod target;

pub use builtin::{BuiltinTarget, ENERGY_BOX, MIXTURE_COMPONENTS, MIXTURE_STD};
pub use config::ViConfig;
pub use estimates::{estimate, log_sum_exp, log_weights, ViEstimates};
pub use fit::{elbo_loss, fit, ViObserver, ViReport, ViStep};
pub use grid::{log_density_on_grid, log_normalizer_on_grid};
pub use target::{FnTarget, Target};

#[cfg(test)]
mod tests;
