//! # normflow: normalizing flows on candle
//!
//! A normalizing flow models a density as an invertible, differentiable map `f` of a simple base
//! density `q0` (change of variables):
//!
//! ```text
//! log p(x) = log q0(f(x)) + log|det df/dx|
//! ```
//!
//! so one model gives both exact densities and samples.
//!
//! ## Direction convention
//! Everywhere in normflow, `forward` maps **data `x` to latent `z`** (the normalizing direction,
//! used for density evaluation) and `inverse` maps **latent `z` back to data `x`** (sampling). Each
//! [`Bijection`] returns its log absolute Jacobian determinant ("ladj"), one value per sample:
//! `forward_and_ladj(x) = (z, log|det dz/dx|)`. MAF is fast in `forward`; IAF, its inverse, is
//! fast in `inverse`. [`bijections::Inverse`] flips any bijection.
//!
//! ## Pieces
//! - [`bijections`]: the [`Bijection`] trait, [`bijections::Chain`], [`bijections::Inverse`] and
//!   the layers;
//! - [`distributions`]: the [`Distribution`] trait, base densities and [`Flow`];
//! - [`data`]: loading CSV/TSV, NPY and IDX files into a [`data::Table`], writing CSV/NPY,
//!   and the built-in 2-D toy densities ([`data::toy::Toy`]);
//! - [`params`]: the seeded [`ParamStore`] every layer creates its tensors in;
//! - [`testing`]: the public bijection checker;
//! - [`flows`]: presets (MADE, MAF, IAF, NICE, RealNVP, spline and other non-affine flows,
//!   image flows, planar, radial, Sylvester, FFJORD) described by a serializable
//!   [`flows::FlowSpec`];
//! - [`ode`]: ODE solvers on tensors (Euler, RK4, adaptive Dopri5) and the adjoint method, behind
//!   the continuous flows of [`bijections::cnf`];
//! - [`model`]: a flow with its preprocessing, saved to and loaded from a directory;
//! - [`train`]: maximum-likelihood training (Adam, schedules, early stopping, exact resume);
//! - [`maxent`]: maximum-entropy flows under moment constraints (augmented Lagrangian);
//! - [`latent`]: shared pieces of latent-variable models (importance-weighted bound, Bernoulli
//!   emission, KL warm-up, dynamic binarization);
//! - [`seq`]: latent normalizing flows for discrete sequences (polyphonic music), with baselines;
//! - [`preprocess`]: standardization stored with the model;
//! - [`vae`]: variational autoencoders with flow posteriors (planar, radial, Sylvester, IAF,
//!   spline), trained on the ELBO and scored by the importance-weighted bound;
//! - [`vi`]: variational inference: fitting a flow to an unnormalized density (reverse KL),
//!   built-in targets, ELBO / importance-weighted `log Z` / effective sample size.
//!
//! Tensors are candle's; [`candle_core`] is re-exported as [`candle`].
//!
//! ## Example: fit a MAF to the two-moons density
//! ```
//! use normflow::candle::{DType, Device};
//! use normflow::data::toy::Toy;
//! use normflow::flows::{AutoregressiveSpec, FlowSpec};
//! use normflow::model::Model;
//! use normflow::preprocess::Standardization;
//! use normflow::train::{fit, NoopObserver, TrainConfig};
//! use normflow::Distribution;
//!
//! # fn main() -> normflow::Result<()> {
//! let mut rng = normflow::random::rng_from_seed(0);
//! let rows = Toy::Moons.sample(2000, &mut rng); // row-major (2000, 2)
//! let data = normflow::candle::Tensor::from_vec(rows.clone(), (2000, 2), &Device::Cpu)?
//!     .to_dtype(DType::F32)?;
//! let spec = FlowSpec::Maf(AutoregressiveSpec { layers: 3, hidden: 32, ..AutoregressiveSpec::new(2) });
//! let scaling = Standardization::fit(&rows, 2)?; // applied inside the model
//! let model = Model::new(spec, Some(scaling), None, 0, DType::F32, &Device::Cpu)?;
//! let config = TrainConfig { epochs: 3, batch_size: 128, ..TrainConfig::default() };
//! let report = fit(&model, model.store(), &data, None, &config, &mut NoopObserver)?;
//! let log_p = model.log_prob(&data, None)?; // (2000,), nats, in the data's units
//! let samples = model.sample(5, None, &mut rng)?; // (5, 2)
//! assert!(report.best_val_log_prob.is_some_and(f64::is_finite));
//! # assert_eq!(log_p.dims(), [2000]);
//! # assert_eq!(samples.dims(), [5, 2]);
//! # Ok(())
//! # }
//! ```

// Library and CLI code never unwrap what a user controls; tests may (clippy.toml).
#![warn(clippy::unwrap_used)]

pub mod bijections;
pub mod data;
pub mod distributions;
mod error;
pub mod flows;
pub mod inference;
pub mod latent;
pub mod linalg;
pub mod maxent;
pub mod model;
pub mod nn;
pub mod ode;
pub mod ops;
pub mod parallel;
pub mod params;
pub mod preprocess;
pub mod random;
pub mod seq;
pub mod solve;
pub mod testing;
pub mod train;
pub mod vae;
pub mod vi;

pub use bijections::Bijection;
pub use candle_core as candle;
pub use distributions::{Distribution, Flow};
pub use error::{Error, Result};
pub use params::{Init, ParamStore, Params};
