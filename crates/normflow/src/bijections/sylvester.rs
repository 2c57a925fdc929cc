//! Sylvester flows (van den Berg, Hasenclever, Tomczak & Welling 2018, "Sylvester Normalizing
//! Flows for Variational Inference").

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::householder::householder_columns;
use super::param_batch::{check_param_batch, check_rows, repeat_batch, rows_times, tiny};
use super::planar::solve_tanh_equation;
use super::Bijection;
use crate::params::{Init, Params};
use crate::solve::SolveOptions;
use crate::{Error, Result};

/// The largest `|raw|` whose `tanh` is still below 1 in `dtype`: the diagonals are clamped to
/// it so that `r_ii r̃_ii > -1` holds in floating point, not only on paper.
fn diagonal_bound(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 17.0,
        DType::F32 => 8.0,
        DType::F16 => 3.5,
        _ => 2.5,
    }
}

/// Upper-triangular masks of an `m x m` matrix: `(strictly upper, identity)`.
fn triangle_masks(m: usize, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
    let eye = Tensor::eye(m, dtype, device)?;
    let strict_upper = (Tensor::tril2(m, dtype, device)?.t()? - &eye)?;
    Ok((strict_upper, eye))
}

/// The parameters of one Sylvester map `f(z) = z + Q R tanh(R̃ Qᵀ z + b)`, with the
/// invertibility constraint applied.
///
/// `Q` (`D x M`) has orthonormal columns (the caller's choice of parameterization:
/// [`orthonormal_columns`], [`householder_columns`], or a permutation). `R`, `R̃` are upper
/// triangular with diagonals `tanh` of their raw diagonals, so `r_ii r̃_ii ∈ (-1, 1)` and
/// `1 + r_ii r̃_ii tanh'(·) > 0`: the paper's sufficient condition for invertibility (its
/// theorem 2 with `h = tanh`). The raw diagonals are clamped to the range where `tanh` stays
/// below 1 in the dtype. Entries of the raw matrices below the diagonal are ignored.
///
/// `log|det df/dz| = Σ_i log(1 + r_ii r̃_ii tanh'(R̃ Qᵀz + b)_i)` (by Sylvester's determinant
/// identity, `det(I_D + Q R H R̃ Qᵀ) = det(I_M + H R̃ R)`, and `R̃ R` is upper triangular).
///
/// `f` runs in the **sampling** direction: it is the layer's `inverse` in normflow's convention.
///
/// # Shapes
/// `q: (D, M)`, `r`, `r_tilde: (M, M)`, `b: (M,)`; or each with a leading batch axis `B`
/// (amortized flows).
#[derive(Debug, Clone)]
pub struct SylvesterParams {
    q: Tensor,
    r: Tensor,
    r_tilde: Tensor,
    /// `r_ii r̃_ii`, `(M,)` or `(B, M)`.
    diag_product: Tensor,
    b: Tensor,
}

impl SylvesterParams {
    /// Applies the triangular structure and the diagonal constraint to raw `r`, `r_tilde`.
    pub fn new(q: &Tensor, r: &Tensor, r_tilde: &Tensor, b: &Tensor) -> Result<Self> {
        let batched = q.rank() == 3;
        let (d, m) = (q.dim(q.rank() - 2)?, q.dim(q.rank() - 1)?);
        let lead: Vec<usize> = if batched { vec![q.dim(0)?] } else { vec![] };
        let want = |tail: &[usize]| [lead.as_slice(), tail].concat();
        if !matches!(q.rank(), 2 | 3)
            || m > d
            || r.dims() != want(&[m, m])
            || r_tilde.dims() != want(&[m, m])
            || b.dims() != want(&[m])
        {
            return Err(Error::shape(
                "Sylvester parameters q, r, r_tilde, b",
                "q: (D, M) with M <= D, r, r_tilde: (M, M), b: (M,), all with or without a \
                 leading batch axis",
                &[q.dims(), r.dims(), r_tilde.dims(), b.dims()].concat(),
            ));
        }
        let (strict_upper, eye) = triangle_masks(m, q.dtype(), q.device())?;
        let bound = diagonal_bound(q.dtype());
        let constrain = |raw: &Tensor| -> Result<(Tensor, Tensor)> {
            let diag =
                raw.broadcast_mul(&eye)?.sum(raw.rank() - 1)?.clamp(-bound, bound)?.tanh()?;
            let full = (raw.broadcast_mul(&strict_upper)?
                + eye.broadcast_mul(&diag.unsqueeze(diag.rank() - 1)?)?)?;
            Ok((full, diag))
        };
        let (r, diag_r) = constrain(r)?;
        let (r_tilde, diag_rt) = constrain(r_tilde)?;
        Ok(Self { q: q.clone(), r, r_tilde, diag_product: (diag_r * diag_rt)?, b: b.clone() })
    }

    /// Batched parameters `(B, ..)` repeated `k` times, `(k B, ..)` (row `s B + b` is map `b`).
    /// Unbatched parameters are unchanged.
    pub fn repeat(&self, k: usize) -> Result<Self> {
        if self.q.rank() < 3 {
            return Ok(self.clone());
        }
        let r = |t: &Tensor| repeat_batch(t, k);
        Ok(Self {
            q: r(&self.q)?,
            r: r(&self.r)?,
            r_tilde: r(&self.r_tilde)?,
            diag_product: r(&self.diag_product)?,
            b: r(&self.b)?,
        })
    }

    /// The constrained `R` (upper triangular).
    pub fn r(&self) -> &Tensor {
        &self.r
    }

    /// The constrained `R̃` (upper triangular).
    pub fn r_tilde(&self) -> &Tensor {
        &self.r_tilde
    }

    /// `r_ii r̃_ii`, each in `(-1, 1)`.
    pub fn diagonal_product(&self) -> &Tensor {
        &self.diag_product
    }

    fn m(&self) -> Result<usize> {
        Ok(self.q.dim(self.q.rank() - 1)?)
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        check_rows(x, self.q.dim(self.q.rank() - 2)?, "Sylvester map")?;
        check_param_batch(&self.q, 2, x.dim(0)?, "Sylvester map")
    }

    /// `Σ_i log((1 + p_i) - p_i tanh²(a_i))`, `p_i = r_ii r̃_ii`: `tanh_a: (B, M)` -> `(B,)`.
    fn ladj(&self, tanh_a: &Tensor) -> Result<Tensor> {
        let p = &self.diag_product;
        let terms = tanh_a.sqr()?.broadcast_mul(p)?.neg()?.broadcast_add(&(p + 1.0)?)?;
        Ok(terms.log()?.sum(1)?)
    }

    /// `y = f(z) = z + Q R tanh(R̃ Qᵀ z + b)` and `log|det df/dz|`.
    ///
    /// `z: (B, D)` -> `(y (B, D), ladj (B,))`.
    pub fn map(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check_input(z)?;
        let v = rows_times(z, &self.q)?;
        let tanh_a = rows_times(&v, &self.r_tilde.t()?)?.broadcast_add(&self.b)?.tanh()?;
        let shift = rows_times(&rows_times(&tanh_a, &self.r.t()?)?, &self.q.t()?)?;
        Ok(((z + shift)?, self.ladj(&tanh_a)?))
    }

    /// `z = f⁻¹(y)` and `log|det df⁻¹/dy|`.
    ///
    /// The component of `y` orthogonal to the columns of `Q` is unchanged by `f`; in the
    /// coordinates `v = Qᵀz` the map is `v' = v + R tanh(R̃ v + b)`, upper triangular, so the
    /// coordinates are solved from the last to the first, each by the bracketed scalar solve
    /// of `v_i + r_ii tanh(r̃_ii v_i + c_i) = t_i` (increasing since `r_ii r̃_ii > -1`).
    ///
    /// # Errors
    /// [`Error::Numerical`] if a residual stays above the tolerance of `opts`.
    pub fn solve(&self, y: &Tensor, opts: &SolveOptions) -> Result<(Tensor, Tensor)> {
        self.check_input(y)?;
        let m = self.m()?;
        let batch = y.dim(0)?;
        let v_out = rows_times(y, &self.q)?; // (B, M)
        let rows = self.r.rank() - 2;
        // Solved coordinates i+1..M and their tanh(a), as (B, M-1-i) tensors.
        let mut v_tail = Tensor::zeros((batch, 0), y.dtype(), y.device())?;
        let mut tanh_tail = v_tail.clone();
        // On a row `(M,)` or `(B, M)`: entries i+1.., and entry i as `(1,)` or `(B,)`.
        let tail = |t: &Tensor, i: usize| t.narrow(t.rank() - 1, i + 1, m - 1 - i);
        let entry = |t: &Tensor, i: usize| -> Result<Tensor> {
            Ok(t.narrow(t.rank() - 1, i, 1)?.flatten_all()?)
        };
        let dot = |x: &Tensor, w: &Tensor| -> Result<Tensor> {
            if x.dim(1)? == 0 {
                return Ok(Tensor::zeros(batch, y.dtype(), y.device())?);
            }
            Ok(x.broadcast_mul(w)?.sum(1)?)
        };
        for i in (0..m).rev() {
            let row = |t: &Tensor| -> Result<Tensor> { Ok(t.narrow(rows, i, 1)?.squeeze(rows)?) };
            let (r_row, rt_row) = (row(&self.r)?, row(&self.r_tilde)?); // (M,) or (B, M)
            let target =
                (v_out.narrow(1, i, 1)?.squeeze(1)? - dot(&tanh_tail, &tail(&r_row, i)?)?)?;
            let offset = dot(&v_tail, &tail(&rt_row, i)?)?.broadcast_add(&entry(&self.b, i)?)?;
            let (c, k) = (entry(&r_row, i)?, entry(&rt_row, i)?);
            let v_i = solve_tanh_equation("Sylvester inverse", &target, &c, &k, &offset, opts)?;
            let tanh_i = v_i.broadcast_mul(&k)?.add(&offset)?.tanh()?;
            v_tail = Tensor::cat(&[&v_i.unsqueeze(1)?, &v_tail], 1)?;
            tanh_tail = Tensor::cat(&[&tanh_i.unsqueeze(1)?, &tanh_tail], 1)?;
        }
        let z = (y + rows_times(&(v_tail - v_out)?, &self.q.t()?)?)?;
        Ok((z, self.ladj(&tanh_tail)?.neg()?))
    }
}

/// Orthonormalizes the columns of `raw` by modified Gram-Schmidt, run twice ("twice is
/// enough": the second pass restores orthogonality to rounding level even for ill-conditioned
/// `raw`). Differentiable; `Q` of the thin QR factorization up to column signs.
///
/// # Shapes
/// `raw: (D, M)` or `(B, D, M)`, `M <= D` -> same shape.
pub fn orthonormal_columns(raw: &Tensor) -> Result<Tensor> {
    if !matches!(raw.rank(), 2 | 3) || raw.dim(raw.rank() - 1)? > raw.dim(raw.rank() - 2)? {
        return Err(Error::shape("orthonormal_columns", "(D, M) or (B, D, M), M <= D", raw.dims()));
    }
    let (col_axis, row_axis) = (raw.rank() - 1, raw.rank() - 2);
    let floor = tiny(raw.dtype());
    let mut columns: Vec<Tensor> = Vec::new();
    for j in 0..raw.dim(col_axis)? {
        let mut col = raw.narrow(col_axis, j, 1)?; // (D, 1) or (B, D, 1)
        for _ in 0..2 {
            for q in &columns {
                let coef = (q * &col)?.sum_keepdim(row_axis)?;
                col = (col - q.broadcast_mul(&coef)?)?;
            }
            let norm = (col.sqr()?.sum_keepdim(row_axis)? + floor)?.sqrt()?;
            col = col.broadcast_div(&norm)?;
        }
        columns.push(col);
    }
    Ok(Tensor::cat(&columns, col_axis)?)
}

/// How a Sylvester layer parameterizes its `Q`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SylvesterBasis {
    /// `Q` = [`orthonormal_columns`] of a free `(D, M)` matrix (O-SNF; the paper uses an
    /// iterative orthogonalization instead, which is only orthogonal at convergence).
    Orthogonal,
    /// `Q` = the first `M` columns of a product of `reflections` Householder reflections
    /// (H-SNF).
    Householder {
        /// Number of reflections.
        reflections: usize,
    },
    /// `Q = I` (`M = D`): the map is upper triangular (T-SNF).
    Identity,
    /// `Q` = the reversal permutation (`M = D`): lower triangular; T-SNF alternates the two.
    Reversal,
}

/// Hyperparameters of a [`Sylvester`] layer.
#[derive(Debug, Clone, PartialEq)]
pub struct SylvesterConfig {
    /// Data dimension `D`.
    pub features: usize,
    /// Number of columns `M` of `Q` (`1..=D`; `D` for the triangular bases).
    pub m: usize,
    /// How `Q` is parameterized.
    pub basis: SylvesterBasis,
}

impl SylvesterConfig {
    /// Checks the configuration, naming the first invalid value.
    pub fn validate(&self) -> Result<()> {
        let (d, m) = (self.features, self.m);
        crate::ensure_config!(d >= 1, "features", d, "must be at least 1");
        crate::ensure_config!(m >= 1 && m <= d, "m", m, format!("must be in 1..={d} (features)"));
        match self.basis {
            SylvesterBasis::Identity | SylvesterBasis::Reversal => {
                crate::ensure_config!(
                    m == d,
                    "m",
                    m,
                    format!("a triangular Sylvester flow needs m = features = {d}")
                );
            }
            SylvesterBasis::Householder { reflections } => {
                crate::ensure_config!(
                    reflections >= 1,
                    "reflections",
                    reflections,
                    "must be at least 1"
                );
            }
            SylvesterBasis::Orthogonal => {}
        }
        Ok(())
    }
}

/// Sylvester flow layer: `x = z + Q R tanh(R̃ Qᵀ z + b)` in the sampling direction (latent `z`
/// to data `x`), with the constraints of [`SylvesterParams`] and `Q` from the configured
/// [`SylvesterBasis`]; its `forward` (data to latent) solves the triangular system coordinate
/// by coordinate and fails with [`Error::Numerical`] rather than return a residual above
/// tolerance.
///
/// Parameters: `r`, `r_tilde` `(M, M)` (uniform in `±1/sqrt(M)`), `b` `(M,)` (zero, so the
/// start adds no translation: `f(z) - z` vanishes at `Qᵀz = 0`); `q` `(D, M)`
/// (standard normal, orthogonal basis) or `v` `(K, D)` (standard normal, Householder basis).
///
/// # Shapes
/// `x: (B, D)` -> `z: (B, D)`, ladj `(B,)`.
#[derive(Debug, Clone)]
pub struct Sylvester {
    basis: SylvesterBasis,
    /// The raw tensor of `Q`: free matrix, Householder directions, or the fixed permutation.
    q_raw: Tensor,
    r: Tensor,
    r_tilde: Tensor,
    b: Tensor,
    m: usize,
    solve: SolveOptions,
}

impl Sylvester {
    /// A Sylvester layer, with the solver tolerance of the store's dtype.
    pub fn new(params: &Params, config: &SylvesterConfig) -> Result<Self> {
        config.validate()?;
        let (d, m) = (config.features, config.m);
        let (dtype, device) = (params.dtype(), params.device());
        let q_raw = match config.basis {
            SylvesterBasis::Orthogonal => params.param("q", (d, m), Init::Normal { std: 1.0 })?,
            SylvesterBasis::Householder { reflections } => {
                params.param("v", (reflections, d), Init::Normal { std: 1.0 })?
            }
            SylvesterBasis::Identity => Tensor::eye(d, dtype, device)?,
            SylvesterBasis::Reversal => {
                let values: Vec<f64> =
                    (0..d * d).map(|k| if k / d + k % d == d - 1 { 1.0 } else { 0.0 }).collect();
                crate::random::from_f64(values, (d, d).into(), dtype, device)?
            }
        };
        let init = Init::LinearDefault { fan_in: m };
        Ok(Self {
            basis: config.basis,
            q_raw,
            r: params.param("r", (m, m), init)?,
            r_tilde: params.param("r_tilde", (m, m), init)?,
            b: params.param("b", m, Init::Const(0.0))?,
            m,
            solve: SolveOptions::for_dtype(dtype),
        })
    }

    /// Replaces the tolerance of the inverse solve.
    pub fn with_solve_options(mut self, solve: SolveOptions) -> Self {
        self.solve = solve;
        self
    }

    /// The current `Q`, `(D, M)`, with orthonormal columns.
    pub fn q(&self) -> Result<Tensor> {
        match self.basis {
            SylvesterBasis::Orthogonal => orthonormal_columns(&self.q_raw),
            SylvesterBasis::Householder { .. } => householder_columns(&self.q_raw, self.m),
            SylvesterBasis::Identity | SylvesterBasis::Reversal => Ok(self.q_raw.clone()),
        }
    }

    /// The current constrained parameters.
    pub fn params(&self) -> Result<SylvesterParams> {
        SylvesterParams::new(&self.q()?, &self.r, &self.r_tilde, &self.b)
    }
}

impl Bijection for Sylvester {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.params()?.solve(x, &self.solve)
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.params()?.map(z)
    }

    /// With `Q = I`, output `i` depends on inputs `i..D` (both directions are upper
    /// triangular); with the reversal, on inputs `0..=i`.
    fn jacobian_order(&self) -> Option<Vec<usize>> {
        match self.basis {
            SylvesterBasis::Identity => Some((0..self.m).rev().collect()),
            SylvesterBasis::Reversal => Some((0..self.m).collect()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;

    fn max_abs(t: &Tensor) -> Result<f64> {
        Ok(t.abs()?.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    }

    #[test]
    fn every_basis_is_orthonormal() -> Result<()> {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 1);
        for (i, basis) in [
            SylvesterBasis::Orthogonal,
            SylvesterBasis::Householder { reflections: 2 },
            SylvesterBasis::Identity,
            SylvesterBasis::Reversal,
        ]
        .into_iter()
        .enumerate()
        {
            let m = if matches!(basis, SylvesterBasis::Identity | SylvesterBasis::Reversal) {
                4
            } else {
                3
            };
            let layer =
                Sylvester::new(&store.root().pp(i), &SylvesterConfig { features: 4, m, basis })?;
            let q = layer.q()?;
            assert_eq!(q.dims(), [4, m]);
            let err = max_abs(&(q.t()?.matmul(&q)? - Tensor::eye(m, DType::F64, &Device::Cpu)?)?)?;
            assert!(err < 1e-13, "{basis:?}: {err}");
        }
        // Nearly dependent columns still come out orthonormal (the second pass).
        let raw = Tensor::new(&[[1f32, 1.0], [1e-4, 0.0], [0.0, 1e-4]], &Device::Cpu)?;
        let q = orthonormal_columns(&raw)?;
        let err = max_abs(&(q.t()?.matmul(&q)? - Tensor::eye(2, DType::F32, &Device::Cpu)?)?)?;
        assert!(err < 1e-6, "{err}");
        Ok(())
    }

    #[test]
    fn the_constraint_keeps_the_diagonal_product_above_minus_one() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F64, DType::F32] {
            let q = Tensor::eye(2, dtype, &dev)?;
            let r = Tensor::new(&[[-1e3f64, 5.0], [7.0, 40.0]], &dev)?.to_dtype(dtype)?;
            let rt = Tensor::new(&[[1e3f64, -2.0], [9.0, -40.0]], &dev)?.to_dtype(dtype)?;
            let b = Tensor::zeros(2, dtype, &dev)?;
            let p = SylvesterParams::new(&q, &r, &rt, &b)?;
            let prod = p.diagonal_product().to_dtype(DType::F64)?.to_vec1::<f64>()?;
            assert!(prod.iter().all(|&v| v > -1.0 && v < 1.0), "{dtype:?}: {prod:?}");
            // Strictly upper entries pass through, lower ones are dropped.
            let r = p.r().to_dtype(DType::F64)?.to_vec2::<f64>()?;
            assert_eq!((r[0][1], r[1][0]), (5.0, 0.0));
            // The map is still invertible at tanh'(a) = 1, where 1 + p is smallest.
            let ladj = p.ladj(&Tensor::zeros((1, 2), dtype, &dev)?)?;
            assert!(ladj.to_dtype(DType::F64)?.to_vec1::<f64>()?[0].is_finite());
        }
        Ok(())
    }

    #[test]
    fn batched_parameters_round_trip() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = crate::random::rng_from_seed(5);
        let mut normal =
            |shape: &[usize]| crate::random::standard_normal(shape, DType::F64, &dev, &mut rng);
        let q = orthonormal_columns(&normal(&[3, 4, 2])?)?;
        let (r, rt, b, z) =
            (normal(&[3, 2, 2])?, normal(&[3, 2, 2])?, normal(&[3, 2])?, normal(&[3, 4])?);
        let p = SylvesterParams::new(&q, &r, &rt, &b)?;
        let (y, ladj) = p.map(&z)?;
        let (back, inv) = p.solve(&y, &SolveOptions::for_dtype(DType::F64))?;
        assert!(max_abs(&(back - &z)?)? < 1e-10);
        assert!(max_abs(&(ladj + inv)?)? < 1e-10);
        // Row 1 alone gives the same output.
        let one = SylvesterParams::new(&q.get(1)?, &r.get(1)?, &rt.get(1)?, &b.get(1)?)?;
        let (y1, _) = one.map(&z.narrow(0, 1, 1)?)?;
        assert!(max_abs(&(y1 - y.narrow(0, 1, 1)?)?)? < 1e-14);
        Ok(())
    }

    #[test]
    fn gradients_through_the_solve_are_the_implicit_ones() -> Result<()> {
        for (i, basis) in
            [SylvesterBasis::Orthogonal, SylvesterBasis::Identity].into_iter().enumerate()
        {
            let store = ParamStore::new(DType::F64, &Device::Cpu, 4);
            let layer =
                Sylvester::new(&store.root(), &SylvesterConfig { features: 3, m: 2 + i, basis })?;
            store.perturb(0.8, 2)?;
            let x = Tensor::new(&[[0.5f64, -1.0, 2.0], [-0.3, 0.1, 0.7]], &Device::Cpu)?;
            crate::testing::assert_solved_gradients_match(&store, &layer, &x)?;
        }
        Ok(())
    }

    #[test]
    fn an_unconverged_inverse_is_an_error() -> Result<()> {
        let store = ParamStore::new(DType::F32, &Device::Cpu, 4);
        let config = SylvesterConfig { features: 3, m: 3, basis: SylvesterBasis::Identity };
        let strict = SolveOptions { max_iter: 0, ..SolveOptions::for_dtype(DType::F32) };
        let layer = Sylvester::new(&store.root(), &config)?.with_solve_options(strict);
        store.perturb(1.0, 2)?;
        let x = Tensor::new(&[[0.5f32, -1.0, 2.0]], &Device::Cpu)?;
        let err = layer.forward(&x, None).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("Sylvester inverse") && err.contains("did not converge"), "{err}");
        Ok(())
    }

    #[test]
    fn rejects_bad_configurations() {
        let store = ParamStore::new(DType::F64, &Device::Cpu, 1);
        for (m, basis) in [
            (5, SylvesterBasis::Orthogonal),
            (0, SylvesterBasis::Orthogonal),
            (3, SylvesterBasis::Identity),
            (4, SylvesterBasis::Householder { reflections: 0 }),
        ] {
            let config = SylvesterConfig { features: 4, m, basis };
            assert!(matches!(
                Sylvester::new(&store.root(), &config),
                Err(Error::InvalidConfig { .. })
            ));
        }
    }
}
