//! Endpoints and EndpointSlices, read-only: which pods back each Service,
//! derived from the Services and Pods in the store as Kubernetes' endpoint
//! controllers derive them (ready pods under `addresses`, the rest under
//! `notReadyAddresses`; one slice per Service). The router balances over
//! the same ready pods.

use serde_json::{Value, json};

use super::status::ApiError;
use crate::spec::objects::{IntOrString, Pod, Service};
use crate::spec::{Kind, Object};
use crate::state::{Record, Store};

/// A pod backing a service: its record, whether it is Ready (and takes
/// new traffic), and whether it is being deleted.
struct Backend<'a> {
    record: &'a Record,
    pod: &'a Pod,
    ready: bool,
    /// Still Ready by its probes, though being deleted: EndpointSlices say
    /// so as `serving`, as Kubernetes' do.
    serving: bool,
    terminating: bool,
}

/// The port a service port reaches on `pod`: its number, or its name
/// looked up in the pod's containers; `None` when the pod lacks the name.
fn target_port(port: &crate::spec::objects::ServicePort, pod: &Pod) -> Option<u16> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(name)) => name.parse().ok().or_else(|| {
            pod.spec
                .containers
                .iter()
                .flat_map(|c| &c.ports)
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
        }),
    }
}

fn target_ref(record: &Record) -> Value {
    json!({
        "kind": "Pod",
        "namespace": record.object.namespace(),
        "name": record.object.metadata().name,
        "uid": record.uid,
    })
}

fn address(record: &Record) -> String {
    record
        .status
        .pod()
        .and_then(|s| s.kube.pod_ip.clone())
        .unwrap_or_else(|| "127.0.0.1".into())
}

/// Every service of `namespace` (or of all) with the pods it selects.
fn each_service(
    store: &Store,
    namespace: Option<&str>,
    mut each: impl FnMut(&Record, &Service, Vec<Backend<'_>>),
) -> Result<(), ApiError> {
    let services = store.list(Kind::Service, namespace)?;
    let pods = store.list(Kind::Pod, namespace)?;
    for record in &services {
        let Object::Service(service) = &record.object else {
            continue;
        };
        let ns = record.object.namespace();
        let backends: Vec<Backend<'_>> = if service.spec.selector.is_empty() {
            Vec::new()
        } else {
            pods.iter()
                .filter_map(|p| match &p.object {
                    Object::Pod(pod)
                        if p.object.namespace() == ns
                            && service
                                .spec
                                .selector
                                .iter()
                                .all(|(k, v)| pod.metadata.labels.get(k) == Some(v)) =>
                    {
                        let terminating = pod.metadata.deleting();
                        Some(Backend {
                            record: p,
                            pod,
                            ready: p.status.pod_ready() && !terminating,
                            serving: p.status.pod_ready(),
                            terminating,
                        })
                    }
                    _ => None,
                })
                .collect()
        };
        each(record, service, backends);
    }
    Ok(())
}

fn metadata(record: &Record, name: String, labels: Value) -> Value {
    let mut metadata = json!({
        "name": name,
        "namespace": record.object.namespace(),
        "uid": format!("{}-endpoints", record.uid),
        "resourceVersion": record.resource_version.to_string(),
        "creationTimestamp": record.created,
    });
    if labels.as_object().is_some_and(|l| !l.is_empty()) {
        metadata["labels"] = labels;
    }
    metadata
}

/// core/v1 Endpoints, one per Service.
pub fn endpoints(store: &Store, namespace: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let mut all = Vec::new();
    each_service(store, namespace, |record, service, backends| {
        let name = record.object.metadata().name.clone();
        // One subset per distinct port set, as the endpoints controller
        // groups them.
        let mut subsets: Vec<(Vec<Value>, Vec<Value>, Vec<Value>)> = Vec::new();
        for b in &backends {
            let ports: Vec<Value> = service
                .spec
                .ports
                .iter()
                .filter_map(|p| {
                    let mut port = json!({
                        "port": target_port(p, b.pod)?,
                        "protocol": p.protocol.as_deref().unwrap_or("TCP"),
                    });
                    if let Some(name) = &p.name {
                        port["name"] = name.clone().into();
                    }
                    Some(port)
                })
                .collect();
            let entry = json!({"ip": address(b.record), "targetRef": target_ref(b.record)});
            let subset = match subsets.iter_mut().find(|s| s.2 == ports) {
                Some(s) => s,
                None => {
                    subsets.push((Vec::new(), Vec::new(), ports));
                    subsets.last_mut().expect("just pushed")
                }
            };
            if b.ready {
                subset.0.push(entry);
            } else {
                subset.1.push(entry);
            }
        }
        let subsets: Vec<Value> = subsets
            .into_iter()
            .map(|(ready, not_ready, ports)| {
                let mut subset = json!({"ports": ports});
                if !ready.is_empty() {
                    subset["addresses"] = ready.into();
                }
                if !not_ready.is_empty() {
                    subset["notReadyAddresses"] = not_ready.into();
                }
                subset
            })
            .collect();
        let mut object = json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": metadata(record, name, json!(record.object.metadata().labels)),
        });
        if !subsets.is_empty() {
            object["subsets"] = subsets.into();
        }
        all.push(object);
    })?;
    Ok(all)
}

/// discovery.k8s.io/v1 EndpointSlices, one per Service.
pub fn endpoint_slices(store: &Store, namespace: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let mut all = Vec::new();
    each_service(store, namespace, |record, service, backends| {
        let service_name = record.object.metadata().name.clone();
        let ports: Vec<Value> = service
            .spec
            .ports
            .iter()
            .filter_map(|p| {
                let first = backends.first()?;
                let mut port = json!({
                    "port": target_port(p, first.pod)?,
                    "protocol": p.protocol.as_deref().unwrap_or("TCP"),
                });
                port["name"] = p.name.clone().unwrap_or_default().into();
                Some(port)
            })
            .collect();
        let endpoints: Vec<Value> = backends
            .iter()
            .map(|b| {
                json!({
                    "addresses": [address(b.record)],
                    "conditions": {"ready": b.ready, "serving": b.serving, "terminating": b.terminating},
                    "targetRef": target_ref(b.record),
                    "nodeName": b.pod.spec.node_name,
                })
            })
            .collect();
        let mut labels = json!(record.object.metadata().labels);
        labels["kubernetes.io/service-name"] = service_name.clone().into();
        labels["endpointslice.kubernetes.io/managed-by"] = "berth".into();
        all.push(json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": metadata(record, format!("{service_name}-berth"), labels),
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        }));
    })?;
    Ok(all)
}
