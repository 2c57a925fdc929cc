//! Scalar math of the rational-quadratic spline (Durkan et al. 2019, "Neural Spline Flows",
//! section 3.1 and appendix A): knots from raw parameters, the map, its inverse, and the
//! partial derivatives the fused op's backward needs. Computed in `f64` for both f32 and f64
//! tensors.
//!
//! One element with bin `k` (knots `x_k < x_{k+1}`, `y_k < y_{k+1}`, derivatives `d_k`,
//! `d_{k+1}`), `w = x_{k+1} - x_k`, `h = y_{k+1} - y_k`, `s = h / w`, `theta = (x - x_k) / w`,
//! `t = theta (1 - theta)`:
//!
//! ```text
//! y = y_k + h (s theta^2 + d_k t) / (s + (d_k + d_{k+1} - 2 s) t)
//! dy/dx = s^2 (d_{k+1} theta^2 + 2 s t + d_k (1 - theta)^2) / (s + (d_k + d_{k+1} - 2 s) t)^2
//! ```

use std::f64::consts::PI;

/// The spline's fixed hyperparameters; `circular` selects the periodic variant on `[-pi, pi]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Geometry {
    pub bins: usize,
    /// Half-width `B` of the spline's interval `[-B, B]` (`pi` when circular).
    pub bound: f64,
    pub min_bin_width: f64,
    pub min_bin_height: f64,
    pub min_derivative: f64,
    pub circular: bool,
}

impl Geometry {
    /// `K` widths, `K` heights and `K - 1` interior derivatives (`K` when circular: the two
    /// boundary derivatives are one parameter).
    pub fn params_per_feature(&self) -> usize {
        if self.circular {
            3 * self.bins
        } else {
            3 * self.bins - 1
        }
    }

    /// The shift `c` with `min_derivative + softplus(c) = 1`: raw derivative parameters go
    /// through `softplus(u + c)`, so that zero raw parameters give unit derivatives (the identity).
    pub fn derivative_offset(&self) -> f64 {
        (1.0 - self.min_derivative).exp_m1().ln()
    }

    /// For the circular spline, `v = v' + 2 pi n` with `v'` in `[-pi, pi]`: the spline acts on
    /// `v'` and the map is extended periodically, `f(v' + 2 pi n) = f(v') + 2 pi n` (a lift of the
    /// circle diffeomorphism, so a strictly increasing map of the whole line). `(v, 0)` otherwise.
    pub fn wrap(&self, v: f64) -> (f64, f64) {
        if !self.circular || !v.is_finite() {
            return (v, 0.0);
        }
        let shift = 2.0 * PI * ((v + PI) / (2.0 * PI)).floor();
        ((v - shift).clamp(-PI, PI), shift)
    }

    /// Whether `v` lies where the spline acts (outside it, the bounded spline is the identity).
    pub fn inside(&self, v: f64) -> bool {
        self.circular || (v >= -self.bound && v <= self.bound)
    }
}

pub(crate) fn softplus(u: f64) -> f64 {
    if u > 0.0 {
        u + (-u).exp().ln_1p()
    } else {
        u.exp().ln_1p()
    }
}

pub(crate) fn sigmoid(u: f64) -> f64 {
    if u >= 0.0 {
        1.0 / (1.0 + (-u).exp())
    } else {
        let e = u.exp();
        e / (1.0 + e)
    }
}

/// The knots of one element, and what their backward needs (softmax probabilities, the raw
/// derivative parameters). Buffers are reused across elements. Only the two derivatives of an
/// element's bin are ever computed: softplus is the costliest part of the knots.
#[derive(Debug, Clone)]
pub(crate) struct Knots {
    /// `K + 1` knot positions `x_0 = -B < ... < x_K = B`.
    pub xs: Vec<f64>,
    /// `K + 1` knot values `y_0 = -B < ... < y_K = B`.
    pub ys: Vec<f64>,
    pw: Vec<f64>,
    ph: Vec<f64>,
    /// The raw derivative parameters plus the offset `c`.
    ud: Vec<f64>,
    offset: f64,
    min_derivative: f64,
    circular: bool,
}

/// The six per-element quantities the map depends on, in this order.
const XK: usize = 0;
const W: usize = 1;
const YK: usize = 2;
const H: usize = 3;
const D0: usize = 4;
const D1: usize = 5;

/// Partial derivatives of the value `y` and log-derivative `l` at one element.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Partials {
    pub y_x: f64,
    pub l_x: f64,
    /// `dy / d(x_k, w, y_k, h, d_k, d_{k+1})`.
    pub y_q: [f64; 6],
    /// `dl / d(x_k, w, y_k, h, d_k, d_{k+1})`.
    pub l_q: [f64; 6],
}

fn softmax_into(raw: &[f64], out: &mut [f64]) {
    let max = raw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for (o, &r) in out.iter_mut().zip(raw) {
        *o = (r - max).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

/// `x_0 = -B`, `x_j = -B + 2B sum_{i<j} (m + (1 - m K) p_i)`, `x_K = B` (fixed ends, as in nflows).
fn cumulate(p: &[f64], min: f64, bound: f64, out: &mut [f64]) {
    let k = p.len();
    let mut acc = 0.0;
    out[0] = -bound;
    for j in 1..k {
        acc += min + (1.0 - min * k as f64) * p[j - 1];
        out[j] = -bound + 2.0 * bound * acc;
    }
    out[k] = bound;
}

/// Largest `j < K` with `locs[j] <= v` (`locs` increasing; `v` inside `[locs[0], locs[K]]`).
fn bin(locs: &[f64], v: f64) -> usize {
    let k = locs.len() - 1;
    let mut j = 0;
    while j + 1 < k && v >= locs[j + 1] {
        j += 1;
    }
    j
}

impl Knots {
    pub fn new(g: &Geometry) -> Self {
        let bins = g.bins;
        Self {
            xs: vec![0.0; bins + 1],
            ys: vec![0.0; bins + 1],
            pw: vec![0.0; bins],
            ph: vec![0.0; bins],
            ud: vec![0.0; g.params_per_feature() - 2 * bins],
            offset: g.derivative_offset(),
            min_derivative: g.min_derivative,
            circular: g.circular,
        }
    }

    /// Fills the knots from one element's `P` raw parameters `[widths (K), heights (K),
    /// derivatives (K - 1, or K when circular)]`.
    pub fn fill(&mut self, g: &Geometry, raw: &[f64]) {
        let k = g.bins;
        softmax_into(&raw[..k], &mut self.pw);
        softmax_into(&raw[k..2 * k], &mut self.ph);
        cumulate(&self.pw, g.min_bin_width, g.bound, &mut self.xs);
        cumulate(&self.ph, g.min_bin_height, g.bound, &mut self.ys);
        for (u, r) in self.ud.iter_mut().zip(&raw[2 * k..]) {
            *u = r + self.offset;
        }
    }

    /// The index into `ud` of knot `j`'s derivative parameter, `None` for the bounded spline's
    /// fixed ends.
    fn derivative_index(&self, j: usize) -> Option<usize> {
        let k = self.xs.len() - 1;
        if self.circular {
            Some(j % k)
        } else if j >= 1 && j < k {
            Some(j - 1)
        } else {
            None
        }
    }

    /// `d_j`: `m_d + softplus(u_j + c)`; 1 at the bounded spline's ends, whose unit derivatives
    /// make the identity tails continue the spline with a continuous derivative.
    fn derivative(&self, j: usize) -> f64 {
        match self.derivative_index(j) {
            Some(i) => self.min_derivative + softplus(self.ud[i]),
            None => 1.0,
        }
    }

    fn local(&self, k: usize) -> [f64; 6] {
        let mut q = [0.0; 6];
        q[XK] = self.xs[k];
        q[W] = self.xs[k + 1] - self.xs[k];
        q[YK] = self.ys[k];
        q[H] = self.ys[k + 1] - self.ys[k];
        q[D0] = self.derivative(k);
        q[D1] = self.derivative(k + 1);
        q
    }

    /// `(y, log dy/dx)` at `x` inside `[x_0, x_K]`.
    pub fn value(&self, x: f64) -> (f64, f64) {
        let q = self.local(bin(&self.xs, x));
        let (w, h, d0, d1) = (q[W], q[H], q[D0], q[D1]);
        let s = h / w;
        let theta = ((x - q[XK]) / w).clamp(0.0, 1.0);
        let t = theta * (1.0 - theta);
        let den = s + (d0 + d1 - 2.0 * s) * t;
        let y = q[YK] + h * (s * theta * theta + d0 * t) / den;
        let m = d1 * theta * theta + 2.0 * s * t + d0 * (1.0 - theta) * (1.0 - theta);
        (y, (s * s * m / (den * den)).ln())
    }

    /// The inverse `x` at `y` inside `[y_0, y_K]`, from the numerically stable root
    /// `theta = 2c / (-b - sqrt(b^2 - 4ac))` of the quadratic (Durkan et al. 2019, eq. 29).
    pub fn invert(&self, y: f64) -> f64 {
        let q = self.local(bin(&self.ys, y));
        let (w, h, d0, d1) = (q[W], q[H], q[D0], q[D1]);
        let s = h / w;
        let dy = y - q[YK];
        let e = d0 + d1 - 2.0 * s;
        let a = h * (s - d0) + dy * e;
        let b = h * d0 - dy * e;
        let c = -s * dy;
        let disc = (b * b - 4.0 * a * c).max(0.0);
        let theta = (2.0 * c / (-b - disc.sqrt())).clamp(0.0, 1.0);
        q[XK] + theta * w
    }

    /// The partial derivatives of the value and log-derivative at `x` inside `[x_0, x_K]`, and
    /// the bin.
    pub fn partials(&self, x: f64) -> (usize, Partials) {
        let k = bin(&self.xs, x);
        let q = self.local(k);
        let (w, h, d0, d1) = (q[W], q[H], q[D0], q[D1]);
        let s = h / w;
        let theta = ((x - q[XK]) / w).clamp(0.0, 1.0);
        let t = theta * (1.0 - theta);
        let e = d0 + d1 - 2.0 * s;
        let den = s + e * t;
        let den2 = den * den;
        let a = s * theta * theta + d0 * t;
        let g = a / den;
        // g = a / den as a function of (theta, s, d0, d1).
        let a_theta = 2.0 * s * theta + d0 * (1.0 - 2.0 * theta);
        let den_theta = e * (1.0 - 2.0 * theta);
        let g_theta = (a_theta * den - a * den_theta) / den2;
        let g_s = (theta * theta * den - a * (1.0 - 2.0 * t)) / den2;
        let g_d0 = t * (den - a) / den2;
        let g_d1 = -a * t / den2;
        // l = 2 ln s + ln m - 2 ln den.
        let m = d1 * theta * theta + 2.0 * s * t + d0 * (1.0 - theta) * (1.0 - theta);
        let m_theta = 2.0 * d1 * theta + 2.0 * s * (1.0 - 2.0 * theta) - 2.0 * d0 * (1.0 - theta);
        let l_theta = m_theta / m - 2.0 * den_theta / den;
        let l_s = 2.0 / s + 2.0 * t / m - 2.0 * (1.0 - 2.0 * t) / den;
        let l_d0 = (1.0 - theta) * (1.0 - theta) / m - 2.0 * t / den;
        let l_d1 = theta * theta / m - 2.0 * t / den;
        // theta = (x - x_k) / w and s = h / w.
        let y_x = s * s * m / den2;
        let l_x = l_theta / w;
        let mut y_q = [0.0; 6];
        y_q[XK] = -h * g_theta / w;
        y_q[W] = -h * (g_theta * theta + g_s * s) / w;
        y_q[YK] = 1.0;
        y_q[H] = g + h * g_s / w;
        y_q[D0] = h * g_d0;
        y_q[D1] = h * g_d1;
        let mut l_q = [0.0; 6];
        l_q[XK] = -l_x;
        l_q[W] = -(l_theta * theta + l_s * s) / w;
        l_q[H] = l_s / w;
        l_q[D0] = l_d0;
        l_q[D1] = l_d1;
        let p = Partials { y_x, l_x, y_q, l_q };
        (k, p)
    }

    /// Adds the gradient `gq` with respect to bin `k`'s six local quantities to `out`, the
    /// gradient with respect to the element's `P` raw parameters (through the cumulative sums,
    /// softmaxes and softplus).
    pub fn accumulate(&self, g: &Geometry, k: usize, gq: &[f64; 6], out: &mut [f64]) {
        let bins = g.bins;
        // x_k = xs[k] and w = xs[k+1] - xs[k]: gradients on the knot positions.
        let knots_x = [(k, gq[XK] - gq[W]), (k + 1, gq[W])];
        let knots_y = [(k, gq[YK] - gq[H]), (k + 1, gq[H])];
        Self::knot_grad(&self.pw, g.min_bin_width, g.bound, &knots_x, &mut out[..bins]);
        Self::knot_grad(&self.ph, g.min_bin_height, g.bound, &knots_y, &mut out[bins..2 * bins]);
        for (j, gd) in [(k, gq[D0]), (k + 1, gq[D1])] {
            if let Some(i) = self.derivative_index(j) {
                out[2 * bins + i] += gd * sigmoid(self.ud[i]);
            }
        }
    }

    /// Gradient of the knot positions `(index, dL/dknot)` back to the raw softmax inputs: knot
    /// `j` (interior only; the ends are fixed) is `-B + 2B sum_{i<j} (m + (1 - mK) p_i)`.
    fn knot_grad(p: &[f64], min: f64, bound: f64, knots: &[(usize, f64)], out: &mut [f64]) {
        let k = p.len();
        let scale = 2.0 * bound * (1.0 - min * k as f64);
        // dL/dp_i = scale * sum over interior knots j > i of dL/dknot_j.
        let grad_p = |i: usize| -> f64 {
            knots.iter().filter(|(j, _)| *j >= 1 && *j < k && *j > i).map(|(_, g)| g).sum::<f64>()
                * scale
        };
        let mean: f64 = (0..k).map(|i| p[i] * grad_p(i)).sum();
        for i in 0..k {
            out[i] += p[i] * (grad_p(i) - mean);
        }
    }
}

/// One element of the map in either direction: `(output, log|d output / d input|)`.
pub(crate) fn apply(g: &Geometry, knots: &Knots, v: f64, inverse: bool) -> (f64, f64) {
    if !g.inside(v) {
        return (v, 0.0);
    }
    let (inner, shift) = g.wrap(v);
    if inverse {
        let x = knots.invert(inner);
        (x + shift, -knots.value(x).1)
    } else {
        let (y, l) = knots.value(inner);
        (y + shift, l)
    }
}

/// One element of the backward: given the input `v`, the upstream gradients `(g_out, g_l)` of
/// the output and its log-derivative, returns the gradient of the input and adds those of the
/// raw parameters to `out`.
pub(crate) fn backward(
    g: &Geometry,
    knots: &Knots,
    v: f64,
    inverse: bool,
    g_out: f64,
    g_l: f64,
    out: &mut [f64],
) -> f64 {
    if !g.inside(v) {
        return g_out;
    }
    let (inner, _) = g.wrap(v);
    if inverse {
        // x = f^{-1}(y): dx/dy = 1/f', dx/dq = -f_q / f'; the output log-derivative is
        // -l(x(y, q), q).
        let (k, p) = knots.partials(knots.invert(inner));
        let r = (g_out - g_l * p.l_x) / p.y_x;
        let gq: [f64; 6] = std::array::from_fn(|i| -r * p.y_q[i] - g_l * p.l_q[i]);
        knots.accumulate(g, k, &gq, out);
        r
    } else {
        let (k, p) = knots.partials(inner);
        let gq: [f64; 6] = std::array::from_fn(|i| g_out * p.y_q[i] + g_l * p.l_q[i]);
        knots.accumulate(g, k, &gq, out);
        g_out * p.y_x + g_l * p.l_x
    }
}
