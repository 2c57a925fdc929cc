use candle_core::{DType, Device, Tensor, Var};

use super::*;
use crate::Error;

/// `A = [[-0.1, 1], [-1, -0.1]]`: `y(t) = exp(-0.1 t) R(t) y0`, a damped rotation.
fn a_matrix() -> Result<Tensor> {
    Ok(Tensor::new(&[[-0.1f64, 1.0], [-1.0, -0.1]], &Device::Cpu)?)
}

fn y0() -> Result<Tensor> {
    Ok(Tensor::new(&[[1.0f64, 0.0], [0.5, -2.0], [0.0, 3.0]], &Device::Cpu)?)
}

/// `dy/dt = y A^T` for `y (B, 2)`.
fn linear(a: Tensor) -> impl Fn(f64, &[Tensor]) -> Result<Vec<Tensor>> {
    move |_t, y| Ok(vec![y[0].matmul(&a.t()?)?])
}

fn exact(t: f64) -> Result<Tensor> {
    let (c, s) = (t.cos(), t.sin());
    // exp(At) = exp(-0.1 t) [[c, s], [-s, c]]; rows y -> y exp(At)^T.
    let m = (Tensor::new(&[[c, s], [-s, c]], &Device::Cpu)? * (-0.1 * t).exp())?;
    Ok(y0()?.matmul(&m.t()?)?)
}

fn max_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f64>()?)
}

fn solve_linear(solver: Solver, t0: f64, t1: f64, y: Tensor) -> Result<(Tensor, SolveStats)> {
    let (out, stats) = solve(&linear(a_matrix()?), &solver, t0, t1, &[y])?;
    Ok((out[0].clone(), stats))
}

#[test]
fn fixed_step_solvers_converge_at_their_order() -> Result<()> {
    let target = exact(2.0)?;
    for (name, order, make) in [
        ("euler", 1.0, (|steps| Solver::Euler { steps }) as fn(usize) -> Solver),
        ("rk4", 4.0, |steps| Solver::Rk4 { steps }),
    ] {
        let e1 = max_err(&solve_linear(make(20), 0.0, 2.0, y0()?)?.0, &target)?;
        let e2 = max_err(&solve_linear(make(40), 0.0, 2.0, y0()?)?.0, &target)?;
        let observed = (e1 / e2).log2();
        assert!((observed - order).abs() < 0.25, "{name}: order {observed} ({e1} -> {e2})");
    }
    let (y, stats) = solve_linear(Solver::Rk4 { steps: 100 }, 0.0, 2.0, y0()?)?;
    assert!(max_err(&y, &target)? < 1e-8);
    assert_eq!((stats.evaluations, stats.steps), (400, 100));
    Ok(())
}

#[test]
fn dopri5_meets_its_tolerance_both_ways() -> Result<()> {
    let target = exact(2.0)?;
    let mut previous = 0;
    for tol in [1e-4, 1e-7, 1e-10] {
        let solver = Solver::Dopri5 { atol: tol, rtol: tol, max_steps: 10_000 };
        let (y, stats) = solve_linear(solver, 0.0, 2.0, y0()?)?;
        let err = max_err(&y, &target)?;
        assert!(err < 20.0 * tol, "tol {tol}: error {err}");
        assert!(stats.steps > 0 && stats.evaluations == 2 + 6 * (stats.steps + stats.rejected));
        assert!(stats.evaluations > previous, "tighter tolerances take more evaluations");
        previous = stats.evaluations;
        // Backwards from t = 2 recovers y0.
        let (back, _) = solve_linear(solver, 2.0, 0.0, y)?;
        assert!(max_err(&back, &y0()?)? < 40.0 * tol, "tol {tol}: round trip");
    }
    // The local error is O(h^5): halving the tolerance's 5th root halves the steps (roughly).
    let steps = |tol: f64| -> Result<usize> {
        let s = Solver::Dopri5 { atol: tol, rtol: tol, max_steps: 10_000 };
        Ok(solve_linear(s, 0.0, 2.0, y0()?)?.1.steps)
    };
    let ratio = steps(1e-10)? as f64 / steps(1e-10 * 32.0)? as f64;
    assert!((1.5..2.6).contains(&ratio), "steps ratio {ratio}");
    Ok(())
}

#[test]
fn dopri5_max_steps_guard_names_the_time_reached() -> Result<()> {
    let solver = Solver::Dopri5 { atol: 1e-12, rtol: 1e-12, max_steps: 3 };
    let err = solve_linear(solver, 0.0, 2.0, y0()?).err().map(|e| e.to_string());
    let msg = err.unwrap_or_default();
    assert!(msg.contains("maximum of 3 steps at t = 0."), "{msg}");
    // A dynamics that blows up in finite time: y' = y^2 from y = 1 reaches infinity at t = 1.
    let blow_up = |_t: f64, y: &[Tensor]| -> Result<Vec<Tensor>> { Ok(vec![y[0].sqr()?]) };
    let y = Tensor::new(&[1.0f64], &Device::Cpu)?;
    let solver = Solver::Dopri5 { atol: 1e-6, rtol: 1e-6, max_steps: 500 };
    let msg = solve(&blow_up, &solver, 0.0, 2.0, &[y]).err().map(|e| e.to_string());
    let msg = msg.unwrap_or_default();
    let reached: f64 = msg
        .split("at t = ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    assert!((reached - 1.0).abs() < 1e-2, "{msg}");
    Ok(())
}

#[test]
fn bad_settings_and_shapes_are_errors() -> Result<()> {
    for bad in [
        Solver::Euler { steps: 0 },
        Solver::Dopri5 { atol: 0.0, rtol: 1e-5, max_steps: 10 },
        Solver::Dopri5 { atol: 1e-5, rtol: f64::NAN, max_steps: 10 },
        Solver::Dopri5 { atol: 1e-5, rtol: 1e-5, max_steps: 0 },
    ] {
        assert!(solve_linear(bad, 0.0, 1.0, y0()?).is_err(), "{bad:?}");
    }
    let wrong = |_t: f64, y: &[Tensor]| -> Result<Vec<Tensor>> { Ok(vec![y[0].sum(1)?]) };
    let err = solve(&wrong, &Solver::Rk4 { steps: 2 }, 0.0, 1.0, &[y0()?]).err();
    assert!(err.is_some_and(|e| e.to_string().contains("shape")));
    let (same, stats) = solve_linear(Solver::default(), 1.0, 1.0, y0()?)?;
    assert_eq!((max_err(&same, &y0()?)?, stats.evaluations), (0.0, 0));
    Ok(())
}

/// `L = sum(w * y(T))` for the linear system with matrix `A` (a `Var`): gradients with respect
/// to `A` and `y0` by backpropagation through the solver, by the adjoint method, and by central
/// differences agree.
#[test]
fn adjoint_backprop_and_finite_differences_agree() -> Result<()> {
    let a = Var::from_tensor(&a_matrix()?)?;
    let y = Var::from_tensor(&y0()?)?;
    let w = Tensor::new(&[[1.0f64, -2.0], [0.5, 0.3], [-1.0, 1.5]], &Device::Cpu)?;
    let t1 = 1.5;
    let accurate = Solver::Dopri5 { atol: 1e-10, rtol: 1e-10, max_steps: 10_000 };
    let loss_of = |a: &Tensor, y: &Tensor, solver: Solver| -> Result<(Tensor, Tensor)> {
        let (out, _) = solve(&linear(a.clone()), &solver, 0.0, t1, std::slice::from_ref(y))?;
        Ok(((&out[0] * &w)?.sum_all()?, out[0].clone()))
    };
    for solver in [Solver::Rk4 { steps: 50 }, accurate] {
        let (loss, y_t1) = loss_of(a.as_tensor(), y.as_tensor(), solver)?;
        let grads = loss.backward()?;
        let (bp_a, bp_y) = (grads.get(a.as_tensor()).cloned(), grads.get(y.as_tensor()).cloned());
        let (bp_a, bp_y) = (bp_a.ok_or(Error::NonFinite("no grad".into()))?, bp_y.unwrap());
        let adj = adjoint_gradients(
            &linear(a.as_tensor().clone()),
            &accurate,
            0.0,
            t1,
            &[y_t1],
            std::slice::from_ref(&w),
            std::slice::from_ref(a.as_tensor()),
        )?;
        assert!(max_err(&adj.params[0], &bp_a)? < 1e-6, "{solver:?}");
        assert!(max_err(&adj.initial_state[0], &bp_y)? < 1e-6, "{solver:?}");
        assert!(max_err(&adj.recovered_initial_state[0], &y0()?)? < 1e-6);
        assert!(adj.stats.evaluations > 0);
        // Central differences in each entry of A.
        let base = a_matrix()?.flatten_all()?.to_vec1::<f64>()?;
        let grad = bp_a.flatten_all()?.to_vec1::<f64>()?;
        for (i, g) in grad.iter().enumerate() {
            let loss_at = |d: f64| -> Result<f64> {
                let mut v = base.clone();
                v[i] += d;
                let a = Tensor::from_vec(v, (2, 2), &Device::Cpu)?;
                Ok(loss_of(&a, &y0()?, accurate)?.0.to_dtype(DType::F64)?.to_scalar()?)
            };
            let fd = (loss_at(1e-5)? - loss_at(-1e-5)?) / 2e-5;
            assert!((fd - g).abs() < 1e-5, "dL/dA[{i}]: fd {fd}, backprop {g}");
        }
    }
    Ok(())
}

#[test]
fn a_vanishing_field_takes_one_dopri5_step() -> Result<()> {
    let zero = |_t: f64, y: &[Tensor]| -> Result<Vec<Tensor>> { Ok(vec![y[0].zeros_like()?]) };
    let (y, stats) = solve(&zero, &Solver::default(), 0.0, 0.5, &[y0()?])?;
    assert_eq!((stats.steps, stats.rejected, max_err(&y[0], &y0()?)?), (1, 0, 0.0));
    Ok(())
}
