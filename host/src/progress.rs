//! How long-running work (builds, and later pulls and pushes) reports what
//! it is doing, without knowing whether anyone watches a terminal: the CLI
//! draws bars on a terminal and prints plain lines otherwise.

pub trait Progress {
    /// A step that is done, as one line.
    fn note(&mut self, line: &str);
    /// Work on `what` began; `total` bytes if known.
    fn begin(&mut self, what: &str, total: Option<u64>);
    /// `bytes` more of the work begun last are done.
    fn advance(&mut self, bytes: u64);
}

/// Reports nothing; for callers that have no one to tell.
pub struct Silent;

impl Progress for Silent {
    fn note(&mut self, _: &str) {}
    fn begin(&mut self, _: &str, _: Option<u64>) {}
    fn advance(&mut self, _: u64) {}
}
