//! Criterion benches: single layers, fused kernels, and whole training / evaluation / sampling
//! steps at the sizes of the peer comparison (conditioners of 2 hidden layers of 256, batch 512
//! for training and 4096 for evaluation). `cargo bench -p normflow --bench flows`.

use criterion::{criterion_group, Criterion, Throughput};
use normflow::bijections::{
    alternating_mask, AffineCoupling, Bijection, CouplingConfig, MafLayerConfig,
    MaskedAffineAutoregressive, RationalQuadraticSpline, RqSplineConfig, Transformer,
};
use normflow::candle::{DType, Device, Tensor};
use normflow::distributions::Distribution;
use normflow::flows::{
    AutoregressiveSpec, CouplingSpec, FlowSpec, TransformerFlowSpec, TransformerSpec,
};
use normflow::inference::without_gradients;
use normflow::model::Model;
use normflow::nn::gemm::{self as nf_gemm, Parallelism, View};
use std::sync::Arc;

use normflow::nn::dense::{dense, LayerPlan};
use normflow::nn::fused::{bias_act, unfused, FusedActivation};
use normflow::train::{maximum_likelihood_step, Adam, AdamConfig};
use normflow::ParamStore;

// As in the CLI: candle allocates per op, and glibc's large-block churn costs page faults.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// As the CLI's `keep_freed_memory`: mimalloc's `purge_delay` (option 15 in mimalloc.h) to -1,
/// so freed pages stay committed instead of being zero-filled again by the kernel.
fn keep_freed_memory() {
    // SAFETY: sets one integer option, before the benchmarks start threads.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(15, -1)
    };
}

const FEATURES: usize = 8;
const HIDDEN: usize = 256;

fn normal(rows: usize, cols: usize) -> Tensor {
    let mut rng = normflow::random::rng_from_seed(0);
    normflow::random::standard_normal((rows, cols), DType::F32, &Device::Cpu, &mut rng)
        .expect("random tensor")
}

/// The sgemm reference for the peak: candle's matmul (the gemm crate, AVX-512 kernels) on the
/// 512x256x256 product of a hidden layer. FLOP/s = 2 * 512 * 256 * 256 / time.
fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("sgemm 512x256x256");
    g.throughput(Throughput::Elements(2 * 512 * 256 * 256));
    let (a, w) = (normal(512, HIDDEN), normal(HIDDEN, HIDDEN));
    g.bench_function("matmul", |b| b.iter(|| a.matmul(&w.t().expect("t")).expect("matmul")));
    // The gemm crate called directly, as the fused layers do: the machine's peak on this shape.
    let av = a.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("a");
    let wv = w.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("w");
    let mut out = vec![0f32; 512 * HIDDEN];
    for threads in [1, 2] {
        let par = if threads == 1 { Parallelism::None } else { Parallelism::Rayon(threads) };
        g.bench_function(format!("gemm crate, {threads} thread(s)"), |b| {
            b.iter(|| {
                // out (512, 256) = a (512, 256) w^T, through normflow's checked gemm front.
                nf_gemm::matmul(
                    &mut out,
                    View::row_major(HIDDEN, 0, 512, 0, HIDDEN),
                    false,
                    &av,
                    View::row_major(HIDDEN, 0, 512, 0, HIDDEN),
                    &wv,
                    View::row_major(HIDDEN, 0, HIDDEN, 0, HIDDEN).t(),
                    par,
                )
                .expect("gemm")
            })
        });
    }
    g.finish();
}

fn layers(c: &mut Criterion) {
    let mut g = c.benchmark_group("layer forward+ladj, batch 512");
    g.throughput(Throughput::Elements(512));
    let x = normal(512, FEATURES);
    let store = ParamStore::new(DType::F32, &Device::Cpu, 0);
    let maf = MaskedAffineAutoregressive::new(
        &store.root().pp("maf"),
        &MafLayerConfig::new(FEATURES, vec![HIDDEN, HIDDEN]),
    )
    .expect("maf layer");
    let coupling = AffineCoupling::new(
        &store.root().pp("coupling"),
        &CouplingConfig::new(alternating_mask(FEATURES, 0), vec![HIDDEN, HIDDEN]),
    )
    .expect("coupling layer");
    g.bench_function("maf layer", |b| b.iter(|| maf.forward_and_ladj(&x, None).expect("maf")));
    g.bench_function("affine coupling", |b| {
        b.iter(|| coupling.forward_and_ladj(&x, None).expect("coupling"))
    });
    g.finish();

    // One MADE hidden layer (degrees 1..=D-1 cyclic, as MADE builds them), forward + backward:
    // the dense plan against the blocked product at several merge thresholds.
    let mut g = c.benchmark_group("masked layer 512x256x256, forward and backward");
    let deg: Vec<usize> = (0..HIDDEN).map(|k| 1 + k % (FEATURES - 1)).collect();
    let masked = LayerPlan::masked(&deg, &deg, |o, i| o >= i);
    let h = normflow::candle::Var::from_tensor(&normal(512, HIDDEN)).expect("var");
    let w = normflow::candle::Var::from_tensor(&normal(HIDDEN, HIDDEN)).expect("var");
    let bias = normflow::candle::Var::from_tensor(&normal(1, HIDDEN).squeeze(0).expect("bias"))
        .expect("var");
    let mut plans = vec![("dense".to_string(), LayerPlan::dense(HIDDEN, HIDDEN))];
    for rows in [0, 16, 32, 64, 128] {
        plans.push((format!("masked, tiles of {rows}"), masked.clone().with_tile_rows(rows)));
    }
    for (name, plan) in plans {
        let plan = Arc::new(plan);
        g.bench_function(name, |b| {
            b.iter(|| {
                let y = dense(
                    h.as_tensor(),
                    w.as_tensor(),
                    bias.as_tensor(),
                    &plan,
                    FusedActivation::Relu,
                )
                .expect("dense");
                y.sum_all().expect("sum").backward().expect("backward")
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("bias + relu, 512 x 256, forward and backward");
    let h = normflow::candle::Var::from_tensor(&normal(512, HIDDEN)).expect("var");
    let bias = normflow::candle::Var::from_tensor(&normal(1, HIDDEN).squeeze(0).expect("bias"))
        .expect("var");
    for (name, fused) in [("fused", true), ("unfused", false)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let y = if fused {
                    bias_act(h.as_tensor(), bias.as_tensor(), FusedActivation::Relu)
                } else {
                    unfused(h.as_tensor(), bias.as_tensor(), FusedActivation::Relu)
                }
                .expect("bias relu");
                y.sum_all().expect("sum").backward().expect("backward")
            })
        });
    }
    g.finish();
}

/// The rational-quadratic spline alone (8 bins, batch 512 x 8 features), forward + backward
/// and inverse, as the fused custom op and as the unfused composition of tensor ops.
/// `cargo bench -p normflow --bench flows -- nsf_layer`.
fn nsf_layer(c: &mut Criterion) {
    let spline = RationalQuadraticSpline::new(3.0, RqSplineConfig::new(8)).expect("valid spline");
    let p = spline.params_per_feature();
    let mut rng = normflow::random::rng_from_seed(2);
    let x = normflow::candle::Var::from_tensor(&normal(512, FEATURES).affine(2.0, 0.0).expect("x"))
        .expect("var");
    let raw = normflow::candle::Var::from_tensor(
        &normflow::random::standard_normal((512, FEATURES, p), DType::F32, &Device::Cpu, &mut rng)
            .expect("raw"),
    )
    .expect("var");
    let mut g = c.benchmark_group("nsf_layer: rq spline 512 x 8, 8 bins");
    g.throughput(Throughput::Elements(512));
    for (name, fused) in [("fused", true), ("unfused", false)] {
        g.bench_function(format!("forward+backward, {name}"), |b| {
            b.iter(|| {
                let (y, l) = if fused {
                    spline.forward(x.as_tensor(), raw.as_tensor())
                } else {
                    spline.forward_unfused(x.as_tensor(), raw.as_tensor())
                }
                .expect("spline");
                let loss = (y.sum_all().expect("sum") + l.sum_all().expect("sum")).expect("add");
                loss.backward().expect("backward")
            })
        });
        g.bench_function(format!("inverse, {name}"), |b| {
            b.iter(|| {
                without_gradients(|| {
                    if fused {
                        spline.inverse(x.as_tensor(), raw.as_tensor())
                    } else {
                        spline.inverse_unfused(x.as_tensor(), raw.as_tensor())
                    }
                })
                .expect("inverse")
            })
        });
    }
    g.finish();
}

fn presets() -> Vec<(&'static str, FlowSpec)> {
    vec![
        (
            "maf",
            FlowSpec::Maf(AutoregressiveSpec {
                layers: 5,
                hidden: HIDDEN,
                blocks: 2,
                ..AutoregressiveSpec::new(FEATURES)
            }),
        ),
        (
            "realnvp",
            FlowSpec::RealNvp(CouplingSpec {
                layers: 5,
                hidden: HIDDEN,
                blocks: 2,
                ..CouplingSpec::new(FEATURES)
            }),
        ),
        (
            "nsf",
            FlowSpec::Coupling(TransformerFlowSpec {
                layers: 5,
                hidden: HIDDEN,
                blocks: 2,
                ..TransformerFlowSpec::new(FEATURES, TransformerSpec::rational_quadratic(8, 3.0))
            }),
        ),
    ]
}

fn steps(c: &mut Criterion) {
    for (name, spec) in presets() {
        let model = Model::new(spec, None, None, 0, DType::F32, &Device::Cpu).expect("model");
        let mut g = c.benchmark_group(format!("{name}: 5 layers, 2x256"));
        g.sample_size(20);

        let x = normal(512, FEATURES);
        let mut adam = Adam::new(AdamConfig::default()).expect("adam");
        g.throughput(Throughput::Elements(512));
        // The training loop's step: two 256-row slices on two cores when there are two.
        g.bench_function("training step, batch 512", |b| {
            b.iter(|| {
                maximum_likelihood_step(&model, model.store(), &mut adam, &x, None, None, 1e-4)
                    .expect("step")
            })
        });

        let big = normal(4096, FEATURES);
        g.throughput(Throughput::Elements(4096));
        g.bench_function("log_prob, batch 4096", |b| {
            b.iter(|| without_gradients(|| model.log_prob(&big, None)).expect("log_prob"))
        });
        let mut rng = normflow::random::rng_from_seed(1);
        g.bench_function("sample, batch 4096", |b| {
            b.iter(|| without_gradients(|| model.sample(4096, None, &mut rng)).expect("sample"))
        });
        g.finish();
    }
}

criterion_group!(benches, matmul, layers, nsf_layer, steps);

// criterion_main!, with the allocator option set first.
fn main() {
    keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
