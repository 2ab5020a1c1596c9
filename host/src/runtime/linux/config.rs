//! What the runtime hands `berth-init` for one container: everything the
//! init needs to build the container and nothing it must look up, so the
//! setup is a straight line of system calls in a fresh, single-threaded
//! process.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitConfig {
    /// The image's unpacked filesystem, read-only, shared by containers.
    pub lower: PathBuf,
    /// This container's writable layer, its overlay work dir, and where the
    /// root is assembled; all under its state dir.
    pub upper: PathBuf,
    pub work: PathBuf,
    pub rootfs: PathBuf,
    pub hostname: String,
    /// The program and its arguments; the first is looked up on `PATH`.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// `uid[:gid]`, or a name in the image's /etc/passwd; empty for root.
    pub user: String,
    /// cgroup.procs files to join before anything else.
    pub cgroups: Vec<PathBuf>,
    /// Host directories (or files) bound into the container.
    pub mounts: Vec<BindMount>,
    /// Join the network namespace of this process (the pod's first
    /// container) instead of making a new one; `host` to stay in the host's.
    pub network: Network,
    /// A user namespace of its own (see `userns.rs`); none to run with the
    /// host's ids.
    pub user_namespace: Option<UserNamespace>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserNamespace {
    /// Where the locks of the host-id blocks are: one place for the host.
    pub lock_dir: PathBuf,
    /// Fail rather than run with host ids where the kernel or a
    /// filesystem cannot do it (`hostUsers: false`).
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// A namespace of its own with only loopback up.
    Own,
    /// The namespace of another container of the pod, by its pid.
    Join(u32),
    /// `hostNetwork: true`.
    Host,
}

/// A host path bound at `target` in the container (a volume).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: String,
    pub writable: bool,
}
