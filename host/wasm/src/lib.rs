//! The wasm backend: wasmtime with the component model, WASI 0.2 and wasi:http.
//!
//! One [`WasmRuntime`] owns the engine, its epoch ticker and a linker holding
//! the WASI and wasi:http host functions. Starting a workload compiles its
//! component once (cached on disk), checks it exports
//! `wasi:http/incoming-handler`, and keeps the `ProxyPre`; every request then
//! gets a fresh instance from the pool, with the capabilities its
//! [`sandbox::Sandbox`] grants and the limits in `limits.rs`.

mod cache;
mod command;
mod engine;
mod epoch;
mod limits;
mod load;
mod output;
mod sandbox;
mod sockets;
mod usage;
mod worker;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::Linker;

pub use command::{Finished, Invocation, TRAPPED};
pub use load::{BinaryKind, Worlds, binary_kind};
pub use sandbox::interface_addresses;

use berth_runtime::{BoxFuture, Runtime, RuntimeError, Workload, WorkloadSpec};
use epoch::EpochTicker;
use workload::{Host, WasmWorkload};

/// Settings for a [`WasmRuntime`].
#[derive(Debug, Clone, Default)]
pub struct WasmRuntimeConfig {
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Instances from a pool of slots set up front: for serving many
    /// requests. A single run (`berth run` of a command) does without the
    /// pool, whose setup would cost more than the run.
    pub pooled: bool,
}

pub struct WasmRuntime {
    /// The engine, and compiled components on disk.
    artifacts: Arc<cache::Artifacts>,
    linker: Arc<Linker<Host>>,
    /// Components already loaded, by their bytes' sha256 and by the file
    /// they came from: replicas of one image share one compiled component
    /// (its code mapped once) instead of each loading its own copy.
    loaded: Arc<std::sync::Mutex<load::Loaded>>,
    _ticker: EpochTicker,
}

impl WasmRuntime {
    pub fn new(config: WasmRuntimeConfig) -> Result<Self, RuntimeError> {
        let engine_error = |reason: String| RuntimeError::Engine { reason };
        let engine =
            engine::new_engine(config.pooled).map_err(|e| engine_error(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| engine_error(format!("adding WASI to the linker: {e:#}")))?;
        sockets::add_lookup_to_linker(&mut linker)
            .map_err(|e| engine_error(format!("adding name lookups to the linker: {e:#}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| engine_error(format!("adding wasi:http to the linker: {e:#}")))?;
        let ticker = EpochTicker::start(engine.clone())
            .map_err(|e| engine_error(format!("starting the epoch ticker: {e}")))?;
        Ok(WasmRuntime {
            artifacts: Arc::new(cache::Artifacts::new(engine, config.cache_dir.as_deref())),
            linker: Arc::new(linker),
            loaded: Arc::default(),
            _ticker: ticker,
        })
    }
}

impl WasmRuntime {
    /// Compiles `path` into the compile cache (and checks it can be served
    /// or run), so the first replica of an image starts without compiling.
    /// Blocking: the compiler's work.
    pub fn precompile(&self, path: &std::path::Path) -> Result<(), RuntimeError> {
        let bytes = load::read(path)?;
        let (_, exports) = load::compile(&self.artifacts, path, &bytes, None)?;
        let worlds = load::worlds(&exports);
        if worlds.http || worlds.command {
            return Ok(());
        }
        Err(RuntimeError::NoHandler {
            path: path.to_owned(),
            exports: load::listed(&exports),
        })
    }

    /// What the component at `path` can be run as. Blocking: it is
    /// compiled (or taken from the compile cache) to be asked.
    pub fn worlds(&self, path: &std::path::Path) -> Result<Worlds, RuntimeError> {
        let bytes = load::read(path)?;
        let (_, exports) = load::compile(&self.artifacts, path, &bytes, None)?;
        Ok(load::worlds(&exports))
    }

    /// Whether the component at `path` is served over HTTP once started (an
    /// HTTP handler, or a component of both worlds) rather than run to its
    /// exit. Loads it as [`Runtime::start`] does and keeps it loaded, so the
    /// start that follows does not load it again. Blocking: the compiler's
    /// work.
    pub fn serves_http(&self, path: &std::path::Path) -> Result<bool, RuntimeError> {
        let pre = load::load(&self.artifacts, &self.linker, path, &self.loaded)?;
        Ok(matches!(pre, load::Pre::Http(..)))
    }

    /// Runs the command component of `spec` to completion, with its grants
    /// and limits (`cpu_time` is then the whole run's).
    pub async fn run_command(
        &self,
        spec: WorkloadSpec,
        invocation: Invocation,
    ) -> Result<Finished, RuntimeError> {
        let (artifacts, linker, path) = (
            self.artifacts.clone(),
            self.linker.clone(),
            spec.component.clone(),
        );
        let pre = tokio::task::spawn_blocking(move || command::load(&artifacts, &linker, &path))
            .await
            .map_err(|e| RuntimeError::Engine {
                reason: format!("loading task failed: {e}"),
            })??;
        command::run(pre, spec, invocation, Arc::default()).await
    }
}

impl Runtime for WasmRuntime {
    fn start(&self, spec: WorkloadSpec) -> BoxFuture<'_, Result<Arc<dyn Workload>, RuntimeError>> {
        let artifacts = self.artifacts.clone();
        let linker = self.linker.clone();
        let loaded = self.loaded.clone();
        Box::pin(async move {
            let path = spec.component.clone();
            let pre = tokio::task::spawn_blocking(move || {
                load::load(&artifacts, &linker, &path, &loaded)
            })
            .await
            .map_err(|e| RuntimeError::Engine {
                reason: format!("loading task failed: {e}"),
            })??;
            Ok(match pre {
                load::Pre::Http(pre, Some(run)) if spec.invoked => {
                    let served = WasmWorkload::start(spec.clone(), pre).await?;
                    Arc::new(worker::Beside::new(
                        served,
                        worker::CommandWorkload::start(run, spec),
                    )) as Arc<dyn Workload>
                }
                load::Pre::Http(pre, _) => {
                    Arc::new(WasmWorkload::start(spec, pre).await?) as Arc<dyn Workload>
                }
                load::Pre::Command(pre) => {
                    Arc::new(worker::CommandWorkload::start(pre, spec)) as Arc<dyn Workload>
                }
            })
        })
    }
}
