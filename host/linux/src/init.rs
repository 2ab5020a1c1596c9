//! `berth-init init`: builds one container and runs it, as runc's init
//! does. A fresh single-threaded process (the runtime executes the small
//! `berth-init` binary beside berth for it) so that forking is safe: it
//! joins the container's cgroups, unshares the UTS, IPC, PID and network
//! namespaces, and forks the container's process, which becomes pid 1 of
//! the new PID namespace. That child takes a mount namespace of its own,
//! assembles the root filesystem, pivots into it, drops privileges and
//! execs; the init waits for it and exits with its status (128 + the
//! signal when it was killed).
//!
//! It ends with a seccomp filter refusing the system calls Docker's default
//! profile refuses (see `plan::DENIED_SYSCALLS`).
//!
//! Its stdin is a socket to the runtime: the config comes in on it (JSON,
//! to end of stream), and back go `started PID` once the container's
//! process is forked and, when the container cannot be set up or its
//! program run, why (exit codes 125 and 127). A socket, not files in the
//! container's state dir: on a disk filesystem each file made and removed
//! is a journal entry, and the runtime learns of the start the moment it
//! happens rather than by polling.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::Path;

use rustix::fs::{FileType, Mode};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::thread::{CapabilitySet, CapabilitySets, UnshareFlags};

use super::config::{InitConfig, Joined, Network};
use super::identity::{self, Identity};
use super::plan;
use super::userns::{self, Mapping};
use super::volumes;

/// Exit code of a container that could not be set up.
pub const SETUP_FAILED: i32 = 125;
/// Exit code of a container whose program could not be executed.
pub const EXEC_FAILED: i32 = 127;

/// What the init tells the runtime once the container's process exists.
pub const STARTED: &str = "started ";

/// Runs the init; never returns.
pub fn main() -> ! {
    let mut status = match take_stdin() {
        Ok(status) => status,
        Err(e) => {
            eprintln!("berth-init: {e}");
            std::process::exit(SETUP_FAILED);
        }
    };
    let mut text = Vec::new();
    let config: InitConfig = match status
        .read_to_end(&mut text)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice(&text).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            let _ = write!(status, "berth-init: reading the container's config: {e}");
            std::process::exit(SETUP_FAILED);
        }
    };
    let code = match supervise(&config, &status) {
        Ok(code) => code,
        Err(e) => {
            let _ = status.write_all(e.as_bytes());
            SETUP_FAILED
        }
    };
    if let Some(path) = &config.exit_file {
        record_exit(path, code);
    }
    std::process::exit(code)
}

/// Writes `code` to `path` whole (a new file renamed over), for a berth
/// that was not there to see the init end.
fn record_exit(path: &Path, code: i32) {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    if std::fs::write(&temporary, format!("{code}\n")).is_ok() {
        let _ = std::fs::rename(&temporary, path);
    }
}

/// The container's exit code as its init recorded it in `path`.
pub fn recorded_exit(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The container's stdout and stderr when the init writes its log: pipes
/// whose write ends the container gets.
struct OutputPipes {
    stdout: (std::io::PipeReader, std::io::PipeWriter),
    stderr: (std::io::PipeReader, std::io::PipeWriter),
}

impl OutputPipes {
    fn new() -> Result<OutputPipes, String> {
        let pipe =
            || std::io::pipe().map_err(|e| format!("a pipe for the container's output: {e}"));
        Ok(OutputPipes {
            stdout: pipe()?,
            stderr: pipe()?,
        })
    }

    /// In the container's process: its stdout and stderr are the pipes.
    fn into_stdio(self) -> Result<(), String> {
        rustix::stdio::dup2_stdout(&self.stdout.1).map_err(|e| format!("stdout: {e}"))?;
        rustix::stdio::dup2_stderr(&self.stderr.1).map_err(|e| format!("stderr: {e}"))?;
        Ok(())
    }

    /// In the init, once the container's process `child` is forked:
    /// copies its output into `log` a line at a time until it has exited
    /// and every process of its namespace is reaped; its exit status. One
    /// thread, polling: a process that has unshared a pid namespace can
    /// start no threads.
    fn copy_until_exit(self, log: &super::config::LogTarget, child: i32) -> Result<i32, String> {
        use rustix::event::{PollFd, PollFlags};
        let log =
            berth_runtime::LogFile::with_limits(log.path.clone(), log.max_bytes, log.max_files);
        let (stdout, stderr) = (self.stdout.0, self.stderr.0);
        drop((self.stdout.1, self.stderr.1));
        for reader in [&stdout, &stderr] {
            rustix::io::ioctl_fionbio(reader, true)
                .map_err(|e| format!("the output pipes: {e}"))?;
        }
        // Readable once the container's pid 1 has exited (which ends every
        // other process of its namespace). Where pidfds are missing (an old
        // kernel, a seccomp profile around berth), asked every 100 ms.
        let exited = rustix::process::Pid::from_raw(child)
            .ok_or(rustix::io::Errno::SRCH)
            .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()))
            .ok();
        let has_exited = || {
            rustix::process::Pid::from_raw(child).is_none_or(|pid| {
                rustix::process::waitid(
                    rustix::process::WaitId::Pid(pid),
                    rustix::process::WaitIdOptions::EXITED
                        | rustix::process::WaitIdOptions::NOHANG
                        | rustix::process::WaitIdOptions::NOWAIT,
                )
                .map_or(true, |status| status.is_some())
            })
        };
        let tick = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        let mut lines = [LineBuffer::default(), LineBuffer::default()];
        let mut open = [true, true];
        let readers = [&stdout, &stderr];
        loop {
            // Only the pipes still open: one whose writers are all gone
            // polls as hung up for ever, and would spin this loop.
            let watched: Vec<usize> = (0..2).filter(|&i| open[i]).collect();
            let mut fds: Vec<PollFd<'_>> = watched
                .iter()
                .map(|&i| PollFd::new(readers[i], PollFlags::IN))
                .collect();
            if let Some(exited) = &exited {
                fds.push(PollFd::new(exited, PollFlags::IN));
            }
            let timeout = exited.is_none().then_some(&tick);
            match rustix::event::poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(format!("waiting on the container: {e}")),
            }
            for (slot, &i) in watched.iter().enumerate() {
                if !fds[slot].revents().is_empty() {
                    open[i] = lines[i].read_from(readers[i], &log) != Read::End;
                }
            }
            let gone = match exited {
                Some(_) => !fds[watched.len()].revents().is_empty(),
                None => has_exited(),
            };
            if gone || !(open[0] || open[1]) {
                break;
            }
        }
        let code = wait(child)?;
        // All gone: what is left in the pipes is all there is.
        for (i, reader) in [&stdout, &stderr].into_iter().enumerate() {
            while open[i] && lines[i].read_from(reader, &log) == Read::Data {}
            lines[i].flush(&log);
        }
        Ok(code)
    }
}

/// What a read of a pipe found.
#[derive(PartialEq, Eq)]
enum Read {
    Data,
    /// Nothing for now.
    Empty,
    /// Its end: every writer has closed it.
    End,
}

/// A pipe's bytes not yet logged (a line still being written).
#[derive(Default)]
struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    /// Reads what `reader` has now and logs each whole line: any bytes
    /// (shown as UTF-8, lossily), a line over `LOG_LINE_MAX` in pieces.
    fn read_from(&mut self, reader: &std::io::PipeReader, log: &berth_runtime::LogFile) -> Read {
        let mut chunk = [0u8; 8192];
        let n = match rustix::io::read(reader, &mut chunk) {
            Ok(0) => return Read::End,
            Ok(n) => n,
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => return Read::Empty,
            Err(_) => return Read::End,
        };
        self.pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            log.write_line(&String::from_utf8_lossy(&self.pending[..end]));
            self.pending.drain(..=end);
        }
        if self.pending.len() >= LOG_LINE_MAX {
            log.write_line(&String::from_utf8_lossy(&self.pending));
            self.pending.clear();
        }
        Read::Data
    }

    fn flush(&mut self, log: &berth_runtime::LogFile) {
        if !self.pending.is_empty() {
            log.write_line(&String::from_utf8_lossy(&self.pending));
            self.pending.clear();
        }
    }
}

/// The longest line kept whole in a container's log.
const LOG_LINE_MAX: usize = 64 << 10;

/// Moves the runtime's socket off stdin (close-on-exec, so the container's
/// program never holds it) and puts /dev/null there for the container.
fn take_stdin() -> Result<UnixStream, String> {
    let status: OwnedFd = rustix::io::fcntl_dupfd_cloexec(std::io::stdin().as_fd(), 3)
        .map_err(|e| format!("taking the runtime's socket: {e}"))?;
    let null = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    rustix::stdio::dup2_stdin(&null).map_err(|e| format!("stdin: {e}"))?;
    Ok(UnixStream::from(status))
}

fn supervise(config: &InitConfig, status: &UnixStream) -> Result<i32, String> {
    // A container does not outlive berth (the thread that started it, in
    // fact: a runtime worker, which lives as long as berth does), unless it
    // is one the next berth adopts: then the init holds its output and its
    // exit code meanwhile, as conmon does.
    if !config.outlives {
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
            .map_err(|e| format!("prctl: {e}"))?;
    }
    // A session of its own: no controlling terminal for the container to
    // open as /dev/tty, and the terminal's Ctrl-C reaches berth, which
    // passes it on, rather than killing the init.
    rustix::process::setsid().map_err(|e| format!("setsid: {e}"))?;
    let pid = std::process::id().to_string();
    for procs in &config.cgroups {
        std::fs::write(procs, &pid).map_err(|e| format!("joining {}: {e}", procs.display()))?;
    }
    // Made here, in the host's pid namespace, and held until the container
    // is gone: its block of host ids stays locked that long.
    let mapping = match &config.user_namespace {
        Some(wanted) => match image_identity(config)
            .and_then(|identity| identity.unmapped(&config.user, userns::IDS))
        {
            Some(unmapped) => {
                let why = format!(
                    "{unmapped} is past the {} ids a user namespace maps",
                    userns::IDS
                );
                if wanted.required {
                    return Err(format!("hostUsers: false: {why}"));
                }
                eprintln!("berth: {why}; the container runs with host ids");
                None
            }
            None => match userns::create(&wanted.lock_dir, config.network == Network::Own) {
                Ok(mapping) => Some(mapping),
                Err(e) if wanted.required => return Err(format!("hostUsers: false: {e}")),
                Err(e) => {
                    eprintln!(
                        "berth: no user namespace here ({e}); the container runs with host ids"
                    );
                    None
                }
            },
        },
        None => None,
    };
    // The mount namespace is the child's alone (it unshares it after the
    // fork): pivot_root moves the root of every process sharing the
    // namespace, and the init must keep the host's to write its files.
    let mut flags = UnshareFlags::NEWUTS | UnshareFlags::NEWIPC | UnshareFlags::NEWPID;
    let join_network = |ns: std::os::fd::BorrowedFd<'_>| {
        rustix::thread::move_into_link_name_space(
            ns,
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
    };
    match &config.network {
        Network::Own => match mapping.as_ref().and_then(|m| m.network.as_ref()) {
            Some(ns) => join_network(ns.as_fd())
                .map_err(|e| format!("entering the container's network namespace: {e}"))?,
            None => flags |= UnshareFlags::NEWNET,
        },
        Network::Join(path) => {
            let ns = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            join_network(ns.as_fd())
                .map_err(|e| format!("joining the pod's network namespace: {e}"))?;
        }
        Network::Host => {}
    }
    for joined in &config.joined {
        let (path, kind, flag) = match joined {
            Joined::Ipc(path) => (
                path,
                rustix::thread::LinkNameSpaceType::InterProcessCommunication,
                UnshareFlags::NEWIPC,
            ),
            Joined::Uts(path) => (
                path,
                rustix::thread::LinkNameSpaceType::HostNameAndNISDomainName,
                UnshareFlags::NEWUTS,
            ),
        };
        let ns = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        rustix::thread::move_into_link_name_space(ns.as_fd(), Some(kind))
            .map_err(|e| format!("joining the pod's namespace {}: {e}", path.display()))?;
        flags -= flag;
    }
    // Processes the container leaves behind are reparented here and reaped,
    // so none lingers (a zombie keeps its cgroup from being removed).
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| format!("becoming a subreaper: {e}"))?;
    unshare(flags)?;
    // The runtime reads `started` first: a child that fails at once waits
    // for the init to have said it (the init closes its end after) before
    // it writes why, so the two never interleave.
    let (said_started, saying) =
        std::io::pipe().map_err(|e| format!("a pipe for the container: {e}"))?;
    let output = config
        .log
        .as_ref()
        .map(|_| OutputPipes::new())
        .transpose()?;

    match fork()? {
        Forked::Child => {
            drop(saying);
            let error = match output.map(OutputPipes::into_stdio).transpose() {
                Ok(_) => container(config, mapping.as_ref()),
                Err(e) => setup(e),
            };
            let _ = std::io::Read::read(&mut &said_started, &mut [0u8; 1]);
            let _ = (&*status).write_all(error.message.as_bytes());
            std::process::exit(error.code);
        }
        Forked::Parent(child) => {
            drop(said_started);
            let told = (&*status)
                .write_all(format!("{STARTED}{child}\n").as_bytes())
                .map_err(|e| format!("telling the runtime the container started: {e}"));
            drop(saying);
            told?;
            match (output, &config.log) {
                (Some(output), Some(log)) => output.copy_until_exit(log, child),
                _ => wait(child),
            }
        }
    }
}

/// The ids the container's process will have, from the image's own
/// /etc/passwd and /etc/group, read inside its tree (a symlink there cannot
/// lead to the host's); None when that cannot tell (the container's start
/// reports it, as it resolves the user again at its root).
fn image_identity(config: &InitConfig) -> Option<Identity> {
    let root =
        cap_std::fs::Dir::open_ambient_dir(&config.lower, cap_std::ambient_authority()).ok()?;
    let read = |path: &str| root.read_to_string(path).unwrap_or_default();
    identity::resolve(&config.user, &read("etc/passwd"), &read("etc/group")).ok()
}

/// `mount(2)` of a filesystem with its options as text.
fn mount_fs(
    source: &str,
    target: &Path,
    fs: &str,
    flags: MountFlags,
    data: &str,
) -> rustix::io::Result<()> {
    let data = std::ffi::CString::new(data).map_err(|_| rustix::io::Errno::INVAL)?;
    rustix::mount::mount(source, target, fs, flags, Some(data.as_c_str()))
}

#[expect(
    unsafe_code,
    reason = "unshare of CLONE_NEWPID and friends is unsafe in rustix"
)]
fn unshare(flags: UnshareFlags) -> Result<(), String> {
    // SAFETY: the flags are namespaces only (no CLONE_FILES or CLONE_FS
    // sharing changes), in a single-threaded process.
    unsafe { rustix::thread::unshare_unsafe(flags) }
        .map_err(|e| format!("creating namespaces: {e}"))
}

pub(super) enum Forked {
    Parent(i32),
    Child,
}

#[expect(unsafe_code, reason = "fork has no safe wrapper")]
pub(super) fn fork() -> Result<Forked, String> {
    // SAFETY: this process is single-threaded (`berth-init` starts no
    // thread), so the child may do anything afterwards,
    // not only async-signal-safe calls.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// The child's exit status as a shell reports it, once it and every
/// process reparented here are gone.
fn wait(child: i32) -> Result<i32, String> {
    let mut code = None;
    loop {
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some((pid, status))) if pid.as_raw_nonzero().get() == child => {
                code = status
                    .exit_status()
                    .or(status.terminating_signal().map(|s| 128 + s));
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            // No children left: the container's pid 1 took the rest of its
            // namespace with it, and all are reaped.
            Err(rustix::io::Errno::CHILD) => {
                return code.ok_or_else(|| "the container vanished without a status".to_owned());
            }
            Err(e) => return Err(format!("waiting for the container: {e}")),
        }
    }
}

struct Failure {
    code: i32,
    message: String,
}

fn setup(message: String) -> Failure {
    Failure {
        code: SETUP_FAILED,
        message,
    }
}

/// pid 1 of the new namespaces: builds the container and execs; returns
/// only on failure.
fn container(config: &InitConfig, mapping: Option<&Mapping>) -> Failure {
    match prepare(config, mapping) {
        Ok(()) => {}
        Err(e) => return setup(e),
    }
    let error = std::process::Command::new(&config.args[0])
        .args(&config.args[1..])
        .env_clear()
        .envs(config.env.iter().filter_map(|kv| kv.split_once('=')))
        .exec();
    Failure {
        code: EXEC_FAILED,
        message: format!("exec {}: {error}", config.args[0]),
    }
}

fn prepare(config: &InitConfig, mapping: Option<&Mapping>) -> Result<(), String> {
    if config.args.is_empty() {
        return Err(
            "nothing to run: the image has no Entrypoint or Cmd and the pod gives no command"
                .into(),
        );
    }
    // Killed with the init, so a container never outlives its supervisor.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("prctl: {e}"))?;
    unshare(UnshareFlags::NEWNS)?;
    // Nothing mounted from here on may reach the host's mount table.
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| format!("making mounts private: {e}"))?;
    let root = &config.rootfs;
    let mut mapped = match mapping {
        Some(m) => idmapped_trees(config, m)?,
        None => None,
    };
    mount_root(config, &mut mapped)?;
    mount_system(root)?;
    volumes::mount(
        &config.rootfs,
        &config.mounts,
        mapped.as_ref().map(|m| volumes::Idmapped {
            trees: &m.volumes,
            host_base: m.mapping.host_base,
        }),
    )?;
    let mapping = mapped.as_ref().map(|m| m.mapping);
    // A pod name may be 253 characters, a hostname 64 at most: cut to 63,
    // as Kubernetes does.
    let hostname = &config.hostname.as_bytes()[..config.hostname.len().min(63)];
    // A UTS namespace joined keeps its own hostname (the pod's).
    if !config.joined.iter().any(|j| matches!(j, Joined::Uts(_))) {
        rustix::system::sethostname(hostname).map_err(|e| format!("setting the hostname: {e}"))?;
    }
    if config.network == Network::Own {
        loopback_up()?;
        // As Docker does for every container: ping through ICMP datagram
        // sockets for every group, and low ports for every user (its root
        // may bind them in a network namespace its user namespace owns,
        // but not its other users, nor a pod's later containers, each with
        // a user namespace of its own, joining the first one's network).
        // Best effort: where /proc/sys is read-only (berth itself in a
        // container), the container runs without them.
        for (setting, value) in [
            ("net/ipv4/ping_group_range", "0 2147483647"),
            ("net/ipv4/ip_unprivileged_port_start", "0"),
        ] {
            if let Err(e) = std::fs::write(Path::new("/proc/sys").join(setting), value) {
                eprintln!("berth: {setting}: {e}; the container runs without it");
            }
        }
    }
    std::env::set_current_dir(root).map_err(|e| format!("{}: {e}", root.display()))?;
    rustix::process::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH)
        .map_err(|e| format!("detaching the host's root: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    hide_kernel_paths()?;

    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let identity = identity::resolve(&config.user, &passwd, &group).map_err(|e| e.to_string())?;
    rustix::process::umask(Mode::from_raw_mode(0o022));
    let cwd = if config.cwd.is_empty() {
        "/"
    } else {
        &config.cwd
    };
    std::fs::create_dir_all(cwd).map_err(|e| format!("working dir {cwd}: {e}"))?;
    std::env::set_current_dir(cwd).map_err(|e| format!("working dir {cwd}: {e}"))?;
    // Under the new root, a leaked descriptor of a host directory is the
    // way out (CVE-2024-21626): the working dir must resolve inside.
    let here = std::env::current_dir().map_err(|e| format!("working dir {cwd}: {e}"))?;
    if !here.starts_with("/") || here.to_string_lossy().starts_with("(unreachable)") {
        return Err(format!("working dir {cwd} is outside the container"));
    }
    if config.read_only_root {
        // Last of the writes to the root (mount points, the working dir),
        // and of the root's own mount only, as runc does it: /proc, /dev,
        // /sys and the volumes are mounts of their own and keep their
        // flags. nodev is said again: a remount sets every flag it names
        // and clears the others.
        rustix::mount::mount_remount(
            "/",
            MountFlags::BIND | MountFlags::RDONLY | MountFlags::NODEV,
            "",
        )
        .map_err(|e| format!("readOnlyRootFilesystem: making the root read-only: {e}"))?;
    }
    if let Some(mapping) = mapping {
        enter_user_namespace(mapping.namespace.as_fd())?;
    }
    drop_privileges(&identity, config.capabilities)?;
    close_inherited_descriptors()?;
    deny_syscalls()?;
    Ok(())
}

/// Moves into the container's user namespace: the last namespace, once
/// everything is mounted, so the others stay the host's to manage.
fn enter_user_namespace(namespace: std::os::fd::BorrowedFd<'_>) -> Result<(), String> {
    rustix::thread::move_into_link_name_space(
        namespace,
        Some(rustix::thread::LinkNameSpaceType::User),
    )
    .map_err(|e| format!("entering the user namespace: {e}"))
}

/// Installs the seccomp filter: the last step, as it forbids mount and
/// friends, and after no_new_privs, which lets an unprivileged process
/// install one.
fn deny_syscalls() -> Result<(), String> {
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule,
    };
    let arch: seccompiler::TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp on {}: {e}", std::env::consts::ARCH))?;
    let error = |e: seccompiler::BackendError| format!("seccomp filter: {e}");
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> = plan::DENIED_SYSCALLS
        .iter()
        .map(|call| (*call, Vec::new()))
        .collect();
    // clone making a namespace (a user namespace above all, which would
    // hand back the capabilities dropped here): any one flag set.
    let namespaces = [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWCGROUP,
    ];
    let mut clone_rules = Vec::new();
    for flag in namespaces {
        let flag = flag as u64;
        let condition = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )
        .map_err(error)?;
        clone_rules.push(SeccompRule::new(vec![condition]).map_err(error)?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    let refuse = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(error)?;
    // clone3 passes its flags in memory a filter cannot read: it is refused
    // as unknown, so that libc falls back to clone, which is checked.
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(error)?;
    let mut programs: Vec<BpfProgram> = Vec::new();
    for filter in [refuse, clone3] {
        programs.push(filter.try_into().map_err(error)?);
    }
    programs.extend(no_x32());
    for program in &programs {
        seccompiler::apply_filter(program)
            .map_err(|e| format!("installing the seccomp filter: {e}"))?;
    }
    Ok(())
}

/// On x86-64, refuses every x32 system call (its numbers have bit 30 set,
/// under the same audit arch): the filters above name x86-64 numbers only,
/// so an x32 `unshare` or `mount` would pass them where the kernel runs
/// x32 programs. Docker's profile refuses x32 calls it does not list, too.
fn no_x32() -> Option<seccompiler::BpfProgram> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    use seccompiler::sock_filter;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let op = |code: u32, jt: u8, jf: u8, k: u32| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    // seccomp_data: nr at offset 0, arch at 4.
    Some(vec![
        op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 4),
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            3,
            AUDIT_ARCH_X86_64,
        ),
        op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        op(
            libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
            0,
            1,
            X32_SYSCALL_BIT,
        ),
        op(
            libc::BPF_RET | libc::BPF_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ])
}

/// `AUDIT_ARCH_X86_64`: EM_X86_64 (62) | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;

/// The image and the volumes as the container's ids see them, ready to
/// attach; the container has its own user namespace only if all of them
/// can be idmapped (otherwise its root could not read its volumes).
struct Mapped<'a> {
    mapping: &'a Mapping,
    lower: std::os::fd::OwnedFd,
    volumes: Vec<std::os::fd::OwnedFd>,
}

/// Prepares [`Mapped`]; none, said on stderr, when a filesystem here cannot
/// be idmapped, or an error when the user namespace is required.
fn idmapped_trees<'a>(
    config: &InitConfig,
    mapping: &'a Mapping,
) -> Result<Option<Mapped<'a>>, String> {
    let ns = mapping.namespace.as_fd();
    let lower = userns::idmapped_tree(
        &config.lower,
        ns,
        userns::Flags {
            read_only: true,
            nosuid: false,
            nodev: true,
        },
        false,
    )
    .map_err(|e| format!("the image at {}: {e}", config.lower.display()));
    let volumes = config
        .mounts
        .iter()
        .map(|mount| {
            let flags = userns::Flags {
                read_only: !mount.writable,
                nosuid: true,
                nodev: true,
            };
            userns::idmapped_tree(&mount.source, ns, flags, true)
                .map_err(|e| format!("volume {}: {e}", mount.source.display()))
        })
        .collect::<Result<Vec<_>, String>>();
    match (lower, volumes) {
        (Ok(lower), Ok(volumes)) => Ok(Some(Mapped {
            mapping,
            lower,
            volumes,
        })),
        (Err(e), _) | (_, Err(e)) => {
            without_user_namespace(config, &format!("cannot be idmapped: {e}"))
        }
    }
}

/// Gives up on the container's user namespace, or fails if it was required.
fn without_user_namespace<T>(config: &InitConfig, why: &str) -> Result<Option<T>, String> {
    if config.user_namespace.as_ref().is_some_and(|u| u.required) {
        return Err(format!("hostUsers: false: {why}"));
    }
    eprintln!("berth: {why}; the container runs with host ids");
    Ok(None)
}

/// Assembles the root: an overlay of the image (seen through the
/// container's ids when `mapped`) under its own writable layer. Drops
/// `mapped` if overlayfs takes the image only as it is.
fn mount_root(config: &InitConfig, mapped: &mut Option<Mapped<'_>>) -> Result<(), String> {
    let root = &config.rootfs;
    if config.prepared_root {
        // Its caller's root, as it is (and bound, so it is a mount point
        // pivot_root takes whatever it was).
        std::fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
        return rustix::mount::mount_bind_recursive(&config.lower, root)
            .map_err(|e| format!("binding the root {}: {e}", config.lower.display()));
    }
    for dir in [&config.upper, &config.work, root] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let overlay = |lower: &Path| {
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            config.upper.display(),
            config.work.display()
        );
        // nodev: whatever lands in the root, no device node there opens.
        // volatile (Linux 5.10+): no sync of the writable layer when the
        // container's namespace goes (a flush of the disk under it on every
        // exit). The layer is thrown away with the run (a restart gets a
        // new one), so a crash cannot leave a half-synced one in use.
        mount_fs(
            "overlay",
            root,
            "overlay",
            MountFlags::NODEV,
            &format!("{options},volatile"),
        )
        .or_else(|_| mount_fs("overlay", root, "overlay", MountFlags::NODEV, &options))
    };
    // What the container writes is its own, owned by its root.
    let own_upper = |id: u32| {
        for dir in [&config.upper, &config.work] {
            std::os::unix::fs::chown(dir, Some(id), Some(id))
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        Ok::<(), String>(())
    };
    let mounted;
    if let Some(m) = mapped {
        // The shared image through the container's ids, at a place of this
        // container's own (in its private mount namespace).
        let lower = config.upper.with_file_name("lower");
        std::fs::create_dir_all(&lower).map_err(|e| format!("{}: {e}", lower.display()))?;
        userns::attach(&m.lower, &lower).map_err(|e| format!("mounting the image: {e}"))?;
        own_upper(m.mapping.host_base)?;
        mounted = overlay(&lower);
        if let Err(e) = mounted {
            // Overlayfs before Linux 5.19 refuses idmapped layers: if it
            // takes the image as it is, that is the choice; if not, there is
            // no overlayfs, and the copy below is given the container's ids.
            own_upper(0)?;
            if overlay(&config.lower).is_ok() {
                without_user_namespace::<()>(
                    config,
                    &format!("overlayfs will not take the image idmapped ({e})"),
                )?;
                *mapped = None;
                return Ok(());
            }
            own_upper(m.mapping.host_base)?;
        }
    } else {
        mounted = overlay(&config.lower);
    }
    if let Err(e) = mounted {
        // No overlayfs (or lower dirs it refuses): a private copy.
        copy_tree(&config.lower, &config.upper)
            .map_err(|c| format!("overlay mount failed ({e}) and so did copying the image: {c}"))?;
        if let Some(m) = mapped {
            userns::shift_ownership(&config.upper, m.mapping.host_base)
                .map_err(|e| format!("giving the copied image to the container's ids: {e}"))?;
        }
        rustix::mount::mount_bind(&config.upper, root)
            .map_err(|e| format!("binding the root: {e}"))?;
        rustix::mount::mount_remount(root, MountFlags::BIND | MountFlags::NODEV, "")
            .map_err(|e| format!("binding the root: {e}"))?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            let _ = std::fs::remove_file(&target);
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
            let mode = entry.metadata()?.permissions().mode();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn mount_system(root: &Path) -> Result<(), String> {
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let mkdir = |p: &Path| std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()));
    let mount = |source: &str, target: &Path, fs: &str, flags: MountFlags, data: &str| {
        mount_fs(source, target, fs, flags, data)
            .map_err(|e| format!("mounting {fs} at {}: {e}", target.display()))
    };
    let hardened = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;

    mkdir(&at("proc"))?;
    mount("proc", &at("proc"), "proc", hardened, "")?;

    let dev = at("dev");
    mkdir(&dev)?;
    mount(
        "tmpfs",
        &dev,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::STRICTATIME,
        "mode=755,size=65536k",
    )?;
    rustix::process::umask(Mode::empty());
    for (name, major, minor) in plan::DEVICES {
        let path = dev.join(name);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(*major, *minor),
        )
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    }
    mkdir(&dev.join("pts"))?;
    mount(
        "devpts",
        &dev.join("pts"),
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )?;
    mkdir(&dev.join("shm"))?;
    mount(
        "shm",
        &dev.join("shm"),
        "tmpfs",
        hardened,
        "mode=1777,size=65536k",
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))
            .map_err(|e| format!("/dev/{link}: {e}"))?;
    }

    let sys = at("sys");
    mkdir(&sys)?;
    if mount("sysfs", &sys, "sysfs", hardened | MountFlags::RDONLY, "").is_err() {
        // sysfs belongs to a network namespace; sharing the host's, see
        // the host's, read-only.
        rustix::mount::mount_bind_recursive("/sys", &sys)
            .map_err(|e| format!("binding /sys: {e}"))?;
        remount_read_only(&sys)?;
        // The read-only bind stops at the top; the host's cgroup mounts
        // below it would stay writable. Hidden instead.
        let cgroups = sys.join("fs/cgroup");
        if cgroups.is_dir() {
            mount_fs(
                "tmpfs",
                &cgroups,
                "tmpfs",
                MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
                "size=0",
            )
            .map_err(|e| format!("hiding the host's cgroups: {e}"))?;
        }
    }
    Ok(())
}

fn remount_read_only(path: &Path) -> Result<(), String> {
    rustix::mount::mount_remount(
        path,
        MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
        "",
    )
    .map_err(|e| format!("making {} read-only: {e}", path.display()))
}

fn hide_kernel_paths() -> Result<(), String> {
    for path in plan::MASKED {
        let path = Path::new(path);
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                mount_fs("tmpfs", path, "tmpfs", MountFlags::RDONLY, "size=0")
                    .map_err(|e| format!("masking {}: {e}", path.display()))?;
            }
            Ok(_) => {
                rustix::mount::mount_bind("/dev/null", path)
                    .map_err(|e| format!("masking {}: {e}", path.display()))?;
            }
            Err(_) => {}
        }
    }
    for path in plan::READ_ONLY {
        let path = Path::new(path);
        if path.exists() {
            rustix::mount::mount_bind(path, path)
                .map_err(|e| format!("binding {}: {e}", path.display()))?;
            remount_read_only(path)?;
        }
    }
    Ok(())
}

/// Becomes `identity`, bounded by `capabilities` for good.
fn drop_privileges(identity: &Identity, capabilities: CapabilitySet) -> Result<(), String> {
    // What this kernel has (a capability newer than it cannot be set).
    let held = rustix::thread::capabilities(None)
        .map_err(|e| format!("capget: {e}"))?
        .permitted;
    let keep = capabilities & held;
    for bit in 0..64 {
        let cap = CapabilitySet::from_bits_retain(1 << bit);
        if !keep.contains(cap) {
            // Numbers this kernel does not know are refused: nothing to drop.
            let _ = rustix::thread::remove_capability_from_bounding_set(cap);
        }
    }
    let Identity { uid, gid, groups } = identity;
    let groups: Vec<rustix::process::Gid> = groups
        .iter()
        .map(|g| rustix::process::Gid::from_raw(*g))
        .collect();
    rustix::thread::set_thread_groups(&groups)
        .map_err(|e| format!("setgroups {:?}: {e}", identity.groups))?;
    rustix::thread::set_thread_gid(rustix::process::Gid::from_raw(*gid))
        .map_err(|e| format!("setgid {gid}: {e}"))?;
    rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(*uid))
        .map_err(|e| format!("setuid {uid}: {e}"))?;
    // Changing ids clears the parent-death signal: set it again.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("prctl: {e}"))?;
    // Root keeps the set; anyone else none, as under runc, where the exec
    // of a program without file capabilities clears them for a non-root
    // user (the set stays its bound; Kubernetes gives no ambient ones).
    // Said outright: in a user namespace entered as host root, changing
    // to a non-zero id does not clear what the kernel would otherwise.
    let keep = if *uid == 0 {
        keep
    } else {
        CapabilitySet::empty()
    };
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: keep,
            permitted: keep,
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(|e| format!("capset: {e}"))?;
    rustix::thread::clear_ambient_capability_set().map_err(|e| format!("ambient caps: {e}"))?;
    rustix::thread::set_no_new_privs(true).map_err(|e| format!("no_new_privs: {e}"))?;
    Ok(())
}

/// Marks every descriptor but stdin, stdout and stderr close-on-exec.
fn close_inherited_descriptors() -> Result<(), String> {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("/proc/self/fd: {e}"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        set_cloexec(fd);
    }
    Ok(())
}

#[expect(unsafe_code, reason = "a raw descriptor number from /proc/self/fd")]
fn set_cloexec(fd: i32) {
    // SAFETY: fcntl on a number that may no longer be open (the listing's
    // own) just fails with EBADF.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

/// Brings `lo` up in a new network namespace (it starts down).
#[expect(unsafe_code, reason = "SIOCSIFFLAGS has no safe wrapper")]
fn loopback_up() -> Result<(), String> {
    let socket = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    use std::os::fd::AsRawFd as _;
    // SAFETY: a valid socket, a valid ifreq naming "lo"; the kernel fills
    // in and reads the flags union member.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(format!("lo: {}", std::io::Error::last_os_error()));
        }
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(format!(
                "bringing lo up: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// `berth-init exec PID INIT_PID CMD ARGS...`: runs a command inside the
/// running container whose pid 1 is `PID`, child of `INIT_PID` (as an exec
/// probe does): in its cgroups and namespaces, at its root and working
/// dir, with its environment and the same privileges, seccomp filter
/// included. Exits with the command's status; never returns.
pub fn exec_main(pid: &str, init: &str, command: &[String]) -> ! {
    let code = match exec_in(pid, init, command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth-init exec: {e}");
            SETUP_FAILED
        }
    };
    std::process::exit(code)
}

fn exec_in(pid: &str, init: &str, command: &[String]) -> Result<i32, String> {
    if command.is_empty() {
        return Err("no command".into());
    }
    // A handle first, then everything read of /proc/PID, then proof that
    // the handle's process is still there and is the container's pid 1
    // (its parent the init): only then was what was read its, not that of
    // a process given the pid after the container ended.
    let number = pid
        .parse::<i32>()
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| format!("{pid:?} is not a pid"))?;
    let handle = rustix::process::pidfd_open(number, rustix::process::PidfdFlags::empty())
        .map_err(|e| format!("container {pid}: {e}"))?;
    let proc_dir = Path::new("/proc").join(pid);
    let read = |name: &str| {
        std::fs::read(proc_dir.join(name)).map_err(|e| format!("container {pid}: {name}: {e}"))
    };
    let env: Vec<String> = read("environ")?
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .collect();
    let status = String::from_utf8_lossy(&read("status")?).into_owned();
    let id = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let (mut uid, mut gid) = (id("Uid:"), id("Gid:"));
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name));
    let mut groups: Vec<u32> = field("Groups:")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|g| g.parse().ok())
        .collect();
    // Its bound is the set its spec gave it (or less, if it dropped some):
    // the command gets no more.
    let capabilities = field("CapBnd:")
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .map(CapabilitySet::from_bits_retain)
        .ok_or_else(|| format!("container {pid}: no CapBnd in its status"))?;
    let parent = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .map(str::trim);
    if parent != Some(init) {
        return Err(format!(
            "process {pid} is not the container's (its parent is not {init})"
        ));
    }
    // A container in a user namespace of its own: the command joins it
    // (last, in the child), and takes its ids as the namespace names them.
    let user_ns = {
        use std::os::unix::fs::MetadataExt as _;
        let path = proc_dir.join("ns/user");
        let theirs = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let ours = std::fs::metadata("/proc/self/ns/user").map_err(|e| e.to_string())?;
        let their_ino = theirs.metadata().map_err(|e| e.to_string())?.ino();
        (their_ino != ours.ino()).then_some(theirs)
    };
    if user_ns.is_some() {
        let inside = |map: &str, host: u32| {
            map.lines().find_map(|l| {
                let n: Vec<u32> = l
                    .split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect();
                let [inner, outer, count] = n[..] else {
                    return None;
                };
                (host >= outer && host - outer < count).then(|| inner + (host - outer))
            })
        };
        let uid_map = String::from_utf8_lossy(&read("uid_map")?).into_owned();
        let gid_map = String::from_utf8_lossy(&read("gid_map")?).into_owned();
        uid = inside(&uid_map, uid)
            .ok_or_else(|| format!("uid {uid} is not mapped in container {pid}"))?;
        gid = inside(&gid_map, gid)
            .ok_or_else(|| format!("gid {gid} is not mapped in container {pid}"))?;
        groups = groups
            .into_iter()
            .map(|g| {
                inside(&gid_map, g)
                    .ok_or_else(|| format!("group {g} is not mapped in container {pid}"))
            })
            .collect::<Result<_, _>>()?;
    }
    let identity = Identity { uid, gid, groups };
    let cwd = std::fs::read_link(proc_dir.join("cwd")).unwrap_or_else(|_| "/".into());
    // Its cgroups first, so everything after is counted against its limits.
    let mounts = super::cgroup::Hierarchies::detect();
    for line in String::from_utf8_lossy(&read("cgroup")?).lines() {
        if let Some(procs) = mounts.procs_file_for(line) {
            let _ = std::fs::write(procs, std::process::id().to_string());
        }
    }
    // Opened before moving anywhere: after the mount namespace, /proc is
    // the container's.
    let kinds = [
        (
            "ipc",
            rustix::thread::LinkNameSpaceType::InterProcessCommunication,
        ),
        (
            "uts",
            rustix::thread::LinkNameSpaceType::HostNameAndNISDomainName,
        ),
        ("net", rustix::thread::LinkNameSpaceType::Network),
        ("pid", rustix::thread::LinkNameSpaceType::ProcessID),
        ("mnt", rustix::thread::LinkNameSpaceType::Mount),
    ];
    let mut namespaces = Vec::new();
    for (name, kind) in kinds {
        let path = proc_dir.join("ns").join(name);
        let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        namespaces.push((name, kind, file));
    }
    if !alive(&handle) {
        return Err(format!("container {pid} has exited"));
    }
    for (name, kind, file) in &namespaces {
        rustix::thread::move_into_link_name_space(file.as_fd(), Some(*kind))
            .map_err(|e| format!("entering the container's {name} namespace: {e}"))?;
    }
    // Entering a mount namespace puts us at its root; the pid namespace
    // applies from the next process on.
    match fork()? {
        Forked::Child => {
            // Gone with the probe that ran it, when that gives up.
            let _ = rustix::process::set_parent_process_death_signal(Some(
                rustix::process::Signal::KILL,
            ));
            let result = std::env::set_current_dir(&cwd)
                .map_err(|e| format!("working dir {}: {e}", cwd.display()))
                .and_then(|()| match &user_ns {
                    Some(ns) => enter_user_namespace(ns.as_fd()),
                    None => Ok(()),
                })
                .and_then(|()| drop_privileges(&identity, capabilities))
                .and_then(|()| deny_syscalls());
            if let Err(e) = result {
                eprintln!("berth-init exec: {e}");
                std::process::exit(SETUP_FAILED);
            }
            let error = std::process::Command::new(&command[0])
                .args(&command[1..])
                .env_clear()
                .envs(env.iter().filter_map(|kv| kv.split_once('=')))
                .exec();
            eprintln!("berth-init exec: {}: {error}", command[0]);
            std::process::exit(EXEC_FAILED);
        }
        Forked::Parent(child) => wait(child),
    }
}

/// Whether the process behind a pidfd is still there: signal 0 through it
/// fails with ESRCH once it has exited.
#[expect(
    unsafe_code,
    reason = "pidfd_send_signal with signal 0 has no safe wrapper"
)]
fn alive(pidfd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a descriptor this function borrows, signal 0 (nothing is
    // sent), no siginfo, no flags.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    sent == 0
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    #[test]
    #[expect(unsafe_code, reason = "fork, raw system calls and _exit")]
    fn x32_system_calls_are_refused_and_x86_64_ones_pass() {
        let program = super::no_x32().expect("a filter on x86-64");
        // SAFETY: the child only makes system calls (prctl and seccomp in
        // apply_filter, which allocates nothing, then getpid) and _exits:
        // nothing that could find a lock held by another test thread.
        unsafe {
            match libc::fork() {
                0 => {
                    if seccompiler::apply_filter(&program).is_err() {
                        libc::_exit(2);
                    }
                    let x32 = libc::syscall(0x4000_0000 | libc::SYS_getpid);
                    let errno = *libc::__errno_location();
                    let native = libc::syscall(libc::SYS_getpid);
                    libc::_exit(match (x32, errno, native > 0) {
                        (-1, libc::EPERM, true) => 0,
                        (_, _, false) => 3,
                        _ => 4,
                    });
                }
                -1 => panic!("fork: {}", std::io::Error::last_os_error()),
                child => {
                    let mut status = 0;
                    assert_eq!(libc::waitpid(child, &mut status, 0), child);
                    assert!(libc::WIFEXITED(status), "{status:#x}");
                    // 4: the x32 getpid was not refused with EPERM.
                    assert_eq!(libc::WEXITSTATUS(status), 0);
                }
            }
        }
    }
}
