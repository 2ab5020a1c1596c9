//! berth's runtime seam: the one interface between its control plane and
//! the code it runs. The router and the kubelet only ever see [`Runtime`]
//! and [`Workload`]: a runtime turns a [`WorkloadSpec`] (what to run plus
//! the [`Capabilities`] it is granted) into a running workload, and a
//! workload serves HTTP requests. The backends are crates of their own
//! (`berth-wasm`, `berth-linux`) that keep their engine types to
//! themselves, so each (and a containerd shim) builds without the others
//! or the control plane. Errors come back as [`RuntimeError`] (could not
//! start) or [`ServeError`] (one request failed), and the caller decides
//! what the client sees.

mod capabilities;
mod error;
pub mod trace;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

pub use capabilities::{
    Capabilities, DirGrant, Limits, OutboundRule, ServiceTarget, Services, TcpGrant, grant_list,
};
pub use error::{GuestFailure, RuntimeError, ServeError};

/// An error inside a streamed body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body as it crosses the runtime seam: streamed, type-erased.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A future a trait object can return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What to run and what it may touch.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Shown in logs; a pod name later on.
    pub name: String,
    /// The component file to run.
    pub component: PathBuf,
    /// A command's arguments, its name first (`argv`); a served component
    /// takes none.
    pub args: Vec<String>,
    /// Whether it was given arguments past its name (a container's `args`
    /// or a `command` of more than its name, `berth run … -- ARGS`,
    /// `process.args` past the component). A component of both worlds then runs
    /// `wasi:cli/run` beside serving HTTP, and ends when `run` does; asked
    /// nothing, it is only served, because wstd's HTTP servers export a
    /// `run` that is never meant to be called.
    pub invoked: bool,
    pub capabilities: Capabilities,
    pub limits: Limits,
    /// Where the guest's output lines also go (a pod container's log,
    /// containerd's fifos), besides berth's log.
    pub log: Option<Arc<dyn LogSink>>,
}

/// Which standard stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Where a workload's output lines go.
pub trait LogSink: Send + Sync + std::fmt::Debug {
    /// One line, without its newline. Never blocks for long: a sink that
    /// cannot keep up loses lines rather than stall the guest.
    fn write_line(&self, stream: Stream, line: &str);
}

impl LogSink for LogFile {
    /// Both streams into the one file, as the kubelet's log holds them.
    fn write_line(&self, _: Stream, line: &str) {
        LogFile::write_line(self, line);
    }
}

/// An append-only file of a workload's output, a line per write. Created
/// (with its directory) on the first line: most workloads never write, and
/// a thousand replicas starting should not cost three thousand mkdirs.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    /// The open file and how many bytes it holds.
    file: std::sync::Mutex<Option<(std::fs::File, u64)>>,
    /// Past this size the log is rotated: it becomes `NAME.1` (the older
    /// ones `NAME.2`…), and a new one begins.
    max_bytes: u64,
    /// Files kept, the current one included; the oldest goes.
    max_files: u32,
}

/// The kubelet's defaults: containerLogMaxSize 10Mi, containerLogMaxFiles 5.
pub const LOG_MAX_BYTES: u64 = 10 << 20;
pub const LOG_MAX_FILES: u32 = 5;

impl LogFile {
    pub fn new(path: PathBuf) -> LogFile {
        LogFile::with_limits(path, LOG_MAX_BYTES, LOG_MAX_FILES)
    }

    pub fn with_limits(path: PathBuf, max_bytes: u64, max_files: u32) -> LogFile {
        LogFile {
            path,
            file: std::sync::Mutex::new(None),
            max_bytes,
            max_files: max_files.max(1),
        }
    }

    /// Appends one line. A full disk (or an unwritable directory) loses the
    /// line rather than stall the guest.
    pub fn write_line(&self, line: &str) {
        use std::io::Write as _;
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let needed = line.len() as u64 + 1;
        if let Some((_, size)) = file.as_ref()
            && *size > 0
            && size + needed > self.max_bytes
        {
            *file = None;
            self.rotate();
        }
        if file.is_none() {
            *file = open_append(&self.path)
                .and_then(|f| Ok((f.metadata()?.len(), f)))
                .map(|(size, f)| (f, size))
                .inspect_err(|e| {
                    tracing::warn!("opening the log {}: {e}", self.path.display());
                })
                .ok();
        }
        if let Some((file, size)) = file.as_mut()
            && file.write_all(format!("{line}\n").as_bytes()).is_ok()
        {
            *size += needed;
        }
    }

    /// `NAME` → `NAME.1`, `NAME.1` → `NAME.2`…, the oldest dropped.
    fn rotate(&self) {
        let numbered = |n: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.max_files == 1 {
            let _ = std::fs::remove_file(&self.path);
            return;
        }
        let _ = std::fs::remove_file(numbered(self.max_files - 1));
        for n in (1..self.max_files - 1).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        if let Err(e) = std::fs::rename(&self.path, numbered(1)) {
            tracing::warn!("rotating the log {}: {e}", self.path.display());
        }
    }
}

fn open_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// A backend that can start workloads.
pub trait Runtime: Send + Sync {
    /// Prepares `spec` to serve: loads and checks the code, grants its
    /// capabilities. Fails before any request if the code cannot be served.
    fn start(&self, spec: WorkloadSpec) -> BoxFuture<'_, Result<Arc<dyn Workload>, RuntimeError>>;
}

/// A started workload: serves requests until dropped.
pub trait Workload: Send + Sync {
    fn name(&self) -> &str;

    /// Serves one request. The response body may still be streaming from the
    /// guest after this resolves.
    fn serve(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, ServeError>>;

    /// [`Workload::serve`] for a service whose port targets container port
    /// `port`. Only a workload listening on several ports (a Linux
    /// container) cares; wasm answers on any.
    fn serve_on(
        &self,
        request: http::Request<Body>,
        port: Option<u16>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, ServeError>> {
        let _ = port;
        self.serve(request)
    }

    /// A connection to the workload's `port` (its only one when `None`),
    /// for a Service proxied at layer 4; `None` for a workload that has no
    /// sockets (a wasm component answers HTTP in-process, through
    /// [`Workload::serve_on`]).
    fn connect(
        &self,
        port: Option<u16>,
    ) -> Option<BoxFuture<'static, std::io::Result<tokio::net::TcpStream>>> {
        let _ = port;
        None
    }

    /// Resolves when the workload ends by itself (a container's process
    /// exiting). A wasm workload never does: each request is its own run.
    fn exited(&self) -> BoxFuture<'static, Exited> {
        Box::pin(std::future::pending())
    }

    /// What it has used so far, as the kubelet's cAdvisor reports a
    /// container's: for `kubectl top`, autoscaling and `/metrics`.
    fn usage(&self) -> Usage {
        Usage::default()
    }

    /// Leaves the workload running for the next berth to adopt (a daemon
    /// handing over to another); false when it cannot outlive this process,
    /// and is to be stopped as usual.
    fn leave_running(&self) -> bool {
        false
    }

    /// Stops the workload: asks it to end, and makes it after `grace`.
    /// Resolves once it has. (A wasm workload stops when dropped.)
    fn stop(&self, grace: std::time::Duration) -> BoxFuture<'static, ()> {
        let _ = grace;
        Box::pin(async {})
    }
}

/// A workload's resource use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time used since it started (a cumulative counter).
    pub cpu: std::time::Duration,
    /// Memory in use now, in bytes: a container's working set (what the
    /// kernel could not reclaim), a wasm workload's live linear memories.
    pub memory: u64,
    /// Wasm instances alive now; `None` for a workload that has none.
    pub instances: Option<u64>,
    /// What it has lost to running out of memory since it started (a
    /// cumulative counter): processes the kernel's OOM killer ended in a
    /// Linux container, instances of a wasm workload that asked for more
    /// than their memory limit.
    pub oom_kills: u64,
}

/// How a workload ended by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exited {
    pub code: i32,
    /// Kubernetes' reason: Completed, Error or OOMKilled.
    pub reason: &'static str,
    /// Why it could not run, when it never did (a setup or exec failure).
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::LogFile;

    #[test]
    fn a_log_past_its_size_rotates_and_keeps_its_last_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let log = LogFile::with_limits(path.clone(), 100, 3);
        for i in 0..100 {
            log.write_line(&format!("line {i:03} of the log"));
        }
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        let current = read("app.log");
        assert!(current.len() <= 100, "{}", current.len());
        assert!(current.ends_with("line 099 of the log\n"), "{current}");
        // The two before it, and nothing older.
        assert!(read("app.log.1").len() <= 100);
        assert!(read("app.log.2").len() <= 100);
        assert!(!dir.path().join("app.log.3").exists());
        let mut files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["app.log", "app.log.1", "app.log.2"]);
    }
}
