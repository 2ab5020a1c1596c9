//! What the runtime hands `berth-init` for one container: everything the
//! init needs to build the container and nothing it must look up, so the
//! setup is a straight line of system calls in a fresh, single-threaded
//! process.

use std::path::PathBuf;

use rustix::thread::CapabilitySet;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitConfig {
    /// The image's unpacked filesystem, read-only, shared by containers;
    /// or, when `prepared_root`, the container's own writable root, bound
    /// as it is.
    pub lower: PathBuf,
    #[serde(default)]
    pub prepared_root: bool,
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
    /// Who the container's process is (resolved inside its tree).
    pub user: User,
    /// The capabilities its process may hold: its bounding set, and what
    /// it has when it runs as root.
    #[serde(with = "capability_bits")]
    pub capabilities: CapabilitySet,
    /// `readOnlyRootFilesystem`: the root's own mount is read-only (the
    /// mounts on it keep their own flags).
    pub read_only_root: bool,
    /// cgroup.procs files to join before anything else.
    pub cgroups: Vec<PathBuf>,
    /// Host directories (or files) bound into the container.
    pub mounts: Vec<BindMount>,
    /// Join the pod's network namespace instead of making a new one;
    /// `host` to stay in the host's.
    pub network: Network,
    /// Namespaces of the pod's to join rather than make (the pod sandbox's
    /// IPC and UTS ones, under the shim).
    #[serde(default)]
    pub joined: Vec<Joined>,
    /// A user namespace of its own (see `userns.rs`); none to run with the
    /// host's ids.
    pub user_namespace: Option<UserNamespace>,
    /// A log the init writes the container's output to itself (rather than
    /// handing it its own stdout and stderr), so nothing is lost while no
    /// berth runs.
    #[serde(default)]
    pub log: Option<LogTarget>,
    /// Write the container's exit code here: for the berth that adopts
    /// it, or for a parent whose children another reaper may collect (the
    /// shim's).
    #[serde(default)]
    pub exit_file: Option<PathBuf>,
    /// Outlive berth: no parent-death signal.
    #[serde(default)]
    pub outlives: bool,
}

/// A container's log: its file and when to rotate it (see
/// `berth_runtime::LogFile`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogTarget {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub max_files: u32,
}

/// The container's user: the image's, and what the pod says over it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The image's `User`: `uid[:gid]`, or names in its /etc/passwd and
    /// /etc/group; empty for root.
    pub image: String,
    /// `runAsUser`, over the image's user.
    pub uid: Option<u32>,
    /// `runAsGroup`, over the image's group.
    pub gid: Option<u32>,
    /// `fsGroup` and `supplementalGroups`: groups beyond those the image's
    /// /etc/group gives the user.
    pub groups: Vec<u32>,
}

impl User {
    /// The image's user, as it says.
    pub fn of_image(user: &str) -> User {
        User {
            image: user.to_owned(),
            ..User::default()
        }
    }
}

/// A capability set as its bits (the kernel's numbering, which is stable):
/// rustix's type has no serde of its own.
mod capability_bits {
    use rustix::thread::CapabilitySet;
    use serde::{Deserialize as _, Deserializer, Serialize as _, Serializer};

    pub fn serialize<S: Serializer>(set: &CapabilitySet, to: S) -> Result<S::Ok, S::Error> {
        set.bits().serialize(to)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<CapabilitySet, D::Error> {
        u64::deserialize(from).map(CapabilitySet::from_bits_retain)
    }
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
    /// The pod's namespace, by a path that opens it (`/proc/PID/ns/net`
    /// of a process in it, or a descriptor that holds it open).
    Join(PathBuf),
    /// `hostNetwork: true`.
    Host,
}

/// A namespace a container joins, by a path that opens it
/// (`/proc/PID/ns/ipc` of a process in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Joined {
    Ipc(PathBuf),
    /// Its hostname is then the namespace's.
    Uts(PathBuf),
}

/// A host path bound at `target` in the container (a volume).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: String,
    pub writable: bool,
}
