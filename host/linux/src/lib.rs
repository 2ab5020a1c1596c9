//! The namespace backend: Linux container images run as processes in
//! their own pid, mount, UTS, IPC and network namespaces, on an overlay of
//! the image's unpacked layers, limited by cgroups, with Docker's default
//! capabilities (or those the pod adds and drops) and no_new_privs, as the
//! user the image or the pod names (see `identity.rs`).
//!
//! Each container is started by `berth-init` (see `init.rs`), a small
//! binary installed beside berth: a fresh single-threaded process that may
//! fork safely. The runtime keeps that process as the container's handle.

pub mod cgroup;
pub mod config;
pub mod identity;
pub mod init;
pub mod network;
pub mod plan;
mod userns;
mod volumes;
mod workload;

pub use volumes::{is_mount_point, memory_backed, unmount_all_in};
pub use workload::{LinuxWorkload, NetnsConnector, listen_in};

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use config::{InitConfig, Network};

/// What to run and how, in a Linux image.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// A name for logs and the cgroup (unique among running containers).
    pub id: String,
    pub hostname: String,
    /// The image's unpacked root filesystem (read-only, shared), or the
    /// container's own root when `prepared_root`.
    pub rootfs: PathBuf,
    /// `rootfs` is this container's own writable root, made by its caller
    /// (containerd's snapshot under the shim): used as it is, with no
    /// overlay of berth's over it, and with the host's user ids.
    pub prepared_root: bool,
    /// Where this container keeps its writable layer and state.
    pub state_dir: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: config::User,
    /// What its process may hold (see `plan::capabilities`).
    pub capabilities: rustix::thread::CapabilitySet,
    /// `readOnlyRootFilesystem`.
    pub read_only_root: bool,
    pub network: Network,
    /// The pod's namespaces it joins (its IPC and UTS ones under the shim);
    /// those it does not join it has of its own.
    pub joined: Vec<config::Joined>,
    pub mounts: Vec<config::BindMount>,
    pub limits: cgroup::Limits,
    /// Where its cgroups are, under each hierarchy's root (containerd's
    /// `cgroupsPath`, so the kubelet's pod cgroups hold it); by default
    /// `berth/ID`.
    pub cgroup: Option<PathBuf>,
    /// Run in a user namespace of its own, or with the host's ids.
    pub user_namespace: UserIds,
}

impl ContainerSpec {
    fn cgroup_path(&self) -> PathBuf {
        self.cgroup
            .clone()
            .unwrap_or_else(|| cgroup::berth_path(&self.id))
    }
}

/// Whose user ids a container runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserIds {
    /// The host's (`hostUsers: true`, `--userns host`, `hostNetwork`).
    Host,
    /// Its own user namespace where the host allows it, else the host's.
    Private,
    /// Its own user namespace or not at all (`hostUsers: false`).
    RequiredPrivate,
}

/// One lock directory for the host, whatever `$BERTH_HOME` each berth
/// uses: two containers must never share a block of host ids.
const USER_ID_LOCKS: &str = "/run/berth/userns";

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, 128 + the signal for a killed process.
    pub code: i32,
    pub oom_killed: bool,
    /// What the init reported when the container could not be set up or
    /// its program run (exit codes 125 and 127).
    pub error: Option<String>,
}

impl Exit {
    /// Kubernetes' reason for a terminated container.
    pub fn reason(&self) -> &'static str {
        match (self.oom_killed, self.code) {
            (true, _) => "OOMKilled",
            (false, 0) => "Completed",
            _ => "Error",
        }
    }
}

/// A started container: its init process, cgroups and state.
pub struct Container {
    pub id: String,
    /// The container's pid 1, as the host sees it.
    pub pid: u32,
    /// Its init's pid: in the container's namespaces but the mount and pid
    /// ones, and berth's child.
    pub init_pid: u32,
    /// A handle on the container's pid 1 for signals: its number alone may
    /// name another process once the init has reaped it.
    pidfd: Result<std::os::fd::OwnedFd, rustix::io::Errno>,
    init: Monitor,
    /// The init's socket, and what came on it after `started`: why the
    /// container could not be set up or its program run, if it could not
    /// (none for an adopted container).
    status: Option<tokio::net::UnixStream>,
    said: Vec<u8>,
    cgroups: cgroup::Cgroups,
    state_dir: PathBuf,
    /// Where its init records its exit code, when it may outlive berth or
    /// be reaped by someone else.
    exit_file: Option<PathBuf>,
    /// Whether it may outlive berth (and be adopted).
    outlives: bool,
}

/// The init, as berth waits for it.
enum Monitor {
    /// berth's child.
    Child(tokio::process::Child),
    /// A predecessor's (adopted): readable once it has exited; none when it
    /// had already.
    Adopted(Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>),
}

/// What an adopting berth reads of a container that may outlive berth:
/// its init (and when it started, which tells a reused pid apart) and its
/// pid 1.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct MonitorRecord {
    /// The container's id (its cgroups' name).
    id: String,
    /// The image it runs: a container of another image (a pod's run that
    /// was being replaced) is not the one a new spec adopts.
    #[serde(default)]
    rootfs: PathBuf,
    init_pid: u32,
    init_started: u64,
    pid: u32,
}

const MONITOR_RECORD: &str = "monitor.json";

impl MonitorRecord {
    /// The record in a container's `state_dir`, if it has one.
    fn read(state_dir: &Path) -> Option<MonitorRecord> {
        serde_json::from_slice(&std::fs::read(state_dir.join(MONITOR_RECORD)).ok()?).ok()
    }

    /// A handle on its init, while that is the process the record names
    /// (opened first, then checked: the handle is the process checked).
    fn live_init(&self) -> Option<std::os::fd::OwnedFd> {
        pidfd(self.init_pid).ok().filter(|_| {
            process_stat(self.init_pid).map(|(started, _)| started) == Some(self.init_started)
        })
    }
}

/// Writes the record a later berth adopts the container by, whole (a new
/// file renamed over the old).
fn record_monitor(spec: &ContainerSpec, init_pid: u32, init_started: u64, pid: u32) {
    let record = MonitorRecord {
        id: spec.id.clone(),
        rootfs: spec.rootfs.clone(),
        init_pid,
        init_started,
        pid,
    };
    let path = spec.state_dir.join(MONITOR_RECORD);
    let temporary = spec.state_dir.join(".monitor.json.new");
    if let Err(e) = std::fs::write(&temporary, serde_json::to_vec(&record).expect("JSON"))
        .and_then(|()| std::fs::rename(&temporary, &path))
    {
        tracing::warn!(container = %spec.id, "{}: {e}", path.display());
    }
}

const EXIT_FILE: &str = "exit";

/// A process's start time (clock ticks after boot) and parent, from
/// /proc/PID/stat.
fn process_stat(pid: u32) -> Option<(u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised name: state is 3, ppid 4, starttime 22.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    Some((fields.get(19)?.parse().ok()?, fields.get(1)?.parse().ok()?))
}

/// `pidfd` watched by tokio: readable once its process has exited.
#[expect(unsafe_code, reason = "AsyncFd::register is unsafe")]
fn watch_exit(
    pidfd: std::os::fd::OwnedFd,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: the AsyncFd owns the descriptor, which is valid (a pidfd just
    // opened) and is neither replaced nor closed while it is registered.
    unsafe { tokio::io::unix::AsyncFd::register(pidfd) }.map_err(std::io::Error::from)
}

fn pidfd(pid: u32) -> Result<std::os::fd::OwnedFd, rustix::io::Errno> {
    rustix::process::Pid::from_raw(pid as i32)
        .ok_or(rustix::io::Errno::SRCH)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()))
}

/// How the container's output leaves it.
pub enum Output {
    /// The caller's terminal (`berth run`).
    Inherit,
    /// A log its init writes: the container may then outlive berth, and a
    /// later berth adopt it (see [`adopt`]).
    Log(config::LogTarget),
    /// Descriptors the container writes its stdout and stderr to as they
    /// are (containerd's fifos, under the shim).
    Streams {
        stdout: std::os::fd::OwnedFd,
        stderr: std::os::fd::OwnedFd,
    },
}

/// Why a Linux container could not be started, or its network wired: by
/// kind, so callers can tell an incomplete install from a refused setup.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    /// A program berth runs for it is not installed.
    #[error("{program} is not installed (Debian package {package}): {without}")]
    NotInstalled {
        program: &'static str,
        package: &'static str,
        /// What cannot be done without it.
        without: &'static str,
    },
    /// `berth-init` is not beside berth's binary.
    #[error(
        "{} is missing: berth starts Linux containers with it, and it is built and installed \
         with berth (cargo build / cargo install build both)",
        .0.display()
    )]
    InitMissing(PathBuf),
    /// A file or system call berth needed failed.
    #[error("{doing}: {source}")]
    Io {
        doing: String,
        #[source]
        source: std::io::Error,
    },
    /// The container's init could not set it up or start it: its words
    /// (a mount refused, a user missing, the command not found…).
    #[error("{0}")]
    Setup(String),
    /// The init ended before the container ran, and said nothing.
    #[error("the container's init exited ({0}) before the container ran")]
    InitExited(std::process::ExitStatus),
    /// A helper program (nft, pasta) failed at its task, with what it said.
    #[error("{program} could not {task} ({status}): {said}")]
    Helper {
        program: &'static str,
        task: &'static str,
        status: String,
        said: String,
    },
}

/// A [`LinuxError::Io`] of `doing`.
pub(crate) fn io_error(doing: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> LinuxError {
    move |source| LinuxError::Io {
        doing: doing.to_string(),
        source,
    }
}

/// The init binary, beside berth's own.
pub fn init_binary() -> Result<PathBuf, LinuxError> {
    let exe = std::env::current_exe().map_err(io_error("finding berth's binary"))?;
    Ok(exe.with_file_name("berth-init"))
}

/// Why the init binary could not be started.
fn init_missing(init: &Path, e: std::io::Error) -> LinuxError {
    if e.kind() == std::io::ErrorKind::NotFound {
        LinuxError::InitMissing(init.to_owned())
    } else {
        io_error(format_args!("starting {}", init.display()))(e)
    }
}

/// Starts `spec`; returns once its process runs (or with why it could not).
pub async fn start(spec: &ContainerSpec, output: Output) -> Result<Container, LinuxError> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    std::fs::create_dir_all(&spec.state_dir).map_err(io_error(spec.state_dir.display()))?;
    let cgroups = cgroup::Cgroups::create(
        &cgroup::Hierarchies::detect(),
        &spec.cgroup_path(),
        &spec.limits,
    )?;
    let config = InitConfig {
        lower: spec.rootfs.clone(),
        prepared_root: spec.prepared_root,
        upper: spec.state_dir.join("upper"),
        work: spec.state_dir.join("work"),
        rootfs: spec.state_dir.join("rootfs"),
        hostname: spec.hostname.clone(),
        args: spec.args.clone(),
        env: spec.env.clone(),
        cwd: spec.cwd.clone(),
        user: spec.user.clone(),
        capabilities: spec.capabilities,
        read_only_root: spec.read_only_root,
        cgroups: cgroups.procs_files(),
        mounts: spec.mounts.clone(),
        network: spec.network.clone(),
        joined: spec.joined.clone(),
        // A prepared root is its caller's, owned by the ids it chose: it
        // runs with the host's.
        user_namespace: (spec.user_namespace != UserIds::Host && !spec.prepared_root).then(|| {
            config::UserNamespace {
                lock_dir: PathBuf::from(USER_ID_LOCKS),
                required: spec.user_namespace == UserIds::RequiredPrivate,
            }
        }),
        log: match &output {
            Output::Log(target) => Some(target.clone()),
            _ => None,
        },
        // Under the shim, containerd-shim's reaper may collect the init
        // before tokio does: its exit code is then read from here.
        exit_file: (!matches!(output, Output::Inherit)).then(|| spec.state_dir.join(EXIT_FILE)),
        outlives: matches!(output, Output::Log(_)),
    };
    let outlives = config.outlives;
    let exit_file = config.exit_file.clone();
    let undo = |e: LinuxError| {
        cgroups.remove();
        let _ = std::fs::remove_dir_all(&spec.state_dir);
        e
    };
    // The init's stdin: its config goes in, word of its start comes back.
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .and_then(|(ours, theirs)| ours.set_nonblocking(true).map(|()| (ours, theirs)))
        .and_then(|(ours, theirs)| Ok((tokio::net::UnixStream::from_std(ours)?, theirs)))
        .map_err(|e| undo(io_error("a socket for the container's init")(e)))?;
    let init = init_binary().map_err(undo)?;
    let mut command = tokio::process::Command::new(&init);
    command
        .arg("init")
        .env_clear()
        // Only the test suite's switch to the mount path of older kernels.
        .envs(
            std::env::var_os(volumes::CLASSIC_MOUNTS).map(|value| (volumes::CLASSIC_MOUNTS, value)),
        )
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        // One that may outlive berth is left to run when its handle goes
        // (a daemon handing its pods over).
        .kill_on_drop(!outlives);
    match output {
        Output::Inherit => {
            command.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        }
        Output::Streams { stdout, stderr } => {
            command.stdout(stdout).stderr(stderr);
        }
        // What the init itself has to say (a warning before the container
        // runs) goes to the log too.
        Output::Log(target) => {
            if let Some(dir) = target.path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&target.path)
                .map_or_else(|_| Stdio::null(), Stdio::from);
            command.stdout(Stdio::null()).stderr(log);
        }
    }
    let mut child = command.spawn().map_err(|e| undo(init_missing(&init, e)))?;
    let init_pid = child.id().expect("a child not yet waited for has its pid");
    drop(command); // its copy of the init's end: the init must be the last holder
    let init_started = process_stat(init_pid).map_or(0, |(started, _)| started);
    if outlives {
        // At once: should this berth go before the container has started,
        // the next still finds (and ends) the init it left.
        record_monitor(spec, init_pid, init_started, 0);
    }
    let mut status = ours;
    // A write that fails means the init is gone already; it says why below.
    let config = serde_json::to_vec(&config).expect("JSON");
    let _ = async {
        status.write_all(&config).await?;
        status.shutdown().await
    }
    .await;
    // Running once the init says so; failed if it ends its stream first.
    let mut said = Vec::new();
    loop {
        if let Some(end) = said.iter().position(|b| *b == b'\n')
            && let Some(pid) = std::str::from_utf8(&said[..end])
                .ok()
                .and_then(|line| line.strip_prefix(init::STARTED)?.parse::<u32>().ok())
        {
            said.drain(..=end);
            // Opened the moment the init names it (a pid comes round again
            // only after the whole range has): from here on, signals reach
            // this process or nothing. ESRCH if it is gone already.
            let pidfd = pidfd(pid);
            if outlives {
                // Now with its pid 1, for the berth that adopts it.
                record_monitor(spec, init_pid, init_started, pid);
            }
            return Ok(Container {
                id: spec.id.clone(),
                pid,
                init_pid,
                pidfd,
                init: Monitor::Child(child),
                status: Some(status),
                said,
                cgroups,
                state_dir: spec.state_dir.clone(),
                exit_file,
                outlives,
            });
        }
        match status.read_buf(&mut said).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let exited = child.wait().await;
    let error = String::from_utf8_lossy(&said).trim().to_owned();
    Err(undo(if error.is_empty() {
        match exited {
            Ok(status) => LinuxError::InitExited(status),
            Err(e) => io_error("waiting for the container's init")(e),
        }
    } else {
        LinuxError::Setup(error)
    }))
}

/// Who a running container is, for commands run in it: its pid 1 and the
/// init that is that process's parent (which tells a reused pid apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerPids {
    pub pid: u32,
    pub init: u32,
}

impl ContainerPids {
    /// The container's network namespace, through its init (see
    /// [`Container::netns_path`]: not a pid that may be reused).
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/proc")
            .join(self.init.to_string())
            .join("ns")
            .join("net")
    }
}

/// The running Linux containers commands can be run in (`kubectl exec`),
/// by pod uid and container name: the kubelet registers each container as
/// it runs and forgets the pod's when it stops.
#[derive(Debug, Default)]
pub struct ExecTargets(
    std::sync::Mutex<std::collections::HashMap<(String, String), ContainerPids>>,
);

impl ExecTargets {
    pub fn insert(&self, pod_uid: &str, container: &str, pids: ContainerPids) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((pod_uid.to_owned(), container.to_owned()), pids);
    }

    /// Forgets every container of a pod.
    pub fn remove_pod(&self, pod_uid: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(uid, _), _| uid != pod_uid);
    }

    pub fn get(&self, pod_uid: &str, container: &str) -> Option<ContainerPids> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(pod_uid.to_owned(), container.to_owned()))
            .copied()
    }
}

/// The container a berth before this one started as `spec` says (with
/// [`Output::Log`]), when its init still runs, or has recorded how it
/// ended; `None` when there is none to adopt.
pub fn adopt(spec: &ContainerSpec) -> Option<Container> {
    let record = MonitorRecord::read(&spec.state_dir)?;
    if record.rootfs != spec.rootfs || record.pid == 0 {
        // Another image's, or one that never said it started.
        return None;
    }
    let exit_file = spec.state_dir.join(EXIT_FILE);
    let init = record.live_init();
    if init.is_none() && init::recorded_exit(&exit_file).is_none() {
        return None;
    }
    let cgroups = cgroup::Cgroups::create(
        &cgroup::Hierarchies::detect(),
        &spec.cgroup_path(),
        &spec.limits,
    )
    .ok()?;
    // Its pid 1, while it is the init's child (not a pid used again).
    let pid1 = match &init {
        Some(_) => pidfd(record.pid).and_then(|fd| {
            // Opened, then checked: the handle is the process checked.
            if process_stat(record.pid).map(|(_, parent)| parent) == Some(record.init_pid) {
                Ok(fd)
            } else {
                Err(rustix::io::Errno::SRCH)
            }
        }),
        None => Err(rustix::io::Errno::SRCH),
    };
    let init = match init.map(watch_exit).transpose() {
        Ok(init) => init,
        Err(e) => {
            tracing::warn!(container = %spec.id, "watching its init: {e}");
            return None;
        }
    };
    Some(Container {
        id: spec.id.clone(),
        pid: record.pid,
        init_pid: record.init_pid,
        pidfd: pid1,
        init: Monitor::Adopted(init),
        status: None,
        said: Vec::new(),
        cgroups,
        state_dir: spec.state_dir.clone(),
        exit_file: Some(exit_file),
        outlives: true,
    })
}

/// Ends the containers whose state is under `dir` (a pod's `containers`)
/// that no berth will adopt: each one's init is killed (which takes its
/// container with it) and its cgroups and state removed.
pub fn abandon_all_in(dir: &Path) {
    abandon_where(dir, |_| true);
}

/// Ends every run of container `name` under `dir` (state dirs `NAME-RUN`):
/// before a new one starts where none could be adopted, what a daemon
/// killed mid-start, or before it recorded a restart, left running.
pub fn abandon_runs(dir: &Path, name: &str) {
    abandon_where(dir, |state_dir| {
        state_dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(name)?.strip_prefix('-'))
            .is_some_and(|run| !run.is_empty() && run.bytes().all(|b| b.is_ascii_digit()))
    });
}

fn abandon_where(dir: &Path, chosen: impl Fn(&Path) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let state_dir = entry.path();
        if !chosen(&state_dir) {
            continue;
        }
        let Some(record) = MonitorRecord::read(&state_dir) else {
            continue;
        };
        let cgroups = cgroup::Cgroups::existing(
            &cgroup::Hierarchies::detect(),
            &cgroup::berth_path(&record.id),
        );
        if let Some(init) = record.live_init() {
            tracing::info!(container = %record.id, "ending a container no pod has any more");
            let _ = rustix::process::pidfd_send_signal(&init, rustix::process::Signal::KILL);
            // And whatever else is in its cgroups: its pid 1 dies with the
            // init only while its parent-death signal holds (an exec of a
            // set-user-ID program clears it).
            kill_members(&cgroups);
            // Gone once its pidfd reads (at most a few seconds: a process
            // killed in a D state takes its time).
            let mut ready = [rustix::event::PollFd::new(
                &init,
                rustix::event::PollFlags::IN,
            )];
            let _ = rustix::event::poll(
                &mut ready,
                Some(&rustix::event::Timespec {
                    tv_sec: 5,
                    tv_nsec: 0,
                }),
            );
        }
        cgroups.remove();
        let _ = std::fs::remove_dir_all(&state_dir);
    }
}

/// SIGKILL to every process in `cgroups`.
fn kill_members(cgroups: &cgroup::Cgroups) {
    for (dir, _) in cgroups.dirs() {
        let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
            continue;
        };
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// Whether a container under `dir` (a pod's `containers`) still runs for
/// a berth to adopt.
pub fn any_running(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        MonitorRecord::read(&entry.path()).is_some_and(|record| record.live_init().is_some())
    })
}

impl Container {
    /// Waits for the container to end.
    pub async fn wait(&mut self) -> Exit {
        let code = match &mut self.init {
            Monitor::Child(child) => child.wait().await.ok().and_then(|s| s.code()),
            Monitor::Adopted(init) => {
                if let Some(init) = init {
                    // A pidfd is readable once its process has exited.
                    let _ = init.readable().await;
                }
                None
            }
        }
        .or_else(|| self.exit_file.as_deref().and_then(init::recorded_exit))
        .unwrap_or(128 + 9);
        let error = if code == init::SETUP_FAILED || code == init::EXEC_FAILED {
            Some(self.error().await).filter(|e| !e.is_empty())
        } else {
            None
        };
        if let Some(error) = &error {
            tracing::warn!(container = %self.id, "{error}");
        }
        Exit {
            code,
            oom_killed: self.cgroups.oom_killed(),
            error,
        }
    }

    /// What the container's init reported when it could not run it: read
    /// once the init is gone, when every writer of its socket has closed it
    /// (the container's program never held it: it is close-on-exec).
    async fn error(&mut self) -> String {
        use tokio::io::AsyncReadExt as _;
        // Into `said` itself: a wait dropped mid-read loses nothing.
        if let Some(status) = &mut self.status {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), status.read_to_end(&mut self.said))
                    .await;
        }
        String::from_utf8_lossy(&self.said).trim().to_owned()
    }

    /// Where the pids of every process in it are listed (its cgroup's
    /// `cgroup.procs`), while it exists.
    pub fn procs_file(&self) -> Option<PathBuf> {
        self.cgroups.procs_files().into_iter().next()
    }

    /// Whether it can run on without berth (and be adopted).
    pub fn outlives(&self) -> bool {
        self.outlives
    }

    /// Where its CPU time and memory are read, while it exists.
    pub fn usage_files(&self) -> cgroup::UsageFiles {
        self.cgroups.usage_files()
    }

    pub fn pids(&self) -> ContainerPids {
        ContainerPids {
            pid: self.pid,
            init: self.init_pid,
        }
    }

    /// Sends `signal` to the container's pid 1 (nothing once it is gone).
    pub fn signal(&self, signal: rustix::process::Signal) {
        match &self.pidfd {
            Ok(pidfd) => {
                let _ = rustix::process::pidfd_send_signal(pidfd, signal);
            }
            // Gone already.
            Err(rustix::io::Errno::SRCH) => {}
            // No pidfds here (an old kernel, a seccomp profile around
            // berth): by number, then.
            Err(_) => {
                if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
                    let _ = rustix::process::kill_process(pid, signal);
                }
            }
        }
    }

    /// SIGTERM, then SIGKILL after `grace` if it still runs; returns how it
    /// ended.
    pub async fn stop(&mut self, grace: Duration) -> Exit {
        self.signal(rustix::process::Signal::TERM);
        if let Ok(exit) = tokio::time::timeout(grace, self.wait()).await {
            return exit;
        }
        self.signal(rustix::process::Signal::KILL);
        // The init too: its end takes the container with it (the parent-
        // death signal, or as its pid namespace's parent), whatever became
        // of the signal above.
        match &mut self.init {
            Monitor::Child(child) => {
                let _ = child.start_kill();
            }
            Monitor::Adopted(Some(init)) => {
                let _ = rustix::process::pidfd_send_signal(
                    init.get_ref(),
                    rustix::process::Signal::KILL,
                );
            }
            Monitor::Adopted(None) => {}
        }
        self.wait().await
    }

    /// Removes the container's cgroups and state (its writable layer).
    /// Its mounts lived in its own mount namespace and went with it.
    pub fn remove(self) {
        self.cgroups.remove();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }

    /// The container's network namespace, for connecting to its ports: the
    /// init's, which is the container's and, berth's child until waited
    /// for, cannot be a reused pid (the container's own pid 1 may be, once
    /// it has exited and the init reaped it).
    pub fn netns_path(&self) -> PathBuf {
        self.pids().netns_path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_without_its_init_says_so_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ContainerSpec {
            id: format!("berth-test-noinit-{}", std::process::id()),
            hostname: "h".into(),
            rootfs: dir.path().join("rootfs"),
            prepared_root: false,
            state_dir: dir.path().join("state"),
            args: vec!["/bin/true".into()],
            env: Vec::new(),
            cwd: String::new(),
            user: config::User::default(),
            capabilities: rustix::thread::CapabilitySet::empty(),
            read_only_root: false,
            network: Network::Own,
            joined: Vec::new(),
            mounts: Vec::new(),
            limits: cgroup::Limits::default(),
            cgroup: None,
            user_namespace: UserIds::Host,
        };
        // The test binary has no berth-init beside it.
        let started = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(start(&spec, Output::Inherit));
        match started {
            Err(LinuxError::InitMissing(path)) => assert!(path.ends_with("berth-init")),
            other => panic!("{:?}", other.map(|c| c.pid)),
        }
        assert!(!spec.state_dir.exists(), "the failed start left its state");
        let hierarchies = cgroup::Hierarchies::detect();
        for controller in ["memory", "pids", "cpu"] {
            if let Some((cgroup, _)) = hierarchies.place(controller, &spec.cgroup_path()) {
                assert!(!cgroup.exists(), "{} was left", cgroup.display());
            }
        }
    }

    #[test]
    fn only_the_runs_of_the_named_container_are_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        for run in ["app-0", "app-1", "app-x-0", "app-", "apple-0"] {
            let state = dir.path().join(run);
            std::fs::create_dir_all(&state).unwrap();
            // An init long gone (no process has pid 0x7fff_fff0).
            let record = MonitorRecord {
                id: format!("test-{run}"),
                rootfs: PathBuf::new(),
                init_pid: 0x7fff_fff0,
                init_started: 1,
                pid: 0x7fff_fff1,
            };
            std::fs::write(
                state.join(MONITOR_RECORD),
                serde_json::to_vec(&record).unwrap(),
            )
            .unwrap();
        }
        abandon_runs(dir.path(), "app");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["app-", "app-x-0", "apple-0"]);
    }
}
