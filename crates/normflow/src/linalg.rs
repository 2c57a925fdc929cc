//! Small dense linear algebra that candle lacks.
//!
//! - [`log_abs_det`]: a host-side `f64` routine for the checker (not differentiable);
//! - [`solve_lower_triangular`], [`solve_upper_triangular`]: triangular solves on tensors, built
//!   from candle ops so that gradients flow through them (used by [`crate::bijections::LuLinear`]).

use candle_core::Tensor;

use crate::{Error, Result};

/// `log|det A|` of a row-major `n x n` matrix, by LU factorization with partial pivoting.
///
/// Returns `-inf` for a singular matrix.
pub fn log_abs_det(a: &[f64], n: usize) -> f64 {
    assert_eq!(a.len(), n * n, "log_abs_det: matrix must be n x n");
    let mut m = a.to_vec();
    let mut total = 0.0;
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| m[i * n + col].abs().total_cmp(&m[j * n + col].abs()))
            .unwrap_or(col);
        let p = m[pivot * n + col];
        if p == 0.0 {
            return f64::NEG_INFINITY;
        }
        if pivot != col {
            for k in 0..n {
                m.swap(pivot * n + k, col * n + k);
            }
        }
        total += p.abs().ln();
        for row in col + 1..n {
            let factor = m[row * n + col] / p;
            if factor != 0.0 {
                for k in col..n {
                    m[row * n + k] -= factor * m[col * n + k];
                }
            }
        }
    }
    total
}

/// Which triangle of the matrix a solve reads.
#[derive(Clone, Copy)]
enum Triangle {
    Lower,
    Upper,
}

/// Solves `A X = B` for `X`, with `A` lower triangular: only the entries on and below the
/// diagonal are read (only those strictly below when `unit_diagonal`, which takes the diagonal
/// as ones).
///
/// Differentiable in both `A` and `B`: the solve is block forward substitution written with
/// candle ops (`A = [[A11, 0], [A21, A22]]` gives `X1 = A11^{-1} B1`,
/// `X2 = A22^{-1} (B2 - A21 X1)`, recursively), about `2n` small matmuls deep.
/// A zero on the diagonal gives non-finite entries, as the exact answer does not exist.
///
/// # Shapes
/// `a: (n, n)`, `b: (n, k)` -> `(n, k)`, in the dtype and on the device of the inputs.
pub fn solve_lower_triangular(a: &Tensor, b: &Tensor, unit_diagonal: bool) -> Result<Tensor> {
    check_solve_shapes(a, b, "solve_lower_triangular")?;
    solve_blocks(a, b, unit_diagonal, Triangle::Lower)
}

/// Solves `A X = B` for `X`, with `A` upper triangular: only the entries on and above the
/// diagonal are read (only those strictly above when `unit_diagonal`).
///
/// Differentiable, by block back substitution; see [`solve_lower_triangular`].
///
/// # Shapes
/// `a: (n, n)`, `b: (n, k)` -> `(n, k)`.
pub fn solve_upper_triangular(a: &Tensor, b: &Tensor, unit_diagonal: bool) -> Result<Tensor> {
    check_solve_shapes(a, b, "solve_upper_triangular")?;
    solve_blocks(a, b, unit_diagonal, Triangle::Upper)
}

fn check_solve_shapes(a: &Tensor, b: &Tensor, what: &str) -> Result<()> {
    let n = match a.dims() {
        [n, m] if n == m => *n,
        other => return Err(Error::shape(format!("{what}: matrix"), "(n, n)", other)),
    };
    match b.dims() {
        [rows, _] if *rows == n => Ok(()),
        other => Err(Error::shape(format!("{what}: right-hand side"), format!("({n}, k)"), other)),
    }
}

fn block(a: &Tensor, rows: (usize, usize), cols: (usize, usize)) -> Result<Tensor> {
    Ok(a.narrow(0, rows.0, rows.1)?.narrow(1, cols.0, cols.1)?.contiguous()?)
}

fn solve_blocks(a: &Tensor, b: &Tensor, unit: bool, triangle: Triangle) -> Result<Tensor> {
    let n = a.dim(0)?;
    if n == 0 {
        return Ok(b.clone());
    }
    if n == 1 {
        return Ok(if unit { b.clone() } else { b.broadcast_div(a)? });
    }
    let (n1, n2) = (n / 2, n - n / 2);
    let a11 = block(a, (0, n1), (0, n1))?;
    let a22 = block(a, (n1, n2), (n1, n2))?;
    let b1 = b.narrow(0, 0, n1)?;
    let b2 = b.narrow(0, n1, n2)?;
    let (x1, x2) = match triangle {
        Triangle::Lower => {
            let x1 = solve_blocks(&a11, &b1, unit, triangle)?;
            let rhs = (b2 - block(a, (n1, n2), (0, n1))?.matmul(&x1)?)?;
            (x1, solve_blocks(&a22, &rhs, unit, triangle)?)
        }
        Triangle::Upper => {
            let x2 = solve_blocks(&a22, &b2, unit, triangle)?;
            let rhs = (b1 - block(a, (0, n1), (n1, n2))?.matmul(&x2)?)?;
            (solve_blocks(&a11, &rhs, unit, triangle)?, x2)
        }
    };
    Ok(Tensor::cat(&[x1, x2], 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_abs_det_matches_closed_forms() {
        // det [[2, 1], [4, 3]] = 2; a permutation needs pivoting; a singular one is -inf.
        assert!((log_abs_det(&[2.0, 1.0, 4.0, 3.0], 2) - 2f64.ln()).abs() < 1e-12);
        assert!((log_abs_det(&[0.0, 3.0, 2.0, 0.0], 2) - 6f64.ln()).abs() < 1e-12);
        assert_eq!(log_abs_det(&[1.0, 2.0, 2.0, 4.0], 2), f64::NEG_INFINITY);
    }

    fn tensor(values: &[f64], rows: usize, cols: usize) -> Result<Tensor> {
        Ok(Tensor::from_vec(values.to_vec(), (rows, cols), &candle_core::Device::Cpu)?)
    }

    fn host(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.flatten_all()?.to_vec1::<f64>()?)
    }

    fn assert_close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn triangular_solves_recover_a_known_solution() -> Result<()> {
        // A 5 x 5 system (odd, so the blocks are uneven) with junk in the unread triangle:
        // the solves must ignore it.
        let n = 5;
        let mut lower = vec![0.0; n * n];
        let mut upper = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                let v = 0.3 * (i as f64) - 0.2 * (j as f64) + 0.1;
                if i > j {
                    lower[i * n + j] = v;
                    upper[i * n + j] = 99.0;
                } else if i < j {
                    upper[i * n + j] = v;
                    lower[i * n + j] = -77.0;
                } else {
                    lower[i * n + j] = 1.5 + i as f64;
                    upper[i * n + j] = -2.0 - i as f64;
                }
            }
        }
        let x: Vec<f64> = (0..n * 2).map(|i| (i as f64 * 0.7).sin()).collect();
        let x_t = tensor(&x, n, 2)?;
        let mask = |lower_side: bool, unit: bool| -> Result<Tensor> {
            let m = if lower_side {
                Tensor::tril2(n, candle_core::DType::F64, &candle_core::Device::Cpu)?
            } else {
                Tensor::tril2(n, candle_core::DType::F64, &candle_core::Device::Cpu)?.t()?
            };
            let eye = Tensor::eye(n, candle_core::DType::F64, &candle_core::Device::Cpu)?;
            Ok(if unit { (m - &eye)? } else { m })
        };
        for unit in [false, true] {
            let eye = Tensor::eye(n, candle_core::DType::F64, &candle_core::Device::Cpu)?;
            let with_diag =
                |t: Tensor| -> Result<Tensor> { Ok(if unit { (t + &eye)? } else { t }) };
            let l = tensor(&lower, n, n)?;
            let l_true = with_diag((&l * mask(true, unit)?)?)?;
            let b = l_true.matmul(&x_t)?;
            assert_close(&host(&solve_lower_triangular(&l, &b, unit)?)?, &x, 1e-12);
            let u = tensor(&upper, n, n)?;
            let u_true = with_diag((&u * mask(false, unit)?)?)?;
            let b = u_true.matmul(&x_t)?;
            assert_close(&host(&solve_upper_triangular(&u, &b, unit)?)?, &x, 1e-12);
        }
        Ok(())
    }

    #[test]
    fn triangular_solve_is_differentiable() -> Result<()> {
        // x = A^{-1} b with A = [[2, 0], [1, 4]]: d sum(x) / db = A^{-T} 1 = [3/8, 1/4], and
        // d sum(x) / dA = -(A^{-T} 1) x^T, with x = A^{-1} [1, 1] = [1/2, 1/8].
        let a = candle_core::Var::from_tensor(&tensor(&[2.0, 0.0, 1.0, 4.0], 2, 2)?)?;
        let b = candle_core::Var::from_tensor(&tensor(&[1.0, 1.0], 2, 1)?)?;
        let x = solve_lower_triangular(a.as_tensor(), b.as_tensor(), false)?;
        assert_close(&host(&x)?, &[0.5, 0.125], 1e-12);
        let grads = x.sum_all()?.backward()?;
        let gb = grads.get(b.as_tensor()).map(host).transpose()?.unwrap_or_default();
        assert_close(&gb, &[0.375, 0.25], 1e-12);
        let ga = grads.get(a.as_tensor()).map(host).transpose()?.unwrap_or_default();
        // Only the lower triangle is read, so the upper entry gets no gradient.
        assert_close(&ga, &[-0.375 * 0.5, 0.0, -0.25 * 0.5, -0.25 * 0.125], 1e-12);
        Ok(())
    }

    #[test]
    fn triangular_solve_rejects_bad_shapes() -> Result<()> {
        let a = tensor(&[1.0; 6], 2, 3)?;
        let b = tensor(&[1.0; 2], 2, 1)?;
        assert!(solve_lower_triangular(&a, &b, false).is_err());
        let a = tensor(&[1.0; 4], 2, 2)?;
        let b = tensor(&[1.0; 3], 3, 1)?;
        assert!(solve_upper_triangular(&a, &b, false).is_err());
        Ok(())
    }
}
