//! Latent flows for discrete sequences (`normflow::seq`): the priors' densities, training,
//! bounds and model files, on a tiny fixture.
//!
//! `tests/fixtures/chorales_tiny.json` holds the first 10 to 16 steps of the first chorales of
//! each split of `shared/data/jsb-chorales/bach_chorales_music21.json` (Bach chorales bundled
//! with music21; 4 train, 1 valid, 1 test).

use std::path::Path;

use normflow::candle::{DType, Device, Tensor};
use normflow::seq::{
    fit_sequences, load_sequences, NoteRange, PriorKind, SeqModel, SeqModelKind, SeqModelSpec,
    SeqPrior, SeqPriorConfig, SeqTrainConfig, SequenceSplits,
};
use normflow::{ParamStore, Result};

const KINDS: [PriorKind; 3] = [PriorKind::AfAf, PriorKind::AfScf, PriorKind::IafScf];

fn fixture() -> SequenceSplits {
    load_sequences(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chorales_tiny.json"))
        .expect("fixture loads")
}

fn prior(kind: PriorKind, spline_bins: usize) -> Result<(ParamStore, SeqPrior)> {
    let store = ParamStore::new(DType::F64, &Device::Cpu, 2);
    let config =
        SeqPriorConfig { kind, latent: 4, layers: 2, hidden: 6, spline_bins, spline_bound: 3.0 };
    let prior = SeqPrior::new(&store.root(), &config)?;
    store.perturb(0.3, 4)?;
    Ok((store, prior))
}

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f64>()?)
}

/// The sampler's own log-density (base density minus the sampling map's log-determinant)
/// equals the prior's `log_prob` of the drawn sequences, for every architecture, affine and
/// spline.
#[test]
fn sampling_and_scoring_agree_for_every_prior() -> Result<()> {
    for kind in KINDS {
        for bins in [0, 4] {
            let (_, prior) = prior(kind, bins)?;
            let like = Tensor::zeros(1, DType::F64, &Device::Cpu)?;
            let mut rng = normflow::random::rng_from_seed(9);
            let (z, sampler_log_p) = prior.sample(3, 5, &like, &mut rng)?;
            let scored = prior.log_prob_steps(&z)?;
            let diff = max_diff(&sampler_log_p, &scored)?;
            assert!(diff < 1e-9, "{kind:?} bins {bins}: {diff}");
        }
    }
    Ok(())
}

/// Causality over time: the per-step log-densities of a prefix do not depend on what follows,
/// which is what makes padding after a sequence's end harmless.
#[test]
fn prefix_densities_ignore_later_steps() -> Result<()> {
    for kind in KINDS {
        let (_, prior) = prior(kind, 0)?;
        let mut rng = normflow::random::rng_from_seed(1);
        let z = normflow::random::standard_normal((2, 6, 4), DType::F64, &Device::Cpu, &mut rng)?;
        let full = prior.log_prob_steps(&z)?.narrow(1, 0, 4)?;
        let prefix = prior.log_prob_steps(&z.narrow(1, 0, 4)?)?;
        assert!(max_diff(&full, &prefix)? < 1e-12, "{kind:?}");
    }
    Ok(())
}

fn spec(kind: SeqModelKind) -> SeqModelSpec {
    SeqModelSpec {
        kind,
        notes: NoteRange::PIANO,
        latent: 4,
        layers: 2,
        hidden: 8,
        spline_bins: 0,
        spline_bound: 4.0,
    }
}

/// Every model trains a few epochs with a finite loss that goes down (from the marginal
/// note frequencies, where the read-out bias starts), and its evaluation is
/// finite with the importance-weighted NLL at most the negative ELBO (on average over
/// sequences; exactly equal for the baselines).
#[test]
fn every_model_trains_and_its_bounds_are_ordered() -> Result<()> {
    let data = fixture();
    for kind in [
        SeqModelKind::AfAf,
        SeqModelKind::AfScf,
        SeqModelKind::IafScf,
        SeqModelKind::Gru,
        SeqModelKind::Bernoulli,
    ] {
        let model = SeqModel::new(spec(kind), 0, DType::F32, &Device::Cpu)?;
        let config =
            SeqTrainConfig { epochs: 15, batch_size: 2, lr: 3e-3, ..SeqTrainConfig::default() };
        let history = fit_sequences(&model, &data.train, &data.valid, &config, |_| {})?;
        if kind == SeqModelKind::Bernoulli {
            assert!(history.is_empty());
        } else {
            assert!(history.iter().all(|e| e.train_loss.is_finite() && e.skipped == 0));
            // Means of the first and last three epochs: one posterior sample per step is noisy.
            let mean =
                |e: &[normflow::seq::SeqEpoch]| e.iter().map(|e| e.train_loss).sum::<f64>() / 3.0;
            let (first, last) = (mean(&history[..3]), mean(&history[history.len() - 3..]));
            assert!(last < first, "{kind:?}: loss {first} -> {last}");
        }
        let mut rng = normflow::random::rng_from_seed(3);
        let eval = model.evaluate(&data.train, 16, 8, 4, &mut rng)?;
        assert!(eval.nll_per_step.is_finite() && eval.nll_per_step > 0.0, "{kind:?} {eval:?}");
        assert!(eval.nll_per_step <= eval.neg_elbo_per_step + 1e-6, "{kind:?} {eval:?}");
        if kind.prior().is_none() {
            assert!((eval.nll_per_step - eval.neg_elbo_per_step).abs() < 1e-9);
        }
        let samples = model.sample(2, 5, &mut rng)?;
        assert_eq!(samples.len(), 2);
        assert!(samples.iter().all(|s| s.len() == 5));
        assert!(samples.iter().flatten().flatten().all(|&p| NoteRange::PIANO.contains(p)));
    }
    Ok(())
}

/// The Bernoulli baseline is the closed form: add-one smoothed frequencies, so its NLL on the
/// training steps is the sum of binary entropies-like terms computed here on the host.
#[test]
fn bernoulli_baseline_matches_the_host_formula() -> Result<()> {
    let data = fixture();
    let model = SeqModel::new(spec(SeqModelKind::Bernoulli), 0, DType::F64, &Device::Cpu)?;
    model.fit_closed_form(&data.train)?;
    let steps: Vec<&Vec<u8>> = data.train.iter().flatten().collect();
    let n = steps.len() as f64;
    let mut expected = 0.0;
    for key in 0..88u8 {
        let pitch = 21 + key;
        let count = steps.iter().filter(|s| s.contains(&pitch)).count() as f64;
        let p = (count + 1.0) / (n + 2.0);
        expected -= count * p.ln() + (n - count) * (1.0 - p).ln();
    }
    expected /= n;
    let mut rng = normflow::random::rng_from_seed(0);
    let got = model.evaluate(&data.train, 1, 1, 3, &mut rng)?.nll_per_step;
    assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
    Ok(())
}

/// A saved model loads with the same tensors (same evaluation at the same seed); a damaged
/// weights file is refused.
#[test]
fn model_directories_round_trip() -> Result<()> {
    let data = fixture();
    let model = SeqModel::new(spec(SeqModelKind::IafScf), 5, DType::F32, &Device::Cpu)?;
    let config = SeqTrainConfig { epochs: 1, batch_size: 4, ..SeqTrainConfig::default() };
    fit_sequences(&model, &data.train, &data.valid, &config, |_| {})?;
    let dir = tempfile::tempdir().expect("tempdir");
    model.save(dir.path(), serde_json::json!({"note": "test"}))?;
    let (loaded, record) = SeqModel::load(dir.path(), &Device::Cpu)?;
    assert_eq!(record["note"], "test");
    assert_eq!(loaded.spec(), model.spec());
    let eval = |m: &SeqModel| -> Result<f64> {
        Ok(m.evaluate(&data.test, 4, 4, 4, &mut normflow::random::rng_from_seed(1))?.nll_per_step)
    };
    assert_eq!(eval(&model)?, eval(&loaded)?);
    let weights = dir.path().join("weights.safetensors");
    let mut bytes = std::fs::read(&weights).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&weights, bytes).expect("write");
    let err = SeqModel::load(dir.path(), &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
    Ok(())
}

/// The bidirectional encoder sees each sequence alone: a short sequence's posterior is the same
/// alone and padded in a batch with a longer one (the backward GRU starts at its own end).
#[test]
fn padding_does_not_reach_the_posterior() -> Result<()> {
    let data = fixture();
    let model = SeqModel::new(spec(SeqModelKind::AfScf), 1, DType::F64, &Device::Cpu)?;
    model.store().perturb(0.3, 2)?;
    let vae = model.vae().expect("a latent flow");
    let (short, long) = (&data.train[0], &data.train[3]);
    assert!(short.len() < long.len());
    let (mu_alone, sigma_alone) = vae.posterior(&model.batch(&[short])?)?;
    let (mu, sigma) = vae.posterior(&model.batch(&[short, long])?)?;
    let t = short.len();
    assert!(max_diff(&mu_alone, &mu.narrow(0, 0, 1)?.narrow(1, 0, t)?)? < 1e-12);
    assert!(max_diff(&sigma_alone, &sigma.narrow(0, 0, 1)?.narrow(1, 0, t)?)? < 1e-12);
    Ok(())
}
