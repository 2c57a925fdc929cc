//! The one table test: every bijection of the library through `check_bijection`.
//!
//! Each case builds its layer in f64 with a seeded store, moves every parameter away from its
//! identity initialization, and runs the checker at random inputs (and context, for conditional
//! layers). Adding a bijection to the library adds one line here.

use std::sync::Arc;

use normflow::bijections::cnf::{
    Cnf, CnfConfig, LinearField, OdeActivation, OdeNetConfig, TraceEstimator,
};
use normflow::bijections::*;
use normflow::candle::{DType, Device, Tensor};
use normflow::nn::{Activation, MadeOrder};
use normflow::ode::Solver;
use normflow::preprocess::Standardization;
use normflow::seq::prior::FlatSeqPrior;
use normflow::seq::{PriorKind, SeqPrior, SeqPriorConfig};
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
    /// Standard normal inputs (scaled by 2, so some fall outside a spline's interval `[-B, B]`
    /// with B = 2); edge inputs at exactly `+-B` and at `+-1e4` (the linear tails).
    Tails(f64),
    /// Angles: uniform on `[-pi, pi]`, edge inputs at `+-pi` and at `+-1e4`.
    Circle,
    /// Normal inputs of standard deviation `B` (inside and outside a spline's `[-B, B]`); edge
    /// inputs at exactly `+-B`, just past `B`, and at `+-1e4`.
    SplineBound(f64),
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
    fn tails(mut self, bound: f64) -> Self {
        self.domain = Domain::Tails(bound);
        self
    }
    fn circle(mut self) -> Self {
        self.domain = Domain::Circle;
        self
    }
    fn spline_bound(mut self, bound: f64) -> Self {
        self.domain = Domain::SplineBound(bound);
        self
    }
}

fn rq(bins: usize) -> Arc<dyn Transformer> {
    Arc::new(RationalQuadraticSpline::new(2.0, RqSplineConfig::new(bins)).expect("valid spline"))
}

fn circular_rq(bins: usize) -> Arc<dyn Transformer> {
    Arc::new(CircularRationalQuadraticSpline::new(RqSplineConfig::new(bins)).expect("valid spline"))
}

fn mixture(components: usize) -> Arc<dyn Transformer> {
    Arc::new(LogisticMixtureTransformer::new(components).expect("valid mixture"))
}

fn image_transformer_coupling(
    channels: usize,
    mask: ImageMask,
    context_channels: usize,
) -> ImageTransformerCouplingConfig {
    ImageTransformerCouplingConfig {
        channels,
        mask,
        hidden: 4,
        blocks: 1,
        activation: Activation::Elu,
        context_channels,
    }
}

fn boxed(b: impl Bijection + 'static) -> Result<Box<dyn Bijection>> {
    Ok(Box::new(b))
}

/// The bound of the spline cases.
const B: f64 = 2.0;

fn maf(features: usize) -> MafLayerConfig {
    MafLayerConfig::new(features, vec![8, 8])
}

fn image_coupling(channels: usize, mask: ImageMask) -> ImageCouplingConfig {
    ImageCouplingConfig {
        channels,
        mask,
        hidden: 4,
        blocks: 1,
        activation: Activation::Relu,
        log_scale_bound: normflow::bijections::IMAGE_LOG_SCALE_BOUND,
    }
}

fn sylvester(features: usize, m: usize, basis: SylvesterBasis) -> SylvesterConfig {
    SylvesterConfig { features, m, basis }
}

fn cnf_config(solver: Solver) -> CnfConfig {
    CnfConfig { time: 0.5, solver, trace: TraceEstimator::Exact, ..CnfConfig::default() }
}

fn cnf(p: &Params, solver: Solver, context: usize, activation: OdeActivation) -> Result<Cnf> {
    let features = if context > 0 { 2 } else { 3 };
    let net = OdeNetConfig { features, context_features: context, hidden: vec![8, 8], activation };
    Cnf::with_net(p, &net, cnf_config(solver))
}

fn seq_prior(
    p: &Params,
    kind: PriorKind,
    latent: usize,
    layers: usize,
    spline_bins: usize,
) -> Result<FlatSeqPrior> {
    let config = SeqPriorConfig { kind, latent, layers, hidden: 5, spline_bins, spline_bound: 3.0 };
    Ok(SeqPrior::new(p, &config)?.flat(3))
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
        case("squeeze", &[2, 4, 2], |_| boxed(Squeeze::new())),
        // Unflatten alone moves no entry (the table would call it the identity): with a squeeze.
        case("unflatten then squeeze", &[16], |_| {
            boxed(Chain::new(vec![Box::new(Unflatten::new(&[1, 4, 4])?), Box::new(Squeeze::new())]))
        }),
        case("image coupling, checkerboard", &[2, 4, 4], |p| {
            boxed(ImageAffineCoupling::new(
                p,
                &image_coupling(2, ImageMask::Checkerboard { parity: 1 }),
            )?)
        }),
        case("image coupling, channels (parity 0)", &[3, 2, 4], |p| {
            boxed(ImageAffineCoupling::new(
                p,
                &image_coupling(3, ImageMask::Channel { parity: 0 }),
            )?)
        }),
        case("image coupling, channels (parity 1)", &[3, 2, 4], |p| {
            boxed(ImageAffineCoupling::new(
                p,
                &image_coupling(3, ImageMask::Channel { parity: 1 }),
            )?)
        }),
        case("multi-scale (coupling, squeeze, split with prior)", &[2, 4, 4], |p| {
            let flow = MultiScaleBuilder::new([2, 4, 4])?
                .step(Box::new(ImageAffineCoupling::new(
                    &p.pp("a"),
                    &image_coupling(2, ImageMask::Checkerboard { parity: 0 }),
                )?))
                .squeeze()?;
            let flow = flow
                .step(Box::new(ImageAffineCoupling::new(
                    &p.pp("b"),
                    &image_coupling(8, ImageMask::Channel { parity: 1 }),
                )?))
                .split(&p.pp("split"), 4)?;
            let flow = flow.step(Box::new(ImageAffineCoupling::new(
                &p.pp("c"),
                &image_coupling(4, ImageMask::Channel { parity: 0 }),
            )?));
            boxed(flow.build())
        }),
        case("element-wise rq spline", &[3], |p| boxed(ElementwiseTransformer::new(p, 3, rq(5))?))
            .tails(2.0),
        case("rq spline coupling (nsf)", &[4], |p| {
            boxed(TransformerCoupling::new(
                p,
                &CouplingConfig::new(alternating_mask(4, 0), vec![8]),
                rq(4),
            )?)
        })
        .tails(2.0),
        case("rq spline autoregressive (nsf-ar), context", &[3], |p| {
            let c = MafLayerConfig { context_features: 2, ..maf(3) };
            boxed(TransformerAutoregressive::new(p, &c, rq(4))?)
        })
        .context(2)
        .tails(2.0),
        case("element-wise circular rq spline", &[3], |p| {
            boxed(ElementwiseTransformer::new(p, 3, circular_rq(5))?)
        })
        .circle(),
        case("circular rq spline coupling, context", &[3], |p| {
            let c = CouplingConfig {
                context_features: 2,
                ..CouplingConfig::new(alternating_mask(3, 1), vec![8])
            };
            boxed(TransformerCoupling::new(p, &c, circular_rq(4))?)
        })
        .context(2)
        .circle(),
        case("circular rq spline autoregressive", &[3], |p| {
            boxed(TransformerAutoregressive::new(p, &maf(3), circular_rq(4))?)
        })
        .circle(),
        case("element-wise transformer (linear spline)", &[3], |p| {
            boxed(ElementwiseTransformer::new(p, 3, Arc::new(LinearSpline::new(5, B)?))?)
        })
        .spline_bound(B),
        case("element-wise transformer (quadratic spline)", &[3], |p| {
            boxed(ElementwiseTransformer::new(p, 3, Arc::new(QuadraticSpline::new(5, B)?))?)
        })
        .spline_bound(B),
        case("element-wise transformer (cubic spline)", &[3], |p| {
            boxed(ElementwiseTransformer::new(p, 3, Arc::new(CubicSpline::new(5, B)?))?)
        })
        .spline_bound(B),
        case("transformer coupling (linear spline)", &[4], |p| {
            let c = CouplingConfig::new(alternating_mask(4, 0), vec![8]);
            boxed(TransformerCoupling::new(p, &c, Arc::new(LinearSpline::new(4, B)?))?)
        })
        .spline_bound(B),
        case("transformer coupling (quadratic spline), context", &[3], |p| {
            let c = CouplingConfig {
                context_features: 2,
                ..CouplingConfig::new(alternating_mask(3, 1), vec![8])
            };
            boxed(TransformerCoupling::new(p, &c, Arc::new(QuadraticSpline::new(4, B)?))?)
        })
        .context(2)
        .spline_bound(B),
        case("transformer coupling (cubic spline)", &[4], |p| {
            let c = CouplingConfig::new(alternating_mask(4, 1), vec![8]);
            boxed(TransformerCoupling::new(p, &c, Arc::new(CubicSpline::new(4, B)?))?)
        })
        .spline_bound(B),
        case("transformer autoregressive (cubic spline), context", &[3], |p| {
            let c = MafLayerConfig { context_features: 2, ..maf(3) };
            boxed(TransformerAutoregressive::new(p, &c, Arc::new(CubicSpline::new(4, B)?))?)
        })
        .context(2)
        .spline_bound(B),
        case("inverse transformer autoregressive (cubic spline)", &[3], |p| {
            boxed(Inverse::new(TransformerAutoregressive::new(
                p,
                &maf(3),
                Arc::new(CubicSpline::new(4, B)?),
            )?))
        })
        .spline_bound(B),
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
        case("element-wise transformer (logistic mixture)", &[3], |p| {
            boxed(ElementwiseTransformer::new(p, 3, mixture(3))?)
        })
        .tails(B),
        case("transformer coupling (logistic mixture), context", &[3], |p| {
            let c = CouplingConfig {
                context_features: 2,
                ..CouplingConfig::new(alternating_mask(3, 0), vec![8])
            };
            boxed(TransformerCoupling::new(p, &c, mixture(2))?)
        })
        .context(2),
        case("transformer autoregressive (logistic mixture)", &[3], |p| {
            boxed(TransformerAutoregressive::new(p, &maf(3), mixture(2))?)
        }),
        case("image transformer coupling (logistic mixture), checkerboard", &[2, 4, 4], |p| {
            let c = image_transformer_coupling(2, ImageMask::Checkerboard { parity: 0 }, 0);
            boxed(ImageTransformerCoupling::new(p, &c, mixture(2))?)
        }),
        case("image transformer coupling (logistic mixture), channels", &[3, 2, 4], |p| {
            let c = image_transformer_coupling(3, ImageMask::Channel { parity: 1 }, 0);
            boxed(ImageTransformerCoupling::new(p, &c, mixture(2))?)
        }),
        case("image transformer coupling (affine), checkerboard, context", &[1, 4, 4], |p| {
            let c = image_transformer_coupling(1, ImageMask::Checkerboard { parity: 1 }, 1);
            boxed(ImageTransformerCoupling::new(p, &c, Arc::new(AffineTransformer))?)
        })
        .context(16),
        case("variational dequantizer's flow g, context", &[8], |p| {
            let spec = DequantizationSpec { steps: 2, hidden: 4, blocks: 1 };
            boxed(VariationalDequantization::noise_flow(p, [2, 2, 2], &spec, mixture(2))?)
        })
        .context(8),
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
        case("planar", &[3], |p| boxed(Planar::new(p, 3)?)),
        case("planar, one feature", &[1], |p| boxed(Planar::new(p, 1)?)),
        case("radial", &[3], |p| boxed(Radial::new(p, 3)?)),
        case("sylvester, orthogonal", &[4], |p| {
            boxed(Sylvester::new(p, &sylvester(4, 2, SylvesterBasis::Orthogonal))?)
        }),
        case("sylvester, householder", &[4], |p| {
            let basis = SylvesterBasis::Householder { reflections: 2 };
            boxed(Sylvester::new(p, &sylvester(4, 3, basis))?)
        }),
        case("sylvester, triangular", &[3], |p| {
            boxed(Sylvester::new(p, &sylvester(3, 3, SylvesterBasis::Identity))?)
        }),
        case("sylvester, triangular reversed", &[3], |p| {
            boxed(Sylvester::new(p, &sylvester(3, 3, SylvesterBasis::Reversal))?)
        }),
        case("householder", &[4], |p| boxed(Householder::new(p, 4, 3)?)),
        // Continuous flows: exact trace and accurate solvers, so that the discretization error
        // stays below the checker's tolerance.
        case("cnf, rk4", &[3], |p| {
            boxed(cnf(p, Solver::Rk4 { steps: 40 }, 0, OdeActivation::Tanh)?)
        }),
        case("cnf, dopri5", &[3], |p| {
            let solver = Solver::Dopri5 { atol: 1e-11, rtol: 1e-11, max_steps: 10_000 };
            boxed(cnf(p, solver, 0, OdeActivation::Softplus)?)
        }),
        case("cnf, context", &[2], |p| {
            boxed(cnf(p, Solver::Rk4 { steps: 40 }, 2, OdeActivation::Tanh)?)
        })
        .context(2),
        case("cnf, adjoint gradients", &[3], |p| {
            let net = OdeNetConfig {
                features: 3,
                context_features: 0,
                hidden: vec![8],
                activation: OdeActivation::Tanh,
            };
            let config = CnfConfig { adjoint: true, ..cnf_config(Solver::Rk4 { steps: 40 }) };
            boxed(Cnf::with_net(p, &net, config)?)
        }),
        case("cnf, linear field", &[3], |p| {
            let field = Box::new(LinearField::new(&p.pp("field"), 3)?);
            boxed(Cnf::new(p, field, cnf_config(Solver::Rk4 { steps: 40 }))?)
        }),
        // The sequence priors of `seq` on flattened sequences of 3 steps: one layer declares
        // its order (step by step, the within-step order inside); stacks declare none.
        case("seq prior af-af, 1 layer", &[9], |p| boxed(seq_prior(p, PriorKind::AfAf, 3, 1, 0)?)),
        case("seq prior af-scf, 1 layer", &[12], |p| {
            boxed(seq_prior(p, PriorKind::AfScf, 4, 1, 0)?)
        }),
        case("seq prior iaf-scf, 1 layer", &[12], |p| {
            boxed(seq_prior(p, PriorKind::IafScf, 4, 1, 0)?)
        }),
        case("seq prior af-af, 2 layers, splines", &[9], |p| {
            boxed(seq_prior(p, PriorKind::AfAf, 3, 2, 4)?)
        })
        .spline_bound(3.0),
        case("seq prior iaf-scf, 2 layers, splines", &[12], |p| {
            boxed(seq_prior(p, PriorKind::IafScf, 4, 2, 4)?)
        })
        .spline_bound(3.0),
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
        Domain::Tails(_) => {
            (normflow::random::standard_normal(shape, DType::F64, &dev, &mut rng)? * 2.0)?
        }
        Domain::Circle => normflow::random::uniform(shape, DType::F64, &dev, &mut rng)?
            .affine(2.0 * std::f64::consts::PI, -std::f64::consts::PI)?,
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
        Domain::SplineBound(bound) => {
            (normflow::random::standard_normal(shape, DType::F64, &dev, &mut rng)? * bound)?
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
        Domain::Tails(b) => Some([vec![b; d], vec![-b; d], vec![1e4; d], vec![-1e4; d]].concat()),
        Domain::Circle => {
            let pi = std::f64::consts::PI;
            Some([vec![pi; d], vec![-pi; d], vec![1e4; d], vec![-1e4; d]].concat())
        }
        Domain::UnitInterval => Some([vec![0.0; d], vec![1.0; d]].concat()),
        Domain::Positive => Some([vec![1e-9; d], vec![1e3; d]].concat()),
        Domain::Simplex => {
            let mut corner = vec![1e-9; d];
            corner[0] = 1.0 - 1e-9 * d as f64;
            Some([vec![1e-9; d], corner].concat())
        }
        Domain::SplineBound(bound) => {
            let row = |values: [f64; 3]| (0..d).map(move |i| values[i % 3]);
            let rows = [[-bound, bound, 1e4], [bound, -1e4, bound * (1.0 + 1e-12)]];
            Some(rows.into_iter().flat_map(row).collect())
        }
    };
    if let Some(values) = edges {
        let rows = values.len() / d;
        let mut shape = vec![rows];
        shape.extend(&case.event);
        opts.edge_inputs = Some(Tensor::from_vec(values, shape, &Device::Cpu)?);
        if case.context > 0 {
            opts.edge_context =
                Some(Tensor::zeros((rows, case.context), DType::F64, &Device::Cpu)?);
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

/// ...and a layer that couples the rows of a batch while promising they are independent
/// (a batch statistic in training mode, as batch norm has, without saying so).
#[test]
fn checker_rejects_a_false_row_independence_claim() -> Result<()> {
    #[derive(Debug)]
    struct CentreOnBatch;
    impl Bijection for CentreOnBatch {
        fn forward_and_ladj(&self, x: &Tensor, _: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
            let z = x.broadcast_sub(&x.mean_keepdim(0)?.detach())?;
            Ok((z, Tensor::zeros(x.dim(0)?, x.dtype(), x.device())?))
        }
        fn inverse_and_ladj(&self, z: &Tensor, _: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
            Ok((z.clone(), Tensor::zeros(z.dim(0)?, z.dtype(), z.device())?))
        }
    }
    let x = Tensor::randn(0f64, 1.0, (6, 2), &Device::Cpu)?;
    let Err(err) = check_bijection(&CentreOnBatch, &x, None, &CheckOptions::default()) else {
        return Err(normflow::Error::CheckFailed("the checker accepted a broken layer".into()));
    };
    assert!(err.to_string().contains("rows_independent"), "{err}");
    Ok(())
}

// ------------------------------------------------ invertibility constraints under attack
//
// The variational layers keep their maps invertible by reparameterizing raw parameters. Each
// test below sets raw parameters that would break invertibility without the constraint, then
// requires the checker (and so the numerical inverse) to pass.

/// Overwrites the raw parameter `name` of `store` with `values`.
fn set(store: &ParamStore, name: &str, values: &[f64]) -> Result<()> {
    let (_, var) = store
        .parameters()
        .into_iter()
        .find(|(n, _)| n == name)
        .ok_or_else(|| normflow::Error::Data(format!("no parameter {name}")))?;
    var.set(&Tensor::from_vec(values.to_vec(), var.shape(), &Device::Cpu)?)?;
    Ok(())
}

fn check_adversarial(layer: &dyn Bijection, d: usize, what: &str) -> Result<()> {
    let mut rng = normflow::random::rng_from_seed(8);
    let x = normflow::random::standard_normal((6, d), DType::F64, &Device::Cpu, &mut rng)?;
    let x = (x * 2.0)?;
    check_bijection(layer, &x, None, &CheckOptions::default())
        .map_err(|e| normflow::Error::CheckFailed(format!("{what}: {e}")))?;
    Ok(())
}

#[test]
fn planar_stays_invertible_when_w_dot_u_is_very_negative() -> Result<()> {
    for (scale, b) in [(-2.0, 0.0), (-40.0, 0.5), (-1e3, -3.0)] {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 1);
        let layer = Planar::new(&store.root(), 3)?;
        let w = [1.0, -2.0, 0.5];
        set(&store, "w", &w)?;
        set(&store, "u", &w.map(|v| v * scale))?;
        set(&store, "b", &[b])?;
        let c = layer.params()?.w_dot_u_hat().to_vec1::<f64>()?[0];
        assert!(c >= -1.0, "w.u_hat = {c}");
        check_adversarial(&layer, 3, &format!("u = {scale} w, b = {b}"))?;
    }
    Ok(())
}

#[test]
fn radial_stays_invertible_when_beta_approaches_minus_alpha() -> Result<()> {
    // (a -> -inf would make alpha -> 0: a ball of radius softplus(b) collapses onto z0, and f64
    // cannot resolve the inverse there; a = -10 already compresses it by 1e4.)
    for (a, b) in [(3.0, -40.0), (-10.0, 1.0), (40.0, -40.0), (0.0, -1e3)] {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 1);
        let layer = Radial::new(&store.root(), 3)?;
        set(&store, "a", &[a])?;
        set(&store, "b", &[b])?;
        set(&store, "z0", &[0.3, -0.2, 0.1])?;
        check_adversarial(&layer, 3, &format!("a = {a}, b = {b}"))?;
    }
    Ok(())
}

#[test]
fn sylvester_stays_invertible_with_large_opposite_diagonals() -> Result<()> {
    let bases = [
        (3, SylvesterBasis::Identity),
        (3, SylvesterBasis::Reversal),
        (2, SylvesterBasis::Orthogonal),
        (2, SylvesterBasis::Householder { reflections: 2 }),
    ];
    for (m, basis) in bases {
        for diagonal in [-3.0, -50.0] {
            let store = ParamStore::new(DType::F64, &Device::Cpu, 1);
            let layer = Sylvester::new(&store.root(), &sylvester(3, m, basis))?;
            store.perturb(0.5, 2)?;
            // R diagonal -> -1 and R~ diagonal -> +1: r_ii r~_ii -> -1; large off-diagonals.
            let matrix = |sign: f64| -> Vec<f64> {
                (0..m * m)
                    .map(|k| if k / m == k % m { sign * diagonal } else { 4.0 * sign })
                    .collect()
            };
            set(&store, "r", &matrix(1.0))?;
            set(&store, "r_tilde", &matrix(-1.0))?;
            let p = layer.params()?.diagonal_product().to_vec1::<f64>()?;
            assert!(p.iter().all(|&v| v > -1.0), "{basis:?}: {p:?}");
            check_adversarial(&layer, 3, &format!("{basis:?}, diagonal {diagonal}"))?;
        }
    }
    Ok(())
}

#[test]
fn householder_ignores_a_zero_direction() -> Result<()> {
    let store = ParamStore::new(DType::F64, &Device::Cpu, 1);
    let layer = Householder::new(&store.root(), 3, 2)?;
    set(&store, "v", &[0.0, 0.0, 0.0, 1.0, 2.0, -1.0])?;
    check_adversarial(&layer, 3, "v_1 = 0")
}
