//! The eight 2-D toy densities of FFJORD.
//!
//! Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud, "FFJORD: Free-form Continuous Dynamics for
//! Scalable Reversible Generative Models", ICLR 2019: the generators of its `lib/toy_data.py`
//! (`inf_train_gen`), which the flow literature uses as its standard 2-D benchmarks. They are
//! reimplemented here from their definitions (including the scikit-learn `make_swiss_roll`,
//! `make_circles` and `make_moons` they call), so the samples follow the same distributions,
//! though not the same random streams:
//!
//! | name           | definition                                                                   |
//! |----------------|------------------------------------------------------------------------------|
//! | `swissroll`    | `t ~ 1.5 pi (1 + 2 U)`, `(t cos t, t sin t) + N(0, 1)`, divided by 5         |
//! | `circles`      | radii 1 and 0.5 (half the points each, evenly spaced angles) + `N(0, 0.08^2)`, times 3 |
//! | `rings`        | radii 3, 2.25, 1.5, 0.75 (a quarter each, evenly spaced angles) + `N(0, 0.08^2)` |
//! | `moons`        | scikit-learn's two half circles + `N(0, 0.1^2)`, times 2, shifted by `(-1, -0.2)` |
//! | `8gaussians`   | `N(4 c_k, 0.5^2 I) / 1.414` with `c_k` the 8 unit vectors at multiples of 45 deg |
//! | `pinwheel`     | 5 arms: `(1 + 0.3 e1, 0.1 e2)` rotated by `2 pi k / 5 + 0.25 exp(1 + 0.3 e1)`, times 2 |
//! | `2spirals`     | `n ~ 3 pi sqrt(U)`, `(-n cos n + U/2, n sin n + U/2)` and its mirror image, `/3 + N(0, 0.1^2)` |
//! | `checkerboard` | `x1 ~ U(-2, 2)`, `x2 ~ U(0, 1) - 2 B + (floor(x1) mod 2)`, times 2           |
//!
//! Where FFJORD returns its points in a fixed order (`2spirals`: first spiral, then second) they
//! are shuffled here, so that any prefix of a sample is itself a sample. Where FFJORD returns
//! `5 floor(n / 5)` points (`pinwheel`), exactly `n` are returned here, the arms as equal as `n`
//! allows.

use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Shape, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};
use rand_distr::StandardNormal;

use crate::random::from_f64;
use crate::{Error, Result};

/// One of the eight FFJORD 2-D toy densities (see the [module docs](self) for definitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Toy {
    /// A noisy swiss roll (spiral), `swissroll`.
    Swissroll,
    /// Two concentric noisy circles, `circles`.
    Circles,
    /// Four concentric noisy rings, `rings`.
    Rings,
    /// Two interleaved half moons, `moons`.
    Moons,
    /// Eight Gaussians on a circle, `8gaussians`.
    EightGaussians,
    /// Five curved arms, `pinwheel`.
    Pinwheel,
    /// Two interleaved spirals, `2spirals`.
    TwoSpirals,
    /// A 4 x 4 checkerboard, half the squares filled, `checkerboard`.
    Checkerboard,
}

impl Toy {
    /// Every toy, in FFJORD's order.
    pub const ALL: [Toy; 8] = [
        Toy::Swissroll,
        Toy::Circles,
        Toy::Rings,
        Toy::Moons,
        Toy::EightGaussians,
        Toy::Pinwheel,
        Toy::TwoSpirals,
        Toy::Checkerboard,
    ];

    /// The name FFJORD gives the toy (`"8gaussians"`, ...), which [`FromStr`] accepts.
    pub fn name(&self) -> &'static str {
        match self {
            Toy::Swissroll => "swissroll",
            Toy::Circles => "circles",
            Toy::Rings => "rings",
            Toy::Moons => "moons",
            Toy::EightGaussians => "8gaussians",
            Toy::Pinwheel => "pinwheel",
            Toy::TwoSpirals => "2spirals",
            Toy::Checkerboard => "checkerboard",
        }
    }

    /// `n` points, row-major: point `i` is `(out[2 i], out[2 i + 1])`.
    pub fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Vec<f64> {
        let points = match self {
            Toy::Swissroll => swissroll(n, rng),
            Toy::Circles => circles(n, rng),
            Toy::Rings => rings(n, rng),
            Toy::Moons => moons(n, rng),
            Toy::EightGaussians => eight_gaussians(n, rng),
            Toy::Pinwheel => pinwheel(n, rng),
            Toy::TwoSpirals => two_spirals(n, rng),
            Toy::Checkerboard => checkerboard(n, rng),
        };
        points.into_iter().flatten().collect()
    }

    /// `n` points as a `(n, 2)` tensor in `dtype` on `device`.
    pub fn sample_tensor(
        &self,
        n: usize,
        dtype: DType,
        device: &Device,
        rng: &mut dyn RngCore,
    ) -> Result<Tensor> {
        from_f64(self.sample(n, rng), Shape::from((n, 2)), dtype, device)
    }
}

impl fmt::Display for Toy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Toy {
    type Err = Error;

    /// Parses FFJORD's names exactly (`swissroll`, ..., `checkerboard`).
    fn from_str(s: &str) -> Result<Self> {
        Toy::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names = Toy::ALL.map(|t| t.name()).join(", ");
            Error::config("toy", s, format!("valid toy names are {names}"))
        })
    }
}

fn normal(rng: &mut dyn RngCore) -> f64 {
    rng.sample(StandardNormal)
}

fn uniform(rng: &mut dyn RngCore) -> f64 {
    rng.random::<f64>()
}

/// `numpy.linspace(start, stop, n, endpoint)`.
fn linspace(start: f64, stop: f64, n: usize, endpoint: bool) -> impl Iterator<Item = f64> {
    let intervals = if endpoint { n.saturating_sub(1).max(1) } else { n.max(1) };
    let step = (stop - start) / intervals as f64;
    (0..n).map(move |i| start + step * i as f64)
}

/// Shuffles deterministic points (the way scikit-learn does) and adds isotropic noise.
fn shuffle_and_jitter(mut points: Vec<[f64; 2]>, std: f64, rng: &mut dyn RngCore) -> Vec<[f64; 2]> {
    points.shuffle(rng);
    for p in &mut points {
        p[0] += std * normal(rng);
        p[1] += std * normal(rng);
    }
    points
}

/// scikit-learn `make_swiss_roll(noise=1.0)`, columns 0 and 2, divided by 5. The roll's height
/// (column 1) is dropped, so its draw is skipped.
fn swissroll(n: usize, rng: &mut dyn RngCore) -> Vec<[f64; 2]> {
    (0..n)
        .map(|_| {
            let t = 1.5 * PI * (1.0 + 2.0 * uniform(rng));
            let x = t * t.cos() + normal(rng);
            let z = t * t.sin() + normal(rng);
            [x / 5.0, z / 5.0]
        })
        .collect()
}

/// scikit-learn `make_circles(factor=0.5, noise=0.08)`, times 3: `n / 2` (rounded down) points
/// on the outer circle, the rest on the inner one, at evenly spaced angles.
fn circles(n: usize, rng: &mut dyn RngCore) -> Vec<[f64; 2]> {
    let outer = n / 2;
    let ring = |count: usize, radius: f64| {
        linspace(0.0, 2.0 * PI, count, false).map(move |a| [radius * a.cos(), radius * a.sin()])
    };
    let points = ring(outer, 1.0).chain(ring(n - outer, 0.5)).collect();
    let mut points = shuffle_and_jitter(points, 0.08, rng);
    points.iter_mut().for_each(|p| *p = [3.0 * p[0], 3.0 * p[1]]);
    points
}

/// Four rings of radii 3, 2.25, 1.5 and 0.75 at evenly spaced angles, `n / 4` points on each of
/// the outer three and the rest on the innermost, plus `N(0, 0.08^2)` noise (added after the
/// scaling by 3, as FFJORD does).
fn rings(n: usize, rng: &mut dyn RngCore) -> Vec<[f64; 2]> {
    let quarter = n / 4;
    let counts = [quarter, quarter, quarter, n - 3 * quarter];
    let radii = [3.0, 2.25, 1.5, 0.75];
    let points = counts
        .into_iter()
        .zip(radii)
        .flat_map(|(count, r)| {
            linspace(0.0, 2.0 * PI, count, false).map(move |a| [r * a.cos(), r * a.sin()])
        })
        .collect();
    shuffle_and_jitter(points, 0.08, rng)
}

/// scikit-learn `make_moons(noise=0.1)`, then `2 x + (-1, -0.2)`: `n / 2` (rounded down) points
/// on the upper half circle, the rest on the lower one shifted to `(1, 0.5)`, both at evenly
/// spaced angles including the end points.
fn moons(n: usize, rng: &mut dyn RngCore) -> Vec<[f64; 2]> {
    let outer = n / 2;
    let upper = linspace(0.0, PI, outer, true).map(|a| [a.cos(), a.sin()]);
    let lower = linspace(0.0, PI, n - outer, true).map(|a| [1.0 - a.cos(), 0.5 - a.sin()]);
    let mut points = shuffle_and_jitter(upper.chain(lower).collect(), 0.1, rng);
    points.iter_mut().for_each(|p| *p = [2.0 * p[0] - 1.0, 2.0 * p[1] - 0.2]);
    points
}

/// `N(4 c_k, 0.5^2 I) / 1.414` with `k` uniform over the 8 directions at multiples of 45 degrees
/// (FFJORD divides by 1.414, not by `sqrt(2)`).
fn eight_gaussians(n: usize, rng: &mut dyn RngCore) -> Vec<[f64; 2]> {
    let d = std::f64::consts::FRAC_1_SQRT_2;
    let centers =
        [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [d, d], [d, -d], [-d, d], [-d, -d]];
    (0..n)
        .map(|_| {
            let e = [0.5 * normal(rng), 0.5 * normal(rng)];
            let c = centers[rng.random_range(0..centers.len())];
            [(e[0] + 4.0 * c[0]) / 1.414, (e[1] + 4.0 * c[1]) / 1.414]
        })
        .collect()
}

/// Five arms (Johnson et al. 2016's pinwheel): radial part `1 + 0.3 e1`, tangential `0.1 e2`,
/// rotated by `2 pi k / 5 + 0.25 exp(1 + 0.3 e1)`, times 2.
fn pinwheel(n: usize, rng: &mut dyn RngCore) -> Vec<[f64; 2]> {
    const ARMS: usize = 5;
    let mut points: Vec<[f64; 2]> = (0..n)
        .map(|i| {
            let radial = 1.0 + 0.3 * normal(rng);
            let tangential = 0.1 * normal(rng);
            let angle = 2.0 * PI * (i % ARMS) as f64 / ARMS as f64 + 0.25 * radial.exp();
            let (s, c) = angle.sin_cos();
            // Row vector times [[c, -s], [s, c]], as FFJORD's einsum("ti,tij->tj").
            [2.0 * (radial * c + tangential * s), 2.0 * (-radial * s + tangential * c)]
        })
        .collect();
    points.shuffle(rng);
    points
}

/// Two mirrored spirals: `m ~ 3 pi sqrt(U)` (540 degrees), `p = (-m cos m + U/2, m sin m + U/2)`;
/// the points are `p / 3` and `-p / 3` (the same `p`, as in FFJORD), plus `N(0, 0.1^2)` noise.
fn two_spirals(n: usize, rng: &mut dyn RngCore) -> Vec<[f64; 2]> {
    let half = n.div_ceil(2);
    let base: Vec<[f64; 2]> = (0..half)
        .map(|_| {
            let m = uniform(rng).sqrt() * 540.0 * (2.0 * PI) / 360.0;
            let x = -m.cos() * m + 0.5 * uniform(rng);
            let y = m.sin() * m + 0.5 * uniform(rng);
            [x / 3.0, y / 3.0]
        })
        .collect();
    let mirrored = base.iter().take(n - half).map(|p| [-p[0], -p[1]]);
    let points = base.iter().copied().chain(mirrored).collect();
    shuffle_and_jitter(points, 0.1, rng)
}

/// `x1 ~ U(-2, 2)`, `x2 = U(0, 1) - 2 B + (floor(x1) mod 2)` with `B` a fair coin, times 2: the
/// filled squares of a 4 x 4 board on `[-4, 4]^2`.
fn checkerboard(n: usize, rng: &mut dyn RngCore) -> Vec<[f64; 2]> {
    (0..n)
        .map(|_| {
            let x1 = 4.0 * uniform(rng) - 2.0;
            let coin = if rng.random::<bool>() { 2.0 } else { 0.0 };
            let x2 = uniform(rng) - coin + x1.floor().rem_euclid(2.0);
            [2.0 * x1, 2.0 * x2]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::rng_from_seed;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_valid_ones() {
        for toy in Toy::ALL {
            assert_eq!(toy.name().parse::<Toy>().ok(), Some(toy));
        }
        let err = "spiral".parse::<Toy>().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("spiral") && err.contains("8gaussians") && err.contains("checkerboard"),
            "{err}"
        );
    }

    #[test]
    fn linspace_matches_numpy() {
        let a: Vec<f64> = linspace(0.0, 1.0, 4, false).collect();
        assert_eq!(a, [0.0, 0.25, 0.5, 0.75]);
        let b: Vec<f64> = linspace(0.0, 1.0, 5, true).collect();
        assert_eq!(b, [0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(linspace(0.0, 1.0, 1, true).collect::<Vec<_>>(), [0.0]);
        assert_eq!(linspace(0.0, 1.0, 0, true).count(), 0);
    }

    #[test]
    fn every_toy_gives_exactly_n_finite_points_for_any_n() -> Result<()> {
        for toy in Toy::ALL {
            for n in [0, 1, 2, 3, 7] {
                let v = toy.sample(n, &mut rng_from_seed(1));
                assert_eq!(v.len(), 2 * n, "{toy} n={n}");
                assert!(v.iter().all(|x| x.is_finite()), "{toy}");
            }
            let t = toy.sample_tensor(5, DType::F32, &Device::Cpu, &mut rng_from_seed(1))?;
            assert_eq!(t.dims(), [5, 2]);
        }
        Ok(())
    }
}
