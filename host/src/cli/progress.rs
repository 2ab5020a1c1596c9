//! Progress on stderr: a live bar when stderr is a terminal, plain lines
//! (one per finished step) when it is a pipe or a log file.

use std::io::IsTerminal as _;

use berth_registry::client::{BlobProgress, TransferProgress};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

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

/// Per-blob progress for pulls and pushes: one bar per blob under a shared
/// header on a terminal, one line per finished blob otherwise.
pub fn transfers(prefix: &'static str) -> Box<dyn TransferProgress> {
    if std::io::stderr().is_terminal() {
        Box::new(TerminalTransfers {
            bars: MultiProgress::new(),
        })
    } else {
        Box::new(LineTransfers { prefix })
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.trim_start_matches("sha256:");
    &hex[..12.min(hex.len())]
}

struct LineTransfers {
    prefix: &'static str,
}

impl TransferProgress for LineTransfers {
    fn blob(&self, digest: &str, size: u64, _verb: &str) -> Box<dyn BlobProgress> {
        Box::new(LineBlob {
            prefix: self.prefix,
            digest: short(digest).to_owned(),
            size,
        })
    }
    fn note(&self, line: &str) {
        eprintln!("{}: {line}", self.prefix);
    }
}

struct LineBlob {
    prefix: &'static str,
    digest: String,
    size: u64,
}

impl BlobProgress for LineBlob {
    fn advance(&mut self, _: u64) {}
    fn done(&mut self, outcome: &str) {
        eprintln!(
            "{}: {} {outcome} ({})",
            self.prefix,
            self.digest,
            indicatif::HumanBytes(self.size)
        );
    }
}

struct TerminalTransfers {
    bars: MultiProgress,
}

impl TransferProgress for TerminalTransfers {
    fn blob(&self, digest: &str, size: u64, verb: &str) -> Box<dyn BlobProgress> {
        let bar = self.bars.add(ProgressBar::new(size)).with_style(
            ProgressStyle::with_template(
                "{prefix} {msg:10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(short(digest).to_owned());
        bar.set_message(verb.to_owned());
        Box::new(TerminalBlob { bar })
    }
    fn note(&self, line: &str) {
        let _ = self.bars.println(line);
    }
}

struct TerminalBlob {
    bar: ProgressBar,
}

impl BlobProgress for TerminalBlob {
    fn advance(&mut self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn done(&mut self, outcome: &str) {
        self.bar.set_position(self.bar.length().unwrap_or(0));
        self.bar.finish_with_message(outcome.to_owned());
    }
}
