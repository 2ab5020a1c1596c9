//! Endpoints and EndpointSlices, read-only: which pods back each Service,
//! derived from the Services and Pods in the store as Kubernetes' endpoint
//! controllers derive them (ready pods under `addresses`, the rest under
//! `notReadyAddresses`; one slice per Service). The router balances over
//! the same ready pods.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    self as core, EndpointAddress, EndpointSubset, Endpoints, ObjectReference,
};
use k8s_openapi::api::discovery::v1::{
    self as discovery, Endpoint, EndpointConditions, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::server::served;
use super::status::ApiError;
use crate::spec::objects::{IntOrString, Pod, Service, ServicePort};
use crate::spec::{Kind, Object, status};
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

fn target_ref(record: &Record) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: record.object.namespace().map(str::to_owned),
        name: Some(record.object.metadata().name.clone()),
        uid: Some(record.uid.clone()),
        ..ObjectReference::default()
    }
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

/// The metadata of what berth derives from the Service in `record`.
fn metadata(record: &Record, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: record.object.namespace().map(str::to_owned),
        uid: Some(format!("{}-endpoints", record.uid)),
        resource_version: Some(record.resource_version.to_string()),
        creation_timestamp: status::time(&record.created),
        labels: (!labels.is_empty()).then_some(labels),
        ..ObjectMeta::default()
    }
}

fn protocol(port: &ServicePort) -> Option<String> {
    Some(port.protocol.clone().unwrap_or_else(|| "TCP".into()))
}

/// core/v1 Endpoints, one per Service.
pub fn endpoints(store: &Store, namespace: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let mut all = Vec::new();
    each_service(store, namespace, |record, service, backends| {
        let name = record.object.metadata().name.clone();
        // One subset per distinct port set, as the endpoints controller
        // groups them.
        let mut subsets: Vec<EndpointSubset> = Vec::new();
        for b in &backends {
            let ports: Vec<core::EndpointPort> = service
                .spec
                .ports
                .iter()
                .filter_map(|p| {
                    Some(core::EndpointPort {
                        port: i32::from(target_port(p, b.pod)?),
                        protocol: protocol(p),
                        name: p.name.clone(),
                        ..core::EndpointPort::default()
                    })
                })
                .collect();
            let entry = EndpointAddress {
                ip: address(b.record),
                target_ref: Some(target_ref(b.record)),
                ..EndpointAddress::default()
            };
            let at = match subsets
                .iter()
                .position(|s| s.ports.as_ref() == Some(&ports))
            {
                Some(at) => at,
                None => {
                    subsets.push(EndpointSubset {
                        ports: Some(ports),
                        ..EndpointSubset::default()
                    });
                    subsets.len() - 1
                }
            };
            let subset = &mut subsets[at];
            let list = if b.ready {
                &mut subset.addresses
            } else {
                &mut subset.not_ready_addresses
            };
            list.get_or_insert_with(Vec::new).push(entry);
        }
        all.push(served(Endpoints {
            metadata: metadata(record, name, record.object.metadata().labels.clone()),
            subsets: (!subsets.is_empty()).then_some(subsets),
        }));
    })?;
    Ok(all)
}

/// discovery.k8s.io/v1 EndpointSlices, one per Service.
pub fn endpoint_slices(store: &Store, namespace: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let mut all = Vec::new();
    each_service(store, namespace, |record, service, backends| {
        let service_name = record.object.metadata().name.clone();
        let ports: Vec<discovery::EndpointPort> = service
            .spec
            .ports
            .iter()
            .filter_map(|p| {
                let first = backends.first()?;
                Some(discovery::EndpointPort {
                    port: Some(i32::from(target_port(p, first.pod)?)),
                    protocol: protocol(p),
                    name: Some(p.name.clone().unwrap_or_default()),
                    ..discovery::EndpointPort::default()
                })
            })
            .collect();
        let endpoints: Vec<Endpoint> = backends
            .iter()
            .map(|b| Endpoint {
                addresses: vec![address(b.record)],
                conditions: Some(EndpointConditions {
                    ready: Some(b.ready),
                    serving: Some(b.serving),
                    terminating: Some(b.terminating),
                }),
                target_ref: Some(target_ref(b.record)),
                node_name: b.pod.spec.node_name.clone(),
                ..Endpoint::default()
            })
            .collect();
        let mut labels = record.object.metadata().labels.clone();
        labels.insert("kubernetes.io/service-name".into(), service_name.clone());
        labels.insert(
            "endpointslice.kubernetes.io/managed-by".into(),
            "berth".into(),
        );
        all.push(served(EndpointSlice {
            metadata: metadata(record, format!("{service_name}-berth"), labels),
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(ports),
        }));
    })?;
    Ok(all)
}
