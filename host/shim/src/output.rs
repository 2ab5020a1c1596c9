//! The guest's stdout and stderr into the fifos containerd gave the task
//! (`ctr run`'s terminal, the CRI's container log: so `kubectl logs`
//! works on a cluster).

use std::fs::File;
use std::io::Write as _;
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
    /// Opens what containerd named for `stdout` and `stderr`: a fifo's
    /// path (read-write, as a write-only open would wait for a reader), a
    /// `file://` URI (appended to, as `ctr run --log-uri` asks), or nothing.
    pub fn open(stdout: &str, stderr: &str) -> std::io::Result<Fifos> {
        let open = |uri: &str| -> std::io::Result<Option<Mutex<File>>> {
            if uri.is_empty() {
                return Ok(None);
            }
            let mut options = std::fs::OpenOptions::new();
            let path = match uri.split_once("://") {
                // Non-blocking: a reader that stops reading (containerd
                // restarting) costs lines, never a stalled guest.
                None => {
                    options.read(true).write(true).custom_flags(NONBLOCK);
                    uri
                }
                Some(("fifo", path)) => {
                    options.read(true).write(true).custom_flags(NONBLOCK);
                    path
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
            let file = options
                .open(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))?;
            Ok(Some(Mutex::new(file)))
        };
        Ok(Fifos {
            stdout: open(stdout)?,
            stderr: open(stderr)?,
        })
    }
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
