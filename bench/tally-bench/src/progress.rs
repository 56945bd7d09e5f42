//! Progress bars on a terminal (`indicatif`), and nothing at all otherwise.
//!
//! Runs take seconds to minutes, so a person at a terminal wants to see that
//! something happens; scripts read only the JSON line on stdout, so bars go to
//! stderr and are hidden when it is not a terminal (indicatif checks that).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether to draw progress bars.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    /// No bars (library use, tests).
    pub fn hidden() -> Self {
        Progress { enabled: false }
    }

    /// Bars on stderr when it is a terminal.
    pub fn stderr() -> Self {
        Progress {
            enabled: std::io::stderr().is_terminal(),
        }
    }

    /// A bar counting to `len`, labelled `label`.
    pub fn bar(&self, len: u64, label: &str) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len} {per_sec} {elapsed_precise} {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        bar
    }
}
