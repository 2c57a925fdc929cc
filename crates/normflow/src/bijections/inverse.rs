//! The inverse of a bijection.

use candle_core::Tensor;

use super::Bijection;
use crate::Result;

/// `Inverse(b)` swaps the two directions of `b`: its `forward` is `b.inverse` and vice versa.
///
/// IAF is `Inverse(MAF)`: fast sampling, sequential density evaluation.
#[derive(Debug)]
pub struct Inverse<B> {
    inner: B,
}

impl<B: Bijection> Inverse<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Self { inner }
    }

    /// The wrapped bijection.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl<B: Bijection> Bijection for Inverse<B> {
    fn forward_and_ladj(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.inner.inverse_and_ladj(x, context)
    }
    fn inverse_and_ladj(&self, z: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.inner.forward_and_ladj(z, context)
    }
    fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        self.inner.inverse(x, context)
    }
    fn inverse(&self, z: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        self.inner.forward(z, context)
    }
    fn set_training(&self, training: bool) {
        self.inner.set_training(training)
    }
    fn rows_independent(&self) -> bool {
        self.inner.rows_independent()
    }
    fn training_slice_rows(&self) -> Option<usize> {
        self.inner.training_slice_rows()
    }
    // Only the inner layer's forward computes the auxiliary term: reported as is.
    fn auxiliary_loss(&self) -> Result<Option<Tensor>> {
        self.inner.auxiliary_loss()
    }
    fn function_evaluations(&self) -> Option<crate::ode::FunctionEvaluations> {
        self.inner.function_evaluations()
    }
    // The inverse of a triangular map in order `o` is triangular in the same order.
    fn jacobian_order(&self) -> Option<Vec<usize>> {
        self.inner.jacobian_order()
    }
}
