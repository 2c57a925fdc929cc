//! The image presets (RealNVP multi-scale, Glow) on small synthetic 8-bit images: shapes,
//! round trips, densities in pixel units, dequantized training, hyperparameter errors.

use normflow::candle::{DType, Device, Tensor};
use normflow::distributions::Distribution;
use normflow::flows::{bits_per_dim, FlowSpec, ImageFlowSpec};
use normflow::model::Model;
use normflow::random::{rng_from_seed, uniform};
use normflow::train::{fit, mean_log_prob, NoopObserver, TrainConfig};
use normflow::{Error, Result};

fn small(levels: usize) -> ImageFlowSpec {
    ImageFlowSpec { levels, steps: 1, hidden: 8, blocks: 1, ..ImageFlowSpec::new(1, 4, 4) }
}

fn presets() -> Vec<FlowSpec> {
    vec![FlowSpec::RealNvpImage(small(2)), FlowSpec::Glow(small(2)), FlowSpec::Glow(small(3))]
}

fn pixels(rows: usize, seed: u64) -> Result<Tensor> {
    Ok((uniform((rows, 16), DType::F64, &Device::Cpu, &mut rng_from_seed(seed))? * 256.0)?)
}

#[test]
fn image_presets_round_trip_and_sample_inside_the_logit_range() -> Result<()> {
    for spec in presets() {
        let model = Model::new(spec.clone(), None, None, 1, DType::F64, &Device::Cpu)?;
        model.store().perturb(0.05, 2)?;
        model.set_training(false);
        let x = pixels(6, 3)?;
        let (z, ladj) = model.flow().transform().forward_and_ladj(&x, None)?;
        assert_eq!(z.dims(), [6, 16], "{}", spec.family());
        let (back, ladj_inv) = model.flow().transform().inverse_and_ladj(&z, None)?;
        let err = (back - &x)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(err < 1e-8, "{}: round trip error {err}", spec.family());
        assert!((ladj + ladj_inv)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-8);
        let samples = model.sample(20, None, &mut rng_from_seed(4))?;
        let s = samples.flatten_all()?.to_vec1::<f64>()?;
        // The logit's margin alpha makes the support slightly wider than [0, 256): samples
        // lie in (-256 a / (1 - 2a), 256 (1 - a) / (1 - 2a)), clamped when written as pixels.
        let a = 0.05 / 0.9;
        let range = (-256.0 * a)..(256.0 * (1.0 + a));
        assert!(s.iter().all(|v| range.contains(v)), "{}", spec.family());
        let lp = model.log_prob(&x, None)?.to_vec1::<f64>()?;
        assert!(lp.iter().all(|v| v.is_finite()));
    }
    Ok(())
}

/// Images made of two patterns plus dequantization noise: a trained model puts far more
/// probability on them than its initialization, in bits per dimension.
#[test]
fn dequantized_training_lowers_bits_per_dim() -> Result<()> {
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
    let data = Tensor::from_vec(rows, (256, 16), &Device::Cpu)?;
    let model = Model::new(FlowSpec::Glow(small(2)), None, None, 5, DType::F32, &Device::Cpu)?;
    let config = TrainConfig {
        epochs: 6,
        batch_size: 32,
        lr: 3e-3,
        val_frac: 0.0,
        patience: None,
        uniform_dequantization: true,
        ..TrainConfig::default()
    };
    let eval =
        normflow::random::uniform((256, 16), DType::F32, &Device::Cpu, &mut rng_from_seed(9))?;
    let eval = (data.to_dtype(DType::F32)? + eval)?;
    model.set_training(false);
    let before = bits_per_dim(mean_log_prob(&model, &eval, None, 256)?, 16);
    fit(&model, model.store(), &data.to_dtype(DType::F32)?, None, &config, &mut NoopObserver)?;
    model.set_training(false);
    let after = bits_per_dim(mean_log_prob(&model, &eval, None, 256)?, 16);
    assert!(after < before - 1.0 && after < 6.0, "bits/dim {before} -> {after}");
    Ok(())
}

#[test]
fn impossible_image_specs_name_the_parameter() {
    let cases = [
        (ImageFlowSpec { levels: 4, ..ImageFlowSpec::new(1, 28, 28) }, "levels"),
        (ImageFlowSpec { hidden: 0, ..ImageFlowSpec::new(1, 28, 28) }, "hidden"),
        (ImageFlowSpec { logit_alpha: 0.5, ..ImageFlowSpec::new(1, 28, 28) }, "logit_alpha"),
    ];
    for (spec, name) in cases {
        match FlowSpec::Glow(spec).validate() {
            Err(Error::InvalidConfig { name: got, .. }) => assert_eq!(got, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn coupling_log_scales_stay_within_their_bound() -> Result<()> {
    use normflow::bijections::{Bijection, ImageAffineCoupling, ImageCouplingConfig, ImageMask};
    use normflow::nn::Activation;
    use normflow::params::ParamStore;
    // A conditioner with large weights: its raw log-scales are far outside any bound.
    let ladj_per_pixel = |bound: f64| -> Result<f64> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
        let config = ImageCouplingConfig {
            channels: 2,
            mask: ImageMask::Channel { parity: 0 },
            hidden: 8,
            blocks: 1,
            activation: Activation::Relu,
            log_scale_bound: bound,
        };
        let coupling = ImageAffineCoupling::new(&store.root(), &config)?;
        store.perturb(30.0, 1)?;
        // 1x1 images: one transformed pixel each, so each row's ladj is that pixel's s.
        let x = (uniform((64, 2, 1, 1), DType::F64, &Device::Cpu, &mut rng_from_seed(2))? * 8.0)?;
        let (_, ladj) = coupling.forward_and_ladj(&x, None)?;
        Ok(ladj.abs()?.max(0)?.to_scalar::<f64>()?)
    };
    let tight = ladj_per_pixel(normflow::bijections::IMAGE_LOG_SCALE_BOUND)?;
    let loose = ladj_per_pixel(normflow::bijections::LOG_SCALE_BOUND)?;
    assert!(tight < 2.0 && tight > 1.0, "largest |log-scale| {tight} with the bound at 2");
    assert!(loose > 2.0 && loose < 6.91, "largest |log-scale| {loose} with the bound at 6.9");
    Ok(())
}

#[test]
fn image_specs_written_before_the_bound_keep_the_old_bound() -> Result<()> {
    let new = ImageFlowSpec::new(1, 28, 28);
    assert_eq!(new.log_scale_bound, normflow::bijections::IMAGE_LOG_SCALE_BOUND);
    let mut json = serde_json::to_value(&new).expect("serializable");
    json.as_object_mut().expect("an object").remove("log_scale_bound");
    let old: ImageFlowSpec = serde_json::from_value(json).expect("an older spec still reads");
    assert_eq!(old.log_scale_bound, normflow::bijections::LOG_SCALE_BOUND);
    let bad = ImageFlowSpec { log_scale_bound: 0.0, ..new };
    match FlowSpec::Glow(bad).validate() {
        Err(Error::InvalidConfig { name, .. }) => assert_eq!(name, "log_scale_bound"),
        other => panic!("{other:?}"),
    }
    Ok(())
}
