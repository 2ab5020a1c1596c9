//! The routing table: each Service's ready endpoints, kept current as pods
//! start, turn ready or unready, and stop, and the choice of one endpoint
//! per request.
//!
//! Requests read snapshots (the routes, each port's endpoints) through
//! `ArcSwap`, which takes no shared lock, so a request's writes to memory
//! all cores share are the few reference counts it holds (route, pod) and
//! the pod's in-flight count. The rare changes build new snapshots and
//! swap them in.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use parking_lot::Mutex;

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use super::network_policy::{Destination, NetworkPolicies, Peer, PodRef};
use crate::runtime::Workload;
use crate::spec::objects::{ContainerPort, IntOrString, Service, ServiceSpec, SessionAffinity};

/// Annotation on a Service choosing how requests spread over its endpoints:
/// `round-robin` (the default) or `least-request`.
pub const BALANCE_ANNOTATION: &str = "berth.dev/load-balancer";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    /// Power of two choices: of two endpoints drawn at random, the one with
    /// fewer requests in flight.
    LeastRequest,
}

impl Policy {
    pub fn parse(value: Option<&str>) -> Result<Policy, String> {
        match value.map(str::trim) {
            None | Some("" | "round-robin") => Ok(Policy::RoundRobin),
            Some("least-request") => Ok(Policy::LeastRequest),
            Some(other) => Err(format!(
                "{BALANCE_ANNOTATION}: unknown policy {other:?} (round-robin or least-request)"
            )),
        }
    }
}

/// A running pod as the router sees it: its labels (for selectors), its
/// containers' workloads, whether it is ready, and the requests it is
/// serving through the router (for least-request and for draining).
pub struct PodEndpoint {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    labels: RwLock<BTreeMap<String, String>>,
    containers: Vec<ContainerEndpoint>,
    ready: AtomicBool,
    in_flight: AtomicUsize,
    /// Requests it has served through the router (for the autoscaler's
    /// request rate and `/metrics`).
    served: AtomicU64,
    idle: tokio::sync::Notify,
    /// Requests the router sends it at once, at most (`usize::MAX`: no
    /// limit).
    limit: usize,
    /// Told when a request ends on a pod with a limit: room for the next.
    freed: tokio::sync::Notify,
}

pub struct ContainerEndpoint {
    pub name: String,
    pub ports: Vec<ContainerPort>,
    pub workload: Arc<dyn Workload>,
    /// A sidecar: served on the ports it declares, never the pod's
    /// fallback for a port none declares.
    pub sidecar: bool,
}

impl PodEndpoint {
    pub fn new(
        uid: String,
        namespace: String,
        name: String,
        labels: BTreeMap<String, String>,
        containers: Vec<ContainerEndpoint>,
        max_concurrency: Option<usize>,
    ) -> PodEndpoint {
        PodEndpoint {
            limit: max_concurrency.unwrap_or(usize::MAX),
            freed: tokio::sync::Notify::new(),
            uid,
            namespace,
            name,
            labels: RwLock::new(labels),
            containers,
            ready: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle: tokio::sync::Notify::new(),
        }
    }

    /// In its services' endpoints: started, ready, and not stopping.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    pub fn containers(&self) -> &[ContainerEndpoint] {
        &self.containers
    }

    /// Its labels now.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.labels.read().expect("lock").clone()
    }

    /// Waits until no request is in flight, or `limit` passes; true if idle.
    /// Only for a pod already marked not ready (out of the endpoints), as
    /// `Table::remove_pod` leaves it: a ready pod's last request does not
    /// wake anyone.
    pub async fn drained(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return false;
            }
        }
    }

    /// The container serving `target` and the port number to call it on.
    /// A pod of one app container serves a target none of its ports declares,
    /// on the number given, as Kubernetes does (a Linux container must
    /// listen there; wasm answers on any port); a name it does not declare
    /// leaves the container's first port.
    fn container_for(&self, target: &IntOrString) -> Option<(usize, Option<u16>)> {
        let found = self.containers.iter().enumerate().find_map(|(i, c)| {
            c.ports.iter().find_map(|p| {
                let named = match target {
                    IntOrString::Int(n) => i64::from(p.container_port) == *n,
                    IntOrString::String(s) => p.name.as_deref() == Some(s),
                };
                named.then_some((i, Some(p.container_port)))
            })
        });
        found.or_else(|| {
            let number = match target {
                IntOrString::Int(n) => u16::try_from(*n).ok(),
                IntOrString::String(_) => None,
            };
            let mut apps = self
                .containers
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.sidecar);
            match (apps.next(), apps.next()) {
                (Some((i, _)), None) => Some((i, number)),
                _ => None,
            }
        })
    }

    fn selected_by(&self, namespace: &str, selector: &BTreeMap<String, String>) -> bool {
        let labels = self.labels.read().expect("lock");
        self.namespace == namespace
            && !selector.is_empty()
            && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A request being served by an endpoint's pod; dropping it ends the count.
pub struct InFlight {
    endpoint: Endpoint,
}

impl std::ops::Deref for InFlight {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let pod = &self.endpoint.pod;
        pod.served.fetch_add(1, Ordering::Relaxed);
        let before = pod.in_flight.fetch_sub(1, Ordering::SeqCst);
        if pod.limit != usize::MAX {
            pod.freed.notify_waiters();
        }
        // Only a stopping pod is waited on to drain, and it is marked not
        // ready before `drained` looks: SeqCst on both sides, so either the
        // wait sees this decrement or this sees the pod not ready. A ready
        // pod's last request thus skips the notifier's lock.
        if before == 1 && !pod.is_ready() {
            pod.idle.notify_waiters();
        }
    }
}

/// One container of one ready pod, for one service port.
#[derive(Clone)]
pub struct Endpoint {
    pub pod: Arc<PodEndpoint>,
    container: usize,
    /// The container port the service port targets, when it names one.
    port: Option<u16>,
}

impl Endpoint {
    /// Counts a request on the pod until the guard drops (with the response
    /// body), if the pod has room for one more; gives the endpoint back if
    /// not. SeqCst with `is_ready` and the stop's store and `drained`:
    /// either the router sees the pod stopping, or the stop sees the
    /// request.
    fn try_begin(self) -> Result<InFlight, Endpoint> {
        let pod = &self.pod;
        if pod.limit == usize::MAX {
            pod.in_flight.fetch_add(1, Ordering::SeqCst);
        } else if pod
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < pod.limit).then_some(n + 1)
            })
            .is_err()
        {
            return Err(self);
        }
        Ok(InFlight { endpoint: self })
    }

    pub fn workload(&self) -> &Arc<dyn Workload> {
        &self.pod.containers[self.container].workload
    }

    /// A connection to the container, on the port the service targets;
    /// `None` when it takes none (wasm answers HTTP in-process).
    pub fn connect(
        &self,
    ) -> Option<crate::runtime::BoxFuture<'static, std::io::Result<tokio::net::TcpStream>>> {
        self.workload().connect(self.port)
    }

    /// Hands `request` to the container, on the port the service targets.
    pub fn serve(
        &self,
        request: http::Request<crate::runtime::Body>,
    ) -> crate::runtime::BoxFuture<
        'static,
        Result<http::Response<crate::runtime::Body>, crate::runtime::ServeError>,
    > {
        self.workload().serve_on(request, self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

/// What brings a Service scaled to zero back: asked when a request finds
/// no endpoint, it has the service's workload scaled up (as an autoscaler
/// would) and says how long the request may wait for a replica, or
/// `None` when nothing will come.
pub trait Activator: Send + Sync {
    fn wake(
        &self,
        namespace: &str,
        service: &str,
    ) -> crate::runtime::BoxFuture<'static, Option<Duration>>;
}

/// A Service as routed: its ports, policy, affinity, and per port the
/// endpoints requests may go to now.
pub struct Route {
    pub key: ServiceKey,
    pub spec: ServiceSpec,
    policy: Policy,
    affinity: Option<Duration>,
    ports: Vec<RoutePort>,
    next: AtomicUsize,
    sticky: Mutex<HashMap<IpAddr, (String, Instant)>>,
    changed: tokio::sync::Notify,
    /// Set when the service changed or went: the route that serves it now
    /// (`None` for gone), for requests waiting on this one.
    successor: std::sync::OnceLock<Option<Arc<Route>>>,
    /// Its requests' counters, when the router counts them.
    pub metrics: Option<super::RouteMetrics>,
    /// Requests sent to it (for the autoscaler's Service request rate).
    served: AtomicU64,
    /// Asked to bring a replica when there is none.
    pub activator: Option<Arc<dyn Activator>>,
    /// The NetworkPolicies its endpoints are picked under.
    network: Arc<Network>,
}

/// What a route needs to apply NetworkPolicies, shared by the table and
/// its routes: the policies in force (`None`, the common case: no check at
/// all), the pods by their client addresses (who a client is), and the
/// service network those addresses are of.
#[derive(Default)]
struct Network {
    policies: arc_swap::ArcSwapOption<NetworkPolicies>,
    clients: parking_lot::RwLock<HashMap<IpAddr, Arc<PodEndpoint>>>,
    service_network: std::sync::OnceLock<crate::state::ServiceNetwork>,
}

impl Network {
    /// Who pod `pod` of `namespace` is as a client (see
    /// [`Table::client_address`]).
    fn client_address(&self, namespace: &str, pod: &str) -> Option<IpAddr> {
        self.service_network
            .get()?
            .address_for(&format!("client:{namespace}/{pod}"), |_| false)
            .map(IpAddr::V4)
    }
}

struct RoutePort {
    port: u16,
    target: IntOrString,
    endpoints: ArcSwap<Vec<Endpoint>>,
}

impl Route {
    fn new(service: &Service, policy: Policy, network: Arc<Network>) -> Route {
        let affinity = (service.spec.session_affinity == SessionAffinity::ClientIp).then(|| {
            Duration::from_secs(
                service
                    .spec
                    .session_affinity_config
                    .as_ref()
                    .map_or(10_800, |c| c.client_ip.timeout_seconds),
            )
        });
        let key = ServiceKey {
            namespace: service
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: service.metadata.name.clone(),
        };
        Route {
            metrics: None,
            served: AtomicU64::new(0),
            activator: None,
            network,
            key,
            spec: service.spec.clone(),
            policy,
            affinity,
            ports: service
                .spec
                .ports
                .iter()
                .map(|p| RoutePort {
                    port: p.port,
                    target: p
                        .target_port
                        .clone()
                        .unwrap_or(IntOrString::Int(i64::from(p.port))),
                    endpoints: ArcSwap::default(),
                })
                .collect(),
            next: AtomicUsize::new(0),
            sticky: Mutex::new(HashMap::new()),
            changed: tokio::sync::Notify::new(),
            successor: std::sync::OnceLock::new(),
        }
    }

    /// What replaced this route, once the service changed or went: the new
    /// route, or `Some(None)` when there is none.
    pub fn successor(&self) -> Option<Option<Arc<Route>>> {
        self.successor.get().cloned()
    }

    /// Counts a request to the service.
    pub fn count(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests sent to the service, since the route was made.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// The number of service port `port`.
    pub fn port_number(&self, port: usize) -> u16 {
        self.ports[port].port
    }

    /// The index of the service port numbered `port`; without a number,
    /// the first.
    pub fn port_index(&self, port: Option<u16>) -> Option<usize> {
        match port {
            None => (!self.ports.is_empty()).then_some(0),
            Some(n) => self.ports.iter().position(|p| p.port == n),
        }
    }

    /// A snapshot of `port`'s endpoints, to read at once (not to hold
    /// across an await).
    pub fn endpoints(&self, port: usize) -> arc_swap::Guard<Arc<Vec<Endpoint>>> {
        self.ports[port].endpoints.load()
    }

    /// Waits until `deadline` for `port` to have an endpoint, or for the
    /// route to be replaced.
    pub async fn wait_for_endpoints(&self, port: usize, deadline: tokio::time::Instant) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.endpoints(port).is_empty()
                || self.successor.get().is_some()
                || tokio::time::timeout_at(deadline, changed).await.is_err()
            {
                return;
            }
        }
    }

    /// The endpoint for the next request from `client`, avoiding the pod
    /// `avoid` (one that just failed it) when another is ready.
    fn pick(
        &self,
        port: usize,
        client: Option<IpAddr>,
        avoid: Option<&str>,
    ) -> Result<Endpoint, NoRoom> {
        let all = self.endpoints(port);
        let reach = self.reach(port, client);
        // The common case, without building a candidate list.
        if avoid.is_none() && reach.is_none() && (self.affinity.is_none() || client.is_none()) {
            return match (all.len(), self.policy) {
                (0, _) => Err(NoRoom::NoEndpoints),
                (1, _) => Ok(all[0].clone()),
                (n, Policy::RoundRobin) => {
                    Ok(all[self.next.fetch_add(1, Ordering::Relaxed) % n].clone())
                }
                (n, Policy::LeastRequest) => Ok(less_busy_of_two(n, |i| &all[i]).clone()),
            };
        }
        let candidates: Vec<&Endpoint> = all
            .iter()
            .filter(|e| avoid.is_none_or(|uid| e.pod.uid != uid))
            .filter(|e| reach.as_ref().is_none_or(|r| r.allows(e)))
            .collect();
        if candidates.is_empty() {
            // Denied only when policies leave none at all: the one avoided
            // may be tried again, as when it is the only one.
            let denied = reach
                .as_ref()
                .is_some_and(|r| !all.is_empty() && !all.iter().any(|e| r.allows(e)));
            return Err(if denied {
                NoRoom::Denied
            } else {
                NoRoom::NoEndpoints
            });
        }
        if let (Some(timeout), Some(client)) = (self.affinity, client) {
            let mut sticky = self.sticky.lock();
            let now = Instant::now();
            if let Some((uid, at)) = sticky.get_mut(&client)
                && now.duration_since(*at) < timeout
                && let Some(e) = candidates.iter().find(|e| &e.pod.uid == uid)
            {
                *at = now;
                return Ok((*e).clone());
            }
            let chosen = self.choose(&candidates).clone();
            // Old entries go when the table grows, so it stays bounded by
            // the clients seen within one timeout.
            if sticky.len() >= 4096 {
                sticky.retain(|_, (_, at)| now.duration_since(*at) < timeout);
                // Still full of live clients: affinity is best effort, and
                // the table must stay bounded.
                if sticky.len() >= 4096 {
                    sticky.clear();
                }
            }
            sticky.insert(client, (chosen.pod.uid.clone(), now));
            return Ok(chosen);
        }
        Ok(self.choose(&candidates).clone())
    }

    /// Which of `port`'s endpoints `client` may reach under the
    /// NetworkPolicies in force; `None` when none are (all of them).
    fn reach(&self, port: usize, client: Option<IpAddr>) -> Option<Reach> {
        let policies = self.network.policies.load();
        let policies = policies.as_ref()?.clone();
        let source = client
            .and_then(|ip| self.network.clients.read().get(&ip).cloned())
            .map(|pod| (pod.namespace.clone(), pod.labels()));
        Some(Reach {
            policies,
            network: self.network.clone(),
            source,
            client,
            target: self.ports[port].target.clone(),
        })
    }

    /// A request counted on a ready endpoint of `port`, not on pod `avoid`
    /// (one that just failed it): the policy's pick, or when that replica
    /// is at its concurrency limit, the next with room, in round-robin
    /// order so the spill spreads too.
    pub fn try_acquire(
        &self,
        port: usize,
        client: Option<IpAddr>,
        avoid: Option<&str>,
    ) -> Result<InFlight, NoRoom> {
        let picked = self.pick(port, client, avoid)?;
        let counted = match picked.try_begin() {
            Ok(counted) => counted,
            Err(_) => {
                let all = self.endpoints(port);
                let reach = self.reach(port, client);
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..all.len())
                    .map(|i| &all[(start + i) % all.len()])
                    .filter(|e| Some(e.pod.uid.as_str()) != avoid)
                    .filter(|e| reach.as_ref().is_none_or(|r| r.allows(e)))
                    .find_map(|e| e.clone().try_begin().ok())
                    .ok_or(NoRoom::AllBusy)?
            }
        };
        // Counted now. A pod seen stopping may have been found idle and
        // stopped already: it gets nothing more (it leaves the endpoints
        // in a moment).
        if !counted.pod.is_ready() {
            return Err(NoRoom::Stopping);
        }
        Ok(counted)
    }

    /// The ready endpoint of the pod named `pod` on `port`, counted in
    /// flight: `None` when it is not among the route's ready endpoints,
    /// `Some(Err)` when it is at its concurrency limit.
    pub fn acquire_pod(
        &self,
        port: usize,
        pod: &str,
        client: Option<IpAddr>,
    ) -> Option<Result<InFlight, NoRoom>> {
        let endpoint = self
            .endpoints(port)
            .iter()
            .find(|e| e.pod.name == pod)?
            .clone();
        if self
            .reach(port, client)
            .is_some_and(|reach| !reach.allows(&endpoint))
        {
            return Some(Err(NoRoom::Denied));
        }
        Some(match endpoint.try_begin() {
            Ok(counted) if counted.pod.is_ready() => Ok(counted),
            Ok(_) => Err(NoRoom::Stopping),
            Err(_) => Err(NoRoom::AllBusy),
        })
    }

    /// Whether one of the route's ready endpoints is the pod named `pod`.
    pub fn has_pod(&self, pod: &str) -> bool {
        (0..self.ports.len()).any(|port| self.endpoints(port).iter().any(|e| e.pod.name == pod))
    }

    /// The names of its ready pods, sorted, each once.
    pub fn pod_names(&self) -> Vec<String> {
        let mut names: Vec<String> = (0..self.ports.len())
            .flat_map(|port| {
                self.endpoints(port)
                    .iter()
                    .map(|e| e.pod.name.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// [`Route::try_acquire`], waiting up to `wait` for room when every
    /// ready replica is at its limit (a request ending on any of them, or
    /// the endpoints changing, is a reason to look again).
    pub async fn acquire(
        &self,
        port: usize,
        client: Option<IpAddr>,
        wait: Duration,
    ) -> Result<InFlight, NoRoom> {
        let mut deadline = None;
        loop {
            let limited: Vec<Arc<PodEndpoint>> = match deadline {
                Some(_) => self
                    .endpoints(port)
                    .iter()
                    .filter(|e| e.pod.limit != usize::MAX)
                    .map(|e| e.pod.clone())
                    .collect(),
                None => Vec::new(),
            };
            let changed = self.changed.notified();
            tokio::pin!(changed);
            let mut freed: Vec<_> = limited
                .iter()
                .map(|pod| Box::pin(pod.freed.notified()))
                .collect();
            // Listening before looking (from the second look on), so an
            // ending in between is not missed.
            if deadline.is_some() {
                changed.as_mut().enable();
                for f in &mut freed {
                    f.as_mut().enable();
                }
            }
            let stopping = match self.try_acquire(port, client, None) {
                Err(NoRoom::AllBusy) => false,
                Err(NoRoom::Stopping) => true,
                done => return done,
            };
            let until = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + wait);
            if stopping {
                if tokio::time::Instant::now() >= until {
                    return Err(NoRoom::NoEndpoints);
                }
                // It leaves the endpoints in a moment; look again then.
                tokio::task::yield_now().await;
                continue;
            }
            if freed.is_empty() {
                // The first look, or the limited pods went: look again.
                if tokio::time::Instant::now() >= until {
                    return Err(NoRoom::AllBusy);
                }
                continue;
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = futures_util::future::select_all(freed) => {}
                () = tokio::time::sleep_until(until) => return Err(NoRoom::AllBusy),
            }
        }
    }

    fn choose<'a>(&self, candidates: &[&'a Endpoint]) -> &'a Endpoint {
        let n = candidates.len();
        match self.policy {
            Policy::RoundRobin => candidates[self.next.fetch_add(1, Ordering::Relaxed) % n],
            Policy::LeastRequest if n == 1 => candidates[0],
            Policy::LeastRequest => less_busy_of_two(n, |i| candidates[i]),
        }
    }

    fn rebuild(&self, pods: &HashMap<String, Arc<PodEndpoint>>) {
        for port in &self.ports {
            let mut endpoints: Vec<Endpoint> = pods
                .values()
                .filter(|p| {
                    p.ready.load(Ordering::Acquire)
                        && p.selected_by(&self.key.namespace, &self.spec.selector)
                })
                .filter_map(|p| {
                    p.container_for(&port.target)
                        .map(|(container, number)| Endpoint {
                            pod: p.clone(),
                            container,
                            port: number,
                        })
                })
                .collect();
            endpoints.sort_by(|a, b| a.pod.name.cmp(&b.pod.name));
            port.endpoints.store(Arc::new(endpoints));
        }
        self.changed.notify_waiters();
    }
}

/// Why no endpoint took a request.
#[derive(Debug, PartialEq, Eq)]
pub enum NoRoom {
    /// No ready endpoint.
    NoEndpoints,
    /// Every ready endpoint is at its concurrency limit.
    AllBusy,
    /// The one found is stopping (it is about to leave the endpoints).
    Stopping,
    /// There are ready endpoints, but NetworkPolicies let the client
    /// reach none of them.
    Denied,
}

/// A client's view of a route's port under the NetworkPolicies in force.
struct Reach {
    policies: Arc<NetworkPolicies>,
    network: Arc<Network>,
    /// The client's pod: its namespace and labels, when it is one.
    source: Option<(String, BTreeMap<String, String>)>,
    client: Option<IpAddr>,
    /// The port the Service targets.
    target: IntOrString,
}

impl Reach {
    fn allows(&self, endpoint: &Endpoint) -> bool {
        let pod = &endpoint.pod;
        let labels = pod.labels.read().expect("lock");
        let number = endpoint.port.or(match &self.target {
            IntOrString::Int(n) => u16::try_from(*n).ok(),
            IntOrString::String(_) => None,
        });
        let name = match &self.target {
            IntOrString::String(name) => Some(name.as_str()),
            IntOrString::Int(_) => pod.containers[endpoint.container]
                .ports
                .iter()
                .find(|p| Some(p.container_port) == number)
                .and_then(|p| p.name.as_deref()),
        };
        let from = Peer {
            pod: self
                .source
                .as_ref()
                .map(|(namespace, labels)| PodRef { namespace, labels }),
            ip: self.client,
        };
        let to = Destination {
            pod: PodRef {
                namespace: &pod.namespace,
                labels: &labels,
            },
            ip: self.network.client_address(&pod.namespace, &pod.name),
            port: number,
            port_name: name,
        };
        self.policies.allows(&from, &to)
    }
}

/// Power of two choices: of two of the `n` endpoints drawn at random
/// (`n` ≥ 2), the one with fewer requests in flight.
fn less_busy_of_two<'a>(n: usize, at: impl Fn(usize) -> &'a Endpoint) -> &'a Endpoint {
    let a = fastrand::usize(..n);
    let b = (a + 1 + fastrand::usize(..n - 1)) % n;
    let (ea, eb) = (at(a), at(b));
    if eb.pod.in_flight() < ea.pod.in_flight() {
        eb
    } else {
        ea
    }
}

/// Every service's route and every running pod, shared by the kubelet
/// (which registers pods and their readiness), the daemon loop (which
/// keeps services in step with the store), the ingress listeners and
/// guests' service calls.
#[derive(Default)]
pub struct Table {
    /// Namespace → service name → route: nested so a request looks up
    /// borrowed strings without building a key. Replaced whole, and only
    /// with `pods` locked, so changes do not race each other.
    routes: ArcSwap<HashMap<String, HashMap<String, Arc<Route>>>>,
    pods: Mutex<HashMap<String, Arc<PodEndpoint>>>,
    /// The routes by their services' virtual IPs, replaced with `routes`.
    by_ip: ArcSwap<HashMap<std::net::Ipv4Addr, Arc<Route>>>,
    /// The Ingress rules the ingress listener routes by first.
    ingresses: ArcSwap<super::IngressRules>,
    /// Where requests are counted, if they are.
    metrics: Option<Arc<super::HttpMetrics>>,
    activator: Option<Arc<dyn Activator>>,
    /// The NetworkPolicies, the pods as clients, and the service network,
    /// where headless Services' pods get addresses of their own (see
    /// [`Table::pod_addresses`]) and pods as clients too.
    network: Arc<Network>,
    /// Told when a headless Service's pods may have changed: the names
    /// Linux pods' hosts files give them.
    pod_names_changed: tokio::sync::Notify,
}

/// A headless Service's pod at an address of its own, as cluster DNS names
/// it (`<pod>.<service>.<namespace>.svc`): a connection to that address
/// reaches that pod.
#[derive(Clone)]
pub struct PodAddress {
    pub ip: std::net::Ipv4Addr,
    pub route: Arc<Route>,
    pub pod: String,
}

impl Table {
    /// A table whose routes count their requests in `metrics` (if given)
    /// and ask `activator` (if given) for a replica when they have none.
    pub fn new(
        metrics: Option<Arc<super::HttpMetrics>>,
        activator: Option<Arc<dyn Activator>>,
    ) -> Table {
        Table {
            metrics,
            activator,
            ..Table::default()
        }
    }

    /// Every running pod.
    pub fn pods(&self) -> Vec<Arc<PodEndpoint>> {
        self.pods.lock().values().cloned().collect()
    }

    /// Whether the pod `uid` runs and is ready.
    pub fn is_pod_ready(&self, uid: &str) -> bool {
        self.pods.lock().get(uid).is_some_and(|pod| pod.is_ready())
    }

    /// The service whose virtual IP is `ip`.
    pub fn route_by_ip(&self, ip: std::net::Ipv4Addr) -> Option<Arc<Route>> {
        self.by_ip.load().get(&ip).cloned()
    }

    /// Where headless Services' pods get their addresses (once; the
    /// daemon's `--service-cidr`).
    pub fn set_service_network(&self, network: crate::state::ServiceNetwork) {
        let _ = self.network.service_network.set(network);
    }

    /// The addresses of headless Services' ready pods, one per pod and
    /// Service: each where its name hashes in the service network, past the
    /// Services' virtual IPs and the addresses taken before it (Services
    /// and pods in name order), so a pod keeps its address while the set
    /// around it stays the same.
    pub fn pod_addresses(&self) -> Vec<PodAddress> {
        let Some(network) = self.network.service_network.get() else {
            return Vec::new();
        };
        let routes = self.routes.load();
        let by_ip = self.by_ip.load();
        let mut headless: Vec<&Arc<Route>> = routes
            .values()
            .flat_map(|services| services.values())
            .filter(|route| route.spec.virtual_ip().is_none())
            .collect();
        headless
            .sort_by(|a, b| (&a.key.namespace, &a.key.name).cmp(&(&b.key.namespace, &b.key.name)));
        let mut taken = std::collections::HashSet::new();
        let mut addresses = Vec::new();
        for route in headless {
            for pod in route.pod_names() {
                let key = format!("{}/{}/{pod}", route.key.namespace, route.key.name);
                if let Some(ip) =
                    network.address_for(&key, |ip| by_ip.contains_key(&ip) || taken.contains(&ip))
                {
                    taken.insert(ip);
                    addresses.push(PodAddress {
                        ip,
                        route: route.clone(),
                        pod,
                    });
                }
            }
        }
        addresses
    }

    /// Who pod `pod` of `namespace` is as a client of a Service (what
    /// `sessionAffinity: ClientIP` keys on, and the address forwarded
    /// headers give): an address of the service network where its name
    /// hashes. Pods have no addresses of their own on berth, and what they
    /// connect from (the loopback of their own network, or berth's process
    /// for a wasm guest) is every pod's.
    /// Two pods may hash to one address (a million addresses, so with
    /// thousands of pods a pair likely does): NetworkPolicies then take the
    /// later one started for both.
    pub fn client_address(&self, namespace: &str, pod: &str) -> Option<IpAddr> {
        self.network.client_address(namespace, pod)
    }

    /// Puts `policies` in force (`None`: no NetworkPolicy anywhere). The
    /// routes pick endpoints under them from the next request on; open
    /// connections stay.
    pub fn set_network_policies(&self, policies: Option<NetworkPolicies>) {
        self.network.policies.store(policies.map(Arc::new));
    }

    /// The NetworkPolicies in force, if any.
    pub fn network_policies(&self) -> Option<Arc<NetworkPolicies>> {
        self.network.policies.load_full()
    }

    /// Whether `ip` is of the service network (a Service's or a pod's
    /// address).
    pub fn in_service_network(&self, ip: std::net::Ipv4Addr) -> bool {
        self.network
            .service_network
            .get()
            .is_some_and(|network| network.contains(ip))
    }

    /// Whether the NetworkPolicies in force let a client at `peer`, which
    /// is not a pod (a host port's client), connect to the pod `uid` of
    /// `namespace`'s `port` (its name `port_name`, if it has one): the
    /// pod's labels as the table has them (its latest), else `labels`. As
    /// on a cluster, this machine's own connections are always let
    /// through.
    pub fn admits_host_client(
        &self,
        uid: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        port: u16,
        port_name: Option<&str>,
        peer: IpAddr,
    ) -> bool {
        let Some(policies) = self.network_policies() else {
            return true;
        };
        let peer = peer.to_canonical();
        let known = self.pods.lock().get(uid).map(|endpoint| endpoint.labels());
        let labels = known.as_ref().unwrap_or(labels);
        let allowed = policies.allows(
            &Peer {
                pod: None,
                ip: Some(peer),
            },
            &Destination {
                pod: PodRef { namespace, labels },
                ip: None,
                port: Some(port),
                port_name,
            },
        );
        // Listing the interfaces is a netlink dump: only for a client the
        // policies would refuse.
        allowed || peer.is_loopback() || crate::runtime::wasm::interface_addresses().contains(&peer)
    }

    /// The running pod whose client address is `ip`.
    pub fn client_pod(&self, ip: IpAddr) -> Option<Arc<PodEndpoint>> {
        self.network.clients.read().get(&ip).cloned()
    }

    /// The headless Service's pod at `ip`, if one has it.
    pub fn pod_by_ip(&self, ip: std::net::Ipv4Addr) -> Option<PodAddress> {
        self.pod_addresses().into_iter().find(|p| p.ip == ip)
    }

    /// Resolves when headless Services' pods may have changed since the
    /// last time it did.
    pub async fn pod_names_changed(&self) {
        self.pod_names_changed.notified().await;
    }

    pub fn route(&self, namespace: &str, name: &str) -> Option<Arc<Route>> {
        self.routes
            .load()
            .get(namespace)
            .and_then(|services| services.get(name))
            .cloned()
    }

    /// The ingress rules, to read at once.
    pub fn ingress_rules(&self) -> arc_swap::Guard<Arc<super::IngressRules>> {
        self.ingresses.load()
    }

    pub fn set_ingresses(&self, rules: super::IngressRules) {
        self.ingresses.store(Arc::new(rules));
    }

    /// The index of service port `port` of `route` (a number, or a name).
    pub fn backend_port(route: &Route, port: &super::rules::BackendPort) -> Option<usize> {
        match port {
            super::rules::BackendPort::Number(n) => route.port_index(Some(*n)),
            super::rules::BackendPort::Name(name) => route
                .spec
                .ports
                .iter()
                .position(|p| p.name.as_deref() == Some(name.as_str())),
        }
    }

    pub fn routes(&self) -> Vec<Arc<Route>> {
        self.routes
            .load()
            .values()
            .flat_map(|services| services.values().cloned())
            .collect()
    }

    /// Makes the routes those of `services`: new and changed ones are
    /// (re)built, removed ones dropped. Cheap when nothing changed.
    pub fn set_services(&self, services: &[Service]) {
        let pods = self.pods.lock();
        let routes = self.routes.load_full();
        let mut wanted: HashMap<String, HashMap<String, Arc<Route>>> = HashMap::new();
        for service in services {
            let policy = match Policy::parse(
                service
                    .metadata
                    .annotations
                    .get(BALANCE_ANNOTATION)
                    .map(String::as_str),
            ) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("service {}: {e}; using round-robin", service.metadata.name);
                    Policy::RoundRobin
                }
            };
            let mut fresh = Route::new(service, policy, self.network.clone());
            let old = routes
                .get(&fresh.key.namespace)
                .and_then(|services| services.get(&fresh.key.name));
            let route = match old {
                Some(old) if old.spec == fresh.spec && old.policy == policy => old.clone(),
                _ => {
                    fresh.metrics = self
                        .metrics
                        .as_ref()
                        .map(|m| m.route(&fresh.key.namespace, &fresh.key.name));
                    fresh.activator = self.activator.clone();
                    fresh.rebuild(&pods);
                    Arc::new(fresh)
                }
            };
            wanted
                .entry(route.key.namespace.clone())
                .or_default()
                .insert(route.key.name.clone(), route);
        }
        let by_ip = wanted
            .values()
            .flat_map(|services| services.values())
            .filter_map(|route| Some((route.spec.virtual_ip()?, route.clone())))
            .collect();
        let wanted = Arc::new(wanted);
        self.routes.store(wanted.clone());
        self.by_ip.store(Arc::new(by_ip));
        self.pod_names_changed.notify_one();
        // Requests waiting on a route that changed or went move on now
        // (to its successor), not at the end of their wait.
        for (namespace, services) in routes.iter() {
            for (name, old) in services {
                let now = wanted.get(namespace).and_then(|s| s.get(name));
                if now.is_none_or(|now| !Arc::ptr_eq(now, old)) {
                    let _ = old.successor.set(now.cloned());
                    old.changed.notify_waiters();
                }
            }
        }
    }

    /// A pod started: it joins the routes whose selectors match once ready.
    pub fn add_pod(&self, pod: Arc<PodEndpoint>) {
        let mut pods = self.pods.lock();
        pods.insert(pod.uid.clone(), pod.clone());
        if let Some(ip) = self.client_address(&pod.namespace, &pod.name) {
            self.network.clients.write().insert(ip, pod.clone());
        }
        self.rebuild_for(&pods, &pod);
    }

    /// A pod is stopping (or stopped): it leaves every route at once, so
    /// no new request reaches it while it drains.
    pub fn remove_pod(&self, uid: &str) {
        let mut pods = self.pods.lock();
        if let Some(pod) = pods.remove(uid) {
            pod.ready.store(false, Ordering::SeqCst);
            if let Some(ip) = self.client_address(&pod.namespace, &pod.name) {
                let mut clients = self.network.clients.write();
                if clients.get(&ip).is_some_and(|p| Arc::ptr_eq(p, &pod)) {
                    clients.remove(&ip);
                }
            }
            self.rebuild_for(&pods, &pod);
        }
    }

    /// A running pod's labels changed: the routes that selected it, and
    /// those that select it now, are rebuilt.
    pub fn relabel(&self, uid: &str, labels: &BTreeMap<String, String>) {
        let pods = self.pods.lock();
        if let Some(pod) = pods.get(uid) {
            let mut affected = self.selecting(pod);
            *pod.labels.write().expect("lock") = labels.clone();
            affected.extend(self.selecting(pod));
            for route in affected {
                route.rebuild(&pods);
                if route.spec.virtual_ip().is_none() {
                    self.pod_names_changed.notify_one();
                }
            }
        }
    }

    pub fn set_ready(&self, uid: &str, ready: bool) {
        let pods = self.pods.lock();
        if let Some(pod) = pods.get(uid)
            && pod.ready.swap(ready, Ordering::AcqRel) != ready
        {
            self.rebuild_for(&pods, pod);
        }
    }

    /// The routes whose selector takes `pod` as its labels are now.
    fn selecting(&self, pod: &PodEndpoint) -> Vec<Arc<Route>> {
        self.routes
            .load()
            .get(&pod.namespace)
            .into_iter()
            .flat_map(|s| s.values())
            .filter(|route| pod.selected_by(&route.key.namespace, &route.spec.selector))
            .cloned()
            .collect()
    }

    fn rebuild_for(&self, pods: &HashMap<String, Arc<PodEndpoint>>, pod: &PodEndpoint) {
        for route in self.selecting(pod) {
            route.rebuild(pods);
            if route.spec.virtual_ip().is_none() {
                self.pod_names_changed.notify_one();
            }
        }
    }
}
