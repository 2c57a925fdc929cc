//! The toy generators against FFJORD's own samples.
//!
//! `fixtures/toy2d_stats.json` holds summary statistics of 10,000 reference points per toy drawn
//! with FFJORD's `inf_train_gen` (made once by `fixtures/make_toy_stats.py`). Each toy here draws
//! 20,000 points with a fixed seed and must match: means within `0.05 + 4` standard errors,
//! standard deviations within 5%, correlation within 0.05, and the 5/25/50/75/95% quantiles of x,
//! y and the radius within `max(0.1, 4` standard errors of the difference). A wrong scale, offset,
//! noise level or shape moves at least one of these by more.

use std::collections::BTreeMap;

use normflow::data::toy::Toy;
use normflow::random::rng_from_seed;
use serde::Deserialize;

const N: usize = 20_000;

#[derive(Deserialize)]
struct Quantiles {
    q: Vec<f64>,
    se: Vec<f64>,
}

#[derive(Deserialize)]
struct Stats {
    n: usize,
    mean: [f64; 2],
    cov: [[f64; 2]; 2],
    x: Quantiles,
    y: Quantiles,
    radius: Quantiles,
}

#[derive(Deserialize)]
struct Fixture {
    probs: Vec<f64>,
    toys: BTreeMap<String, Stats>,
}

fn fixture() -> anyhow::Result<Fixture> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/toy2d_stats.json");
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

/// `numpy.quantile(values, p)` (linear interpolation) on sorted values.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let pos = p * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo])
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Every statistic of one toy's sample that is off, as messages.
fn mismatches(toy: Toy, reference: &Stats, probs: &[f64]) -> Vec<String> {
    mismatches_of(&toy.sample(N, &mut rng_from_seed(20_190_101)), reference, probs)
}

/// Every statistic of `flat` (row-major points) that is off, as messages.
fn mismatches_of(flat: &[f64], reference: &Stats, probs: &[f64]) -> Vec<String> {
    let cols = [
        flat.iter().step_by(2).copied().collect::<Vec<_>>(),
        flat.iter().skip(1).step_by(2).copied().collect::<Vec<_>>(),
    ];
    let n = cols[0].len() as f64;
    let mean = cols.clone().map(|c| c.iter().sum::<f64>() / n);
    let var =
        [0, 1].map(|j| cols[j].iter().map(|x| (x - mean[j]).powi(2)).sum::<f64>() / (n - 1.0));
    let cov = cols[0].iter().zip(&cols[1]).map(|(x, y)| (x - mean[0]) * (y - mean[1])).sum::<f64>()
        / (n - 1.0);
    let n_ref = reference.n as f64;
    let mut out = Vec::new();
    for j in 0..2 {
        let ref_var = reference.cov[j][j];
        let se = (ref_var / n_ref + var[j] / n).sqrt();
        if (mean[j] - reference.mean[j]).abs() > 0.05 + 4.0 * se {
            out.push(format!("mean[{j}] {:.4} vs {:.4}", mean[j], reference.mean[j]));
        }
        let (std, ref_std) = (var[j].sqrt(), ref_var.sqrt());
        if (std / ref_std - 1.0).abs() > 0.05 {
            out.push(format!("std[{j}] {std:.4} vs {ref_std:.4}"));
        }
    }
    let corr = cov / (var[0] * var[1]).sqrt();
    let ref_corr = reference.cov[0][1] / (reference.cov[0][0] * reference.cov[1][1]).sqrt();
    if (corr - ref_corr).abs() > 0.05 {
        out.push(format!("correlation {corr:.4} vs {ref_corr:.4}"));
    }
    let radius = cols[0].iter().zip(&cols[1]).map(|(x, y)| x.hypot(*y)).collect();
    let columns = [
        ("x", sorted(cols[0].clone()), &reference.x),
        ("y", sorted(cols[1].clone()), &reference.y),
    ];
    for (name, values, q_ref) in
        columns.into_iter().chain([("radius", sorted(radius), &reference.radius)])
    {
        for (k, &p) in probs.iter().enumerate() {
            let q = quantile(&values, p);
            // The reference se is for its n; ours, from n = N points, is smaller by sqrt(n_ref/N).
            let se = q_ref.se[k] * (1.0 + n_ref / n).sqrt();
            if (q - q_ref.q[k]).abs() > (4.0 * se).max(0.1) {
                out.push(format!("{name} q{p} {q:.4} vs {:.4} (se {se:.4})", q_ref.q[k]));
            }
        }
    }
    out
}

#[test]
fn every_toy_matches_ffjords_reference_statistics() -> anyhow::Result<()> {
    let fixture = fixture()?;
    let mut failures = Vec::new();
    for toy in Toy::ALL {
        let reference = fixture
            .toys
            .get(toy.name())
            .ok_or_else(|| anyhow::anyhow!("no reference statistics for {toy}"))?;
        for m in mismatches(toy, reference, &fixture.probs) {
            failures.push(format!("{toy}: {m}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn the_statistics_would_catch_a_wrong_definition() -> anyhow::Result<()> {
    // A 5% scale error or a 0.15 shift must fail for every toy, and so must one toy's generator
    // checked against another's reference; otherwise the tolerances are too loose.
    let fixture = fixture()?;
    for toy in Toy::ALL {
        let reference = &fixture.toys[toy.name()];
        let flat = toy.sample(N, &mut rng_from_seed(9));
        let scaled: Vec<f64> = flat.iter().map(|v| 1.05 * v).collect();
        let shifted: Vec<f64> =
            flat.iter().enumerate().map(|(i, v)| if i % 2 == 1 { v + 0.15 } else { *v }).collect();
        assert!(!mismatches_of(&scaled, reference, &fixture.probs).is_empty(), "{toy} scaled");
        assert!(!mismatches_of(&shifted, reference, &fixture.probs).is_empty(), "{toy} shifted");
    }
    for (toy, other) in [
        (Toy::Rings, "circles"),
        (Toy::Circles, "rings"),
        (Toy::Pinwheel, "8gaussians"),
        (Toy::Moons, "2spirals"),
        (Toy::Swissroll, "2spirals"),
    ] {
        let reference = &fixture.toys[other];
        assert!(!mismatches(toy, reference, &fixture.probs).is_empty(), "{toy} passes as {other}");
    }
    Ok(())
}

#[test]
fn same_seed_same_points() {
    for toy in Toy::ALL {
        assert_eq!(toy.sample(50, &mut rng_from_seed(3)), toy.sample(50, &mut rng_from_seed(3)));
        assert_ne!(toy.sample(50, &mut rng_from_seed(3)), toy.sample(50, &mut rng_from_seed(4)));
    }
}
