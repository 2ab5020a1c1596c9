//! `containerd-shim-berth-v1`: berth's wasm runtime under containerd, so
//! the images and YAML that run on berth run on a Kubernetes node too
//! (RuntimeClass handler `berth`).
//!
//! containerd starts the shim once per container with `start`; the shim
//! moves into the container's network namespace (and a mount namespace of
//! its own, so nothing it mounts outlives it) and re-executes itself as
//! the task server. Each task is a berth workload: an HTTP component
//! served on `BERTH_LISTEN` (default 0.0.0.0:8080) in that namespace, or a
//! command component run to its exit code, with only what the OCI spec
//! grants (see `plan.rs`). The task's "process" is the shim itself: a wasm
//! guest has no process of its own.

mod exec;
mod linux;
mod output;
mod plan;
mod task;

use std::path::Path;
use std::sync::Arc;

use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, DeleteResponse, Error, ExitSignal, Flags, StartOpts};

struct Shim {
    namespace: String,
    exit: Arc<ExitSignal>,
}

impl containerd_shim::Shim for Shim {
    type T = task::Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Shim {
            namespace: args.namespace.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        // containerd runs `start` in the bundle.
        let spec = containerd_shim::util::read_spec_from_file(".")?;
        let network = plan::network(&spec);
        enter_namespaces(network).map_err(Error::Other)?;
        // A pod's containers share its sandbox's shim (and so its network
        // namespace); a container of no pod has one of its own.
        let grouping = linux::grouping(&spec, &opts.id);
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        containerd_shim::util::write_address(&address)?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        // A shim that died: whatever it mounted in its own namespace went
        // with it; a rootfs mounted before it moved is unmounted here.
        let rootfs = std::env::current_dir()
            .map_err(|e| Error::Other(e.to_string()))?
            .join("rootfs");
        let _ = containerd_shim::mount::umount_recursive(rootfs.to_str(), 0);
        Ok(DeleteResponse {
            exit_status: 137,
            exited_at: Some(containerd_shim::util::timestamp()?).into(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> task::Service {
        task::Service::new(self.namespace.clone(), publisher, self.exit.clone())
    }
}

/// Moves the shim into the container's network namespace (a new one when
/// the spec asks for one without a path) and into a mount namespace of its
/// own, before it forks the task server, which inherits both.
fn enter_namespaces(network: Option<Option<std::path::PathBuf>>) -> Result<(), String> {
    use nix::sched::CloneFlags;
    match network {
        Some(Some(path)) => {
            let file = std::fs::File::open(&path)
                .map_err(|e| format!("the network namespace {}: {e}", path.display()))?;
            nix::sched::setns(file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("entering the network namespace {}: {e}", path.display()))?;
        }
        Some(None) => {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("making a network namespace: {e}"))?;
            loopback_up().map_err(|e| format!("bringing up the new namespace's lo: {e}"))?;
        }
        None => {}
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("making a mount namespace: {e}"))?;
    nix::mount::mount(
        None::<&str>,
        Path::new("/"),
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| format!("making the shim's mounts private: {e}"))
}

/// Sets the loopback interface of the current network namespace up, as
/// runc does for a namespace it makes: one rtnetlink RTM_NEWLINK request
/// (the header and an ifinfomsg, 32 bytes) and the kernel's ack. Written
/// out here rather than pulling in a netlink stack for one message.
fn loopback_up() -> std::io::Result<()> {
    use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType};
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const NLMSG_ERROR: u16 = 2;
    const IFF_UP: u32 = 1;
    // A new network namespace's only interface, always index 1.
    const LOOPBACK_INDEX: i32 = 1;

    let socket = rustix::net::socket(AddressFamily::NETLINK, SocketType::RAW, None)?;
    let mut message = Vec::with_capacity(32);
    message.extend_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    message.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes()); // seq
    message.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it
    message.extend_from_slice(&[0, 0]); // ifi_family AF_UNSPEC, padding
    message.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    message.extend_from_slice(&LOOPBACK_INDEX.to_ne_bytes());
    message.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_flags
    message.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change
    rustix::net::send(&socket, &message, SendFlags::empty())?;
    let mut answer = [0u8; 256];
    let (read, _) = rustix::net::recv(&socket, &mut answer, RecvFlags::empty())?;
    let field = |at: usize, len: usize| answer.get(at..at + len).filter(|_| at + len <= read);
    let kind = field(4, 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let error = field(16, 4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match (kind, error) {
        (Some(NLMSG_ERROR), Some(0)) => Ok(()),
        (Some(NLMSG_ERROR), Some(error)) => Err(std::io::Error::from_raw_os_error(-error)),
        _ => Err(std::io::Error::other("no acknowledgement from the kernel")),
    }
}

fn main() {
    let config = Config {
        // Warnings and errors: berth's runtime logs each guest output line
        // at info, and those go to the task's own fifos already.
        default_log_level: "warn".into(),
        ..Config::default()
    };
    containerd_shim::run::<Shim>("io.containerd.berth.v1", Some(config));
}
