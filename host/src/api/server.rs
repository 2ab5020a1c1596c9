//! The Kubernetes API's front: its routes, bearer-token authentication, the
//! request body limit, and the HTTPS listener (rustls, HTTP/1.1 and h2).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::{
    Namespace, NamespaceSpec, NamespaceStatus, Node, NodeCondition, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::ApiState;
use super::status::ApiError;
use crate::spec::status;

/// What the Kubernetes API serves from.
pub struct KubeApi {
    pub state: Arc<ApiState>,
    pub nodes: Vec<crate::scheduler::Node>,
    /// When the daemon started: the creationTimestamp of what it makes up
    /// (nodes, service accounts, runtime classes).
    pub started: String,
    /// Ends watches and follows when the daemon stops.
    pub shutdown: CancellationToken,
    /// The running Linux containers `pods/exec` runs commands in.
    pub execs: Arc<crate::runtime::linux::ExecTargets>,
    /// The most pods a namespace may hold (the controllers' quota too).
    pub pod_quota: u64,
    /// What `/metrics` serves.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Pods' and nodes' use over time, for metrics.k8s.io.
    pub usage: Arc<crate::metrics::UsageHistory>,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi")
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl KubeApi {
    /// The metadata of an object berth makes up rather than stores: it
    /// never changes, so it stays at resourceVersion 1 and dates from the
    /// daemon's start.
    pub(super) fn made_up_metadata(
        &self,
        name: &str,
        namespace: Option<&str>,
        uid: String,
    ) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: namespace.map(str::to_owned),
            uid: Some(uid),
            resource_version: Some("1".into()),
            creation_timestamp: status::time(&self.started),
            ..ObjectMeta::default()
        }
    }

    /// The `default` namespace, which exists whether or not it is stored.
    pub fn default_namespace(&self) -> Value {
        let labels = BTreeMap::from([("kubernetes.io/metadata.name".into(), "default".into())]);
        served(Namespace {
            metadata: ObjectMeta {
                labels: Some(labels),
                ..self.made_up_metadata("default", None, "berth-namespace-default".into())
            },
            spec: Some(NamespaceSpec {
                finalizers: Some(vec!["kubernetes".into()]),
            }),
            status: Some(NamespaceStatus {
                phase: Some("Active".into()),
                ..NamespaceStatus::default()
            }),
        })
    }

    /// A configured node as a core/v1 Node: its capacity, and Ready.
    pub fn node_object(&self, node: &crate::scheduler::Node) -> Value {
        let capacity = capacity(node);
        served(Node {
            metadata: ObjectMeta {
                labels: Some(node.labels()),
                ..self.made_up_metadata(&node.name, None, format!("berth-node-{}", node.name))
            },
            // Present though empty, as a kubelet's node without taints or
            // a pod CIDR shows it.
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(capacity.clone()),
                capacity: Some(capacity),
                conditions: Some(vec![self.node_ready()]),
                node_info: Some(node_info()),
                ..NodeStatus::default()
            }),
        })
    }

    /// Ready since the daemon started: berth's kubelet is the daemon.
    fn node_ready(&self) -> NodeCondition {
        NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("KubeletReady".into()),
            message: Some("berth is running pods on this node".into()),
            last_heartbeat_time: status::time(&self.started),
            last_transition_time: status::time(&self.started),
        }
    }
}

/// What `node` offers pods; berth keeps back nothing for itself, so this is
/// its allocatable too.
fn capacity(node: &crate::scheduler::Node) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".into(), Quantity(format!("{}m", node.cpu_millis))),
        (
            "memory".into(),
            Quantity(format!("{}Ki", node.memory_bytes / 1024)),
        ),
        ("pods".into(), Quantity(node.max_pods.to_string())),
    ])
}

/// The versions kubectl shows for a node. The fields berth has no answer
/// for are empty strings, as Kubernetes requires them present.
fn node_info() -> NodeSystemInfo {
    let (major, minor, patch) = super::discovery::KUBERNETES_VERSION;
    NodeSystemInfo {
        kubelet_version: format!("v{major}.{minor}.{patch}+berth"),
        container_runtime_version: format!("berth://{}", env!("CARGO_PKG_VERSION")),
        operating_system: "linux".into(),
        architecture: crate::scheduler::arch().into(),
        ..NodeSystemInfo::default()
    }
}

/// A Kubernetes object as the JSON the API answers with; k8s-openapi
/// writes the apiVersion and kind of a top-level resource itself.
pub(super) fn served(object: impl serde::Serialize) -> Value {
    serde_json::to_value(object).expect("Kubernetes objects serialise")
}

/// The routes of the Kubernetes API (no authentication: see [`with_token`]).
pub fn router(api: Arc<KubeApi>) -> Router {
    Router::new()
        .route(
            "/version",
            get(|| async { axum::Json(super::discovery::version()) }),
        )
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .route("/livez", get(health))
        .route("/readyz", get(health))
        .route(
            "/api",
            get(|h: HeaderMap| async move { super::discovery::core(&h) }),
        )
        .route(
            "/api/",
            get(|h: HeaderMap| async move { super::discovery::core(&h) }),
        )
        .route(
            "/apis",
            get(|h: HeaderMap| async move { super::discovery::groups(&h) }),
        )
        .route(
            "/apis/",
            get(|h: HeaderMap| async move { super::discovery::groups(&h) }),
        )
        .route("/openapi/v3", get(|| async { super::openapi::root() }))
        .route("/openapi/v3/{*path}", get(openapi_document))
        .route(
            "/openapi/v2",
            get(|h: HeaderMap| async move { super::openapi::v2(&h) }),
        )
        .route("/api/{*rest}", axum::routing::any(dispatch))
        .route("/apis/{*rest}", axum::routing::any(dispatch))
        .fallback(|| async { ApiError::NoSuchPath.into_response() })
        .with_state(api)
}

/// The daemon's metrics, behind the API's auth.
async fn metrics(State(api): State<Arc<KubeApi>>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    api.metrics.clone().respond(accept).await
}

async fn health() -> &'static str {
    "ok"
}

async fn openapi_document(uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_start_matches("/openapi/v3/");
    let params = query(&uri);
    super::openapi::document(path, params.get("hash").map(String::as_str), &headers)
}

fn query(uri: &Uri) -> HashMap<String, String> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

async fn dispatch(State(api): State<Arc<KubeApi>>, request: Request) -> Response {
    match route(api, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn route(api: Arc<KubeApi>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        ["apis", group] => {
            return super::discovery::group(group)
                .map(|g| axum::Json(g).into_response())
                .ok_or(ApiError::NoSuchPath);
        }
        _ => return Err(ApiError::NoSuchPath),
    };
    if rest.is_empty() {
        return super::discovery::resource_list(group, version)
            .map(|list| axum::Json(list).into_response())
            .ok_or(ApiError::NoSuchPath);
    }
    let params = query(&parts.uri);
    if group == "authorization.k8s.io" && version == "v1" {
        let body = read_body(body).await?;
        return super::access::review(&parts.method, rest, &parts.headers, &body);
    }
    if group == "autoscaling" && version == "v1" {
        let body = read_body(body).await?;
        return super::autoscaling_v1::serve(api, parts.method, rest, params, parts.headers, body)
            .await;
    }
    let target = super::rest::target(group, version, rest)?;
    // The subresources that upgrade the connection, before any body is read.
    if let Some(streaming @ ("exec" | "attach" | "portforward")) = target.subresource.as_deref() {
        let (namespace, name) = (
            target.namespace.clone().unwrap_or_default(),
            target.name.clone().unwrap_or_default(),
        );
        return match streaming {
            "exec" => super::exec::serve(api, parts, namespace, name).await,
            "attach" => super::attach::serve(api, parts, namespace, name).await,
            _ => super::portforward::serve(api, parts, namespace, name).await,
        };
    }
    let body = read_body(body).await?;
    super::rest::serve(api, parts.method, target, params, parts.headers, body).await
}

/// The body, or 413 past [`super::rest::MAX_BODY`].
async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, super::rest::MAX_BODY);
    match http_body_util::BodyExt::collect(limited).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge {
            limit: super::rest::MAX_BODY,
        }),
        Err(e) => Err(ApiError::BadRequest(format!(
            "reading the request body: {e}"
        ))),
    }
}

/// Requires `Authorization: Bearer <token>` on everything but the health
/// checks and `/version`, which kube-apiserver also shows anyone.
pub fn with_token(router: Router, token: Arc<str>) -> Router {
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                let public = matches!(
                    request.uri().path(),
                    "/healthz" | "/livez" | "/readyz" | "/version"
                ) && request.method() == Method::GET;
                let presented = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim);
                match presented {
                    Some(p) if super::pki::same_secret(p.as_bytes(), token.as_bytes()) => {
                        next.run(request).await
                    }
                    _ if public => next.run(request).await,
                    _ => ApiError::Unauthorized.into_response(),
                }
            }
        },
    ))
}

/// Serves `router` over TLS on `listener` until `shutdown`, then lets open
/// requests finish (watches end with the shutdown token).
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("API: accepting a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // A client that never finishes its handshake holds nothing long.
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(stream),
            )
            .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!("API: TLS handshake with {peer}: {e}");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let connection = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service)
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!("API: connection from {peer}: {e}");
            }
        });
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await;
}
