//! The namespace backend: Linux container images run as processes in
//! their own pid, mount, UTS, IPC and network namespaces, on an overlay of
//! the image's unpacked layers, limited by cgroups, with Docker's default
//! capabilities and no_new_privs.
//!
//! Each container is started by re-executing berth as `berth __init` (see
//! `init.rs`), a fresh single-threaded process that may fork safely; the
//! runtime keeps that process as the container's handle.

pub mod cgroup;
pub mod config;
pub mod init;
pub mod plan;
mod userns;
mod workload;

pub use workload::{LinuxWorkload, NetnsConnector};

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
    /// The image's unpacked root filesystem (read-only, shared).
    pub rootfs: PathBuf,
    /// Where this container keeps its writable layer and state.
    pub state_dir: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub network: Network,
    pub mounts: Vec<config::BindMount>,
    pub limits: cgroup::Limits,
    /// Run in a user namespace of its own, or with the host's ids.
    pub user_namespace: UserIds,
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
    init: tokio::process::Child,
    cgroups: cgroup::Cgroups,
    state_dir: PathBuf,
}

/// How the container's output leaves it.
pub enum Output {
    /// The caller's terminal (`berth run`).
    Inherit,
    /// Pipes the caller reads (a pod's logs).
    Piped,
}

/// Starts `spec`; returns once its process runs (or with why it could not).
pub async fn start(
    spec: &ContainerSpec,
    output: Output,
) -> Result<(Container, Option<Pipes>), String> {
    std::fs::create_dir_all(&spec.state_dir)
        .map_err(|e| format!("{}: {e}", spec.state_dir.display()))?;
    let cgroups = cgroup::Cgroups::create(&cgroup::Hierarchies::detect(), &spec.id, &spec.limits)?;
    let config = InitConfig {
        lower: spec.rootfs.clone(),
        upper: spec.state_dir.join("upper"),
        work: spec.state_dir.join("work"),
        rootfs: spec.state_dir.join("rootfs"),
        pid_file: spec.state_dir.join("pid"),
        error_file: spec.state_dir.join("error"),
        hostname: spec.hostname.clone(),
        args: spec.args.clone(),
        env: spec.env.clone(),
        cwd: spec.cwd.clone(),
        user: spec.user.clone(),
        cgroups: cgroups.procs_files(),
        mounts: spec.mounts.clone(),
        network: spec.network.clone(),
        user_namespace: (spec.user_namespace != UserIds::Host).then(|| config::UserNamespace {
            lock_dir: PathBuf::from(USER_ID_LOCKS),
            required: spec.user_namespace == UserIds::RequiredPrivate,
        }),
    };
    let config_path = spec.state_dir.join("config.json");
    let prepared = std::fs::write(&config_path, serde_json::to_vec(&config).expect("JSON"))
        .map_err(|e| format!("{}: {e}", config_path.display()))
        .and_then(|()| std::env::current_exe().map_err(|e| format!("finding berth's binary: {e}")));
    let exe = match prepared {
        Ok(exe) => exe,
        Err(e) => {
            cgroups.remove();
            let _ = std::fs::remove_dir_all(&spec.state_dir);
            return Err(e);
        }
    };
    let _ = std::fs::remove_file(&config.pid_file);
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("__init")
        .arg(&config_path)
        .env_clear()
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match output {
        Output::Inherit => command.stdout(Stdio::inherit()).stderr(Stdio::inherit()),
        Output::Piped => command.stdout(Stdio::piped()).stderr(Stdio::piped()),
    };
    let mut init = command.spawn().map_err(|e| {
        cgroups.remove();
        let _ = std::fs::remove_dir_all(&spec.state_dir);
        format!("starting the container's init: {e}")
    })?;
    let pipes = match (init.stdout.take(), init.stderr.take()) {
        (Some(stdout), Some(stderr)) => Some(Pipes { stdout, stderr }),
        _ => None,
    };
    // Running once the init has written the pid; failed if it exits first.
    loop {
        if let Ok(text) = std::fs::read_to_string(&config.pid_file)
            && let Ok(pid) = text.trim().parse::<u32>()
        {
            return Ok((
                Container {
                    id: spec.id.clone(),
                    pid,
                    init,
                    cgroups,
                    state_dir: spec.state_dir.clone(),
                },
                pipes,
            ));
        }
        if let Ok(Some(status)) = init.try_wait() {
            let error = std::fs::read_to_string(&config.error_file).unwrap_or_default();
            cgroups.remove();
            return Err(if error.is_empty() {
                format!("the container's init exited ({status}) before the container ran")
            } else {
                error
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A piped container's stdout and stderr.
pub struct Pipes {
    pub stdout: tokio::process::ChildStdout,
    pub stderr: tokio::process::ChildStderr,
}

impl Container {
    /// Waits for the container to end.
    pub async fn wait(&mut self) -> Exit {
        let status = self.init.wait().await;
        let code = status.ok().and_then(|s| s.code()).unwrap_or(128 + 9);
        let error = (code == init::SETUP_FAILED || code == init::EXEC_FAILED)
            .then(|| self.error())
            .filter(|e| !e.is_empty());
        if let Some(error) = &error {
            tracing::warn!(container = %self.id, "{error}");
        }
        Exit {
            code,
            oom_killed: self.cgroups.oom_killed(),
            error,
        }
    }

    /// What the container's init reported when it could not run it.
    pub fn error(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("error")).unwrap_or_default()
    }

    /// Sends `signal` to the container's pid 1.
    pub fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, signal);
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
        self.wait().await
    }

    /// Removes the container's cgroups and state (its writable layer).
    /// Its mounts lived in its own mount namespace and went with it.
    pub fn remove(self) {
        self.cgroups.remove();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }

    /// The container's network namespace, for connecting to its ports.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/proc")
            .join(self.pid.to_string())
            .join("ns")
            .join("net")
    }
}
