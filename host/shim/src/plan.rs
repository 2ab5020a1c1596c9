//! What a container's OCI runtime spec (the bundle's `config.json`) grants
//! a wasm guest, in berth's terms: the component is `process.args[0]` in
//! the container's root filesystem, `process.env` its environment, bind
//! mounts its directories (read-only where the mount says `ro`), the
//! memory limit its instances' memory, the CPU quota its CPU share, and
//! the pod annotations berth pods use its outbound hosts and TCP grants.
//! Everything else
//! is denied, as in berth.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use berth_runtime::{Capabilities, DirGrant, Limits, OutboundRule, TcpGrant};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// Pod annotation (passed through by containerd's `pod_annotations`):
/// comma-separated hosts the guest may call, as on berth.
pub const OUTBOUND_ANNOTATION: &str = "berth.dev/allow-outbound";

/// The pod annotation naming `HOST:PORT`s its wasm containers may open TCP
/// connections to, as berth pods use it.
pub const TCP_ANNOTATION: &str = "berth.dev/allow-tcp";

/// Where an HTTP component listens unless its environment says
/// `BERTH_LISTEN=ADDR` (or a bare port): the port wasm HTTP shims use.
const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080);

/// The kernel's own filesystems: nothing to a wasm guest, and mounted by
/// berth-linux itself for a Linux container, so neither binds the spec's.
const KERNEL_MOUNTS: [&str; 7] = [
    "proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2", "tmpfs",
];

/// A bind mount the spec asks for.
pub struct Bind<'a> {
    pub source: &'a Path,
    /// Where it is in the container.
    pub destination: &'a Path,
    pub writable: bool,
}

/// The spec's bind mounts (`bind` mounts, or any with the `bind`/`rbind`
/// option) that have a source, the kernel's filesystems left out.
pub fn binds(spec: &Spec) -> impl Iterator<Item = Bind<'_>> {
    spec.mounts().iter().flatten().filter_map(|mount| {
        let kind = mount.typ().as_deref().unwrap_or("bind");
        let options = mount.options().as_deref().unwrap_or_default();
        let bind = kind == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        if KERNEL_MOUNTS.contains(&kind) || !bind {
            return None;
        }
        Some(Bind {
            source: mount.source().as_deref()?,
            destination: mount.destination(),
            writable: !options.iter().any(|o| o == "ro"),
        })
    })
}

/// Whether the spec's root is read-only.
pub fn read_only_root(spec: &Spec) -> bool {
    spec.root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
}

/// `linux.resources.memory.limit`, when it sets one.
pub fn memory_limit(spec: &Spec) -> Option<u64> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|&l| l > 0)
        .map(|l| l as u64)
}

/// The CPU quota over its period, in thousandths of a core, when both
/// are set.
pub fn cpu_millis(spec: &Spec) -> Option<u64> {
    let cpu = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.cpu().as_ref())?;
    match (cpu.quota(), cpu.period()) {
        (Some(quota), Some(period)) if quota > 0 && period > 0 => {
            Some(((quota as u64) * 1000 / period).max(1))
        }
        _ => None,
    }
}

#[derive(Debug)]
pub struct Plan {
    /// The container's root filesystem, on the host.
    pub root: PathBuf,
    /// The component file, relative to `root`: opened with the root as
    /// `/`, so a symlink in the image cannot lead to the host's files.
    pub component: PathBuf,
    /// `argv`, the component's path inside the container first.
    pub args: Vec<String>,
    pub capabilities: Capabilities,
    pub limits: Limits,
    pub listen: SocketAddr,
}

/// The network namespace the container runs in: `None` the host's,
/// `Some(None)` a new one, `Some(Some(path))` the one at `path` (a pod's).
pub fn network(spec: &Spec) -> Option<Option<PathBuf>> {
    namespace(spec, LinuxNamespaceType::Network)
}

/// The namespace of `kind` the spec asks for: `None` none (the host's),
/// `Some(None)` a new one, `Some(Some(path))` the one at `path`.
pub fn namespace(spec: &Spec, kind: LinuxNamespaceType) -> Option<Option<PathBuf>> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| ns.iter().find(|n| n.typ() == kind))
        .map(|n| n.path().clone())
}

/// The container's root filesystem on the host: the spec's `root.path`,
/// under the bundle when relative.
pub fn root(spec: &Spec, bundle: &Path) -> PathBuf {
    let root = spec
        .root()
        .as_ref()
        .map_or_else(|| PathBuf::from("rootfs"), |r| r.path().clone());
    if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    }
}

pub fn plan(spec: &Spec, bundle: &Path) -> Result<Plan, String> {
    let process = spec
        .process()
        .as_ref()
        .ok_or("the spec has no process to run")?;
    let args = process.args().clone().unwrap_or_default();
    let Some(entry) = args.first() else {
        return Err("the spec's process has no args: nothing names the component".into());
    };
    let root = root(spec, bundle);
    let component = relative(entry)?;

    let mut env = Vec::new();
    let mut listen = DEFAULT_LISTEN;
    for pair in process.env().iter().flatten() {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "BERTH_LISTEN" {
            listen = listen_address(value)?;
        }
        env.push((key.to_owned(), value.to_owned()));
    }

    let mut dirs = vec![DirGrant {
        host: root.clone(),
        guest: "/".into(),
        writable: !read_only_root(spec),
    }];
    for bind in binds(spec) {
        // A file bound in (CRI's /etc/hosts, resolv.conf) cannot be a
        // preopened directory; the guest resolves nothing by them anyway.
        if !bind.source.is_dir() {
            continue;
        }
        let guest = bind.destination.to_string_lossy().into_owned();
        if guest.starts_with("/dev") || guest.starts_with("/proc") || guest.starts_with("/sys") {
            continue;
        }
        dirs.push(DirGrant {
            host: bind.source.to_owned(),
            guest,
            writable: bind.writable,
        });
    }

    let outbound = granted::<OutboundRule>(spec, OUTBOUND_ANNOTATION)?;
    let tcp = granted::<TcpGrant>(spec, TCP_ANNOTATION)?;

    let mut limits = Limits {
        cpu_millis: cpu_millis(spec),
        ..Limits::default()
    };
    if let Some(memory) = memory_limit(spec) {
        limits.memory = memory;
    }

    Ok(Plan {
        root,
        component,
        args,
        capabilities: Capabilities {
            env,
            dirs,
            outbound,
            services: None,
            tcp,
        },
        limits,
        listen,
    })
}

/// The comma-separated grants of annotation `name`.
fn granted<T: FromStr<Err = String>>(spec: &Spec, name: &str) -> Result<Vec<T>, String> {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(name))
        .map_or(Ok(Vec::new()), |value| berth_runtime::grant_list(value))
        .map_err(|e| format!("annotation {name}: {e}"))
}

/// The container's own name files (the kubelet's `/etc/hosts` and
/// `/etc/resolv.conf`, bound in by the spec): the shim binds them over its
/// own, in its mount namespace, since the guest's names are looked up by
/// the shim's resolver.
pub fn name_files(spec: &Spec) -> Vec<(PathBuf, &'static str)> {
    let mut found = Vec::new();
    for target in ["/etc/hosts", "/etc/resolv.conf"] {
        let source = spec
            .mounts()
            .iter()
            .flatten()
            .filter(|m| m.destination() == Path::new(target))
            .filter(|m| m.typ().as_deref().is_none_or(|t| t == "bind"))
            .filter_map(|m| m.source().clone())
            .find(|s| s.is_file());
        if let Some(source) = source {
            found.push((source, target));
        }
    }
    found
}

/// `path` (absolute inside the container) relative to the container's
/// root, refusing `..`.
fn relative(path: &str) -> Result<PathBuf, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "the process's first arg {path:?} must be the component's absolute path in the image"
        ));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(format!("the component path {path:?} must not contain `..`"));
    }
    Ok(PathBuf::from(path.trim_start_matches('/')))
}

/// `ADDR:PORT` or a bare port (on every address).
fn listen_address(value: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = value.parse::<u16>() {
        return Ok(SocketAddr::new(DEFAULT_LISTEN.ip(), port));
    }
    value
        .parse()
        .map_err(|e| format!("BERTH_LISTEN={value:?}: expected ADDR:PORT or a port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_spec_grants_env_binds_limits_and_outbound_hosts_and_nothing_else() {
        let spec = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": true},
            "process": {
                "cwd": "/", "user": {"uid": 0, "gid": 0},
                "args": ["/app.wasm", "x"],
                "env": ["A=1", "BERTH_LISTEN=9000"]
            },
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind", "ro"]},
                {"destination": "/etc/hostname", "type": "bind", "source": "/etc/hostname", "options": ["rbind"]}
            ],
            "annotations": {"berth.dev/allow-outbound": "example.com, 10.0.0.1:8080"},
            "linux": {
                "resources": {"memory": {"limit": 67108864}, "cpu": {"quota": 50000, "period": 100000}},
                "namespaces": [{"type": "network", "path": "/var/run/netns/x"}, {"type": "mount"}]
            }
        }));
        let plan = plan(&spec, Path::new("/b")).unwrap();
        assert_eq!(plan.root, Path::new("/b/rootfs"));
        assert_eq!(plan.component, Path::new("app.wasm"));
        assert_eq!(plan.args, ["/app.wasm", "x"]);
        assert_eq!(plan.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(plan.capabilities.env[0], ("A".into(), "1".into()));
        let dirs: Vec<_> = plan
            .capabilities
            .dirs
            .iter()
            .map(|d| (d.guest.as_str(), d.writable))
            .collect();
        assert_eq!(dirs, [("/", false), ("/data", false)]);
        assert_eq!(plan.capabilities.outbound.len(), 2);
        assert_eq!(plan.limits.memory, 64 << 20);
        assert_eq!(plan.limits.cpu_millis, Some(500));
        assert_eq!(network(&spec), Some(Some("/var/run/netns/x".into())));
    }

    #[test]
    fn a_component_path_outside_the_root_or_a_bad_listen_address_is_refused() {
        let with = |args: serde_json::Value, env: serde_json::Value| {
            spec(serde_json::json!({
                "ociVersion": "1.0.2",
                "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "args": args, "env": env}
            }))
        };
        let error = plan(
            &with(serde_json::json!(["/../etc/x.wasm"]), serde_json::json!([])),
            Path::new("/b"),
        )
        .unwrap_err();
        assert!(error.contains("`..`"), "{error}");
        let error = plan(
            &with(serde_json::json!(["app.wasm"]), serde_json::json!([])),
            Path::new("/b"),
        )
        .unwrap_err();
        assert!(error.contains("absolute"), "{error}");
        let error = plan(
            &with(
                serde_json::json!(["/a.wasm"]),
                serde_json::json!(["BERTH_LISTEN=nowhere"]),
            ),
            Path::new("/b"),
        )
        .unwrap_err();
        assert!(error.contains("BERTH_LISTEN"), "{error}");
    }
}
