use candle_core::{DType, Device, Tensor, Var};

use super::*;
use crate::ode::adjoint_gradients;
use crate::ParamStore;

fn normal(shape: (usize, usize), seed: u64) -> Result<Tensor> {
    let mut rng = crate::random::rng_from_seed(seed);
    crate::random::standard_normal(shape, DType::F64, &Device::Cpu, &mut rng)
}

fn max_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f64>()?)
}

fn config(solver: Solver, trace: TraceEstimator) -> CnfConfig {
    CnfConfig { time: 0.7, solver, trace, ..CnfConfig::default() }
}

fn linear_cnf(store: &ParamStore, config: CnfConfig) -> Result<(Cnf, Tensor)> {
    let field = LinearField::new(&store.root(), 3)?;
    store.perturb(0.5, 3)?;
    let a = field.matrix().clone();
    Ok((Cnf::new(&store.root(), Box::new(field), config)?, a))
}

#[test]
fn linear_dynamics_has_log_det_t_trace_a() -> Result<()> {
    let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
    let accurate = Solver::Dopri5 { atol: 1e-10, rtol: 1e-10, max_steps: 10_000 };
    let (cnf, a) = linear_cnf(&store, config(accurate, TraceEstimator::Exact))?;
    let x = normal((4, 3), 1)?;
    let (z, ladj) = cnf.forward_and_ladj(&x, None)?;
    let expected = 0.7 * a.to_vec2::<f64>()?.iter().enumerate().map(|(i, r)| r[i]).sum::<f64>();
    for v in ladj.to_vec1::<f64>()? {
        assert!((v - expected).abs() < 1e-12, "{v} vs {expected}");
    }
    // z(T) = exp(T A) x: compare with a 30-term Taylor series of the matrix exponential.
    let mut term = Tensor::eye(3, DType::F64, &Device::Cpu)?;
    let mut expm = term.clone();
    for k in 1..30 {
        term = (term.matmul(&a)? * (0.7 / k as f64))?;
        expm = (expm + &term)?;
    }
    assert!(max_err(&z, &x.matmul(&expm.t()?)?)? < 1e-8);
    let (back, inv_ladj) = cnf.inverse_and_ladj(&z, None)?;
    assert!(max_err(&back, &x)? < 1e-8);
    assert!(max_err(&inv_ladj, &ladj.neg()?)? < 1e-12);
    Ok(())
}

#[test]
fn hutchinson_is_unbiased_and_fixed_over_a_solve() -> Result<()> {
    for noise in [HutchinsonNoise::Rademacher, HutchinsonNoise::Gaussian] {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
        let c = CnfConfig { noise, ..config(Solver::Rk4 { steps: 2 }, TraceEstimator::Hutchinson) };
        let (cnf, a) = linear_cnf(&store, c)?;
        let x = normal((4000, 3), 2)?;
        let ladj = cnf.forward_and_ladj(&x, None)?.1.to_vec1::<f64>()?;
        let a = a.to_vec2::<f64>()?;
        let expected = 0.7 * (a[0][0] + a[1][1] + a[2][2]);
        let n = ladj.len() as f64;
        let mean = ladj.iter().sum::<f64>() / n;
        let sd = (ladj.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        assert!(sd > 1e-3, "{noise:?}: the estimate varies between samples");
        assert!((mean - expected).abs() < 4.0 * sd / n.sqrt(), "{noise:?}: {mean} vs {expected}");
        // The noise is fixed over one solve: with one noise vector v, every RK4 stage sees the
        // same v^T A v, so the ladj is exactly T v^T A v, a quadratic form in {±1} (Rademacher)
        // whose values are few; a fresh draw per evaluation would mix them.
        if noise == HutchinsonNoise::Rademacher {
            let mut distinct: Vec<f64> = ladj.iter().map(|v| (v * 1e9).round() / 1e9).collect();
            distinct.sort_by(f64::total_cmp);
            distinct.dedup();
            // v^T A v = tr(A) + sum_{i<j} (A_ij + A_ji) v_i v_j: 4 sign patterns of v_i v_j.
            assert!(distinct.len() <= 4, "{} distinct values", distinct.len());
        }
        // Evaluation mode uses the exact trace on small D: deterministic.
        cnf.set_training(false);
        let eval = cnf.forward_and_ladj(&x.narrow(0, 0, 3)?, None)?.1.to_vec1::<f64>()?;
        assert!(eval.iter().all(|v| (v - expected).abs() < 1e-12));
    }
    Ok(())
}

fn net(store: &ParamStore, activation: OdeActivation, context: usize) -> Result<OdeNet> {
    let config =
        OdeNetConfig { features: 3, context_features: context, hidden: vec![7, 5], activation };
    let net = OdeNet::new(&store.root().pp("net"), &config)?;
    store.perturb(0.4, 9)?;
    Ok(net)
}

/// The forward-mode products `J e_i` of the concat-squash net equal central differences of `f`.
#[test]
fn forward_mode_jvp_matches_finite_differences() -> Result<()> {
    for (activation, context) in [(OdeActivation::Tanh, 0), (OdeActivation::Softplus, 2)] {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 4);
        let net = net(&store, activation, context)?;
        let z = normal((5, 3), 5)?;
        let c = if context > 0 { Some(normal((5, context), 6)?) } else { None };
        let eye = Tensor::eye(3, DType::F64, &Device::Cpu)?;
        let basis = eye.unsqueeze(1)?.broadcast_as((3, 5, 3))?.contiguous()?;
        let (f, jv) = net.eval(0.3, &z, c.as_ref(), Some(&basis))?;
        let jv = jv.ok_or_else(|| Error::Numerical("no tangents".into()))?;
        let (f_plain, none) = net.eval(0.3, &z, c.as_ref(), None)?;
        assert!(none.is_none() && max_err(&f, &f_plain)? == 0.0);
        for i in 0..3 {
            let e = eye.narrow(0, i, 1)?;
            let plus = net.eval(0.3, &z.broadcast_add(&(&e * 1e-6)?)?, c.as_ref(), None)?.0;
            let minus = net.eval(0.3, &z.broadcast_sub(&(&e * 1e-6)?)?, c.as_ref(), None)?.0;
            let fd = ((plus - minus)? / 2e-6)?;
            let err = max_err(&jv.get(i)?, &fd)?;
            assert!(err < 1e-8, "{activation:?}: column {i}: {err}");
        }
    }
    Ok(())
}

fn loss_and_grads(cnf: &Cnf, x: &Tensor, w: &Tensor) -> Result<(f64, Tensor)> {
    let (z, ladj) = cnf.forward_and_ladj(x, None)?;
    let loss = ((z * w)?.sum_all()? + ladj.sum_all()?)?;
    Ok((loss.to_scalar::<f64>()?, loss))
}

/// Training gradients (first order, through the solver and the forward-mode trace) of
/// `sum(w z) + sum(ladj)` with respect to the net's parameters equal central differences.
#[test]
fn parameter_gradients_match_finite_differences() -> Result<()> {
    let store = ParamStore::new(DType::F64, &Device::Cpu, 4);
    let config = config(Solver::Rk4 { steps: 8 }, TraceEstimator::Exact);
    let net = net(&store, OdeActivation::Tanh, 0)?;
    let cnf = Cnf::new(&store.root(), Box::new(net), config)?;
    let x = normal((4, 3), 7)?;
    let w = normal((4, 3), 8)?;
    let grads = loss_and_grads(&cnf, &x, &w)?.1.backward()?;
    let mut checked = 0;
    for (name, var) in store.parameters() {
        let g = grads.get(var.as_tensor()).ok_or_else(|| Error::Numerical(name.clone()))?;
        let g = g.flatten_all()?.to_vec1::<f64>()?;
        let base = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        for i in [0, base.len() - 1] {
            let at = |d: f64| -> Result<f64> {
                let mut v = base.clone();
                v[i] += d;
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu)?)?;
                loss_and_grads(&cnf, &x, &w).map(|r| r.0)
            };
            let fd = (at(1e-6)? - at(-1e-6)?) / 2e-6;
            at(0.0)?;
            assert!((fd - g[i]).abs() < 1e-6 * (1.0 + fd.abs()), "{name}[{i}]: {fd} vs {}", g[i]);
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");
    Ok(())
}

/// The adjoint method on the augmented CNF dynamics gives backpropagation's gradients.
#[test]
fn adjoint_matches_backprop_through_the_solver() -> Result<()> {
    let store = ParamStore::new(DType::F64, &Device::Cpu, 4);
    let accurate = Solver::Dopri5 { atol: 1e-9, rtol: 1e-9, max_steps: 10_000 };
    let net = net(&store, OdeActivation::Softplus, 0)?;
    let cnf = Cnf::new(&store.root(), Box::new(net), config(accurate, TraceEstimator::Exact))?;
    let x = Var::from_tensor(&normal((4, 3), 7)?)?;
    let w = normal((4, 3), 8)?;
    let dynamics = cnf.dynamics(x.as_tensor(), None, false)?;
    let state = [x.as_tensor().clone(), Tensor::zeros(4, DType::F64, &Device::Cpu)?];
    let (out, _) = solve(&dynamics, &accurate, 0.0, 0.7, &state)?;
    let loss = ((&out[0] * &w)?.sum_all()? + out[1].sum_all()?)?;
    let grads = loss.backward()?;
    let params: Vec<Tensor> =
        store.parameters().iter().map(|(_, v)| v.as_tensor().clone()).collect();
    let ones = Tensor::ones(4, DType::F64, &Device::Cpu)?;
    let adj = adjoint_gradients(&dynamics, &accurate, 0.0, 0.7, &out, &[w.clone(), ones], &params)?;
    let bp_x = grads.get(x.as_tensor()).ok_or_else(|| Error::Numerical("x".into()))?;
    assert!(max_err(&adj.initial_state[0], bp_x)? < 1e-6);
    for (p, g) in params.iter().zip(&adj.params) {
        let bp = grads.get(p).ok_or_else(|| Error::Numerical("param".into()))?;
        assert!(max_err(g, bp)? < 1e-6, "{}", max_err(g, bp)?);
    }
    Ok(())
}

#[test]
fn rnode_penalties_and_evaluation_counts() -> Result<()> {
    let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
    let c = CnfConfig {
        jacobian_weight: 2.0,
        ..config(Solver::Rk4 { steps: 5 }, TraceEstimator::Exact)
    };
    let (cnf, a) = linear_cnf(&store, c)?;
    let x = normal((6, 3), 1)?;
    cnf.forward_and_ladj(&x, None)?;
    // Linear dynamics: ||J||_F^2 = ||A||_F^2 at every t, integrated exactly by RK4.
    let expected = 2.0 * 0.7 * a.sqr()?.sum_all()?.to_scalar::<f64>()?;
    let aux = cnf.auxiliary_loss()?.ok_or_else(|| Error::Numerical("no penalty".into()))?;
    assert!((aux.to_scalar::<f64>()? - expected).abs() < 1e-10);
    assert_eq!(cnf.function_evaluations(), Some(FunctionEvaluations { forward: 20, backward: 20 }));
    cnf.set_training(false);
    cnf.forward_and_ladj(&x, None)?;
    assert!(cnf.auxiliary_loss()?.is_none(), "no penalty in evaluation mode");
    // Kinetic energy: a zero field has none, and the penalty is reported through a chain.
    let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
    let k = CnfConfig {
        kinetic_weight: 1.0,
        ..config(Solver::Euler { steps: 3 }, TraceEstimator::Hutchinson)
    };
    let zero = Cnf::new(&store.root(), Box::new(LinearField::new(&store.root(), 3)?), k)?;
    let chain = crate::bijections::Chain::new(vec![Box::new(zero)]);
    chain.forward_and_ladj(&x, None)?;
    let aux = chain.auxiliary_loss()?.ok_or_else(|| Error::Numerical("no penalty".into()))?;
    assert_eq!(aux.to_scalar::<f64>()?, 0.0);
    assert_eq!(chain.function_evaluations().map(|e| e.forward), Some(3));
    Ok(())
}

#[test]
fn bad_inputs_and_settings_are_errors() -> Result<()> {
    let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
    let (cnf, _) = linear_cnf(&store, CnfConfig::default())?;
    assert!(cnf.forward(&normal((2, 4), 0)?, None).is_err());
    assert!(cnf.forward(&Tensor::zeros(3, DType::F64, &Device::Cpu)?, None).is_err());
    for bad in [
        CnfConfig { time: 0.0, ..CnfConfig::default() },
        CnfConfig { time: f64::INFINITY, ..CnfConfig::default() },
        CnfConfig { kinetic_weight: -1.0, ..CnfConfig::default() },
        CnfConfig { solver: Solver::Rk4 { steps: 0 }, ..CnfConfig::default() },
    ] {
        let field = LinearField::new(&store.root().pp("other"), 3)?;
        assert!(Cnf::new(&store.root(), Box::new(field), bad).is_err());
    }
    let net = net(&store, OdeActivation::Tanh, 2)?;
    let cnf = Cnf::new(&store.root(), Box::new(net), CnfConfig::default())?;
    let err = cnf.forward(&normal((2, 3), 0)?, None).err().map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("context")));
    Ok(())
}

/// Training with `adjoint: true` (the custom op) gives backpropagation's values and gradients,
/// RNODE terms included, and reports the adjoint solve's evaluations as the backward count.
#[test]
fn adjoint_training_mode_matches_backprop() -> Result<()> {
    let store = ParamStore::new(DType::F64, &Device::Cpu, 4);
    let accurate = Solver::Dopri5 { atol: 1e-10, rtol: 1e-10, max_steps: 10_000 };
    let net = net(&store, OdeActivation::Tanh, 0)?;
    let base = CnfConfig {
        kinetic_weight: 0.3,
        jacobian_weight: 0.2,
        ..config(accurate, TraceEstimator::Exact)
    };
    let backprop = Cnf::new(&store.root(), Box::new(net.clone()), base.clone())?;
    let adjoint = Cnf::new(&store.root(), Box::new(net), CnfConfig { adjoint: true, ..base })?;
    let x = normal((5, 3), 7)?;
    let w = normal((5, 3), 8)?;
    let run = |cnf: &Cnf| -> Result<(f64, Vec<Tensor>)> {
        let (z, ladj) = cnf.forward_and_ladj(&x, None)?;
        let aux = cnf.auxiliary_loss()?.ok_or_else(|| Error::Numerical("no penalty".into()))?;
        let loss = (((z * &w)?.sum_all()? + ladj.sum_all()?)? + aux)?;
        let grads = loss.backward()?;
        let g = store
            .parameters()
            .iter()
            .map(|(n, v)| grads.get(v.as_tensor()).cloned().ok_or(Error::Numerical(n.clone())))
            .collect::<Result<_>>()?;
        Ok((loss.to_scalar::<f64>()?, g))
    };
    let (l_bp, g_bp) = run(&backprop)?;
    let (l_adj, g_adj) = run(&adjoint)?;
    assert!((l_bp - l_adj).abs() < 1e-8, "{l_bp} vs {l_adj}");
    for (a, b) in g_bp.iter().zip(&g_adj) {
        assert!(max_err(a, b)? < 1e-6, "{}", max_err(a, b)?);
    }
    let nfe = adjoint.function_evaluations().unwrap_or_default();
    assert!(nfe.forward > 0 && nfe.backward > 0, "{nfe:?}");
    // Without gradients the adjoint layer takes the plain path.
    let plain = crate::inference::without_gradients(|| adjoint.forward_and_ladj(&x, None))?;
    assert!(max_err(&plain.0, &backprop.forward(&x, None)?)? < 1e-8);
    Ok(())
}
