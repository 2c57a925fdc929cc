//! Maximum-entropy flow networks (Loaiza-Ganem, Gao & Cunningham 2017, "Maximum Entropy Flow
//! Networks", ICLR): the distribution of largest entropy under moment constraints
//! `E_p[T_k(x)] = m_k`, found by training a flow `p`.
//!
//! ```text
//! maximize  H(p) = -E_p[log p(x)]   subject to   E_p[T_k(x)] = m_k,  k = 1..K
//! ```
//!
//! The entropy is estimated from reparameterized samples of the flow itself, and the
//! constraints are enforced by an augmented Lagrangian ([`fit`]). The support is set by the
//! model's [`Support`](crate::bijections::Support) ([`Model::with_support`]): softplus for
//! `(0, inf)`, a scaled sigmoid for an interval, stick-breaking for the simplex; its
//! log-determinant counts in `log p`, so the saved model samples and evaluates on the support.
//!
//! - [`Constraints`]: the statistics ([`Statistic`]: moments, log-moments, `log(1 - x)`, the
//!   simplex's last coordinate) and their targets, from a JSON file with located errors;
//! - [`fit`] with [`MaxEntConfig`], [`estimate`] for entropy and violations;
//! - [`reference`]: closed-form answers (Gaussian, exponential, Beta, Dirichlet) to test against.
//!
//! ```
//! use normflow::bijections::Support;
//! use normflow::candle::{DType, Device};
//! use normflow::flows::{AutoregressiveSpec, FlowSpec};
//! use normflow::maxent::{estimate, fit, Constraints, MaxEntConfig};
//! use normflow::model::Model;
//! use normflow::train::NoopObserver;
//!
//! # fn main() -> normflow::Result<()> {
//! // On (0, inf), E[x] = 2 gives the exponential with mean 2 (entropy 1 + ln 2).
//! let constraints = Constraints::from_json(
//!     r#"{"dim": 1, "constraints": [{"statistic": "moment", "powers": [1], "target": 2.0}]}"#,
//! )?;
//! // (A 1-D flow of affine layers is an affine map: a quick sketch, not a close fit.)
//! let spec = FlowSpec::Maf(AutoregressiveSpec {
//!     layers: 2, hidden: 8, blocks: 1, ..AutoregressiveSpec::new(1)
//! });
//! let model = Model::new(spec, None, None, 0, DType::F32, &Device::Cpu)?
//!     .with_support(Support::Positive)?;
//! let config = MaxEntConfig { outer_iterations: 2, inner_steps: 20, ..MaxEntConfig::default() };
//! let report = fit(&model, &constraints, &config, &mut NoopObserver)?;
//! let mut rng = normflow::random::rng_from_seed(1);
//! let est = estimate(&model, &constraints, 4096, 1024, &mut rng)?;
//! assert!(est.entropy.is_finite() && report.history.len() == 2);
//! # Ok(())
//! # }
//! ```
//!
//! [`Model::with_support`]: crate::model::Model::with_support

mod constraints;
mod fit;
pub mod reference;
mod statistics;

pub use constraints::{Constraint, Constraints, Statistic};
pub use fit::{
    estimate, fit, IterationStats, MaxEntConfig, MaxEntEstimate, MaxEntObserver, MaxEntReport,
};

#[cfg(test)]
mod tests;
