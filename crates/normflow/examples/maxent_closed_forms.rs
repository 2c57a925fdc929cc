//! Maximum-entropy flows against their closed forms: the table of docs/MAXENT.md.
//!
//! ```text
//! cargo run --release -p normflow --example maxent_closed_forms
//! ```
//!
//! For each case: the constraints of a known maximum-entropy distribution `p*`, a fit, and the
//! fitted entropy, its error, the largest constraint violation and `KL(p || p*)`, all from
//! 100 000 fresh samples.

use normflow::bijections::Support;
use normflow::candle::{DType, Device};
use normflow::flows::{AutoregressiveSpec, CouplingSpec, FlowSpec};
use normflow::maxent::reference::{kl_from_samples, Dirichlet, Exponential, Gaussian};
use normflow::maxent::{estimate, fit, Constraint, Constraints, MaxEntConfig, Statistic};
use normflow::model::Model;
use normflow::train::{LrSchedule, NoopObserver};

type Reference = Box<dyn Fn(&[f64]) -> f64>;

struct Case {
    name: String,
    support: Support,
    constraints: Constraints,
    entropy: f64,
    log_prob: Reference,
}

fn moment(powers: Vec<f64>, target: f64) -> Constraint {
    Constraint { statistic: Statistic::Moment { powers }, target }
}

fn unit(d: usize, i: usize, p: f64) -> Vec<f64> {
    let mut v = vec![0.0; d];
    v[i] = p;
    v
}

fn dirichlet_case(alpha: Vec<f64>) -> normflow::Result<Case> {
    let truth = Dirichlet::new(alpha.clone())?;
    let d = alpha.len() - 1;
    let targets = truth.log_moments();
    let mut list: Vec<Constraint> = (0..d)
        .map(|i| Constraint {
            statistic: Statistic::LogMoment { powers: unit(d, i, 1.0) },
            target: targets[i],
        })
        .collect();
    list.push(Constraint { statistic: Statistic::LogRemainder, target: targets[d] });
    Ok(Case {
        name: format!("Dirichlet{alpha:?}"),
        support: Support::Simplex,
        constraints: Constraints::new(d, list)?,
        entropy: truth.entropy(),
        log_prob: Box::new(move |x| truth.log_prob(x)),
    })
}

fn cases() -> normflow::Result<Vec<Case>> {
    let (mu, cov) = ([0.5, -0.3], [1.0, 0.5, 0.5, 0.8]);
    let second = |i: usize, j: usize| cov[i * 2 + j] + mu[i] * mu[j];
    let gauss = Gaussian::new(mu.to_vec(), &cov)?;
    let exps = [Exponential::new(1.0)?, Exponential::new(0.5)?];
    let betas = [Dirichlet::new(vec![2.0, 5.0])?, Dirichlet::new(vec![3.0, 1.5])?];
    let (a, b) = (betas[0].log_moments(), betas[1].log_moments());
    let log_stat = |s: Statistic, target| Constraint { statistic: s, target };
    Ok(vec![
        Case {
            name: "Gaussian (mean, covariance)".into(),
            support: Support::Real,
            constraints: Constraints::new(
                2,
                vec![
                    moment(vec![1.0, 0.0], mu[0]),
                    moment(vec![0.0, 1.0], mu[1]),
                    moment(vec![2.0, 0.0], second(0, 0)),
                    moment(vec![1.0, 1.0], second(0, 1)),
                    moment(vec![0.0, 2.0], second(1, 1)),
                ],
            )?,
            entropy: gauss.entropy(),
            log_prob: Box::new(move |x| gauss.log_prob(x)),
        },
        Case {
            name: "Exponential x2 (means 1, 1/2)".into(),
            support: Support::Positive,
            constraints: Constraints::new(
                2,
                vec![moment(vec![1.0, 0.0], 1.0), moment(vec![0.0, 1.0], 0.5)],
            )?,
            entropy: exps.iter().map(|e| e.entropy()).sum(),
            log_prob: Box::new(move |x| exps[0].log_prob(&x[..1]) + exps[1].log_prob(&x[1..])),
        },
        Case {
            name: "Beta(2,5) x Beta(3,1.5)".into(),
            support: Support::Interval { low: 0.0, high: 1.0 },
            constraints: Constraints::new(
                2,
                vec![
                    log_stat(Statistic::LogMoment { powers: vec![1.0, 0.0] }, a[0]),
                    log_stat(Statistic::LogOneMinus { powers: vec![1.0, 0.0] }, a[1]),
                    log_stat(Statistic::LogMoment { powers: vec![0.0, 1.0] }, b[0]),
                    log_stat(Statistic::LogOneMinus { powers: vec![0.0, 1.0] }, b[1]),
                ],
            )?,
            entropy: betas.iter().map(|d| d.entropy()).sum(),
            log_prob: Box::new(move |x| betas[0].log_prob(&x[..1]) + betas[1].log_prob(&x[1..])),
        },
        dirichlet_case(vec![2.0, 3.0, 4.0])?,
        // After the paper's Dirichlet experiment: a larger simplex, concentrations on both
        // sides of 1.
        dirichlet_case(vec![0.8, 1.5, 2.0, 3.0, 5.0])?,
        dirichlet_case(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])?,
    ])
}

fn main() -> normflow::Result<()> {
    let config = MaxEntConfig {
        outer_iterations: 10,
        inner_steps: 300,
        batch_size: 512,
        lr: 2e-3,
        schedule: LrSchedule::Cosine { min_lr: 1e-4 },
        ..MaxEntConfig::default()
    };
    println!("| case | support | flow | H* | H fitted | H error | max violation | KL(p ‖ p*) | seconds |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for case in cases()? {
        let d = case.constraints.dim();
        let spec = if d >= 4 {
            FlowSpec::Iaf(AutoregressiveSpec {
                layers: 4,
                hidden: 64,
                blocks: 2,
                ..AutoregressiveSpec::new(d)
            })
        } else {
            FlowSpec::RealNvp(CouplingSpec {
                layers: 4,
                hidden: 32,
                blocks: 2,
                ..CouplingSpec::new(d)
            })
        };
        let family = spec.family();
        let model = Model::new(spec, None, None, 0, DType::F32, &Device::Cpu)?
            .with_support(case.support)?;
        let report = fit(&model, &case.constraints, &config, &mut NoopObserver)?;
        let mut rng = normflow::random::rng_from_seed(1);
        let est = estimate(&model, &case.constraints, 100_000, 4096, &mut rng)?;
        let (kl, kl_se) = kl_from_samples(&model, case.log_prob.as_ref(), 100_000, &mut rng)?;
        let support = match case.support {
            Support::Real => "real".to_string(),
            Support::Positive => "positive".to_string(),
            Support::Interval { low, high } => format!("interval:{low},{high}"),
            Support::Simplex => format!("simplex (D = {d})"),
        };
        println!(
            "| {} | {support} | {family} | {:.4} | {:.4} ± {:.4} | {:+.4} | {:.4} | {:.4} ± {:.4} | {:.0} |",
            case.name,
            case.entropy,
            est.entropy,
            est.entropy_stderr,
            est.entropy - case.entropy,
            est.max_constraint_violation,
            kl,
            kl_se,
            report.seconds
        );
    }
    Ok(())
}
