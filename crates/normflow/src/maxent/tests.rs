//! Fits against closed-form maximum-entropy answers. Small flows and a few hundred steps; the
//! tolerances are a few times what the fit reaches, and far below the gap of the initial flow
//! or of a wrong answer (the margins are noted per test).

use candle_core::{DType, Device};

use super::reference::{kl_from_samples, Dirichlet, Exponential, Gaussian};
use super::*;
use crate::bijections::Support;
use crate::flows::{AutoregressiveSpec, CouplingSpec, FlowSpec};
use crate::model::Model;
use crate::train::{LrSchedule, NoopObserver};
use crate::Result;

struct Fitted {
    model: Model,
    estimate: MaxEntEstimate,
    report: MaxEntReport,
}

fn fit_model(
    spec: FlowSpec,
    support: Support,
    constraints: &Constraints,
    config: &MaxEntConfig,
) -> Result<Fitted> {
    let model = Model::new(spec, None, None, 3, DType::F32, &Device::Cpu)?.with_support(support)?;
    let report = fit(&model, constraints, config, &mut NoopObserver)?;
    let mut rng = crate::random::rng_from_seed(99);
    let estimate = estimate(&model, constraints, 20_000, 4096, &mut rng)?;
    Ok(Fitted { model, estimate, report })
}

fn kl(model: &Model, reference: &dyn Fn(&[f64]) -> f64) -> Result<f64> {
    let mut rng = crate::random::rng_from_seed(7);
    Ok(kl_from_samples(model, reference, 20_000, &mut rng)?.0)
}

/// A short run: cosine decay lets the last iterations settle, so that the multiplier
/// updates see the model's violation rather than the noise of its last steps.
fn config(outer: usize, inner: usize) -> MaxEntConfig {
    MaxEntConfig {
        outer_iterations: outer,
        inner_steps: inner,
        batch_size: 256,
        lr: 5e-3,
        schedule: LrSchedule::Cosine { min_lr: 2.5e-4 },
        ..MaxEntConfig::default()
    }
}

fn log_constraints(log_moments: &[f64], simplex: bool) -> Result<Constraints> {
    let d = if simplex { log_moments.len() - 1 } else { 1 };
    let mut list = Vec::new();
    for (i, &m) in log_moments.iter().enumerate() {
        let statistic = if i < d {
            let mut powers = vec![0.0; d];
            powers[i] = 1.0;
            Statistic::LogMoment { powers }
        } else if simplex {
            Statistic::LogRemainder
        } else {
            Statistic::LogOneMinus { powers: vec![1.0] }
        };
        list.push(Constraint { statistic, target: m });
    }
    Constraints::new(d, list)
}

#[test]
fn mean_and_covariance_on_the_plane_give_the_gaussian() -> Result<()> {
    // Sigma = [[1, 0.5], [0.5, 0.8]] around mu = (0.5, -0.3): E[x x^T] = Sigma + mu mu^T.
    let (mu, cov) = ([0.5, -0.3], [1.0, 0.5, 0.5, 0.8]);
    let second = |i: usize, j: usize| cov[i * 2 + j] + mu[i] * mu[j];
    let c =
        |powers: Vec<f64>, target| Constraint { statistic: Statistic::Moment { powers }, target };
    let constraints = Constraints::new(
        2,
        vec![
            c(vec![1.0, 0.0], mu[0]),
            c(vec![0.0, 1.0], mu[1]),
            c(vec![2.0, 0.0], second(0, 0)),
            c(vec![1.0, 1.0], second(0, 1)),
            c(vec![0.0, 2.0], second(1, 1)),
        ],
    )?;
    let f = fit_model(coupling(2), Support::Real, &constraints, &config(10, 100))?;
    let truth = Gaussian::new(mu.to_vec(), &cov)?;
    let error = f.estimate.entropy - truth.entropy();
    let kl = kl(&f.model, &|x| truth.log_prob(x))?;
    eprintln!(
        "gaussian: H error {error:.4}, violation {:.4}, KL {kl:.4}, {:?}",
        f.estimate.max_constraint_violation, f.report.seconds
    );
    // The initial N(0, I) is 0.19 nats off in entropy and 0.45 nats in KL.
    assert!(error.abs() < 0.05, "entropy error {error}");
    assert!(f.estimate.max_constraint_violation < 0.04, "{:?}", f.estimate.residuals);
    assert!(kl < 0.03, "KL {kl}");
    Ok(())
}

fn coupling(d: usize) -> FlowSpec {
    FlowSpec::RealNvp(CouplingSpec { layers: 2, hidden: 16, blocks: 1, ..CouplingSpec::new(d) })
}

#[test]
fn means_on_the_positive_quadrant_give_independent_exponentials() -> Result<()> {
    // A 1-D flow of affine layers is only an affine map of its base: in two coordinates the
    // coupling layers can bend each marginal, and the answer is a product of exponentials.
    let means = [2.0, 0.5];
    let c =
        |powers: Vec<f64>, target| Constraint { statistic: Statistic::Moment { powers }, target };
    let constraints =
        Constraints::new(2, vec![c(vec![1.0, 0.0], means[0]), c(vec![0.0, 1.0], means[1])])?;
    let f = fit_model(coupling(2), Support::Positive, &constraints, &config(10, 100))?;
    let truth = [Exponential::new(means[0])?, Exponential::new(means[1])?];
    let error = f.estimate.entropy - truth.iter().map(|e| e.entropy()).sum::<f64>();
    let kl = kl(&f.model, &|x| truth[0].log_prob(&x[..1]) + truth[1].log_prob(&x[1..]))?;
    eprintln!(
        "exponential: H error {error:.4}, violation {:.4}, KL {kl:.4}, {:?}",
        f.estimate.max_constraint_violation, f.report.seconds
    );
    assert!(error.abs() < 0.05, "entropy error {error}");
    assert!(f.estimate.max_constraint_violation < 0.04, "{:?}", f.estimate.residuals);
    assert!(kl < 0.03, "KL {kl}");
    Ok(())
}

#[test]
fn log_moments_on_the_unit_square_give_independent_betas() -> Result<()> {
    let truth = [Dirichlet::new(vec![2.0, 5.0])?, Dirichlet::new(vec![3.0, 1.5])?];
    let (a, b) = (truth[0].log_moments(), truth[1].log_moments());
    let stat = |s: Statistic, target| Constraint { statistic: s, target };
    let constraints = Constraints::new(
        2,
        vec![
            stat(Statistic::LogMoment { powers: vec![1.0, 0.0] }, a[0]),
            stat(Statistic::LogOneMinus { powers: vec![1.0, 0.0] }, a[1]),
            stat(Statistic::LogMoment { powers: vec![0.0, 1.0] }, b[0]),
            stat(Statistic::LogOneMinus { powers: vec![0.0, 1.0] }, b[1]),
        ],
    )?;
    let f = fit_model(
        coupling(2),
        Support::Interval { low: 0.0, high: 1.0 },
        &constraints,
        &config(10, 100),
    )?;
    let error = f.estimate.entropy - truth.iter().map(|d| d.entropy()).sum::<f64>();
    let kl = kl(&f.model, &|x| truth[0].log_prob(&x[..1]) + truth[1].log_prob(&x[1..]))?;
    eprintln!(
        "beta: H error {error:.4}, violation {:.4}, KL {kl:.4}, {:?}",
        f.estimate.max_constraint_violation, f.report.seconds
    );
    assert!(error.abs() < 0.05, "entropy error {error}");
    assert!(f.estimate.max_constraint_violation < 0.04, "{:?}", f.estimate.residuals);
    assert!(kl < 0.03, "KL {kl}");
    Ok(())
}

#[test]
fn log_moments_on_the_simplex_give_a_dirichlet() -> Result<()> {
    let truth = Dirichlet::new(vec![2.0, 3.0, 4.0])?;
    let constraints = log_constraints(&truth.log_moments(), true)?;
    let spec = FlowSpec::Iaf(AutoregressiveSpec {
        layers: 2,
        hidden: 16,
        blocks: 1,
        ..AutoregressiveSpec::new(2)
    });
    let f = fit_model(spec, Support::Simplex, &constraints, &config(10, 100))?;
    let error = f.estimate.entropy - truth.entropy();
    let kl = kl(&f.model, &|x| truth.log_prob(x))?;
    eprintln!(
        "dirichlet: H error {error:.4}, violation {:.4}, KL {kl:.4}, {:?}",
        f.estimate.max_constraint_violation, f.report.seconds
    );
    assert!(error.abs() < 0.05, "entropy error {error}");
    assert!(f.estimate.max_constraint_violation < 0.04, "{:?}", f.estimate.residuals);
    assert!(kl < 0.03, "KL {kl}");
    Ok(())
}
