//! The base distribution of a preset.

use serde::{Deserialize, Serialize};

use crate::distributions::{
    ConditionalDiagNormal, DiagNormal, Distribution, GaussianMixture, StandardNormal,
};
use crate::nn::Activation;
use crate::params::Params;
use crate::{ensure_config, Result};

/// Which base density a preset pushes its transform onto.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum BaseSpec {
    /// `N(0, I)`.
    #[default]
    StandardNormal,
    /// `N(mu, diag(sigma^2))` with learnable `mu`, `log sigma`.
    DiagNormal,
    /// A learnable mixture of `components` diagonal Gaussians.
    GaussianMixture {
        /// Number of components.
        components: usize,
    },
    /// `N(mu(c), diag(sigma(c)^2))` from an MLP on the context (conditional flows only).
    ConditionalDiagNormal {
        /// Hidden width of the MLP.
        hidden: usize,
        /// Number of hidden layers.
        blocks: usize,
    },
}

impl BaseSpec {
    /// Checks the base's own hyperparameters and that it fits the flow's context.
    pub fn validate(&self, context_features: usize) -> Result<()> {
        match self {
            BaseSpec::GaussianMixture { components } => {
                ensure_config!(*components >= 1, "components", components, "must be at least 1");
            }
            BaseSpec::ConditionalDiagNormal { hidden, .. } => {
                ensure_config!(
                    context_features > 0,
                    "base",
                    "conditional-diag-normal",
                    "needs a conditional flow (context_features > 0)"
                );
                ensure_config!(*hidden >= 1, "base hidden", hidden, "must be at least 1");
            }
            BaseSpec::StandardNormal | BaseSpec::DiagNormal => {}
        }
        Ok(())
    }

    /// Builds the base on `features` dimensions.
    pub fn build(
        &self,
        params: &Params,
        features: usize,
        context_features: usize,
    ) -> Result<Box<dyn Distribution>> {
        self.validate(context_features)?;
        Ok(match self {
            BaseSpec::StandardNormal => {
                Box::new(StandardNormal::new(&[features], params.dtype(), params.device()))
            }
            BaseSpec::DiagNormal => Box::new(DiagNormal::new(params, &[features])?),
            BaseSpec::GaussianMixture { components } => {
                Box::new(GaussianMixture::new(params, *components, features)?)
            }
            BaseSpec::ConditionalDiagNormal { hidden, blocks } => {
                Box::new(ConditionalDiagNormal::new(
                    params,
                    features,
                    context_features,
                    &vec![*hidden; *blocks],
                    Activation::Relu,
                )?)
            }
        })
    }
}
