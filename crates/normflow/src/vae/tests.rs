//! Tests of the VAE on tiny synthetic images (8x8 bars), latent 3.

use candle_core::{DType, Device, Tensor};
use rand::Rng;

use super::*;
use crate::random::rng_from_seed;
use crate::Result;

const SIDE: usize = 8;

/// `n` 8x8 images of one random horizontal or vertical bar (pixels 0 or 255, a little grey).
fn bars(n: usize, seed: u64) -> Result<Tensor> {
    let mut rng = rng_from_seed(seed);
    let mut values = vec![0f64; n * SIDE * SIDE];
    for img in values.chunks_mut(SIDE * SIDE) {
        let (vertical, at) = (rng.random::<bool>(), rng.random_range(0..SIDE));
        for i in 0..SIDE {
            let idx = if vertical { i * SIDE + at } else { at * SIDE + i };
            img[idx] = 255.0;
        }
        for v in img.iter_mut() {
            if rng.random::<f64>() < 0.05 {
                *v = 128.0;
            }
        }
    }
    Ok(Tensor::from_vec(values, (n, SIDE * SIDE), &Device::Cpu)?.to_dtype(DType::F32)?)
}

fn tiny_spec(posterior: &str, likelihood: Likelihood) -> VaeSpec {
    let latent = 3;
    VaeSpec {
        hidden: vec![32],
        ..VaeSpec::new(
            SIDE * SIDE,
            latent,
            PosteriorSpec::parse(posterior, latent).unwrap(),
            likelihood,
        )
    }
}

fn small_iaf(spec: &mut VaeSpec) {
    // Smaller MADEs than the CLI default keep the tests fast.
    match &mut spec.posterior {
        PosteriorSpec::Iaf { hidden, context, .. } | PosteriorSpec::Nsf { hidden, context, .. } => {
            *hidden = 16;
            *context = 8;
        }
        _ => {}
    }
}

const POSTERIORS: [&str; 8] = [
    "diag",
    "planar:2",
    "radial:2",
    "sylvester:2",
    "sylvester:2:householder:2",
    "sylvester:2:orthogonal:2",
    "iaf:2",
    "nsf:2",
];

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn every_posterior_trains_to_a_better_finite_elbo() -> Result<()> {
    let train = bars(400, 1)?;
    let val = bars(100, 2)?;
    for posterior in POSTERIORS {
        let mut spec = tiny_spec(posterior, Likelihood::Bernoulli);
        small_iaf(&mut spec);
        let vae = Vae::new(spec, 3, DType::F32, &Device::Cpu)?;
        let obs = vae.observe(&val, &mut rng_from_seed(4))?;
        let before = mean(&vae.bounds(&obs, 1, &mut rng_from_seed(5))?.elbo);
        let config = VaeTrainConfig {
            epochs: 3,
            batch_size: 20,
            lr: 3e-3,
            warmup_epochs: 1,
            ..Default::default()
        };
        let report = fit(&vae, &train, Some(&val), &config, &mut |_, _| Ok(true))?;
        let after = mean(&vae.bounds(&obs, 1, &mut rng_from_seed(5))?.elbo);
        assert!(before.is_finite() && after.is_finite(), "{posterior}: {before} -> {after}");
        assert!(after > before + 5.0, "{posterior}: ELBO {before} -> {after}");
        assert!(report.epochs.iter().all(|e| e.train_elbo.is_finite() && e.skipped_steps == 0));
        assert!(report.best_epoch >= 2, "{posterior}: best epoch {}", report.best_epoch);
    }
    Ok(())
}

/// `log|det J|` of a small square matrix by Gaussian elimination with partial pivoting.
fn log_abs_det(mut a: Vec<Vec<f64>>) -> f64 {
    let n = a.len();
    let mut total = 0.0;
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap();
        a.swap(c, p);
        total += a[c][c].abs().ln();
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            let pivot = a[c].clone();
            for (x, p) in a[r].iter_mut().zip(&pivot).skip(c) {
                *x -= f * p;
            }
        }
    }
    total
}

#[test]
fn log_q_is_the_base_density_minus_a_finite_difference_log_det() -> Result<()> {
    let x = bars(4, 7)?.to_dtype(DType::F64)?;
    for posterior in POSTERIORS {
        let mut spec = tiny_spec(posterior, Likelihood::Bernoulli);
        small_iaf(&mut spec);
        let vae = Vae::new(spec, 11, DType::F64, &Device::Cpu)?;
        // Non-trivial flows: perturb every tensor (a fresh IAF/NSF is the identity).
        vae.store().perturb(0.3, 12)?;
        let obs = vae.observe(&x, &mut rng_from_seed(1))?;
        let post = vae.posterior();
        let enc = post.encode(&obs)?;
        let (z, log_q) = post.sample_and_log_q(&enc, 1, &mut rng_from_seed(2))?;
        // The same ε again: z₀ = μ + σ ε and log q₀ by hand.
        let eps = crate::random::standard_normal(
            (4, 3),
            DType::F64,
            &Device::Cpu,
            &mut rng_from_seed(2),
        )?;
        let z0 = (&enc.mu + (enc.log_sigma.exp()? * &eps)?)?;
        let (z_again, _) = post.flow(&z0, &enc, 1)?;
        let err = (z_again - &z)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(err < 1e-12, "{posterior}: {err}");
        // k = 2 samples per example: each sample's rows are the k = 1 flow of its own ε.
        let (z2, log_q2) = post.sample_and_log_q(&enc, 2, &mut rng_from_seed(3))?;
        let eps2 = crate::random::standard_normal(
            (8, 3),
            DType::F64,
            &Device::Cpu,
            &mut rng_from_seed(3),
        )?;
        for s in 0..2 {
            let e = eps2.narrow(0, 4 * s, 4)?;
            let z0s = (&enc.mu + (enc.log_sigma.exp()? * &e)?)?;
            let (zs, ladj) = post.flow(&z0s, &enc, 1)?;
            let err = (zs - z2.narrow(0, 4 * s, 4)?)?.abs()?.max_all()?.to_scalar::<f64>()?;
            let lq0 = ((e.sqr()? * -0.5)? - &enc.log_sigma)?.sum(1)?;
            let lq = ((lq0 - 3.0 * crate::distributions::HALF_LOG_TWO_PI)? - ladj)?;
            let lerr = (lq - log_q2.narrow(0, 4 * s, 4)?)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(err < 1e-12 && lerr < 1e-10, "{posterior}, sample {s}: {err} {lerr}");
        }
        let eps_h = eps.to_vec2::<f64>()?;
        let ls = enc.log_sigma.to_vec2::<f64>()?;
        let h = 1e-5;
        let z0h = z0.to_vec2::<f64>()?;
        let got = log_q.to_vec1::<f64>()?;
        for b in 0..4 {
            let mut jac = vec![vec![0.0; 3]; 3];
            for j in 0..3 {
                let shifted = |s: f64| -> Result<Vec<f64>> {
                    let mut rows = z0h.clone();
                    rows[b][j] += s;
                    let t = Tensor::new(rows, &Device::Cpu)?;
                    Ok(post.flow(&t, &enc, 1)?.0.to_vec2::<f64>()?[b].clone())
                };
                let (plus, minus) = (shifted(h)?, shifted(-h)?);
                for i in 0..3 {
                    jac[i][j] = (plus[i] - minus[i]) / (2.0 * h);
                }
            }
            let log_q0: f64 = (0..3)
                .map(|j| {
                    -0.5 * eps_h[b][j].powi(2) - ls[b][j] - crate::distributions::HALF_LOG_TWO_PI
                })
                .sum();
            let expected = log_q0 - log_abs_det(jac);
            assert!((got[b] - expected).abs() < 1e-6, "{posterior}[{b}]: {} vs {expected}", got[b]);
        }
    }
    Ok(())
}

#[test]
fn the_importance_weighted_bound_is_above_the_elbo_and_grows_with_k() -> Result<()> {
    let train = bars(400, 21)?;
    let vae = Vae::new(tiny_spec("diag", Likelihood::Bernoulli), 22, DType::F32, &Device::Cpu)?;
    let config = VaeTrainConfig {
        epochs: 4,
        batch_size: 20,
        lr: 3e-3,
        warmup_epochs: 0,
        ..Default::default()
    };
    fit(&vae, &train, None, &config, &mut |_, _| Ok(true))?;
    let obs = vae.observe(&bars(300, 23)?, &mut rng_from_seed(24))?;
    let gain = |a: &[f64], b: &[f64]| -> (f64, f64) {
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        let m = mean(&d);
        let var = d.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (d.len() as f64 - 1.0);
        (m, (var / d.len() as f64).sqrt())
    };
    let mut all: Vec<Vec<f64>> = Vec::new();
    for (i, k) in [1usize, 10, 100].into_iter().enumerate() {
        let bounds = vae.bounds(&obs, k, &mut rng_from_seed(30 + i as u64))?;
        // Same samples: log-mean-exp >= mean, example by example (Jensen).
        for (e, w) in bounds.elbo.iter().zip(&bounds.iw) {
            assert!(w + 1e-4 >= *e, "K = {k}: IW {w} < ELBO {e}");
        }
        if let Some(prev) = all.last() {
            // Independent draws: non-decreasing up to three standard errors of the mean gain.
            let (m, se) = gain(&bounds.iw, prev);
            assert!(m > -3.0 * se, "K = {k}: mean gain {m} with standard error {se}");
        }
        all.push(bounds.iw);
    }
    // And strictly better from K = 1 to K = 100 (a VAE's posterior is never exact).
    let (m, se) = gain(&all[2], &all[0]);
    assert!(m > 3.0 * se && m > 0.0, "K = 1 -> 100: mean gain {m} with standard error {se}");
    // Large K in chunks: finite and still above the ELBO.
    let few = obs.narrow(0, 0, 3)?;
    let big = vae.bounds(&few, 10_000, &mut rng_from_seed(40))?;
    assert!(big.iw.iter().zip(&big.elbo).all(|(w, e)| w.is_finite() && w >= e));
    Ok(())
}

#[test]
fn a_saved_model_loads_to_the_same_bounds_and_bad_directories_are_clear_errors() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| crate::Error::io("tempdir", e))?;
    for posterior in ["planar:2", "iaf:1"] {
        let mut spec = tiny_spec(posterior, Likelihood::Gaussian);
        small_iaf(&mut spec);
        let vae = Vae::new(spec, 5, DType::F32, &Device::Cpu)?;
        vae.store().perturb(0.1, 6)?;
        let path = dir.path().join(posterior.replace(':', "-"));
        vae.save(&path, serde_json::json!({"note": "test"}))?;
        let loaded = Vae::load(&path, &Device::Cpu)?;
        let x = bars(10, 8)?;
        let score = |m: &Vae| -> Result<Bounds> {
            let obs = m.observe(&x, &mut rng_from_seed(9))?;
            m.bounds(&obs, 5, &mut rng_from_seed(10))
        };
        assert_eq!(score(&vae)?, score(&loaded)?);
        assert_eq!(read_vae_file(&path)?.training["note"], "test");
    }
    let path = dir.path().join("planar-2");
    let weights = path.join("weights.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let err = Vae::load(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
    let spec_path = path.join("spec.json");
    let text = std::fs::read_to_string(&spec_path).unwrap();
    std::fs::write(&spec_path, text.replace("normflow-vae", "normflow-model")).unwrap();
    let err = Vae::load(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("not a VAE"), "{err}");
    let err = Vae::load(&dir.path().join("missing"), &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("not a model directory"), "{err}");
    Ok(())
}

#[test]
fn wrong_shapes_and_settings_are_errors() -> Result<()> {
    let vae = Vae::new(tiny_spec("diag", Likelihood::Bernoulli), 0, DType::F32, &Device::Cpu)?;
    let wrong = Tensor::zeros((4, 10), DType::F32, &Device::Cpu)?;
    let err = vae.observe(&wrong, &mut rng_from_seed(0)).unwrap_err().to_string();
    assert!(err.contains("(rows, 64)"), "{err}");
    let too_bright = (Tensor::ones((2, 64), DType::F32, &Device::Cpu)? * 300.0)?;
    assert!(vae.observe(&too_bright, &mut rng_from_seed(0)).is_err());
    let few = bars(5, 0)?;
    let err = fit(&vae, &few, None, &VaeTrainConfig::default(), &mut |_, _| Ok(true))
        .unwrap_err()
        .to_string();
    assert!(err.contains("fewer than one batch"), "{err}");
    Ok(())
}

/// `log p(x) = log ∫ p(x | z) N(z; 0, I) dz` by the midpoint rule on `[-7, 7]²` (latent 2,
/// Bernoulli decoder).
fn log_evidence_by_quadrature(vae: &Vae, x: &Tensor) -> Result<Vec<f64>> {
    let (n, lo, hi) = (281usize, -7.0f64, 7.0f64);
    let h = (hi - lo) / n as f64;
    let mut grid = Vec::with_capacity(n * n * 2);
    for i in 0..n {
        for j in 0..n {
            grid.push(lo + (i as f64 + 0.5) * h);
            grid.push(lo + (j as f64 + 0.5) * h);
        }
    }
    let z = Tensor::from_vec(grid, (n * n, 2), &Device::Cpu)?.to_dtype(x.dtype())?;
    let logits = vae.decoder().forward(&z)?; // (G, 64)
    let log_prior = ((z.sqr()?.sum(1)? * -0.5)? - 2.0 * crate::distributions::HALF_LOG_TWO_PI)?;
    // Bernoulli: log p(x | z) = x · l - Σ softplus(l), for every example and grid point at once.
    let normalizer = crate::ops::softplus(&logits)?.sum(1)?;
    let joint = x
        .matmul(&logits.t()?)?
        .broadcast_sub(&normalizer.unsqueeze(0)?)?
        .broadcast_add(&log_prior.unsqueeze(0)?)?; // (B, G)
    let log_mean =
        crate::latent::log_mean_exp(&joint.to_dtype(DType::F64)?, 1)?.to_vec1::<f64>()?;
    let result = log_mean.iter().map(|m| m + ((n * n) as f64).ln() + 2.0 * h.ln()).collect();
    Ok(result)
}

#[test]
fn the_importance_weighted_bound_converges_to_the_evidence_computed_by_quadrature() -> Result<()> {
    let train = bars(400, 51)?;
    for posterior in ["diag", "planar:2", "iaf:1"] {
        let latent = 2;
        let mut spec = VaeSpec {
            hidden: vec![32],
            ..VaeSpec::new(
                SIDE * SIDE,
                latent,
                PosteriorSpec::parse(posterior, latent).unwrap(),
                Likelihood::Bernoulli,
            )
        };
        small_iaf(&mut spec);
        let vae = Vae::new(spec, 52, DType::F64, &Device::Cpu)?;
        let config = VaeTrainConfig {
            epochs: 4,
            batch_size: 20,
            lr: 3e-3,
            warmup_epochs: 0,
            ..Default::default()
        };
        fit(&vae, &train, None, &config, &mut |_, _| Ok(true))?;
        let obs = vae.observe(&bars(4, 53)?.to_dtype(DType::F64)?, &mut rng_from_seed(54))?;
        let exact = log_evidence_by_quadrature(&vae, &obs)?;
        let bounds = vae.bounds(&obs, 5000, &mut rng_from_seed(55))?;
        for (b, ((&e, &w), &p)) in bounds.elbo.iter().zip(&bounds.iw).zip(&exact).enumerate() {
            // L_K <= log p(x) in expectation; one estimate may exceed it by its small noise.
            assert!(w < p + 0.05, "{posterior}[{b}]: L_5000 {w} above log p(x) {p}");
            assert!(
                w > p - 0.5 && p - w < p - e,
                "{posterior}[{b}]: ELBO {e}, L_5000 {w}, log p {p}"
            );
        }
    }
    Ok(())
}
