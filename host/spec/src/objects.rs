//! The Kubernetes objects berth understands, as typed structs: a strict
//! subset of the Kubernetes API. Every struct denies unknown fields, so a
//! field berth does not support is an error naming it, never ignored.
//!
//! berth's own capability settings for wasm (outbound hosts) live in pod
//! annotations under `berth.dev/`, so the YAML stays valid Kubernetes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Quantity;
pub use super::placement::{Affinity, Toleration};
pub use super::security::{PodSecurityContext, SecurityContext};

/// Annotation on a pod (template): comma-separated hosts (`HOST[:PORT]`,
/// `*` for any) the pod's wasm containers may call over HTTP.
pub const OUTBOUND_ANNOTATION: &str = "berth.dev/allow-outbound";

/// Annotation on a pod (template): comma-separated `HOST:PORT` its wasm
/// containers may open TCP connections to (`wasi:sockets`); a Service's
/// name resolves to the Service.
pub const TCP_ANNOTATION: &str = "berth.dev/allow-tcp";

/// The grants a pod (template) holds by `annotation` (its
/// [`OUTBOUND_ANNOTATION`] or [`TCP_ANNOTATION`]): none without it.
pub fn grants<T: std::str::FromStr<Err = String>>(
    meta: &ObjectMeta,
    annotation: &str,
) -> Result<Vec<T>, String> {
    meta.annotations
        .get(annotation)
        .map_or(Ok(Vec::new()), |value| berth_runtime::grant_list(value))
}

/// Annotation on a pod (template): comma-separated services of other
/// namespaces (`NAMESPACE/SERVICE`, `NAMESPACE/*`) its guests may call by
/// name; services of its own namespace need none.
pub const SERVICES_ANNOTATION: &str = "berth.dev/allow-services";

/// Annotation on a pod (template): how many requests the router sends one
/// replica at once (a positive integer). Past it, requests go to a replica
/// with room, or wait briefly for one, then get 503.
pub const CONCURRENCY_ANNOTATION: &str = "berth.dev/max-concurrency";

/// The most [`CONCURRENCY_ANNOTATION`] may say: past it a limit is no
/// limit, and a typo should not pass for one.
pub const MAX_CONCURRENCY: usize = 1_000_000;

/// The limit [`CONCURRENCY_ANNOTATION`] sets, if any; the error says what
/// is wrong with its value.
pub fn max_concurrency(meta: &ObjectMeta) -> Result<Option<usize>, String> {
    let Some(value) = meta.annotations.get(CONCURRENCY_ANNOTATION) else {
        return Ok(None);
    };
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "{value:?} is not a whole number from 1 to {MAX_CONCURRENCY}"
        )),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The object that made this one (a ReplicaSet's Deployment, a Pod's
    /// ReplicaSet); deleting the owner deletes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    /// Which field manager set which fields (server-side apply), as the
    /// API server records them; the API drops what clients send here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_fields: Vec<serde_json::Value>,
    /// Set by the server when the object's deletion is asked for and it
    /// cannot go at once: a pod whose containers are stopping (within
    /// `deletion_grace_period_seconds`), an owner waiting for its
    /// dependents (the `foregroundDeletion` finalizer). Clients cannot set
    /// these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
}

/// The finalizer of an owner deleted with propagationPolicy Foreground: it
/// goes once its dependents have.
pub const FOREGROUND_DELETION: &str = "foregroundDeletion";

impl ObjectMeta {
    /// Whether the object's deletion has begun.
    pub fn deleting(&self) -> bool {
        self.deletion_timestamp.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub controller: bool,
    /// Recorded: a foreground deletion waits for every dependent anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

/// An integer or a string such as `25%` (Kubernetes' IntOrString).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl IntOrString {
    /// The absolute value against `total`: a percentage is scaled, rounded
    /// up or down as asked (Kubernetes rounds surge up, unavailable down).
    pub fn scaled(&self, total: i64, round_up: bool) -> Option<i64> {
        match self {
            IntOrString::Int(n) => Some(*n),
            IntOrString::String(s) => {
                let percent: i64 = s.strip_suffix('%')?.parse().ok()?;
                let scaled = total * percent;
                Some(if round_up {
                    (scaled + 99).div_euclid(100)
                } else {
                    scaled.div_euclid(100)
                })
            }
        }
    }
}

// Pods.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodTemplateSpec {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodSpec {
    pub containers: Vec<Container>,
    /// Run one after another to completion before `containers` start;
    /// those with `restartPolicy: Always` are sidecars, started in their
    /// turn and kept running beside the app containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    #[serde(default = "default_grace")]
    pub termination_grace_period_seconds: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// `wasm` or `linux`: forces the backend instead of the image's platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    /// `true`: Linux containers run with the host's user ids. Unset or
    /// `false`: in a user namespace of their own where the host allows it
    /// (berth's default, unlike Kubernetes'; never with `hostNetwork`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_users: Option<bool>,
    /// The node the scheduler bound the pod to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Only nodes with these labels run the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// berth's nodes have no taints: accepted, and nothing to tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Recorded; berth gives pods no API credentials, so no token is
    /// mounted whatever the account or `automountServiceAccountToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The deprecated spelling of `serviceAccountName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
    /// Recorded: berth does not preempt pods, so priority orders nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Secrets of type `kubernetes.io/dockerconfigjson` whose credentials
    /// the kubelet pulls the pod's images with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// `ClusterFirst` (the default), `ClusterFirstWithHostNet`, `Default`
    /// or `None` (only what `dnsConfig` says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_policy: Option<String>,
    /// Name servers, search domains and resolver options added to what
    /// the policy gives a Linux pod's `/etc/resolv.conf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<PodDnsConfig>,
    /// `default-scheduler`, the one berth has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    /// Recorded: berth sets no `{SERVICE}_SERVICE_HOST` variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_service_links: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodDnsConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<PodDnsConfigOption>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodDnsConfigOption {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalObjectReference {
    pub name: String,
}

fn default_grace() -> u64 {
    30
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Recorded: berth writes no termination message file; the reason and
    /// exit code say how a container ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_path: Option<String>,
    /// `File` (the default) or `FallbackToLogsOnError`: then a container
    /// that fails has the end of its log as its terminated message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_policy: Option<String>,
    /// `Always` on an init container makes it a sidecar (Kubernetes 1.29's
    /// native sidecars); app containers follow the pod's policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<ContainerRestartPolicy>,
}

/// The one restart policy a container may set for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerRestartPolicy {
    Always,
}

impl Container {
    /// An init container that keeps running beside the app's.
    pub fn is_sidecar(&self) -> bool {
        self.restart_policy == Some(ContainerRestartPolicy::Always)
    }
}

impl PodSpec {
    /// Every container of the pod: init containers (sidecars among them)
    /// first, in the order they start.
    pub fn all_containers(&self) -> impl Iterator<Item = &Container> {
        self.init_containers.iter().chain(&self.containers)
    }

    /// The sidecars: init containers that keep running.
    pub fn sidecars(&self) -> impl Iterator<Item = &Container> {
        self.init_containers.iter().filter(|c| c.is_sidecar())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVarSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
    /// A field of the pod itself (the downward API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<ObjectFieldSelector>,
}

/// A field of a pod, by the path Kubernetes' downward API names it
/// (`metadata.name`, `metadata.labels['app']`, `status.podIP`…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectFieldSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub field_path: String,
}

/// What a downward API field path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodField {
    Name,
    Namespace,
    Uid,
    Label(String),
    Annotation(String),
    NodeName,
    ServiceAccountName,
    HostIp,
    PodIp,
}

impl PodField {
    /// The field `path` names, or why it names none (Kubernetes' list of
    /// the paths environment variables may take).
    pub fn parse(path: &str) -> Result<PodField, String> {
        let subscript = |prefix: &str| {
            let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
            (!key.is_empty()).then(|| key.to_owned())
        };
        Ok(match path {
            "metadata.name" => PodField::Name,
            "metadata.namespace" => PodField::Namespace,
            "metadata.uid" => PodField::Uid,
            "spec.nodeName" => PodField::NodeName,
            "spec.serviceAccountName" => PodField::ServiceAccountName,
            "status.hostIP" | "status.hostIPs" => PodField::HostIp,
            "status.podIP" | "status.podIPs" => PodField::PodIp,
            _ => {
                if let Some(key) = subscript("metadata.labels['") {
                    PodField::Label(key)
                } else if let Some(key) = subscript("metadata.annotations['") {
                    PodField::Annotation(key)
                } else {
                    return Err(format!(
                        "{path:?} is not a supported field: metadata.name, metadata.namespace, \
                         metadata.uid, metadata.labels['KEY'], metadata.annotations['KEY'], \
                         spec.nodeName, spec.serviceAccountName, status.hostIP(s), status.podIP(s)"
                    ));
                }
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeySelector {
    pub name: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvFromSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<NameRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<NameRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NameRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerPort {
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Published on the host at this port, as `docker run -p` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// The host address `host_port` is published on; all unless given.
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub requests: ResourceList,
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub limits: ResourceList,
}

/// `cpu` and `memory`, the resources berth schedules and enforces.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

impl ResourceList {
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDir>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPath>,
    /// An image's filesystem bundles, read-only (Kubernetes' image volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageVolume>,
    /// A claim's volume: data that outlives the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimVolume>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimVolume {
    pub claim_name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigMapVolume {
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// Only these keys, each at its path; all keys at their own names
    /// when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
    /// The files' mode (0644 unless given), as Kubernetes writes them.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "file_mode"
    )]
    pub default_mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretVolume {
    pub secret_name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// As [`ConfigMapVolume::items`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "file_mode"
    )]
    pub default_mode: Option<u32>,
}

/// One key of a ConfigMap or Secret, as a file at `path` in its volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyToPath {
    pub key: String,
    pub path: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "file_mode"
    )]
    pub mode: Option<u32>,
}

/// A file mode as manifests write it: a number (`420`), or in octal as
/// YAML 1.1 reads a leading zero (`0644`), which kubectl sends as 420 and
/// a YAML 1.2 reader leaves as text.
fn file_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Number(u32),
        Text(String),
    }
    match Option::<Mode>::deserialize(d)? {
        None => Ok(None),
        Some(Mode::Number(n)) => Ok(Some(n)),
        Some(Mode::Text(text)) => {
            let digits = text
                .strip_prefix("0o")
                .or_else(|| text.strip_prefix('0'))
                .filter(|d| !d.is_empty())
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{text:?} is not a file mode (write 0644 or 420)"
                    ))
                })?;
            u32::from_str_radix(digits, 8).map(Some).map_err(|_| {
                serde::de::Error::custom(format!("{text:?} is not an octal file mode"))
            })
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EmptyDir {
    /// For `medium: Memory`, the tmpfs's size; for a directory, recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
    /// `Memory`: a tmpfs; empty or unset: a directory on the host's disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
}

impl EmptyDir {
    pub fn in_memory(&self) -> bool {
        self.medium.as_deref() == Some("Memory")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostPath {
    pub path: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageVolume {
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    #[serde(default)]
    pub initial_delay_seconds: u64,
    #[serde(default = "default_period")]
    pub period_seconds: u64,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    #[serde(default = "default_success_threshold")]
    pub success_threshold: u32,
}

fn default_period() -> u64 {
    10
}
fn default_timeout() -> u64 {
    1
}
fn default_failure_threshold() -> u32 {
    3
}
fn default_success_threshold() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpGetAction {
    #[serde(default = "default_path")]
    pub path: String,
    pub port: IntOrString,
}

fn default_path() -> String {
    "/".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpSocketAction {
    pub port: IntOrString,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecAction {
    pub command: Vec<String>,
}

// Deployments.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Deployment {
    pub metadata: ObjectMeta,
    pub spec: DeploymentSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploymentSpec {
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
    #[serde(default)]
    pub strategy: DeploymentStrategy,
    #[serde(default = "default_history")]
    pub revision_history_limit: u32,
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline_seconds: u64,
    #[serde(default)]
    pub min_ready_seconds: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

fn default_replicas() -> u32 {
    1
}
fn default_history() -> u32 {
    10
}
fn default_progress_deadline() -> u64 {
    600
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy every term (an empty selector matches all).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => value.is_some_and(|v| e.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploymentStrategy {
    #[serde(rename = "type", default = "default_strategy")]
    pub kind: StrategyType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

impl Default for DeploymentStrategy {
    fn default() -> Self {
        DeploymentStrategy {
            kind: StrategyType::RollingUpdate,
            rolling_update: None,
        }
    }
}

fn default_strategy() -> StrategyType {
    StrategyType::RollingUpdate
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StrategyType {
    RollingUpdate,
    Recreate,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RollingUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

impl DeploymentSpec {
    /// (maxSurge, maxUnavailable) as pod counts, as Kubernetes computes
    /// them: defaults 25% each, surge rounded up and unavailability down,
    /// and never both zero (then one pod may be unavailable).
    pub fn surge_and_unavailable(&self) -> (u32, u32) {
        let replicas = i64::from(self.replicas);
        let quarter = IntOrString::String("25%".into());
        let rolling = self.strategy.rolling_update.clone().unwrap_or_default();
        let surge = rolling
            .max_surge
            .unwrap_or_else(|| quarter.clone())
            .scaled(replicas, true)
            .unwrap_or(0)
            .max(0);
        let unavailable = rolling
            .max_unavailable
            .unwrap_or(quarter)
            .scaled(replicas, false)
            .unwrap_or(0)
            .max(0);
        let clamp = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
        if surge == 0 && unavailable == 0 {
            (0, 1)
        } else {
            (clamp(surge), clamp(unavailable))
        }
    }
}

// ReplicaSets: what a Deployment makes, one per pod template.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplicaSet {
    pub metadata: ObjectMeta,
    pub spec: ReplicaSetSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplicaSetSpec {
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
}

// Jobs: pods run to completion.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Job {
    pub metadata: ObjectMeta,
    pub spec: JobSpec,
}

/// A Job's spec. Stored with Kubernetes' defaults filled in (as
/// kube-apiserver stores them), but for the selector and the labels that
/// tie pods to the job: the job controller adds those once the job has a
/// uid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobSpec {
    /// Pods running at once, at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    /// Successful pods needed; unset (with parallelism set) means a work
    /// queue: done when any pod succeeds and the others have ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_mode: Option<CompletionMode>,
    /// Failures (failed pods, or container restarts under OnFailure)
    /// before the job fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<u32>,
    /// How long the job may run, from its start, before it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<u64>,
    /// How long a finished job is kept before it (and its pods) go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_selector: Option<bool>,
    /// When a pod is replaced: `TerminatingOrFailed` (the default) as soon
    /// as it is terminating or has failed, `Failed` only once it is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_replacement_policy: Option<String>,
    pub template: PodTemplateSpec,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompletionMode {
    #[default]
    NonIndexed,
    /// Each pod gets an index from 0 to completions − 1
    /// (`JOB_COMPLETION_INDEX`), and each index must succeed once.
    Indexed,
}

/// The annotation (and label) carrying an Indexed job's pod's index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The label tying a pod to its job, by the job's uid.
pub const JOB_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// The label naming a pod's job.
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";

impl JobSpec {
    pub fn parallelism(&self) -> u32 {
        self.parallelism.unwrap_or(1)
    }

    pub fn backoff_limit(&self) -> u32 {
        self.backoff_limit.unwrap_or(6)
    }

    pub fn indexed(&self) -> bool {
        self.completion_mode == Some(CompletionMode::Indexed)
    }

    pub fn suspended(&self) -> bool {
        self.suspend == Some(true)
    }
}

// CronJobs: jobs on a schedule.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CronJob {
    pub metadata: ObjectMeta,
    pub spec: CronJobSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CronJobSpec {
    /// Five-field cron, or `@hourly`, `@daily`…
    pub schedule: String,
    /// The IANA zone the schedule is read in; the host's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// A run missed by more than this (the daemon was down, or a Forbid
    /// job still ran) is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<ConcurrencyPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    pub job_template: JobTemplateSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful_jobs_history_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_jobs_history_limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobTemplateSpec {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: JobSpec,
}

/// What a run does while the one before it still runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConcurrencyPolicy {
    /// Both run.
    #[default]
    Allow,
    /// The new run is skipped.
    Forbid,
    /// The old run is stopped for the new one.
    Replace,
}

// Ingresses: the front door, by host name and path.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ingress {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: IngressSpec,
}

/// The ingress class berth serves: an Ingress naming no class is its too
/// (it is the default class).
pub const INGRESS_CLASS: &str = "berth";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    /// Where requests no rule matches go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<IngressBackend>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<IngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<IngressTls>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressRule {
    /// An exact name, or `*.` and a domain (one label matches); none
    /// matches every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpIngressRuleValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpIngressRuleValue {
    pub paths: Vec<HttpIngressPath>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpIngressPath {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub path_type: PathType,
    pub backend: IngressBackend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathType {
    /// The path, and nothing else.
    Exact,
    /// The path and what is under it, by whole path elements (`/foo`
    /// matches `/foo` and `/foo/bar`, not `/foobar`).
    Prefix,
    /// berth's choice: as Prefix.
    ImplementationSpecific,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<IngressServiceBackend>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressServiceBackend {
    pub name: String,
    pub port: ServiceBackendPort,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceBackendPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressTls {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

impl Ingress {
    /// Whether berth serves it: its class is berth's, or it names none.
    pub fn served(&self) -> bool {
        self.spec
            .ingress_class_name
            .as_deref()
            .is_none_or(|c| c == INGRESS_CLASS)
    }
}

// Network policies: which pods may talk to which, as Kubernetes has them.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkPolicy {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NetworkPolicySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// The pods of the policy's namespace it isolates (empty: all of them).
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// What it isolates; unset (or empty), Ingress, and Egress too if it
    /// has egress rules (as kube-apiserver defaults it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<PolicyType>>,
    /// Connections the selected pods accept; none listed, none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<NetworkPolicyIngressRule>,
    /// Connections the selected pods may open; none listed, none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<NetworkPolicyEgressRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

impl NetworkPolicySpec {
    /// Whether it isolates its pods for `direction`.
    pub fn isolates(&self, direction: PolicyType) -> bool {
        // An empty list is an unset one, as kube-apiserver defaults it.
        match self.policy_types.as_deref() {
            Some(types) if !types.is_empty() => types.contains(&direction),
            _ => direction == PolicyType::Ingress || !self.egress.is_empty(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkPolicyIngressRule {
    /// Who may connect; none listed, anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<NetworkPolicyPeer>,
    /// To which of the pod's ports; none listed, any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkPolicyEgressRule {
    /// Whom the pod may connect to; none listed, anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<NetworkPolicyPeer>,
    /// On which of their ports; none listed, any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
}

/// Pods by their labels and their namespace's labels (both given: pods
/// matching the one in namespaces matching the other), or addresses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkPolicyPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IpBlock {
    /// `ADDRESS/BITS`, IPv4 or IPv6.
    pub cidr: String,
    /// Ranges inside `cidr` left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkPolicyPort {
    /// TCP (the default); berth carries no UDP or SCTP, so a rule for them
    /// allows nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// A port number, or the name of a container port; none, every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    /// With a numbered `port`, the last of a range starting there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i32>,
}

// Storage: claims, and the volumes bound to them.

/// The finalizer of a claim deleted while a pod uses it: it goes once
/// no pod does.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";

/// The storage class berth provisions: a directory per claim under
/// `$BERTH_HOME/volumes`, as k3s's local-path. The default class.
pub const LOCAL_PATH: &str = "local-path";
/// Who provisioned a volume (its directory is theirs to remove).
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
pub const LOCAL_PATH_PROVISIONER: &str = "berth.dev/local-path";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AccessMode {
    ReadWriteOnce,
    ReadOnlyMany,
    ReadWriteMany,
    ReadWriteOncePod,
}

impl AccessMode {
    /// kubectl's short form.
    pub fn short(self) -> &'static str {
        match self {
            AccessMode::ReadWriteOnce => "RWO",
            AccessMode::ReadOnlyMany => "ROX",
            AccessMode::ReadWriteMany => "RWX",
            AccessMode::ReadWriteOncePod => "RWOP",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PersistentVolumeClaim {
    pub metadata: ObjectMeta,
    pub spec: ClaimSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimSpec {
    #[serde(default)]
    pub access_modes: Vec<AccessMode>,
    #[serde(default)]
    pub resources: StorageResources,
    /// `local-path` when unset (the default class); `""` for a volume
    /// made by hand only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// The volume it is bound to (set by berth, or by hand to ask for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
    /// `Filesystem`, the one berth has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StorageResources {
    #[serde(default, skip_serializing_if = "StorageList::is_empty")]
    pub requests: StorageList,
    #[serde(default, skip_serializing_if = "StorageList::is_empty")]
    pub limits: StorageList,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Quantity>,
}

impl StorageList {
    pub fn is_empty(&self) -> bool {
        self.storage.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PersistentVolume {
    pub metadata: ObjectMeta,
    pub spec: VolumeSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeSpec {
    #[serde(default)]
    pub capacity: StorageList,
    #[serde(default)]
    pub access_modes: Vec<AccessMode>,
    /// `Retain` (a volume made by hand) or `Delete` (its data goes with
    /// its claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_reclaim_policy: Option<ReclaimPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_ref: Option<ClaimRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReclaimPolicy {
    Retain,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalVolume {
    pub path: String,
}

/// The claim a volume is bound to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

impl VolumeSpec {
    /// Where its data is on the host.
    pub fn path(&self) -> Option<&str> {
        self.host_path
            .as_ref()
            .map(|h| h.path.as_str())
            .or(self.local.as_ref().map(|l| l.path.as_str()))
    }
}

// StatefulSets: pods with stable names and storage of their own.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatefulSet {
    pub metadata: ObjectMeta,
    pub spec: StatefulSetSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatefulSetSpec {
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
    /// The headless Service governing the set: its pods answer as
    /// `<pod>.<service>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_management_policy: Option<PodManagementPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<StatefulSetUpdateStrategy>,
    /// A claim per pod from each: `<template>-<set>-<ordinal>`, kept
    /// across restarts and scale-downs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_claim_templates: Vec<ClaimTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_retention_policy: Option<ClaimRetentionPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordinals: Option<Ordinals>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodManagementPolicy {
    /// One at a time, each after the one before is Ready; down from the
    /// highest.
    #[default]
    OrderedReady,
    Parallel,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatefulSetUpdateStrategy {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<StatefulSetUpdateType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<StatefulSetRollingUpdate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatefulSetUpdateType {
    /// Pods replaced from the highest ordinal down to the partition.
    RollingUpdate,
    /// Pods take the new template only when deleted by hand.
    OnDelete,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatefulSetRollingUpdate {
    /// Pods with a lower ordinal are left at their revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimTemplate {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ClaimSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimRetentionPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_deleted: Option<RetentionPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_scaled: Option<RetentionPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetentionPolicy {
    Retain,
    Delete,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ordinals {
    #[serde(default)]
    pub start: u32,
}

/// The labels a StatefulSet's pod carries: its name and its ordinal.
pub const STS_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
pub const STS_POD_INDEX: &str = "apps.kubernetes.io/pod-index";
/// The revision of the template a pod (or a set's status) runs.
pub const REVISION_HASH: &str = "controller-revision-hash";

// Services.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Service {
    pub metadata: ObjectMeta,
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    #[serde(rename = "type", default)]
    pub kind: ServiceType,
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_config: Option<SessionAffinityConfig>,
    /// The service's virtual address, from berth's service network (on
    /// the loopback, see `state`), allocated when not given; `None`:
    /// headless, as a StatefulSet's governing Service is.
    #[serde(rename = "clusterIP", default, skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    /// `[clusterIP]`, as kube-apiserver fills it in (one IP family).
    #[serde(rename = "clusterIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_ips: Vec<String>,
}

impl ServiceSpec {
    /// The virtual address, when it has one (not headless).
    pub fn virtual_ip(&self) -> Option<std::net::Ipv4Addr> {
        self.cluster_ip.as_deref().and_then(|ip| ip.parse().ok())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionAffinity {
    #[default]
    None,
    #[serde(rename = "ClientIP")]
    ClientIp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SessionAffinityConfig {
    #[serde(rename = "clientIP")]
    pub client_ip: ClientIpConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientIpConfig {
    #[serde(default = "default_affinity_timeout")]
    pub timeout_seconds: u64,
}

fn default_affinity_timeout() -> u64 {
    10_800
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
    /// What the port speaks: `http` (or `kubernetes.io/h2c`) makes it an
    /// HTTP port, proxied request by request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

impl ServicePort {
    /// Whether the port is declared HTTP: by its `appProtocol`, or a name
    /// `http` or `http-…` (as Istio reads port names). Other ports are
    /// proxied at layer 4 to endpoints that take connections.
    pub fn declared_http(&self) -> bool {
        match self.app_protocol.as_deref() {
            Some(p) => {
                p.eq_ignore_ascii_case("http")
                    || p.eq_ignore_ascii_case("kubernetes.io/h2c")
                    || p.eq_ignore_ascii_case("h2c")
            }
            None => self
                .name
                .as_deref()
                .is_some_and(|n| n == "http" || n.starts_with("http-")),
        }
    }
}

// Configuration.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigMap {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub immutable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Secret {
    pub metadata: ObjectMeta,
    /// Values base64-encoded, as Kubernetes stores them.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// Plain values, merged into `data` when applied.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    #[serde(rename = "type", default = "default_secret_type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub immutable: bool,
}

fn default_secret_type() -> String {
    "Opaque".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Namespace {
    pub metadata: ObjectMeta,
}
