//! One candle op per dense layer, `y = act(x W'^T + b')`, with a hand-written backward that
//! returns `dx`, `dW` and `db` at once, and MADE's masked layers computed block by block.
//!
//! # Why
//! Composed from candle ops, a masked layer costs a mask multiply, a matmul, a bias pass and an
//! activation pass forward, and backward a mask multiply, two matmuls, a strided column sum and
//! two activation passes, each allocating its result. Here forward is one gemm per block and one
//! bias + activation pass; backward one ReLU pass (`g ⊙ [y > 0]`), the products `dx`, `dW` and the
//! column sum `db`.
//!
//! # Masked layers as blocks
//! In a MADE layer unit `o` is connected to unit `i` below iff `deg(o) >= deg(i)` (hidden) or
//! `deg(o) > deg(i)` (output). With both layers' units sorted by degree, the units an output unit
//! reads are a *prefix* of the sorted inputs, so the masked product splits into row groups, each a
//! dense product with a prefix of the inputs, and the zero blocks above the diagonal are (mostly) never
//! multiplied: exact, and with `D - 1` equally used degrees only about `(1 + 1/(D-1)) / 2` of the
//! dense arithmetic on a hidden layer. Groups are tiles of [`TILE_ROWS`] rows, so that gemm
//! runs on whole register blocks; masked entries inside a group are zero in the gathered
//! weights, so the grouping never changes the result. The layer's activations live in this
//! sorted order inside the network ([`LayerPlan::rows`]); the parameters keep their layout.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::fused::FusedActivation;
use rayon::prelude::*;

use super::gemm::{contiguous, matmul, Parallelism, Real, View};

/// Rows per group of a masked layer's blocked product (measured on the 512 x 256 x 256 hidden
/// layer; see docs/PERFORMANCE.md).
pub const TILE_ROWS: usize = 32;

/// Group prefixes are rounded up to a multiple of this (one AVX-512 vector of f32).
pub const PREFIX_ALIGN: usize = 16;

/// A run of sorted output rows `start..end` that reads the first `prefix` sorted inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Group {
    start: usize,
    end: usize,
    prefix: usize,
}

/// The structure of a (possibly masked) dense layer with weights `W: (outputs, inputs)`:
/// the sorted order of its outputs and inputs, the mask, and the row groups of the blocked
/// product.
///
/// In the sorted layout, `W'[a, c] = W[rows[a], cols[c]] * M[rows[a], cols[c]]`, `b'[a] =
/// b[rows[a]]`; the op takes its input in sorted order and returns its output in sorted order.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    outputs: usize,
    inputs: usize,
    /// `rows[a]`: the weight row at sorted position `a`; `None` for the identity.
    rows: Option<Vec<usize>>,
    /// `cols[c]`: the weight column at sorted input position `c`; `None` for the identity.
    cols: Option<Vec<usize>>,
    /// The mask in sorted layout, row-major `(outputs, inputs)`; `None` for a dense layer.
    mask: Option<Vec<bool>>,
    groups: Vec<Group>,
    /// The input prefix each sorted output row reads (empty for a dense layer).
    prefixes: Vec<usize>,
    /// Degree of every sorted output row (empty for a dense layer).
    degrees: Vec<usize>,
}

impl LayerPlan {
    /// A dense layer: no reordering, one group.
    pub fn dense(outputs: usize, inputs: usize) -> Self {
        Self {
            outputs,
            inputs,
            rows: None,
            cols: None,
            mask: None,
            groups: vec![Group { start: 0, end: outputs, prefix: inputs }],
            prefixes: Vec::new(),
            degrees: Vec::new(),
        }
    }

    /// A masked layer: output `o` reads input `i` iff `connected(out_deg[o], in_deg[i])`, a
    /// relation monotone in the input degree (if `o` reads degree `d` it reads every lower one),
    /// as MADE's `>=` and `>` are. Rows and columns are sorted by degree (stably).
    pub fn masked(
        out_deg: &[usize],
        in_deg: &[usize],
        connected: impl Fn(usize, usize) -> bool,
    ) -> Self {
        let sort = |deg: &[usize]| -> Vec<usize> {
            let mut idx: Vec<usize> = (0..deg.len()).collect();
            idx.sort_by_key(|&i| deg[i]);
            idx
        };
        let (rows, cols) = (sort(out_deg), sort(in_deg));
        let (n_out, n_in) = (out_deg.len(), in_deg.len());
        let mut mask = vec![false; n_out * n_in];
        let mut prefixes = Vec::with_capacity(n_out);
        for (a, &r) in rows.iter().enumerate() {
            let mut prefix = 0;
            for (c, &col) in cols.iter().enumerate() {
                if connected(out_deg[r], in_deg[col]) {
                    mask[a * n_in + c] = true;
                    // The prefix covers every connected input even if the relation were not
                    // monotone: the masked weights inside it are zero, so the result stays exact.
                    prefix = c + 1;
                }
            }
            prefixes.push(prefix);
        }
        let degrees = rows.iter().map(|&r| out_deg[r]).collect();
        let unless_identity = |idx: Vec<usize>| (!is_identity(&idx)).then_some(idx);
        Self {
            outputs: n_out,
            inputs: n_in,
            rows: unless_identity(rows),
            cols: unless_identity(cols),
            mask: Some(mask),
            groups: merge_groups(&prefixes, TILE_ROWS, n_in),
            prefixes,
            degrees,
        }
    }

    /// The same plan with groups of another number of rows (see [`TILE_ROWS`]; 0 makes one
    /// group per distinct prefix). A dense plan is returned unchanged.
    pub fn with_tile_rows(mut self, rows: usize) -> Self {
        if self.mask.is_some() {
            self.groups = merge_groups(&self.prefixes, rows, self.inputs);
        }
        self
    }

    /// Number of outputs.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Number of inputs.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// `rows()[a]`: the weight row (output unit) at sorted position `a`.
    pub fn rows(&self) -> Cow<'_, [usize]> {
        match &self.rows {
            Some(r) => Cow::Borrowed(r),
            None => Cow::Owned((0..self.outputs).collect()),
        }
    }

    /// `cols()[c]`: the weight column (input unit) at sorted input position `c`.
    pub fn cols(&self) -> Cow<'_, [usize]> {
        match &self.cols {
            Some(c) => Cow::Borrowed(c),
            None => Cow::Owned((0..self.inputs).collect()),
        }
    }

    /// Degree of every sorted output row (empty for a dense layer).
    #[cfg(test)]
    pub(crate) fn degrees(&self) -> &[usize] {
        &self.degrees
    }

    /// Whether the blocked product reorders rows or columns (gathers the weights and scatters
    /// their gradient) rather than using the parameters in their own layout.
    pub(crate) fn reorders(&self) -> bool {
        self.rows.is_some() || self.cols.is_some()
    }

    /// Multiply-adds per batch row of the blocked product (the dense layer: `outputs * inputs`).
    pub fn multiply_adds(&self) -> usize {
        self.groups.iter().map(|g| (g.end - g.start) * g.prefix).sum()
    }

    /// Sorted output rows `start..end` of degree `degree`, and the input prefix they read
    /// (unmerged: for the degree-by-degree passes of MAF's inverse).
    pub(crate) fn degree_block(&self, degree: usize) -> Option<(usize, usize, usize)> {
        let start = self.degrees.partition_point(|&d| d < degree);
        let end = self.degrees.partition_point(|&d| d <= degree);
        if start == end {
            return None;
        }
        let mask = self.mask.as_ref()?;
        let prefix = (start..end)
            .filter_map(|a| {
                (0..self.inputs).rev().find(|&c| mask[a * self.inputs + c]).map(|c| c + 1)
            })
            .max()
            .unwrap_or(0);
        Some((start, end, prefix))
    }

    /// `W'` (sorted, masked), borrowed when the layer is dense. Entries past each row group's
    /// prefix are never read, so they are set to zero rather than gathered. Every entry is
    /// written once, in order (no zero-fill first: with freed memory reused, that memset cost
    /// as much as the gather). When the units are already in degree order (`rows`, `cols` the
    /// identity) each row is a contiguous masked copy, which vectorizes.
    pub(crate) fn sorted_weights<'a, T: Real>(&self, w: &'a [T]) -> Cow<'a, [T]> {
        let Some(mask) = &self.mask else {
            return Cow::Borrowed(w);
        };
        let n = self.inputs;
        let keep_or_zero = |(&v, &m): (&T, &bool)| if m { v } else { T::ZERO };
        let mut out = Vec::with_capacity(self.outputs * n);
        // The groups cover the sorted rows 0..outputs in order.
        for grp in &self.groups {
            for a in grp.start..grp.end {
                let r = self.rows.as_ref().map_or(a, |rows| rows[a]);
                let src = &w[r * n..(r + 1) * n];
                let keep = &mask[a * n..a * n + grp.prefix];
                match &self.cols {
                    Some(cols) => out.extend(
                        cols[..grp.prefix].iter().map(|&col| &src[col]).zip(keep).map(keep_or_zero),
                    ),
                    None => out.extend(src[..grp.prefix].iter().zip(keep).map(keep_or_zero)),
                }
                out.extend(std::iter::repeat_n(T::ZERO, n - grp.prefix));
            }
        }
        debug_assert_eq!(out.len(), self.outputs * n);
        Cow::Owned(out)
    }

    /// `b'` (sorted).
    pub(crate) fn sorted_bias<'a, T: Real>(&self, b: &'a [T]) -> Cow<'a, [T]> {
        match &self.rows {
            Some(rows) => Cow::Owned(rows.iter().map(|&r| b[r]).collect()),
            None => Cow::Borrowed(b),
        }
    }

    /// `y' (B, outputs) = act(x' W'^T + b')` for a sorted input `x' (B, inputs)`; also returns
    /// the gathered `W'` of a masked layer, for the backward pass to reuse.
    pub(crate) fn forward<T: Real>(
        &self,
        x: &[T],
        batch: usize,
        w: &[T],
        b: &[T],
        act: FusedActivation,
    ) -> candle_core::Result<(Vec<T>, Option<Vec<T>>)> {
        let (ws, bs) = (self.sorted_weights(w), self.sorted_bias(b));
        let (n_out, n_in) = (self.outputs, self.inputs);
        let mut y = vec![T::ZERO; batch * n_out];
        // Threads take whole slices of the batch: one fork per layer, each gemm on one thread.
        let rows = rows_per_piece(batch);
        y.par_chunks_mut(rows * n_out.max(1)).zip(x.par_chunks(rows * n_in.max(1))).try_for_each(
            |(y, x)| -> candle_core::Result<()> {
                let batch = y.len() / n_out.max(1);
                for g in &self.groups {
                    let width = g.end - g.start;
                    matmul(
                        y,
                        View::row_major(n_out, 0, batch, g.start, width),
                        false,
                        x,
                        View::row_major(n_in, 0, batch, 0, g.prefix),
                        &ws,
                        View::row_major(n_in, g.start, width, 0, g.prefix).t(),
                        Parallelism::None,
                    )?;
                }
                for row in y.chunks_exact_mut(n_out.max(1)) {
                    for (v, &bias) in row.iter_mut().zip(bs.iter()) {
                        *v = act.apply(*v + bias);
                    }
                }
                Ok(())
            },
        )?;
        let gathered = match ws {
            Cow::Owned(ws) => Some(ws),
            Cow::Borrowed(_) => None,
        };
        Ok((y, gathered))
    }

    /// Given `g = dL/d(pre-activation)` `(B, outputs)` and the layer's input `x' (B, inputs)`,
    /// both sorted: `[dx' | dW | db]` in one buffer, `dW` and `db` in the parameters' own layout
    /// and masked. `gathered` is the forward pass's `W'`, if it kept it.
    pub(crate) fn backward<T: Real>(
        &self,
        g: &[T],
        x: &[T],
        batch: usize,
        w: &[T],
        gathered: Option<Vec<T>>,
    ) -> candle_core::Result<Vec<T>> {
        let (n_out, n_in) = (self.outputs, self.inputs);
        let ws = match gathered {
            Some(ws) if ws.len() == n_out * n_in && self.mask.is_some() => Cow::Owned(ws),
            _ => self.sorted_weights(w),
        };
        let mut packed = vec![T::ZERO; batch * n_in + n_out * n_in + n_out];
        let (dx, rest) = packed.split_at_mut(batch * n_in);
        let (dw, db) = rest.split_at_mut(n_out * n_in);
        // dx'[:, c0..c1] = g[:, r0..] W'[r0.., c0..c1]: the inputs c0..c1 are read by every
        // group from the first whose prefix reaches past c0, i.e. by a suffix of the rows.
        // Threads take slices of the batch.
        let rows = rows_per_piece(batch);
        dx.par_chunks_mut(rows * n_in.max(1)).zip(g.par_chunks(rows * n_out.max(1))).try_for_each(
            |(dx, g)| -> candle_core::Result<()> {
                let batch = g.len() / n_out.max(1);
                let mut c0 = 0;
                for grp in &self.groups {
                    if grp.prefix <= c0 {
                        continue;
                    }
                    let (r0, c1) = (grp.start, grp.prefix);
                    matmul(
                        dx,
                        View::row_major(n_in, 0, batch, c0, c1 - c0),
                        false,
                        g,
                        View::row_major(n_out, 0, batch, r0, n_out - r0),
                        &ws,
                        View::row_major(n_in, r0, n_out - r0, c0, c1 - c0),
                        Parallelism::None,
                    )?;
                    c0 = c1;
                }
                Ok(())
            },
        )?;
        // dW'[r0..r1, ..prefix] = g[:, r0..r1]^T x'[:, ..prefix], group by group; threads take
        // whole groups (a dense layer's one group is cut into row slices first).
        // A masked layer whose units are already in degree order computes `dW` in place and
        // zeroes the masked entries; otherwise into a sorted scratch scattered back below.
        let scattered = self.mask.is_some() && self.reorders();
        let mut scratch = if scattered { vec![T::ZERO; n_out * n_in] } else { Vec::new() };
        let target: &mut [T] = if scattered { &mut scratch } else { dw };
        let cap = match batch.div_ceil(rows_per_piece(batch)) {
            0 | 1 => n_out.max(1),
            n => n_out.div_ceil(n).max(1),
        };
        let mut jobs = Vec::new();
        let mut remaining = target;
        let mut taken = 0;
        for grp in &self.groups {
            let mut start = grp.start;
            while start < grp.end {
                let end = grp.end.min(start + cap);
                let (head, tail) =
                    std::mem::take(&mut remaining).split_at_mut((end - taken) * n_in);
                jobs.push((start, end, grp.prefix, &mut head[(start - taken) * n_in..]));
                remaining = tail;
                taken = end;
                start = end;
            }
        }
        jobs.into_par_iter().try_for_each(|(r0, r1, prefix, dst)| {
            matmul(
                dst,
                View::row_major(n_in, 0, r1 - r0, 0, prefix),
                false,
                g,
                View::row_major(n_out, 0, batch, r0, r1 - r0).t(),
                x,
                View::row_major(n_in, 0, batch, 0, prefix),
                Parallelism::None,
            )
        })?;
        let Some(mask) = &self.mask else {
            column_sums(g, n_out, db);
            return Ok(packed);
        };
        if !scattered {
            column_sums(g, n_out, db);
            for grp in &self.groups {
                for a in grp.start..grp.end {
                    let row = &mut dw[a * n_in..a * n_in + grp.prefix];
                    for (v, &m) in row.iter_mut().zip(&mask[a * n_in..]) {
                        if !m {
                            *v = T::ZERO;
                        }
                    }
                }
            }
            return Ok(packed);
        }
        let (rows, cols) = (self.rows(), self.cols());
        let dws = scratch;
        let mut dbs = vec![T::ZERO; n_out];
        column_sums(g, n_out, &mut dbs);
        for grp in &self.groups {
            for a in grp.start..grp.end {
                let r = rows[a];
                db[r] = dbs[a];
                let src = &dws[a * n_in..a * n_in + grp.prefix];
                let dst = &mut dw[r * n_in..(r + 1) * n_in];
                let keep = &mask[a * n_in..a * n_in + grp.prefix];
                for ((&v, &col), &m) in src.iter().zip(cols.iter()).zip(keep) {
                    if m {
                        dst[col] = v;
                    }
                }
            }
        }
        Ok(packed)
    }
}

/// Threads the fused layers use: candle's setting (`RAYON_NUM_THREADS`, the CLI's `--threads`),
/// read once. Without that variable candle counts physical cores through sysfs on every call,
/// which, once per op, cost a quarter of a training step's CPU time.
fn parallel_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| candle_core::utils::get_num_threads().max(1))
}

/// Batch rows per parallel piece: the batch split evenly over the threads, but no piece under
/// [`MIN_PIECE_ROWS`] rows (a fork costs more than a thin slice saves).
pub(crate) fn rows_per_piece(batch: usize) -> usize {
    let threads = parallel_threads().min(rayon::current_num_threads()).max(1);
    let pieces = threads.min(batch / MIN_PIECE_ROWS).max(1);
    batch.div_ceil(pieces).max(1)
}

/// The smallest batch slice worth a thread of its own. A fork and join per layer costs tens of
/// microseconds, and far more on a busy machine where a worker may be descheduled: at batch 512
/// (training) one thread was faster than two in every measurement; at 4096 (evaluation) two
/// help on an idle machine.
pub const MIN_PIECE_ROWS: usize = 1024;

/// Whether `order[i] == i` for every position: a reordering that moves nothing.
pub(crate) fn is_identity(order: &[usize]) -> bool {
    order.iter().enumerate().all(|(i, &j)| i == j)
}

/// `out[j] = sum_i g[i, j]` for `g: (B, width)` row-major.
fn column_sums<T: Real>(g: &[T], width: usize, out: &mut [T]) {
    for row in g.chunks_exact(width.max(1)) {
        for (acc, &v) in out.iter_mut().zip(row) {
            *acc += v;
        }
    }
}

/// Row groups from the nondecreasing per-row prefixes: tiles of `tile` rows (0: one group per
/// distinct prefix), each reading the largest prefix of its rows rounded up to a multiple of
/// [`PREFIX_ALIGN`]. Tiles match gemm's register blocks (16 f32 per AVX-512 vector): narrower
/// or ragged blocks waste more of the kernel than the zeros they skip. Reading more inputs than
/// a row needs is exact: the gathered weights are zero there.
fn merge_groups(prefixes: &[usize], tile: usize, inputs: usize) -> Vec<Group> {
    let round = |p: usize| p.div_ceil(PREFIX_ALIGN).saturating_mul(PREFIX_ALIGN).min(inputs);
    let mut groups: Vec<Group> = Vec::new();
    for (a, &p) in prefixes.iter().enumerate() {
        match groups.last_mut() {
            Some(g) if tile > 0 && a - g.start < tile => {
                g.end = a + 1;
                g.prefix = g.prefix.max(round(p));
            }
            Some(g) if tile == 0 && round(p) == g.prefix => g.end = a + 1,
            _ => groups.push(Group { start: a, end: a + 1, prefix: round(p) }),
        }
    }
    groups
}

/// `act(x' W'^T + b')` as one op (see the module docs): `x' (B, inputs)` sorted, `w (outputs,
/// inputs)`, `b (outputs,)` in the parameters' layout; returns `(B, outputs)` in sorted order.
///
/// On devices other than the CPU and dtypes other than f32/f64 this errors: callers take the
/// candle composition there ([`super::fused::fusable`]).
pub fn dense(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    plan: &Arc<LayerPlan>,
    act: FusedActivation,
) -> crate::Result<Tensor> {
    let op = DenseOp { plan: plan.clone(), act, gathered: Arc::new(Mutex::new(None)) };
    Ok(x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, op)?)
}

struct DenseOp {
    plan: Arc<LayerPlan>,
    act: FusedActivation,
    /// The masked layer's gathered `W'`, kept from forward for backward (one gather per step).
    gathered: Arc<Mutex<Option<CpuStorage>>>,
}

impl DenseOp {
    fn check(&self, x: &Layout, w: &Layout, b: &Layout) -> candle_core::Result<usize> {
        let (batch, n_in) = x.shape().dims2()?;
        let (p, expected_w) = (&self.plan, [self.plan.outputs, self.plan.inputs]);
        if n_in != p.inputs || w.shape().dims() != expected_w || b.shape().dims() != [p.outputs] {
            bail!(
                "dense: x {:?}, w {:?}, b {:?} do not fit a layer {} -> {}",
                x.shape(),
                w.shape(),
                b.shape(),
                p.inputs,
                p.outputs
            );
        }
        Ok(batch)
    }
}

impl CustomOp3 for DenseOp {
    fn name(&self) -> &'static str {
        "dense"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let batch = self.check(l1, l2, l3)?;
        let (out, gathered) = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => {
                let (x, w, b) = (
                    contiguous(x, l1, "dense")?,
                    contiguous(w, l2, "dense")?,
                    contiguous(b, l3, "dense")?,
                );
                let (y, ws) = self.plan.forward(x, batch, w, b, self.act)?;
                (CpuStorage::F32(y), ws.map(CpuStorage::F32))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => {
                let (x, w, b) = (
                    contiguous(x, l1, "dense")?,
                    contiguous(w, l2, "dense")?,
                    contiguous(b, l3, "dense")?,
                );
                let (y, ws) = self.plan.forward(x, batch, w, b, self.act)?;
                (CpuStorage::F64(y), ws.map(CpuStorage::F64))
            }
            _ => bail!("dense: f32 or f64 tensors of one dtype"),
        };
        if let (Some(ws), Ok(mut slot)) = (gathered, self.gathered.lock()) {
            *slot = Some(ws);
        }
        Ok((out, Shape::from((batch, self.plan.outputs))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = match self.act {
            FusedActivation::Identity => grad.contiguous()?,
            FusedActivation::Relu => super::fused::relu_grad(grad, y)?,
        };
        let grad_op = DenseGrad { plan: self.plan.clone(), gathered: self.gathered.clone() };
        let packed = g.apply_op3_no_bwd(x, w, &grad_op)?;
        let (batch, n_in) = x.dims2()?;
        let n_out = self.plan.outputs;
        let dx = packed.narrow(0, 0, batch * n_in)?.reshape((batch, n_in))?;
        let dw = packed.narrow(0, batch * n_in, n_out * n_in)?.reshape((n_out, n_in))?;
        let db = packed.narrow(0, batch * n_in + n_out * n_in, n_out)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `(g, x', w) -> [dx' | dW | db]`, flat (one allocation; the caller takes views).
struct DenseGrad {
    plan: Arc<LayerPlan>,
    gathered: Arc<Mutex<Option<CpuStorage>>>,
}

impl CustomOp3 for DenseGrad {
    fn name(&self) -> &'static str {
        "dense-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, n_out) = l1.shape().dims2()?;
        let (x_batch, n_in) = l2.shape().dims2()?;
        let p = &self.plan;
        if n_out != p.outputs || n_in != p.inputs || x_batch != batch {
            bail!("dense-grad: shapes {:?}, {:?} do not fit the layer", l1.shape(), l2.shape());
        }
        // A poisoned lock only loses the cache: backward gathers again.
        let gathered = self.gathered.lock().ok().and_then(|mut slot| slot.take());
        let out = match (s1, s2, s3, gathered) {
            (CpuStorage::F32(g), CpuStorage::F32(x), CpuStorage::F32(w), ws) => {
                let ws = match ws {
                    Some(CpuStorage::F32(ws)) => Some(ws),
                    _ => None,
                };
                let (g, x, w) = (
                    contiguous(g, l1, "dense")?,
                    contiguous(x, l2, "dense")?,
                    contiguous(w, l3, "dense")?,
                );
                CpuStorage::F32(p.backward(g, x, batch, w, ws)?)
            }
            (CpuStorage::F64(g), CpuStorage::F64(x), CpuStorage::F64(w), ws) => {
                let ws = match ws {
                    Some(CpuStorage::F64(ws)) => Some(ws),
                    _ => None,
                };
                let (g, x, w) = (
                    contiguous(g, l1, "dense")?,
                    contiguous(x, l2, "dense")?,
                    contiguous(w, l3, "dense")?,
                );
                CpuStorage::F64(p.backward(g, x, batch, w, ws)?)
            }
            _ => bail!("dense-grad: f32 or f64 tensors of one dtype"),
        };
        let len = batch * n_in + n_out * n_in + n_out;
        Ok((out, Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Result};
    use candle_core::{DType, Device, Var};

    /// The reference: candle's composition on the parameters' layout, then sorted.
    fn reference(
        x_sorted: &Tensor,
        w: &Tensor,
        b: &Tensor,
        mask: &Tensor,
        plan: &LayerPlan,
        act: FusedActivation,
    ) -> Result<Tensor> {
        let dev = x_sorted.device();
        let idx = |v: &[usize]| Tensor::new(v.iter().map(|&i| i as u32).collect::<Vec<_>>(), dev);
        let rows = idx(&plan.rows())?;
        // Undo the input sort, run the plain masked layer, sort the output.
        let mut inverse = vec![0u32; plan.inputs];
        for (c, &col) in plan.cols().iter().enumerate() {
            inverse[col] = c as u32;
        }
        let x = x_sorted.index_select(&Tensor::new(inverse, dev)?, 1)?;
        let y = super::super::fused::unfused(&x.matmul(&(w * mask)?.t()?)?, b, act)?;
        Ok(y.index_select(&rows, 1)?)
    }

    fn check(plan: LayerPlan, mask: Vec<f64>, batch: usize) -> Result<()> {
        let plan = Arc::new(plan);
        for dtype in [DType::F32, DType::F64] {
            for act in [FusedActivation::Identity, FusedActivation::Relu] {
                let dev = Device::Cpu;
                let mut rng = crate::random::rng_from_seed(5);
                let (o, i) = (plan.outputs, plan.inputs);
                let mut normal = |shape: &[usize]| -> Result<Var> {
                    let t = crate::random::standard_normal(shape, dtype, &dev, &mut rng)?;
                    Ok(Var::from_tensor(&t)?)
                };
                let (x, w, b) = (normal(&[batch, i])?, normal(&[o, i])?, normal(&[o])?);
                let probe = normal(&[batch, o])?;
                let m = crate::random::from_f64(mask.clone(), (o, i).into(), dtype, &dev)?;
                let run = |y: Tensor| -> Result<Vec<Vec<f64>>> {
                    let grads = (&y * probe.as_tensor())?.sum_all()?.backward()?;
                    let mut out = vec![y.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?];
                    for v in [&x, &w, &b] {
                        let g = grads.get(v.as_tensor()).ok_or(Error::Data("no grad".into()))?;
                        out.push(g.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?);
                    }
                    Ok(out)
                };
                let fused = run(dense(x.as_tensor(), w.as_tensor(), b.as_tensor(), &plan, act)?)?;
                let expected =
                    run(reference(x.as_tensor(), w.as_tensor(), b.as_tensor(), &m, &plan, act)?)?;
                let tol = if dtype == DType::F32 { 1e-4 } else { 1e-11 };
                for (k, (f, e)) in fused.iter().zip(&expected).enumerate() {
                    assert_eq!(f.len(), e.len());
                    for (a, r) in f.iter().zip(e) {
                        assert!(
                            (a - r).abs() <= tol * r.abs().max(1.0),
                            "{dtype:?} {act:?} output {k}: {a} vs {r}"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn mask_of(out_deg: &[usize], in_deg: &[usize], strict: bool) -> Vec<f64> {
        out_deg
            .iter()
            .flat_map(|&o| in_deg.iter().map(move |&i| ((o > i) || (!strict && o == i)) as u8))
            .map(f64::from)
            .collect()
    }

    #[test]
    fn dense_layer_matches_candle_values_and_gradients() -> Result<()> {
        check(LayerPlan::dense(6, 4), vec![1.0; 24], 5)?;
        // Large enough a batch to be split across threads (where there are several).
        check(LayerPlan::dense(6, 4), vec![1.0; 24], 2 * MIN_PIECE_ROWS + 3)
    }

    #[test]
    fn masked_blocks_match_the_dense_masked_layer() -> Result<()> {
        // Hidden (>=) and output (>) masks with cyclic degrees, as MADE builds them, wide enough
        // that some groups merge and some do not.
        let in_deg: Vec<usize> = (0..40).map(|k| 1 + k % 5).collect();
        let out_deg: Vec<usize> = (0..300).map(|k| 1 + (k * 7) % 5).collect();
        let plan = LayerPlan::masked(&out_deg, &in_deg, |o, i| o >= i);
        check(plan.clone().with_tile_rows(1000), mask_of(&out_deg, &in_deg, false), 7)?;
        for rows in [0, 7, 64] {
            let plan = plan.clone().with_tile_rows(rows);
            assert!(plan.groups.len() > 1, "{:?}", plan.groups);
            assert!(plan.multiply_adds() < 300 * 40);
            check(plan, mask_of(&out_deg, &in_deg, false), 7)?;
        }
        let small_out: Vec<usize> = (0..10).map(|k| k / 2).collect();
        let plan = LayerPlan::masked(&small_out, &in_deg, |o, i| o > i).with_tile_rows(0);
        check(plan, mask_of(&small_out, &in_deg, true), 3)?;
        // Degree 0 outputs read nothing; a non-monotone relation still gives the masked result.
        let plan = LayerPlan::masked(&[0, 2, 0, 1], &[1, 2, 1], |o, i| o >= i);
        check(plan, mask_of(&[0, 2, 0, 1], &[1, 2, 1], false), 2)?;
        let odd = |o: usize, i: usize| (o + i) % 2 == 0;
        let plan = LayerPlan::masked(&[0, 1, 2], &[0, 1, 2, 3], odd);
        let m: Vec<f64> = [0, 1, 2]
            .iter()
            .flat_map(|&o| [0, 1, 2, 3].map(|i| f64::from(odd(o, i) as u8)))
            .collect();
        check(plan, m, 2)
    }

    #[test]
    fn mismatched_shapes_are_errors() -> Result<()> {
        let plan = Arc::new(LayerPlan::dense(3, 2));
        let x = Tensor::zeros((4, 2), DType::F32, &Device::Cpu)?;
        let w = Tensor::zeros((3, 2), DType::F32, &Device::Cpu)?;
        let b = Tensor::zeros(3, DType::F32, &Device::Cpu)?;
        assert!(dense(&x, &w, &b, &plan, FusedActivation::Relu).is_ok());
        assert!(dense(&x, &w.t()?, &b, &plan, FusedActivation::Relu).is_err());
        assert!(dense(&x.t()?, &w, &b, &plan, FusedActivation::Relu).is_err());
        assert!(dense(&x, &w, &b.to_dtype(DType::F64)?, &plan, FusedActivation::Relu).is_err());
        Ok(())
    }
}
