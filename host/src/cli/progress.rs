//! Progress on stderr: a live bar when stderr is a terminal, plain lines
//! (one per finished step) when it is a pipe or a log file.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressStyle};

use crate::progress::Progress;

/// The reporter for a command; `prefix` starts each plain line.
pub fn stderr(prefix: &'static str) -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(Terminal { bar: None })
    } else {
        Box::new(Lines { prefix })
    }
}

struct Lines {
    prefix: &'static str,
}

impl Progress for Lines {
    fn note(&mut self, line: &str) {
        eprintln!("{}: {line}", self.prefix);
    }
    fn begin(&mut self, _: &str, _: Option<u64>) {}
    fn advance(&mut self, _: u64) {}
}

struct Terminal {
    bar: Option<ProgressBar>,
}

impl Progress for Terminal {
    fn note(&mut self, line: &str) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        eprintln!("{line}");
    }

    fn begin(&mut self, what: &str, total: Option<u64>) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                    .expect("a valid template"),
            ),
        };
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        self.bar = Some(bar);
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
