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

use berth_runtime::{LogSink as _, Runtime as _, Workload, WorkloadSpec};
use berth_wasm::{WasmRuntime, WasmRuntimeConfig};
use containerd_shim::api::{self, Status};
use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Context, Error, ExitSignal, TtrpcContext, TtrpcResult};
use tokio_util::sync::CancellationToken;

use crate::exec::{self, Exec, ExecState};
use crate::output::{self, Fifos};
use crate::{linux, plan};

/// What watches a started task and records its end.
type Monitor = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

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
    /// The pod's `/etc/hosts` and `/etc/resolv.conf` bound over the shim's
    /// own (by target), for the names its wasm guests look up.
    name_files: Mutex<HashMap<&'static str, PathBuf>>,
}

struct Task {
    bundle: String,
    rootfs_mounted: bool,
    io: TaskIO,
    /// Its process (see [`Running::pid`]): the shim's until it runs.
    pid: u32,
    state: State,
    /// Processes run in it (a Linux container's), by exec id.
    execs: HashMap<String, Exec>,
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

enum Running {
    Wasm {
        workload: Arc<dyn Workload>,
        /// SIGTERM: stop taking requests, finish the ones in flight.
        terminate: CancellationToken,
        /// SIGKILL: end now.
        kill: CancellationToken,
    },
    /// A Linux container (a pod's sandbox, a Linux image): signals go to
    /// its pid 1 through the task that waits for it.
    Linux {
        pid: u32,
        /// Its init, pid 1's parent: who an exec checks pid 1 against.
        init: u32,
        signals: tokio::sync::mpsc::UnboundedSender<rustix::process::Signal>,
        usage: berth_linux::cgroup::UsageFiles,
        /// Its cgroup's list of processes, for `ctr task ps`.
        procs: Option<PathBuf>,
    },
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

/// Whether the spec's program is a wasm component (or module) in the
/// container's root: its first bytes are wasm's magic number. Anything
/// else (a program on `PATH`, an ELF binary, a missing file) is the Linux
/// backend's to run, or to say why it cannot.
fn runs_a_component(spec: &oci_spec::runtime::Spec, root: &Path) -> bool {
    use std::io::Read as _;
    let Some(program) = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .and_then(|a| a.first())
    else {
        return false;
    };
    let Some(relative) = program.strip_prefix('/') else {
        return false;
    };
    let mut magic = [0u8; 4];
    open_in_root(root, Path::new(relative))
        .map(std::fs::File::from)
        .and_then(|mut f| {
            f.read_exact(&mut magic)
                .map_err(|e| Error::Other(e.to_string()))
        })
        .is_ok_and(|()| magic == *b"\0asm")
}

const SIGINT: u32 = 2;
const SIGKILL: u32 = 9;
const SIGTERM: u32 = 15;

impl Running {
    /// Passes `signal` on. A wasm workload takes SIGKILL (ends now),
    /// SIGTERM and SIGINT (finish, then end) and no other; a Linux
    /// container's pid 1 gets any.
    fn signal(&self, signal: u32) {
        match self {
            Running::Wasm {
                terminate, kill, ..
            } => match signal {
                SIGKILL => kill.cancel(),
                SIGTERM | SIGINT => terminate.cancel(),
                _ => {}
            },
            Running::Linux { signals, .. } => {
                if let Some(signal) = i32::try_from(signal)
                    .ok()
                    .and_then(rustix::process::Signal::from_named_raw)
                {
                    let _ = signals.send(signal);
                }
            }
        }
    }

    /// The task's process: a Linux container's pid 1; for a wasm guest,
    /// which has no process of its own, the shim.
    fn pid(&self) -> u32 {
        match self {
            Running::Wasm { .. } => std::process::id(),
            Running::Linux { pid, .. } => *pid,
        }
    }

    fn usage(&self) -> berth_runtime::Usage {
        match self {
            Running::Wasm { workload, .. } => workload.usage(),
            Running::Linux { usage, .. } => berth_runtime::Usage {
                cpu: usage.cpu().unwrap_or_default(),
                memory: usage.memory().unwrap_or(0),
                instances: None,
                oom_kills: usage.oom_kills(),
            },
        }
    }

    /// Whether it takes `signal` at all (for a log line when it does not).
    fn takes(&self, signal: u32) -> bool {
        matches!(self, Running::Linux { .. }) || matches!(signal, SIGKILL | SIGTERM | SIGINT)
    }
}

/// Whether a request is about an exec of the task rather than the task.
fn is_exec(exec_id: &str) -> bool {
    !exec_id.is_empty()
}

fn exec_not_found(id: &str, exec_id: &str) -> containerd_shim::protos::ttrpc::Error {
    Error::NotFoundError(format!("task {id} exec {exec_id}")).into()
}

/// The stdio containerd named for a task or an exec.
fn task_io(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> TaskIO {
    TaskIO {
        stdin: stdin.to_owned(),
        stdout: stdout.to_owned(),
        stderr: stderr.to_owned(),
        terminal,
        ..Default::default()
    }
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
            name_files: Mutex::default(),
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

    /// Binds the container's own name files (the kubelet's `/etc/hosts`
    /// and `/etc/resolv.conf`) over the shim's, in its mount namespace:
    /// its wasm guests' names are looked up by the shim's resolver. A pod's
    /// containers share theirs, so each is bound once.
    fn bind_name_files(&self, spec: &oci_spec::runtime::Spec) -> Result<(), Error> {
        let mut bound = self.0.name_files.lock().unwrap_or_else(|e| e.into_inner());
        for (source, target) in plan::name_files(spec) {
            if bound.get(target) == Some(&source) {
                continue;
            }
            nix::mount::mount(
                Some(&source),
                Path::new(target),
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| {
                Error::Other(format!("binding {} over {target}: {e}", source.display()))
            })?;
            bound.insert(target, source);
        }
        Ok(())
    }

    /// Records that task `id` ended with `code`, and tells containerd.
    fn stop(&self, id: &str, code: u32) {
        let at = now();
        let pid = {
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
            task.pid
        };
        self.exited(id, id, pid, code, at);
    }

    /// Wakes the waiters of task `container` and tells containerd that its
    /// process `id` (the task's own, or an exec's) ended with `code`.
    fn exited(&self, container: &str, id: &str, pid: u32, code: u32, at: Timestamp) {
        self.0.stopped.notify_all();
        self.publish(TaskExit {
            container_id: container.to_owned(),
            id: id.to_owned(),
            pid,
            exit_status: code,
            exited_at: Some(at).into(),
            ..Default::default()
        });
    }

    /// Starts task `id` from its bundle's spec; and the future that
    /// watches it and records its end, for the caller to run once the task
    /// is marked running (a command may end at once). A pod's sandbox and
    /// anything whose program is not a wasm component run on the Linux
    /// backend.
    fn launch(&self, id: &str, bundle: &str, io: &TaskIO) -> Result<(Running, Monitor), Error> {
        let spec = containerd_shim::util::read_spec_from_file(bundle)?;
        let root = plan::root(&spec, Path::new(bundle));
        if linux::is_sandbox(&spec) || !runs_a_component(&spec, &root) {
            return self.launch_linux(id, &spec, bundle, root, io);
        }
        self.launch_wasm(id, &spec, bundle, io)
    }

    fn launch_linux(
        &self,
        id: &str,
        spec: &oci_spec::runtime::Spec,
        bundle: &str,
        root: PathBuf,
        io: &TaskIO,
    ) -> Result<(Running, Monitor), Error> {
        let name = format!("shim-{}-{id}", self.0.namespace);
        let container = linux::container_spec(spec, Path::new(bundle), root, id, name)
            .map_err(Error::InvalidArgument)?;
        let (stdout, stderr) = output::streams(&io.stdout, &io.stderr)
            .map_err(|e| Error::Other(format!("opening the task's output: {e}")))?;
        // Why it could not run goes to its log, as a runtime's error would.
        let errors = Fifos::open("", &io.stderr).ok();
        // On one of the runtime's workers, which live as long as the shim:
        // a container's init ends with the thread that started it.
        let started = self.0.tokio.block_on(self.0.tokio.spawn(async move {
            let output = berth_linux::Output::Streams { stdout, stderr };
            berth_linux::start(&container, output).await
        }));
        let mut container = match started {
            Ok(Ok(container)) => container,
            Ok(Err(e)) => return Err(Error::Other(e.to_string())),
            Err(e) => return Err(Error::Other(format!("starting the container: {e}"))),
        };
        let (signals, mut received) = tokio::sync::mpsc::unbounded_channel();
        let running = Running::Linux {
            pid: container.pid,
            init: container.init_pid,
            signals,
            usage: container.usage_files(),
            procs: container.procs_file(),
        };
        let (service, id) = (self.clone(), id.to_owned());
        let monitor = async move {
            let exit = loop {
                tokio::select! {
                    exit = container.wait() => break exit,
                    Some(signal) = received.recv() => container.signal(signal),
                }
            };
            if let (Some(error), Some(errors)) = (&exit.error, &errors) {
                errors.write_line(berth_runtime::Stream::Stderr, &format!("berth: {error}"));
            }
            container.remove();
            service.stop(&id, exit.code as u32);
        };
        Ok((running, Box::pin(monitor)))
    }

    fn launch_wasm(
        &self,
        id: &str,
        spec: &oci_spec::runtime::Spec,
        bundle: &str,
        io: &TaskIO,
    ) -> Result<(Running, Monitor), Error> {
        let plan = plan::plan(spec, Path::new(bundle)).map_err(Error::InvalidArgument)?;
        self.bind_name_files(spec)?;
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
        let running = Running::Wasm {
            workload,
            terminate,
            kill,
        };
        Ok((running, Box::pin(monitor)))
    }
}

/// The execs of a task (see `exec.rs`).
impl Service {
    fn exec_start(&self, id: &str, exec_id: &str) -> TtrpcResult<api::StartResponse> {
        let mut tasks = self.tasks();
        let task = tasks.get_mut(id).ok_or_else(|| not_found(id))?;
        let State::Running(Running::Linux { pid, init, .. }) = task.state else {
            return Err(Error::FailedPreconditionError(format!("task {id} is not running")).into());
        };
        let exec = task
            .execs
            .get_mut(exec_id)
            .ok_or_else(|| exec_not_found(id, exec_id))?;
        if !matches!(exec.state, ExecState::Created) {
            return Err(Error::FailedPreconditionError(format!(
                "task {id} exec {exec_id} was started already"
            ))
            .into());
        }
        let service = self.clone();
        let (task_id, exec_key) = (id.to_owned(), exec_id.to_owned());
        let exec_pid = exec::spawn(pid, init, exec, move |code| {
            service.exec_stopped(&task_id, &exec_key, code);
        })?;
        // The exit may have been recorded already: only a Created exec
        // becomes Running.
        if matches!(exec.state, ExecState::Created) {
            exec.state = ExecState::Running { pid: exec_pid };
        }
        drop(tasks);
        self.publish(TaskExecStarted {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            pid: exec_pid,
            ..Default::default()
        });
        Ok(api::StartResponse {
            pid: exec_pid,
            ..Default::default()
        })
    }

    /// Records that an exec ended with `code`, and tells containerd.
    fn exec_stopped(&self, id: &str, exec_id: &str, code: u32) {
        let at = now();
        let pid = {
            let mut tasks = self.tasks();
            let Some(exec) = tasks.get_mut(id).and_then(|t| t.execs.get_mut(exec_id)) else {
                return;
            };
            let pid = exec.pid();
            exec.state = ExecState::Stopped {
                code,
                at: at.clone(),
            };
            pid
        };
        self.exited(id, exec_id, pid, code, at);
    }

    fn exec_state(&self, id: &str, exec_id: &str) -> TtrpcResult<api::StateResponse> {
        let tasks = self.tasks();
        let task = tasks.get(id).ok_or_else(|| not_found(id))?;
        let exec = task
            .execs
            .get(exec_id)
            .ok_or_else(|| exec_not_found(id, exec_id))?;
        let (status, pid, exit_status, exited_at) = match &exec.state {
            ExecState::Created => (Status::CREATED, 0, 0, None),
            ExecState::Running { pid } => (Status::RUNNING, *pid, 0, None),
            ExecState::Stopped { code, at } => (Status::STOPPED, 0, *code, Some(at.clone())),
        };
        Ok(api::StateResponse {
            id: exec_id.to_owned(),
            exec_id: exec_id.to_owned(),
            bundle: task.bundle.clone(),
            pid,
            status: status.into(),
            stdin: exec.io.stdin.clone(),
            stdout: exec.io.stdout.clone(),
            stderr: exec.io.stderr.clone(),
            terminal: exec.io.terminal,
            exit_status,
            exited_at: exited_at.into(),
            ..Default::default()
        })
    }

    fn exec_wait(&self, id: &str, exec_id: &str) -> TtrpcResult<api::WaitResponse> {
        self.wait_for(|tasks| {
            let exec = tasks
                .get(id)
                .and_then(|t| t.execs.get(exec_id))
                .ok_or_else(|| exec_not_found(id, exec_id))?;
            Ok(match &exec.state {
                ExecState::Stopped { code, at } => Some((*code, at.clone())),
                _ => None,
            })
        })
    }

    /// Waits until `stopped` says how something ended (its exit status and
    /// time), looking again whenever a task or an exec stops.
    fn wait_for(
        &self,
        stopped: impl Fn(
            &HashMap<String, Task>,
        )
            -> Result<Option<(u32, Timestamp)>, containerd_shim::protos::ttrpc::Error>,
    ) -> TtrpcResult<api::WaitResponse> {
        let mut tasks = self.tasks();
        loop {
            if let Some((code, at)) = stopped(&tasks)? {
                return Ok(api::WaitResponse {
                    exit_status: code,
                    exited_at: Some(at).into(),
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

    fn exec_kill(&self, id: &str, exec_id: &str, signal: u32) -> TtrpcResult<api::Empty> {
        let tasks = self.tasks();
        let exec = tasks
            .get(id)
            .and_then(|t| t.execs.get(exec_id))
            .ok_or_else(|| exec_not_found(id, exec_id))?;
        match exec.state {
            ExecState::Running { pid } => {
                // By number: the exec is the shim's child, so its pid is
                // not reused before the reaper collects it; this state ends
                // a moment after that (the monitor's thread takes the
                // lock), a window far too short for the pids to wrap.
                if let (Some(pid), Some(signal)) = (
                    rustix::process::Pid::from_raw(pid as i32),
                    i32::try_from(signal)
                        .ok()
                        .and_then(rustix::process::Signal::from_named_raw),
                ) {
                    let _ = rustix::process::kill_process(pid, signal);
                }
                Ok(api::Empty::new())
            }
            ExecState::Created => Ok(api::Empty::new()),
            ExecState::Stopped { .. } => Err(Error::NotFoundError(format!(
                "task {id} exec {exec_id}: the process has already finished"
            ))
            .into()),
        }
    }

    fn exec_delete(&self, id: &str, exec_id: &str) -> TtrpcResult<api::DeleteResponse> {
        let mut tasks = self.tasks();
        let task = tasks.get_mut(id).ok_or_else(|| not_found(id))?;
        let exec = task
            .execs
            .get(exec_id)
            .ok_or_else(|| exec_not_found(id, exec_id))?;
        if matches!(exec.state, ExecState::Running { .. }) {
            return Err(Error::FailedPreconditionError(format!(
                "task {id} exec {exec_id} is running: kill it first"
            ))
            .into());
        }
        let exec = task.execs.remove(exec_id).expect("just found");
        let (code, at) = match exec.state {
            ExecState::Stopped { code, at } => (code, at),
            _ => (0, now()),
        };
        Ok(api::DeleteResponse {
            exit_status: code,
            exited_at: Some(at).into(),
            ..Default::default()
        })
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
        let io = task_io(
            &request.stdin,
            &request.stdout,
            &request.stderr,
            request.terminal,
        );
        self.tasks().insert(
            request.id.clone(),
            Task {
                bundle: request.bundle.clone(),
                rootfs_mounted: !request.rootfs.is_empty(),
                io: io.clone(),
                pid: std::process::id(),
                state: State::Created,
                execs: HashMap::new(),
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

    fn exec(&self, _: &TtrpcContext, request: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        let io = task_io(
            &request.stdin,
            &request.stdout,
            &request.stderr,
            request.terminal,
        );
        let spec = request.spec.as_ref().map_or(&[][..], |any| &any.value[..]);
        let exec = Exec::new(spec, io)?;
        {
            let mut tasks = self.tasks();
            let task = tasks
                .get_mut(&request.id)
                .ok_or_else(|| not_found(&request.id))?;
            match task.state {
                State::Running(Running::Linux { .. }) => {}
                State::Running(Running::Wasm { .. }) => {
                    return Err(Error::FailedPreconditionError(format!(
                        "task {} is a wasm component: it has no processes to run a command in \
                         (exec works in Linux containers)",
                        request.id
                    ))
                    .into());
                }
                _ => {
                    return Err(Error::FailedPreconditionError(format!(
                        "task {} is not running",
                        request.id
                    ))
                    .into());
                }
            }
            if task.execs.contains_key(&request.exec_id) {
                return Err(Error::FailedPreconditionError(format!(
                    "task {} exec {} exists already",
                    request.id, request.exec_id
                ))
                .into());
            }
            task.execs.insert(request.exec_id.clone(), exec);
        }
        self.publish(TaskExecAdded {
            container_id: request.id,
            exec_id: request.exec_id,
            ..Default::default()
        });
        Ok(api::Empty::new())
    }

    fn start(
        &self,
        _: &TtrpcContext,
        request: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        if is_exec(&request.exec_id) {
            return self.exec_start(&request.id, &request.exec_id);
        }
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
            task.pid = running.pid();
            task.state = State::Running(running);
        }
        self.0.tokio.spawn(monitor);
        let pid = self.tasks().get(&request.id).map_or(0, |t| t.pid);
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
        if is_exec(&request.exec_id) {
            return self.exec_state(&request.id, &request.exec_id);
        }
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
            pid: task.pid,
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
        if is_exec(&request.exec_id) {
            return self.exec_wait(&request.id, &request.exec_id);
        }
        self.wait_for(|tasks| {
            let task = tasks
                .get(&request.id)
                .ok_or_else(|| not_found(&request.id))?;
            Ok(match &task.state {
                State::Stopped { code, at } => Some((*code, at.clone())),
                _ => None,
            })
        })
    }

    fn kill(&self, _: &TtrpcContext, request: api::KillRequest) -> TtrpcResult<api::Empty> {
        if is_exec(&request.exec_id) {
            return self.exec_kill(&request.id, &request.exec_id, request.signal);
        }
        let mut tasks = self.tasks();
        let task = tasks
            .get_mut(&request.id)
            .ok_or_else(|| not_found(&request.id))?;
        let known = matches!(request.signal, SIGKILL | SIGTERM | SIGINT);
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
            State::Running(running) => {
                if request.signal != 0 && !running.takes(request.signal) {
                    log::info!(
                        "task {}: signal {} ignored: a wasm guest takes no signals",
                        request.id,
                        request.signal
                    );
                }
                running.signal(request.signal);
            }
        }
        Ok(api::Empty::new())
    }

    fn delete(
        &self,
        _: &TtrpcContext,
        request: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        if is_exec(&request.exec_id) {
            return self.exec_delete(&request.id, &request.exec_id);
        }
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
        let pid = task.pid;
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
        let (pid, procs, init) = {
            let tasks = self.tasks();
            let task = tasks
                .get(&request.id)
                .ok_or_else(|| not_found(&request.id))?;
            let (procs, init) = match &task.state {
                State::Running(Running::Linux { procs, init, .. }) => (procs.clone(), *init),
                _ => (None, 0),
            };
            (task.pid, procs, init)
        };
        // A Linux container's every process (its cgroup's), pid 1 first; a
        // wasm task's one process, the shim.
        let mut pids = vec![pid];
        if let Some(listed) = procs.and_then(|p| std::fs::read_to_string(p).ok()) {
            pids.extend(
                listed
                    .lines()
                    .filter_map(|l| l.trim().parse::<u32>().ok())
                    // Its init shares its cgroup but is not in it.
                    .filter(|p| *p != pid && *p != init),
            );
        }
        let processes = pids
            .into_iter()
            .map(|pid| containerd_shim::protos::types::task::ProcessInfo {
                pid,
                ..Default::default()
            })
            .collect();
        Ok(api::PidsResponse {
            processes,
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
                State::Running(running) => running.usage(),
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
