//! The FFJORD preset: stacked continuous normalizing flows (Grathwohl et al. 2019).

use serde::{Deserialize, Serialize};

use super::base::BaseSpec;
use crate::bijections::cnf::{
    Cnf, CnfConfig, HutchinsonNoise, OdeActivation, OdeNetConfig, TraceEstimator,
};
use crate::bijections::{Bijection, Chain};
use crate::ode::Solver;
use crate::params::Params;
use crate::{ensure_config, Result};

fn default_time() -> f64 {
    0.5
}

/// Hyperparameters of the `ffjord` preset: `layers` CNF blocks in sequence, each the flow of
/// `dz/dt = f(t, z)` over `[0, time]` with its own concat-squash network of `blocks` hidden
/// layers of `hidden` units ([`crate::bijections::cnf::Cnf`]).
///
/// The integration time is fixed (not learned). FFJORD's toy setting is a few blocks, hidden
/// 64, tanh or softplus, `time` 0.5 to 1, dopri5 at `1e-5`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FfjordSpec {
    /// Data dimension D.
    pub features: usize,
    /// Context dimension (0 = unconditional); the context enters every network's input.
    #[serde(default)]
    pub context_features: usize,
    /// Number of CNF blocks.
    pub layers: usize,
    /// Width of the networks' hidden layers.
    pub hidden: usize,
    /// Hidden layers per network.
    pub blocks: usize,
    /// Hidden non-linearity.
    #[serde(default)]
    pub activation: OdeActivation,
    /// Integration time `T` of each block.
    #[serde(default = "default_time")]
    pub time: f64,
    /// ODE solver.
    #[serde(default)]
    pub solver: Solver,
    /// Trace estimator in training mode (evaluation uses the exact trace on small D).
    #[serde(default)]
    pub trace: TraceEstimator,
    /// Hutchinson noise.
    #[serde(default)]
    pub noise: HutchinsonNoise,
    /// RNODE kinetic-energy weight.
    #[serde(default)]
    pub kinetic_weight: f64,
    /// RNODE Jacobian-Frobenius weight.
    #[serde(default)]
    pub jacobian_weight: f64,
    /// Train by the adjoint method instead of backpropagation through the solver.
    #[serde(default)]
    pub adjoint: bool,
    /// Base distribution.
    #[serde(default)]
    pub base: BaseSpec,
}

impl FfjordSpec {
    /// Defaults for `features` dimensions: 2 blocks of 2 tanh hidden layers of 64 units,
    /// `T = 0.5`, dopri5 at `1e-5`, Hutchinson with Rademacher noise, no regularization.
    pub fn new(features: usize) -> Self {
        let cnf = CnfConfig::default();
        Self {
            features,
            context_features: 0,
            layers: 2,
            hidden: 64,
            blocks: 2,
            activation: OdeActivation::Tanh,
            time: cnf.time,
            solver: cnf.solver,
            trace: cnf.trace,
            noise: cnf.noise,
            kinetic_weight: 0.0,
            jacobian_weight: 0.0,
            adjoint: false,
            base: BaseSpec::StandardNormal,
        }
    }

    /// The settings every block shares.
    pub fn cnf_config(&self) -> CnfConfig {
        CnfConfig {
            time: self.time,
            solver: self.solver,
            trace: self.trace,
            noise: self.noise,
            kinetic_weight: self.kinetic_weight,
            jacobian_weight: self.jacobian_weight,
            adjoint: self.adjoint,
        }
    }

    /// Checks every hyperparameter, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        ensure_config!(self.features >= 1, "features", self.features, "must be at least 1");
        ensure_config!(self.layers >= 1, "layers", self.layers, "must be at least 1");
        ensure_config!(self.hidden >= 1, "hidden", self.hidden, "must be at least 1");
        ensure_config!(self.blocks >= 1, "blocks", self.blocks, "a network needs a hidden layer");
        self.cnf_config().validate()?;
        self.base.validate(self.context_features)
    }
}

/// `layers` CNF blocks under `params.{i}`.
pub(super) fn build(params: &Params, spec: &FfjordSpec) -> Result<Chain> {
    let net = OdeNetConfig {
        features: spec.features,
        context_features: spec.context_features,
        hidden: vec![spec.hidden; spec.blocks],
        activation: spec.activation,
    };
    let layers = (0..spec.layers)
        .map(|i| -> Result<Box<dyn Bijection>> {
            Ok(Box::new(Cnf::with_net(&params.pp(i), &net, spec.cnf_config())?))
        })
        .collect::<Result<_>>()?;
    Ok(Chain::new(layers))
}
