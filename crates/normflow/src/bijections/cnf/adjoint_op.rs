//! The adjoint method inside candle's backward pass: a custom op whose forward solves the CNF
//! without keeping a graph and whose backward integrates the adjoint system
//! ([`crate::ode::adjoint_gradients`]).

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Shape, Tensor};

use super::{field::VectorField, lock, CnfDynamics};
use crate::ode::{adjoint_gradients, solve, FunctionEvaluations, Solver};

/// `[x (B, D), θ (P,)] -> [z | ladj | (kinetic | frobenius)] (B, D + 1 (+ 2))`.
///
/// `θ` is the concatenation of the field's flattened parameters: the op does not read it (the
/// field computes with its own tensors, which hold the same values), it is an input so that
/// candle's backward hands its gradient back to every parameter through the concatenation.
/// Memory does not grow with the number of solver steps, in the forward pass (each step's
/// graph is dropped) or the backward pass (the adjoint solve recomputes the trajectory).
/// CPU only.
pub(super) struct AdjointOp {
    pub field: Arc<dyn VectorField>,
    pub context: Option<Tensor>,
    pub tangents: Tensor,
    pub regularize: bool,
    pub solver: Solver,
    pub span: (f64, f64),
    pub evaluations: Arc<Mutex<FunctionEvaluations>>,
}

fn wrap(e: crate::Error) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

impl AdjointOp {
    fn dynamics(&self) -> CnfDynamics<'_> {
        CnfDynamics {
            field: self.field.as_ref(),
            context: self.context.as_ref(),
            tangents: Some(self.tangents.clone()),
            regularize: self.regularize,
        }
    }

    fn state_columns(&self) -> usize {
        if self.regularize {
            3
        } else {
            1
        }
    }

    /// `(B, D + k)` -> `[z (B, D), k tensors (B,)]`.
    fn split(&self, t: &Tensor, d: usize) -> candle_core::Result<Vec<Tensor>> {
        let mut out = vec![t.narrow(1, 0, d)?.contiguous()?];
        for i in 0..self.state_columns() {
            out.push(t.narrow(1, d + i, 1)?.squeeze(1)?.contiguous()?);
        }
        Ok(out)
    }
}

impl CustomOp2 for AdjointOp {
    fn name(&self) -> &'static str {
        "cnf-adjoint"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = l1.contiguous_offsets() else {
            candle_core::bail!("cnf-adjoint: expected a contiguous input");
        };
        let x = match s1 {
            CpuStorage::F32(v) => Tensor::from_slice(&v[start..end], l1.shape(), &Device::Cpu)?,
            CpuStorage::F64(v) => Tensor::from_slice(&v[start..end], l1.shape(), &Device::Cpu)?,
            _ => candle_core::bail!("cnf-adjoint: f32 or f64 tensors"),
        };
        let (batch, d) = x.dims2()?;
        let zeros = Tensor::zeros(batch, x.dtype(), &Device::Cpu)?;
        let mut state = vec![x.clone(), zeros.clone()];
        if self.regularize {
            state.extend([zeros.clone(), zeros]);
        }
        let dynamics = self.dynamics();
        let (out, stats) = crate::inference::without_gradients(|| {
            solve(&dynamics, &self.solver, self.span.0, self.span.1, &state)
        })
        .map_err(wrap)?;
        lock(&self.evaluations).forward = stats.evaluations;
        let mut columns = vec![out[0].detach()];
        columns.extend(
            out[1..].iter().map(|t| t.detach().unsqueeze(1)).collect::<Result<Vec<_>, _>>()?,
        );
        let result = Tensor::cat(&columns, 1)?;
        let shape = Shape::from((batch, d + self.state_columns()));
        let storage = match x.dtype() {
            DType::F32 => CpuStorage::F32(result.flatten_all()?.to_vec1::<f32>()?),
            _ => CpuStorage::F64(result.flatten_all()?.to_vec1::<f64>()?),
        };
        Ok((storage, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _theta: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let d = x.dim(1)?;
        let final_state = self.split(res, d)?;
        let grad_final = self.split(grad_res, d)?;
        let params = self.field.parameters();
        let dynamics = self.dynamics();
        let adj = adjoint_gradients(
            &dynamics,
            &self.solver,
            self.span.0,
            self.span.1,
            &final_state,
            &grad_final,
            &params,
        )
        .map_err(wrap)?;
        lock(&self.evaluations).backward = adj.stats.evaluations;
        let flat: Vec<Tensor> =
            adj.params.iter().map(|g| g.flatten_all()).collect::<Result<_, _>>()?;
        let grad_theta = if flat.is_empty() { None } else { Some(Tensor::cat(&flat, 0)?) };
        Ok((Some(adj.initial_state[0].clone()), grad_theta))
    }
}
