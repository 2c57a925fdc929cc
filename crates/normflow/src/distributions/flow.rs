//! A normalizing flow: a bijection pushed onto a base distribution.

use candle_core::Tensor;
use rand::RngCore;

use super::Distribution;
use crate::bijections::Bijection;
use crate::Result;

/// `p(x | c) = q0(f(x; c) | c) |det df/dx|`, where `f` is `transform` (data -> latent) and `q0`
/// the base distribution. A flow is itself a [`Distribution`]; it is conditional when its
/// transform or base uses the context.
#[derive(Debug)]
pub struct Flow {
    transform: Box<dyn Bijection>,
    base: Box<dyn Distribution>,
}

impl Flow {
    /// A flow from a transform (data -> latent) and a base density on the latent space.
    pub fn new(transform: impl Bijection + 'static, base: impl Distribution + 'static) -> Self {
        Self { transform: Box::new(transform), base: Box::new(base) }
    }

    /// A flow from already boxed parts.
    pub fn from_boxed(transform: Box<dyn Bijection>, base: Box<dyn Distribution>) -> Self {
        Self { transform, base }
    }

    /// The data -> latent map.
    pub fn transform(&self) -> &dyn Bijection {
        self.transform.as_ref()
    }

    /// The base density.
    pub fn base(&self) -> &dyn Distribution {
        self.base.as_ref()
    }
}

impl Distribution for Flow {
    fn log_prob(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let (z, ladj) = self.transform.forward_and_ladj(x, context)?;
        Ok((self.base.log_prob(&z, context)? + ladj)?)
    }

    fn sample(&self, n: usize, context: Option<&Tensor>, rng: &mut dyn RngCore) -> Result<Tensor> {
        let z = self.base.sample(n, context, rng)?;
        self.transform.inverse(&z, context)
    }

    /// `log p(x) = log q0(z) - log|det dx/dz|`, from the same pass that produced `x`.
    fn sample_and_log_prob(
        &self,
        n: usize,
        context: Option<&Tensor>,
        rng: &mut dyn RngCore,
    ) -> Result<(Tensor, Tensor)> {
        let (z, base_lp) = self.base.sample_and_log_prob(n, context, rng)?;
        let (x, ladj_inverse) = self.transform.inverse_and_ladj(&z, context)?;
        Ok((x, (base_lp - ladj_inverse)?))
    }

    fn event_shape(&self) -> Vec<usize> {
        // Every bijection in the library preserves the per-sample element count; multi-scale
        // layers that reshape document their own event shape through their flow's base.
        self.base.event_shape()
    }

    fn set_training(&self, training: bool) {
        self.transform.set_training(training);
        self.base.set_training(training);
    }

    fn auxiliary_loss(&self) -> Result<Option<Tensor>> {
        crate::bijections::sum_optional([
            self.transform.auxiliary_loss(),
            self.base.auxiliary_loss(),
        ])
    }

    fn function_evaluations(&self) -> Option<crate::ode::FunctionEvaluations> {
        self.transform.function_evaluations()
    }
}
