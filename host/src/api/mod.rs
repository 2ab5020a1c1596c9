//! The daemon's API: the Kubernetes API (`server`, `rest`, `watch`,
//! `discovery`, `openapi`, …), served over HTTPS with the admin token
//! (`pki`) and on the unix socket in the data dir (mode 0600, so only its
//! owner may drive berth). kubectl, client libraries and berth's own CLI
//! (`client`) all speak it.

mod access;
mod apply;
mod attach;
mod autoscaling_v1;
pub mod client;
mod discovery;
mod endpoints;
mod exec;
mod logs;
mod openapi;
mod patch;
pub mod pki;
mod portforward;
mod protobuf;
pub(crate) mod resources;
mod rest;
mod schema;
mod selector;
mod server;
mod spdy;
mod status;
mod table;
mod usage;
mod watch;

pub use server::{KubeApi, router as kube_router, serve_tls, with_token};
pub use table::selector_text;

use std::path::Path;

use crate::state::Record;

/// The kinds `get` and `delete` take, with the names kubectl accepts.
pub const KIND_NAMES: [(&str, &[&str]); 15] = [
    ("Pod", &["pod", "pods", "po"]),
    ("Deployment", &["deployment", "deployments", "deploy"]),
    ("ReplicaSet", &["replicaset", "replicasets", "rs"]),
    ("StatefulSet", &["statefulset", "statefulsets", "sts"]),
    ("Job", &["job", "jobs"]),
    ("CronJob", &["cronjob", "cronjobs", "cj"]),
    (
        "HorizontalPodAutoscaler",
        &["horizontalpodautoscaler", "horizontalpodautoscalers", "hpa"],
    ),
    ("Ingress", &["ingress", "ingresses", "ing"]),
    (
        "NetworkPolicy",
        &["networkpolicy", "networkpolicies", "netpol"],
    ),
    (
        "PersistentVolumeClaim",
        &["persistentvolumeclaim", "persistentvolumeclaims", "pvc"],
    ),
    (
        "PersistentVolume",
        &["persistentvolume", "persistentvolumes", "pv"],
    ),
    ("Service", &["service", "services", "svc"]),
    ("ConfigMap", &["configmap", "configmaps", "cm"]),
    ("Secret", &["secret", "secrets"]),
    ("Namespace", &["namespace", "namespaces", "ns"]),
];

/// The kind a user's word names (`pods`, `deploy`, `svc`…).
pub fn kind_of(word: &str) -> Option<&'static str> {
    let word = word.to_ascii_lowercase();
    KIND_NAMES
        .iter()
        .find(|(kind, names)| names.contains(&word.as_str()) || kind.eq_ignore_ascii_case(&word))
        .map(|(kind, _)| *kind)
}

/// The state the API serves: the store the kubelet and the controllers
/// share (it lives in `state`, so neither depends on the API for it).
pub use crate::state::Shared as ApiState;

/// An object with the defaults of its pod spec filled in, as a cluster
/// shows it (stored without them: see `spec::defaults`).
pub fn shown(object: &crate::spec::Object) -> std::borrow::Cow<'_, crate::spec::Object> {
    use crate::spec::{Object, defaults};
    if !matches!(
        object,
        Object::Pod(_)
            | Object::Deployment(_)
            | Object::ReplicaSet(_)
            | Object::Job(_)
            | Object::CronJob(_)
            | Object::StatefulSet(_)
    ) {
        return std::borrow::Cow::Borrowed(object);
    }
    let mut object = object.clone();
    match &mut object {
        Object::Pod(pod) => defaults::shown(&mut pod.spec, true),
        Object::Deployment(d) => defaults::shown(&mut d.spec.template.spec, false),
        Object::ReplicaSet(rs) => defaults::shown(&mut rs.spec.template.spec, false),
        Object::Job(job) => defaults::shown(&mut job.spec.template.spec, false),
        Object::StatefulSet(set) => defaults::shown(&mut set.spec.template.spec, false),
        Object::CronJob(cron) => {
            defaults::shown(&mut cron.spec.job_template.spec.template.spec, false)
        }
        _ => {}
    }
    std::borrow::Cow::Owned(object)
}

/// A record's status as a cluster shows it: a namespace is Active, or
/// Terminating once its deletion has begun, as the namespace controller
/// reports it (berth keeps no status for namespaces).
fn shown_status(record: &Record) -> std::borrow::Cow<'_, crate::spec::Status> {
    use crate::spec::Status;
    match (&record.object, &record.status) {
        (crate::spec::Object::Namespace(namespace), Status::Namespace(status))
            if status.phase.is_none() =>
        {
            let mut status = status.clone();
            status.phase = Some(
                if namespace.metadata.deleting() {
                    "Terminating"
                } else {
                    "Active"
                }
                .into(),
            );
            std::borrow::Cow::Owned(Status::Namespace(status))
        }
        _ => std::borrow::Cow::Borrowed(&record.status),
    }
}

/// A stored record as the API returns it: Kubernetes' shape, with the
/// server-set metadata filled in.
pub fn view(record: &Record) -> serde_json::Value {
    let object = &record.object;
    let mut json = shown(object).to_value();
    if let Some(map) = json.as_object_mut() {
        let mut full = serde_json::Map::new();
        full.insert("apiVersion".into(), object.api_version().into());
        full.insert("kind".into(), object.kind().as_str().into());
        for (k, v) in std::mem::take(map) {
            full.insert(k, v);
        }
        if let Some(meta) = full.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            if let Some(ns) = object.namespace() {
                meta.insert("namespace".into(), ns.into());
            }
            meta.insert("uid".into(), record.uid.clone().into());
            meta.insert(
                "resourceVersion".into(),
                record.resource_version.to_string().into(),
            );
            meta.insert("generation".into(), record.generation.into());
            meta.insert("creationTimestamp".into(), record.created.clone().into());
        }
        let status = shown_status(record).to_value();
        if status.as_object().is_none_or(|s| !s.is_empty()) {
            full.insert("status".into(), status);
        }
        *map = full;
    }
    json
}

/// The control socket: `$BERTH_HOME/berth.sock`.
pub fn socket_path() -> std::path::PathBuf {
    socket_in(&crate::home::berth_home())
}

/// The control socket of the daemon whose state is in `home`.
pub fn socket_in(home: &Path) -> std::path::PathBuf {
    home.join("berth.sock")
}

/// Binds the control socket, readable and writable by its owner only.
/// A stale socket left by a daemon that died is replaced; a live one is
/// an error (one daemon per data dir).
pub fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("a berth daemon is already serving {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Created under a umask that leaves nothing for group or others, so
    // there is no moment when another user could connect. The umask is
    // process-wide: this runs at start-up, before anything else creates files.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let listener = tokio::net::UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = listener?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}
