//! Containers that are not wasm run on berth's Linux backend, as runwasi
//! falls back to runc: under the kubelet, containerd starts each pod's
//! sandbox (the pause container, a Linux image) with the pod's runtime
//! handler, and a pod may hold Linux containers beside its wasm ones.
//!
//! The OCI spec says what berth-linux needs: the root containerd mounted
//! (used as it is, with the host's user ids), the process, its user and
//! capabilities, bind mounts, limits, and the network namespace, which is
//! the pod's (the shim lives in it: see `main.rs`). The IPC and UTS
//! namespaces the spec names by path (CRI's: the sandbox's) are joined;
//! the pid and mount namespaces are the container's own, as berth-linux
//! makes them (a pod's `shareProcessNamespace` is not followed).

use std::path::{Path, PathBuf};

use berth_linux::config::{BindMount, Joined, Network, User};
use berth_linux::{ContainerSpec, UserIds, cgroup};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::plan;

/// The CRI annotation saying what a container is to its pod: `sandbox`
/// (the pod's pause container) or `container`.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// The CRI annotation naming the pod sandbox a container belongs to (on
/// the sandbox itself too): the shim groups a pod's containers by it.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

fn annotation<'a>(spec: &'a Spec, name: &str) -> Option<&'a str> {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(name))
        .map(String::as_str)
}

/// Whether the spec is a pod's sandbox, which is always a Linux container.
pub fn is_sandbox(spec: &Spec) -> bool {
    annotation(spec, CONTAINER_TYPE) == Some("sandbox")
}

/// The shim a container is served by: its pod's (all of a pod's
/// containers, sandbox first, share one shim and its network), or its own.
pub fn grouping(spec: &Spec, id: &str) -> String {
    annotation(spec, SANDBOX_ID)
        .filter(|s| !s.is_empty())
        .unwrap_or(id)
        .to_owned()
}

/// berth-linux's spec for the OCI spec of container `id`, whose root
/// containerd mounted at `root`; `name` is unique on the host (its
/// cgroups' name).
pub fn container_spec(
    spec: &Spec,
    bundle: &Path,
    root: PathBuf,
    id: &str,
    name: String,
) -> Result<ContainerSpec, String> {
    let process = spec
        .process()
        .as_ref()
        .ok_or("the spec has no process to run")?;
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err("the spec's process has no args: nothing to run".into());
    }
    let user = process.user();
    let capabilities = match process
        .capabilities()
        .as_ref()
        .and_then(|c| c.bounding().as_ref())
    {
        Some(bounding) => {
            let mut set = rustix::thread::CapabilitySet::empty();
            for capability in bounding {
                let name = serde_json::to_value(capability)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                set |= berth_linux::plan::capability(&name)
                    .map_err(|e| format!("process.capabilities: {e}"))?;
            }
            set
        }
        None => rustix::thread::CapabilitySet::empty(),
    };

    let mounts = plan::binds(spec)
        .map(|bind| BindMount {
            source: bind.source.to_owned(),
            target: bind.destination.to_string_lossy().into_owned(),
            writable: bind.writable,
        })
        .collect();
    let limits = cgroup::Limits {
        memory: plan::memory_limit(spec),
        pids: spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.pids().as_ref())
            .map(|p| p.limit())
            .filter(|&l| l > 0)
            .map(|l| l as u64),
        cpu_millis: plan::cpu_millis(spec),
    };

    let namespace_path = |kind| plan::namespace(spec, kind).flatten();
    let network_path = namespace_path(LinuxNamespaceType::Network);
    // A pod's containers share the sandbox's IPC and UTS namespaces (its
    // hostname), as CRI's spec says by their paths.
    let mut joined = Vec::new();
    if let Some(path) = namespace_path(LinuxNamespaceType::Ipc) {
        joined.push(Joined::Ipc(path));
    }
    if let Some(path) = namespace_path(LinuxNamespaceType::Uts) {
        joined.push(Joined::Uts(path));
    }
    // The pod's network, by its path; else the one the shim made or kept
    // for it at start, which is the shim's own.
    let network = Network::Join(
        network_path
            .unwrap_or_else(|| PathBuf::from(format!("/proc/{}/ns/net", std::process::id()))),
    );

    let cgroup = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|path| cgroup_path(&path.to_string_lossy()))
        .transpose()?;

    Ok(ContainerSpec {
        cgroup,
        id: name,
        hostname: spec.hostname().clone().unwrap_or_else(|| id.to_owned()),
        rootfs: root,
        prepared_root: true,
        state_dir: bundle.join("berth-linux"),
        args,
        env: process.env().clone().unwrap_or_default(),
        cwd: process.cwd().to_string_lossy().into_owned(),
        user: User {
            image: String::new(),
            uid: Some(user.uid()),
            gid: Some(user.gid()),
            groups: user.additional_gids().clone().unwrap_or_default(),
        },
        capabilities,
        read_only_root: plan::read_only_root(spec),
        network,
        joined,
        mounts,
        limits,
        user_namespace: UserIds::Host,
    })
}

/// The spec's `linux.cgroupsPath` as a path under each hierarchy's root:
/// cgroupfs's `/kubepods/besteffort/podUID/ID` as it is, systemd's
/// `SLICE:PREFIX:NAME` where systemd puts it (each dash of the slice a
/// level: `kubepods-besteffort-podUID.slice` is under `kubepods.slice/
/// kubepods-besteffort.slice/`, the container in `PREFIX-NAME.scope`), as
/// runc names them. The directories are made directly: systemd is not
/// asked for a scope unit.
pub fn cgroup_path(path: &str) -> Result<PathBuf, String> {
    let refused = |why: &str| format!("linux.cgroupsPath {path:?}: {why}");
    let relative = match path.split(':').collect::<Vec<_>>()[..] {
        [slice, prefix, name] if !path.starts_with('/') => {
            if name.is_empty() || name.contains('/') || slice.contains('/') {
                return Err(refused("not SLICE:PREFIX:NAME"));
            }
            let mut relative = PathBuf::new();
            let slice = if slice.is_empty() {
                "system.slice"
            } else {
                slice
            };
            if slice != "-.slice" {
                let stem = slice
                    .strip_suffix(".slice")
                    .ok_or_else(|| refused("the slice must end in .slice"))?;
                let mut level = String::new();
                for part in stem.split('-') {
                    if part.is_empty() {
                        return Err(refused("an empty part in the slice's name"));
                    }
                    if !level.is_empty() {
                        level.push('-');
                    }
                    level.push_str(part);
                    relative.push(format!("{level}.slice"));
                }
            }
            match prefix {
                "" => relative.push(name),
                prefix => relative.push(format!("{prefix}-{name}.scope")),
            }
            relative
        }
        _ => PathBuf::from(path.trim_start_matches('/')),
    };
    if relative.as_os_str().is_empty()
        || relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(refused("must name a cgroup below the root, without `..`"));
    }
    Ok(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_sandbox_s_spec_becomes_a_linux_container_in_the_pod_s_network() {
        let spec = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "hostname": "web-7f9",
            "root": {"path": "rootfs", "readonly": true},
            "process": {
                "cwd": "/", "user": {"uid": 65535, "gid": 65535, "additionalGids": [5]},
                "args": ["/pause"],
                "env": ["PATH=/bin"],
                "capabilities": {"bounding": ["CAP_NET_RAW", "CAP_KILL"]}
            },
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev/shm", "type": "bind", "source": "/run/shm-of-pod", "options": ["rbind", "ro"]},
                {"destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind"]}
            ],
            "annotations": {
                "io.kubernetes.cri.container-type": "sandbox",
                "io.kubernetes.cri.sandbox-id": "abc"
            },
            "linux": {
                "resources": {"memory": {"limit": 67108864}, "pids": {"limit": 100},
                              "cpu": {"quota": 20000, "period": 100000}},
                "namespaces": [{"type": "network", "path": "/var/run/netns/cni-1"}, {"type": "pid"},
                               {"type": "ipc", "path": "/proc/7/ns/ipc"}, {"type": "uts"}]
            }
        }));
        assert!(is_sandbox(&spec));
        assert_eq!(grouping(&spec, "other"), "abc");
        let linux = container_spec(
            &spec,
            Path::new("/b"),
            "/b/rootfs".into(),
            "abc",
            "k8s-abc".into(),
        )
        .unwrap();
        assert!(linux.prepared_root);
        assert_eq!(linux.hostname, "web-7f9");
        assert_eq!(linux.args, ["/pause"]);
        assert_eq!(linux.user.uid, Some(65535));
        assert_eq!(linux.user.groups, [5]);
        assert_eq!(
            linux.capabilities,
            rustix::thread::CapabilitySet::NET_RAW | rustix::thread::CapabilitySet::KILL
        );
        assert!(linux.read_only_root);
        let mounts: Vec<_> = linux
            .mounts
            .iter()
            .map(|m| (m.target.as_str(), m.writable))
            .collect();
        assert_eq!(mounts, [("/dev/shm", false), ("/data", true)]);
        assert_eq!(linux.limits.memory, Some(64 << 20));
        assert_eq!(linux.limits.pids, Some(100));
        assert_eq!(linux.limits.cpu_millis, Some(200));
        assert_eq!(linux.network, Network::Join("/var/run/netns/cni-1".into()));
        assert_eq!(linux.user_namespace, UserIds::Host);
        assert_eq!(linux.cgroup, None);
        assert_eq!(linux.joined, [Joined::Ipc("/proc/7/ns/ipc".into())]);
    }

    #[test]
    fn a_cgroups_path_is_placed_as_runc_places_it() {
        let ok = |path: &str| cgroup_path(path).unwrap();
        assert_eq!(ok("/default/web"), Path::new("default/web"));
        assert_eq!(
            ok("/kubepods/besteffort/pod1/abc"),
            Path::new("kubepods/besteffort/pod1/abc")
        );
        assert_eq!(
            ok("kubepods-besteffort-pod1.slice:cri-containerd:abc"),
            Path::new(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/\
                 cri-containerd-abc.scope"
            )
        );
        assert_eq!(
            ok(":cri-containerd:abc"),
            Path::new("system.slice/cri-containerd-abc.scope")
        );
        assert_eq!(ok("-.slice::abc"), Path::new("abc"));
        for bad in [
            "/",
            "/a/../../etc",
            "a.slice:p:x/y",
            "kube--pods.slice:p:x",
            "pods:p:x",
        ] {
            let error = cgroup_path(bad).unwrap_err();
            assert!(error.contains("cgroupsPath"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_container_without_a_pod_is_grouped_alone() {
        let spec = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "args": ["sh"]}
        }));
        assert!(!is_sandbox(&spec));
        assert_eq!(grouping(&spec, "mine"), "mine");
    }
}
