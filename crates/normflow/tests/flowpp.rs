//! The Flow++ preset on small synthetic 8-bit images: round trips, variational dequantization
//! (a finite bound that training lowers, noise inside the unit interval, the same bound after
//! saving and loading), hyperparameter errors.

use normflow::bijections::DequantizationSpec;
use normflow::candle::{DType, Device, Tensor};
use normflow::distributions::Distribution;
use normflow::flows::{bits_per_dim, FlowSpec, FlowppSpec, ImageFlowSpec};
use normflow::model::Model;
use normflow::random::{rng_from_seed, uniform};
use normflow::train::{fit, mean_log_prob, NoopObserver, TrainConfig};
use normflow::{Bijection, Error, ParamStore, Result};

fn small(dequantization: Option<DequantizationSpec>) -> FlowppSpec {
    let image =
        ImageFlowSpec { levels: 2, steps: 1, hidden: 8, blocks: 1, ..ImageFlowSpec::new(1, 4, 4) };
    FlowppSpec { image, components: 3, dequantization }
}

fn dequantizer() -> Option<DequantizationSpec> {
    Some(DequantizationSpec { steps: 2, hidden: 4, blocks: 1 })
}

/// 256 integer images of two 4x4 patterns.
fn patterns() -> Result<Tensor> {
    let patterns = [
        [0.0, 255.0, 0.0, 255.0, 255.0, 0.0, 255.0, 0.0],
        [200.0, 200.0, 30.0, 30.0, 200.0, 200.0, 30.0, 30.0],
    ];
    let rows: Vec<f64> = (0..256)
        .flat_map(|i| {
            let p = patterns[i % 2];
            p.iter().chain(p.iter()).copied().collect::<Vec<_>>()
        })
        .collect();
    Ok(Tensor::from_vec(rows, (256, 16), &Device::Cpu)?.to_dtype(DType::F32)?)
}

#[test]
fn flowpp_round_trips_and_samples_inside_the_logit_range() -> Result<()> {
    for deq in [None, dequantizer()] {
        let spec = FlowSpec::Flowpp(small(deq.clone()));
        let model = Model::new(spec, None, None, 1, DType::F64, &Device::Cpu)?;
        model.store().perturb(0.05, 2)?;
        model.set_training(false);
        let x = (uniform((6, 16), DType::F64, &Device::Cpu, &mut rng_from_seed(3))? * 256.0)?
            .floor()?;
        let (z, ladj) = model.flow().transform().forward_and_ladj(&x, None)?;
        assert_eq!(z.dims(), [6, 16]);
        let (back, ladj_inv) = model.flow().transform().inverse_and_ladj(&z, None)?;
        let u = (back - &x)?.flatten_all()?.to_vec1::<f64>()?;
        let lsum = (&ladj + ladj_inv)?.abs()?.max_all()?.to_scalar::<f64>()?;
        if deq.is_none() {
            // No noise inside the model: an exact round trip.
            assert!(u.iter().all(|v| v.abs() < 1e-8), "{u:?}");
            assert!(lsum < 1e-8, "{lsum}");
        } else {
            // The inverse returns the dequantized values x + u with u in (0, 1).
            assert!(u.iter().all(|v| *v > 0.0 && *v < 1.0), "{u:?}");
        }
        let samples = model.sample(10, None, &mut rng_from_seed(4))?;
        let a = 0.05 / 0.9;
        let range = (-256.0 * a)..(256.0 * (1.0 + a));
        let s = samples.flatten_all()?.to_vec1::<f64>()?;
        assert!(s.iter().all(|v| range.contains(v)), "{s:?}");
        let lp = model.log_prob(&x, None)?.to_vec1::<f64>()?;
        assert!(lp.iter().all(|v| v.is_finite()), "{lp:?}");
    }
    Ok(())
}

/// Joint training of the flow and `q(u | x)` on integer images lowers the bound; the bound is
/// finite and deterministic in evaluation, the learned noise stays in the unit interval, and a
/// saved and reloaded model reports the same bound.
#[test]
fn variational_dequantization_trains_and_keeps_its_noise_in_the_unit_interval() -> Result<()> {
    let data = patterns()?;
    let spec = FlowSpec::Flowpp(small(dequantizer()));
    let model = Model::new(spec.clone(), None, None, 5, DType::F32, &Device::Cpu)?;
    let config = TrainConfig {
        epochs: 4,
        batch_size: 32,
        lr: 3e-3,
        val_frac: 0.0,
        patience: None,
        uniform_dequantization: false,
        ..TrainConfig::default()
    };
    model.set_training(false);
    let before = bits_per_dim(mean_log_prob(&model, &data, None, 256)?, 16);
    fit(&model, model.store(), &data, None, &config, &mut NoopObserver)?;
    model.set_training(false);
    let after = bits_per_dim(mean_log_prob(&model, &data, None, 256)?, 16);
    assert!(after.is_finite() && after < before - 1.0, "bits/dim {before} -> {after}");
    model.set_training(false);
    let again = bits_per_dim(mean_log_prob(&model, &data, None, 256)?, 16);
    assert_eq!(after, again, "evaluation draws the same noise after each switch");

    // The same chain rebuilt outside the model, to look at the dequantizer (its first layer).
    let store = ParamStore::new(DType::F32, &Device::Cpu, 5);
    let (chain, _) = spec.build(&store.root())?;
    let tensors = model.store().tensors().into_iter().collect();
    store.load_tensors(&tensors, std::path::Path::new("trained model"))?;
    chain.set_training(false);
    let (y, neg_log_q) = chain.layers()[0].forward_and_ladj(&data, None)?;
    let u = (y - &data)?.flatten_all()?.to_vec1::<f32>()?;
    assert!(u.iter().all(|v| (0.0..=1.0).contains(v)), "noise outside [0, 1]");
    let inside = u.iter().filter(|v| **v > 0.0 && **v < 1.0).count();
    assert!(inside * 100 >= u.len() * 99, "{inside} of {} strictly inside", u.len());
    let nlq = neg_log_q.to_vec1::<f32>()?;
    assert!(nlq.iter().all(|v| v.is_finite()), "{nlq:?}");

    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
    model.save(dir.path(), None)?;
    let loaded = Model::load(dir.path(), &Device::Cpu)?;
    loaded.set_training(false);
    let reloaded = bits_per_dim(mean_log_prob(&loaded, &data, None, 256)?, 16);
    assert_eq!(after, reloaded);
    Ok(())
}

#[test]
fn impossible_flowpp_specs_name_the_parameter() {
    let cases = [
        (FlowppSpec { components: 0, ..small(None) }, "components"),
        (
            FlowppSpec {
                dequantization: Some(DequantizationSpec { steps: 0, hidden: 4, blocks: 1 }),
                ..small(None)
            },
            "dequantization steps",
        ),
        (
            FlowppSpec {
                image: ImageFlowSpec { levels: 4, ..ImageFlowSpec::new(1, 28, 28) },
                ..small(None)
            },
            "levels",
        ),
    ];
    for (spec, name) in cases {
        match FlowSpec::Flowpp(spec).validate() {
            Err(Error::InvalidConfig { name: got, .. }) => assert_eq!(got, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}
