//! A progress bar with an ETA over the whole of an experiment.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `total` units of work; hidden when `quiet` (tests) or stderr is not a terminal
/// that can show it.
pub fn bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{wide_bar}] {pos}/{len} ETA {eta_precise} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}
