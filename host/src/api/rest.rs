//! The Kubernetes REST paths: `/api/v1/…` and `/apis/GROUP/VERSION/…`,
//! parsed into a resource, a namespace, a name and a subresource, then
//! served by verb: get, list, watch, create, update, patch, delete and
//! deletecollection, in JSON or as a Table.
//!
//! Objects enter through [`object_in`]: the server-set metadata is dropped
//! and the rest goes through berth's manifest parser, so an object
//! created with kubectl meets exactly the checks `berth apply` makes, and
//! a field berth does not support is a 422 naming its path.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec, ScaleStatus};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, ServiceAccount};
use k8s_openapi::api::events::v1 as events;
use k8s_openapi::api::networking::v1::{IngressClass, IngressClassSpec};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::{Value, json};

use super::KubeApi;
use super::resources::{self, Resource, Source};
use super::selector::{FieldSelector, LabelSelector};
use super::server::served;
use super::status::{ApiError, Cause};
use super::table::{self, Include};
use crate::spec::{Kind, Object, Status, status};
use crate::state::Store;

/// The largest request body taken, as kube-apiserver's limit: more is 413.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// What a path names.
#[derive(Debug, Clone)]
pub struct Target {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses the segments after `/api/v1` or `/apis/GROUP/VERSION`.
pub fn target(group: &str, version: &str, segments: &[&str]) -> Result<Target, ApiError> {
    let find = |plural: &str| resources::find(group, version, plural).ok_or(ApiError::NoSuchPath);
    let (resource, namespace, rest) = match segments {
        ["namespaces", ns, plural, rest @ ..]
            if group.is_empty()
                && resources::find(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            (find(plural)?, Some((*ns).to_owned()), rest)
        }
        ["namespaces", ns, plural, rest @ ..] if !group.is_empty() => {
            let r = find(plural)?;
            if !r.namespaced {
                return Err(ApiError::NoSuchPath);
            }
            (r, Some((*ns).to_owned()), rest)
        }
        [plural, rest @ ..] => (find(plural)?, None, rest),
        [] => return Err(ApiError::NoSuchPath),
    };
    let (name, subresource) = match rest {
        [] => (None, None),
        [name] => (Some((*name).to_owned()), None),
        [name, sub] => (Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return Err(ApiError::NoSuchPath),
    };
    if let Some(sub) = &subresource
        && !resource.subresources.iter().any(|(s, _, _)| s == sub)
    {
        return Err(ApiError::NoSuchPath);
    }
    if !resource.namespaced && namespace.is_some() {
        return Err(ApiError::NoSuchPath);
    }
    Ok(Target {
        resource,
        namespace,
        name,
        subresource,
    })
}

/// The request's query, decoded.
pub type Params = HashMap<String, String>;

/// A boolean query parameter, read as Go's `strconv.ParseBool` reads it
/// (the Python client sends `watch=True`).
pub fn flag(params: &Params, name: &str) -> bool {
    params.get(name).is_some_and(|v| truthy(v))
}

/// Whether Go's `strconv.ParseBool` reads `value` as true.
pub fn truthy(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept.split(',').any(|choice| {
                let params: Vec<&str> = choice.split(';').map(str::trim).collect();
                params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
            })
        })
}

fn dry_run(params: &Params) -> Result<bool, ApiError> {
    match params.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "unsupported dryRun value {other:?}: only All is"
        ))),
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    (code, axum::Json(value)).into_response()
}

/// Runs store work on the blocking pool: SQLite behind the mutex the
/// control loop holds while it reconciles.
async fn with_store<T: Send + 'static>(
    api: &Arc<KubeApi>,
    work: impl FnOnce(&mut Store) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let api = api.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = api.state.store.lock();
        work(&mut store)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("a store task failed: {e}")))?
}

/// Serves one request on a resource path.
pub async fn serve(
    api: Arc<KubeApi>,
    method: Method,
    target: Target,
    params: Params,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    let table = wants_table(&headers);
    let include = Include::parse(params.get("includeObject").map(String::as_str));
    let r = target.resource;
    match (&method, &target.name, target.subresource.as_deref()) {
        (&Method::GET, None, None) => {
            let watching = flag(&params, "watch");
            if watching {
                return super::watch::serve(api, target, params, table.then_some(include)).await;
            }
            let list = list(&api, &target, &params).await?;
            Ok(if table {
                json_response(
                    StatusCode::OK,
                    &table::table(
                        r.kind,
                        &list.items,
                        include,
                        &list.resource_version.to_string(),
                        list.continue_token.as_deref(),
                    ),
                )
            } else {
                let mut metadata = json!({"resourceVersion": list.resource_version.to_string()});
                if let Some(token) = &list.continue_token {
                    metadata["continue"] = token.clone().into();
                }
                json_response(
                    StatusCode::OK,
                    &json!({
                        "kind": format!("{}List", r.kind),
                        "apiVersion": r.api_version(),
                        "metadata": metadata,
                        "items": list.items,
                    }),
                )
            })
        }
        (&Method::GET, Some(name), None | Some("status")) => {
            let object = get(&api, &target, name).await?;
            Ok(if table {
                let rv = object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                json_response(
                    StatusCode::OK,
                    &table::table(r.kind, &[object], include, &rv, None),
                )
            } else {
                json_response(StatusCode::OK, &object)
            })
        }
        (&Method::GET, Some(name), Some("log")) => {
            super::logs::serve(
                api,
                target.namespace.unwrap_or_default(),
                name.clone(),
                params,
            )
            .await
        }
        (&Method::GET, Some(name), Some("scale")) => {
            let object = get(&api, &target, name).await?;
            Ok(json_response(StatusCode::OK, &scale_of(&object)))
        }
        (&Method::POST, None, None) => create(api, target, params, &headers, body).await,
        (&Method::PUT, Some(_), None) => {
            let object = parse_body(&headers, &body)?;
            let manager = field_manager(&params, &headers);
            update(api, target, params, object, Write::Manager(manager)).await
        }
        (&Method::PATCH, Some(_), None | Some("scale") | Some("status")) => {
            patch(api, target, params, &headers, body).await
        }
        (&Method::PUT, Some(name), Some("scale")) => {
            let scale = parse_body(&headers, &body)?;
            let replicas = scale["spec"]["replicas"].clone();
            let mut object = get(&api, &target, name).await?;
            object["spec"]["replicas"] = replicas;
            if let Some(rv) = scale["metadata"]["resourceVersion"].as_str() {
                object["metadata"]["resourceVersion"] = rv.into();
            }
            let target = Target {
                subresource: None,
                ..target
            };
            let manager = field_manager(&params, &headers);
            let response =
                update(api.clone(), target, params, object, Write::Manager(manager)).await?;
            scale_response(response).await
        }
        (&Method::PUT, Some(_), Some("status")) => {
            let object = parse_body(&headers, &body)?;
            update(api, target, params, object, Write::Status).await
        }
        (&Method::DELETE, Some(name), None) => {
            let options = if body.is_empty() {
                Value::Null
            } else {
                parse_body(&headers, &body)?
            };
            delete(api, &target, name.clone(), &params, &options).await
        }
        (&Method::DELETE, None, None) => delete_collection(api, target, params).await,
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// A body as JSON: JSON or YAML as clients send it; protobuf is refused
/// by name.
pub fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/json" | "" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}"))),
        "application/yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::BadRequest("the request body is not UTF-8".into()))?;
            crate::spec::load::check_nesting(text)
                .map_err(|e| ApiError::BadRequest(format!("the request body: {e}")))?;
            yaml_serde::from_str(text).map_err(|e| {
                ApiError::BadRequest(format!("the request body is not valid YAML: {e}"))
            })
        }
        // kubectl's typed clients (create configmap|secret|deployment…,
        // auth can-i) and Helm send Kubernetes protobuf.
        "application/vnd.kubernetes.protobuf" => super::protobuf::decode(body)
            .map_err(|e| ApiError::BadRequest(format!("the protobuf request body: {e}"))),
        _ => Err(ApiError::UnsupportedMediaType {
            accepted: "application/json, application/yaml, application/vnd.kubernetes.protobuf"
                .into(),
        }),
    }
}

pub struct Listed {
    pub items: Vec<Value>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
}

/// Every object of the target's resource (in its namespace, if any), as
/// Kubernetes JSON, with the resourceVersion of the read.
pub fn read_all(
    api: &KubeApi,
    store: &Store,
    resource: &Resource,
    namespace: Option<&str>,
) -> Result<(Vec<Value>, u64), ApiError> {
    let version = store.current_version()?;
    let items = match resource.source {
        Source::Stored(kind) => {
            let mut items: Vec<Value> = store
                .list(kind, namespace)?
                .iter()
                .map(super::view)
                .collect();
            if resource.kind == "Namespace"
                && !items.iter().any(|n| n["metadata"]["name"] == "default")
            {
                items.push(api.default_namespace());
                items.sort_by(|a, b| {
                    a["metadata"]["name"]
                        .as_str()
                        .cmp(&b["metadata"]["name"].as_str())
                });
            }
            items
        }
        Source::Events => store
            .event_log(namespace)?
            .iter()
            .map(|logged| event_object(resource, logged))
            .collect(),
        Source::Nodes => api.nodes.iter().map(|n| api.node_object(n)).collect(),
        Source::ServiceAccounts => {
            let mut namespaces: Vec<String> = store
                .list(Kind::Namespace, None)?
                .iter()
                .map(|r| r.object.metadata().name.clone())
                .collect();
            if !namespaces.iter().any(|n| n == "default") {
                namespaces.push("default".into());
            }
            namespaces.sort();
            namespaces
                .into_iter()
                .filter(|ns| namespace.is_none_or(|want| want == ns))
                .map(|ns| {
                    served(ServiceAccount {
                        metadata: api.made_up_metadata(
                            "default",
                            Some(&ns),
                            format!("berth-sa-{ns}"),
                        ),
                        automount_service_account_token: Some(false),
                        ..ServiceAccount::default()
                    })
                })
                .collect()
        }
        Source::PodMetrics => super::usage::pod_metrics(api, store, namespace)?,
        // Converted from v2 before a request gets here.
        Source::AutoscalingV1 => return Err(ApiError::NoSuchPath),
        Source::NodeMetrics => super::usage::node_metrics(api, store)?,
        Source::Endpoints => super::endpoints::endpoints(store, namespace)?,
        Source::EndpointSlices => super::endpoints::endpoint_slices(store, namespace)?,
        Source::RuntimeClasses => ["linux", "wasm"]
            .iter()
            .map(|class| {
                served(RuntimeClass {
                    metadata: api.made_up_metadata(
                        class,
                        None,
                        format!("berth-runtimeclass-{class}"),
                    ),
                    handler: (*class).to_owned(),
                    ..RuntimeClass::default()
                })
            })
            .collect(),
        Source::IngressClasses => {
            let class = crate::spec::objects::INGRESS_CLASS;
            let mut metadata =
                api.made_up_metadata(class, None, format!("berth-ingressclass-{class}"));
            // The default class: an Ingress naming none is berth's.
            metadata.annotations = Some(
                [(
                    "ingressclass.kubernetes.io/is-default-class".to_owned(),
                    "true".to_owned(),
                )]
                .into(),
            );
            vec![served(IngressClass {
                metadata,
                spec: Some(IngressClassSpec {
                    controller: Some("berth.dev/ingress".into()),
                    ..IngressClassSpec::default()
                }),
            })]
        }
        Source::StorageClasses => {
            let class = crate::spec::objects::LOCAL_PATH;
            let mut metadata =
                api.made_up_metadata(class, None, format!("berth-storageclass-{class}"));
            // The default class: a claim naming none is provisioned here.
            metadata.annotations = Some(
                [(
                    "storageclass.kubernetes.io/is-default-class".to_owned(),
                    "true".to_owned(),
                )]
                .into(),
            );
            vec![served(StorageClass {
                metadata,
                provisioner: crate::spec::objects::LOCAL_PATH_PROVISIONER.into(),
                reclaim_policy: Some("Delete".into()),
                volume_binding_mode: Some("Immediate".into()),
                allow_volume_expansion: Some(false),
                ..StorageClass::default()
            })]
        }
    };
    Ok((items, version))
}

/// A stored event as a core/v1 or events.k8s.io/v1 Event.
pub fn event_object(resource: &Resource, logged: &crate::state::LoggedEvent) -> Value {
    let (id, e) = (logged.id, &logged.event);
    let regarding = ObjectReference {
        api_version: Some(
            Kind::parse(&e.kind)
                .map_or("v1", Kind::api_version)
                .to_owned(),
        ),
        kind: Some(e.kind.clone()),
        namespace: Some(e.namespace.clone()),
        name: Some(e.name.clone()),
        // kubectl describe finds an object's events by its uid too.
        uid: logged.uid.clone(),
        ..ObjectReference::default()
    };
    let metadata = ObjectMeta {
        name: Some(format!("{}.{id:016x}", e.name)),
        namespace: Some(e.namespace.clone()),
        uid: Some(format!("berth-event-{id}")),
        resource_version: Some(logged.resource_version.to_string()),
        creation_timestamp: status::time(&e.time),
        ..ObjectMeta::default()
    };
    if resource.group == "events.k8s.io" {
        events_v1_event(metadata, regarding, e)
    } else {
        core_v1_event(metadata, regarding, e)
    }
}

/// The events.k8s.io/v1 form of a stored event.
fn events_v1_event(
    metadata: ObjectMeta,
    regarding: ObjectReference,
    e: &crate::state::Event,
) -> Value {
    let mut event = served(events::Event {
        metadata,
        deprecated_first_timestamp: status::time(&e.time),
        deprecated_last_timestamp: status::time(&e.time),
        deprecated_count: Some(1),
        reporting_controller: Some("berth".into()),
        reporting_instance: Some("berth".into()),
        action: Some(e.reason.clone()),
        reason: Some(e.reason.clone()),
        regarding: Some(regarding),
        note: Some(e.message.clone()),
        type_: Some(e.kind_of_event.clone()),
        ..events::Event::default()
    });
    // berth records events the core/v1 way, without a microsecond
    // eventTime. kube-apiserver serves such an event with `eventTime:
    // null`, the field being required in this group; k8s-openapi leaves a
    // None out, so put the null back.
    event["eventTime"] = Value::Null;
    event
}

/// The core/v1 form of a stored event, which `kubectl describe` reads.
fn core_v1_event(
    metadata: ObjectMeta,
    involved: ObjectReference,
    e: &crate::state::Event,
) -> Value {
    served(Event {
        metadata,
        involved_object: involved,
        reason: Some(e.reason.clone()),
        message: Some(e.message.clone()),
        source: Some(EventSource {
            component: Some("berth".into()),
            ..EventSource::default()
        }),
        first_timestamp: status::time(&e.time),
        last_timestamp: status::time(&e.time),
        count: Some(1),
        type_: Some(e.kind_of_event.clone()),
        reporting_component: Some("berth".into()),
        reporting_instance: Some("berth".into()),
        ..Event::default()
    })
}

/// The selectors of a list or watch.
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn of(resource: &Resource, params: &Params) -> Result<Selectors, ApiError> {
        let labels = LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))
            .map_err(ApiError::BadRequest)?;
        let fields = FieldSelector::parse(
            resource.kind,
            params.get("fieldSelector").map_or("", String::as_str),
        )
        .map_err(ApiError::BadRequest)?;
        Ok(Selectors { labels, fields })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches_object(object) && self.fields.matches(object)
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

/// A continue token: where the next page starts, and the list's version.
fn encode_continue(version: u64, after: &Value) -> String {
    use base64::Engine as _;
    let key = json!({
        "rv": version,
        "ns": after["metadata"]["namespace"],
        "name": after["metadata"]["name"],
    });
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.to_string())
}

fn decode_continue(token: &str) -> Result<(String, String), ApiError> {
    use base64::Engine as _;
    let bad = || ApiError::BadRequest(format!("invalid continue token {token:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let key: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok((
        key["ns"].as_str().unwrap_or("").to_owned(),
        key["name"].as_str().ok_or_else(bad)?.to_owned(),
    ))
}

async fn list(api: &Arc<KubeApi>, target: &Target, params: &Params) -> Result<Listed, ApiError> {
    let selectors = Selectors::of(target.resource, params)?;
    let limit: Option<usize> = match params.get("limit").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(n) => Some(
            n.parse()
                .map_err(|_| ApiError::BadRequest(format!("limit {n:?} is not a number")))?,
        ),
    };
    let after = params
        .get("continue")
        .filter(|c| !c.is_empty())
        .map(|c| decode_continue(c))
        .transpose()?;
    let resource = target.resource;
    let namespace = target.namespace.clone();
    // A page of stored objects with nothing to filter is read as a page
    // (kubectl pages by 500: reading all for each page is quadratic).
    if let Some(limit) = limit
        && resource.writable()
        && resource.kind != "Namespace"
        && selectors.is_empty()
    {
        let (records, version) = with_store(api, move |store| {
            let version = store.current_version()?;
            let after = after
                .as_ref()
                .map(|(ns, name)| (ns.as_str(), name.as_str()));
            let records =
                store.list_page(stored(resource)?, namespace.as_deref(), after, limit + 1)?;
            Ok((records, version))
        })
        .await?;
        let mut items: Vec<Value> = records.iter().map(super::view).collect();
        let mut continue_token = None;
        if items.len() > limit {
            items.truncate(limit);
            continue_token = items.last().map(|last| encode_continue(version, last));
        }
        return Ok(Listed {
            items,
            resource_version: version,
            continue_token,
        });
    }
    let reader = api.clone();
    let (items, version) = with_store(api, move |store| {
        read_all(&reader, store, resource, namespace.as_deref())
    })
    .await?;
    let mut items: Vec<Value> = items
        .into_iter()
        .filter(|o| selectors.matches(o))
        .filter(|o| {
            after.as_ref().is_none_or(|(ns, name)| {
                let key = (
                    o["metadata"]["namespace"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap_or(""),
                );
                key > (ns.as_str(), name.as_str())
            })
        })
        .collect();
    let mut continue_token = None;
    if let Some(limit) = limit
        && items.len() > limit
    {
        items.truncate(limit);
        continue_token = items.last().map(|last| encode_continue(version, last));
    }
    Ok(Listed {
        items,
        resource_version: version,
        continue_token,
    })
}

fn not_found(resource: &Resource, name: &str) -> ApiError {
    ApiError::NotFound {
        group: resource.group.to_owned(),
        resource: resource.plural.to_owned(),
        name: name.to_owned(),
    }
}

/// One object, as Kubernetes JSON.
/// Pod `name` in `namespace` as the API serves it, for the subresources
/// that stream (exec, attach, port-forward).
pub async fn get_pod(api: &Arc<KubeApi>, namespace: &str, name: &str) -> Result<Value, ApiError> {
    let target = Target {
        resource: resources::find("", "v1", "pods").expect("pods are served"),
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        subresource: None,
    };
    get(api, &target, name).await
}

pub async fn get(api: &Arc<KubeApi>, target: &Target, name: &str) -> Result<Value, ApiError> {
    let resource = target.resource;
    let namespace = target.namespace.clone();
    let name_owned = name.to_owned();
    let reader = api.clone();
    let found = with_store(api, move |store| {
        if let Some(kind) = resource.stored() {
            let ns = namespace.as_deref().unwrap_or("");
            let found = store.get(kind, ns, &name_owned)?.map(|r| super::view(&r));
            // `default` always exists, stored or not.
            if found.is_none() && resource.kind == "Namespace" && name_owned == "default" {
                return Ok(Some(reader.default_namespace()));
            }
            return Ok(found);
        }
        let (items, _) = read_all(&reader, store, resource, namespace.as_deref())?;
        Ok(items
            .into_iter()
            .find(|o| o["metadata"]["name"] == name_owned.as_str()))
    })
    .await?;
    found.ok_or_else(|| not_found(resource, name))
}

/// The characters kube-apiserver draws a generateName suffix from.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// An object from a client, ready for the store: the path's namespace, no
/// server-set metadata, no status, and berth's checks passed.
pub fn object_in(
    resource: &Resource,
    namespace: Option<&str>,
    mut value: Value,
) -> Result<Object, ApiError> {
    let Some(map) = value.as_object_mut() else {
        return Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        ));
    };
    let api_version = resource.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None => {
            map.insert("apiVersion".into(), api_version.clone().into());
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None => {
            map.insert("kind".into(), resource.kind.into());
        }
        Some(k) if k == resource.kind => {}
        Some(k) => {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                resource.kind
            )));
        }
    }
    map.remove("status");
    // A Namespace's only spec is its finalizers, which berth does not keep:
    // the empty one clients send (and Kubernetes' default) mean nothing.
    if resource.kind == "Namespace"
        && map.get("spec").is_some_and(|spec| {
            spec.as_object().is_some_and(|s| {
                s.iter().all(|(k, v)| {
                    k == "finalizers"
                        && v.as_array()
                            .is_some_and(|f| f.iter().all(|f| f == "kubernetes"))
                })
            })
        })
    {
        map.remove("spec");
    }
    let metadata = map
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("metadata must be an object".into()))?;
    for server_set in [
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "managedFields",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        metadata.remove(server_set);
    }
    for maybe_empty in ["labels", "annotations", "finalizers", "ownerReferences"] {
        if metadata
            .get(maybe_empty)
            .is_some_and(|v| v.is_null() || v.as_array().is_some_and(Vec::is_empty))
        {
            metadata.remove(maybe_empty);
        }
    }
    if let Some(prefix) = metadata.remove("generateName")
        && metadata
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        let prefix = prefix.as_str().unwrap_or("").to_owned();
        let suffix: String = (0..5)
            .map(|_| NAME_ALPHABET[fastrand::usize(..NAME_ALPHABET.len())] as char)
            .collect();
        metadata.insert("name".into(), format!("{prefix}{suffix}").into());
    }
    let name = metadata
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if name.is_empty() {
        return Err(invalid(
            resource,
            &name,
            "metadata.name",
            "name or generateName is required",
        ));
    }
    // The finalizers berth itself sets ride along on updates (the store
    // keeps its own); any other would wait for a controller berth does not
    // run, so the object could never go.
    if let Some(finalizers) = metadata.remove("finalizers") {
        let foreign: Vec<&str> = finalizers
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|f| *f != crate::spec::objects::FOREGROUND_DELETION && *f != "orphan")
            .collect();
        if !foreign.is_empty() || !finalizers.is_array() {
            return Err(invalid(
                resource,
                &name,
                "metadata.finalizers",
                &format!(
                    "berth runs no controller that would remove {}: the object could never be deleted",
                    foreign.join(", ")
                ),
            ));
        }
    }
    if resource.namespaced {
        let wanted = namespace.unwrap_or("default");
        match metadata.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != wanted => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
            _ => {
                metadata.insert("namespace".into(), wanted.into());
            }
        }
    } else {
        metadata.remove("namespace");
    }
    // Clients serialise empty timestamps in pod templates as null.
    strip_null_timestamps(&mut value, 0);
    let text = value.to_string();
    let mut loaded = crate::spec::parse_str(&text, "the request").map_err(|e| {
        let field = e
            .path
            .trim_end_matches(": ")
            .trim_start_matches('.')
            .to_owned();
        invalid(resource, &name, &field, &e.message)
    })?;
    match loaded.pop() {
        Some(l) if loaded.is_empty() => Ok(l.object),
        _ => Err(ApiError::BadRequest("expected exactly one object".into())),
    }
}

fn invalid(resource: &Resource, name: &str, field: &str, message: &str) -> ApiError {
    ApiError::Invalid {
        group: resource.group.to_owned(),
        kind: resource.kind.to_owned(),
        name: name.to_owned(),
        causes: vec![Cause {
            kind: "FieldValueInvalid",
            message: message.to_owned(),
            field: field.to_owned(),
        }],
    }
}

fn strip_null_timestamps(value: &mut Value, depth: usize) {
    if depth > 64 {
        return;
    }
    match value {
        Value::Object(map) => {
            if map.get("creationTimestamp").is_some_and(Value::is_null) {
                map.remove("creationTimestamp");
            }
            for v in map.values_mut() {
                strip_null_timestamps(v, depth + 1);
            }
        }
        Value::Array(items) => {
            for v in items {
                strip_null_timestamps(v, depth + 1);
            }
        }
        _ => {}
    }
}

fn check_writable(resource: &Resource) -> Result<(), ApiError> {
    if resource.writable() {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed)
    }
}

/// The stored record's view after a dry run: the object as it would be.
fn dry_view(object: &Object, existing: Option<&crate::state::Record>) -> Value {
    let record = crate::state::Record {
        uid: existing.map_or_else(String::new, |r| r.uid.clone()),
        resource_version: existing.map_or(0, |r| r.resource_version),
        generation: existing.map_or(1, |r| r.generation),
        created: existing.map_or_else(
            || humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            |r| r.created.clone(),
        ),
        object: object.clone(),
        status: existing.map_or_else(|| Status::empty(object.kind()), |r| r.status.clone()),
    };
    super::view(&record)
}

async fn create(
    api: Arc<KubeApi>,
    target: Target,
    params: Params,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    let resource = target.resource;
    check_writable(resource)?;
    let mut value = parse_body(headers, &body)?;
    let warnings = unknown_fields(resource, &params, &mut value)?;
    let mut object = object_in(resource, target.namespace.as_deref(), value)?;
    track(
        resource,
        None,
        &mut object,
        &field_manager(&params, headers),
    );
    let dry = dry_run(&params)?;
    let created = store_new(&api, resource, object, dry).await?;
    Ok(with_warnings(
        json_response(StatusCode::CREATED, &created),
        &warnings,
    ))
}

/// Stores a new object (or with `dry`, checks it would be stored): its
/// view, or AlreadyExists.
async fn store_new(
    api: &Arc<KubeApi>,
    resource: &'static Resource,
    object: Object,
    dry: bool,
) -> Result<Value, ApiError> {
    let notify = api.clone();
    let quota = api.pod_quota;
    let created = with_store(api, move |store| {
        let ns = object.namespace().unwrap_or("").to_owned();
        let name = object.metadata().name.clone();
        if store.get(stored(resource)?, &ns, &name)?.is_some() {
            return Err(ApiError::AlreadyExists {
                group: resource.group.to_owned(),
                resource: resource.plural.to_owned(),
                name,
            });
        }
        if resource.kind == "Pod" {
            let used = store.count_active_pods(&ns)?;
            if used >= quota {
                return Err(ApiError::Forbidden(format!(
                    "pods \"{name}\" is forbidden: exceeded quota: namespace {ns} may hold \
                     {quota} pods and holds {used} (see berth daemon --pod-quota)"
                )));
            }
        }
        if dry {
            store.apply_dry(std::slice::from_ref(&object))?;
            return Ok(dry_view(&object, None));
        }
        store.apply(std::slice::from_ref(&object))?;
        let record = store
            .get(stored(resource)?, &ns, &name)?
            .ok_or_else(|| ApiError::Internal(format!("{name} vanished after its create")))?;
        Ok(super::view(&record))
    })
    .await?;
    if !dry {
        notify.state.changed.notify_one();
    }
    Ok(created)
}

/// How a write is recorded in managedFields.
#[derive(Debug)]
pub enum Write {
    /// An ordinary write by this field manager (operation Update).
    Manager(String),
    /// A server-side apply, whose managedFields are already computed.
    Applied,
    /// A status write, which berth does not track.
    Status,
}

/// The field manager of a write: `fieldManager`, or as kube-apiserver
/// defaults it, the client's User-Agent up to its first `/`.
pub fn field_manager(params: &Params, headers: &HeaderMap) -> String {
    if let Some(manager) = params.get("fieldManager").filter(|m| !m.is_empty()) {
        return manager.clone();
    }
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|ua| !ua.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Records in `object`'s managedFields what `manager` set, given the object
/// as it was (`None` for a create).
fn track(resource: &Resource, old: Option<&Value>, object: &mut Object, manager: &str) {
    let mut new = super::shown(object).to_value();
    new["apiVersion"] = resource.api_version().into();
    new["kind"] = resource.kind.into();
    let tracked = super::apply::track_update(
        old,
        &new,
        manager,
        &resource.api_version(),
        &now(),
        super::openapi::schemas(resource),
        &super::openapi::schema_name(resource),
    );
    object.metadata_mut().managed_fields = tracked["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
}

/// `PATCH` with `application/apply-patch+yaml`: server-side apply, which
/// creates the object when it is missing.
async fn server_side_apply(
    api: Arc<KubeApi>,
    target: Target,
    params: Params,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    let manager = params.get("fieldManager").cloned().unwrap_or_default();
    if manager.is_empty() {
        return Err(ApiError::BadRequest(
            "fieldManager is required for apply requests".into(),
        ));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the apply patch is not UTF-8".into()))?;
    crate::spec::load::check_nesting(text)
        .map_err(|e| ApiError::BadRequest(format!("the apply patch: {e}")))?;
    let applied: Value = yaml_serde::from_str(text)
        .map_err(|e| ApiError::BadRequest(format!("the apply patch is not valid YAML: {e}")))?;
    let name = target.name.clone().unwrap_or_default();
    if let Some(body_name) = applied["metadata"]["name"].as_str()
        && body_name != name
    {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    // Applied to the object as it is when written: a write by another (a
    // controller's status, its annotations) between the read and the write
    // means merging again, as kube-apiserver's GuaranteedUpdate does; not a
    // 409 for the client, unless its patch named a resourceVersion.
    let pinned = applied["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|v| !v.is_empty());
    let mut attempts = 0;
    loop {
        attempts += 1;
        match apply_once(&api, &target, &params, &manager, &applied, &name).await {
            Err(ApiError::Conflict { .. } | ApiError::AlreadyExists { .. })
                if !pinned && attempts < APPLY_ATTEMPTS =>
            {
                // Writers that met head on part, each after a while of
                // its own, rather than meet again.
                let pause = fastrand::u64(0..=u64::from(attempts) * 500);
                tokio::time::sleep(std::time::Duration::from_micros(pause)).await;
            }
            done => return done,
        }
    }
}

/// How often a server-side apply is merged again when the object changed
/// under it (kube-apiserver tries until it succeeds; a bound keeps one
/// busy object from holding a request for ever).
const APPLY_ATTEMPTS: u32 = 32;

/// One read, merge and write of a server-side apply.
async fn apply_once(
    api: &Arc<KubeApi>,
    target: &Target,
    params: &Params,
    manager: &str,
    applied: &Value,
    name: &str,
) -> Result<Response, ApiError> {
    let resource = target.resource;
    let live = match get(api, target, name).await {
        Ok(live) => Some(live),
        Err(ApiError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    let now = now();
    let root = super::openapi::schema_name(resource);
    let api_version = resource.api_version();
    let result = super::apply::server_side_apply(&super::apply::ApplyRequest {
        live: live.as_ref(),
        applied,
        manager,
        force: flag(params, "force"),
        schemas: super::openapi::schemas(resource),
        root: &root,
        api_version: &api_version,
        now: &now,
    })
    .map_err(|e| match e {
        super::apply::ApplyError::Conflict { conflicts } => ApiError::ManagerConflict {
            message: super::apply::ApplyError::Conflict {
                conflicts: conflicts.clone(),
            }
            .to_string(),
            causes: conflicts
                .iter()
                .map(|c| Cause {
                    kind: "FieldManagerConflict",
                    message: c.message(),
                    field: c.field.clone(),
                })
                .collect(),
        },
        super::apply::ApplyError::Invalid(message) => ApiError::BadRequest(message),
    })?;
    if live.is_none() {
        let mut result = result;
        let warnings = unknown_fields(resource, params, &mut result)?;
        let fields = result["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut object = object_in(resource, target.namespace.as_deref(), result)?;
        object.metadata_mut().managed_fields = fields;
        let created = store_new(api, resource, object, dry_run(params)?).await?;
        return Ok(with_warnings(
            json_response(StatusCode::CREATED, &created),
            &warnings,
        ));
    }
    // The live object's resourceVersion rides along: a write between the
    // read and this one is a conflict (merged again above), not lost; so is
    // a deletion between them (the next try creates it).
    update(
        api.clone(),
        target.clone(),
        params.clone(),
        result,
        Write::Applied,
    )
    .await
    .map_err(|e| match e {
        ApiError::NotFound { .. } => ApiError::Conflict {
            group: resource.group.to_owned(),
            resource: resource.qualified(),
            name: name.to_owned(),
            message: "the object was deleted while it was applied to".into(),
        },
        e => e,
    })
}

/// Replaces an object (or with `status`, its status) from a whole
/// Kubernetes object; a resourceVersion in it must be the stored one.
pub async fn update(
    api: Arc<KubeApi>,
    target: Target,
    params: Params,
    value: Value,
    write: Write,
) -> Result<Response, ApiError> {
    let status_only = matches!(write, Write::Status);
    let resource = target.resource;
    check_writable(resource)?;
    let name = target.name.clone().unwrap_or_default();
    if let Some(body_name) = value["metadata"]["name"].as_str()
        && body_name != name
    {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let precondition: Option<u64> = match value["metadata"]["resourceVersion"].as_str() {
        None | Some("") => None,
        Some(rv) => Some(rv.parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "resourceVersion {rv:?} is not one this server gave"
            ))
        })?),
    };
    let dry = dry_run(&params)?;
    let new_status = match (status_only, value.get("status")) {
        (true, Some(status)) => Status::from_value(stored(resource)?, status.clone())
            .map_err(|e| ApiError::BadRequest(format!("status: {e}")))?,
        (true, None) => Status::empty(stored(resource)?),
        (false, _) => Status::None,
    };
    let mut warnings = Vec::new();
    let object = if status_only {
        None
    } else {
        let mut value = value;
        warnings = unknown_fields(resource, &params, &mut value)?;
        if let Some(meta) = value["metadata"].as_object_mut() {
            meta.insert("name".into(), name.clone().into());
        }
        let applied_fields = value["metadata"]["managedFields"].as_array().cloned();
        let mut object = object_in(resource, target.namespace.as_deref(), value)?;
        if let (Write::Applied, Some(fields)) = (&write, applied_fields) {
            object.metadata_mut().managed_fields = fields;
        }
        Some(object)
    };
    let namespace = target.namespace.clone().unwrap_or_default();
    let notify = api.clone();
    let (updated, changed) = with_store(&api, move |store| {
        let Some(existing) = store.get(stored(resource)?, &namespace, &name)? else {
            return Err(not_found(resource, &name));
        };
        if let Some(rv) = precondition
            && rv != existing.resource_version
        {
            return Err(ApiError::Conflict {
                group: resource.group.to_owned(),
                resource: resource.qualified(),
                name,
                message: "the object has been modified; please apply your changes to the latest version and try again".into(),
            });
        }
        if status_only {
            if dry {
                let mut record = existing;
                record.status = new_status;
                return Ok((super::view(&record), false));
            }
            store.set_status(stored(resource)?, &namespace, &name, &new_status)?;
        } else {
            let mut object = object.expect("parsed above");
            crate::spec::load::check_update(&existing.object, &mut object)
                .map_err(|(field, message)| invalid(resource, &name, &field, &message))?;
            if let Write::Manager(manager) = &write {
                track(resource, Some(&super::view(&existing)), &mut object, manager);
            }
            if dry {
                store.apply_dry(std::slice::from_ref(&object))?;
                return Ok((dry_view(&object, Some(&existing)), false));
            }
            store.apply(std::slice::from_ref(&object))?;
        }
        let record = store
            .get(stored(resource)?, &namespace, &name)?
            .ok_or_else(|| not_found(resource, &name))?;
        let changed = record.resource_version != existing.resource_version;
        Ok((super::view(&record), changed))
    })
    .await?;
    if changed {
        notify.state.changed.notify_one();
    }
    Ok(with_warnings(
        json_response(StatusCode::OK, &updated),
        &warnings,
    ))
}

/// Applies `fieldValidation` to the fields of `value` Kubernetes' schema
/// does not know: `Strict` refuses them (400, as kube-apiserver's strict
/// decoding does), `Warn` (the default) and `Ignore` drop them, `Warn`
/// returning a warning for each. Fields Kubernetes knows but berth does not
/// support are left for berth's own check, which refuses them whatever the
/// mode.
fn unknown_fields(
    resource: &Resource,
    params: &Params,
    value: &mut Value,
) -> Result<Vec<String>, ApiError> {
    let mode = params.get("fieldValidation").map_or("Warn", String::as_str);
    if !matches!(mode, "Strict" | "Warn" | "Ignore") {
        return Err(ApiError::BadRequest(format!(
            "fieldValidation {mode:?} is not one of Ignore, Warn, Strict"
        )));
    }
    let schemas = super::schema::Schemas::new(super::openapi::schemas(resource));
    let unknown = schemas.prune_unknown(&super::openapi::schema_name(resource), value);
    if unknown.is_empty() || mode == "Ignore" {
        return Ok(Vec::new());
    }
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if mode == "Strict" {
        return Err(ApiError::BadRequest(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
            fields.join(", "),
            kind = resource.kind,
            version = resource.version,
        )));
    }
    Ok(fields)
}

/// `response` with a `Warning` header (code 299, as kube-apiserver sends
/// them) per warning; kubectl prints each as `Warning: …`.
fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        let quoted = serde_json::to_string(warning).unwrap_or_default();
        if let Ok(value) = HeaderValue::from_str(&format!("299 - {quoted}")) {
            response.headers_mut().append("warning", value);
        }
    }
    response
}

async fn patch(
    api: Arc<KubeApi>,
    target: Target,
    params: Params,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    let resource = target.resource;
    check_writable(resource)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.split(';').next().map(str::trim) == Some("application/apply-patch+yaml") {
        if target.subresource.is_some() {
            return Err(ApiError::MethodNotAllowed);
        }
        return server_side_apply(api, target, params, body).await;
    }
    if flag(&params, "force") {
        return Err(ApiError::BadRequest(
            "force is only allowed for apply patches".into(),
        ));
    }
    let manager = field_manager(&params, headers);
    let Some(kind) = super::patch::PatchType::from_content_type(content_type) else {
        return Err(ApiError::UnsupportedMediaType {
            accepted: "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml".into(),
        });
    };
    let name = target.name.clone().unwrap_or_default();
    let current = get(&api, &target, &name).await?;
    let subresource = target.subresource.clone();
    let (original, schema) = match subresource.as_deref() {
        Some("scale") => (
            scale_of(&current),
            "io.k8s.api.autoscaling.v1.Scale".to_owned(),
        ),
        _ => (current.clone(), super::openapi::schema_name(resource)),
    };
    let schemas = super::openapi::schemas(resource);
    let patched = super::patch::apply_patch(kind, &original, &body, schemas, &schema)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    match subresource.as_deref() {
        Some("scale") => {
            let mut object = current;
            object["spec"]["replicas"] = patched["spec"]["replicas"].clone();
            let target = Target {
                subresource: None,
                ..target
            };
            let response = update(api, target, params, object, Write::Manager(manager)).await?;
            scale_response(response).await
        }
        Some("status") => update(api, target, params, patched, Write::Status).await,
        _ => update(api, target, params, patched, Write::Manager(manager)).await,
    }
}

/// The autoscaling/v1 Scale of a Deployment or ReplicaSet.
fn scale_of(object: &Value) -> Value {
    let meta = ObjectMeta::deserialize(&object["metadata"]).unwrap_or_default();
    served(Scale {
        // Only what names and versions the scaled object: a Scale carries
        // none of its labels or annotations.
        metadata: ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            resource_version: meta.resource_version,
            creation_timestamp: meta.creation_timestamp,
            ..ObjectMeta::default()
        },
        spec: Some(ScaleSpec {
            replicas: Some(replicas(&object["spec"]["replicas"]).unwrap_or(1)),
        }),
        status: Some(ScaleStatus {
            replicas: replicas(&object["status"]["replicas"]).unwrap_or(0),
            selector: Some(super::table::selector_text(&object["spec"]["selector"])),
        }),
    })
}

/// A replica count as served, if it is one.
fn replicas(count: &Value) -> Option<i32> {
    count.as_u64().and_then(|n| i32::try_from(n).ok())
}

/// An update's answer turned into the Scale it leaves.
async fn scale_response(response: Response) -> Result<Response, ApiError> {
    let code = response.status();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .to_bytes();
    let object: Value =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(code, &scale_of(&object)))
}

async fn delete(
    api: Arc<KubeApi>,
    target: &Target,
    name: String,
    params: &Params,
    options: &Value,
) -> Result<Response, ApiError> {
    let resource = target.resource;
    check_writable(resource)?;
    let dry = dry_run(params)? || options["dryRun"].as_array().is_some_and(|d| !d.is_empty());
    let policy = params
        .get("propagationPolicy")
        .cloned()
        .or_else(|| options["propagationPolicy"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "Background".into());
    if !matches!(policy.as_str(), "Background" | "Foreground" | "Orphan") {
        return Err(ApiError::BadRequest(format!(
            "propagationPolicy {policy:?} is not one of Background, Foreground, Orphan"
        )));
    }
    let grace = match params.get("gracePeriodSeconds").cloned().or_else(|| {
        options["gracePeriodSeconds"]
            .as_i64()
            .map(|g| g.to_string())
    }) {
        None => None,
        Some(text) => match text.parse::<i64>() {
            Ok(g) if g >= 0 => Some(g as u64),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "gracePeriodSeconds {text:?} is not a whole number of seconds, 0 or more"
                )));
            }
        },
    };
    let uid_wanted = options["preconditions"]["uid"].as_str().map(str::to_owned);
    let rv_wanted = options["preconditions"]["resourceVersion"]
        .as_str()
        .map(str::to_owned);
    let namespace = target.namespace.clone().unwrap_or_default();
    let notify = api.clone();
    // The object as deleted, and whether its deletion has only begun.
    let (deleted, begun) = with_store(&api, move |store| {
        let Some(existing) = store.get(stored(resource)?, &namespace, &name)? else {
            return Err(not_found(resource, &name));
        };
        let conflict = |what: &str, wanted: &str, has: &str| ApiError::Conflict {
            group: resource.group.to_owned(),
            resource: resource.qualified(),
            name: name.clone(),
            message: format!("Precondition failed: {what} in precondition: {wanted}, {what} in object meta: {has}"),
        };
        if let Some(uid) = &uid_wanted
            && *uid != existing.uid
        {
            return Err(conflict("UID", uid, &existing.uid));
        }
        if let Some(rv) = &rv_wanted
            && *rv != existing.resource_version.to_string()
        {
            return Err(conflict(
                "ResourceVersion",
                rv,
                &existing.resource_version.to_string(),
            ));
        }
        if dry {
            return Ok((existing, false));
        }
        // A running pod stops within its grace period first (Terminating),
        // and the kubelet deletes it once it has; an owner deleted in the
        // foreground waits for its dependents.
        let marked = match &existing.object {
            Object::Pod(pod) => match crate::controller::termination_grace(&existing, grace) {
                None => None,
                Some(grace)
                    if pod
                        .metadata
                        .deletion_grace_period_seconds
                        .is_some_and(|g| g <= grace) =>
                {
                    Some(existing.clone())
                }
                Some(grace) => {
                    store.mark_deleting(Kind::Pod, &namespace, &name, &existing.uid, grace, &[])?
                }
            },
            // A claim a pod still uses stays, Terminating, until none does
            // (Kubernetes' pvc-protection): its data is not pulled from
            // under a running pod.
            Object::PersistentVolumeClaim(_)
                if crate::controller::claim_in_use(store, &namespace, &name)? =>
            {
                store.mark_deleting(
                    Kind::PersistentVolumeClaim,
                    &namespace,
                    &name,
                    &existing.uid,
                    0,
                    &[crate::spec::objects::PVC_PROTECTION],
                )?
            }
            object if policy == "Foreground" && has_dependents(store, &existing)? => {
                store.mark_deleting(
                    object.kind(),
                    &namespace,
                    &name,
                    &existing.uid,
                    0,
                    &[crate::spec::objects::FOREGROUND_DELETION],
                )?
            }
            _ => None,
        };
        if let Some(marked) = marked {
            return Ok((marked, true));
        }
        if policy == "Orphan" {
            orphan_dependents(store, &existing)?;
        }
        let record = store
            .delete_record(stored(resource)?, &namespace, &name)?
            .ok_or_else(|| not_found(resource, &name))?;
        Ok((record, false))
    })
    .await?;
    if !dry {
        notify.state.changed.notify_one();
    }
    // Pods, like kube-apiserver's, answer with the object, as does a
    // deletion that has begun; the rest with a Status.
    if resource.kind == "Pod" || begun {
        return Ok(json_response(StatusCode::OK, &super::view(&deleted)));
    }
    Ok(json_response(
        StatusCode::OK,
        &super::status::success(
            resource.group,
            resource.plural,
            deleted.object.metadata().name.as_str(),
            &deleted.uid,
        ),
    ))
}

/// The kind of the store's objects `resource` serves: the writes and the
/// reads of single objects are only routed for those.
fn stored(resource: &Resource) -> Result<Kind, ApiError> {
    resource.stored().ok_or(ApiError::MethodNotAllowed)
}

/// Whether anything names `owner` as its controller.
fn has_dependents(store: &Store, owner: &crate::state::Record) -> Result<bool, ApiError> {
    let Some(dependents) = owner.object.kind().dependents() else {
        return Ok(false);
    };
    Ok(!store.list_owned(dependents, &owner.uid)?.is_empty())
}

/// Removes `owner` from its dependents' ownerReferences, so the garbage
/// collector leaves them (propagationPolicy Orphan).
fn orphan_dependents(store: &mut Store, owner: &crate::state::Record) -> Result<(), ApiError> {
    let Some(dependents) = owner.object.kind().dependents() else {
        return Ok(());
    };
    let namespace = owner.object.namespace().map(str::to_owned);
    let mut changed = Vec::new();
    for record in store.list(dependents, namespace.as_deref())? {
        let mut object = record.object;
        let refs = &mut object.metadata_mut().owner_references;
        let before = refs.len();
        refs.retain(|r| r.uid != owner.uid);
        if refs.len() != before {
            changed.push(object);
        }
    }
    if !changed.is_empty() {
        store.apply(&changed)?;
    }
    Ok(())
}

async fn delete_collection(
    api: Arc<KubeApi>,
    target: Target,
    params: Params,
) -> Result<Response, ApiError> {
    let resource = target.resource;
    check_writable(resource)?;
    let listed = list(&api, &target, &params).await?;
    let dry = dry_run(&params)?;
    let mut items = Vec::new();
    for object in listed.items {
        let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
        if resource.kind == "Namespace" && name == "default" {
            continue;
        }
        if !dry {
            let item = Target {
                resource,
                namespace: object["metadata"]["namespace"].as_str().map(str::to_owned),
                name: Some(name.clone()),
                subresource: None,
            };
            match delete(api.clone(), &item, name, &params, &Value::Null).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        items.push(object);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", resource.kind),
            "apiVersion": resource.api_version(),
            "metadata": {"resourceVersion": listed.resource_version.to_string()},
            "items": items,
        }),
    ))
}

/// Sets the `Content-Type` of a JSON answer (watch streams and the like).
pub fn content_type(response: &mut Response, value: &'static str) {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
}

/// A streamed body.
pub fn stream_body<S>(stream: S) -> Body
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
{
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deeply_nested_yaml_body_is_refused_before_it_is_parsed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/yaml"),
        );
        let body = format!(
            "data: {{a: {}{}}}\n",
            "[".repeat(50_000),
            "]".repeat(50_000)
        );
        match parse_body(&headers, body.as_bytes()) {
            Err(ApiError::BadRequest(message)) => {
                assert!(message.contains("nested deeper than 100"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn paths_name_resources_namespaces_names_and_subresources() {
        let t = target("", "v1", &["namespaces", "shop", "pods", "web-1", "log"]).unwrap();
        assert_eq!(t.resource.kind, "Pod");
        assert_eq!(t.namespace.as_deref(), Some("shop"));
        assert_eq!(t.name.as_deref(), Some("web-1"));
        assert_eq!(t.subresource.as_deref(), Some("log"));

        let t = target("", "v1", &["namespaces", "shop"]).unwrap();
        assert_eq!(t.resource.kind, "Namespace");
        assert_eq!(t.name.as_deref(), Some("shop"));

        let t = target("", "v1", &["namespaces", "shop", "status"]).unwrap();
        assert_eq!(t.resource.kind, "Namespace");
        assert_eq!(t.subresource.as_deref(), Some("status"));

        let t = target("apps", "v1", &["deployments"]).unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());

        assert!(target("", "v1", &["namespaces", "shop", "widgets"]).is_err());
        assert!(
            target(
                "apps",
                "v1",
                &["namespaces", "shop", "deployments", "x", "exec"]
            )
            .is_err()
        );
        assert!(target("", "v1", &["nodes", "n", "x", "y"]).is_err());
    }

    #[test]
    fn objects_in_lose_server_fields_and_keep_berth_s_checks() {
        let pods = resources::find("", "v1", "pods").unwrap();
        let body = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "uid": "x", "resourceVersion": "9", "creationTimestamp": null},
            "spec": {"containers": [{"name": "c", "image": "hello:1"}]},
            "status": {"phase": "Running"},
        });
        let object = object_in(pods, Some("shop"), body).unwrap();
        assert_eq!(object.namespace(), Some("shop"));

        let wrong_ns = json!({"metadata": {"name": "p", "namespace": "other"},
            "spec": {"containers": [{"name": "c", "image": "hello:1"}]}});
        assert!(matches!(
            object_in(pods, Some("shop"), wrong_ns),
            Err(ApiError::BadRequest(_))
        ));

        let unsupported = json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "hello:1", "tty": true}]}});
        match object_in(pods, Some("shop"), unsupported) {
            Err(ApiError::Invalid { causes, .. }) => {
                assert_eq!(causes[0].field, "spec.containers[0].tty");
                assert!(causes[0].message.contains("tty"), "{}", causes[0].message);
            }
            other => panic!("{other:?}"),
        }

        let generated = json!({"metadata": {"generateName": "job-"},
            "spec": {"containers": [{"name": "c", "image": "hello:1"}]}});
        let object = object_in(pods, None, generated).unwrap();
        assert!(object.metadata().name.starts_with("job-"));
        assert_eq!(object.metadata().name.len(), 9);
    }

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue(5, &json!({"metadata": {"namespace": "a", "name": "b"}}));
        assert_eq!(decode_continue(&token).unwrap(), ("a".into(), "b".into()));
        assert!(decode_continue("!!").is_err());
    }

    fn event(uid: Option<&str>) -> crate::state::LoggedEvent {
        crate::state::LoggedEvent {
            id: 1,
            resource_version: 42,
            uid: uid.map(str::to_owned),
            event: crate::state::Event {
                time: "2024-01-02T03:04:05Z".into(),
                namespace: "default".into(),
                kind: "Pod".into(),
                name: "web-1".into(),
                kind_of_event: "Normal".into(),
                reason: "Scheduled".into(),
                message: "assigned to berth".into(),
                uid: uid.map(str::to_owned),
            },
        }
    }

    #[test]
    fn a_core_event_names_what_it_is_about() {
        let resource = resources::find("", "v1", "events").unwrap();
        let e = event_object(resource, &event(Some("u1")));
        assert_eq!(e["apiVersion"], "v1");
        assert_eq!(e["metadata"]["name"], "web-1.0000000000000001");
        assert_eq!(e["metadata"]["resourceVersion"], "42");
        assert_eq!(e["metadata"]["creationTimestamp"], "2024-01-02T03:04:05Z");
        assert_eq!(
            e["involvedObject"],
            json!({"apiVersion": "v1", "kind": "Pod", "namespace": "default",
                   "name": "web-1", "uid": "u1"})
        );
        assert_eq!(e["source"], json!({"component": "berth"}));
        assert_eq!(e["count"], 1);
    }

    #[test]
    fn an_events_k8s_io_event_keeps_its_required_event_time_as_null() {
        let resource = resources::find("events.k8s.io", "v1", "events").unwrap();
        let e = event_object(resource, &event(None));
        assert_eq!(e["apiVersion"], "events.k8s.io/v1");
        assert_eq!(e.get("eventTime"), Some(&Value::Null));
        assert_eq!(e["deprecatedFirstTimestamp"], "2024-01-02T03:04:05Z");
        assert_eq!(e["regarding"]["name"], "web-1");
        assert_eq!(e["regarding"].get("uid"), None);
        assert_eq!(e["note"], "assigned to berth");
    }

    #[test]
    fn a_scale_carries_the_identity_and_replicas_of_its_deployment() {
        let deployment = json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1",
                         "resourceVersion": "7", "creationTimestamp": "2024-01-01T00:00:00Z",
                         "labels": {"app": "web"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2},
        });
        assert_eq!(
            scale_of(&deployment),
            json!({
                "apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": "web", "namespace": "shop", "uid": "u1",
                             "resourceVersion": "7", "creationTimestamp": "2024-01-01T00:00:00Z"},
                "spec": {"replicas": 3},
                "status": {"replicas": 2, "selector": "app=web"},
            })
        );
    }
}
