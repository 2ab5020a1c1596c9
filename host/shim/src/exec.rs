//! Processes run in a running Linux container (`ctr task exec`, and
//! `kubectl exec` on a node through the CRI): each is `berth-init exec`,
//! which enters the container's namespaces and cgroups at its root with
//! pid 1's environment, user and privileges, as berth's own exec does.
//! A wasm task has no processes to run a command in.
//!
//! containerd-shim's reaper collects every child of the shim, so an exec's
//! exit status is taken from its monitor (subscribed before the spawn, so
//! no exit is missed), on a thread of its own.

use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use containerd_shim::Error;
use containerd_shim::monitor::{Topic, monitor_subscribe, wait_pid};
use containerd_shim::protos::events::task::TaskIO;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;

use crate::output;

/// One exec of a task.
pub struct Exec {
    pub args: Vec<String>,
    pub io: TaskIO,
    pub state: ExecState,
}

pub enum ExecState {
    Created,
    Running { pid: u32 },
    Stopped { code: u32, at: Timestamp },
}

impl Exec {
    /// From containerd's request: its process spec (the OCI `Process`, as
    /// JSON in an `Any`) gives the command; the rest of it (env, user,
    /// working dir) is pid 1's, as in berth.
    pub fn new(spec: &[u8], io: TaskIO) -> Result<Exec, Error> {
        if io.terminal {
            return Err(Error::InvalidArgument(
                "berth's shim runs execs without a terminal".into(),
            ));
        }
        let process: oci_spec::runtime::Process = serde_json::from_slice(spec)
            .map_err(|e| Error::InvalidArgument(format!("the exec's process spec: {e}")))?;
        let args = process.args().clone().unwrap_or_default();
        if args.is_empty() {
            return Err(Error::InvalidArgument(
                "the exec's process has no args: nothing to run".into(),
            ));
        }
        Ok(Exec {
            args,
            io,
            state: ExecState::Created,
        })
    }

    pub fn pid(&self) -> u32 {
        match self.state {
            ExecState::Running { pid } => pid,
            _ => 0,
        }
    }
}

/// Starts `args` in the container whose pid 1 is `pid` (child of the
/// init `init`), its stdio containerd's; `exited` is called with its exit
/// status once it has ended. Its pid.
pub fn spawn(
    pid: u32,
    init: u32,
    exec: &Exec,
    exited: impl FnOnce(u32) + Send + 'static,
) -> Result<u32, Error> {
    let binary = berth_linux::init_binary().map_err(|e| Error::Other(e.to_string()))?;
    let (stdout, stderr) = output::streams(&exec.io.stdout, &exec.io.stderr)
        .map_err(|e| Error::Other(format!("opening the exec's output: {e}")))?;
    let stdin = match exec.io.stdin.as_str() {
        "" => Stdio::null(),
        path => Stdio::from(open_stdin(path)?),
    };
    let subscription =
        monitor_subscribe(Topic::Pid).map_err(|e| Error::Other(format!("watching exits: {e}")))?;
    let child = Command::new(&binary)
        .arg("exec")
        .arg(pid.to_string())
        .arg(init.to_string())
        .args(&exec.args)
        .env_clear()
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| Error::Other(format!("starting {}: {e}", binary.display())))?;
    let exec_pid = child.id();
    // Not waited for here: the reaper collects it and tells the monitor.
    drop(child);
    std::thread::Builder::new()
        .name("berth-exec".into())
        .spawn(move || exited(wait_pid(exec_pid as i32, subscription) as u32))
        .map_err(|e| Error::Other(format!("a thread for the exec: {e}")))?;
    Ok(exec_pid)
}

/// The stdin fifo containerd writes to: opened without waiting for its
/// writer (containerd opens that end itself), then read blocking, as a
/// process expects of its stdin.
fn open_stdin(path: &str) -> Result<OwnedFd, Error> {
    use rustix::fs::{Mode, OFlags};
    let path = path.strip_prefix("fifo://").unwrap_or(path);
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Other(format!("the exec's stdin {path}: {e}")))?;
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| Error::Other(e.to_string()))?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)
        .map_err(|e| Error::Other(e.to_string()))?;
    Ok(fd)
}
