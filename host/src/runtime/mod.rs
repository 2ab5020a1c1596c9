//! Runtimes: the one seam between berth's control plane and the code it runs.
//!
//! The router and (later) the scheduler only ever see [`Runtime`] and
//! [`Workload`]: a runtime turns a [`WorkloadSpec`] — what to run plus the
//! [`Capabilities`] it is granted — into a running workload, and a workload
//! serves HTTP requests. Backends live in their own folders (`wasm/` today)
//! and keep their engine types to themselves; errors come back as
//! [`RuntimeError`] (could not start) or [`ServeError`] (one request failed),
//! and the caller decides what the client sees.

mod capabilities;
mod error;
pub mod linux;
pub mod wasm;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

pub use capabilities::{Capabilities, DirGrant, Limits, OutboundRule, ServiceTarget, Services};
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
    pub capabilities: Capabilities,
    pub limits: Limits,
    /// Where the guest's output lines also go (a pod container's log), besides berth's log.
    pub log: Option<Arc<LogFile>>,
}

/// An append-only file of a workload's output, a line per write. Created
/// (with its directory) on the first line: most workloads never write, and
/// a thousand replicas starting should not cost three thousand mkdirs.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: std::sync::Mutex<Option<std::fs::File>>,
}

impl LogFile {
    pub fn new(path: PathBuf) -> LogFile {
        LogFile {
            path,
            file: std::sync::Mutex::new(None),
        }
    }

    /// Appends one line. A full disk (or an unwritable directory) loses the
    /// line rather than stall the guest.
    pub fn write_line(&self, line: &str) {
        use std::io::Write as _;
        let mut file = self.file.lock().expect("lock");
        if file.is_none() {
            *file = open_append(&self.path)
                .inspect_err(|e| {
                    tracing::warn!("opening the log {}: {e}", self.path.display());
                })
                .ok();
        }
        if let Some(file) = file.as_mut() {
            let _ = file.write_all(format!("{line}\n").as_bytes());
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

    /// Resolves when the workload ends by itself (a container's process
    /// exiting). A wasm workload never does: each request is its own run.
    fn exited(&self) -> BoxFuture<'static, Exited> {
        Box::pin(std::future::pending())
    }

    /// Stops the workload: asks it to end, and makes it after `grace`.
    /// Resolves once it has. (A wasm workload stops when dropped.)
    fn stop(&self, grace: std::time::Duration) -> BoxFuture<'static, ()> {
        let _ = grace;
        Box::pin(async {})
    }
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
