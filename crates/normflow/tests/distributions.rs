//! Base distributions: log-densities against closed forms computed by hand in f64, sample
//! moments against the parameters, grid integrals of the density, reparameterized gradients,
//! context handling and seeded reproducibility.

use normflow::candle::{DType, Device, Tensor};
use normflow::distributions::{
    ConditionalDiagNormal, DiagNormal, GaussianMixture, StandardNormal, UniformBox, HALF_LOG_TWO_PI,
};
use normflow::nn::Activation;
use normflow::random::rng_from_seed;
use normflow::{Distribution, Error, ParamStore};

type Result<T> = anyhow::Result<T>;

const N: usize = 20_000;

fn store() -> ParamStore {
    ParamStore::new(DType::F64, &Device::Cpu, 0)
}

/// Overwrites the parameter `name` of `store` with `values` (keeping its shape).
fn set(store: &ParamStore, name: &str, values: &[f64]) -> Result<()> {
    let (_, var) = store
        .parameters()
        .into_iter()
        .find(|(n, _)| n == name)
        .ok_or_else(|| anyhow::anyhow!("no parameter {name}"))?;
    var.set(&Tensor::from_slice(values, var.shape(), &Device::Cpu)?)?;
    Ok(())
}

fn rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(t.to_dtype(DType::F64)?.to_vec2::<f64>()?)
}

fn vec1(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{g} vs {w} (all: {got:?} vs {want:?})");
    }
}

/// Checks that column `j` of `samples` has mean and standard deviation within 4 standard
/// errors of `mean` and `std` (the standard error of the sample std from the fourth moment).
fn assert_moments(samples: &[Vec<f64>], j: usize, mean: f64, std: f64) {
    let n = samples.len() as f64;
    let col: Vec<f64> = samples.iter().map(|r| r[j]).collect();
    let m = col.iter().sum::<f64>() / n;
    let var = col.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    let m4 = col.iter().map(|x| (x - m).powi(4)).sum::<f64>() / n;
    let se_mean = (var / n).sqrt();
    let se_std = ((m4 - var * var) / n).sqrt() / (2.0 * var.sqrt());
    assert!((m - mean).abs() < 4.0 * se_mean, "column {j}: mean {m} vs {mean} (se {se_mean})");
    let s = var.sqrt();
    assert!((s - std).abs() < 4.0 * se_std, "column {j}: std {s} vs {std} (se {se_std})");
}

/// Riemann sum of `exp(log_prob)` over `[lo, hi]^2` at the midpoints of `cells x cells` cells.
fn grid_integral(d: &dyn Distribution, lo: f64, hi: f64, cells: usize) -> Result<f64> {
    let h = (hi - lo) / cells as f64;
    let mut points = Vec::with_capacity(2 * cells * cells);
    for i in 0..cells {
        for j in 0..cells {
            points.push(lo + (i as f64 + 0.5) * h);
            points.push(lo + (j as f64 + 0.5) * h);
        }
    }
    let x = Tensor::from_vec(points, (cells * cells, 2), &Device::Cpu)?;
    let lp = d.log_prob(&x, None)?;
    Ok(lp.exp()?.sum_all()?.to_scalar::<f64>()? * h * h)
}

/// `sum_i -((x_i - loc_i) / s_i)^2 / 2 - ln s_i - ln(2 pi) / 2`.
fn normal_log_density(x: &[f64], loc: &[f64], log_scale: &[f64]) -> f64 {
    x.iter()
        .zip(loc)
        .zip(log_scale)
        .map(|((x, m), ls)| -0.5 * ((x - m) / ls.exp()).powi(2) - ls - HALF_LOG_TWO_PI)
        .sum()
}

// DiagNormal

const LOC: [f64; 2] = [1.0, -2.0];
const LOG_SCALE: [f64; 2] = [-0.7, 0.5];

fn diag_normal(store: &ParamStore) -> Result<DiagNormal> {
    let d = DiagNormal::new(&store.root().pp("base"), &[2])?;
    set(store, "base.loc", &LOC)?;
    set(store, "base.log_scale", &LOG_SCALE)?;
    Ok(d)
}

#[test]
fn diag_normal_starts_standard_and_matches_the_formula() -> Result<()> {
    let x = Tensor::new(&[[0.3f64, -1.2], [4.0, 3.0], [-10.0, 0.0]], &Device::Cpu)?;
    let s = store();
    let d = DiagNormal::new(&s.root(), &[2])?;
    let standard = StandardNormal::new(&[2], DType::F64, &Device::Cpu);
    assert_close(&vec1(&d.log_prob(&x, None)?)?, &vec1(&standard.log_prob(&x, None)?)?, 1e-12);

    let s = store();
    let d = diag_normal(&s)?;
    let want: Vec<f64> =
        rows(&x)?.iter().map(|r| normal_log_density(r, &LOC, &LOG_SCALE)).collect();
    assert_close(&vec1(&d.log_prob(&x, None)?)?, &want, 1e-12);
    assert!(d.log_prob(&Tensor::zeros((3, 3), DType::F64, &Device::Cpu)?, None).is_err());
    Ok(())
}

#[test]
fn diag_normal_works_on_image_shaped_events_and_rejects_empty_ones() -> Result<()> {
    let s = store();
    let d = DiagNormal::new(&s.root(), &[2, 3])?;
    s.perturb(0.5, 1)?;
    let (x, lp) = d.sample_and_log_prob(4, None, &mut rng_from_seed(0))?;
    assert_eq!(x.dims(), [4, 2, 3]);
    assert_close(&vec1(&d.log_prob(&x, None)?)?, &vec1(&lp)?, 1e-12);
    assert!(matches!(DiagNormal::new(&store().root(), &[2, 0]), Err(Error::InvalidConfig { .. })));
    Ok(())
}

#[test]
fn diag_normal_samples_have_the_parameters_moments() -> Result<()> {
    let s = store();
    let d = diag_normal(&s)?;
    let x = rows(&d.sample(N, None, &mut rng_from_seed(1))?)?;
    for j in 0..2 {
        assert_moments(&x, j, LOC[j], LOG_SCALE[j].exp());
    }
    Ok(())
}

#[test]
fn diag_normal_integrates_to_one() -> Result<()> {
    let s = store();
    let d = diag_normal(&s)?;
    let total = grid_integral(&d, -12.0, 12.0, 400)?;
    assert!((total - 1.0).abs() < 1e-3, "{total}");
    Ok(())
}

#[test]
fn diag_normal_sample_and_log_prob_is_reparameterized() -> Result<()> {
    let s = store();
    let d = diag_normal(&s)?;
    let (x, lp) = d.sample_and_log_prob(64, None, &mut rng_from_seed(2))?;
    assert_close(&vec1(&lp)?, &vec1(&d.log_prob(&x, None)?)?, 1e-10);
    // Same seed, same draw: sample() and sample_and_log_prob() agree.
    assert_eq!(rows(&x)?, rows(&d.sample(64, None, &mut rng_from_seed(2))?)?);

    let grads = (x.sum_all()? + lp.sum_all()?)?.backward()?;
    for (name, var) in s.parameters() {
        let g =
            grads.get(var.as_tensor()).ok_or_else(|| anyhow::anyhow!("no gradient for {name}"))?;
        assert!(vec1(g)?.iter().all(|v| v.is_finite() && *v != 0.0), "{name}: {g}");
    }
    Ok(())
}

// UniformBox

fn unit_box() -> Result<UniformBox> {
    Ok(UniformBox::new(&[-1.0, 0.0], &[1.0, 3.0], DType::F64, &Device::Cpu)?)
}

#[test]
fn uniform_is_constant_inside_and_minus_infinity_outside_never_nan() -> Result<()> {
    let u = unit_box()?;
    let x = Tensor::new(
        &[
            [0.0f64, 1.0],
            [-1.0, 0.0],
            [1.0, 3.0],
            [1.0 + 1e-12, 1.0],
            [0.0, -0.1],
            [f64::NAN, 1.0],
            [f64::INFINITY, 1.0],
        ],
        &Device::Cpu,
    )?;
    let lp = vec1(&u.log_prob(&x, None)?)?;
    let inside = -(6f64.ln());
    assert_eq!(u.log_volume(), 6f64.ln());
    assert_close(&lp[..3], &[inside; 3], 1e-15);
    assert!(lp[3..].iter().all(|v| *v == f64::NEG_INFINITY), "{lp:?}");

    let x32 = x.to_dtype(DType::F32)?;
    let lp32 = vec1(&u.log_prob(&x32, None)?)?;
    assert!(lp32.iter().all(|v| !v.is_nan()), "{lp32:?}");
    assert_eq!(lp32[3..].iter().filter(|v| v.is_infinite()).count(), 3, "{lp32:?}");
    Ok(())
}

#[test]
fn uniform_integrates_to_exactly_one() -> Result<()> {
    // Cells of width 0.05 on [-4, 4]^2: their midpoints are never on the box's edges, and
    // exactly (2 / 0.05) (3 / 0.05) of them are inside.
    let total = grid_integral(&unit_box()?, -4.0, 4.0, 160)?;
    assert!((total - 1.0).abs() < 1e-12, "{total}");
    Ok(())
}

#[test]
fn uniform_samples_lie_inside_with_the_right_moments() -> Result<()> {
    let u = unit_box()?;
    let (x, lp) = u.sample_and_log_prob(N, None, &mut rng_from_seed(3))?;
    assert!(vec1(&lp)?.iter().all(|v| *v == -(6f64.ln())));
    let x = rows(&x)?;
    assert_moments(&x, 0, 0.0, 2.0 / 12f64.sqrt());
    assert_moments(&x, 1, 1.5, 3.0 / 12f64.sqrt());
    let u32 = UniformBox::new(&[-1.0, 0.0], &[1.0, 3.0], DType::F32, &Device::Cpu)?;
    let lp32 = vec1(&u32.sample_and_log_prob(1000, None, &mut rng_from_seed(3))?.1)?;
    assert!(lp32.iter().all(|v| v.is_finite()));
    Ok(())
}

#[test]
fn uniform_rejects_bad_bounds() {
    let bad: [(&[f64], &[f64]); 6] = [
        (&[], &[]),
        (&[0.0], &[1.0, 2.0]),
        (&[1.0], &[1.0]),
        (&[2.0], &[1.0]),
        (&[f64::NEG_INFINITY], &[1.0]),
        (&[-f64::MAX], &[f64::MAX]),
    ];
    for (low, high) in bad {
        let r = UniformBox::new(low, high, DType::F64, &Device::Cpu);
        assert!(matches!(r, Err(Error::InvalidConfig { .. })), "{low:?} {high:?}");
    }
    assert!(UniformBox::unit(3, DType::F32, &Device::Cpu).is_ok());
}

// GaussianMixture

#[test]
fn mixture_of_one_equals_diag_normal() -> Result<()> {
    let s = store();
    let m = GaussianMixture::new(&s.root().pp("mix"), 1, 2)?;
    set(&s, "mix.means", &LOC)?;
    set(&s, "mix.log_scales", &LOG_SCALE)?;
    set(&s, "mix.logits", &[3.7])?;
    let d = diag_normal(&s)?;
    let x = d.sample(50, None, &mut rng_from_seed(4))?;
    assert_close(&vec1(&m.log_prob(&x, None)?)?, &vec1(&d.log_prob(&x, None)?)?, 1e-12);
    Ok(())
}

const MIX_LOGITS: [f64; 2] = [0.0, 1.0986122886681098]; // weights 1/4, 3/4
const MIX_MEANS: [[f64; 2]; 2] = [[-3.0, 1.0], [2.0, 0.5]];
const MIX_LOG_SCALES: [[f64; 2]; 2] = [[0.3, -0.4], [-0.2, 0.1]];

fn mixture(store: &ParamStore) -> Result<GaussianMixture> {
    let m = GaussianMixture::new(&store.root(), 2, 2)?;
    set(store, "logits", &MIX_LOGITS)?;
    set(store, "means", MIX_MEANS.as_flattened())?;
    set(store, "log_scales", MIX_LOG_SCALES.as_flattened())?;
    Ok(m)
}

#[test]
fn mixture_matches_the_formula_even_far_from_every_component() -> Result<()> {
    let s = store();
    let m = mixture(&s)?;
    let points = [[0.0f64, 0.0], [-3.0, 1.0], [2.5, -1.0], [300.0, -200.0]];
    let x = Tensor::new(&points, &Device::Cpu)?;
    let want: Vec<f64> = points
        .iter()
        .map(|p| {
            let terms: Vec<f64> = (0..2)
                .map(|k| {
                    let log_w = MIX_LOGITS[k] - (1.0 + 3.0f64).ln();
                    log_w + normal_log_density(p, &MIX_MEANS[k], &MIX_LOG_SCALES[k])
                })
                .collect();
            let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
        })
        .collect();
    assert!(want[3] < -1e4 && want[3].is_finite());
    assert_close(&vec1(&m.log_prob(&x, None)?)?, &want, 1e-12);
    assert_close(&vec1(&m.weights()?)?, &[0.25, 0.75], 1e-12);
    Ok(())
}

#[test]
fn mixture_integrates_to_one() -> Result<()> {
    let s = store();
    let m = GaussianMixture::new(&s.root(), 3, 2)?;
    s.perturb(0.3, 5)?;
    let total = grid_integral(&m, -10.0, 10.0, 400)?;
    assert!((total - 1.0).abs() < 0.01, "{total}");
    Ok(())
}

#[test]
fn mixture_samples_follow_the_weights_and_components() -> Result<()> {
    let s = store();
    let m = mixture(&s)?;
    let x = rows(&m.sample(N, None, &mut rng_from_seed(6))?)?;
    // Mixture moments: E x = sum w mu, Var x = sum w (s^2 + mu^2) - (E x)^2.
    let w = [0.25, 0.75];
    for j in 0..2 {
        let mean: f64 = (0..2).map(|k| w[k] * MIX_MEANS[k][j]).sum();
        let second: f64 = (0..2)
            .map(|k| w[k] * ((2.0 * MIX_LOG_SCALES[k][j]).exp() + MIX_MEANS[k][j].powi(2)))
            .sum();
        assert_moments(&x, j, mean, (second - mean * mean).sqrt());
    }
    // The components are 5 apart in x with scales near 1: x < -0.5 tells which was chosen.
    let first = x.iter().filter(|r| r[0] < -0.5).count() as f64 / N as f64;
    let se = (0.25f64 * 0.75 / N as f64).sqrt();
    assert!((first - 0.25).abs() < 4.0 * se + 0.002, "{first}");
    Ok(())
}

#[test]
fn mixture_starts_with_distinct_components_and_validates_its_size() -> Result<()> {
    let s = store();
    let m = GaussianMixture::new(&s.root(), 4, 3)?;
    let means = rows(m.means())?;
    for a in 0..4 {
        for b in a + 1..4 {
            assert_ne!(means[a], means[b]);
        }
    }
    assert!(matches!(
        GaussianMixture::new(&s.root().pp("a"), 0, 2),
        Err(Error::InvalidConfig { .. })
    ));
    assert!(matches!(
        GaussianMixture::new(&s.root().pp("b"), 2, 0),
        Err(Error::InvalidConfig { .. })
    ));
    Ok(())
}

#[test]
fn mixture_sample_and_log_prob_agree_and_give_gradients() -> Result<()> {
    let s = store();
    let m = mixture(&s)?;
    let (x, lp) = m.sample_and_log_prob(64, None, &mut rng_from_seed(7))?;
    assert_close(&vec1(&lp)?, &vec1(&m.log_prob(&x, None)?)?, 1e-12);
    let grads = lp.sum_all()?.backward()?;
    for (name, var) in s.parameters() {
        let g =
            grads.get(var.as_tensor()).ok_or_else(|| anyhow::anyhow!("no gradient for {name}"))?;
        assert!(vec1(&g.flatten_all()?)?.iter().all(|v| v.is_finite()), "{name}");
    }
    Ok(())
}

// ConditionalDiagNormal

fn conditional(store: &ParamStore) -> Result<ConditionalDiagNormal> {
    Ok(ConditionalDiagNormal::new(&store.root().pp("cond"), 2, 3, &[8], Activation::Tanh)?)
}

#[test]
fn conditional_normal_needs_a_context_with_one_row_per_sample() -> Result<()> {
    let s = store();
    let c = conditional(&s)?;
    let x = Tensor::zeros((4, 2), DType::F64, &Device::Cpu)?;
    let ctx = Tensor::zeros((4, 3), DType::F64, &Device::Cpu)?;
    let ctx5 = Tensor::zeros((5, 3), DType::F64, &Device::Cpu)?;
    let wide = Tensor::zeros((4, 4), DType::F64, &Device::Cpu)?;
    let rng = &mut rng_from_seed(0);
    assert!(matches!(c.log_prob(&x, None), Err(Error::Context(_))));
    assert!(matches!(c.sample(4, None, rng), Err(Error::Context(_))));
    assert!(matches!(c.log_prob(&x, Some(&ctx5)), Err(Error::Context(_))));
    assert!(matches!(c.sample(4, Some(&ctx5), rng), Err(Error::Context(_))));
    assert!(matches!(c.sample_and_log_prob(3, Some(&ctx), rng), Err(Error::Context(_))));
    assert!(matches!(c.log_prob(&x, Some(&wide)), Err(Error::Shape { .. })));
    assert_eq!(c.log_prob(&x, Some(&ctx))?.dims(), [4]);
    assert_eq!(c.sample(4, Some(&ctx), rng)?.dims(), [4, 2]);
    let root = store().root();
    assert!(matches!(
        ConditionalDiagNormal::new(&root, 0, 3, &[8], Activation::Relu),
        Err(Error::InvalidConfig { .. })
    ));
    Ok(())
}

#[test]
fn conditional_normal_starts_standard_then_matches_the_formula() -> Result<()> {
    let s = store();
    let c = conditional(&s)?;
    let rng = &mut rng_from_seed(8);
    let ctx = normflow::random::standard_normal((6, 3), DType::F64, &Device::Cpu, rng)?;
    let x = normflow::random::standard_normal((6, 2), DType::F64, &Device::Cpu, rng)?;
    let standard = StandardNormal::new(&[2], DType::F64, &Device::Cpu);
    assert_close(
        &vec1(&c.log_prob(&x, Some(&ctx))?)?,
        &vec1(&standard.log_prob(&x, None)?)?,
        1e-12,
    );

    s.perturb(0.5, 9)?;
    let (loc, log_scale) = c.loc_and_log_scale(6, Some(&ctx))?;
    let (loc, log_scale, xs) = (rows(&loc)?, rows(&log_scale)?, rows(&x)?);
    let want: Vec<f64> =
        (0..6).map(|i| normal_log_density(&xs[i], &loc[i], &log_scale[i])).collect();
    assert!(loc.iter().flatten().any(|v| v.abs() > 0.1), "the perturbation moved nothing");
    assert_close(&vec1(&c.log_prob(&x, Some(&ctx))?)?, &want, 1e-12);
    Ok(())
}

#[test]
fn conditional_normal_samples_each_row_from_its_own_context() -> Result<()> {
    let s = store();
    let c = conditional(&s)?;
    s.perturb(0.5, 10)?;
    // N rows of one context, then check the moments against that context's parameters.
    let one = Tensor::new(&[[0.5f64, -1.0, 2.0]], &Device::Cpu)?;
    let (loc, log_scale) = c.loc_and_log_scale(1, Some(&one))?;
    let (loc, log_scale) = (&rows(&loc)?[0], &rows(&log_scale)?[0]);
    let ctx = one.broadcast_as((N, 3))?.contiguous()?;
    let x = rows(&c.sample(N, Some(&ctx), &mut rng_from_seed(11))?)?;
    for j in 0..2 {
        assert_moments(&x, j, loc[j], log_scale[j].exp());
    }
    Ok(())
}

#[test]
fn conditional_normal_sample_and_log_prob_is_reparameterized() -> Result<()> {
    let s = store();
    let c = conditional(&s)?;
    s.perturb(0.5, 12)?;
    let ctx = normflow::random::standard_normal(
        (32, 3),
        DType::F64,
        &Device::Cpu,
        &mut rng_from_seed(13),
    )?;
    let (x, lp) = c.sample_and_log_prob(32, Some(&ctx), &mut rng_from_seed(14))?;
    assert_close(&vec1(&lp)?, &vec1(&c.log_prob(&x, Some(&ctx))?)?, 1e-10);
    let grads = (x.sum_all()? + lp.sum_all()?)?.backward()?;
    for (name, var) in s.parameters() {
        let g =
            grads.get(var.as_tensor()).ok_or_else(|| anyhow::anyhow!("no gradient for {name}"))?;
        let g = vec1(&g.flatten_all()?)?;
        assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|v| *v != 0.0), "{name}");
    }
    Ok(())
}

// All of them

#[test]
fn seeded_sampling_is_reproducible() -> Result<()> {
    let s = store();
    let ctx = Tensor::ones((10, 3), DType::F64, &Device::Cpu)?;
    let dists: Vec<(Box<dyn Distribution>, Option<&Tensor>)> = vec![
        (Box::new(DiagNormal::new(&s.root().pp("d"), &[2])?), None),
        (Box::new(unit_box()?), None),
        (Box::new(GaussianMixture::new(&s.root().pp("m"), 3, 2)?), None),
        (Box::new(conditional(&s)?), Some(&ctx)),
    ];
    s.perturb(0.3, 15)?;
    for (d, ctx) in &dists {
        let draw = |seed| -> Result<Vec<Vec<f64>>> {
            rows(&d.sample(10, *ctx, &mut rng_from_seed(seed))?)
        };
        assert_eq!(draw(1)?, draw(1)?, "{d:?}");
        assert_ne!(draw(1)?, draw(2)?, "{d:?}");
        assert_eq!(d.event_shape(), [2]);
    }
    Ok(())
}

#[test]
fn distributions_work_in_f32() -> Result<()> {
    let s = ParamStore::new(DType::F32, &Device::Cpu, 0);
    let ctx = Tensor::ones((5, 3), DType::F32, &Device::Cpu)?;
    let dists: Vec<(Box<dyn Distribution>, Option<&Tensor>)> = vec![
        (Box::new(DiagNormal::new(&s.root().pp("d"), &[2])?), None),
        (Box::new(UniformBox::unit(2, DType::F32, &Device::Cpu)?), None),
        (Box::new(GaussianMixture::new(&s.root().pp("m"), 3, 2)?), None),
        (
            Box::new(ConditionalDiagNormal::new(&s.root().pp("c"), 2, 3, &[4], Activation::Relu)?),
            Some(&ctx),
        ),
    ];
    for (d, ctx) in &dists {
        let (x, lp) = d.sample_and_log_prob(5, *ctx, &mut rng_from_seed(0))?;
        assert_eq!((x.dtype(), lp.dtype()), (DType::F32, DType::F32), "{d:?}");
        assert!(vec1(&lp)?.iter().all(|v| v.is_finite()), "{d:?}");
    }
    Ok(())
}
