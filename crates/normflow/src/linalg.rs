//! Small dense linear algebra that candle lacks.
//!
//! Host-side `f64` routines used by the checker and by layers that need a factorization once
//! (not per batch).

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
}
