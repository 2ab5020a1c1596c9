//! The Kubernetes-style half of the CLI: `berth daemon`, and `apply`,
//! `get`, `delete`, which talk to it over its control socket.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::Args;

use tokio_util::sync::CancellationToken;

use crate::api::client::{call, error_of};
use crate::api::{ApiState, kind_of, socket_path};
use crate::home::berth_home;
use crate::runtime::wasm::{WasmRuntime, WasmRuntimeConfig};
use crate::scheduler::Node;
use crate::spec::{Kind, Object};

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// A node to schedule onto, `NAME=CPU,MEMORY[,PODS]` (repeatable; at
    /// most 110 pods unless said); default one node with this host's CPUs
    /// and memory.
    #[arg(long = "node", value_name = "NAME=CPU,MEMORY")]
    nodes: Vec<Node>,

    /// The first wait before restarting a pod that failed, or before a
    /// Job's next pod after one failed (doubling, capped at --backoff-cap).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    backoff_base: Duration,

    /// The longest wait before a restart or a Job's next pod.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    backoff_cap: Duration,

    /// A pod that ran this long before failing restarts at once again, its
    /// back-off forgotten.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    backoff_reset: Duration,

    /// The most pods a namespace may hold (default: as many as the nodes
    /// can run); replicas past it fail to be created (FailedCreate).
    #[arg(long, value_name = "N")]
    pod_quota: Option<u64>,

    /// Where the Kubernetes API listens (HTTPS, the admin token from
    /// `berth kubeconfig`); `berth daemon` defaults to 127.0.0.1:6443,
    /// `berth up` to a free loopback port.
    #[arg(long, value_name = "ADDR", env = "BERTH_API_LISTEN")]
    api_listen: Option<std::net::SocketAddr>,

    /// Another name (DNS name or IP address) the API's certificate is valid
    /// for, for kubectl on other machines (repeatable).
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,

    /// Where services answer by Host: `http://<service>[.<namespace>].localhost:PORT/`.
    #[arg(
        long,
        default_value = "127.0.0.1:8080",
        value_name = "ADDR",
        env = "BERTH_INGRESS"
    )]
    ingress: std::net::SocketAddr,

    /// Where the ingress serves HTTPS, with the certificates of the
    /// Ingresses' `spec.tls` Secrets, chosen by SNI.
    #[arg(
        long,
        default_value = "127.0.0.1:8443",
        value_name = "ADDR",
        env = "BERTH_INGRESS_TLS"
    )]
    ingress_tls: std::net::SocketAddr,

    /// Ports NodePort services are given when they name none.
    #[arg(long, default_value = "30000-32767", value_name = "FIRST-LAST", value_parser = parse_port_range)]
    node_port_range: std::ops::RangeInclusive<u16>,

    /// Where Services get their virtual IPs (clusterIP) when they name
    /// none: a range of the loopback, 127.0.0.0/8, where the router listens
    /// for each Service's ports.
    #[arg(long, default_value = "127.96.0.0/12", value_name = "CIDR")]
    service_cidr: crate::state::ServiceNetwork,

    /// How long a request to a service with no ready endpoint waits for one
    /// before it is answered 503.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    endpoint_wait: Duration,

    /// The resolver settings Linux pods' /etc/resolv.conf are made from (as
    /// the kubelet's flag): its search domains and options, and its first
    /// name server, which pods reach through their way out.
    #[arg(
        long,
        default_value = "/etc/resolv.conf",
        value_name = "FILE",
        env = "BERTH_RESOLV_CONF"
    )]
    resolv_conf: std::path::PathBuf,

    /// How long a client of the ingress or a node port may take to send a
    /// request's headers before its connection is closed (slow clients
    /// holding connections open).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,

    /// Also serve Prometheus metrics at http://ADDR/metrics, without auth
    /// (for a scraper on this host; the API's /metrics needs the token).
    #[arg(long, value_name = "ADDR", env = "BERTH_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,

    /// Count requests through the router per service
    /// (berth_service_requests_total and its latency histogram).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    request_metrics: bool,

    /// How often pods' and the node's CPU and memory are sampled: the
    /// window `kubectl top` and the autoscaler see.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    metrics_resolution: Duration,

    /// How often each HorizontalPodAutoscaler reads its metrics and
    /// rescales (Kubernetes' --horizontal-pod-autoscaler-sync-period).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    hpa_sync_period: Duration,

    /// How long a request to a service an HPA scaled to zero is held while
    /// a replica starts, before it is answered 503.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    scale_from_zero_timeout: Duration,

    /// A Kubernetes EncryptionConfiguration (aesgcm and identity providers)
    /// sealing Secrets in the store; default `$BERTH_HOME/encryption.yaml`,
    /// made with a new AES-256 key on first start. Rotate a key by listing
    /// a new one first and restarting.
    #[arg(long, value_name = "FILE")]
    encryption_provider_config: Option<std::path::PathBuf>,

    /// Replace the daemon serving this home without dropping a request: its
    /// listening sockets pass to this one, it stops, and this one starts
    /// its pods. (SIGHUP to a daemon starts its binary so.)
    #[arg(long)]
    take_over: bool,

    /// Export spans (ingress, each routed service) to this OTLP/HTTP
    /// collector, e.g. http://127.0.0.1:4318 (`/v1/traces` is added).
    #[arg(long, value_name = "URL", env = "BERTH_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not FIRST-LAST"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|e| format!("{p:?} in {text:?}: {e}"))
    };
    let (first, last) = (port(first)?, port(last)?);
    if first == 0 || first > last {
        return Err(format!(
            "{text:?}: the first port must be 1 or more and not above the last"
        ));
    }
    Ok(first..=last)
}

/// `berth daemon`: serves the control API and runs the controllers and
/// the kubelet until SIGTERM or Ctrl-C, then stops every pod gracefully.
pub fn daemon(mut args: DaemonArgs) -> anyhow::Result<ExitCode> {
    args.api_listen
        .get_or_insert(std::net::SocketAddr::from(([127, 0, 0, 1], 6443)));
    run_daemon(args, &berth_home(), None)
}

impl DaemonArgs {
    fn config(self) -> crate::daemon::Config {
        crate::daemon::Config {
            nodes: self.nodes,
            backoff_base: self.backoff_base,
            backoff_cap: self.backoff_cap,
            backoff_reset: self.backoff_reset,
            pod_quota: self.pod_quota,
            api_listen: self.api_listen,
            tls_sans: self.tls_sans,
            ingress: self.ingress,
            ingress_tls: self.ingress_tls,
            node_port_range: self.node_port_range,
            service_cidr: self.service_cidr,
            endpoint_wait: self.endpoint_wait,
            header_timeout: self.header_timeout,
            resolv_conf: self.resolv_conf,
            metrics_listen: self.metrics_listen,
            request_metrics: self.request_metrics,
            metrics_resolution: self.metrics_resolution,
            hpa_sync_period: self.hpa_sync_period,
            scale_from_zero_timeout: self.scale_from_zero_timeout,
            encryption_config: self.encryption_provider_config,
            take_over: self.take_over,
        }
    }
}

/// Runs the daemon of `home` (see [`crate::daemon::serve`]) on a runtime
/// of its own, until SIGTERM or Ctrl-C.
fn run_daemon(
    args: DaemonArgs,
    home: &std::path::Path,
    companion: Option<crate::daemon::Companion>,
) -> anyhow::Result<ExitCode> {
    // Its HTTP client is a blocking one with a thread of its own: made and
    // flushed outside the async runtime.
    let spans = args
        .otlp_endpoint
        .as_deref()
        .map(|url| crate::router::trace::export_to(url, "berth"))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let tokio = runtime()?;
    // Built outside the async runtime and dropped after it, as `berth run`
    // does: its epoch ticker is what makes a spinning guest yield.
    let wasm = Arc::new(WasmRuntime::new(WasmRuntimeConfig {
        cache_dir: Some(crate::home::compile_cache_dir()),
        pooled: true,
    })?);
    // The path it was started from, now: a binary put there since (an
    // upgrade) is the one a SIGHUP starts.
    let exe = std::env::current_exe().context("finding berth's own binary")?;
    let served = tokio.block_on(async {
        let shutdown = super::shutdown_on_signal()?;
        if companion.is_none() {
            restart_on_hangup(exe)?;
        }
        crate::daemon::serve(args.config(), home, wasm.clone(), shutdown, companion).await
    });
    tokio.shutdown_timeout(Duration::from_secs(1));
    drop(wasm);
    drop(spans);
    served
}

/// On SIGHUP, starts `exe` with this daemon's arguments and `--take-over`:
/// a restart (or upgrade) that drops no request. This daemon serves on if
/// the new one fails before it takes over.
fn restart_on_hangup(exe: std::path::PathBuf) -> anyhow::Result<()> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("watching for SIGHUP")?;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if !args.iter().any(|a| a == "--take-over") {
        args.push("--take-over".into());
    }
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: starting {} to take over", exe.display());
            match std::process::Command::new(&exe).args(&args).spawn() {
                // Waited for, so it is no zombie should it fail while this
                // daemon lives on.
                Ok(mut child) => {
                    std::thread::spawn(move || child.wait());
                }
                Err(e) => tracing::error!("SIGHUP: starting {}: {e}", exe.display()),
            }
        }
    });
    Ok(())
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// pods, deployments, services, configmaps, secrets, namespaces (or their short names).
    kind: String,
    /// Only this object.
    name: Option<String>,
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long = "all-namespaces")]
    all_namespaces: bool,
    /// Only objects whose labels match (`k=v,k2!=v2,k3`).
    #[arg(short = 'l', long = "selector")]
    selector: Option<String>,
    /// `wide`, `yaml` or `json`.
    #[arg(short = 'o', long = "output")]
    output: Option<String>,
}

/// kubectl's AGE: the largest unit that fits (`45s`, `12m`, `5h`, `3d`).
pub(super) fn age(created: &str) -> String {
    let Ok(then) = humantime::parse_rfc3339(created) else {
        return "<unknown>".into();
    };
    let secs = SystemTime::now()
        .duration_since(then)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

pub fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    // Events are served but not stored: kind_of names stored kinds.
    let events = matches!(args.kind.as_str(), "events" | "event" | "ev").then_some("Event");
    let kind = events.or_else(|| kind_of(&args.kind)).with_context(|| {
        format!(
            "berth has no kind {:?} (it has pods, deployments, replicasets, services, configmaps, secrets, namespaces)",
            args.kind
        )
    })?;
    let namespace = (!args.all_namespaces).then_some(args.namespace.as_str());
    match args.output.as_deref() {
        Some("json") | Some("yaml") => {
            let mut objects: Vec<serde_json::Value> =
                list_in(kind, namespace, args.selector.as_deref())?
                    .into_iter()
                    .filter(|o| {
                        args.name
                            .as_deref()
                            .is_none_or(|n| o["metadata"]["name"] == n)
                    })
                    .collect();
            if let Some(name) = &args.name
                && objects.is_empty()
            {
                anyhow::bail!("{} {name} not found", kind.to_ascii_lowercase());
            }
            let document = if args.name.is_some() && objects.len() == 1 {
                objects.remove(0)
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects})
            };
            if args.output.as_deref() == Some("json") {
                println!("{}", serde_json::to_string_pretty(&document)?);
            } else {
                print!("{}", yaml_serde::to_string(&document)?);
            }
        }
        None | Some("wide") => {
            let wide = args.output.is_some();
            let table = table(
                kind,
                namespace,
                args.name.as_deref(),
                args.selector.as_deref(),
            )?;
            print_table(table, wide, args.all_namespaces)?;
        }
        Some(other) => anyhow::bail!("unknown output format {other:?} (use wide, yaml or json)"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The API server's Table of `kind`'s objects (or of the one `name`d), as
/// kubectl asks for it: the server decides the columns, so `berth get` and
/// `kubectl get` print the same.
fn table(
    kind: &str,
    namespace: Option<&str>,
    name: Option<&str>,
    selector: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let mut path = crate::api::client::path(kind, namespace, name)?;
    path.push_str("?includeObject=Metadata");
    if let Some(selector) = selector {
        path.push_str("&labelSelector=");
        path.push_str(&crate::api::client::query_value(selector));
    }
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io";
    let (status, reply) =
        runtime()?.block_on(crate::api::client::get_as(&socket_path(), &path, accept))?;
    match (status, name) {
        (200, _) => Ok(reply),
        (404, Some(name)) => anyhow::bail!("{} {name} not found", kind.to_ascii_lowercase()),
        _ => anyhow::bail!("{}", error_of(&reply)),
    }
}

/// A `meta.k8s.io/v1` Table, as far as `berth get` prints it.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Table {
    column_definitions: Vec<TableColumn>,
    #[serde(default)]
    rows: Vec<TableRow>,
}

#[derive(serde::Deserialize)]
struct TableColumn {
    name: String,
    #[serde(default)]
    priority: u32,
}

#[derive(serde::Deserialize)]
struct TableRow {
    cells: Vec<serde_json::Value>,
    /// With `includeObject=Metadata`: the object's metadata.
    #[serde(default)]
    object: Option<RowObject>,
}

#[derive(serde::Deserialize)]
struct RowObject {
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
}

/// A Table's rows as kubectl prints them: the columns of priority 0 (all
/// of them when `wide`), headers upper-cased, each padded to its widest
/// cell; with every namespace, the namespace first.
fn print_table(table: serde_json::Value, wide: bool, all_namespaces: bool) -> anyhow::Result<()> {
    let table: Table = serde_json::from_value(table).context("the daemon's Table")?;
    if table.rows.is_empty() {
        eprintln!("No resources found.");
        return Ok(());
    }
    let columns: Vec<(usize, String)> = table
        .column_definitions
        .iter()
        .enumerate()
        .filter(|(_, c)| wide || c.priority == 0)
        .map(|(i, c)| (i, c.name.to_uppercase()))
        .collect();
    let namespace_of = |r: &TableRow| r.object.as_ref().and_then(|o| o.metadata.namespace.clone());
    let with_namespace = all_namespaces && table.rows.iter().any(|r| namespace_of(r).is_some());
    let mut header: Vec<String> = columns.iter().map(|(_, name)| name.clone()).collect();
    if with_namespace {
        header.insert(0, "NAMESPACE".into());
    }
    let cell = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        None | Some(serde_json::Value::Null) => "<none>".into(),
        Some(other) => other.to_string(),
    };
    let lines: Vec<Vec<String>> = table
        .rows
        .iter()
        .map(|r| {
            let mut line: Vec<String> =
                columns.iter().map(|(i, _)| cell(r.cells.get(*i))).collect();
            if with_namespace {
                line.insert(0, namespace_of(r).unwrap_or_default());
            }
            line
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            lines
                .iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in std::iter::once(&header).chain(lines.iter()) {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", cells.join("   ").trim_end());
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The kind, then the names; or -f with manifests.
    words: Vec<String>,
    #[arg(short = 'f', long = "filename")]
    files: Vec<PathBuf>,
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
}

pub fn delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    // (kind, namespace, name) of everything to delete.
    let mut targets: Vec<(String, String, String)> = Vec::new();
    if !args.files.is_empty() {
        for loaded in crate::spec::load_paths(&args.files)? {
            let o = &loaded.object;
            targets.push((
                o.kind().to_string(),
                o.namespace().unwrap_or("").to_owned(),
                o.metadata().name.clone(),
            ));
        }
        // The reverse of the order they were applied in: a namespace goes
        // after what it holds, instead of taking it along unreported.
        targets.reverse();
    } else {
        let (kind, names) = args
            .words
            .split_first()
            .context("name a kind and objects (`berth delete deployment web`), or -f FILE")?;
        let kind = kind_of(kind).with_context(|| format!("berth has no kind {kind:?}"))?;
        if names.is_empty() {
            anyhow::bail!("name the {} to delete", kind.to_ascii_lowercase());
        }
        for name in names {
            targets.push((kind.to_owned(), args.namespace.clone(), name.clone()));
        }
    }
    let rt = runtime()?;
    let mut failed = false;
    for (kind, namespace, name) in targets {
        let path = crate::api::client::path(&kind, Some(&namespace), Some(&name))?;
        let (status, reply) = rt.block_on(call(&socket_path(), "DELETE", &path, None))?;
        match status {
            200 | 202 => println!("{}/{name} deleted", kind.to_ascii_lowercase()),
            404 => {
                eprintln!("berth: error: {kind} {name} not found");
                failed = true;
            }
            _ => {
                eprintln!("berth: error: {}", error_of(&reply));
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// `deployment/NAME`, or `deployment NAME`.
    target: Vec<String>,
    #[arg(long)]
    replicas: u32,
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
}

/// `berth scale deployment NAME --replicas N`.
pub fn scale(args: ScaleArgs) -> anyhow::Result<ExitCode> {
    let words: Vec<&str> = args.target.iter().flat_map(|w| w.split('/')).collect();
    let [kind, name] = words[..] else {
        anyhow::bail!("name what to scale: `berth scale deployment NAME --replicas N`");
    };
    let kind = kind_of(kind)
        .filter(|k| matches!(*k, "Deployment" | "ReplicaSet" | "StatefulSet"))
        .with_context(|| {
            format!("{kind:?} cannot be scaled (deployments, replicasets and statefulsets can)")
        })?;
    let path = crate::api::client::path(kind, Some(&args.namespace), Some(name))? + "/scale";
    let body = serde_json::json!({"spec": {"replicas": args.replicas}});
    let (status, reply) = runtime()?.block_on(crate::api::client::call_as(
        &socket_path(),
        "PATCH",
        &path,
        "application/merge-patch+json",
        Some(body),
    ))?;
    if status != 200 {
        anyhow::bail!("{}", error_of(&reply));
    }
    let group = format!("{}.apps", kind.to_ascii_lowercase());
    println!("{group}/{name} scaled");
    Ok(ExitCode::SUCCESS)
}

/// The objects of `kind` in `namespace` (every one, for namespaces).
pub(super) fn list(kind: &str, namespace: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    list_in(kind, Some(namespace), None)
}

/// The objects of `kind` through the Kubernetes API: in `namespace`, or
/// in all with `None`; with a label selector the server evaluates.
pub(super) fn list_in(
    kind: &str,
    namespace: Option<&str>,
    selector: Option<&str>,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut path = crate::api::client::path(kind, namespace, None)?;
    if let Some(selector) = selector {
        path.push_str("?labelSelector=");
        path.push_str(&crate::api::client::query_value(selector));
    }
    let (status, reply) = runtime()?.block_on(call(&socket_path(), "GET", &path, None))?;
    if status != 200 {
        anyhow::bail!("{}", error_of(&reply));
    }
    Ok(reply["items"].as_array().cloned().unwrap_or_default())
}

/// [`list`], each object as Kubernetes' type for its kind.
pub(super) fn list_as<T: serde::de::DeserializeOwned>(
    kind: &str,
    namespace: &str,
) -> anyhow::Result<Vec<T>> {
    list(kind, namespace)?
        .into_iter()
        .map(|o| typed(kind, o))
        .collect()
}

/// [`fetch`], as Kubernetes' type for its kind.
pub(super) fn fetch_as<T: serde::de::DeserializeOwned>(
    kind: &str,
    namespace: &str,
    name: &str,
) -> anyhow::Result<T> {
    typed(kind, fetch(kind, namespace, name)?)
}

/// An object the API served, as Kubernetes' type for `kind`.
pub(super) fn typed<T: serde::de::DeserializeOwned>(
    kind: &str,
    object: serde_json::Value,
) -> anyhow::Result<T> {
    let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
    serde_json::from_value(object)
        .with_context(|| format!("the daemon's {kind} {name} is not one Kubernetes would serve"))
}

/// One object as the API serves it, or an error naming it.
pub(super) fn fetch(kind: &str, namespace: &str, name: &str) -> anyhow::Result<serde_json::Value> {
    let path = crate::api::client::path(kind, Some(namespace), Some(name))?;
    let (status, reply) = runtime()?.block_on(call(&socket_path(), "GET", &path, None))?;
    match status {
        200 => Ok(reply),
        404 => anyhow::bail!("{} {name} not found", kind.to_ascii_lowercase()),
        _ => anyhow::bail!("{}", error_of(&reply)),
    }
}

/// `berth ps`: every container the daemon runs, as `docker ps` lists them.
pub fn ps() -> anyhow::Result<ExitCode> {
    let pods = list_in("Pod", None, None)?;
    println!(
        "{:<16} {:<40} {:<12} {:<24} {:<18} ENDPOINT",
        "NAMESPACE", "POD", "CONTAINER", "IMAGE", "STATUS"
    );
    for raw in pods {
        // berth's own status field, which Kubernetes' type does not carry.
        let endpoints: std::collections::BTreeMap<String, String> =
            serde_json::from_value(raw["status"]["endpoints"].clone()).unwrap_or_default();
        let pod: k8s_openapi::api::core::v1::Pod = typed("Pod", raw)?;
        let meta = &pod.metadata;
        let status = pod.status.unwrap_or_default();
        for c in pod.spec.iter().flat_map(|s| &s.containers) {
            let s = status
                .container_statuses
                .iter()
                .flatten()
                .find(|s| s.name == c.name);
            let state = s.and_then(|s| s.state.as_ref());
            let shown = match (state, s) {
                (Some(state), Some(s)) if state.running.is_some() => {
                    if s.ready { "Up (ready)" } else { "Up" }.to_owned()
                }
                (Some(state), _) => state
                    .waiting
                    .as_ref()
                    .and_then(|w| w.reason.clone())
                    .or_else(|| state.terminated.as_ref().and_then(|t| t.reason.clone()))
                    .unwrap_or_else(|| "Pending".into()),
                _ => "Pending".into(),
            };
            println!(
                "{:<16} {:<40} {:<12} {:<24} {:<18} {}",
                meta.namespace.as_deref().unwrap_or("default"),
                meta.name.as_deref().unwrap_or(""),
                c.name,
                c.image.as_deref().unwrap_or(""),
                shown,
                endpoints
                    .get(&c.name)
                    .map_or("-".to_owned(), |e| format!("http://{e}/"))
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// A directory: its manifests (`*.yaml`, `*.yml`, `*.json`) are applied,
    /// and every `berth.toml` in it or a subdirectory is built first as
    /// `<directory name>:latest`.
    dir: Option<PathBuf>,

    /// Manifest files instead of a directory (repeatable).
    #[arg(short = 'f', long = "filename", conflicts_with = "dir")]
    files: Vec<PathBuf>,

    #[command(flatten)]
    daemon: DaemonArgs,
}

/// `berth up`: local development in the foreground. Builds what the
/// directory declares, runs a daemon, applies the manifests, reports pods
/// as they become ready, and on Ctrl-C stops everything and removes what
/// it applied.
pub fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let (manifest_paths, build_dirs) = match (&args.dir, args.files.is_empty()) {
        (_, false) => (args.files.clone(), Vec::new()),
        (dir, true) => {
            let dir = dir.clone().unwrap_or_else(|| PathBuf::from("."));
            let mut builds = Vec::new();
            if dir.join("berth.toml").is_file() {
                builds.push(dir.clone());
            }
            let mut subdirs: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("berth.toml").is_file())
                .collect();
            subdirs.sort();
            builds.extend(subdirs);
            (vec![dir], builds)
        }
    };
    // Parse before building or starting anything: a bad manifest costs nothing.
    let objects: Vec<crate::spec::Object> = crate::spec::load_paths(&manifest_paths)?
        .into_iter()
        .map(|l| l.object)
        .collect();
    if objects.is_empty() {
        anyhow::bail!(
            "no manifests found in {}",
            manifest_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !build_dirs.is_empty() {
        let store = berth_registry::ContentStore::open(crate::image::store_dir())?;
        for dir in &build_dirs {
            let canonical = dir
                .canonicalize()
                .with_context(|| dir.display().to_string())?;
            let name: berth_registry::Reference = canonical
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default()
                .parse()
                .with_context(|| format!("naming the image built from {}", dir.display()))?;
            let mut progress = super::progress::stderr("berth up");
            let built = crate::image::build::build(&store, dir, &name, progress.as_mut())
                .with_context(|| format!("building {}", dir.display()))?;
            drop(progress);
            super::precompile(&built.component);
            eprintln!(
                "berth up: built {} ({})",
                built.name,
                built.manifest.digest()
            );
        }
    }
    let companion: crate::daemon::Companion = Box::new(move |state, shutdown, ingress| {
        Box::pin(up_companion(state, shutdown, ingress, objects))
    });
    let home = crate::home::up_home(&manifest_paths[0]);
    run_daemon(args.daemon, &home, Some(companion))
}

/// Where a service answers: by Host on the ingress, and on its node ports.
fn service_urls(
    state: &ApiState,
    namespace: &str,
    name: &str,
    ingress: std::net::SocketAddr,
) -> Vec<String> {
    let host = if namespace == "default" {
        format!("{name}.localhost")
    } else {
        format!("{name}.{namespace}.localhost")
    };
    let mut urls = vec![format!("http://{host}:{}/", ingress.port())];
    if let Ok(Some(record)) = state.store.lock().get(Kind::Service, namespace, name)
        && let crate::spec::Object::Service(service) = record.object
    {
        for port in &service.spec.ports {
            if let Some(node_port) = port.node_port {
                urls.push(format!("http://{}:{node_port}/", ingress.ip()));
            }
        }
    }
    urls
}

async fn up_companion(
    state: Arc<ApiState>,
    shutdown: CancellationToken,
    ingress: std::net::SocketAddr,
    objects: Vec<crate::spec::Object>,
) -> ExitCode {
    let applied = state.store.lock().apply(&objects);
    if let Err(e) = applied {
        eprintln!("berth: error: {e}");
        shutdown.cancel();
        return ExitCode::FAILURE;
    }
    state.changed.notify_one();
    for o in &objects {
        let kind = o.kind().as_str().to_ascii_lowercase();
        println!("{kind}/{} applied", o.metadata().name);
    }
    for o in &objects {
        if let crate::spec::Object::Service(service) = o {
            let ns = service.metadata.namespace.as_deref().unwrap_or("default");
            println!(
                "service/{}: {}",
                service.metadata.name,
                service_urls(&state, ns, &service.metadata.name, ingress).join(" ")
            );
        }
    }
    // Report each pod once as it turns ready, until Ctrl-C.
    let mut reported: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut all_ready_said = false;
    loop {
        // Off the async workers, which serve the app's requests meanwhile.
        let listing = state.clone();
        let pods = tokio::task::spawn_blocking(move || listing.store.lock().list(Kind::Pod, None))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let mut ready = 0;
        for pod in &pods {
            let name = &pod.object.metadata().name;
            if pod.status.pod_ready() {
                ready += 1;
                if reported.insert(pod.uid.clone()) {
                    // The first container that serves, in the pod's order.
                    let endpoint = match (&pod.object, pod.status.pod()) {
                        (Object::Pod(spec), Some(status)) => spec
                            .spec
                            .containers
                            .iter()
                            .find_map(|c| status.endpoints.get(&c.name)),
                        _ => None,
                    };
                    match endpoint {
                        Some(endpoint) => println!("pod/{name} ready on http://{endpoint}/"),
                        None => println!("pod/{name} ready"),
                    }
                }
            }
        }
        if !pods.is_empty() && ready == pods.len() && !all_ready_said {
            println!("berth up: {ready} pods ready; Ctrl-C stops them");
            all_ready_said = true;
        } else if ready < pods.len() {
            all_ready_said = false;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    // Remove what `up` applied, newest first, so nothing restarts later.
    let mut store = state.store.lock();
    for o in objects.iter().rev() {
        let _ = store.delete(o.kind(), o.namespace().unwrap_or(""), &o.metadata().name);
    }
    // Their ReplicaSets and pods too, at once: the kubelet has stopped
    // them already (no one is left to finish a graceful deletion).
    while matches!(crate::controller::collect_garbage_now(&mut store), Ok(true)) {}
    ExitCode::SUCCESS
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The pod (or `pod/NAME`).
    pod: String,
    /// The container, when the pod has several.
    #[arg(short = 'c', long = "container")]
    container: Option<String>,
    /// Keep printing as the container writes.
    #[arg(short = 'f', long = "follow")]
    follow: bool,
    /// The run before the current one (after a restart).
    #[arg(short = 'p', long = "previous")]
    previous: bool,
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
}

/// `berth logs POD [-c C] [-f] [--previous]`: what the container wrote.
pub fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let pod = args.pod.strip_prefix("pod/").unwrap_or(&args.pod);
    let mut path = crate::api::client::path("Pod", Some(&args.namespace), Some(pod))?;
    path.push_str(&format!(
        "/log?previous={}&follow={}",
        args.previous, args.follow
    ));
    if let Some(c) = &args.container {
        path.push_str("&container=");
        path.push_str(&crate::api::client::query_value(c));
    }
    runtime()?.block_on(crate::api::client::get_streaming(&socket_path(), &path))?;
    Ok(ExitCode::SUCCESS)
}
