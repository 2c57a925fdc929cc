//! Golden test: the rational-quadratic spline against nflows 0.14
//! (`unconstrained_rational_quadratic_spline`, linear tails), values, log-derivatives, inverse
//! and autograd gradients, in f64. The numbers come from `fixtures/make_rq_spline_golden.py`.

use normflow::bijections::{RationalQuadraticSpline, RqSplineConfig, Transformer};
use normflow::candle::{DType, Device, Tensor, Var};
use normflow::Result;
use serde_json::Value;

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|row| row.as_array().expect("row").iter().map(|x| x.as_f64().expect("f64")).collect())
        .collect()
}

fn vector(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("f64")).collect()
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{what}[{i}]: {g} vs nflows {w}");
    }
}

type Map<'a> = &'a dyn Fn(&Tensor, &Tensor) -> Result<(Tensor, Tensor)>;

#[test]
fn rq_spline_matches_nflows() -> Result<()> {
    let text = include_str!("fixtures/rq_spline_golden.json");
    let g: Value = serde_json::from_str(text).expect("fixture JSON");
    let bins = g["bins"].as_u64().expect("bins") as usize;
    let config = RqSplineConfig {
        bins,
        min_bin_width: g["min_bin_width"].as_f64().expect("min_bin_width"),
        min_bin_height: g["min_bin_height"].as_f64().expect("min_bin_height"),
        min_derivative: g["min_derivative"].as_f64().expect("min_derivative"),
    };
    let spline = RationalQuadraticSpline::new(g["bound"].as_f64().expect("bound"), config)?;
    // nflows passes its derivative parameters through softplus unshifted; ours are shifted by
    // c = log(e^{1 - min_derivative} - 1) so that zero is the identity.
    let c = (1.0 - config.min_derivative).exp_m1().ln();
    let (uw, uh, ud) = (
        matrix(&g["unnormalized_widths"]),
        matrix(&g["unnormalized_heights"]),
        matrix(&g["unnormalized_derivatives"]),
    );
    let n = uw.len();
    let mut raw = Vec::new();
    for i in 0..n {
        raw.extend(&uw[i]);
        raw.extend(&uh[i]);
        raw.extend(ud[i].iter().map(|u| u - c));
    }
    let p = spline.params_per_feature();
    assert_eq!(raw.len(), n * p);
    let raw = Tensor::from_vec(raw, (n, 1, p), &Device::Cpu)?;

    let fwd_fused = |x: &Tensor, r: &Tensor| spline.forward(x, r);
    let inv_fused = |y: &Tensor, r: &Tensor| spline.inverse(y, r);
    let fwd_unfused = |x: &Tensor, r: &Tensor| spline.forward_unfused(x, r);
    let inv_unfused = |y: &Tensor, r: &Tensor| spline.inverse_unfused(y, r);
    let runs: [(&str, &str, Map); 4] = [
        ("forward", "fused", &fwd_fused),
        ("inverse", "fused", &inv_fused),
        ("forward", "unfused", &fwd_unfused),
        ("inverse", "unfused", &inv_unfused),
    ];
    for (direction, kind, map) in runs {
        let want = &g[direction];
        let what = format!("{direction} ({kind})");
        let inputs = vector(&want["inputs"]);
        let x = Var::from_tensor(&Tensor::from_vec(inputs, (n, 1), &Device::Cpu)?)?;
        let r = Var::from_tensor(&raw)?;
        let (out, lad) = map(x.as_tensor(), r.as_tensor())?;
        let flat = |t: &Tensor| -> Result<Vec<f64>> {
            Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
        };
        assert_close(&flat(&out)?, &vector(&want["outputs"]), &format!("{what} outputs"));
        assert_close(&flat(&lad)?, &vector(&want["logabsdet"]), &format!("{what} logabsdet"));
        let grads = (out.sum_all()? + lad.sum_all()?)?.backward()?;
        let gx = grads.get(x.as_tensor()).expect("input gradient");
        assert_close(&flat(gx)?, &vector(&want["grad_inputs"]), &format!("{what} d/dx"));
        let gr = grads.get(r.as_tensor()).expect("parameter gradient").squeeze(1)?;
        let k = bins;
        for (name, start, len) in
            [("grad_widths", 0, k), ("grad_heights", k, k), ("grad_derivatives", 2 * k, k - 1)]
        {
            let got = flat(&gr.narrow(1, start, len)?)?;
            let expected: Vec<f64> = matrix(&want[name]).concat();
            assert_close(&got, &expected, &format!("{what} {name}"));
        }
    }
    Ok(())
}
