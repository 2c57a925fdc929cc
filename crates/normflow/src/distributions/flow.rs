//! A normalizing flow: a bijection pushed onto a base distribution.

use candle_core::Tensor;
use rand::RngCore;

use super::Distribution;
use crate::bijections::Bijection;
use crate::parallel::{fewer_rows, inference_rows, map_row_slices};
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

    /// Runs `f` on row slices of `rows` rows in parallel and concatenates the results along the
    /// batch axis, when the flow treats rows independently and the batch is large enough to
    /// split (see [`crate::parallel`]); otherwise `f` on everything. `context` is sliced with
    /// the rows when it has one row per data row.
    fn by_row_slices<const K: usize>(
        &self,
        rows: usize,
        context: Option<&Tensor>,
        f: impl Fn(usize, usize, Option<&Tensor>) -> Result<[Tensor; K]> + Sync,
    ) -> Result<[Tensor; K]> {
        let slice_rows = inference_rows(self.training_slice_rows());
        // The row count before `rows_independent`, which reads a tensor in every ActNorm.
        if rows < 2 * slice_rows || !self.rows_independent() {
            return f(0, rows, context);
        }
        let parts = map_row_slices(rows, slice_rows, |start, len| {
            let c = match context {
                Some(c) if c.dims().first() == Some(&rows) => Some(c.narrow(0, start, len)?),
                other => other.cloned(),
            };
            f(start, len, c.as_ref())
        })?;
        let mut out = Vec::with_capacity(K);
        for k in 0..K {
            let pieces: Vec<&Tensor> = parts.iter().map(|p| &p[k]).collect();
            out.push(Tensor::cat(&pieces, 0)?);
        }
        Ok(out.try_into().expect("K tensors"))
    }
}

impl Distribution for Flow {
    fn log_prob(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let rows = x.dims().first().copied().unwrap_or(0);
        let [lp] = self.by_row_slices(rows, context, |start, len, c| {
            let x = if len == rows { x.clone() } else { x.narrow(0, start, len)? };
            let (z, ladj) = self.transform.forward_and_ladj(&x, c)?;
            Ok([(self.base.log_prob(&z, c)? + ladj)?])
        })?;
        Ok(lp)
    }

    fn sample(&self, n: usize, context: Option<&Tensor>, rng: &mut dyn RngCore) -> Result<Tensor> {
        // The noise is drawn in one piece, so samples do not depend on the slicing.
        let z = self.base.sample(n, context, rng)?;
        let [x] = self.by_row_slices(n, context, |start, len, c| {
            let z = if len == n { z.clone() } else { z.narrow(0, start, len)? };
            Ok([self.transform.inverse(&z, c)?])
        })?;
        Ok(x)
    }

    /// `log p(x) = log q0(z) - log|det dx/dz|`, from the same pass that produced `x`.
    fn sample_and_log_prob(
        &self,
        n: usize,
        context: Option<&Tensor>,
        rng: &mut dyn RngCore,
    ) -> Result<(Tensor, Tensor)> {
        let (z, base_lp) = self.base.sample_and_log_prob(n, context, rng)?;
        let [x, ladj_inverse] = self.by_row_slices(n, context, |start, len, c| {
            let z = if len == n { z.clone() } else { z.narrow(0, start, len)? };
            let (x, ladj) = self.transform.inverse_and_ladj(&z, c)?;
            Ok([x, ladj])
        })?;
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

    fn rows_independent(&self) -> bool {
        self.transform.rows_independent() && self.base.rows_independent()
    }

    fn training_slice_rows(&self) -> Option<usize> {
        fewer_rows(self.transform.training_slice_rows(), self.base.training_slice_rows())
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

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::flows::{AutoregressiveSpec, FlowSpec};
    use crate::model::Model;
    use crate::random::{rng_from_seed, standard_normal};

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
        Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?)
    }

    /// Batches of 2,100 rows are cut into slices (two of 1,050) and run in parallel: the results
    /// must be those of the uncut computation.
    #[test]
    fn sliced_log_prob_and_sampling_match_the_uncut_computation() -> Result<()> {
        let mut spec = AutoregressiveSpec::new(3);
        spec.context_features = 2;
        spec.layers = 2;
        spec.hidden = 8;
        let model = Model::new(FlowSpec::Maf(spec), None, None, 1, DType::F64, &Device::Cpu)?;
        model.store().perturb(0.3, 2)?;
        let n = 2 * crate::parallel::INFERENCE_SLICE_ROWS + 52;
        let mut rng = rng_from_seed(3);
        let x = standard_normal((n, 3), DType::F64, &Device::Cpu, &mut rng)?;
        let c = standard_normal((n, 2), DType::F64, &Device::Cpu, &mut rng)?;

        let lp = model.log_prob(&x, Some(&c))?;
        let mut pieces = Vec::new();
        for start in (0..n).step_by(500) {
            let len = 500.min(n - start);
            pieces
                .push(model.log_prob(&x.narrow(0, start, len)?, Some(&c.narrow(0, start, len)?))?);
        }
        assert!(max_diff(&lp, &Tensor::cat(&pieces, 0)?)? < 1e-12);

        let flow = model.flow();
        let sampled = flow.sample(n, Some(&c), &mut rng_from_seed(9))?;
        let z = flow.base().sample(n, Some(&c), &mut rng_from_seed(9))?;
        assert!(max_diff(&sampled, &flow.transform().inverse(&z, Some(&c))?)? < 1e-12);

        let (xs, lps) = flow.sample_and_log_prob(n, Some(&c), &mut rng_from_seed(9))?;
        assert!(max_diff(&xs, &sampled)? < 1e-12);
        assert!(max_diff(&lps, &model.log_prob(&xs, Some(&c))?)? < 1e-9);
        Ok(())
    }
}
