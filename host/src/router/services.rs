//! Service calls from guests: `http://<service>`, `<service>.<namespace>`,
//! `<service>.<namespace>.svc` and `.svc.cluster.local` reach the
//! service's endpoints in-process, with the same balancing as the ingress;
//! `<pod>.<service>[.<namespace>[.svc…]]` reaches that one pod (a
//! StatefulSet's, by its stable name).
//! Deny by default across namespaces: a pod may call services of its own
//! namespace, and others only when its `berth.dev/allow-services`
//! annotation names them.
//! `localhost:PORT` (or `127.0.0.1`, `[::1]`) is the pod's own: the
//! container that declares PORT, as in a Kubernetes pod's shared network.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};

use super::proxy::{forward, forward_to_pod};
use super::table::{Route, Table};
use crate::runtime::{Body, BoxFuture, ServiceTarget, Services, Workload};

/// The workloads behind the ports a pod's containers declare, filled in as
/// its containers start: a guest's `localhost:PORT`.
#[derive(Default)]
pub struct PodPorts {
    /// Every port the pod's containers declare, known before any starts.
    declared: Vec<u16>,
    started: parking_lot::RwLock<HashMap<u16, Arc<dyn Workload>>>,
}

impl PodPorts {
    pub fn new(declared: Vec<u16>) -> PodPorts {
        PodPorts {
            declared,
            started: Default::default(),
        }
    }

    /// `workload` answers on `ports` from now on.
    pub fn started(&self, ports: impl IntoIterator<Item = u16>, workload: &Arc<dyn Workload>) {
        let mut started = self.started.write();
        for port in ports {
            started.insert(port, workload.clone());
        }
    }
}

/// A port of the pod's own, reached in-process.
struct LocalTarget {
    ports: Arc<PodPorts>,
    port: u16,
}

impl ServiceTarget for LocalTarget {
    fn call(&self, request: Request<Body>) -> BoxFuture<'static, Response<Body>> {
        let workload = self.ports.started.read().get(&self.port).cloned();
        let port = self.port;
        Box::pin(async move {
            let Some(workload) = workload else {
                // As a connection to a port nothing listens on yet.
                let error = crate::runtime::ServeError::Guest {
                    workload: format!("localhost:{port}"),
                    failure: crate::runtime::GuestFailure::Unreachable(format!(
                        "the container of this pod that declares port {port} is not running"
                    )),
                };
                return berth_serve::error_response(&error);
            };
            match workload.serve_on(request, Some(port)).await {
                Ok(response) => response,
                Err(error) => berth_serve::error_response(&error),
            }
        })
    }
}

/// Whether `host` names this machine's loopback.
fn is_loopback(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1")
}

/// What one pod's guests may call.
pub struct PodServices {
    table: Arc<Table>,
    namespace: String,
    /// `(namespace, service)` pairs allowed beyond the pod's namespace; a
    /// service of `*` allows the whole namespace.
    allowed: Vec<(String, String)>,
    wait: Duration,
    /// The pod's own ports, for `localhost`.
    local: Option<Arc<PodPorts>>,
    /// Who the pod is as a client (see [`Table::client_address`]).
    client: Option<std::net::IpAddr>,
}

impl PodServices {
    /// `allowed` is the annotation's value: comma-separated
    /// `NAMESPACE/SERVICE` or `NAMESPACE/*`.
    pub fn new(
        table: Arc<Table>,
        namespace: &str,
        allowed: Option<&str>,
        wait: Duration,
    ) -> Result<PodServices, String> {
        let mut pairs = Vec::new();
        for item in allowed.unwrap_or("").split(',').map(str::trim) {
            if item.is_empty() {
                continue;
            }
            match item.split_once('/') {
                Some((ns, svc)) if !ns.is_empty() && !svc.is_empty() && !svc.contains('/') => {
                    pairs.push((ns.to_owned(), svc.to_owned()));
                }
                _ => {
                    return Err(format!(
                        "{}: {item:?} is not NAMESPACE/SERVICE or NAMESPACE/*",
                        crate::spec::objects::SERVICES_ANNOTATION
                    ));
                }
            }
        }
        Ok(PodServices {
            table,
            namespace: namespace.to_owned(),
            allowed: pairs,
            wait,
            local: None,
            client: None,
        })
    }

    /// As pod `pod` (its namespace's), for Services' `ClientIP` affinity.
    pub fn as_pod(mut self, pod: &str) -> PodServices {
        self.client = self.table.client_address(&self.namespace, pod);
        self
    }

    /// The `(pod, service, namespace)` a name's labels may be, as a
    /// headless Service's DNS names its pods: `web-0.web` (this pod's
    /// namespace, unless `.svc` followed) or `web-0.web.NS`.
    fn pod_name<'a>(
        &'a self,
        labels: &[&'a str],
        qualified: bool,
    ) -> Option<(&'a str, &'a str, &'a str)> {
        match labels[..] {
            [pod, service] if !qualified => Some((pod, service, self.namespace.as_str())),
            [pod, service, namespace] => Some((pod, service, namespace)),
            _ => None,
        }
    }

    /// With the pod's own ports as `localhost`.
    pub fn with_pod_ports(mut self, ports: Arc<PodPorts>) -> PodServices {
        self.local = Some(ports);
        self
    }

    fn may_call(&self, namespace: &str, service: &str) -> bool {
        namespace == self.namespace
            || self
                .allowed
                .iter()
                .any(|(ns, svc)| ns == namespace && (svc == service || svc == "*"))
    }

    /// Why a call to `namespace/service` is refused, if it is.
    fn refused(&self, namespace: &str, service: &str) -> Option<String> {
        (!self.may_call(namespace, service)).then(|| {
            format!(
                "service {namespace}/{service} is in another namespace; the pod's {} annotation \
                 does not allow it",
                crate::spec::objects::SERVICES_ANNOTATION
            )
        })
    }

    /// The route of the service `labels` (`<service>` or
    /// `<service>.<namespace>`, `qualified` when `.svc` followed) names,
    /// if this pod may call it; `None` for an unqualified name that is no
    /// service (an ordinary host); `shape` says what a qualified name must
    /// look like.
    fn service(
        &self,
        host: &str,
        labels: &[&str],
        qualified: bool,
        shape: &str,
    ) -> Option<Result<Arc<Route>, String>> {
        let (service, namespace) = match labels {
            [service] if !qualified => (*service, self.namespace.as_str()),
            [service, namespace] => (*service, *namespace),
            _ if !qualified => return None,
            _ => return Some(Err(format!("{host} is not {shape}"))),
        };
        let Some(route) = self.table.route(namespace, service) else {
            // A bare or two-label name that is no service may be a real
            // host (`example.com`), left to the outbound rules.
            return qualified
                .then(|| Err(format!("no service {service} in namespace {namespace}")));
        };
        if let Some(why) = self.refused(namespace, service) {
            return Some(Err(why));
        }
        Some(Ok(route))
    }
}

/// `host` without `.svc` or `.svc.cluster.local`, and whether it had one.
fn unqualified(host: &str) -> (&str, bool) {
    match host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"))
    {
        Some(name) => (name, true),
        None => (host, false),
    }
}

impl PodServices {
    /// The NetworkPolicies in force and the pod's labels, when they limit
    /// its egress.
    fn egress_limit(&self) -> Option<(Arc<super::NetworkPolicies>, Arc<super::PodEndpoint>)> {
        let policies = self.table.network_policies()?;
        let pod = self.table.client_pod(self.client?)?;
        let isolated = policies.isolates(
            super::network_policy::PodRef {
                namespace: &self.namespace,
                labels: &pod.labels(),
            },
            crate::spec::objects::PolicyType::Egress,
        );
        isolated.then_some((policies, pod))
    }
}

impl Services for PodServices {
    fn limits_outside(&self) -> bool {
        self.egress_limit().is_some()
    }

    fn outside_allows(&self, address: std::net::SocketAddr) -> Result<(), String> {
        let Some((policies, pod)) = self.egress_limit() else {
            return Ok(());
        };
        // An address of the service network is a Service's or a pod's: the
        // router checks those connections.
        if let std::net::IpAddr::V4(ip) = address.ip().to_canonical()
            && self.table.in_service_network(ip)
        {
            return Ok(());
        }
        let labels = pod.labels();
        let from = super::network_policy::PodRef {
            namespace: &self.namespace,
            labels: &labels,
        };
        if policies.allows_outside(from, address.ip().to_canonical(), address.port()) {
            Ok(())
        } else {
            Err(format!(
                "the NetworkPolicies of pod {}/{} allow no egress to {address}",
                self.namespace, pod.name
            ))
        }
    }

    fn address(&self, host: &str) -> Option<Result<std::net::IpAddr, String>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let (name, qualified) = unqualified(&host);
        let labels: Vec<&str> = name.split('.').collect();
        // A headless Service's pod by its own name: its own address.
        if let Some((pod, service, namespace)) = self.pod_name(&labels, qualified)
            && let Some(found) = self.table.pod_addresses().into_iter().find(|a| {
                a.pod == pod && a.route.key.name == service && a.route.key.namespace == namespace
            })
        {
            if let Some(why) = self.refused(namespace, service) {
                return Some(Err(why));
            }
            return Some(Ok(found.ip.into()));
        }
        let route = match self.service(
            &host,
            &labels,
            qualified,
            "<service>.<namespace>.svc or <pod>.<service>.<namespace>.svc",
        )? {
            Ok(route) => route,
            Err(why) => return Some(Err(why)),
        };
        Some(route.spec.virtual_ip().map(Into::into).ok_or_else(|| {
            format!(
                "service {}/{} is headless: it has no virtual IP to connect to",
                route.key.namespace, route.key.name
            )
        }))
    }

    fn resolve(
        &self,
        host: &str,
        port: Option<u16>,
    ) -> Option<Result<Arc<dyn ServiceTarget>, String>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        // The pod's own ports; any other loopback port is left to the
        // outbound rules (which never allow this machine by default).
        if is_loopback(&host)
            && let Some(local) = &self.local
        {
            let port = port.unwrap_or(80);
            return local.declared.contains(&port).then(|| {
                Ok(Arc::new(LocalTarget {
                    ports: local.clone(),
                    port,
                }) as Arc<dyn ServiceTarget>)
            });
        }
        let (name, qualified) = unqualified(&host);
        let labels: Vec<&str> = name.split('.').collect();
        // A pod's own name under the service governing it, as a headless
        // Service's DNS names a StatefulSet's pods: `web-0.web`, with the
        // namespace and `.svc` optional. Tried first for two labels, as
        // the resolver's search path does (`<ns>.svc.cluster.local`).
        if let Some((pod, service, namespace)) = self.pod_name(&labels, qualified)
            && let Some(route) = self.table.route(namespace, service)
            && (labels.len() == 3 || route.has_pod(pod))
        {
            if let Some(why) = self.refused(namespace, service) {
                return Some(Err(why));
            }
            let Some(index) = route.port_index(port) else {
                return Some(Err(format!(
                    "service {namespace}/{service} has no port {}",
                    port.unwrap_or(80)
                )));
            };
            return Some(Ok(Arc::new(PodTarget {
                route,
                port: index,
                pod: pod.to_owned(),
                client: self.client,
            })));
        }
        let route = match self.service(
            &host,
            &labels,
            qualified,
            "<service>.<namespace>.svc or <pod>.<service>.<namespace>.svc",
        )? {
            Ok(route) => route,
            Err(why) => return Some(Err(why)),
        };
        let Some(index) = route.port_index(port) else {
            return Some(Err(format!(
                "service {}/{} has no port {}",
                route.key.namespace,
                route.key.name,
                port.unwrap_or(80)
            )));
        };
        Some(Ok(Arc::new(Target {
            route,
            port: index,
            wait: self.wait,
            client: self.client,
        })))
    }
}

struct Target {
    route: Arc<Route>,
    port: usize,
    wait: Duration,
    client: Option<std::net::IpAddr>,
}

impl ServiceTarget for Target {
    fn call(&self, request: Request<Body>) -> BoxFuture<'static, Response<Body>> {
        Box::pin(forward(
            self.route.clone(),
            self.port,
            request,
            self.client,
            self.wait,
        ))
    }
}

/// One pod of a service, by name.
struct PodTarget {
    route: Arc<Route>,
    port: usize,
    pod: String,
    client: Option<std::net::IpAddr>,
}

impl ServiceTarget for PodTarget {
    fn call(&self, request: Request<Body>) -> BoxFuture<'static, Response<Body>> {
        Box::pin(forward_to_pod(
            self.route.clone(),
            self.port,
            self.pod.clone(),
            request,
            self.client,
        ))
    }
}
