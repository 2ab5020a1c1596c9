//! The daemon's APIs. The Kubernetes API (`server`, `rest`, `watch`,
//! `discovery`, `openapi`, …) is served over HTTPS with the admin token
//! (`pki`) and on the unix socket in the data dir (mode 0600, so only its
//! owner may drive berth); kubectl and client libraries use it unchanged.
//!
//! Beside it on the socket, until the CLI speaks Kubernetes, berth's own
//! private API, whose shapes are berth's, not the Kubernetes REST paths:
//!
//! - `POST /apply` with `{"files": [{"name", "text"}]}`: parses every file
//!   (the daemon trusts no client to have), then applies all objects in one
//!   transaction. 200 with one `{kind, namespace, name, outcome}` per
//!   object, or 400 with the error and nothing applied.
//! - `GET /objects/{kind}?namespace=NS` (all namespaces without it): the
//!   stored records.
//! - `DELETE /objects/{kind}/{namespace}/{name}`: 200, or 404.

mod access;
mod apply;
pub mod client;
mod discovery;
mod endpoints;
mod exec;
mod logs;
mod openapi;
mod patch;
pub mod pki;
mod protobuf;
pub(crate) mod resources;
mod rest;
mod selector;
mod server;
mod status;
mod table;
mod watch;

pub use server::{KubeApi, router as kube_router, serve_tls, with_token};

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};

use crate::spec::{Object, parse_str};
use crate::state::{Record, Store};

/// The kinds `get` and `delete` take, with the names kubectl accepts.
pub const KIND_NAMES: [(&str, &[&str]); 7] = [
    ("Pod", &["pod", "pods", "po"]),
    ("Deployment", &["deployment", "deployments", "deploy"]),
    ("ReplicaSet", &["replicaset", "replicasets", "rs"]),
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

#[derive(Debug, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub text: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub files: Vec<ManifestFile>,
    /// Refuse, changing nothing, if any object exists already (`create`).
    #[serde(default)]
    pub create_only: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Applied {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub outcome: String,
}

/// A stored object as the API returns it: Kubernetes' shape, with the
/// server-set metadata filled in.
#[derive(Debug, Serialize, Deserialize)]
pub struct ObjectView {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub resource_version: u64,
    pub generation: u64,
    pub created: String,
    /// The whole object as Kubernetes YAML would show it.
    pub object: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: message.into(),
        }),
    )
        .into_response()
}

pub struct ApiState {
    pub store: Mutex<Store>,
    /// Woken after every change, for the controllers.
    pub changed: tokio::sync::Notify,
}

/// Runs a handler's store work on the blocking pool: it is SQLite, behind
/// the mutex the control loop holds while it reconciles, and the async
/// workers it would otherwise stall are the ones serving requests.
async fn off_workers(work: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, format!("the store: {e}")))
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/apply", post(apply))
        .route("/objects/{kind}", get(list))
        .route("/objects/{kind}/{namespace}/{name}", delete(remove))
        .route("/scale/{kind}/{namespace}/{name}", post(scale))
        .route("/events", get(events))
        .route("/logs/{namespace}/{name}", get(logs))
        .route("/rollout/{namespace}/{name}/history", get(history))
        .route("/rollout/{namespace}/{name}/undo", post(undo))
        .with_state(state)
}

async fn apply(State(state): State<Arc<ApiState>>, Json(request): Json<ApplyRequest>) -> Response {
    off_workers(move || {
        let mut objects: Vec<Object> = Vec::new();
        for file in &request.files {
            match parse_str(&file.text, &file.name) {
                Ok(loaded) => objects.extend(loaded.into_iter().map(|l| l.object)),
                Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
            }
        }
        if objects.is_empty() {
            return error(StatusCode::BAD_REQUEST, "no objects to apply");
        }
        let mut store = state.store.lock().expect("lock");
        if request.create_only {
            for o in &objects {
                let ns = o.namespace().unwrap_or("");
                match store.get(o.kind(), ns, &o.metadata().name) {
                    Ok(None) => {}
                    Ok(Some(_)) => {
                        return error(
                            StatusCode::CONFLICT,
                            format!(
                                "{} {} already exists",
                                o.kind().to_ascii_lowercase(),
                                o.metadata().name
                            ),
                        );
                    }
                    Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
        }
        let outcome = store.apply(&objects);
        drop(store);
        match outcome {
            Ok(outcomes) => {
                state.changed.notify_one();
                let applied: Vec<Applied> = objects
                    .iter()
                    .zip(outcomes)
                    .map(|(o, outcome)| Applied {
                        kind: o.kind().to_owned(),
                        namespace: o.namespace().map(str::to_owned),
                        name: o.metadata().name.clone(),
                        outcome: outcome.to_string(),
                    })
                    .collect();
                Json(applied).into_response()
            }
            Err(crate::state::StateError::Rejected(reason)) => {
                error(StatusCode::BAD_REQUEST, reason)
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    })
    .await
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    namespace: Option<String>,
}

pub fn view(record: &Record) -> ObjectView {
    let object = &record.object;
    let mut json = object.to_value();
    if let Some(map) = json.as_object_mut() {
        let mut full = serde_json::Map::new();
        full.insert("apiVersion".into(), object.api_version().into());
        full.insert("kind".into(), object.kind().into());
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
        if !record.status.as_object().is_some_and(|s| s.is_empty()) {
            full.insert("status".into(), record.status.clone());
        }
        *map = full;
    }
    ObjectView {
        kind: object.kind().to_owned(),
        namespace: object.namespace().map(str::to_owned),
        name: object.metadata().name.clone(),
        uid: record.uid.clone(),
        resource_version: record.resource_version,
        generation: record.generation,
        created: record.created.clone(),
        object: json,
    }
}

async fn list(
    State(state): State<Arc<ApiState>>,
    UrlPath(kind): UrlPath<String>,
    Query(query): Query<ListQuery>,
) -> Response {
    off_workers(move || {
        let Some(kind) = kind_of(&kind) else {
            return error(StatusCode::NOT_FOUND, format!("berth has no kind {kind}"));
        };
        let namespace = if kind == "Namespace" {
            None
        } else {
            query.namespace.as_deref()
        };
        let records = state.store.lock().expect("lock").list(kind, namespace);
        match records {
            Ok(records) => Json(records.iter().map(view).collect::<Vec<_>>()).into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    })
    .await
}

async fn remove(
    State(state): State<Arc<ApiState>>,
    UrlPath((kind, namespace, name)): UrlPath<(String, String, String)>,
) -> Response {
    off_workers(move || {
        let Some(kind) = kind_of(&kind) else {
            return error(StatusCode::NOT_FOUND, format!("berth has no kind {kind}"));
        };
        let namespace = if kind == "Namespace" {
            String::new()
        } else {
            namespace
        };
        let deleted = state
            .store
            .lock()
            .expect("lock")
            .delete(kind, &namespace, &name);
        match deleted {
            Ok(true) => {
                state.changed.notify_one();
                Json(serde_json::json!({"deleted": name})).into_response()
            }
            Ok(false) => error(StatusCode::NOT_FOUND, format!("{kind} {name} not found")),
            Err(crate::state::StateError::Rejected(reason)) => {
                error(StatusCode::BAD_REQUEST, reason)
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    })
    .await
}

/// The control socket: `$BERTH_HOME/berth.sock`.
pub fn socket_path() -> std::path::PathBuf {
    crate::home::berth_home().join("berth.sock")
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

/// Reads the API token from `path`: one line, at least 16 characters, in a
/// file only its owner can read.
pub fn read_token(path: &Path) -> anyhow::Result<Arc<str>> {
    use anyhow::Context as _;
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        anyhow::bail!(
            "{}: the token file must be readable by its owner only (chmod 600 it)",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let token = text.trim();
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!(
            "{}: the token must be one line of at least 16 characters without spaces",
            path.display()
        );
    }
    Ok(Arc::from(token))
}

#[derive(Debug, Deserialize)]
struct ScaleRequest {
    replicas: u32,
}

/// Sets `spec.replicas` of a Deployment or ReplicaSet, as a new generation.
async fn scale(
    State(state): State<Arc<ApiState>>,
    UrlPath((kind, namespace, name)): UrlPath<(String, String, String)>,
    Json(request): Json<ScaleRequest>,
) -> Response {
    off_workers(move || {
        let Some(kind) = kind_of(&kind) else {
            return error(StatusCode::NOT_FOUND, format!("berth has no kind {kind}"));
        };
        let mut store = state.store.lock().expect("lock");
        let record = match store.get(kind, &namespace, &name) {
            Ok(Some(record)) => record,
            Ok(None) => return error(StatusCode::NOT_FOUND, format!("{kind} {name} not found")),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        let mut object = record.object;
        match &mut object {
            Object::Deployment(d) => d.spec.replicas = request.replicas,
            Object::ReplicaSet(rs) => rs.spec.replicas = request.replicas,
            _ => return error(StatusCode::BAD_REQUEST, format!("{kind} cannot be scaled")),
        }
        let applied = store.apply(std::slice::from_ref(&object));
        drop(store);
        match applied {
            Ok(_) => {
                state.changed.notify_one();
                Json(serde_json::json!({"scaled": name, "replicas": request.replicas}))
                    .into_response()
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    })
    .await
}

/// Events, oldest first, of a namespace or of all.
async fn events(State(state): State<Arc<ApiState>>, Query(query): Query<ListQuery>) -> Response {
    off_workers(move || {
        let events = state
            .store
            .lock()
            .expect("lock")
            .events(query.namespace.as_deref(), None);
        match events {
            Ok(events) => Json(
                events
                    .into_iter()
                    .map(|e| {
                        serde_json::json!({
                            "time": e.time, "namespace": e.namespace, "kind": e.kind,
                            "name": e.name, "type": e.kind_of_event, "reason": e.reason,
                            "message": e.message,
                        })
                    })
                    .collect::<Vec<_>>(),
            )
            .into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    })
    .await
}

/// A deployment's revisions, oldest first.
async fn history(
    State(state): State<Arc<ApiState>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
) -> Response {
    off_workers(move || {
        let store = state.store.lock().expect("lock");
        match store.get("Deployment", &namespace, &name) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("Deployment {name} not found"),
                );
            }
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
        match store.revisions(&namespace, &name) {
            Ok(revisions) => Json(
                revisions
                    .into_iter()
                    .map(|(revision, hash, template)| {
                        serde_json::json!({"revision": revision, "hash": hash, "template": template})
                    })
                    .collect::<Vec<_>>(),
            )
            .into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UndoRequest {
    to_revision: Option<u64>,
}

/// Rolls a deployment back to a revision's pod template (by default the
/// one before the current): a new generation, rolled out like any other.
async fn undo(
    State(state): State<Arc<ApiState>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    Json(request): Json<UndoRequest>,
) -> Response {
    off_workers(move || {
        let mut store = state.store.lock().expect("lock");
        let record = match store.get("Deployment", &namespace, &name) {
            Ok(Some(record)) => record,
            Ok(None) => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("Deployment {name} not found"),
                );
            }
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        let revisions = match store.revisions(&namespace, &name) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        let target = match request.to_revision {
            Some(n) => revisions.iter().find(|r| r.0 == n),
            // The newest revision whose template differs from the current one.
            None => revisions
                .iter()
                .rev()
                .find(|r| Some(&r.1) != revisions.last().map(|l| &l.1)),
        };
        let Some((revision, _, template)) = target else {
            return error(
                StatusCode::BAD_REQUEST,
                match request.to_revision {
                    Some(n) => format!("deployment {name} has no revision {n}"),
                    None => format!("deployment {name} has no earlier revision to go back to"),
                },
            );
        };
        let Object::Deployment(mut deployment) = record.object else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "not a deployment");
        };
        deployment.spec.template = match serde_json::from_value(template.clone()) {
            Ok(t) => t,
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("revision {revision}: {e}"),
                );
            }
        };
        let revision = *revision;
        let applied = store.apply(&[Object::Deployment(deployment)]);
        drop(store);
        match applied {
            Ok(_) => {
                state.changed.notify_one();
                Json(serde_json::json!({"rolledBackTo": revision})).into_response()
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    })
    .await
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    container: Option<String>,
    #[serde(default)]
    previous: bool,
    #[serde(default)]
    follow: bool,
}

/// A pod container's output (see [`logs::pod_log`]), with the private
/// API's errors.
async fn logs(
    State(state): State<Arc<ApiState>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    Query(query): Query<LogsQuery>,
) -> Response {
    let options = logs::LogOptions {
        container: query.container,
        previous: query.previous,
        follow: query.follow,
        ..Default::default()
    };
    match logs::pod_log(state, namespace, name, options).await {
        Ok(response) => response,
        Err(e) => error(e.code(), e.to_string()),
    }
}
