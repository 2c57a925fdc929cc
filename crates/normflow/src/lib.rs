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
//! - [`train`]: maximum-likelihood training (Adam, schedules, early stopping, resumable state).
//!
//! Tensors are candle's; [`candle_core`] is re-exported as [`candle`].

// Library and CLI code never unwrap what a user controls; tests may (clippy.toml).
#![warn(clippy::unwrap_used)]

pub mod bijections;
pub mod data;
pub mod distributions;
mod error;
pub mod flows;
pub mod linalg;
pub mod model;
pub mod nn;
pub mod ops;
pub mod params;
pub mod preprocess;
pub mod random;
pub mod testing;
pub mod train;

pub use bijections::Bijection;
pub use candle_core as candle;
pub use distributions::{Distribution, Flow};
pub use error::{Error, Result};
pub use params::{Init, ParamStore, Params};
