//! Built-in targets: the 2-D energies of Rezende & Mohamed (2015), the Rosenbrock banana,
//! Neal's funnel and a Gaussian mixture with a known normalizer.

use std::f64::consts::PI;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::grid::log_normalizer_on_grid;
use super::target::{check_points, Target};
use crate::bijections::Support;
use crate::ops::{sigmoid, softplus};
use crate::{Error, Result};

/// Half-width of the box `[-B, B]^2` on which U2-U4 are defined (the paper's figures).
pub const ENERGY_BOX: f64 = 4.0;

/// Components of [`BuiltinTarget::Mixture`]: unnormalized weight and mean; every component is
/// isotropic with standard deviation [`MIXTURE_STD`].
pub const MIXTURE_COMPONENTS: [(f64, [f64; 2]); 4] =
    [(1.0, [1.5, 1.5]), (2.0, [-1.5, 1.5]), (3.0, [-1.5, -1.5]), (4.0, [1.5, -1.5])];

/// Standard deviation of every component of [`BuiltinTarget::Mixture`].
pub const MIXTURE_STD: f64 = 0.6;

/// A built-in target density, by name (`u1`..`u4`, `banana`, `funnel:D`, `mixture`).
///
/// With `w1 = sin(pi z1 / 2)`, `w2 = 3 exp(-((z1 - 1) / 0.6)^2 / 2)`,
/// `w3 = 3 sigmoid((z1 - 1) / 0.3)`, the energies `U = -log p~` of Rezende & Mohamed (2015,
/// Table 1) are
///
/// ```text
/// U1 = ((|z| - 2) / 0.4)^2 / 2 - log(exp(-((z1 - 2) / 0.6)^2 / 2) + exp(-((z1 + 2) / 0.6)^2 / 2))
/// U2 = ((z2 - w1) / 0.4)^2 / 2
/// U3 = -log(exp(-((z2 - w1) / 0.35)^2 / 2) + exp(-((z2 - w1 + w2) / 0.35)^2 / 2))
/// U4 = -log(exp(-((z2 - w1) / 0.4)^2 / 2) + exp(-((z2 - w1 + w3) / 0.35)^2 / 2))
/// ```
///
/// U1 is a proper density on `R^2`. U2-U4 do not decay along `z1`, so they are normalizable
/// only on a bounded domain: they are defined on the box `[-4, 4]^2` (as in the paper's
/// figures), their [`Target::support`] says so, and a flow fitted to them must end with the
/// fixed map onto that box. Their `log Z` (and U1's) comes from a midpoint rule on a fine grid.
///
/// The others have a closed-form `log Z`:
/// - `Banana`: the Rosenbrock density of Goodman & Weare (2010),
///   `log p~ = -(100 (z2 - z1^2)^2 + (1 - z1)^2) / 20`, `log Z = log(2 pi)`;
/// - `Funnel { dim }`: Neal's funnel (2003), `z1 ~ N(0, 3^2)`, `z_i | z1 ~ N(0, exp(z1))` for
///   `i = 2..dim`, normalized (`log Z = 0`);
/// - `Mixture`: `p~ = sum_k w_k N(z; mu_k, 0.6^2 I)` over [`MIXTURE_COMPONENTS`] (weights 1..4
///   on the corners of `[-1.5, 1.5]^2`), `log Z = log 10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum BuiltinTarget {
    /// Energy U1: a ring with two lobes.
    U1,
    /// Energy U2: a sine wave (on the box).
    U2,
    /// Energy U3: a sine wave split in two (on the box).
    U3,
    /// Energy U4: a sine wave with a step (on the box).
    U4,
    /// The Rosenbrock banana.
    Banana,
    /// Neal's funnel in `dim >= 2` dimensions.
    Funnel {
        /// Dimension, at least 2.
        dim: usize,
    },
    /// A four-component Gaussian mixture with `log Z = log 10`.
    Mixture,
}

impl BuiltinTarget {
    /// Every name [`BuiltinTarget::parse`] accepts, for messages.
    pub const NAMES: &'static str = "u1, u2, u3, u4, banana, funnel:D (D >= 2), mixture";

    /// Parses `u1`..`u4`, `banana`, `funnel:D` or `mixture`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || Error::config("target", text, format!("expected one of {}", Self::NAMES));
        Ok(match text {
            "u1" => Self::U1,
            "u2" => Self::U2,
            "u3" => Self::U3,
            "u4" => Self::U4,
            "banana" => Self::Banana,
            "mixture" => Self::Mixture,
            other => {
                let dim = other.strip_prefix("funnel:").ok_or_else(bad)?;
                let dim = dim.parse::<usize>().map_err(|_| bad())?;
                let target = Self::Funnel { dim };
                target.validate()?;
                target
            }
        })
    }

    /// The name `parse` reads back.
    pub fn name(&self) -> String {
        match self {
            Self::U1 => "u1".into(),
            Self::U2 => "u2".into(),
            Self::U3 => "u3".into(),
            Self::U4 => "u4".into(),
            Self::Banana => "banana".into(),
            Self::Funnel { dim } => format!("funnel:{dim}"),
            Self::Mixture => "mixture".into(),
        }
    }

    /// Checks the funnel's dimension.
    pub fn validate(&self) -> Result<()> {
        if let Self::Funnel { dim } = *self {
            crate::ensure_config!(dim >= 2, "target", self.name(), "the funnel needs D >= 2");
        }
        Ok(())
    }

    /// The grid box `[low, high]^2` and cells per axis that `log_normalizer` integrates the
    /// energies over: the support's box for U2-U4; for U1, a box outside which its density is
    /// below `exp(-12)` of its peak.
    fn grid(&self) -> Option<(f64, f64, usize)> {
        match self {
            Self::U1 => Some((-6.0, 6.0, 1200)),
            Self::U2 | Self::U3 | Self::U4 => Some((-ENERGY_BOX, ENERGY_BOX, 1000)),
            _ => None,
        }
    }
}

impl std::fmt::Display for BuiltinTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// `log(e^a + e^b)`, stable and differentiable.
fn log_add_exp(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let diff = (a - b)?.abs()?.neg()?;
    Ok((a.maximum(b)? + softplus(&diff)?)?)
}

/// `-((x - shift) / scale)^2 / 2`.
fn half_square(x: &Tensor, shift: f64, scale: f64) -> Result<Tensor> {
    Ok(((x - shift)? / scale)?.sqr()?.affine(-0.5, 0.0)?)
}

impl Target for BuiltinTarget {
    fn dim(&self) -> usize {
        match *self {
            Self::Funnel { dim } => dim,
            _ => 2,
        }
    }

    fn log_density(&self, z: &Tensor) -> Result<Tensor> {
        self.validate()?;
        check_points(z, self.dim(), "target log-density input")?;
        let col = |i: usize| -> Result<Tensor> { Ok(z.narrow(1, i, 1)?.squeeze(1)?) };
        let (z1, z2) = (col(0)?, col(1)?);
        let w1 = || -> Result<Tensor> { Ok((&z1 * (PI / 2.0))?.sin()?) };
        let lp = match self {
            Self::U1 => {
                let radius = z.sqr()?.sum(1)?.sqrt()?;
                let ring = half_square(&radius, 2.0, 0.4)?;
                let lobes =
                    log_add_exp(&half_square(&z1, 2.0, 0.6)?, &half_square(&z1, -2.0, 0.6)?)?;
                (ring + lobes)?
            }
            Self::U2 => half_square(&(&z2 - w1()?)?, 0.0, 0.4)?,
            Self::U3 => {
                let w2 = (half_square(&z1, 1.0, 0.6)?.exp()? * 3.0)?;
                let d = (&z2 - w1()?)?;
                log_add_exp(&half_square(&d, 0.0, 0.35)?, &half_square(&(&d + w2)?, 0.0, 0.35)?)?
            }
            Self::U4 => {
                let w3 = (sigmoid(&((&z1 - 1.0)? / 0.3)?)? * 3.0)?;
                let d = (&z2 - w1()?)?;
                log_add_exp(&half_square(&d, 0.0, 0.4)?, &half_square(&(&d + w3)?, 0.0, 0.35)?)?
            }
            Self::Banana => {
                let valley = (&z2 - z1.sqr()?)?.sqr()?;
                ((valley * 100.0)? + (z1.affine(-1.0, 1.0)?.sqr()?))?.affine(-1.0 / 20.0, 0.0)?
            }
            Self::Funnel { dim } => {
                let rest = dim - 1;
                let x = z.narrow(1, 1, rest)?;
                let scale =
                    half_square(&z1, 0.0, 3.0)?.affine(1.0, -0.5 * (2.0 * PI * 9.0).ln())?;
                let quad = (x.sqr()?.sum(1)? * (z1.neg()?.exp()?))?;
                // sum_i [-x_i^2 e^{-v} / 2 - v / 2 - log(2 pi) / 2]
                let conditional = ((quad * -0.5)? - (&z1 * (0.5 * rest as f64))?)?
                    .affine(1.0, -0.5 * rest as f64 * (2.0 * PI).ln())?;
                (scale + conditional)?
            }
            Self::Mixture => {
                let var = MIXTURE_STD * MIXTURE_STD;
                let terms = MIXTURE_COMPONENTS
                    .iter()
                    .map(|(w, [m1, m2])| -> Result<Tensor> {
                        let quad = ((&z1 - *m1)?.sqr()? + (&z2 - *m2)?.sqr()?)?;
                        Ok(quad.affine(-0.5 / var, w.ln() - (2.0 * PI * var).ln())?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let stacked = Tensor::stack(&terms, 1)?;
                let max = stacked.max_keepdim(1)?.detach();
                (stacked.broadcast_sub(&max)?.exp()?.sum(1)?.log()? + max.squeeze(1)?)?
            }
        };
        Ok(lp)
    }

    fn support(&self) -> Support {
        match self {
            Self::U2 | Self::U3 | Self::U4 => {
                Support::Interval { low: -ENERGY_BOX, high: ENERGY_BOX }
            }
            _ => Support::Real,
        }
    }

    /// Closed form for the banana, funnel and mixture; for U1-U4, a midpoint rule on a grid of
    /// `10^6` or more cells (about a second; see [`log_normalizer_on_grid`]).
    fn log_normalizer(&self) -> Option<f64> {
        match self {
            Self::Banana => Some((2.0 * PI).ln()),
            Self::Funnel { .. } => Some(0.0),
            Self::Mixture => Some(MIXTURE_COMPONENTS.iter().map(|(w, _)| w).sum::<f64>().ln()),
            _ => {
                let (low, high, cells) = self.grid()?;
                log_normalizer_on_grid(self, low, high, cells, DType::F64, &Device::Cpu).ok()
            }
        }
    }
}
