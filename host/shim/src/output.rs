//! A task's stdout and stderr into the fifos containerd gave it (`ctr
//! run`'s terminal, the CRI's container log: so `kubectl logs` works on a
//! cluster): a wasm guest's lines through [`Fifos`], a Linux container's
//! process writing to them itself.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use std::os::unix::fs::OpenOptionsExt as _;

use berth_runtime::{LogSink, Stream};

const NONBLOCK: i32 = rustix::fs::OFlags::NONBLOCK.bits() as i32;

#[derive(Debug)]
pub struct Fifos {
    stdout: Option<Mutex<File>>,
    stderr: Option<Mutex<File>>,
}

impl Fifos {
    /// Opens what containerd named for `stdout` and `stderr` (see [`open`]),
    /// non-blocking: a reader that stops reading (containerd restarting)
    /// costs lines, never a stalled guest.
    pub fn open(stdout: &str, stderr: &str) -> std::io::Result<Fifos> {
        let open = |uri| Ok::<_, std::io::Error>(open(uri, true)?.map(Mutex::new));
        Ok(Fifos {
            stdout: open(stdout)?,
            stderr: open(stderr)?,
        })
    }
}

/// A Linux container's stdout and stderr: what containerd named, handed to
/// its process as they are (blocking, as runc hands them: a process is not
/// ready for EAGAIN on its stdout), or /dev/null for what it did not name.
pub fn streams(stdout: &str, stderr: &str) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let open = |uri| match open(uri, false)? {
        Some(file) => Ok(OwnedFd::from(file)),
        None => std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map(OwnedFd::from),
    };
    Ok((open(stdout)?, open(stderr)?))
}

/// Opens one output containerd named: a fifo's path (read-write, as a
/// write-only open would wait for a reader), a `file://` URI (appended to,
/// as `ctr run --log-uri` asks), or nothing.
fn open(uri: &str, nonblocking: bool) -> std::io::Result<Option<File>> {
    if uri.is_empty() {
        return Ok(None);
    }
    let mut options = std::fs::OpenOptions::new();
    let path = match uri.split_once("://") {
        None | Some(("fifo", _)) => {
            options.read(true).write(true);
            if nonblocking {
                options.custom_flags(NONBLOCK);
            }
            uri.split_once("://").map_or(uri, |(_, path)| path)
        }
        Some(("file", path)) => {
            options.create(true).append(true);
            path
        }
        Some((scheme, _)) => {
            return Err(std::io::Error::other(format!(
                "{uri}: berth's shim writes output to fifos and file:// URIs, not {scheme}://"
            )));
        }
    };
    options
        .open(path)
        .map(Some)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))
}

impl LogSink for Fifos {
    fn write_line(&self, stream: Stream, line: &str) {
        let fifo = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        if let Some(fifo) = fifo {
            let mut file = fifo.lock().unwrap_or_else(|e| e.into_inner());
            // One write per line, so lines of the two streams never
            // interleave mid-line; a full pipe drops the rest of it.
            let _ = file.write_all(format!("{line}\n").as_bytes());
        }
    }
}
