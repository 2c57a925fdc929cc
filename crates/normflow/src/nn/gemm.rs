//! A bounds-checked, safe front to the gemm crate's matrix product, for the fused layers.
//!
//! candle's own matmul allocates its output and takes whole tensors; the fused layers
//! ([`super::dense`]) multiply blocks of one buffer into blocks of another, which needs the gemm
//! crate's strided interface. That interface is `unsafe` (raw pointers and strides), so this
//! module is the crate's only `unsafe` code: every call checks that each strided view lies inside
//! its slice and that the destination's elements are distinct, then calls gemm. The borrow
//! checker already keeps the destination (`&mut`) apart from the two operands (`&`).
#![allow(unsafe_code)]

use candle_core::{bail, Layout, Result};
/// gemm's threading choice, re-exported for callers of [`matmul`].
pub use gemm::Parallelism;

/// The float types the fused kernels run on (f32, f64), with the few scalar operations they use.
pub trait Real:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::AddAssign
    + 'static
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// Conversion from f64 (rounding for f32).
    fn from_f64(v: f64) -> Self;
    /// Conversion to f64.
    fn to_f64(self) -> f64;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Exponential.
    fn exp(self) -> Self;
}

impl Real for f32 {
    #[inline]
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    #[inline]
    fn exp(self) -> Self {
        f32::exp(self)
    }
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    #[inline]
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    #[inline]
    fn exp(self) -> Self {
        f64::exp(self)
    }
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
}

/// The elements of a contiguous tensor's storage, as a custom op's `cpu_fwd` receives them;
/// `op` names the op in the error for a strided layout.
pub(crate) fn contiguous<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: expected a contiguous tensor"),
    }
}

/// A strided `rows x cols` matrix inside a slice: element `(i, j)` is at
/// `offset + i * row_stride + j * col_stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between rows.
    pub row_stride: usize,
    /// Distance between columns.
    pub col_stride: usize,
    /// Index of element `(0, 0)`.
    pub offset: usize,
}

impl View {
    /// Rows `r0..r0 + rows` and columns `c0..c0 + cols` of a row-major matrix with `width`
    /// columns.
    pub fn row_major(width: usize, r0: usize, rows: usize, c0: usize, cols: usize) -> Self {
        Self { rows, cols, row_stride: width, col_stride: 1, offset: r0 * width + c0 }
    }

    /// The transpose (no data moves).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            offset: self.offset,
        }
    }

    fn is_empty(&self) -> bool {
        self.rows == 0 || self.cols == 0
    }

    /// Whether every element lies inside a slice of `len` elements.
    fn fits(&self, len: usize) -> bool {
        if self.is_empty() {
            return self.offset <= len;
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .and_then(|r| (self.cols - 1).checked_mul(self.col_stride).map(|c| (r, c)))
            .and_then(|(r, c)| r.checked_add(c))
            .and_then(|rc| rc.checked_add(self.offset));
        last.is_some_and(|last| last < len)
    }

    /// Whether distinct `(i, j)` are distinct elements (needed for a destination that threads
    /// write in parallel).
    fn is_injective(&self) -> bool {
        let (inner, inner_n, outer, outer_n) = if self.col_stride <= self.row_stride {
            (self.col_stride, self.cols, self.row_stride, self.rows)
        } else {
            (self.row_stride, self.rows, self.col_stride, self.cols)
        };
        (inner_n <= 1 || inner >= 1) && (outer_n <= 1 || outer >= inner.max(1) * inner_n.max(1))
    }
}

/// `dst = a b` (or `dst += a b` when `accumulate`), with `a: m x k`, `b: k x n`, `dst: m x n`
/// strided views of the three slices. Errors on mismatched shapes or views outside their slices.
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Real>(
    dst: &mut [T],
    d: View,
    accumulate: bool,
    a: &[T],
    av: View,
    b: &[T],
    bv: View,
    parallelism: Parallelism,
) -> Result<()> {
    if av.rows != d.rows || bv.cols != d.cols || av.cols != bv.rows {
        bail!("gemm: shapes {av:?} x {bv:?} -> {d:?} do not match");
    }
    if !d.fits(dst.len()) || !av.fits(a.len()) || !bv.fits(b.len()) {
        bail!("gemm: a view lies outside its buffer");
    }
    if !d.is_injective() {
        bail!("gemm: the destination view {d:?} repeats elements");
    }
    if d.is_empty() {
        return Ok(());
    }
    if av.cols == 0 {
        if !accumulate {
            for i in 0..d.rows {
                for j in 0..d.cols {
                    dst[d.offset + i * d.row_stride + j * d.col_stride] = T::ZERO;
                }
            }
        }
        return Ok(());
    }
    let stride = |s: usize| -> Result<isize> {
        isize::try_from(s).or_else(|_| bail!("gemm: stride {s} too large"))
    };
    // SAFETY: every view was checked to lie inside its slice (`fits`), the destination's
    // elements are pairwise distinct (`is_injective`), and `dst` is a unique borrow, disjoint
    // from `a` and `b`. gemm reads `a`, `b` (and `dst` when `read_dst`) and writes `dst` only at
    // the positions these views describe.
    unsafe {
        gemm::gemm(
            d.rows,
            d.cols,
            av.cols,
            dst.as_mut_ptr().add(d.offset),
            stride(d.col_stride)?,
            stride(d.row_stride)?,
            accumulate,
            a.as_ptr().add(av.offset),
            stride(av.col_stride)?,
            stride(av.row_stride)?,
            b.as_ptr().add(bv.offset),
            stride(bv.col_stride)?,
            stride(bv.row_stride)?,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], av: View, b: &[f64], bv: View) -> Vec<f64> {
        let mut out = vec![0.0; av.rows * bv.cols];
        for i in 0..av.rows {
            for j in 0..bv.cols {
                for p in 0..av.cols {
                    out[i * bv.cols + j] += a[av.offset + i * av.row_stride + p * av.col_stride]
                        * b[bv.offset + p * bv.row_stride + j * bv.col_stride];
                }
            }
        }
        out
    }

    #[test]
    fn strided_blocks_match_the_naive_product_and_bad_views_are_errors() -> Result<()> {
        let a: Vec<f64> = (0..60).map(|v| (v as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..60).map(|v| (v as f64 * 0.11).cos()).collect();
        // a: rows 1..4, cols 2..7 of a 6x10 matrix; b: the transpose of a 5x3 block of a 10x6.
        let av = View::row_major(10, 1, 3, 2, 5);
        let bv = View::row_major(6, 2, 4, 1, 5).t();
        let mut dst = vec![7.0; 3 * 8];
        let dv = View::row_major(8, 0, 3, 2, 4);
        matmul(&mut dst, dv, false, &a, av, &b, bv, Parallelism::None)?;
        let expected = naive(&a, av, &b, bv);
        for i in 0..3 {
            for j in 0..8 {
                let got = dst[i * 8 + j];
                if (2..6).contains(&j) {
                    assert!((got - expected[i * 4 + j - 2]).abs() < 1e-12);
                } else {
                    assert_eq!(got, 7.0, "outside the destination block");
                }
            }
        }
        let before = dst.clone();
        matmul(&mut dst, dv, true, &a, av, &b, bv, Parallelism::None)?;
        assert!((dst[2] - 2.0 * before[2]).abs() < 1e-12);
        let too_far = View::row_major(10, 4, 3, 2, 5);
        assert!(matmul(&mut dst, dv, false, &a, too_far, &b, bv, Parallelism::None).is_err());
        let repeating = View { row_stride: 0, ..dv };
        assert!(matmul(&mut dst, repeating, false, &a, av, &b, bv, Parallelism::None).is_err());
        let wrong = View::row_major(10, 1, 3, 2, 4);
        assert!(matmul(&mut dst, dv, false, &a, wrong, &b, bv, Parallelism::None).is_err());
        Ok(())
    }
}
