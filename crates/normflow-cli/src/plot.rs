//! PNG figures: loss and ELBO curves, 2-D densities beside samples (and a target), pair plots.
//!
//! Plots take plain numbers, not models, so that each one is a pure function of its inputs. Text
//! is drawn with DejaVu Sans Mono, bundled (see `assets/DejaVu-LICENSE.txt`), so figures look the
//! same on machines without system fonts.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::{register_font, FontStyle};

const FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");
const FAMILY: &str = "sans-serif";

fn init_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Registration fails only on an unparsable font, and the bundled one parses; without it,
        // plotters would fail at the first label, so a failure here surfaces there.
        let _ = register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

fn draw_err<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow!("cannot draw {}: {e:?}", path.display())
}

/// One line per epoch: training loss and, if present, validation loss (both `-log p` per row).
pub fn loss_curve(path: &Path, train: &[f64], val: &[Option<f64>]) -> Result<()> {
    init_font();
    let err = draw_err(path);
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let values: Vec<f64> = train
        .iter()
        .copied()
        .chain(val.iter().flatten().copied())
        .filter(|v| v.is_finite())
        .collect();
    let (lo, hi) = bounds(&values);
    let epochs = train.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("training curve", (FAMILY, 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(1.0..epochs.max(2.0), lo..hi)
        .map_err(&err)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("-log p per row (nats)")
        .label_style((FAMILY, 14))
        .draw()
        .map_err(&err)?;
    let series =
        |v: &[f64]| v.iter().enumerate().map(|(i, y)| (i as f64 + 1.0, *y)).collect::<Vec<_>>();
    chart
        .draw_series(LineSeries::new(series(train), BLUE.stroke_width(2)))
        .map_err(&err)?
        .label("train")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    let val_points: Vec<(f64, f64)> =
        val.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i as f64 + 1.0, v))).collect();
    if !val_points.is_empty() {
        chart
            .draw_series(LineSeries::new(val_points, RED.stroke_width(2)))
            .map_err(&err)?
            .label("validation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(&err)?;
    root.present().map_err(&err)?;
    Ok(())
}

/// A square region `[lo, hi]^2` around the 2-D points `xy` (row-major pairs), padded by 10%.
pub fn square_bounds(xy: &[f64]) -> (f64, f64) {
    let (lo, hi) = bounds(xy);
    let pad = 0.1 * (hi - lo);
    (lo - pad, hi + pad)
}

fn bounds(values: &[f64]) -> (f64, f64) {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let lo = finite.clone().fold(f64::INFINITY, f64::min);
    let hi = finite.fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 1.0, hi + 1.0);
    }
    (lo, hi)
}

type SquareChart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One captioned panel with axes `names` over `[lo, hi]^2`.
fn square_panel<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    (lo, hi): (f64, f64),
    names: (&str, &str),
    path: &Path,
) -> Result<SquareChart<'a, 'b>> {
    let err = draw_err(path);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 22))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(lo..hi, lo..hi)
        .map_err(&err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(names.0)
        .y_desc(names.1)
        .label_style((FAMILY, 13))
        .draw()
        .map_err(&err)?;
    Ok(chart)
}

/// A 2-D density on a `cells x cells` grid over `[lo, hi]^2` (`density[i * cells + j]` at
/// `x_i`, `y_j`) drawn as a heatmap, beside a scatter of `samples` and, if given, `data`. With a
/// `target` density on the same grid (variational inference), it is drawn between the two.
#[allow(clippy::too_many_arguments)]
pub fn density_and_samples(
    path: &Path,
    density: &[f64],
    target: Option<&[f64]>,
    cells: usize,
    (lo, hi): (f64, f64),
    samples: &[f64],
    data: Option<&[f64]>,
    names: (&str, &str),
) -> Result<()> {
    init_font();
    let err = draw_err(path);
    let panels = if target.is_some() { 3 } else { 2 };
    let root = BitMapBackend::new(path, (600 * panels, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let areas = root.split_evenly((1, panels as usize));
    heatmap(&areas[0], "model density", density, cells, (lo, hi), names, path)?;
    if let Some(target) = target {
        heatmap(&areas[1], "target density", target, cells, (lo, hi), names, path)?;
    }
    let mut chart = square_panel(&areas[panels as usize - 1], "samples", (lo, hi), names, path)?;
    if let Some(data) = data {
        chart
            .draw_series(
                points(data, 2, 0, 1).map(|p| Circle::new(p, 1, RGBColor(150, 150, 150).filled())),
            )
            .map_err(&err)?
            .label("data")
            .legend(|(x, y)| Circle::new((x, y), 3, RGBColor(150, 150, 150).filled()));
    }
    chart
        .draw_series(points(samples, 2, 0, 1).map(|p| Circle::new(p, 1, BLUE.mix(0.6).filled())))
        .map_err(&err)?
        .label("model samples")
        .legend(|(x, y)| Circle::new((x, y), 3, BLUE.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FAMILY, 13))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(&err)?;
    root.present().map_err(&err)?;
    Ok(())
}

/// One heatmap panel of a density on a `cells x cells` grid (scaled to its maximum).
fn heatmap(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    density: &[f64],
    cells: usize,
    (lo, hi): (f64, f64),
    names: (&str, &str),
    path: &Path,
) -> Result<()> {
    let max = density.iter().copied().filter(|v| v.is_finite()).fold(0.0, f64::max).max(1e-300);
    let mut chart = square_panel(area, caption, (lo, hi), names, path)?;
    let h = (hi - lo) / cells as f64;
    chart
        .draw_series((0..cells * cells).map(|k| {
            let (i, j) = (k / cells, k % cells);
            let (x, y) = (lo + i as f64 * h, lo + j as f64 * h);
            let v = density[k];
            let t = if v.is_finite() { (v / max).clamp(0.0, 1.0) } else { 0.0 };
            Rectangle::new([(x, y), (x + h, y + h)], ViridisRGB::get_color(t).filled())
        }))
        .map_err(draw_err(path))?;
    Ok(())
}

/// The per-step ELBO of a variational fit: the batch estimates (light), their moving average
/// over `window` steps (dark) and, if known, the true `log Z` (dashed), which bounds the ELBO.
pub fn elbo_curve(path: &Path, elbo: &[f64], window: usize, log_z: Option<f64>) -> Result<()> {
    init_font();
    let err = draw_err(path);
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let finite: Vec<(f64, f64)> = elbo
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, v)| (i as f64 + 1.0, *v))
        .collect();
    let mut smooth = Vec::with_capacity(finite.len());
    for (k, &(step, _)) in finite.iter().enumerate() {
        let from = (k + 1).saturating_sub(window.max(1));
        let part = &finite[from..=k];
        smooth.push((step, part.iter().map(|p| p.1).sum::<f64>() / part.len() as f64));
    }
    // The axis covers the moving average and the bound, not the rare very bad early batches.
    let mut values: Vec<f64> = smooth.iter().map(|p| p.1).chain(log_z).collect();
    values.sort_by(f64::total_cmp);
    let lo = values.get(values.len() / 50).copied().unwrap_or(0.0);
    let (lo, hi) = bounds(&[lo, values.last().copied().unwrap_or(1.0)]);
    let pad = 0.05 * (hi - lo);
    let steps = elbo.len().max(2) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("variational fit", (FAMILY, 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(1.0..steps, (lo - pad)..(hi + pad))
        .map_err(&err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("ELBO (nats)")
        .label_style((FAMILY, 14))
        .draw()
        .map_err(&err)?;
    let in_range = |p: &&(f64, f64)| p.1 >= lo - pad && p.1 <= hi + pad;
    chart
        .draw_series(
            finite.iter().filter(in_range).map(|p| Circle::new(*p, 1, BLUE.mix(0.25).filled())),
        )
        .map_err(&err)?
        .label("batch ELBO")
        .legend(|(x, y)| Circle::new((x, y), 3, BLUE.mix(0.25).filled()));
    chart
        .draw_series(LineSeries::new(
            smooth.into_iter().filter(|p| in_range(&p)),
            BLUE.stroke_width(2),
        ))
        .map_err(&err)?
        .label(format!("mean of {window} steps"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    if let Some(z) = log_z {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(1.0, z), (steps, z)],
                8,
                5,
                RED.stroke_width(2),
            ))
            .map_err(&err)?
            .label("log Z")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(&err)?;
    root.present().map_err(&err)?;
    Ok(())
}

/// Pair plots of the chosen dimensions: model samples (blue) over data (grey).
pub fn pair_plot(
    path: &Path,
    samples: &[f64],
    data: Option<&[f64]>,
    cols: usize,
    dims: &[usize],
    names: &[String],
) -> Result<()> {
    init_font();
    let err = draw_err(path);
    let k = dims.len();
    let cell = 260u32;
    let root = BitMapBackend::new(path, (cell * k as u32, cell * k as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let panels = root.split_evenly((k, k));
    for (idx, panel) in panels.iter().enumerate() {
        let (r, c) = (idx / k, idx % k);
        let (dx, dy) = (dims[c], dims[r]);
        let column = |d: usize| -> Vec<f64> {
            let mut v: Vec<f64> = samples.chunks_exact(cols).map(|row| row[d]).collect();
            if let Some(data) = data {
                v.extend(data.chunks_exact(cols).map(|row| row[d]));
            }
            v
        };
        let (xlo, xhi) = bounds(&column(dx));
        if r == c {
            draw_histograms(panel, samples, data, cols, dx, (xlo, xhi), &names[dx], path)?;
            continue;
        }
        let (ylo, yhi) = bounds(&column(dy));
        let label = format!("{} vs {}", names[dy], names[dx]);
        let mut chart = ChartBuilder::on(panel)
            .caption(label, (FAMILY, 13))
            .margin(6)
            .x_label_area_size(20)
            .y_label_area_size(35)
            .build_cartesian_2d(xlo..xhi, ylo..yhi)
            .map_err(&err)?;
        chart.configure_mesh().disable_mesh().label_style((FAMILY, 10)).draw().map_err(&err)?;
        if let Some(data) = data {
            chart
                .draw_series(
                    points(data, cols, dx, dy)
                        .map(|p| Circle::new(p, 1, RGBColor(150, 150, 150).filled())),
                )
                .map_err(&err)?;
        }
        chart
            .draw_series(
                points(samples, cols, dx, dy).map(|p| Circle::new(p, 1, BLUE.mix(0.5).filled())),
            )
            .map_err(&err)?;
    }
    root.present().map_err(&err)?;
    Ok(())
}

const HISTOGRAM_BINS: usize = 30;

/// Normalized histogram (a density) of column `d` over `[lo, hi]`.
fn histogram(values: &[f64], cols: usize, d: usize, (lo, hi): (f64, f64)) -> Vec<f64> {
    let mut counts = vec![0.0; HISTOGRAM_BINS];
    let width = (hi - lo) / HISTOGRAM_BINS as f64;
    let mut n = 0.0;
    for v in values.chunks_exact(cols).map(|row| row[d]).filter(|v| v.is_finite()) {
        let bin = (((v - lo) / width) as usize).min(HISTOGRAM_BINS - 1);
        counts[bin] += 1.0;
        n += 1.0;
    }
    counts.iter().map(|c| c / (n * width).max(f64::MIN_POSITIVE)).collect()
}

/// The diagonal panel of a pair plot: histograms of samples (blue) and data (grey outline).
#[allow(clippy::too_many_arguments)]
fn draw_histograms(
    panel: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    samples: &[f64],
    data: Option<&[f64]>,
    cols: usize,
    d: usize,
    (lo, hi): (f64, f64),
    name: &str,
    path: &Path,
) -> Result<()> {
    let err = draw_err(path);
    let model_hist = histogram(samples, cols, d, (lo, hi));
    let data_hist = data.map(|v| histogram(v, cols, d, (lo, hi)));
    let top = model_hist.iter().chain(data_hist.iter().flatten()).fold(0.0f64, |a, b| a.max(*b));
    let mut chart = ChartBuilder::on(panel)
        .caption(name, (FAMILY, 13))
        .margin(6)
        .x_label_area_size(20)
        .y_label_area_size(35)
        .build_cartesian_2d(lo..hi, 0.0..top.max(1e-12) * 1.05)
        .map_err(&err)?;
    chart.configure_mesh().disable_mesh().label_style((FAMILY, 10)).draw().map_err(&err)?;
    let width = (hi - lo) / HISTOGRAM_BINS as f64;
    let bar = |i: usize, h: f64| [(lo + i as f64 * width, 0.0), (lo + (i + 1) as f64 * width, h)];
    chart
        .draw_series(
            model_hist
                .iter()
                .enumerate()
                .map(|(i, h)| Rectangle::new(bar(i, *h), BLUE.mix(0.4).filled())),
        )
        .map_err(&err)?;
    if let Some(hist) = data_hist {
        chart
            .draw_series(
                hist.iter()
                    .enumerate()
                    .map(|(i, h)| Rectangle::new(bar(i, *h), RGBColor(90, 90, 90).stroke_width(1))),
            )
            .map_err(&err)?;
    }
    Ok(())
}

fn points(
    values: &[f64],
    cols: usize,
    dx: usize,
    dy: usize,
) -> impl Iterator<Item = (f64, f64)> + '_ {
    values
        .chunks_exact(cols)
        .map(move |row| (row[dx], row[dy]))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
}

/// Writes `n` images (rows of `C H W` pixel values in `[0, levels)`, `C` = 1 grey or 3 RGB) as
/// a grid PNG, `zoom` screen pixels per image pixel, values clamped to the pixel range.
pub fn image_grid(
    path: &Path,
    values: &[f64],
    shape: [usize; 3],
    levels: u32,
    zoom: u32,
) -> Result<()> {
    let [c, h, w] = shape;
    if c != 1 && c != 3 {
        return Err(anyhow!(
            "image grids need 1 (grey) or 3 (RGB) channels; these images have {c}"
        ));
    }
    let d = c * h * w;
    let n = values.len() / d;
    let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
    let rows = n.div_ceil(cols).max(1);
    let gap = 2usize;
    let (cell_w, cell_h) = (w * zoom as usize + gap, h * zoom as usize + gap);
    let size = ((cols * cell_w + gap) as u32, (rows * cell_h + gap) as u32);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let scale = 255.0 / f64::from(levels - 1);
    let byte = |v: f64| (v.clamp(0.0, f64::from(levels - 1)) * scale).round() as u8;
    for (i, image) in values.chunks(d).enumerate() {
        let (x0, y0) = (gap + (i % cols) * cell_w, gap + (i / cols) * cell_h);
        for y in 0..h {
            for x in 0..w {
                let at = |ch: usize| byte(image[ch * h * w + y * w + x]);
                let color = if c == 1 {
                    RGBColor(at(0), at(0), at(0))
                } else {
                    RGBColor(at(0), at(1), at(2))
                };
                for dy in 0..zoom as usize {
                    for dx in 0..zoom as usize {
                        let p = (
                            (x0 + x * zoom as usize + dx) as i32,
                            (y0 + y * zoom as usize + dy) as i32,
                        );
                        root.draw_pixel(p, &color).map_err(|e| anyhow!("{e}"))?;
                    }
                }
            }
        }
    }
    root.present().map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// Draws note sequences as piano rolls, one panel per sequence stacked vertically: time runs
/// to the right (`zoom` pixels per step), pitch upwards (`zoom` pixels per modelled pitch), a
/// sounding note is a black cell, C notes get a faint grey line for orientation.
pub fn piano_roll(
    path: &Path,
    sequences: &[normflow::seq::NoteSequence],
    notes: normflow::seq::NoteRange,
) -> Result<()> {
    let zoom = 4usize;
    let gap = 6usize;
    let steps = sequences.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let (w, h) = (steps * zoom, notes.count * zoom);
    let size = ((w + 2 * gap) as u32, (sequences.len().max(1) * (h + gap) + gap) as u32);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let grey = RGBColor(225, 225, 225);
    for (i, seq) in sequences.iter().enumerate() {
        let y0 = gap + i * (h + gap);
        let cell = |t: usize, k: usize| {
            let (x, y) = ((gap + t * zoom) as i32, (y0 + h - (k + 1) * zoom) as i32);
            Rectangle::new([(x, y), (x + zoom as i32, y + zoom as i32)], BLACK.filled())
        };
        for k in (0..notes.count).filter(|&k| notes.pitch(k) % 12 == 0) {
            let y = (y0 + h - k * zoom - zoom / 2) as i32;
            root.draw(&PathElement::new(vec![(gap as i32, y), ((gap + w) as i32, y)], grey))
                .map_err(|e| anyhow!("{e}"))?;
        }
        root.draw(&Rectangle::new(
            [(gap as i32 - 1, y0 as i32 - 1), ((gap + w) as i32, (y0 + h) as i32)],
            grey,
        ))
        .map_err(|e| anyhow!("{e}"))?;
        for (t, step) in seq.iter().enumerate() {
            for &p in step.iter().filter(|&&p| notes.contains(p)) {
                root.draw(&cell(t, (p - notes.low) as usize)).map_err(|e| anyhow!("{e}"))?;
            }
        }
    }
    root.present().map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}
