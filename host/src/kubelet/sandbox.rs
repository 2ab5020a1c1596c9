//! What the containers of one run of a pod share, whichever of them runs
//! when: its ports on localhost and, for Linux containers, its network
//! namespace (Kubernetes' pod sandbox).
//!
//! The network is made by the first Linux container that starts and held
//! open here, not by that container's process: an init container that has
//! finished, or a sidecar restarting, leaves it standing for the
//! containers after it. Its way out (pasta) and its way to Services live as
//! long as it does: until the pod's run ends.

use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::runtime::{Body, BoxFuture, GuestFailure, ServeError, Workload};
use crate::spec::objects::Pod;

pub(crate) struct Sandbox {
    /// The pod's directory: volumes, logs, its /etc/hosts.
    pub dir: PathBuf,
    /// The ports the app containers and sidecars declare, each answered by
    /// the container that declares it once it runs.
    pub ports: Arc<crate::router::PodPorts>,
    /// Each sidecar as Services reach it: whichever run of it is current.
    pub sidecars: Vec<Arc<SidecarSlot>>,
    /// The pod's network namespace once a Linux container has made it.
    network: parking_lot::Mutex<Option<std::fs::File>>,
    /// Ends what serves the network (pasta, the Services listener).
    network_ends: CancellationToken,
    /// Set when the run is left for a successor daemon (a handover): the
    /// containers that can outlive this one stay running, and so do what
    /// serves their network (pasta) and their host ports, for it to adopt.
    pub leave: Arc<std::sync::atomic::AtomicBool>,
}

impl Sandbox {
    pub fn new(pod: &Pod, dir: PathBuf, leave: Arc<std::sync::atomic::AtomicBool>) -> Sandbox {
        let declared = pod
            .spec
            .containers
            .iter()
            .chain(pod.spec.sidecars())
            .flat_map(|c| c.ports.iter().map(|p| p.container_port))
            .collect();
        Sandbox {
            dir,
            ports: Arc::new(crate::router::PodPorts::new(declared)),
            sidecars: pod
                .spec
                .sidecars()
                .map(|c| {
                    Arc::new(SidecarSlot {
                        name: format!("{}/{}", pod.metadata.name, c.name),
                        current: parking_lot::RwLock::new(None),
                    })
                })
                .collect(),
            network: parking_lot::Mutex::new(None),
            network_ends: CancellationToken::new(),
            leave,
        }
    }

    /// A path that opens the pod's network namespace, once there is one:
    /// the descriptor this holds, seen from outside (a container's init is
    /// another process).
    pub fn network(&self) -> Option<PathBuf> {
        let held = self.network.lock();
        let fd = held.as_ref()?.as_raw_fd();
        Some(
            Path::new("/proc")
                .join(std::process::id().to_string())
                .join(format!("fd/{fd}")),
        )
    }

    /// Keeps the namespace at `netns` (a container's, just made) as the
    /// pod's, for as long as the run lasts; the token ends with it.
    pub fn hold_network(&self, netns: &Path) -> std::io::Result<(PathBuf, CancellationToken)> {
        let file = std::fs::File::open(netns)?;
        *self.network.lock() = Some(file);
        let path = self
            .network()
            .ok_or_else(|| std::io::Error::other("the pod's network went as it was made"))?;
        Ok((path, self.network_ends.clone()))
    }

    /// Makes the pod's `medium: Memory` emptyDirs tmpfs mounts (sized by
    /// `sizeLimit`, else by the pod's memory limits where every container
    /// has one), and its secret volumes too, as the kubelet mounts them, so
    /// no secret value is written to disk; what could not be is said in the
    /// result, and that volume stays a directory on disk.
    pub fn memory_volumes(&self, pod: &Pod) -> Vec<String> {
        let mut warnings = Vec::new();
        let limits: Option<u64> = pod
            .spec
            .all_containers()
            .map(|c| c.resources.limits.memory.and_then(|q| q.to_bytes()))
            .sum();
        for volume in &pod.spec.volumes {
            let size = match (&volume.empty_dir, &volume.secret) {
                (Some(empty), _) if empty.in_memory() => {
                    empty.size_limit.and_then(|q| q.to_bytes()).or(limits)
                }
                (_, Some(_)) => Some(SECRET_VOLUME_SIZE),
                _ => continue,
            };
            let path = self.dir.join("volumes").join(&volume.name);
            if let Err(e) = crate::runtime::linux::memory_backed(&path, size) {
                // A secret volume on disk is its owner's alone (see
                // start.rs): said in the log, not as a warning on every pod
                // of a berth that may not mount.
                if volume.secret.is_some() {
                    tracing::debug!("secret volume {}: no tmpfs ({e})", volume.name);
                    continue;
                }
                warnings.push(format!(
                    "volume {}: a tmpfs could not be mounted ({e}): it is a directory on disk",
                    volume.name
                ));
            }
        }
        warnings
    }

    /// The pod is done: its network goes (its containers are gone).
    pub fn release_network(&self) {
        self.network_ends.cancel();
        self.network.lock().take();
    }
}

/// Room for a secret volume's files: a Secret holds at most 1 MiB, and
/// each file takes at least a page however small its value.
const SECRET_VOLUME_SIZE: u64 = 16 << 20;

/// A sidecar as the router holds it among the pod's containers: its runs
/// come and go (it is restarted on its own), the pod's endpoint stays.
pub(crate) struct SidecarSlot {
    name: String,
    current: parking_lot::RwLock<Option<Arc<dyn Workload>>>,
}

impl SidecarSlot {
    /// The run now serving, or none while it restarts.
    pub fn set(&self, workload: Option<Arc<dyn Workload>>) {
        *self.current.write() = workload;
    }

    fn current(&self) -> Option<Arc<dyn Workload>> {
        self.current.read().clone()
    }

    fn down(&self) -> ServeError {
        ServeError::Guest {
            workload: self.name.clone(),
            failure: GuestFailure::Unreachable(format!("sidecar {} is restarting", self.name)),
        }
    }
}

impl Workload for SidecarSlot {
    fn name(&self) -> &str {
        &self.name
    }

    fn serve(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, ServeError>> {
        self.serve_on(request, None)
    }

    fn serve_on(
        &self,
        request: http::Request<Body>,
        port: Option<u16>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, ServeError>> {
        match self.current() {
            Some(workload) => workload.serve_on(request, port),
            None => {
                let down = self.down();
                Box::pin(async move { Err(down) })
            }
        }
    }

    fn connect(
        &self,
        port: Option<u16>,
    ) -> Option<BoxFuture<'static, std::io::Result<tokio::net::TcpStream>>> {
        match self.current() {
            Some(workload) => workload.connect(port),
            None => {
                let down = self.down().to_string();
                Some(Box::pin(async move {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        down,
                    ))
                }))
            }
        }
    }

    fn usage(&self) -> crate::runtime::Usage {
        self.current().map(|w| w.usage()).unwrap_or_default()
    }
}

/// Removes a pod's directory, once nothing of the pod runs: its
/// memory-backed volumes unmounted first.
pub(crate) fn remove_pod_dir(dir: &Path) {
    // Containers a daemon before this one left running for the pod (it was
    // killed while it stopped them, or the pod was deleted while no daemon
    // ran): nothing will adopt them now.
    crate::runtime::linux::abandon_all_in(&dir.join("containers"));
    // And the way out it left with them.
    crate::runtime::linux::network::close_outside(&dir.join("pasta.pid"));
    crate::runtime::linux::unmount_all_in(&dir.join("volumes"));
    let _ = std::fs::remove_dir_all(dir);
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.network_ends.cancel();
    }
}
