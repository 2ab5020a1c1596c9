//! containerd's task API (runtime v2, over ttrpc) for berth workloads.
//!
//! Requests arrive on ttrpc's threads; the workloads run on a tokio
//! runtime of the shim's own. A task is Created by `create` (its rootfs
//! mounted), Running from `start` until it ends (a command's exit, or a
//! signal from `kill`), then Stopped with its exit status and time until
//! `delete`. SIGTERM lets an HTTP component finish the requests it has
//! (exit 0); SIGKILL ends it at once (137); a command ends 128 + signal.

use std::collections::HashMap;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use berth_runtime::{Runtime as _, Workload, WorkloadSpec};
use berth_wasm::{WasmRuntime, WasmRuntimeConfig};
use containerd_shim::api::{self, Status};
use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskIO, TaskStart};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Context, Error, ExitSignal, TtrpcContext, TtrpcResult};
use tokio_util::sync::CancellationToken;

use crate::output::Fifos;
use crate::plan;

/// How long SIGTERM lets in-flight requests run before the task ends
/// anyway (the kubelet sends SIGKILL after the pod's grace period).
const DRAIN: Duration = Duration::from_secs(30);

/// The exit status of a task that could not start.
const START_FAILED: u32 = 128;

/// Where compiled components are kept between shims, unless
/// `BERTH_SHIM_CACHE` (in containerd's environment) says otherwise.
const DEFAULT_CACHE: &str = "/var/cache/berth-shim";

#[derive(Clone)]
pub struct Service(Arc<Inner>);

struct Inner {
    namespace: String,
    tasks: Mutex<HashMap<String, Task>>,
    /// Signalled whenever a task stops.
    stopped: Condvar,
    publisher: RemotePublisher,
    exit: Arc<ExitSignal>,
    tokio: tokio::runtime::Runtime,
    /// The wasm runtimes, made on first use: without an instance pool (a
    /// command runs once; setting up a pool costs it more than it saves),
    /// and with one (for serving HTTP, a fresh instance per request).
    wasm: OnceLock<Result<WasmRuntime, String>>,
    pooled_wasm: OnceLock<Result<WasmRuntime, String>>,
}

struct Task {
    bundle: String,
    rootfs_mounted: bool,
    io: TaskIO,
    state: State,
}

enum State {
    Created,
    /// Between `start` and its workload running: a signal that comes
    /// meanwhile is applied once it runs.
    Starting {
        signal: Option<u32>,
    },
    Running(Running),
    Stopped {
        code: u32,
        at: Timestamp,
    },
}

struct Running {
    workload: Arc<dyn Workload>,
    /// SIGTERM: stop taking requests, finish the ones in flight.
    terminate: CancellationToken,
    /// SIGKILL: end now.
    kill: CancellationToken,
}

/// Opens `path` (relative) with `root` as the filesystem's root: `..` and
/// absolute symlinks stay inside it, as they would in the container.
fn open_in_root(root: &Path, path: &Path) -> Result<std::os::fd::OwnedFd, Error> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let in_image = || format!("/{} in the image", path.display());
    let root = std::fs::File::open(root)
        .map_err(|e| Error::Other(format!("the container's root {}: {e}", root.display())))?;
    rustix::fs::openat2(
        &root,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    )
    .map_err(|e| Error::InvalidArgument(format!("{}: {e}", in_image())))
}

const SIGINT: u32 = 2;
const SIGKILL: u32 = 9;
const SIGTERM: u32 = 15;

impl Running {
    /// What a signal means to a wasm workload: SIGKILL ends it now,
    /// SIGTERM and SIGINT ask it to finish; it takes no other.
    fn signal(&self, signal: u32) {
        match signal {
            SIGKILL => self.kill.cancel(),
            SIGTERM | SIGINT => self.terminate.cancel(),
            _ => {}
        }
    }
}

/// Processes execed into a task: a wasm task has none.
fn no_exec(id: &str, exec_id: &str) -> Result<(), containerd_shim::protos::ttrpc::Error> {
    if exec_id.is_empty() {
        return Ok(());
    }
    Err(not_found(&format!("{id} exec {exec_id}")))
}

fn not_found(id: &str) -> containerd_shim::protos::ttrpc::Error {
    Error::NotFoundError(format!("task {id}")).into()
}

fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}

impl Service {
    pub fn new(namespace: String, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> Service {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("berth-shim")
            .build()
            .expect("a tokio runtime");
        Service(Arc::new(Inner {
            namespace,
            tasks: Mutex::default(),
            stopped: Condvar::new(),
            publisher,
            exit,
            tokio,
            wasm: OnceLock::new(),
            pooled_wasm: OnceLock::new(),
        }))
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<String, Task>> {
        self.0.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, event: impl Event) {
        let topic = event.topic();
        if let Err(e) = self.0.publisher.publish(
            Context::default(),
            &topic,
            &self.0.namespace,
            Box::new(event),
        ) {
            log::warn!("publishing {topic}: {e}");
        }
    }

    /// A wasm runtime, with an instance pool or without, made on first use
    /// (a shim that only deletes needs none).
    fn wasm(&self, pooled: bool) -> Result<&WasmRuntime, Error> {
        let runtime = if pooled {
            &self.0.pooled_wasm
        } else {
            &self.0.wasm
        };
        runtime
            .get_or_init(|| {
                let cache = std::env::var_os("BERTH_SHIM_CACHE")
                    .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from);
                let _guard = self.0.tokio.enter();
                WasmRuntime::new(WasmRuntimeConfig {
                    cache_dir: Some(cache),
                    pooled,
                })
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| Error::Other(format!("starting berth's wasm runtime: {e}")))
    }

    /// Records that task `id` ended with `code`, and tells containerd.
    fn stop(&self, id: &str, code: u32) {
        let at = now();
        {
            let mut tasks = self.tasks();
            let Some(task) = tasks.get_mut(id) else {
                return;
            };
            if matches!(task.state, State::Stopped { .. }) {
                return;
            }
            task.state = State::Stopped {
                code,
                at: at.clone(),
            };
        }
        self.0.stopped.notify_all();
        self.publish(TaskExit {
            container_id: id.to_owned(),
            id: id.to_owned(),
            pid: std::process::id(),
            exit_status: code,
            exited_at: Some(at).into(),
            ..Default::default()
        });
    }

    /// Starts the workload of task `id`, from its bundle's spec; and the
    /// future that watches it and records its end, for the caller to run
    /// once the task is marked running (a command may end at once).
    fn launch(
        &self,
        id: &str,
        bundle: &str,
        io: &TaskIO,
    ) -> Result<(Running, impl Future<Output = ()> + Send + 'static), Error> {
        let spec = containerd_shim::util::read_spec_from_file(bundle)?;
        let plan = plan::plan(&spec, Path::new(bundle)).map_err(Error::InvalidArgument)?;
        let fifos = Fifos::open(&io.stdout, &io.stderr)
            .map_err(|e| Error::Other(format!("opening the task's output: {e}")))?;
        // Opened inside the container's root (symlinks resolved there, not
        // on the host), and read through that descriptor while it starts.
        let opened = open_in_root(&plan.root, &plan.component)?;
        let component = PathBuf::from(format!("/proc/self/fd/{}", opened.as_raw_fd()));
        // Loaded (and kept) by the pool-less runtime; one that serves HTTP
        // then loads again, from the compile cache, into the pooled one.
        let commands = self.wasm(false)?;
        let in_image = |e: berth_runtime::RuntimeError| {
            Error::InvalidArgument(format!("/{} in the image: {e}", plan.component.display()))
        };
        let serves_http = commands.serves_http(&component).map_err(in_image)?;
        let wasm = if serves_http {
            self.wasm(true)?
        } else {
            commands
        };
        let invoked = plan.args.len() > 1;
        let runs = serves_http && invoked && commands.worlds(&component).is_ok_and(|w| w.command);
        let workload_spec = WorkloadSpec {
            name: id.to_owned(),
            component,
            args: plan.args.clone(),
            // Arguments past the component's path are a command line: a
            // component of both worlds runs its `run` beside serving.
            invoked,
            capabilities: plan.capabilities,
            limits: plan.limits,
            log: Some(Arc::new(fifos)),
        };
        let workload = self
            .0
            .tokio
            .block_on(wasm.start(workload_spec))
            .map_err(in_image)?;
        drop(opened);
        let terminate = CancellationToken::new();
        let kill = CancellationToken::new();
        let listener = if serves_http {
            let listener = std::net::TcpListener::bind(plan.listen)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| Error::Other(format!("listening on {}: {e}", plan.listen)))?;
            let _guard = self.0.tokio.enter();
            Some(
                tokio::net::TcpListener::from_std(listener)
                    .map_err(|e| Error::Other(format!("listening on {}: {e}", plan.listen)))?,
            )
        } else {
            None
        };

        let service = self.clone();
        let (id, served, term, killed) = (
            id.to_owned(),
            workload.clone(),
            terminate.clone(),
            kill.clone(),
        );
        let monitor = async move {
            let code = match listener {
                Some(listener) => {
                    // A component of both worlds run with its `run` ends
                    // with it, as a process with its main; a served
                    // component's `exited` never resolves.
                    let ended = CancellationToken::new();
                    let serving =
                        berth_serve::serve(listener, served.clone(), ended.clone(), DRAIN);
                    tokio::pin!(serving);
                    let (code, drain) = tokio::select! {
                        exited = served.exited() => (exited.code as u32, true),
                        // A served component drains and is done; a `run`
                        // beside it is ended, as a command would be.
                        () = term.cancelled() => (if runs { 143 } else { 0 }, true),
                        () = &mut serving => (0, false),
                        () = killed.cancelled() => (137, false),
                    };
                    ended.cancel();
                    if drain {
                        tokio::select! {
                            () = serving => code,
                            () = killed.cancelled() => 137,
                        }
                    } else {
                        code
                    }
                }
                None => {
                    tokio::select! {
                        exited = served.exited() => exited.code as u32,
                        () = term.cancelled() => 143,
                        () = killed.cancelled() => 137,
                    }
                }
            };
            served.stop(Duration::ZERO).await;
            service.stop(&id, code);
        };
        let running = Running {
            workload,
            terminate,
            kill,
        };
        Ok((running, monitor))
    }
}

impl containerd_shim::Task for Service {
    fn create(
        &self,
        _: &TtrpcContext,
        request: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        if request.terminal {
            return Err(Error::InvalidArgument("a wasm task has no terminal".into()).into());
        }
        if !request.checkpoint.is_empty() {
            return Err(Error::InvalidArgument("a wasm task cannot be checkpointed".into()).into());
        }
        if self.tasks().contains_key(&request.id) {
            return Err(Error::FailedPreconditionError(format!(
                "task {} exists already",
                request.id
            ))
            .into());
        }
        let rootfs = Path::new(&request.bundle).join("rootfs");
        std::fs::create_dir_all(&rootfs)
            .map_err(|e| Error::Other(format!("{}: {e}", rootfs.display())))?;
        for mount in &request.rootfs {
            let none_if_empty = |s: &str| (!s.is_empty()).then_some(s.to_owned());
            containerd_shim::mount::mount_rootfs(
                none_if_empty(&mount.type_).as_deref(),
                none_if_empty(&mount.source).as_deref(),
                &mount.options,
                &rootfs,
            )?;
        }
        let io = TaskIO {
            stdin: request.stdin.clone(),
            stdout: request.stdout.clone(),
            stderr: request.stderr.clone(),
            terminal: request.terminal,
            ..Default::default()
        };
        self.tasks().insert(
            request.id.clone(),
            Task {
                bundle: request.bundle.clone(),
                rootfs_mounted: !request.rootfs.is_empty(),
                io: io.clone(),
                state: State::Created,
            },
        );
        let pid = std::process::id();
        self.publish(TaskCreate {
            container_id: request.id,
            bundle: request.bundle,
            rootfs: request.rootfs,
            io: Some(io).into(),
            pid,
            ..Default::default()
        });
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(
        &self,
        _: &TtrpcContext,
        request: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        no_exec(&request.id, &request.exec_id)?;
        let (bundle, io) = {
            let mut tasks = self.tasks();
            let task = tasks
                .get_mut(&request.id)
                .ok_or_else(|| not_found(&request.id))?;
            if !matches!(task.state, State::Created) {
                return Err(Error::FailedPreconditionError(format!(
                    "task {} was started already",
                    request.id
                ))
                .into());
            }
            task.state = State::Starting { signal: None };
            (task.bundle.clone(), task.io.clone())
        };
        // Loading and compiling take a while: not under the lock, so State
        // and Wait keep answering.
        let (running, monitor) = match self.launch(&request.id, &bundle, &io) {
            Ok(launched) => launched,
            Err(e) => {
                // As a container whose process could not be run: stopped,
                // so it can be deleted (128, as the kubelet's StartError).
                self.stop(&request.id, START_FAILED);
                return Err(e.into());
            }
        };
        {
            let mut tasks = self.tasks();
            // Delete refuses a starting task, so it is still there.
            let task = tasks.get_mut(&request.id).expect("a starting task stays");
            if let State::Starting {
                signal: Some(signal),
            } = task.state
            {
                running.signal(signal);
            }
            task.state = State::Running(running);
        }
        self.0.tokio.spawn(monitor);
        let pid = std::process::id();
        self.publish(TaskStart {
            container_id: request.id,
            pid,
            ..Default::default()
        });
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn state(
        &self,
        _: &TtrpcContext,
        request: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        no_exec(&request.id, &request.exec_id)?;
        let tasks = self.tasks();
        let task = tasks
            .get(&request.id)
            .ok_or_else(|| not_found(&request.id))?;
        let (status, exit_status, exited_at) = match &task.state {
            State::Created | State::Starting { .. } => (Status::CREATED, 0, None),
            State::Running(_) => (Status::RUNNING, 0, None),
            State::Stopped { code, at } => (Status::STOPPED, *code, Some(at.clone())),
        };
        Ok(api::StateResponse {
            id: request.id,
            bundle: task.bundle.clone(),
            pid: std::process::id(),
            status: status.into(),
            stdin: task.io.stdin.clone(),
            stdout: task.io.stdout.clone(),
            stderr: task.io.stderr.clone(),
            terminal: task.io.terminal,
            exit_status,
            exited_at: exited_at.into(),
            ..Default::default()
        })
    }

    fn wait(&self, _: &TtrpcContext, request: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        no_exec(&request.id, &request.exec_id)?;
        let mut tasks = self.tasks();
        loop {
            let task = tasks
                .get(&request.id)
                .ok_or_else(|| not_found(&request.id))?;
            if let State::Stopped { code, at } = &task.state {
                return Ok(api::WaitResponse {
                    exit_status: *code,
                    exited_at: Some(at.clone()).into(),
                    ..Default::default()
                });
            }
            tasks = self
                .0
                .stopped
                .wait(tasks)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn kill(&self, _: &TtrpcContext, request: api::KillRequest) -> TtrpcResult<api::Empty> {
        no_exec(&request.id, &request.exec_id)?;
        let mut tasks = self.tasks();
        let task = tasks
            .get_mut(&request.id)
            .ok_or_else(|| not_found(&request.id))?;
        let known = matches!(request.signal, SIGKILL | SIGTERM | SIGINT);
        if !known && request.signal != 0 {
            log::info!(
                "task {}: signal {} ignored: a wasm guest takes no signals",
                request.id,
                request.signal
            );
        }
        match &mut task.state {
            State::Stopped { .. } => {
                return Err(Error::NotFoundError(format!(
                    "task {}: the process has already finished",
                    request.id
                ))
                .into());
            }
            // Signal 0 only asks whether it is there.
            State::Created if known => {
                drop(tasks);
                self.stop(&request.id, 128 + request.signal);
            }
            State::Created => {}
            // SIGKILL outranks a SIGTERM already waiting.
            State::Starting { signal } if known && *signal != Some(SIGKILL) => {
                *signal = Some(request.signal);
            }
            State::Starting { .. } => {}
            State::Running(running) => running.signal(request.signal),
        }
        Ok(api::Empty::new())
    }

    fn delete(
        &self,
        _: &TtrpcContext,
        request: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        no_exec(&request.id, &request.exec_id)?;
        let task = {
            let mut tasks = self.tasks();
            let task = tasks
                .get(&request.id)
                .ok_or_else(|| not_found(&request.id))?;
            if matches!(task.state, State::Running(_) | State::Starting { .. }) {
                return Err(Error::FailedPreconditionError(format!(
                    "task {} is running: kill it first",
                    request.id
                ))
                .into());
            }
            tasks.remove(&request.id).expect("just found")
        };
        // A Wait on it ends (with not found).
        self.0.stopped.notify_all();
        if task.rootfs_mounted {
            let rootfs = Path::new(&task.bundle).join("rootfs");
            if let Err(e) = containerd_shim::mount::umount_recursive(rootfs.to_str(), 0) {
                log::warn!("unmounting {}: {e}", rootfs.display());
            }
        }
        let (code, at) = match task.state {
            State::Stopped { code, at } => (code, at),
            _ => (0, now()),
        };
        let pid = std::process::id();
        self.publish(TaskDelete {
            container_id: request.id.clone(),
            id: request.id,
            pid,
            exit_status: code,
            exited_at: Some(at.clone()).into(),
            ..Default::default()
        });
        Ok(api::DeleteResponse {
            pid,
            exit_status: code,
            exited_at: Some(at).into(),
            ..Default::default()
        })
    }

    fn pids(&self, _: &TtrpcContext, request: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        if !self.tasks().contains_key(&request.id) {
            return Err(not_found(&request.id));
        }
        let process = containerd_shim::protos::types::task::ProcessInfo {
            pid: std::process::id(),
            ..Default::default()
        };
        Ok(api::PidsResponse {
            processes: vec![process],
            ..Default::default()
        })
    }

    fn stats(
        &self,
        _: &TtrpcContext,
        request: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        use containerd_shim::protos::cgroups::metrics::{
            CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics,
        };
        let usage = {
            let tasks = self.tasks();
            let task = tasks
                .get(&request.id)
                .ok_or_else(|| not_found(&request.id))?;
            match &task.state {
                State::Running(running) => running.workload.usage(),
                _ => berth_runtime::Usage::default(),
            }
        };
        let cpu = usage.cpu.as_nanos().min(u64::MAX as u128) as u64;
        let metrics = Metrics {
            cpu: Some(CPUStat {
                usage: Some(CPUUsage {
                    total: cpu,
                    user: cpu,
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            })
            .into(),
            memory: Some(MemoryStat {
                usage: Some(MemoryEntry {
                    usage: usage.memory,
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        Ok(api::StatsResponse {
            stats: Some(containerd_shim::util::convert_to_any(Box::new(metrics))?).into(),
            ..Default::default()
        })
    }

    fn connect(
        &self,
        _: &TtrpcContext,
        _request: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }

    fn shutdown(
        &self,
        _: &TtrpcContext,
        _request: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        if self.tasks().is_empty() {
            self.0.exit.signal();
        }
        Ok(api::Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_is_opened_inside_the_container_s_root_whatever_its_symlinks_say() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/app.wasm"), "inside").unwrap();
        // Absolute and climbing symlinks resolve against the container's root.
        std::os::unix::fs::symlink("/etc/app.wasm", root.path().join("abs.wasm")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/app.wasm", root.path().join("up.wasm"))
            .unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.path().join("host.wasm")).unwrap();
        for link in ["abs.wasm", "up.wasm"] {
            let fd = open_in_root(root.path(), Path::new(link)).unwrap();
            assert_eq!(
                std::io::read_to_string(std::fs::File::from(fd)).unwrap(),
                "inside"
            );
        }
        // The host's /etc/hostname is not the container's.
        let error = open_in_root(root.path(), Path::new("host.wasm")).unwrap_err();
        assert!(
            error.to_string().contains("/host.wasm in the image"),
            "{error}"
        );
    }
}
