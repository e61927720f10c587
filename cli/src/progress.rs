//! Progress bars (indicatif) behind core's `Progress` trait: drawn on a terminal only.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use puce_core::progress::Progress;

/// A bar counting files and bytes.
pub struct Bar {
    bar: ProgressBar,
    quiet: bool,
    files: AtomicU64,
}

impl Bar {
    /// A bar with `verb` as prefix; hidden when stderr is not a terminal or `quiet`.
    pub fn new(verb: &str, quiet: bool) -> Bar {
        let visible = !quiet && std::io::stderr().is_terminal();
        let bar = if visible {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5))
        } else {
            ProgressBar::hidden()
        };
        let style = ProgressStyle::with_template(
            "{prefix} {spinner} {elapsed_precise} {msg} {bytes} ({bytes_per_sec})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_prefix(verb.to_string());
        if visible {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Bar {
            bar,
            quiet,
            files: AtomicU64::new(0),
        }
    }

    /// Remove the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn set_total(&self, _files: u64, bytes: u64) {
        if bytes > 0 {
            self.bar.set_length(bytes);
            if let Ok(s) = ProgressStyle::with_template(
                "{prefix} {wide_bar} {msg} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            ) {
                self.bar.set_style(s);
            }
        }
    }
    fn add(&self, files: u64, bytes: u64) {
        self.bar.inc(bytes);
        if files > 0 {
            let n = self.files.fetch_add(files, Ordering::Relaxed) + files;
            self.bar.set_message(format!("{n} files"));
        }
    }
    fn warn(&self, message: &str) {
        if !self.quiet {
            self.bar.suspend(|| eprintln!("warning: {message}"));
        }
    }
}
