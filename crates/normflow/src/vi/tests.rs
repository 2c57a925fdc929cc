//! Tests of variational inference: estimators, targets, grid integration, the loop.

use std::f64::consts::PI;

use candle_core::{DType, Device, Tensor};

use super::*;
use crate::bijections::{ElementwiseAffine, LuLinear, Support};
use crate::distributions::{Distribution, StandardNormal};
use crate::flows::{AutoregressiveSpec, FlowSpec};
use crate::model::Model;
use crate::random::rng_from_seed;
use crate::train::NoopObserver;
use crate::{Flow, ParamStore, Result};

fn points(rows: &[[f64; 2]]) -> Result<Tensor> {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (rows.len(), 2), &Device::Cpu)?)
}

/// `-|z|^2 / 2 + c`: a standard normal in `d` dimensions with `log Z = c + d log(2 pi) / 2`.
fn scaled_normal(d: usize, c: f64) -> impl Target {
    FnTarget::new(d, move |z: &Tensor| Ok((z.sqr()?.sum(1)? * -0.5)?.affine(1.0, c)?))
        .with_log_normalizer(c + d as f64 * 0.5 * (2.0 * PI).ln())
}

#[test]
fn estimates_are_exact_when_q_is_the_target() -> Result<()> {
    let target = scaled_normal(3, 2.5);
    let q = StandardNormal::new(&[3], DType::F64, &Device::Cpu);
    let e = estimate(&q, &target, 1000, 300, &mut rng_from_seed(0))?;
    let log_z = target.log_normalizer().unwrap();
    assert_eq!(e.samples, 1000);
    assert!((e.elbo - log_z).abs() < 1e-10, "{e:?} vs {log_z}");
    assert!((e.log_z - log_z).abs() < 1e-10, "{e:?} vs {log_z}");
    assert!((e.ess - 1000.0).abs() < 1e-6, "{e:?}");
    assert!(e.elbo_stderr < 1e-10, "{e:?}");
    Ok(())
}

#[test]
fn estimates_from_known_weights_and_their_bounds() -> Result<()> {
    // Weights 1 and 3: mean 2, ESS = 16 / 10.
    let e = ViEstimates::from_log_weights(&[0.0, 3f64.ln()])?;
    assert!((e.log_z - 2f64.ln()).abs() < 1e-12);
    assert!((e.elbo - 3f64.ln() / 2.0).abs() < 1e-12);
    assert!((e.ess - 1.6).abs() < 1e-12);
    assert!((e.ess_fraction() - 0.8).abs() < 1e-12);
    // A zero weight counts in K; NaN and an empty set are errors.
    let e = ViEstimates::from_log_weights(&[f64::NEG_INFINITY, 0.0])?;
    assert!((e.log_z - 0.5f64.ln()).abs() < 1e-12 && (e.ess - 1.0).abs() < 1e-12);
    assert!(ViEstimates::from_log_weights(&[0.0, f64::NAN]).is_err());
    assert!(ViEstimates::from_log_weights(&[]).is_err());
    assert!(ViEstimates::from_log_weights(&[f64::NEG_INFINITY]).is_err());

    // A mismatched q: ELBO <= IW log Z (always, same samples), both below log Z up to MC error,
    // ESS in [1, K].
    let target = BuiltinTarget::Mixture;
    let q = StandardNormal::new(&[2], DType::F64, &Device::Cpu);
    let e = estimate(&q, &target, 4000, 1000, &mut rng_from_seed(3))?;
    let log_z = target.log_normalizer().unwrap();
    assert!(e.elbo <= e.log_z, "{e:?}");
    assert!(e.elbo < log_z - 0.1, "{e:?}: a standard normal is far from the mixture");
    assert!(e.log_z < log_z + 0.05, "{e:?}");
    assert!((e.log_z - log_z).abs() < 0.2, "{e:?}: 4000 samples cover the mixture");
    assert!(e.ess >= 1.0 && e.ess < 0.9 * 4000.0, "{e:?}");
    Ok(())
}

#[test]
fn grid_integration_recovers_known_normalizers() -> Result<()> {
    let cpu = Device::Cpu;
    let mixture =
        log_normalizer_on_grid(&BuiltinTarget::Mixture, -7.0, 7.0, 700, DType::F64, &cpu)?;
    assert!((mixture - 10f64.ln()).abs() < 1e-6, "{mixture}");
    let normal = scaled_normal(3, -1.0);
    let grid = log_normalizer_on_grid(&normal, -8.0, 8.0, 160, DType::F64, &cpu)?;
    assert!((grid - normal.log_normalizer().unwrap()).abs() < 1e-3, "{grid}");
    // U1: the value quoted in the issue (fine-grid integration).
    let u1 = BuiltinTarget::U1.log_normalizer().unwrap();
    assert!((u1 - 1.8775).abs() < 5e-4, "{u1}");
    // U2-U4 live on the box: points outside it have zero density.
    let lp = log_density_on_grid(&BuiltinTarget::U2, -5.0, 5.0, 10, DType::F64, &cpu)?;
    assert_eq!(lp[0], f64::NEG_INFINITY); // (-4.5, -4.5)
    assert!(lp[5 * 10 + 5].is_finite()); // (0.5, 0.5)
    for t in [BuiltinTarget::U2, BuiltinTarget::U3, BuiltinTarget::U4] {
        let z = t.log_normalizer().unwrap();
        assert!(z.is_finite() && z > 0.0, "{t}: {z}");
        assert_eq!(t.support(), Support::Interval { low: -4.0, high: 4.0 });
    }
    assert!(log_normalizer_on_grid(&BuiltinTarget::U1, 1.0, 1.0, 10, DType::F64, &cpu).is_err());
    assert!(log_density_on_grid(
        &BuiltinTarget::Funnel { dim: 9 },
        -1.0,
        1.0,
        10,
        DType::F64,
        &cpu
    )
    .is_err());
    Ok(())
}

/// The energies written out for one point, independently of the tensor code.
fn energy(target: BuiltinTarget, z1: f64, z2: f64) -> f64 {
    let sq = |x: f64, s: f64| 0.5 * (x / s).powi(2);
    let w1 = (PI * z1 / 2.0).sin();
    let w2 = 3.0 * (-sq(z1 - 1.0, 0.6)).exp();
    let w3 = 3.0 / (1.0 + (-(z1 - 1.0) / 0.3).exp());
    match target {
        BuiltinTarget::U1 => {
            let r = (z1 * z1 + z2 * z2).sqrt();
            sq(r - 2.0, 0.4) - ((-sq(z1 - 2.0, 0.6)).exp() + (-sq(z1 + 2.0, 0.6)).exp()).ln()
        }
        BuiltinTarget::U2 => sq(z2 - w1, 0.4),
        BuiltinTarget::U3 => -((-sq(z2 - w1, 0.35)).exp() + (-sq(z2 - w1 + w2, 0.35)).exp()).ln(),
        BuiltinTarget::U4 => -((-sq(z2 - w1, 0.4)).exp() + (-sq(z2 - w1 + w3, 0.35)).exp()).ln(),
        BuiltinTarget::Banana => (100.0 * (z2 - z1 * z1).powi(2) + (1.0 - z1).powi(2)) / 20.0,
        BuiltinTarget::Funnel { .. } => {
            sq(z1, 3.0)
                + 0.5 * (2.0 * PI * 9.0).ln()
                + 0.5 * z2 * z2 * (-z1).exp()
                + 0.5 * z1
                + 0.5 * (2.0 * PI).ln()
        }
        BuiltinTarget::Mixture => {
            let var = MIXTURE_STD * MIXTURE_STD;
            let p: f64 = MIXTURE_COMPONENTS
                .iter()
                .map(|(w, [a, b])| {
                    w * (-((z1 - a).powi(2) + (z2 - b).powi(2)) / (2.0 * var)).exp()
                        / (2.0 * PI * var)
                })
                .sum();
            -p.ln()
        }
    }
}

#[test]
fn builtin_targets_match_their_formulas_in_f64_and_f32() -> Result<()> {
    let pts = [[0.3, -0.7], [-1.9, 1.2], [2.1, 0.4], [1.0, -2.5], [-0.2, 0.05]];
    let z = points(&pts)?;
    let all = [
        BuiltinTarget::U1,
        BuiltinTarget::U2,
        BuiltinTarget::U3,
        BuiltinTarget::U4,
        BuiltinTarget::Banana,
        BuiltinTarget::Funnel { dim: 2 },
        BuiltinTarget::Mixture,
    ];
    for t in all {
        assert_eq!(BuiltinTarget::parse(&t.name())?, t);
        let got64 = t.log_density(&z)?.to_vec1::<f64>()?;
        let got32 = t.log_density(&z.to_dtype(DType::F32)?)?.to_dtype(DType::F64)?;
        for ((p, g), g32) in pts.iter().zip(&got64).zip(got32.to_vec1::<f64>()?) {
            let want = -energy(t, p[0], p[1]);
            assert!((g - want).abs() < 1e-9 * (1.0 + want.abs()), "{t} at {p:?}: {g} vs {want}");
            assert!((g32 - want).abs() < 1e-4 * (1.0 + want.abs()), "{t} f32 at {p:?}");
        }
    }
    // The funnel in 4-D: each extra coordinate adds one conditional normal term.
    let f = BuiltinTarget::Funnel { dim: 4 };
    let z4 = Tensor::from_vec(vec![0.5, 0.1, -0.3, 0.2], (1, 4), &Device::Cpu)?;
    let want = -sq_funnel(0.5, &[0.1, -0.3, 0.2]);
    let got = f.log_density(&z4)?.to_vec1::<f64>()?[0];
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    assert!(BuiltinTarget::parse("funnel:1").is_err());
    assert!(BuiltinTarget::parse("u5").is_err());
    assert!(f.log_density(&z).is_err(), "a (5, 2) batch is not 4-D");
    Ok(())
}

fn sq_funnel(v: f64, x: &[f64]) -> f64 {
    let mut u = v * v / 18.0 + 0.5 * (2.0 * PI * 9.0).ln();
    for xi in x {
        u += 0.5 * xi * xi * (-v).exp() + 0.5 * v + 0.5 * (2.0 * PI).ln();
    }
    u
}

#[test]
fn sticking_the_landing_has_zero_gradient_at_the_optimum() -> Result<()> {
    let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
    let q = Flow::new(
        ElementwiseAffine::new(&store.root(), &[2])?,
        StandardNormal::new(&[2], DType::F64, &Device::Cpu),
    );
    let target = scaled_normal(2, 1.0); // q, at its initialization, is this target normalized
    let log_z = target.log_normalizer().unwrap();
    let norm = |stl: bool| -> Result<f64> {
        let (loss, log_w) = elbo_loss(&q, &target, 64, 1.0, stl, &mut rng_from_seed(5))?;
        let grads = loss.backward()?;
        let mut total = 0.0;
        for (_, var) in store.parameters() {
            let g = grads.get(var.as_tensor()).expect("every parameter has a gradient");
            total += g.sqr()?.sum_all()?.to_scalar::<f64>()?;
        }
        assert!(log_w.to_vec1::<f64>()?.iter().all(|w| (w - log_z).abs() < 1e-12));
        Ok(total.sqrt())
    };
    let (with, without) = (norm(true)?, norm(false)?);
    assert!(with < 1e-12, "STL gradient at the optimum: {with}");
    assert!(without > 1e-3, "the score term is noise on a finite batch: {without}");
    Ok(())
}

#[test]
fn a_gaussian_target_is_fit_to_its_mean_and_covariance() -> Result<()> {
    // N(mu, S) with S = [[2, 0.8], [0.8, 1]], written as an unnormalized log-density.
    let (mu, s) = ([1.0, -2.0], [[2.0, 0.8], [0.8, 1.0]]);
    let det: f64 = s[0][0] * s[1][1] - s[0][1] * s[1][0];
    let inv = [[s[1][1] / det, -s[0][1] / det], [-s[1][0] / det, s[0][0] / det]];
    let target = FnTarget::new(2, move |z: &Tensor| {
        let a = (z.narrow(1, 0, 1)?.squeeze(1)? - mu[0])?;
        let b = (z.narrow(1, 1, 1)?.squeeze(1)? - mu[1])?;
        let quad = (((a.sqr()? * inv[0][0])? + (&a * &b)? * (2.0 * inv[0][1]))?
            + (b.sqr()? * inv[1][1])?)?;
        Ok((quad * -0.5)?)
    });
    let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
    let q = Flow::new(
        LuLinear::new(&store.root(), 2)?,
        StandardNormal::new(&[2], DType::F64, &Device::Cpu),
    );
    let config =
        ViConfig { steps: 400, batch_size: 128, lr: 0.03, stl: true, ..ViConfig::default() };
    let report = fit(&q, &store, &target, &config, &mut NoopObserver)?;
    assert_eq!(report.steps_run, 400);
    assert_eq!(report.skipped_steps, 0);
    let x = q.sample(20_000, None, &mut rng_from_seed(9))?.to_vec2::<f64>()?;
    let n = x.len() as f64;
    let mean = [0, 1].map(|i| x.iter().map(|r| r[i]).sum::<f64>() / n);
    for i in 0..2 {
        assert!((mean[i] - mu[i]).abs() < 0.05, "mean {mean:?} vs {mu:?}");
        for j in 0..2 {
            let c = x.iter().map(|r| (r[i] - mean[i]) * (r[j] - mean[j])).sum::<f64>() / n;
            assert!((c - s[i][j]).abs() < 0.08, "cov[{i}][{j}] = {c} vs {}", s[i][j]);
        }
    }
    // The fit is exact, so the ELBO reaches log Z = log(2 pi sqrt(det S)).
    let e = estimate(&q, &target, 2000, 2000, &mut rng_from_seed(4))?;
    let log_z = (2.0 * PI).ln() + 0.5 * det.ln();
    assert!((e.elbo - log_z).abs() < 0.01, "{e:?} vs {log_z}");
    Ok(())
}

#[test]
fn the_elbo_of_a_fitted_flow_stays_below_log_z_on_the_mixture() -> Result<()> {
    let target = BuiltinTarget::Mixture;
    let log_z = target.log_normalizer().unwrap();
    let spec =
        FlowSpec::Iaf(AutoregressiveSpec { layers: 2, hidden: 16, ..AutoregressiveSpec::new(2) });
    let q = Model::new(spec, None, None, 0, DType::F32, &Device::Cpu)?;
    let before = estimate(&q, &target, 4000, 4000, &mut rng_from_seed(1))?;
    let config = ViConfig {
        steps: 300,
        batch_size: 128,
        lr: 5e-3,
        anneal_steps: 100,
        initial_beta: 0.1,
        ..ViConfig::default()
    };
    let report = fit(&q, q.store(), &target, &config, &mut NoopObserver)?;
    assert_eq!(report.history.len(), 300);
    assert!(report.history[..100].iter().all(|s| s.beta < 1.0));
    assert!(report.history[100..].iter().all(|s| s.beta == 1.0));
    let after = estimate(&q, &target, 4000, 4000, &mut rng_from_seed(2))?;
    assert!(after.elbo > before.elbo + 0.3, "{before:?} -> {after:?}");
    assert!(after.elbo <= log_z + 3.0 * after.elbo_stderr, "{after:?} vs log Z = {log_z}");
    assert!(after.elbo <= after.log_z && after.log_z < log_z + 0.05, "{after:?}");
    assert!(after.ess > before.ess, "{before:?} -> {after:?}");
    Ok(())
}

#[test]
fn fit_checks_its_inputs_and_a_flow_on_the_box_stays_inside() -> Result<()> {
    let target = BuiltinTarget::U2;
    let spec =
        FlowSpec::Iaf(AutoregressiveSpec { layers: 1, hidden: 8, ..AutoregressiveSpec::new(2) });
    let q = Model::new(spec.clone(), None, None, 0, DType::F32, &Device::Cpu)?
        .with_support(target.support())?;
    let config = ViConfig { steps: 5, batch_size: 32, ..ViConfig::default() };
    let report = fit(&q, q.store(), &target, &config, &mut NoopObserver)?;
    assert!(report.history.iter().all(|s| s.elbo.is_finite()), "{report:?}");
    let x = q.sample(500, None, &mut rng_from_seed(0))?.to_dtype(DType::F64)?;
    let flat = x.flatten_all()?.to_vec1::<f64>()?;
    assert!(flat.iter().all(|v| v.abs() < ENERGY_BOX), "samples leave the box");
    // A 3-D flow against a 2-D target, and a bad config, are errors.
    let spec3 =
        FlowSpec::Iaf(AutoregressiveSpec { layers: 1, hidden: 8, ..AutoregressiveSpec::new(3) });
    let q3 = Model::new(spec3, None, None, 0, DType::F32, &Device::Cpu)?;
    assert!(fit(&q3, q3.store(), &target, &config, &mut NoopObserver).is_err());
    let bad = ViConfig { steps: 0, ..config };
    assert!(fit(&q, q.store(), &target, &bad, &mut NoopObserver).is_err());
    Ok(())
}

#[test]
fn skipped_steps_roll_back_and_an_observer_can_stop() -> Result<()> {
    // A target that is NaN for the first calls: every step is skipped until it recovers.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let target = FnTarget::new(2, |z: &Tensor| {
        let c = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let lp = (z.sqr()?.sum(1)? * -0.5)?;
        if c < 4 {
            Ok((lp * f64::NAN)?)
        } else {
            Ok(lp)
        }
    });
    let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
    let q = Flow::new(
        ElementwiseAffine::new(&store.root(), &[2])?,
        StandardNormal::new(&[2], DType::F64, &Device::Cpu),
    );
    let config = ViConfig { steps: 10, batch_size: 8, max_bad_steps: 2, ..ViConfig::default() };
    struct StopAt(usize);
    impl ViObserver for StopAt {
        fn on_step(&mut self, s: &ViStep) -> crate::train::Control {
            if s.step == self.0 {
                crate::train::Control::Stop
            } else {
                crate::train::Control::Continue
            }
        }
    }
    let report = fit(&q, &store, &target, &config, &mut StopAt(7))?;
    assert_eq!((report.skipped_steps, report.rollbacks), (4, 2), "{report:?}");
    assert!(report.history[..4].iter().all(|s| s.skipped && s.elbo.is_nan()));
    assert!(report.history[4].lr < config.lr, "two rollbacks quarter the rate");
    assert!(report.interrupted && report.steps_run == 7);
    Ok(())
}

#[test]
fn sampling_is_reparameterized_for_every_preset_so_the_elbo_reaches_every_parameter() -> Result<()>
{
    let ar = AutoregressiveSpec { layers: 2, hidden: 8, ..AutoregressiveSpec::new(2) };
    let coupling =
        crate::flows::CouplingSpec { layers: 2, hidden: 8, ..crate::flows::CouplingSpec::new(2) };
    let specs = [FlowSpec::Maf(ar.clone()), FlowSpec::Iaf(ar), FlowSpec::RealNvp(coupling)];
    for spec in specs {
        let family = spec.family();
        let q = Model::new(spec, None, None, 0, DType::F64, &Device::Cpu)?
            .with_support(BuiltinTarget::U3.support())?;
        q.store().perturb(0.1, 1)?; // off the identity, so no gradient is zero by symmetry
        for stl in [false, true] {
            let (loss, _) = elbo_loss(&q, &BuiltinTarget::U3, 16, 0.5, stl, &mut rng_from_seed(2))?;
            let grads = loss.backward()?;
            for (name, var) in q.store().parameters() {
                let g = grads.get(var.as_tensor());
                let norm = match g {
                    Some(g) => g.sqr()?.sum_all()?.to_scalar::<f64>()?,
                    None => 0.0,
                };
                assert!(
                    norm > 0.0 && norm.is_finite(),
                    "{family} (stl {stl}): `{name}` gets {norm}"
                );
            }
        }
    }
    Ok(())
}
