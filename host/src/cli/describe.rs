//! `berth describe KIND NAME`: an object's state in prose, laid out as
//! `kubectl describe` lays it out, then the events about it.
//!
//! Each object is read as Kubernetes' own type for its kind (k8s-openapi),
//! so every field printed here is one the API contract names and the
//! compiler checks. The one exception is berth's `status.endpoints` on a
//! pod, which Kubernetes' `PodStatus` has no field for: it is read from the
//! raw reply before the pod is typed.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStrategy, ReplicaSet, ReplicaSetCondition,
    StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job, JobCondition};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerStatus, EnvFromSource, EnvVar, Event, Namespace,
    NamespaceCondition, PersistentVolumeClaim, Pod, PodCondition, PodTemplateSpec, Probe,
    ResourceRequirements, Secret, Service, ServicePort, Volume,
};
use k8s_openapi::api::networking::v1::{
    Ingress, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::kube::{age, fetch, fetch_as, list_as, runtime, typed};
use crate::api::client::call;
use crate::api::{kind_of, socket_path};
use crate::controller::REVISION_ANNOTATION;

#[derive(Debug, Args)]
pub struct DescribeArgs {
    kind: String,
    name: String,
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
}

pub fn describe(args: DescribeArgs) -> anyhow::Result<ExitCode> {
    let kind = kind_of(&args.kind).with_context(|| format!("berth has no kind {:?}", args.kind))?;
    let (namespace, name) = (args.namespace.as_str(), args.name.as_str());
    match kind {
        "Pod" => pod(namespace, name)?,
        "Deployment" => deployment(namespace, name)?,
        "ReplicaSet" => replica_set(namespace, name)?,
        "Service" => service(namespace, name)?,
        "ConfigMap" => config_map(namespace, name)?,
        "Secret" => secret(namespace, name)?,
        "Namespace" => namespace_object(namespace, name)?,
        "Job" => job(namespace, name)?,
        "CronJob" => cron_job(namespace, name)?,
        "StatefulSet" => stateful_set(namespace, name)?,
        "PersistentVolumeClaim" => claim(namespace, name)?,
        "Ingress" => ingress(namespace, name)?,
        "NetworkPolicy" => network_policy(namespace, name)?,
        // `kind_of` knows no other kind; a new one needs its type here.
        other => anyhow::bail!("berth cannot describe a {other} yet"),
    }
    events(kind, namespace, name)
}

/// `Label:` and its value in kubectl's column, `depth` levels in.
fn field(depth: usize, label: &str, value: &str) {
    let indent = "  ".repeat(depth);
    let label = format!("{label}:");
    // kubectl's column, or two spaces past a label too long for it.
    let width = 20usize.saturating_sub(indent.len()).max(label.len() + 2);
    println!("{indent}{label:<width$}{value}");
}

/// A time as the API writes it: RFC 3339, to the second, in UTC.
fn rfc3339(time: &Time) -> String {
    time.0
        .to_rfc3339_opts(k8s_openapi::chrono::SecondsFormat::Secs, true)
}

/// The items joined by `separator`, or `<none>`.
fn joined(items: &[String], separator: &str) -> String {
    if items.is_empty() {
        "<none>".to_owned()
    } else {
        items.join(separator)
    }
}

/// `k=v,k=v`, or `<none>`.
fn pairs(map: Option<&BTreeMap<String, String>>) -> String {
    let pairs: Vec<String> = map
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    joined(&pairs, ",")
}

/// What every kind shows first: name, namespace, labels, annotations, age.
fn header(meta: &ObjectMeta, name: &str, namespaced: bool) {
    field(0, "Name", name);
    if namespaced {
        field(
            0,
            "Namespace",
            meta.namespace.as_deref().unwrap_or("default"),
        );
    }
    field(0, "Labels", &pairs(meta.labels.as_ref()));
    field(0, "Annotations", &pairs(meta.annotations.as_ref()));
    let created = meta.creation_timestamp.as_ref().map(rfc3339);
    field(0, "CreationTimestamp", created.as_deref().unwrap_or(""));
}

fn controlled_by(meta: &ObjectMeta) {
    if let Some(owner) = meta.owner_references.as_deref().and_then(<[_]>::first) {
        field(
            0,
            "Controlled By",
            &format!("{}/{}", owner.kind, owner.name),
        );
    }
}

/// Whether `meta`'s first owner (its controller, as berth writes them) is
/// named `owner`.
fn owned_by(meta: &ObjectMeta, owner: &str) -> bool {
    meta.owner_references
        .as_deref()
        .and_then(<[_]>::first)
        .is_some_and(|o| o.name == owner)
}

/// A row of the Conditions table. Each kind has its own condition type;
/// they share the fields the table shows.
trait ConditionRow {
    /// Type, status, and the reason (or, without one, the message).
    fn row(&self) -> [&str; 3];
}

macro_rules! condition_row {
    ($($condition:ty),*) => {$(
        impl ConditionRow for $condition {
            fn row(&self) -> [&str; 3] {
                let reason = self.reason.as_deref().or(self.message.as_deref());
                [&self.type_, &self.status, reason.unwrap_or("")]
            }
        }
    )*};
}

condition_row!(
    PodCondition,
    DeploymentCondition,
    ReplicaSetCondition,
    NamespaceCondition,
    JobCondition
);

/// A Service's conditions are metav1's, where reason and message are
/// required fields: an empty reason is one the server left out.
impl ConditionRow for Condition {
    fn row(&self) -> [&str; 3] {
        let reason = if self.reason.is_empty() {
            &self.message
        } else {
            &self.reason
        };
        [&self.type_, &self.status, reason]
    }
}

fn conditions<C: ConditionRow>(conditions: Option<&[C]>) {
    let Some(conditions) = conditions else {
        return;
    };
    println!("Conditions:");
    println!("  {:<16} {:<6} Reason", "Type", "Status");
    for c in conditions {
        let [kind, status, reason] = c.row();
        println!("  {kind:<16} {status:<6} {reason}");
    }
}

/// berth's `status.endpoints`: container name to the `127.0.0.1:PORT` it
/// serves on. Kubernetes' PodStatus has no such field, so it is read from
/// the reply as served.
fn endpoints(pod: &Value) -> BTreeMap<String, String> {
    pod.pointer("/status/endpoints")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(container, at)| Some((container.clone(), at.as_str()?.to_owned())))
        .collect()
}

fn pod(namespace: &str, name: &str) -> anyhow::Result<()> {
    let served = fetch("Pod", namespace, name)?;
    let endpoints = endpoints(&served);
    let pod: Pod = typed("Pod", served)?;
    header(&pod.metadata, name, true);
    let spec = pod.spec.unwrap_or_default();
    let status = pod.status.unwrap_or_default();
    field(
        0,
        "Runtime",
        spec.runtime_class_name.as_deref().unwrap_or("(by image)"),
    );
    field(0, "Node", spec.node_name.as_deref().unwrap_or("<none>"));
    field(
        0,
        "Status",
        status
            .reason
            .as_deref()
            .or(status.phase.as_deref())
            .unwrap_or("Pending"),
    );
    if let Some(message) = &status.message {
        field(0, "Message", message);
    }
    controlled_by(&pod.metadata);
    // Statuses are in the containers' order, as berth's kubelet writes them.
    if let Some(inits) = spec.init_containers.as_deref().filter(|c| !c.is_empty()) {
        println!("Init Containers:");
        let statuses = status
            .init_container_statuses
            .as_deref()
            .unwrap_or_default();
        for (i, c) in inits.iter().enumerate() {
            container(c);
            if c.restart_policy.as_deref() == Some("Always") {
                field(2, "Restart Policy", "Always (sidecar)");
            }
            container_status(statuses.get(i));
        }
    }
    println!("Containers:");
    let statuses = status.container_statuses.as_deref().unwrap_or_default();
    for (i, c) in spec.containers.iter().enumerate() {
        container(c);
        container_status(statuses.get(i));
        if let Some(endpoint) = endpoints.get(&c.name) {
            field(2, "Endpoint", &format!("http://{endpoint}/"));
        }
    }
    volumes(spec.volumes.as_deref());
    conditions(status.conditions.as_deref());
    Ok(())
}

/// A container's state, readiness and restarts.
fn container_status(s: Option<&ContainerStatus>) {
    if let Some(state) = s.and_then(|s| s.state.as_ref()) {
        if let Some(waiting) = &state.waiting {
            let reason = waiting.reason.as_deref().unwrap_or("");
            field(2, "State", &format!("Waiting ({reason})"));
        } else if let Some(running) = &state.running {
            let since = running.started_at.as_ref().map(rfc3339);
            let since = since.as_deref().unwrap_or("");
            field(2, "State", &format!("Running (since {since})"));
        } else if let Some(done) = &state.terminated {
            let reason = done.reason.as_deref().unwrap_or("");
            let code = done.exit_code;
            field(
                2,
                "State",
                &format!("Terminated ({reason}, exit code {code})"),
            );
        }
    }
    field(2, "Ready", &s.is_some_and(|s| s.ready).to_string());
    field(
        2,
        "Restart Count",
        &s.map_or(0, |s| s.restart_count).to_string(),
    );
}

/// A container's spec: image, ports, resources, probes, environment.
fn container(c: &Container) {
    println!("  {}:", c.name);
    field(2, "Image", c.image.as_deref().unwrap_or(""));
    let ports: Vec<String> = c
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let protocol = p.protocol.as_deref().unwrap_or("TCP");
            format!("{}/{protocol}", p.container_port)
        })
        .collect();
    if !ports.is_empty() {
        field(2, "Ports", &ports.join(", "));
    }
    if let Some(command) = &c.command {
        field(2, "Command", &command.join(" "));
    }
    if let Some(args) = &c.args {
        field(2, "Args", &args.join(" "));
    }
    resources(c.resources.as_ref());
    for (label, probe) in [
        ("Startup", &c.startup_probe),
        ("Liveness", &c.liveness_probe),
        ("Readiness", &c.readiness_probe),
    ] {
        if let Some(p) = probe {
            field(2, label, &probe_line(p));
        }
    }
    env_from(c.env_from.as_deref().unwrap_or_default());
    env(c.env.as_deref().unwrap_or_default());
    mounts(c);
}

fn resources(resources: Option<&ResourceRequirements>) {
    let Some(resources) = resources else {
        return;
    };
    for (label, amounts) in [
        ("Limits", &resources.limits),
        ("Requests", &resources.requests),
    ] {
        if let Some(amounts) = amounts
            && !amounts.is_empty()
        {
            field(2, label, "");
            for (resource, amount) in amounts {
                field(3, resource, &amount.0);
            }
        }
    }
}

fn env_from(sources: &[EnvFromSource]) {
    let sources: Vec<String> = sources
        .iter()
        .filter_map(|f| {
            let (kind, name) = match (&f.config_map_ref, &f.secret_ref) {
                (Some(r), _) => ("ConfigMap", &r.name),
                (None, Some(r)) => ("Secret", &r.name),
                (None, None) => return None,
            };
            // An empty name is one the server left out.
            (!name.is_empty()).then(|| format!("{name} {kind}"))
        })
        .collect();
    if !sources.is_empty() {
        field(2, "Environment Variables from", "");
        for from in sources {
            println!("      {from}");
        }
    }
}

fn env(vars: &[EnvVar]) {
    if vars.is_empty() {
        field(2, "Environment", "<none>");
        return;
    }
    field(2, "Environment", "");
    for var in vars {
        field(3, &var.name, &env_value(var));
    }
}

/// A variable's value, or where it comes from; secrets are never read.
fn env_value(var: &EnvVar) -> String {
    if let Some(value) = &var.value {
        return value.clone();
    }
    let from = var.value_from.as_ref();
    if let Some(r) = from.and_then(|f| f.config_map_key_ref.as_ref()) {
        format!("<set to the key '{}' of config map '{}'>", r.key, r.name)
    } else if let Some(r) = from.and_then(|f| f.secret_key_ref.as_ref()) {
        format!("<set to the key '{}' in secret '{}'>", r.key, r.name)
    } else {
        String::new()
    }
}

fn mounts(c: &Container) {
    let mounts = c.volume_mounts.as_deref().unwrap_or_default();
    if mounts.is_empty() {
        return;
    }
    field(2, "Mounts", "");
    for m in mounts {
        let mode = if m.read_only == Some(true) {
            "ro"
        } else {
            "rw"
        };
        println!("      {} from {} ({mode})", m.mount_path, m.name);
    }
}

/// kubectl's one-line probe: `http-get http://:8080/healthz delay=0s
/// timeout=1s period=10s #success=1 #failure=3`, with Kubernetes' defaults
/// where the spec left them out.
fn probe_line(p: &Probe) -> String {
    let action = if let Some(h) = &p.http_get {
        let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
        let path = h.path.as_deref().unwrap_or("/");
        format!("http-get {scheme}://:{}{path}", port(&h.port))
    } else if let Some(tcp) = &p.tcp_socket {
        format!("tcp-socket :{}", port(&tcp.port))
    } else if let Some(command) = p.exec.as_ref().and_then(|e| e.command.as_ref()) {
        format!("exec [{}]", command.join(" "))
    } else {
        "<unknown>".to_owned()
    };
    format!(
        "{action} delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay_seconds.unwrap_or(0),
        p.timeout_seconds.unwrap_or(1),
        p.period_seconds.unwrap_or(10),
        p.success_threshold.unwrap_or(1),
        p.failure_threshold.unwrap_or(3)
    )
}

/// A port given as a number or a name (or a percentage, for a rollout).
fn port(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

fn volumes(list: Option<&[Volume]>) {
    let Some(list) = list.filter(|l| !l.is_empty()) else {
        return;
    };
    println!("Volumes:");
    for v in list {
        println!("  {}:", v.name);
        let (kind, detail) = volume_source(v);
        field(2, "Type", kind);
        if !detail.is_empty() {
            field(2, "Source", &detail);
        }
    }
}

/// The kind of volume and where its files come from.
fn volume_source(v: &Volume) -> (&'static str, String) {
    if let Some(config_map) = &v.config_map {
        ("ConfigMap", format!("name {}", config_map.name))
    } else if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.as_ref()) {
        ("Secret", format!("name {name}"))
    } else if let Some(host_path) = &v.host_path {
        ("HostPath", format!("path {}", host_path.path))
    } else if let Some(claim) = &v.persistent_volume_claim {
        (
            "PersistentVolumeClaim",
            format!(
                "claim {}{}",
                claim.claim_name,
                if claim.read_only == Some(true) {
                    ", read-only"
                } else {
                    ""
                }
            ),
        )
    } else if v.empty_dir.is_some() {
        (
            "EmptyDir",
            "a directory that lives as long as the pod".to_owned(),
        )
    } else {
        ("<unknown>", String::new())
    }
}

/// The pod template of a Deployment or ReplicaSet.
fn template(t: &PodTemplateSpec) {
    println!("Pod Template:");
    let labels = t.metadata.as_ref().and_then(|m| m.labels.as_ref());
    field(1, "Labels", &pairs(labels));
    println!("  Containers:");
    let spec = t.spec.as_ref();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        container(c);
    }
    volumes(spec.and_then(|s| s.volumes.as_deref()));
}

fn selector(s: &LabelSelector) -> String {
    pairs(s.match_labels.as_ref())
}

fn deployment(namespace: &str, name: &str) -> anyhow::Result<()> {
    let deployment: Deployment = fetch_as("Deployment", namespace, name)?;
    header(&deployment.metadata, name, true);
    let spec = deployment.spec.unwrap_or_default();
    let status = deployment.status.unwrap_or_default();
    field(0, "Selector", &selector(&spec.selector));
    field(
        0,
        "Replicas",
        &format!(
            "{} desired | {} updated | {} total | {} available | {} unavailable",
            spec.replicas.unwrap_or(1),
            status.updated_replicas.unwrap_or(0),
            status.replicas.unwrap_or(0),
            status.available_replicas.unwrap_or(0),
            status.unavailable_replicas.unwrap_or(0)
        ),
    );
    strategy(spec.strategy.as_ref());
    template(&spec.template);
    let owner = deployment.metadata.name.as_deref().unwrap_or("");
    replica_sets(namespace, owner)?;
    conditions(status.conditions.as_deref());
    Ok(())
}

fn strategy(strategy: Option<&DeploymentStrategy>) {
    let kind = strategy
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate");
    field(0, "StrategyType", kind);
    if kind != "RollingUpdate" {
        return;
    }
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    // Kubernetes' defaults where the spec gave none.
    let or_default = |v: Option<&IntOrString>| v.map_or_else(|| "25%".to_owned(), port);
    field(
        0,
        "RollingUpdateStrategy",
        &format!(
            "{} max unavailable, {} max surge",
            or_default(rolling.and_then(|r| r.max_unavailable.as_ref())),
            or_default(rolling.and_then(|r| r.max_surge.as_ref()))
        ),
    );
}

/// The replica sets a deployment owns: the newest revision is the one
/// being rolled out (or done); the others are scaled down or on their way.
fn replica_sets(namespace: &str, owner: &str) -> anyhow::Result<()> {
    let mut owned: Vec<ReplicaSet> = list_as::<ReplicaSet>("ReplicaSet", namespace)?
        .into_iter()
        .filter(|rs| owned_by(&rs.metadata, owner))
        .collect();
    owned.sort_by_key(|rs| std::cmp::Reverse(revision(rs)));
    let current = |rs: &ReplicaSet| rs.status.as_ref().map_or(0, |s| s.replicas);
    let line = |rs: &ReplicaSet| {
        format!(
            "{} ({}/{} replicas created)",
            rs.metadata.name.as_deref().unwrap_or(""),
            current(rs),
            rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
        )
    };
    let old: Vec<String> = owned
        .iter()
        .skip(1)
        .filter(|rs| current(rs) > 0)
        .map(line)
        .collect();
    field(0, "OldReplicaSets", &joined(&old, ", "));
    field(
        0,
        "NewReplicaSet",
        &owned.first().map_or_else(|| "<none>".to_owned(), line),
    );
    Ok(())
}

/// The deployment revision a replica set holds, 0 if it says none.
fn revision(rs: &ReplicaSet) -> u64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn replica_set(namespace: &str, name: &str) -> anyhow::Result<()> {
    let rs: ReplicaSet = fetch_as("ReplicaSet", namespace, name)?;
    header(&rs.metadata, name, true);
    let spec = rs.spec.unwrap_or_default();
    let status = rs.status.unwrap_or_default();
    field(0, "Selector", &selector(&spec.selector));
    controlled_by(&rs.metadata);
    field(
        0,
        "Replicas",
        &format!(
            "{} current / {} desired",
            status.replicas,
            spec.replicas.unwrap_or(1)
        ),
    );
    let owner = rs.metadata.name.as_deref().unwrap_or("");
    let (mut running, mut waiting, mut succeeded, mut failed) = (0, 0, 0, 0);
    for pod in list_as::<Pod>("Pod", namespace)?
        .iter()
        .filter(|p| owned_by(&p.metadata, owner))
    {
        match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Running") => running += 1,
            Some("Succeeded") => succeeded += 1,
            Some("Failed") => failed += 1,
            _ => waiting += 1,
        }
    }
    field(
        0,
        "Pods Status",
        &format!("{running} Running / {waiting} Waiting / {succeeded} Succeeded / {failed} Failed"),
    );
    template(&spec.template.unwrap_or_default());
    conditions(status.conditions.as_deref());
    Ok(())
}

fn service(namespace: &str, name: &str) -> anyhow::Result<()> {
    let service: Service = fetch_as("Service", namespace, name)?;
    header(&service.metadata, name, true);
    let spec = service.spec.unwrap_or_default();
    let wanted = spec.selector.unwrap_or_default();
    field(0, "Selector", &pairs(Some(&wanted)));
    field(0, "Type", spec.type_.as_deref().unwrap_or("ClusterIP"));
    let ready = ready_pods(namespace, &wanted)?;
    for p in spec.ports.iter().flatten() {
        service_port(p, &ready);
    }
    field(
        0,
        "Session Affinity",
        spec.session_affinity.as_deref().unwrap_or("None"),
    );
    let status = service.status.unwrap_or_default();
    conditions(status.conditions.as_deref());
    Ok(())
}

/// A service's endpoints: the ready pods it selects, the ones the router
/// sends to. A service without a selector has none.
fn ready_pods(namespace: &str, wanted: &BTreeMap<String, String>) -> anyhow::Result<Vec<String>> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let selected = |p: &Pod| {
        let labels = p.metadata.labels.as_ref();
        wanted
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    };
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    };
    Ok(list_as::<Pod>("Pod", namespace)?
        .into_iter()
        .filter(|p| selected(p) && ready(p))
        .map(|p| p.metadata.name.unwrap_or_default())
        .collect())
}

fn service_port(p: &ServicePort, ready: &[String]) {
    let name = p.name.as_deref().unwrap_or("<unset>");
    let protocol = p.protocol.as_deref().unwrap_or("TCP");
    field(0, "Port", &format!("{name}  {}/{protocol}", p.port));
    let target = p
        .target_port
        .as_ref()
        .map_or_else(|| p.port.to_string(), port);
    field(0, "TargetPort", &format!("{target}/{protocol}"));
    if let Some(node_port) = p.node_port {
        field(0, "NodePort", &format!("{name}  {node_port}/{protocol}"));
    }
    field(0, "Endpoints", &joined(ready, ","));
}

/// Counts of the pods `owner` controls by phase: (active, succeeded, failed).
fn pod_phases(namespace: &str, owner: &str) -> anyhow::Result<(usize, usize, usize)> {
    let (mut active, mut succeeded, mut failed) = (0, 0, 0);
    for pod in list_as::<Pod>("Pod", namespace)?
        .iter()
        .filter(|p| owned_by(&p.metadata, owner))
    {
        match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Succeeded") => succeeded += 1,
            Some("Failed") => failed += 1,
            _ => active += 1,
        }
    }
    Ok((active, succeeded, failed))
}

fn job(namespace: &str, name: &str) -> anyhow::Result<()> {
    let job: Job = fetch_as("Job", namespace, name)?;
    header(&job.metadata, name, true);
    let spec = job.spec.unwrap_or_default();
    let status = job.status.unwrap_or_default();
    if let Some(s) = &spec.selector {
        field(0, "Selector", &selector(s));
    }
    controlled_by(&job.metadata);
    let number = |n: Option<i32>| n.map_or_else(|| "<unset>".to_owned(), |n| n.to_string());
    field(0, "Parallelism", &number(spec.parallelism));
    field(0, "Completions", &number(spec.completions));
    field(
        0,
        "Completion Mode",
        spec.completion_mode.as_deref().unwrap_or("NonIndexed"),
    );
    field(0, "Suspend", &spec.suspend.unwrap_or(false).to_string());
    field(0, "Backoff Limit", &number(spec.backoff_limit));
    if let Some(t) = &status.start_time {
        field(0, "Start Time", &rfc3339(t));
    }
    if let Some(t) = &status.completion_time {
        field(0, "Completed At", &rfc3339(t));
    }
    if let Some(indexes) = &status.completed_indexes {
        field(0, "Completed Indexes", indexes);
    }
    field(
        0,
        "Pods Statuses",
        &format!(
            "{} Active ({} Ready) / {} Succeeded / {} Failed",
            status.active.unwrap_or(0),
            status.ready.unwrap_or(0),
            status.succeeded.unwrap_or(0),
            status.failed.unwrap_or(0)
        ),
    );
    template(&spec.template);
    conditions(status.conditions.as_deref());
    Ok(())
}

fn cron_job(namespace: &str, name: &str) -> anyhow::Result<()> {
    let cron: CronJob = fetch_as("CronJob", namespace, name)?;
    header(&cron.metadata, name, true);
    let spec = cron.spec.unwrap_or_default();
    let status = cron.status.unwrap_or_default();
    field(0, "Schedule", &spec.schedule);
    field(
        0,
        "Time Zone",
        spec.time_zone.as_deref().unwrap_or("<unset>"),
    );
    field(
        0,
        "Concurrency Policy",
        spec.concurrency_policy.as_deref().unwrap_or("Allow"),
    );
    field(0, "Suspend", &spec.suspend.unwrap_or(false).to_string());
    let number = |n: Option<i32>| n.map_or_else(|| "<unset>".to_owned(), |n| n.to_string());
    field(
        0,
        "Successful Job History Limit",
        &number(spec.successful_jobs_history_limit),
    );
    field(
        0,
        "Failed Job History Limit",
        &number(spec.failed_jobs_history_limit),
    );
    field(
        0,
        "Starting Deadline Seconds",
        &spec
            .starting_deadline_seconds
            .map_or_else(|| "<unset>".to_owned(), |s| format!("{s}s")),
    );
    if let Some(template) = spec.job_template.spec.as_ref() {
        self::template(&template.template);
    }
    let time = |t: Option<&Time>| t.map_or_else(|| "<unset>".to_owned(), rfc3339);
    field(
        0,
        "Last Schedule Time",
        &time(status.last_schedule_time.as_ref()),
    );
    field(
        0,
        "Last Successful Time",
        &time(status.last_successful_time.as_ref()),
    );
    let active: Vec<String> = status
        .active
        .iter()
        .flatten()
        .filter_map(|r| r.name.clone())
        .collect();
    field(0, "Active Jobs", &joined(&active, ", "));
    Ok(())
}

fn stateful_set(namespace: &str, name: &str) -> anyhow::Result<()> {
    let set: StatefulSet = fetch_as("StatefulSet", namespace, name)?;
    header(&set.metadata, name, true);
    let spec = set.spec.unwrap_or_default();
    let status = set.status.unwrap_or_default();
    field(0, "Selector", &selector(&spec.selector));
    field(
        0,
        "Replicas",
        &format!(
            "{} desired | {} total",
            spec.replicas.unwrap_or(1),
            status.replicas
        ),
    );
    field(
        0,
        "Update Strategy",
        spec.update_strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            .unwrap_or("RollingUpdate"),
    );
    if let Some(partition) = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
    {
        field(1, "Partition", &partition.to_string());
    }
    let (active, succeeded, failed) = pod_phases(namespace, name)?;
    field(
        0,
        "Pods Status",
        &format!("{active} Running / {succeeded} Succeeded / {failed} Failed"),
    );
    template(&spec.template);
    println!("Volume Claims:");
    for claim in spec.volume_claim_templates.iter().flatten() {
        let name = claim.metadata.name.as_deref().unwrap_or("");
        let size = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage"))
            .map_or("", |q| q.0.as_str());
        field(1, "Name", name);
        field(1, "Capacity", size);
    }
    Ok(())
}

fn claim(namespace: &str, name: &str) -> anyhow::Result<()> {
    let claim: PersistentVolumeClaim = fetch_as("PersistentVolumeClaim", namespace, name)?;
    header(&claim.metadata, name, true);
    let spec = claim.spec.unwrap_or_default();
    let status = claim.status.unwrap_or_default();
    field(
        0,
        "StorageClass",
        spec.storage_class_name.as_deref().unwrap_or(""),
    );
    field(0, "Status", status.phase.as_deref().unwrap_or("Pending"));
    field(0, "Volume", spec.volume_name.as_deref().unwrap_or(""));
    field(
        0,
        "Capacity",
        status
            .capacity
            .as_ref()
            .and_then(|c| c.get("storage"))
            .map_or("", |q| q.0.as_str()),
    );
    field(
        0,
        "Access Modes",
        &joined(&status.access_modes.unwrap_or_default(), ","),
    );
    field(
        0,
        "VolumeMode",
        spec.volume_mode.as_deref().unwrap_or("Filesystem"),
    );
    let used_by: Vec<String> = list_as::<Pod>("Pod", namespace)?
        .into_iter()
        .filter(|p| {
            p.spec.as_ref().is_some_and(|s| {
                s.volumes.iter().flatten().any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == name)
                })
            })
        })
        .filter_map(|p| p.metadata.name)
        .collect();
    field(0, "Used By", &joined(&used_by, ", "));
    Ok(())
}

fn ingress(namespace: &str, name: &str) -> anyhow::Result<()> {
    let ingress: Ingress = fetch_as("Ingress", namespace, name)?;
    header(&ingress.metadata, name, true);
    let spec = ingress.spec.unwrap_or_default();
    field(
        0,
        "Ingress Class",
        spec.ingress_class_name.as_deref().unwrap_or("<none>"),
    );
    let address: Vec<String> = ingress
        .status
        .and_then(|s| s.load_balancer?.ingress)
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.or(i.hostname))
        .collect();
    field(0, "Address", &joined(&address, ","));
    let backend = |b: &k8s_openapi::api::networking::v1::IngressBackend| {
        b.service.as_ref().map_or_else(
            || "<resource>".to_owned(),
            |s| {
                let port = s.port.as_ref().map_or_else(String::new, |p| {
                    p.name
                        .clone()
                        .or(p.number.map(|n| n.to_string()))
                        .unwrap_or_default()
                });
                format!("{}:{port}", s.name)
            },
        )
    };
    field(
        0,
        "Default backend",
        &spec
            .default_backend
            .as_ref()
            .map_or_else(|| "<default>".to_owned(), backend),
    );
    for tls in spec.tls.iter().flatten() {
        field(
            0,
            "TLS",
            &format!(
                "{} terminates {}",
                tls.secret_name.as_deref().unwrap_or(""),
                joined(&tls.hosts.clone().unwrap_or_default(), ",")
            ),
        );
    }
    println!("Rules:");
    println!("  {:<20} {:<24} Backends", "Host", "Path");
    for rule in spec.rules.iter().flatten() {
        let host = rule.host.as_deref().unwrap_or("*");
        for path in rule.http.iter().flat_map(|h| &h.paths) {
            println!(
                "  {host:<20} {:<24} {}",
                path.path.as_deref().unwrap_or("/"),
                backend(&path.backend)
            );
        }
    }
    Ok(())
}

/// As `kubectl describe networkpolicy` tells it: what it selects, then its
/// rules for each direction it isolates.
fn network_policy(namespace: &str, name: &str) -> anyhow::Result<()> {
    let policy: NetworkPolicy = fetch_as("NetworkPolicy", namespace, name)?;
    header(&policy.metadata, name, true);
    let spec = policy.spec.unwrap_or_default();
    println!("Spec:");
    field(1, "PodSelector", &full_selector(spec.pod_selector.as_ref()));
    let types = spec.policy_types.clone().unwrap_or_else(|| {
        let mut types = vec!["Ingress".to_owned()];
        if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
            types.push("Egress".to_owned());
        }
        types
    });
    let rules = |direction: &str, rules: Vec<(Vec<NetworkPolicyPort>, Vec<NetworkPolicyPeer>)>| {
        let (lower, peers, unrestricted) = match direction {
            "Ingress" => ("ingress", "From", "source"),
            _ => ("egress", "To", "destination"),
        };
        if !types.iter().any(|t| t == direction) {
            println!("  Not affecting {lower} traffic");
            return;
        }
        println!("  Allowing {lower} traffic:");
        if rules.is_empty() {
            println!("    <none> (Selected pods are isolated for {lower} connectivity)");
        }
        for (i, (ports, from)) in rules.iter().enumerate() {
            if i > 0 {
                println!("    ----------");
            }
            if ports.is_empty() {
                println!("    To Port: <any> (traffic allowed to all ports)");
            }
            for p in ports {
                let number = p.port.as_ref().map_or_else(|| "<any>".to_owned(), port);
                let range = p
                    .end_port
                    .map_or(number.clone(), |end| format!("{number}-{end}"));
                let protocol = p.protocol.as_deref().unwrap_or("TCP");
                println!("    To Port: {range}/{protocol}");
            }
            if from.is_empty() {
                println!("    {peers}: <any> (traffic not restricted by {unrestricted})");
                continue;
            }
            println!("    {peers}:");
            for peer in from {
                if let Some(block) = &peer.ip_block {
                    println!("      IPBlock:");
                    println!("        CIDR: {}", block.cidr);
                    println!(
                        "        Except: {}",
                        block.except.clone().unwrap_or_default().join(", ")
                    );
                    continue;
                }
                if let Some(namespaces) = &peer.namespace_selector {
                    println!(
                        "      NamespaceSelector: {}",
                        full_selector(Some(namespaces))
                    );
                }
                if let Some(pods) = &peer.pod_selector {
                    println!("      PodSelector: {}", full_selector(Some(pods)));
                }
            }
        }
    };
    rules(
        "Ingress",
        spec.ingress
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.ports.unwrap_or_default(), r.from.unwrap_or_default()))
            .collect(),
    );
    rules(
        "Egress",
        spec.egress
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.ports.unwrap_or_default(), r.to.unwrap_or_default()))
            .collect(),
    );
    field(1, "Policy Types", &types.join(", "));
    Ok(())
}

/// A selector with its expressions too, as kubectl prints it (`<none>`
/// for one that selects everything).
fn full_selector(s: Option<&LabelSelector>) -> String {
    let value = s.map_or(Value::Null, |s| {
        serde_json::to_value(s).unwrap_or(Value::Null)
    });
    crate::api::selector_text(&value)
}

fn config_map(namespace: &str, name: &str) -> anyhow::Result<()> {
    let config_map: ConfigMap = fetch_as("ConfigMap", namespace, name)?;
    header(&config_map.metadata, name, true);
    println!("\nData\n====");
    for (key, value) in config_map.data.iter().flatten() {
        println!("{key}:\n----\n{value}\n");
    }
    let binary = config_map.binary_data.unwrap_or_default();
    if !binary.is_empty() {
        println!("\nBinaryData\n====");
        for (key, value) in binary {
            println!("{key}: {} bytes", value.0.len());
        }
    }
    Ok(())
}

/// A secret's values are not printed, only their sizes, as kubectl does.
fn secret(namespace: &str, name: &str) -> anyhow::Result<()> {
    let secret: Secret = fetch_as("Secret", namespace, name)?;
    header(&secret.metadata, name, true);
    println!("\nType:  {}", secret.type_.as_deref().unwrap_or("Opaque"));
    println!("\nData\n====");
    for (key, value) in secret.data.iter().flatten() {
        println!("{key}:  {} bytes", value.0.len());
    }
    Ok(())
}

fn namespace_object(namespace: &str, name: &str) -> anyhow::Result<()> {
    let ns = match fetch_as::<Namespace>("Namespace", namespace, name) {
        // The default namespace exists whether or not it was declared.
        Err(_) if name == "default" => Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        },
        fetched => fetched?,
    };
    header(&ns.metadata, name, false);
    field(0, "Status", "Active");
    let status = ns.status.unwrap_or_default();
    conditions(status.conditions.as_deref());
    Ok(())
}

fn events(kind: &str, namespace: &str, name: &str) -> anyhow::Result<ExitCode> {
    let path = crate::api::client::path("Event", Some(namespace), None)?
        + "?fieldSelector="
        + &crate::api::client::query_value(&format!(
            "involvedObject.kind={kind},involvedObject.name={name}"
        ));
    let (code, reply) = runtime()?.block_on(call(&socket_path(), "GET", &path, None))?;
    // The object is described even when its events cannot be listed.
    let events = if code == 200 {
        serde_json::from_value::<k8s_openapi::List<Event>>(reply)
            .context("reading the daemon's events")?
            .items
    } else {
        Vec::new()
    };
    if events.is_empty() {
        field(0, "Events", "<none>");
        return Ok(ExitCode::SUCCESS);
    }
    println!("Events:");
    println!("  {:<8} {:<18} {:<6} Message", "Type", "Reason", "Age");
    for e in events {
        let last = e.last_timestamp.as_ref().map(rfc3339).unwrap_or_default();
        println!(
            "  {:<8} {:<18} {:<6} {}",
            e.type_.as_deref().unwrap_or(""),
            e.reason.as_deref().unwrap_or(""),
            age(&last),
            e.message.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}
