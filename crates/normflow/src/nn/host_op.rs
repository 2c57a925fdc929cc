//! The f32 / f64 dispatch of the library's custom CPU ops.
//!
//! A candle custom op receives untyped storages; each of normflow's kernels is written once,
//! generic over [`Real`], and these helpers check that the inputs share one float dtype and are
//! contiguous, run the kernel on the slices and wrap its result. (Before, every op spelled out
//! the same two-armed match.)

use candle_core::{CpuStorage, Layout, Result};

use super::gemm::{contiguous, Real};

/// A kernel on one contiguous input.
pub(crate) trait Kernel1 {
    /// The output, flat.
    fn run<T: Real>(&self, a: &[T]) -> Result<Vec<T>>;
}

/// A kernel on two contiguous inputs of one dtype.
pub(crate) trait Kernel2 {
    /// The output, flat.
    fn run<T: Real>(&self, a: &[T], b: &[T]) -> Result<Vec<T>>;
}

/// A kernel on three contiguous inputs of one dtype.
pub(crate) trait Kernel3 {
    /// The output, flat.
    fn run<T: Real>(&self, a: &[T], b: &[T], c: &[T]) -> Result<Vec<T>>;
}

fn wrong_dtype(op: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{op}: f32 or f64 tensors of one dtype"))
}

/// Runs `kernel` on an f32 or f64 storage; `op` names the op in errors.
pub(crate) fn run1(
    op: &str,
    kernel: &impl Kernel1,
    s: &CpuStorage,
    l: &Layout,
) -> Result<CpuStorage> {
    Ok(match s {
        CpuStorage::F32(a) => CpuStorage::F32(kernel.run(contiguous(a, l, op)?)?),
        CpuStorage::F64(a) => CpuStorage::F64(kernel.run(contiguous(a, l, op)?)?),
        _ => return Err(wrong_dtype(op)),
    })
}

/// Runs `kernel` on two f32 or two f64 storages; `op` names the op in errors.
pub(crate) fn run2(
    op: &str,
    kernel: &impl Kernel2,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
) -> Result<CpuStorage> {
    Ok(match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => {
            CpuStorage::F32(kernel.run(contiguous(a, l1, op)?, contiguous(b, l2, op)?)?)
        }
        (CpuStorage::F64(a), CpuStorage::F64(b)) => {
            CpuStorage::F64(kernel.run(contiguous(a, l1, op)?, contiguous(b, l2, op)?)?)
        }
        _ => return Err(wrong_dtype(op)),
    })
}

/// Runs `kernel` on three f32 or three f64 storages; `op` names the op in errors.
pub(crate) fn run3(
    op: &str,
    kernel: &impl Kernel3,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
) -> Result<CpuStorage> {
    Ok(match (s1, s2, s3) {
        (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => CpuStorage::F32(
            kernel.run(contiguous(a, l1, op)?, contiguous(b, l2, op)?, contiguous(c, l3, op)?)?,
        ),
        (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => CpuStorage::F64(
            kernel.run(contiguous(a, l1, op)?, contiguous(b, l2, op)?, contiguous(c, l3, op)?)?,
        ),
        _ => return Err(wrong_dtype(op)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Shape;

    struct Sum;
    impl Kernel2 for Sum {
        fn run<T: Real>(&self, a: &[T], b: &[T]) -> Result<Vec<T>> {
            Ok(a.iter().zip(b).map(|(&x, &y)| x + y).collect())
        }
    }

    #[test]
    fn dispatch_runs_each_dtype_and_rejects_mixed_inputs() {
        let l = Layout::contiguous(Shape::from(2));
        let f32s = CpuStorage::F32(vec![1.0, 2.0]);
        let f64s = CpuStorage::F64(vec![1.0, 2.0]);
        match run2("sum", &Sum, (&f32s, &l), (&f32s, &l)) {
            Ok(CpuStorage::F32(v)) => assert_eq!(v, [2.0, 4.0]),
            other => panic!("{other:?}"),
        }
        match run2("sum", &Sum, (&f64s, &l), (&f64s, &l)) {
            Ok(CpuStorage::F64(v)) => assert_eq!(v, [2.0, 4.0]),
            other => panic!("{other:?}"),
        }
        let mixed = run2("sum", &Sum, (&f32s, &l), (&f64s, &l)).unwrap_err();
        assert!(mixed.to_string().contains("sum: f32 or f64"), "{mixed}");
    }
}
