use std::path::PathBuf;
use std::time::Duration;

/// Why a workload could not start. Each names the file and the stage.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a WebAssembly file (it does not start with the \\0asm magic)", path.display())]
    NotWasm { path: PathBuf },
    #[error(
        "{} is a core WebAssembly module, not a component: berth serves components that export \
         wasi:http/incoming-handler (build for wasm32-wasip2, or wrap it with `wasm-tools component new`)",
        path.display()
    )]
    CoreModule { path: PathBuf },
    #[error("compiling {}: {reason}", path.display())]
    Compile { path: PathBuf, reason: String },
    #[error(
        "{} does not export wasi:http/incoming-handler, so it cannot serve HTTP (it exports: {exports})",
        path.display()
    )]
    NoHandler { path: PathBuf, exports: String },
    #[error(
        "{} does not export wasi:cli/run, so it is not a command to run (it exports: {exports}); \
         an HTTP component is served: berth run FILE without arguments",
        path.display()
    )]
    NotCommand { path: PathBuf, exports: String },
    #[error("linking {}: {reason}", path.display())]
    Link { path: PathBuf, reason: String },
    #[error("instantiating {}: {reason}", path.display())]
    Instantiate { path: PathBuf, reason: String },
    #[error("granting directory {} as {guest}: {reason}", host.display())]
    Dir {
        host: PathBuf,
        guest: String,
        reason: String,
    },
    #[error("limits: {reason}")]
    Limits { reason: String },
    #[error("starting the wasm engine: {reason}")]
    Engine { reason: String },
}

/// Why one request got no answer from its workload.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{workload}: all {limit} request slots stayed busy for {waited:?}")]
    Busy {
        workload: String,
        limit: usize,
        waited: Duration,
    },
    #[error("{workload}: {failure}")]
    Guest {
        workload: String,
        failure: GuestFailure,
    },
    /// A command (a worker): it runs, it serves no requests.
    #[error("{workload} is a command: it serves no HTTP")]
    NotServing { workload: String },
}

/// How a guest failed a request.
#[derive(Debug, thiserror::Error)]
pub enum GuestFailure {
    #[error("trapped: {0}")]
    Trap(String),
    #[error("used more than its CPU time limit of {0:?}")]
    CpuTimeExceeded(Duration),
    #[error(
        "exceeded its memory limit of {} (asked for {requested} bytes in all); then {trap}",
        binary_units(*limit)
    )]
    MemoryExceeded {
        limit: u64,
        requested: u64,
        trap: String,
    },
    #[error("returned without sending a response")]
    NoResponse,
    #[error("answered with an error: {0}")]
    ErrorResponse(String),
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    #[error("could not be instantiated: every instance slot of the engine is in use")]
    PoolExhausted,
    #[error("did not start its response within {0:?}")]
    ResponseTimeout(Duration),
    #[error("could not be reached: {0}")]
    Unreachable(String),
}

/// `64Mi` for 67108864: bytes as Kubernetes writes a quantity of them.
pub fn binary_units(bytes: u64) -> String {
    for (shift, suffix) in [
        (60, "Ei"),
        (50, "Pi"),
        (40, "Ti"),
        (30, "Gi"),
        (20, "Mi"),
        (10, "Ki"),
    ] {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}
