//! The training progress bar.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use normflow::train::EpochStats;

/// One bar over all batches of the run, with the latest epoch's losses and speed in its message.
/// Drawn on stderr, only when it is a terminal and `--json` is off.
pub struct TrainProgressBar {
    bar: ProgressBar,
    epochs_done: u64,
}

impl TrainProgressBar {
    /// A bar; hidden when `quiet`.
    pub fn new(quiet: bool) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if quiet {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let style = ProgressStyle::with_template(
            "{spinner} epoch {prefix} [{bar:30}] {percent:>3}% ETA {eta} | {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        Self { bar, epochs_done: 0 }
    }

    /// After each batch: `done` of `total` in the current epoch.
    pub fn batch(&mut self, done: usize, total: usize) {
        if self.bar.length().is_none() {
            return;
        }
        self.bar.set_position(self.epochs_done * total as u64 + done as u64);
    }

    /// After each epoch.
    pub fn epoch(&mut self, stats: &EpochStats, epochs: usize) {
        self.epochs_done = stats.epoch as u64;
        let batches = self.bar.position().checked_div(self.epochs_done.max(1)).unwrap_or(0).max(1);
        self.bar.set_length(batches * epochs as u64);
        self.bar.set_position(batches * self.epochs_done);
        self.bar.set_prefix(format!("{}/{}", stats.epoch, epochs));
        let val = stats.val_log_prob.map(|v| format!(" val {:.4}", -v)).unwrap_or_default();
        self.bar.set_message(format!(
            "train {:.4}{val} | {:.0} rows/s",
            stats.train_loss, stats.rows_per_second
        ));
    }

    /// Clears the bar at the end of the run.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The variational-inference progress bar: one tick per step, with a moving average of the
/// batch ELBO and the annealing temperature in its message. Drawn on stderr, only when it is a
/// terminal and `--json` is off.
pub struct ViProgressBar {
    bar: ProgressBar,
    recent: std::collections::VecDeque<f64>,
}

/// Steps in the moving average the bar shows.
const ELBO_WINDOW: usize = 50;

impl ViProgressBar {
    /// A bar over `steps` steps; hidden when `quiet`.
    pub fn new(steps: usize, quiet: bool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stderr());
        if quiet {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let style = ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{bar:30}] {percent:>3}% ETA {eta} | {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        Self { bar, recent: std::collections::VecDeque::with_capacity(ELBO_WINDOW) }
    }

    /// After each step.
    pub fn step(&mut self, stats: &normflow::vi::ViStep) {
        if stats.elbo.is_finite() {
            if self.recent.len() == ELBO_WINDOW {
                self.recent.pop_front();
            }
            self.recent.push_back(stats.elbo);
        }
        self.bar.set_position(stats.step as u64);
        let mean = self.recent.iter().sum::<f64>() / self.recent.len().max(1) as f64;
        let beta =
            if stats.beta < 1.0 { format!(" | beta {:.3}", stats.beta) } else { String::new() };
        self.bar.set_message(format!("ELBO {mean:.4}{beta}"));
    }

    /// Clears the bar at the end of the run.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
