//! Composition of bijections.

use candle_core::Tensor;

use super::{zero_ladj, Bijection};
use crate::parallel::fewer_rows;
use crate::Result;

/// The composition `f_n ∘ ... ∘ f_1`: `forward` applies the layers in order and sums their
/// log-determinants; `inverse` applies their inverses in reverse order.
#[derive(Debug, Default)]
pub struct Chain {
    layers: Vec<Box<dyn Bijection>>,
}

impl Chain {
    /// A chain of `layers`, applied first to last in the forward (data -> latent) direction.
    pub fn new(layers: Vec<Box<dyn Bijection>>) -> Self {
        Self { layers }
    }

    /// Appends a layer at the latent end.
    pub fn push(&mut self, layer: impl Bijection + 'static) {
        self.layers.push(Box::new(layer));
    }

    /// The layers, first (data side) to last (latent side).
    pub fn layers(&self) -> &[Box<dyn Bijection>] {
        &self.layers
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether the chain is the identity (no layers).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Bijection for Chain {
    fn forward_and_ladj(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let mut z = x.clone();
        let mut total = zero_ladj(x)?;
        for layer in &self.layers {
            let (next, ladj) = layer.forward_and_ladj(&z, context)?;
            z = next;
            total = (total + ladj)?;
        }
        Ok((z, total))
    }

    fn inverse_and_ladj(&self, z: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let mut x = z.clone();
        let mut total = zero_ladj(z)?;
        for layer in self.layers.iter().rev() {
            let (prev, ladj) = layer.inverse_and_ladj(&x, context)?;
            x = prev;
            total = (total + ladj)?;
        }
        Ok((x, total))
    }

    fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        self.layers.iter().try_fold(x.clone(), |z, layer| layer.forward(&z, context))
    }

    fn inverse(&self, z: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        self.layers.iter().rev().try_fold(z.clone(), |x, layer| layer.inverse(&x, context))
    }

    fn set_training(&self, training: bool) {
        self.layers.iter().for_each(|l| l.set_training(training));
    }

    fn rows_independent(&self) -> bool {
        self.layers.iter().all(|l| l.rows_independent())
    }

    fn training_slice_rows(&self) -> Option<usize> {
        self.layers.iter().fold(None, |rows, l| fewer_rows(rows, l.training_slice_rows()))
    }

    fn auxiliary_loss(&self) -> Result<Option<Tensor>> {
        super::sum_optional(self.layers.iter().map(|l| l.auxiliary_loss()))
    }

    fn function_evaluations(&self) -> Option<crate::ode::FunctionEvaluations> {
        self.layers.iter().filter_map(|l| l.function_evaluations()).reduce(|a, b| a + b)
    }
}
