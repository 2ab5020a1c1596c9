//! Commands: components exporting `wasi:cli/run`, run to completion as
//! `wasmtime run` runs them, with the same grants and limits as a served
//! component. Their exit code is the guest's: `exit-with-code`'s, or 0 and
//! 1 for WASI 0.2's `exit`, which says only success or failure (what
//! Rust's `std::process::exit` calls today), and for `run` returning; 134
//! (an abort's, as wasmtime's) when the guest traps, runs into a limit
//! or cannot be instantiated, which is then named.

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime_wasi::p2::bindings::CommandPre;

use super::cache::Artifacts;
use super::limits::CpuQuota;
use super::load;
use super::sandbox::Sandbox;
use super::usage::Meter;
use super::workload::{Host, classify, new_store};
use berth_runtime::{GuestFailure, RuntimeError, WorkloadSpec};

/// What to give a command besides its spec's grants.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// Its arguments, its own name first (`argv[0]`).
    pub args: Vec<String>,
    /// Whether it reads berth's standard input (else it reads nothing).
    pub stdin: bool,
}

/// How a command ended.
#[derive(Debug)]
pub struct Finished {
    pub code: i32,
    /// Why, when the guest did not end by itself.
    pub failure: Option<GuestFailure>,
}

/// The exit code of a guest that trapped: SIGABRT's, as wasmtime's CLI
/// reports it.
pub const TRAPPED: i32 = 134;

/// Loads `path` as a command: compiled (or from the cache), and checked to
/// export `wasi:cli/run`. Blocking: the compiler's work.
pub(super) fn load(
    artifacts: &Artifacts,
    linker: &Linker<Host>,
    path: &Path,
) -> Result<CommandPre<Host>, RuntimeError> {
    let bytes = load::read(path)?;
    let (component, exports) = load::compile(artifacts, path, &bytes, None)?;
    // One serving HTTP is served, as `berth run` without arguments does,
    // even if it exports a `run` too (wstd's servers export one that is
    // not meant to be called).
    let worlds = load::worlds(&exports);
    if !worlds.command || worlds.http {
        return Err(RuntimeError::NotCommand {
            path: path.to_owned(),
            exports: load::listed(&exports),
        });
    }
    let link_error = |e: wasmtime::Error| RuntimeError::Link {
        path: path.to_owned(),
        reason: format!("{e:#}"),
    };
    let pre = linker.instantiate_pre(&component).map_err(link_error)?;
    CommandPre::new(pre).map_err(link_error)
}

/// Runs the command `pre` once with the grants and limits of `spec`, its
/// use counted by `meter`.
pub(super) async fn run(
    pre: CommandPre<Host>,
    spec: WorkloadSpec,
    invocation: Invocation,
    meter: Arc<Meter>,
) -> Result<Finished, RuntimeError> {
    let sandbox = Sandbox::new(&spec.name, &spec.capabilities, spec.log.clone())?;
    let wasi = sandbox.command_ctx(&invocation.args, invocation.stdin);
    let quota = spec.limits.cpu_millis.map(CpuQuota::new);
    let mut store = new_store(
        pre.engine(),
        wasi,
        sandbox.outbound(),
        &spec.limits,
        quota,
        Some(meter.clone()),
    );
    let instantiated = meter.metered(pre.instantiate_async(&mut store)).await;
    let command = match instantiated {
        Ok(command) => command,
        Err(e) => {
            return Ok(Finished {
                code: TRAPPED,
                failure: Some(GuestFailure::Instantiate(format!("{e:#}"))),
            });
        }
    };
    let ran = meter
        .metered(command.wasi_cli_run().call_run(&mut store))
        .await;
    Ok(match ran {
        Ok(Ok(())) => Finished {
            code: 0,
            failure: None,
        },
        Ok(Err(())) => Finished {
            code: 1,
            failure: None,
        },
        Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => Finished {
                code: exit.0,
                failure: None,
            },
            None => Finished {
                code: TRAPPED,
                failure: Some(classify(store.data(), &e)),
            },
        },
    })
}
