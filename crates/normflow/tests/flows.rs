//! Flow-level tests of every preset: shapes, gradients, save/load, normalization, sampling.

use normflow::bijections::cnf::TraceEstimator;
use normflow::candle::{DType, Device, Tensor};
use normflow::distributions::Distribution;
use normflow::flows::{
    AutoregressiveSpec, BaseSpec, BnafSpec, CouplingSpec, FfjordSpec, FlowSpec, PermutationKind,
    TransformerFlowSpec, TransformerSpec,
};
use normflow::model::Model;
use normflow::ode::Solver;
use normflow::preprocess::Standardization;
use normflow::random::{rng_from_seed, standard_normal};
use normflow::Result;

fn presets(features: usize, context: usize) -> Vec<FlowSpec> {
    let ar = AutoregressiveSpec {
        context_features: context,
        layers: 3,
        hidden: 16,
        blocks: 2,
        ..AutoregressiveSpec::new(features)
    };
    let coupling = CouplingSpec {
        context_features: context,
        layers: 3,
        hidden: 16,
        blocks: 2,
        ..CouplingSpec::new(features)
    };
    let mut specs = vec![
        FlowSpec::Made(AutoregressiveSpec { layers: 1, ..ar.clone() }),
        FlowSpec::Maf(ar.clone()),
        FlowSpec::Maf(AutoregressiveSpec {
            batch_norm: true,
            permutation: PermutationKind::Random,
            residual: true,
            base: BaseSpec::DiagNormal,
            ..ar.clone()
        }),
        FlowSpec::Iaf(ar.clone()),
        FlowSpec::Nice(coupling.clone()),
        FlowSpec::RealNvp(coupling.clone()),
        FlowSpec::RealNvp(CouplingSpec {
            batch_norm: true,
            base: BaseSpec::GaussianMixture { components: 3 },
            ..coupling.clone()
        }),
    ];
    // The generic transformer families; every transformer kind joins this list.
    let transformer_flow = |transformer: TransformerSpec| TransformerFlowSpec {
        context_features: context,
        layers: 2,
        hidden: 16,
        blocks: 2,
        ..TransformerFlowSpec::new(features, transformer)
    };
    let transformers = vec![
        TransformerSpec::Affine,
        TransformerSpec::rational_quadratic(4, 3.0),
        TransformerSpec::circular_rational_quadratic(4),
        TransformerSpec::LinearSpline { bins: 5, bound: 3.0 },
        TransformerSpec::QuadraticSpline { bins: 5, bound: 3.0 },
        TransformerSpec::CubicSpline { bins: 5, bound: 3.0 },
        TransformerSpec::DeepSigmoid { hidden: 4, dense: false },
        TransformerSpec::DeepSigmoid { hidden: 3, dense: true },
        TransformerSpec::Sos { polynomials: 3, degree: 2 },
        TransformerSpec::Bernstein { degree: 6 },
    ];
    for transformer in transformers {
        specs.push(FlowSpec::Coupling(transformer_flow(transformer.clone())));
        specs.push(FlowSpec::Autoregressive(transformer_flow(transformer.clone())));
        // The inverse (IAF) form runs the same layer code for every transformer; the splines'
        // is slow on the 2-D grid, so only the cubic (the most involved inverse) takes it.
        if matches!(transformer, TransformerSpec::Affine | TransformerSpec::CubicSpline { .. }) {
            specs.push(FlowSpec::Autoregressive(TransformerFlowSpec {
                inverse: true,
                ..transformer_flow(transformer)
            }));
        }
    }
    // Exact trace (these tests compare densities to 1e-8); small, as the grid test has 130k rows.
    specs.push(FlowSpec::Ffjord(FfjordSpec {
        context_features: context,
        hidden: 6,
        blocks: 1,
        trace: TraceEstimator::Exact,
        solver: Solver::Rk4 { steps: 6 },
        ..FfjordSpec::new(features)
    }));
    specs.push(FlowSpec::Bnaf(BnafSpec {
        context_features: context,
        layers: 2,
        hidden_factor: 4,
        permutation: PermutationKind::Random,
        ..BnafSpec::new(features)
    }));
    if context > 0 {
        specs.push(FlowSpec::Maf(AutoregressiveSpec {
            base: BaseSpec::ConditionalDiagNormal { hidden: 8, blocks: 1 },
            ..ar
        }));
    }
    specs
}

/// A model with perturbed (non-identity) parameters and a non-trivial standardization.
fn model(spec: FlowSpec, dtype: DType) -> Result<Model> {
    let d = spec.features();
    let c = spec.context_features();
    let pre = Standardization {
        shift: (0..d).map(|i| 0.3 * i as f64).collect(),
        scale: (0..d).map(|i| 1.0 + 0.2 * i as f64).collect(),
    };
    let ctx_pre = (c > 0).then(|| Standardization::identity(c));
    let m = Model::new(spec, Some(pre), ctx_pre, 3, dtype, &Device::Cpu)?;
    m.store().perturb(0.1, 9)?;
    Ok(m)
}

fn data(rows: usize, cols: usize, seed: u64, dtype: DType) -> Result<Tensor> {
    standard_normal((rows, cols), dtype, &Device::Cpu, &mut rng_from_seed(seed))
}

fn context_for(spec: &FlowSpec, rows: usize, dtype: DType) -> Result<Option<Tensor>> {
    let c = spec.context_features();
    Ok(if c > 0 { Some(data(rows, c, 77, dtype)?) } else { None })
}

#[test]
fn log_prob_has_one_finite_value_per_row() -> Result<()> {
    for spec in presets(3, 0).into_iter().chain(presets(3, 2)) {
        let name = format!("{spec:?}");
        let ctx = context_for(&spec, 7, DType::F32)?;
        let m = model(spec, DType::F32)?;
        let lp = m.log_prob(&data(7, 3, 1, DType::F32)?, ctx.as_ref())?;
        assert_eq!(lp.dims(), [7], "{name}");
        assert!(lp.to_vec1::<f32>()?.iter().all(|v| v.is_finite()), "{name}");
    }
    Ok(())
}

#[test]
fn every_parameter_receives_a_gradient() -> Result<()> {
    for spec in presets(3, 0).into_iter().chain(presets(3, 2)) {
        let name = format!("{spec:?}");
        let ctx = context_for(&spec, 16, DType::F64)?;
        let m = model(spec, DType::F64)?;
        m.set_training(true);
        let loss = m.log_prob(&data(16, 3, 2, DType::F64)?, ctx.as_ref())?.mean_all()?.neg()?;
        let grads = loss.backward()?;
        for (param, var) in m.store().parameters() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient for {param}"));
            let g = g.flatten_all()?.to_vec1::<f64>()?;
            assert!(g.iter().all(|v| v.is_finite()), "{name}: non-finite gradient for {param}");
            assert!(g.iter().any(|v| *v != 0.0), "{name}: zero gradient for {param}");
        }
    }
    Ok(())
}

#[test]
fn save_then_load_gives_the_same_log_prob() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| normflow::Error::io("tempdir", e))?;
    for (i, spec) in presets(3, 0).into_iter().chain(presets(3, 2)).enumerate() {
        let name = format!("{spec:?}");
        let ctx = context_for(&spec, 9, DType::F32)?;
        let m = model(spec, DType::F32)?;
        // Move batch-norm running statistics away from their initial values too.
        m.set_training(true);
        m.log_prob(&data(9, 3, 4, DType::F32)?.affine(2.0, 1.0)?, ctx.as_ref())?;
        m.set_training(false);
        let x = data(9, 3, 5, DType::F32)?;
        let before = m.log_prob(&x, ctx.as_ref())?.to_vec1::<f32>()?;
        let path = dir.path().join(format!("model{i}"));
        m.save(&path, None)?;
        let loaded = Model::load(&path, &Device::Cpu)?;
        let after = loaded.log_prob(&x, ctx.as_ref())?.to_vec1::<f32>()?;
        for (a, b) in before.iter().zip(&after) {
            assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{name}: {a} vs {b}");
        }
    }
    Ok(())
}

/// The density of every 2-D preset integrates to 1 (Riemann sum on a fine grid).
#[test]
fn two_dimensional_densities_integrate_to_one() -> Result<()> {
    let (lo, hi, n) = (-9.0f64, 9.0f64, 360usize);
    let h = (hi - lo) / n as f64;
    let mut grid = Vec::with_capacity(n * n * 2);
    for i in 0..n {
        for j in 0..n {
            grid.push(lo + (i as f64 + 0.5) * h);
            grid.push(lo + (j as f64 + 0.5) * h);
        }
    }
    let grid = Tensor::from_vec(grid, (n * n, 2), &Device::Cpu)?;
    for spec in presets(2, 0) {
        let name = format!("{spec:?}");
        if let FlowSpec::Autoregressive(TransformerFlowSpec {
            inverse: true, transformer, ..
        }) = &spec
        {
            // The density of an inverse-form flow whose map has no closed-form inverse runs the
            // numerical solver D times per layer: on 130k grid points that takes minutes. The
            // same maps are integrated in forward form; the inverse form is checked elsewhere.
            if !matches!(transformer, TransformerSpec::Affine) {
                continue;
            }
        }
        let m = model(spec, DType::F64)?;
        // No graph: a continuous flow would keep every solver stage of 130k rows alive.
        let lp = normflow::inference::without_gradients(|| m.log_prob(&grid, None))?;
        let lp = lp.to_vec1::<f64>()?;
        let mass: f64 = lp.iter().map(|v| v.exp()).sum::<f64>() * h * h;
        assert!((mass - 1.0).abs() < 0.01, "{name}: integral {mass}");
    }
    Ok(())
}

#[test]
fn samples_come_with_their_own_log_prob() -> Result<()> {
    for spec in presets(3, 0).into_iter().chain(presets(3, 2)) {
        let name = format!("{spec:?}");
        let ctx = context_for(&spec, 6, DType::F64)?;
        let m = model(spec, DType::F64)?;
        let (x, lp) = m.sample_and_log_prob(6, ctx.as_ref(), &mut rng_from_seed(1))?;
        assert_eq!(x.dims(), [6, 3], "{name}");
        let again = m.log_prob(&x, ctx.as_ref())?.to_vec1::<f64>()?;
        for (a, b) in lp.to_vec1::<f64>()?.iter().zip(&again) {
            assert!((a - b).abs() < 1e-8 * a.abs().max(1.0), "{name}: {a} vs {b}");
        }
        let plain = m.sample(6, ctx.as_ref(), &mut rng_from_seed(1))?;
        let diff = (plain - &x)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12, "{name}: sample and sample_and_log_prob disagree");
    }
    Ok(())
}

#[test]
fn invalid_specs_are_rejected_with_the_parameter_named() {
    let cases: Vec<(FlowSpec, &str)> = vec![
        (FlowSpec::Maf(AutoregressiveSpec { layers: 0, ..AutoregressiveSpec::new(2) }), "layers"),
        (FlowSpec::Made(AutoregressiveSpec { layers: 2, ..AutoregressiveSpec::new(2) }), "layers"),
        (FlowSpec::Maf(AutoregressiveSpec { hidden: 0, ..AutoregressiveSpec::new(2) }), "hidden"),
        (FlowSpec::RealNvp(CouplingSpec::new(1)), "features"),
        (FlowSpec::Ffjord(FfjordSpec { time: -1.0, ..FfjordSpec::new(2) }), "time"),
        (
            FlowSpec::Ffjord(FfjordSpec {
                solver: Solver::Dopri5 { atol: 1e-5, rtol: 0.0, max_steps: 10 },
                ..FfjordSpec::new(2)
            }),
            "rtol",
        ),
        (FlowSpec::Bnaf(BnafSpec { hidden_factor: 0, ..BnafSpec::new(2) }), "hidden_factor"),
        (
            FlowSpec::Autoregressive(TransformerFlowSpec::new(
                2,
                TransformerSpec::DeepSigmoid { hidden: 0, dense: true },
            )),
            "hidden",
        ),
        (
            FlowSpec::Autoregressive(TransformerFlowSpec::new(
                2,
                TransformerSpec::Sos { polynomials: 0, degree: 2 },
            )),
            "polynomials",
        ),
        (
            FlowSpec::Coupling(TransformerFlowSpec::new(
                2,
                TransformerSpec::Bernstein { degree: 0 },
            )),
            "degree",
        ),
        (
            FlowSpec::Maf(AutoregressiveSpec {
                base: BaseSpec::ConditionalDiagNormal { hidden: 4, blocks: 1 },
                ..AutoregressiveSpec::new(2)
            }),
            "conditional",
        ),
        (
            FlowSpec::Coupling(TransformerFlowSpec::new(
                2,
                TransformerSpec::rational_quadratic(1, 3.0),
            )),
            "bins",
        ),
        (
            FlowSpec::Autoregressive(TransformerFlowSpec::new(
                2,
                TransformerSpec::rational_quadratic(8, -1.0),
            )),
            "bound",
        ),
    ];
    for (spec, word) in cases {
        let err = Model::new(spec.clone(), None, None, 0, DType::F32, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains(word), "{spec:?}: {err}");
    }
}

#[test]
fn wrong_inputs_are_errors_not_panics() -> Result<()> {
    let m = model(FlowSpec::Maf(AutoregressiveSpec::new(3)), DType::F32)?;
    assert!(m.log_prob(&data(4, 2, 0, DType::F32)?, None).is_err());
    let ctx = data(4, 2, 0, DType::F32)?;
    assert!(m.log_prob(&data(4, 3, 0, DType::F32)?, Some(&ctx)).is_err());
    let cm = model(
        FlowSpec::Maf(AutoregressiveSpec { context_features: 2, ..AutoregressiveSpec::new(3) }),
        DType::F32,
    )?;
    assert!(cm.log_prob(&data(4, 3, 0, DType::F32)?, None).is_err());
    assert!(cm.sample(5, Some(&ctx), &mut rng_from_seed(0)).is_err());
    Ok(())
}

/// New autoregressive models use sorted MADE degrees; a spec written before the field existed
/// reads as cyclic, the degrees its weights were trained with, and the field is honoured:
/// the same weights give another density under the other degrees.
#[test]
fn autoregressive_specs_without_degrees_keep_cyclic_degrees() -> Result<()> {
    use normflow::nn::MadeHiddenDegrees;
    let rq = TransformerSpec::rational_quadratic(4, 3.0);
    let new = [
        FlowSpec::Maf(AutoregressiveSpec { layers: 2, hidden: 12, ..AutoregressiveSpec::new(3) }),
        FlowSpec::Autoregressive(TransformerFlowSpec {
            layers: 2,
            hidden: 12,
            ..TransformerFlowSpec::new(3, rq)
        }),
    ];
    for spec in new {
        let mut json = serde_json::to_value(&spec).expect("serializable");
        assert_eq!(json["hidden_degrees"], "sorted", "{json}");
        json.as_object_mut().expect("an object").remove("hidden_degrees");
        let old: FlowSpec = serde_json::from_value(json).expect("an older spec still reads");
        let degrees = |s: &FlowSpec| match s {
            FlowSpec::Maf(s) => s.hidden_degrees,
            FlowSpec::Autoregressive(s) => s.hidden_degrees,
            other => panic!("{other:?}"),
        };
        assert_eq!(degrees(&old), MadeHiddenDegrees::Cyclic);
        let x = data(6, 3, 5, DType::F64)?;
        let (sorted, cyclic) = (model(spec, DType::F64)?, model(old, DType::F64)?);
        let diff = (sorted.log_prob(&x, None)? - cyclic.log_prob(&x, None)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
        assert!(diff > 1e-6, "the degrees should change the network: {diff}");
    }
    Ok(())
}
