//! The one table test: every bijection of the library through `check_bijection`.
//!
//! Each case builds its layer in f64 with a seeded store, moves every parameter away from its
//! identity initialization, and runs the checker at random inputs (and context, for conditional
//! layers). Adding a bijection to the library adds one line here.

use std::sync::Arc;

use normflow::bijections::*;
use normflow::candle::{DType, Device, Tensor};
use normflow::nn::{Activation, MadeOrder};
use normflow::preprocess::Standardization;
use normflow::testing::{check_bijection, CheckOptions};
use normflow::{Bijection, ParamStore, Params, Result};

type Build = fn(&Params) -> Result<Box<dyn Bijection>>;

/// Where the test inputs are drawn.
#[derive(Clone, Copy)]
enum Domain {
    /// Standard normal inputs.
    Real,
    /// Uniform inputs inside (0, 1); edge inputs at 0 and 1.
    UnitInterval,
    /// Positive inputs; edge inputs at 1e-9 and 1e3.
    Positive,
    /// Inputs inside the open simplex (positive, sum below 1); edge inputs at its corners.
    Simplex,
}

struct Case {
    name: &'static str,
    event: Vec<usize>,
    context: usize,
    domain: Domain,
    build: Build,
}

fn case(name: &'static str, event: &[usize], build: Build) -> Case {
    Case { name, event: event.to_vec(), context: 0, domain: Domain::Real, build }
}

impl Case {
    fn context(mut self, features: usize) -> Self {
        self.context = features;
        self
    }
    fn unit_interval(mut self) -> Self {
        self.domain = Domain::UnitInterval;
        self
    }
    fn positive(mut self) -> Self {
        self.domain = Domain::Positive;
        self
    }
    fn simplex(mut self) -> Self {
        self.domain = Domain::Simplex;
        self
    }
}

fn boxed(b: impl Bijection + 'static) -> Result<Box<dyn Bijection>> {
    Ok(Box::new(b))
}

fn maf(features: usize) -> MafLayerConfig {
    MafLayerConfig::new(features, vec![8, 8])
}

fn cases() -> Vec<Case> {
    vec![
        case("elementwise affine", &[3], |p| boxed(ElementwiseAffine::new(p, &[3])?)),
        case("elementwise affine on images", &[2, 3, 2], |p| {
            boxed(ElementwiseAffine::new(p, &[2, 3, 2])?)
        }),
        case("chain", &[3], |p| {
            boxed(Chain::new(vec![
                Box::new(ElementwiseAffine::new(&p.pp(0), &[3])?),
                Box::new(ElementwiseAffine::new(&p.pp(1), &[3])?),
            ]))
        }),
        case("inverse", &[3], |p| boxed(Inverse::new(ElementwiseAffine::new(p, &[3])?))),
        case("maf layer", &[4], |p| boxed(MaskedAffineAutoregressive::new(p, &maf(4))?)),
        case("maf layer, one feature", &[1], |p| {
            boxed(MaskedAffineAutoregressive::new(p, &maf(1))?)
        }),
        case("maf layer, random order", &[5], |p| {
            boxed(MaskedAffineAutoregressive::new(
                p,
                &MafLayerConfig { order: MadeOrder::Random, ..maf(5) },
            )?)
        }),
        case("maf layer, residual", &[4], |p| {
            let c = MafLayerConfig { residual: true, activation: Activation::Tanh, ..maf(4) };
            boxed(MaskedAffineAutoregressive::new(p, &c)?)
        }),
        case("maf layer, context", &[3], |p| {
            let c = MafLayerConfig { context_features: 2, order: MadeOrder::Reversed, ..maf(3) };
            boxed(MaskedAffineAutoregressive::new(p, &c)?)
        })
        .context(2),
        case("iaf layer", &[4], |p| {
            let c = MafLayerConfig { order: MadeOrder::Random, ..maf(4) };
            boxed(Inverse::new(MaskedAffineAutoregressive::new(p, &c)?))
        }),
        case("additive coupling", &[4], |p| {
            boxed(AdditiveCoupling::new(p, &CouplingConfig::new(half_mask(4, true), vec![8, 8]))?)
        }),
        case("affine coupling, alternating", &[4], |p| {
            boxed(AffineCoupling::new(p, &CouplingConfig::new(alternating_mask(4, 1), vec![8, 8]))?)
        }),
        case("affine coupling, irregular mask", &[5], |p| {
            let mask = vec![true, false, false, true, false];
            boxed(AffineCoupling::new(p, &CouplingConfig::new(mask, vec![8, 8]))?)
        }),
        case("affine coupling, context", &[3], |p| {
            let c = CouplingConfig {
                context_features: 2,
                ..CouplingConfig::new(alternating_mask(3, 0), vec![8])
            };
            boxed(AffineCoupling::new(p, &c)?)
        })
        .context(2),
        case("additive coupling, context", &[3], |p| {
            let c = CouplingConfig {
                context_features: 2,
                ..CouplingConfig::new(vec![false, true, false], vec![8])
            };
            boxed(AdditiveCoupling::new(p, &c)?)
        })
        .context(2),
        case("permutation reversed", &[4], |_| boxed(Permutation::reverse(4)?)),
        case("permutation random", &[5], |p| boxed(Permutation::random(p, 5)?)),
        case("permutation on images", &[3, 2, 2], |p| boxed(Permutation::random(p, 3)?)),
        case("lu linear", &[4], |p| boxed(LuLinear::new(p, 4)?)),
        case("lu linear with permutation", &[5], |p| {
            boxed(LuLinear::with_random_permutation(p, 5)?)
        }),
        case("lu linear on images (1x1 conv)", &[3, 2, 2], |p| boxed(LuLinear::new(p, 3)?)),
        case("actnorm", &[3], |p| boxed(ActNorm::new(p, &[3])?)),
        case("actnorm on images", &[2, 3, 2], |p| boxed(ActNorm::new(p, &[2, 3, 2])?)),
        case("batch norm", &[3], |p| boxed(BatchNorm::new(p, &[3])?)),
        case("batch norm on images", &[2, 2, 3], |p| boxed(BatchNorm::new(p, &[2, 2, 3])?)),
        case("element-wise transformer (affine)", &[3], |p| {
            boxed(ElementwiseTransformer::new(p, 3, Arc::new(AffineTransformer))?)
        }),
        case("transformer coupling (affine), context", &[3], |p| {
            let c = CouplingConfig {
                context_features: 2,
                ..CouplingConfig::new(alternating_mask(3, 1), vec![8])
            };
            boxed(TransformerCoupling::new(p, &c, Arc::new(AffineTransformer))?)
        })
        .context(2),
        case("transformer autoregressive (affine), context", &[3], |p| {
            let c = MafLayerConfig { context_features: 2, ..maf(3) };
            boxed(TransformerAutoregressive::new(p, &c, Arc::new(AffineTransformer))?)
        })
        .context(2),
        case("element-wise transformer (DSF)", &[3], |p| {
            boxed(ElementwiseTransformer::new(
                p,
                3,
                Arc::new(DeepSigmoidTransformer::new(4, false)?),
            )?)
        }),
        case("element-wise transformer (DDSF)", &[3], |p| {
            boxed(ElementwiseTransformer::new(
                p,
                3,
                Arc::new(DeepSigmoidTransformer::new(3, true)?),
            )?)
        }),
        case("element-wise transformer (SOS)", &[3], |p| {
            boxed(ElementwiseTransformer::new(p, 3, Arc::new(SosTransformer::new(3, 2)?))?)
        }),
        case("element-wise transformer (Bernstein)", &[3], |p| {
            boxed(ElementwiseTransformer::new(p, 3, Arc::new(BernsteinTransformer::new(6)?))?)
        }),
        case("transformer autoregressive (DSF), context", &[3], |p| {
            let c = MafLayerConfig { context_features: 2, ..maf(3) };
            boxed(TransformerAutoregressive::new(
                p,
                &c,
                Arc::new(DeepSigmoidTransformer::new(4, false)?),
            )?)
        })
        .context(2),
        case("transformer autoregressive (DDSF)", &[3], |p| {
            boxed(TransformerAutoregressive::new(
                p,
                &maf(3),
                Arc::new(DeepSigmoidTransformer::new(3, true)?),
            )?)
        }),
        case("transformer autoregressive (SOS)", &[3], |p| {
            boxed(TransformerAutoregressive::new(p, &maf(3), Arc::new(SosTransformer::new(3, 2)?))?)
        }),
        case("transformer autoregressive (Bernstein)", &[3], |p| {
            boxed(TransformerAutoregressive::new(
                p,
                &maf(3),
                Arc::new(BernsteinTransformer::new(6)?),
            )?)
        }),
        case("bnaf", &[3], |p| boxed(Bnaf::new(p, &BnafConfig::new(3))?)),
        case("bnaf, 2 hidden layers, context", &[3], |p| {
            let c = BnafConfig {
                context_features: 2,
                hidden_layers: 2,
                hidden_factor: 3,
                ..BnafConfig::new(3)
            };
            boxed(Bnaf::new(p, &c)?)
        })
        .context(2),
        case("bnaf, one feature", &[1], |p| boxed(Bnaf::new(p, &BnafConfig::new(1))?)),
        case("sigmoid", &[3], |_| boxed(Sigmoid::new())),
        case("logit", &[3], |_| boxed(Logit::new(0.05)?)).unit_interval(),
        case("support: positive", &[3], |_| boxed(Support::Positive.map()?.expect("map")))
            .positive(),
        case("support: interval", &[3], |_| {
            boxed(Support::Interval { low: -1.0, high: 2.0 }.map()?.expect("map"))
        })
        .unit_interval(),
        case("support: simplex", &[3], |_| boxed(Support::Simplex.map()?.expect("map"))).simplex(),
        // `Standardize`, the fixed first layer of every model (preprocess.rs).
        case("standardize", &[3], |p| {
            let s = Standardization { shift: vec![1.0, -2.0, 0.5], scale: vec![0.5, 3.0, 1.5] };
            boxed(s.bijection(p.dtype(), p.device())?)
        }),
    ]
}

fn inputs(case: &Case, batch: usize, seed: u64) -> Result<(Tensor, Option<Tensor>)> {
    let dev = Device::Cpu;
    let mut rng = normflow::random::rng_from_seed(seed);
    let mut shape = vec![batch];
    shape.extend(&case.event);
    let x = match case.domain {
        Domain::Real => normflow::random::standard_normal(shape, DType::F64, &dev, &mut rng)?,
        Domain::UnitInterval => {
            normflow::random::uniform(shape, DType::F64, &dev, &mut rng)?.affine(0.9, 0.05)?
        }
        Domain::Positive => normflow::random::standard_normal(shape, DType::F64, &dev, &mut rng)?
            .abs()?
            .affine(2.0, 0.01)?,
        Domain::Simplex => {
            let d = case.event.iter().product::<usize>() as f64;
            normflow::random::uniform(shape, DType::F64, &dev, &mut rng)?
                .affine(0.9 / d, 0.05 / d)?
        }
    };
    let ctx = if case.context > 0 {
        Some(normflow::random::standard_normal((batch, case.context), DType::F64, &dev, &mut rng)?)
    } else {
        None
    };
    Ok((x, ctx))
}

fn edge_options(case: &Case) -> Result<CheckOptions> {
    let mut opts = CheckOptions::default();
    let d: usize = case.event.iter().product();
    let edges = match case.domain {
        Domain::Real => None,
        Domain::UnitInterval => Some([vec![0.0; d], vec![1.0; d]].concat()),
        Domain::Positive => Some([vec![1e-9; d], vec![1e3; d]].concat()),
        Domain::Simplex => {
            let mut corner = vec![1e-9; d];
            corner[0] = 1.0 - 1e-9 * d as f64;
            Some([vec![1e-9; d], corner].concat())
        }
    };
    if let Some(values) = edges {
        let mut shape = vec![2];
        shape.extend(&case.event);
        opts.edge_inputs = Some(Tensor::from_vec(values, shape, &Device::Cpu)?);
        if case.context > 0 {
            opts.edge_context = Some(Tensor::zeros((2, case.context), DType::F64, &Device::Cpu)?);
        }
    }
    Ok(opts)
}

fn run(case: &Case) -> Result<String> {
    let store = ParamStore::new(DType::F64, &Device::Cpu, 11);
    let layer = (case.build)(&store.root())?;
    store.perturb(0.3, 5)?;
    let (x, ctx) = inputs(case, 5, 3)?;
    let report = check_bijection(layer.as_ref(), &x, ctx.as_ref(), &edge_options(case)?)?;
    if report.max_displacement < 1e-3 {
        return Err(normflow::Error::CheckFailed(format!(
            "the layer is (nearly) the identity at the test point ({report:?}): the check proves little"
        )));
    }
    Ok(format!("{report:?}"))
}

#[test]
fn every_bijection_passes_the_checker() {
    let mut failures = Vec::new();
    for case in cases() {
        match run(&case) {
            Ok(report) => println!("ok   {:<40} {report}", case.name),
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    assert!(failures.is_empty(), "checker failures:\n{}", failures.join("\n"));
}

/// The checker itself must catch a wrong log-determinant.
#[test]
fn checker_rejects_a_wrong_ladj() -> Result<()> {
    #[derive(Debug)]
    struct WrongLadj(ElementwiseAffine);
    impl Bijection for WrongLadj {
        fn forward_and_ladj(&self, x: &Tensor, c: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
            let (z, l) = self.0.forward_and_ladj(x, c)?;
            Ok((z, (l * 0.5)?))
        }
        fn inverse_and_ladj(&self, z: &Tensor, c: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
            let (x, l) = self.0.inverse_and_ladj(z, c)?;
            Ok((x, (l * 0.5)?))
        }
    }
    let store = ParamStore::new(DType::F64, &Device::Cpu, 0);
    let layer = WrongLadj(ElementwiseAffine::new(&store.root(), &[3])?);
    store.perturb(0.5, 1)?;
    let x = Tensor::randn(0f64, 1.0, (4, 3), &Device::Cpu)?;
    let Err(err) = check_bijection(&layer, &x, None, &CheckOptions::default()) else {
        return Err(normflow::Error::CheckFailed("the checker accepted a broken layer".into()));
    };
    assert!(err.to_string().contains("log|det J|"), "{err}");
    Ok(())
}

/// ...and a layer that breaks its declared autoregressive order.
#[test]
fn checker_rejects_a_false_triangular_claim() -> Result<()> {
    #[derive(Debug)]
    struct Swap;
    impl Bijection for Swap {
        fn forward_and_ladj(&self, x: &Tensor, _: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
            let z = Tensor::cat(&[x.narrow(1, 1, 1)?, x.narrow(1, 0, 1)?], 1)?;
            Ok((z, Tensor::zeros(x.dim(0)?, x.dtype(), x.device())?))
        }
        fn inverse_and_ladj(&self, z: &Tensor, c: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
            self.forward_and_ladj(z, c)
        }
        fn jacobian_order(&self) -> Option<Vec<usize>> {
            Some(vec![0, 1])
        }
    }
    let x = Tensor::randn(0f64, 1.0, (3, 2), &Device::Cpu)?;
    let Err(err) = check_bijection(&Swap, &x, None, &CheckOptions::default()) else {
        return Err(normflow::Error::CheckFailed("the checker accepted a broken layer".into()));
    };
    assert!(err.to_string().contains("depends on later input"), "{err}");
    Ok(())
}
