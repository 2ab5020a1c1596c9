//! Where a guest's stdout and stderr go: into berth's log, a line per event,
//! tagged with the workload and the stream.
//!
//! Not the host's own stdout/stderr: a guest could then write into what
//! scripts parse, forge log lines, or block a worker on a full pipe. Control
//! characters are escaped for the same reason, and overlong lines are cut.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use berth_runtime::{LogSink, Stream};

/// A line longer than this is logged in pieces.
const MAX_LINE: usize = 16 << 10;

#[derive(Clone)]
pub(super) struct GuestOutput {
    workload: Arc<str>,
    stream: Stream,
    log: Option<Arc<dyn LogSink>>,
}

impl GuestOutput {
    pub(super) fn new(workload: Arc<str>, stream: Stream, log: Option<Arc<dyn LogSink>>) -> Self {
        GuestOutput {
            workload,
            stream,
            log,
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            output: self.clone(),
            pending: Vec::new(),
        })
    }
}

struct LineWriter {
    output: GuestOutput,
    pending: Vec<u8>,
}

impl LineWriter {
    fn emit(&self, line: &[u8]) {
        let text = escape(line);
        if let Some(log) = &self.output.log {
            log.write_line(self.output.stream, &text);
        }
        tracing::info!(
            target: "berth::guest",
            workload = &*self.output.workload,
            stream = self.output.stream.as_str(),
            "{text}"
        );
    }

    fn emit_complete_lines(&mut self) {
        let mut start = 0;
        while let Some(end) = self.pending[start..].iter().position(|&b| b == b'\n') {
            self.emit(&self.pending[start..start + end]);
            start += end + 1;
        }
        self.pending.drain(..start);
        while self.pending.len() >= MAX_LINE {
            let piece: Vec<u8> = self.pending.drain(..MAX_LINE).collect();
            self.emit(&piece);
        }
    }

    fn emit_rest(&mut self) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit(&rest);
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        self.emit_complete_lines();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.emit_rest();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit_rest();
    }
}

/// Lossy UTF-8 with control characters (but tabs) written as escapes.
fn escape(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut out = String::with_capacity(line.len());
    for c in String::from_utf8_lossy(line).chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_lines() {
        assert_eq!(escape(b"ok\ttab"), "ok\ttab");
        assert_eq!(escape(b"fake\x1b[31m red"), "fake\\u{1b}[31m red");
        assert_eq!(escape(b"windows line\r"), "windows line");
        assert_eq!(escape(b"a\rb"), "a\\rb");
    }

    #[test]
    fn writes_are_split_into_lines_and_long_lines_cut() {
        let mut w = LineWriter {
            output: GuestOutput::new("t".into(), Stream::Stdout, None),
            pending: Vec::new(),
        };
        w.pending.extend_from_slice(b"one\ntwo\nthr");
        w.emit_complete_lines();
        assert_eq!(w.pending, b"thr");
        w.pending.extend(std::iter::repeat_n(b'x', MAX_LINE + 5));
        w.emit_complete_lines();
        assert_eq!(w.pending.len(), 8);
    }
}
