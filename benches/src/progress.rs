//! The progress bar every benchmark draws on stderr while it runs: a full run takes
//! minutes, and a bar that names the current step shows it has not hung.
//!
//! indicatif hides the bar by itself when stderr is not a terminal (CI, a pipe), so
//! a log of the run holds the report, not thousands of redraws.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `steps` steps, or a hidden one when the user asked for none.
pub fn bar(steps: usize, show: bool) -> ProgressBar {
    let bar = if show { ProgressBar::new(steps as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}
