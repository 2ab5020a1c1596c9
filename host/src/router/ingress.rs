//! The host's HTTP entrance: one listener routing by Host header to
//! services (`<service>.<namespace>.localhost`, `<service>.localhost` for
//! the default namespace — browsers resolve `*.localhost` to loopback), and
//! a listener per service port on the service's virtual IP and on its node
//! port (NodePort and LoadBalancer services), at layer 4 unless the port is
//! HTTP (see `l4`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use futures_util::future::{Either, ready};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use super::proxy::{add_forwarded, forward, plain};
use super::table::Table;
use crate::runtime::Body;
use crate::spec::objects::ServiceType;

/// The (namespace, service) a Host header names, if it is one of the
/// router's: `<service>.localhost` or `<service>.<namespace>.localhost`,
/// any port, a trailing dot allowed. `host` must be lowercase already (see
/// [`lowercase`]): service names are, and this runs on every request.
pub fn route_host(host: &str) -> Option<(&str, &str)> {
    if host.starts_with('[') {
        return None;
    }
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    let rest = name.trim_end_matches('.').strip_suffix(".localhost")?;
    match rest.split_once('.') {
        None if !rest.is_empty() => Some(("default", rest)),
        Some((service, namespace))
            if !service.is_empty() && !namespace.is_empty() && !namespace.contains('.') =>
        {
            Some((namespace, service))
        }
        _ => None,
    }
}

/// A Host header's name: without its port (an IPv6 address keeps its
/// brackets) or a trailing dot.
fn host_name(host: &str) -> &str {
    let name = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.trim_end_matches('.')
}

/// `path` with its `.` and `..` segments resolved (RFC 3986 5.2.4), copied
/// only when it has any.
fn without_dot_segments(path: &str) -> Cow<'_, str> {
    if !path.split('/').any(|s| s == "." || s == "..") {
        return Cow::Borrowed(path);
    }
    let mut kept: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {}
            ".." => {
                kept.pop();
            }
            other => kept.push(other),
        }
        // A path ending in `.` or `..` names a directory.
        if i + 1 == segments.len() && matches!(*segment, "." | "..") {
            kept.push("");
        }
    }
    Cow::Owned(format!("/{}", kept.join("/")))
}

/// `host` in lowercase, copied only when it has capitals.
fn lowercase(host: &str) -> Cow<'_, str> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// A listener for one port of one service, at one address (its virtual
/// IP, or the node port on the ingress's address).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServiceListener {
    namespace: String,
    service: String,
    port: u16,
    address: SocketAddr,
    /// A headless Service's pod, at its own address (see
    /// `Table::pod_addresses`): connections go to it alone.
    pod: Option<String>,
}

impl ServiceListener {
    /// Its socket's name among those handed to a successor: one per address.
    fn socket_name(&self) -> String {
        format!("service {}", self.address)
    }
}

/// The ingress listener and the NodePort listeners, sharing one table.
pub struct Ingress {
    table: Arc<Table>,
    wait: Duration,
    ip: IpAddr,
    shutdown: CancellationToken,
    drain: Duration,
    header_read: Duration,
    service_ports: Mutex<HashMap<ServiceListener, CancellationToken>>,
    /// Why listeners that could not be opened were not, said once each.
    failed_ports: Mutex<HashMap<ServiceListener, String>>,
    /// HTTP on a service port's connections.
    http: berth_serve::Http,
    /// The service network, redirected to berth in each Linux pod.
    service_network: String,
    /// Running Linux pods' networks, by their `/etc/hosts` files, kept
    /// naming the Services and limited as NetworkPolicies say.
    pod_hosts: Mutex<HashMap<std::path::PathBuf, PodNetwork>>,
    /// Numbers those runs.
    pod_runs: std::sync::atomic::AtomicU64,
    tasks: tokio_util::task::TaskTracker,
    /// The front door's listeners (the ingress's and the Services'): their
    /// connections drain before the pods behind them stop.
    front: tokio_util::task::TaskTracker,
    /// Cancelled once the front door may accept: when the routes are known
    /// (and, taking over from another daemon, its pods are back).
    opened: CancellationToken,
    /// Where the listening sockets come from and are offered to a successor.
    sockets: Arc<crate::handover::Sockets>,
    /// What the TLS listener serves, by SNI.
    certificates: Arc<super::tls::Certificates>,
    /// What answers for one host of berth's own (the dashboard's) rather
    /// than a Service: the host and its server, once the daemon sets it.
    own_host: std::sync::OnceLock<(&'static str, OwnHost)>,
}

/// A running Linux pod's network as the router keeps it.
struct PodNetwork {
    namespace: String,
    pod: String,
    /// The run that registered it: a pod's next run uses the same hosts
    /// file, and the last run's end must not take it off the list.
    run: u64,
    netns: std::path::PathBuf,
    /// What NetworkPolicies select it by (as last seen).
    labels: std::collections::BTreeMap<String, String>,
    /// The egress limit loaded in its namespace (`Some(None)`: none), once
    /// one was.
    egress: Option<Option<(Vec<crate::runtime::linux::network::EgressRule>, bool)>>,
}

impl PodNetwork {
    /// Loads in the pod's network the egress limit `policies` set it, if
    /// that is not what is there.
    fn police(&mut self, policies: Option<&super::NetworkPolicies>, table: &Table) {
        // Its labels now, once the pod is in the table.
        if let Some(pod) = table
            .client_address(&self.namespace, &self.pod)
            .and_then(|ip| table.client_pod(ip))
            .filter(|pod| pod.namespace == self.namespace && pod.name == self.pod)
        {
            self.labels = pod.labels();
        }
        let wanted = policies.and_then(|p| {
            p.egress_rules(super::network_policy::PodRef {
                namespace: &self.namespace,
                labels: &self.labels,
            })
        });
        if self.egress.as_ref() == Some(&wanted) {
            return;
        }
        let (rules, resolve) = match &wanted {
            Some((rules, resolve)) => (Some(rules.as_slice()), *resolve),
            None => (None, false),
        };
        let resolver = crate::runtime::linux::network::DNS_FORWARDER.into();
        match crate::runtime::linux::network::limit_egress(&self.netns, rules, resolver, resolve) {
            Ok(()) => self.egress = Some(wanted),
            Err(e) => tracing::warn!("pod {}/{}: {e}", self.namespace, self.pod),
        }
    }
}

/// A server for a host of berth's own on the ingress.
pub type OwnHost = Arc<
    dyn Fn(Request<Incoming>) -> crate::runtime::BoxFuture<'static, Response<Body>> + Send + Sync,
>;

impl Ingress {
    /// Binds the ingress on `address` (or takes the listener a predecessor
    /// handed over, from `sockets`); returns it and the address bound (the
    /// port chosen when `address` asked for port 0). It accepts once
    /// [`Ingress::open`]. Its listeners cut off a client slower than
    /// `header_read` to send its headers.
    #[expect(clippy::too_many_arguments, reason = "the ingress's settings")]
    pub fn bind(
        table: Arc<Table>,
        sockets: Arc<crate::handover::Sockets>,
        address: SocketAddr,
        wait: Duration,
        shutdown: CancellationToken,
        drain: Duration,
        header_read: Duration,
        service_network: String,
    ) -> std::io::Result<(Arc<Ingress>, SocketAddr)> {
        let listener = sockets.tcp("ingress", address, crate::handover::bind_tcp)?;
        let bound = listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let ingress = Arc::new(Ingress {
            table,
            wait,
            ip: bound.ip(),
            shutdown,
            drain,
            header_read,
            service_ports: Mutex::new(HashMap::new()),
            failed_ports: Mutex::new(HashMap::new()),
            http: berth_serve::Http::new(header_read),
            service_network,
            pod_hosts: Mutex::new(HashMap::new()),
            pod_runs: std::sync::atomic::AtomicU64::new(0),
            tasks: tokio_util::task::TaskTracker::new(),
            front: tokio_util::task::TaskTracker::new(),
            opened: CancellationToken::new(),
            sockets,
            certificates: Arc::default(),
            own_host: std::sync::OnceLock::new(),
        });
        // Headless Services' pods get addresses in the service network,
        // and Linux pods' hosts files name them as their set changes.
        if let Ok(network) = ingress.service_network.parse() {
            ingress.table.set_service_network(network);
        }
        let names = ingress.clone();
        ingress.tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = names.table.pod_names_changed() => {
                        // Their listeners, and the hosts files naming them.
                        names.sync_service_ports();
                    }
                    () = names.shutdown.cancelled() => return,
                }
            }
        });
        let by_host = ingress.clone();
        ingress.accept_once_open(
            ingress.shutdown.clone(),
            super::accept(
                listener,
                ingress.shutdown.clone(),
                drain,
                header_read,
                move |request, peer| match by_host.own_host(&request) {
                    Some(serve) => Either::Left(serve(request)),
                    None => Either::Right(by_host.by_host(request, peer, false)),
                },
            ),
        );
        Ok((ingress, bound))
    }

    /// Runs `accepting` (a front-door listener's loop, which ends with
    /// `stop`) once the ingress is open; until then its connections wait in
    /// the kernel's queue. Stopped first, it never runs (and its listener
    /// closes at once).
    fn accept_once_open(
        &self,
        stop: CancellationToken,
        accepting: impl Future<Output = ()> + Send + 'static,
    ) {
        let opened = self.opened.clone();
        self.front.spawn(async move {
            tokio::select! {
                biased;
                () = opened.cancelled() => accepting.await,
                () = stop.cancelled() => {}
            }
        });
    }

    /// A listener for a pod's `hostPort` on `address`: the one a
    /// predecessor handed over for that address, else one bound now
    /// (refused where something listens already, see [`bind_published`]).
    /// It is offered to a successor until the guard returned is dropped,
    /// unless `leave` is set by then (the daemon handing its pods over).
    pub fn host_port(
        &self,
        address: SocketAddr,
        leave: Arc<std::sync::atomic::AtomicBool>,
    ) -> std::io::Result<(tokio::net::TcpListener, HostPortOffer)> {
        // Named as the daemon knows them (it lets go of those no pod took).
        let name = format!("hostport {address}");
        let listener = self.sockets.tcp(&name, address, |address| {
            bind_published(address)?.into_std()
        })?;
        // Made only once the port is this pod's: a pod refused the port
        // (another pod holds it) must not withdraw the holder's offer.
        let offer = HostPortOffer {
            sockets: self.sockets.clone(),
            name,
            leave,
        };
        Ok((tokio::net::TcpListener::from_std(listener)?, offer))
    }

    /// Lets the front door accept.
    pub fn open(&self) {
        self.opened.cancel();
    }

    /// Also serves the ingress over HTTPS on `address`, with the
    /// certificates of the Ingresses' `spec.tls`; the address bound.
    pub fn bind_tls(self: &Arc<Self>, address: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = self
            .sockets
            .tcp("ingress-tls", address, crate::handover::bind_tcp)?;
        let bound = listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let acceptor =
            tokio_rustls::TlsAcceptor::from(super::tls::server_config(self.certificates.clone()));
        let by_host = self.clone();
        self.accept_once_open(
            self.shutdown.clone(),
            berth_serve::accept_with(
                listener,
                Some(acceptor),
                self.shutdown.clone(),
                self.drain,
                self.header_read,
                move |request, peer| by_host.by_host(request, peer, true),
            ),
        );
        Ok(bound)
    }

    /// Serves `host` (exactly, any port) with `serve` on the plain
    /// listener, ahead of Services and Ingress rules; once.
    pub fn serve_own_host(&self, host: &'static str, serve: OwnHost) {
        let _ = self.own_host.set((host, serve));
    }

    fn own_host(&self, request: &Request<Incoming>) -> Option<OwnHost> {
        let (host, serve) = self.own_host.get()?;
        let named = match request.uri().authority() {
            Some(authority) => authority.host(),
            None => host_name(request.headers().get(http::header::HOST)?.to_str().ok()?),
        };
        named.eq_ignore_ascii_case(host).then(|| serve.clone())
    }

    /// The certificates the HTTPS listener serves from the next handshake.
    pub fn set_certificates(&self, set: super::CertificateSet) {
        self.certificates.replace(set);
    }

    /// The route is found here, before the future: what is awaited owns
    /// only what the request needs, and is moved into place per request.
    fn by_host(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        https: bool,
    ) -> impl Future<Output = Response<Body>> + Send + use<> {
        // An HTTP/2 request names its host in the authority, HTTP/1.1 in
        // Host; either way it is what X-Forwarded-Host passes on.
        let host = match request.uri().authority() {
            Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
            None => request.headers().get(http::header::HOST).cloned(),
        };
        let host_str = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
        let lower = lowercase(host_str);
        // Ingress rules naming the host first, then berth's own
        // `<service>.localhost` names, then host-less rules and the
        // default backend.
        let rules = self.table.ingress_rules();
        // Matched as the backend will read it: `/public/../admin` is
        // `/admin`, whichever rule `/public` names.
        let path = without_dot_segments(request.uri().path());
        let path = path.as_ref();
        let bare = host_name(&lower);
        let found = match rules.by_host(bare, path) {
            Some(Some(backend)) => Some(Some(backend)),
            Some(None) => Some(rules.default_backend()),
            None => None,
        };
        let service = route_host(&lower)
            .filter(|(namespace, service)| self.table.route(namespace, service).is_some());
        let found = match (found, service) {
            (Some(found), _) => found,
            (None, Some(_)) => None,
            (None, None) => rules.fallback(path),
        };
        if let Some(backend) = found {
            let Some(route) = self.table.route(&backend.namespace, &backend.service) else {
                return Either::Left(ready(plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "503 Service Unavailable: ingress {} routes {host_str}{path} to service \
                         {}/{}, which does not exist\n",
                        backend.ingress, backend.namespace, backend.service
                    ),
                )));
            };
            let Some(port) = Table::backend_port(&route, &backend.port) else {
                return Either::Left(ready(plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "503 Service Unavailable: ingress {} names port {:?} of service {}/{}, \
                         which has no such port\n",
                        backend.ingress, backend.port, backend.namespace, backend.service
                    ),
                )));
            };
            drop(rules);
            let request = prepare(request, peer, host, https);
            return Either::Right(through_ingress(
                route,
                port,
                request,
                Some(peer.ip()),
                self.wait,
            ));
        }
        drop(rules);
        let Some((namespace, service)) = route_host(&lower) else {
            return Either::Left(ready(plain(
                StatusCode::NOT_FOUND,
                format!(
                    "404 Not Found: no route for host {host_str:?}; services answer at \
                     <service>.<namespace>.localhost or <service>.localhost, or by an Ingress's rules\n"
                ),
            )));
        };
        let Some(route) = self.table.route(namespace, service) else {
            return Either::Left(ready(plain(
                StatusCode::NOT_FOUND,
                format!(
                    "404 Not Found: no service {service} in namespace {namespace} (host {host_str})\n"
                ),
            )));
        };
        let Some(port) = route.port_index(None) else {
            return Either::Left(ready(plain(
                StatusCode::NOT_FOUND,
                format!("404 Not Found: service {namespace}/{service} has no ports\n"),
            )));
        };
        let request = prepare(request, peer, host, https);
        Either::Right(through_ingress(
            route,
            port,
            request,
            Some(peer.ip()),
            self.wait,
        ))
    }

    /// Opens a listener for every port of the table's services, on its
    /// virtual IP and on its node port (if it has them), and closes those
    /// of services (or ports) that are gone; false if one could not be
    /// opened (yet: a port just let go may take a moment), for the caller
    /// to try again.
    pub fn sync_service_ports(self: &Arc<Self>) -> bool {
        let mut all_open = true;
        let mut wanted: HashSet<ServiceListener> = HashSet::new();
        for route in self.table.routes() {
            for port in &route.spec.ports {
                let key = |address| ServiceListener {
                    namespace: route.key.namespace.clone(),
                    service: route.key.name.clone(),
                    port: port.port,
                    address,
                    pod: None,
                };
                if let Some(ip) = route.spec.virtual_ip() {
                    wanted.insert(key(SocketAddr::new(ip.into(), port.port)));
                }
                if route.spec.kind != ServiceType::ClusterIP
                    && let Some(node_port) = port.node_port
                {
                    wanted.insert(key(SocketAddr::new(self.ip, node_port)));
                }
            }
        }
        // Headless Services' pods at their own addresses, for what
        // connects from berth's side (a wasm guest's granted socket).
        for address in self.table.pod_addresses() {
            for port in &address.route.spec.ports {
                wanted.insert(ServiceListener {
                    namespace: address.route.key.namespace.clone(),
                    service: address.route.key.name.clone(),
                    port: port.port,
                    address: SocketAddr::new(address.ip.into(), port.port),
                    pod: Some(address.pod.clone()),
                });
            }
        }
        let mut open = self.service_ports.lock();
        open.retain(|key, cancel| {
            let keep = wanted.contains(key);
            if !keep {
                self.sockets.withdraw(&key.socket_name());
                cancel.cancel();
            }
            keep
        });
        self.rewrite_pod_hosts();
        let mut failed = self.failed_ports.lock();
        failed.retain(|key, _| wanted.contains(key));
        for key in wanted {
            if open.contains_key(&key) {
                continue;
            }
            let listener = match self
                .sockets
                .tcp(&key.socket_name(), key.address, |address| {
                    bind_shared(address)?.into_std()
                })
                .and_then(tokio::net::TcpListener::from_std)
            {
                Ok(l) => l,
                Err(e) => {
                    // Said once per reason; tried again every pass.
                    let why = e.to_string();
                    if failed.get(&key) != Some(&why) {
                        tracing::warn!(
                            "service {}/{} port {}: listening on {}: {why}",
                            key.namespace,
                            key.service,
                            key.port,
                            key.address
                        );
                        failed.insert(key.clone(), why);
                    }
                    all_open = false;
                    continue;
                }
            };
            failed.remove(&key);
            tracing::info!(
                "service {}/{} port {} on {}",
                key.namespace,
                key.service,
                key.port,
                key.address
            );
            let cancel = self.shutdown.child_token();
            let ingress = self.clone();
            let target = Arc::new(key.clone());
            self.accept_once_open(
                cancel.clone(),
                berth_serve::accept_connections(
                    listener,
                    cancel.clone(),
                    self.drain,
                    move |stream, peer, closing| {
                        ingress
                            .clone()
                            .service_connection(target.clone(), stream, peer, closing)
                    },
                ),
            );
            open.insert(key, cancel);
        }
        all_open
    }

    /// Gives the Linux pod whose network namespace is `netns` its way to
    /// Services: its connections to the service network are redirected to
    /// a listener of berth's in the namespace (see `berth_linux::network`),
    /// served until `cancel`; keeps its `/etc/hosts` (`hosts`, of pod
    /// `pod` in `namespace`) naming them; and limits its connections out as
    /// the NetworkPolicies selecting it (by `labels`) say, before it has a
    /// way out.
    pub fn serve_pod_network(
        self: &Arc<Self>,
        netns: &std::path::Path,
        hosts: std::path::PathBuf,
        namespace: &str,
        pod: &str,
        labels: &std::collections::BTreeMap<String, String>,
        cancel: CancellationToken,
    ) -> Result<(), String> {
        let listener =
            crate::runtime::linux::listen_in(netns, SocketAddr::from(([127, 0, 0, 1], 0)))
                .and_then(tokio::net::TcpListener::from_std)
                .map_err(|e| format!("listening in the pod's network: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        crate::runtime::linux::network::redirect_services(netns, &self.service_network, port)
            .map_err(|e| e.to_string())?;
        let run = self
            .pod_runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut network = PodNetwork {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            run,
            netns: netns.to_owned(),
            labels: labels.clone(),
            egress: None,
        };
        network.police(self.table.network_policies().as_deref(), &self.table);
        self.pod_hosts.lock().insert(hosts.clone(), network);
        // Services may have changed since the kubelet wrote it.
        if let Err(e) = super::names::write_hosts(&hosts, &self.table, namespace, pod) {
            tracing::warn!("pod {namespace}/{pod}: {}: {e}", hosts.display());
        }
        let ingress = self.clone();
        let forget = self.clone();
        let drain = self.drain;
        // Every connection comes from the pod's own loopback: the pod, not
        // that, is the client (as its IP would be on a cluster).
        let client = self.table.client_address(namespace, pod);
        self.tasks.spawn(async move {
            berth_serve::accept_connections(
                listener,
                cancel,
                drain,
                move |stream, peer, closing| {
                    let ingress = ingress.clone();
                    let peer = client.map_or(peer, |ip| SocketAddr::new(ip, peer.port()));
                    async move {
                        let Ok(to) = crate::runtime::linux::network::original_destination(&stream)
                        else {
                            return;
                        };
                        let Some(route) = ingress.table.route_by_ip(*to.ip()) else {
                            if let Some(pod) = ingress.table.pod_by_ip(*to.ip()) {
                                return ingress
                                    .pod_connection(pod, to.port(), stream, peer, closing)
                                    .await;
                            }
                            tracing::debug!(%peer, "a pod's connection to {to}: no such service");
                            return;
                        };
                        let target = Arc::new(ServiceListener {
                            namespace: route.key.namespace.clone(),
                            service: route.key.name.clone(),
                            port: to.port(),
                            address: SocketAddr::V4(to),
                            pod: None,
                        });
                        ingress
                            .service_connection(target, stream, peer, closing)
                            .await
                    }
                },
            )
            .await;
            let mut listed = forget.pod_hosts.lock();
            if listed.get(&hosts).is_some_and(|n| n.run == run) {
                listed.remove(&hosts);
            }
        });
        Ok(())
    }

    /// One connection to a service port (on its virtual IP or node port):
    /// carried at layer 4 to an endpoint that takes connections unless the
    /// port is declared HTTP; served HTTP otherwise.
    async fn service_connection(
        self: Arc<Self>,
        target: Arc<ServiceListener>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        closing: CancellationToken,
    ) {
        let Some(route) = self.table.route(&target.namespace, &target.service) else {
            return;
        };
        if let (Some(pod), SocketAddr::V4(address)) = (&target.pod, target.address) {
            let address = super::table::PodAddress {
                ip: *address.ip(),
                route,
                pod: pod.clone(),
            };
            return self
                .pod_connection(address, target.port, stream, peer, closing)
                .await;
        }
        let Some(index) = route.port_index(Some(target.port)) else {
            return;
        };
        let stream = if route.spec.ports[index].declared_http() {
            stream
        } else {
            match super::l4::splice(route, index, stream, peer, self.wait).await {
                super::l4::Spliced::Done => return,
                super::l4::Spliced::NotSockets(stream) => stream,
            }
        };
        let ingress = self.clone();
        let handler = move |request: Request<Incoming>, peer: SocketAddr| {
            ingress.service_request(&target, request, peer)
        };
        self.http.serve(stream, peer, closing, handler).await
    }

    /// One connection to a headless Service's pod at its own address, on
    /// `port`: carried to that pod, at layer 4 or as HTTP as a connection
    /// to the Service would be.
    async fn pod_connection(
        self: Arc<Self>,
        address: super::table::PodAddress,
        port: u16,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        closing: CancellationToken,
    ) {
        let super::table::PodAddress { route, pod, .. } = address;
        let Some(index) = route.port_index(Some(port)) else {
            tracing::debug!(%peer, "pod {pod}: service {} has no port {port}", route.key.name);
            return;
        };
        let stream = if route.spec.ports[index].declared_http() {
            stream
        } else {
            match super::l4::splice_to_pod(route.clone(), index, &pod, stream, peer).await {
                super::l4::Spliced::Done => return,
                super::l4::Spliced::NotSockets(stream) => stream,
            }
        };
        let handler = move |request: Request<Incoming>, peer: SocketAddr| {
            let host = request.headers().get(http::header::HOST).cloned();
            let request = prepare(request, peer, host, false);
            super::proxy::forward_to_pod(
                route.clone(),
                index,
                pod.clone(),
                request,
                Some(peer.ip()),
            )
        };
        self.http.serve(stream, peer, closing, handler).await
    }

    /// Limits every Linux pod's connections out as the NetworkPolicies in
    /// force say, where that changed. Blocking (it runs nft): for a
    /// blocking thread. The policies are read once the pods' networks are
    /// locked, so of two passes the last to run puts the latest in force.
    pub fn police_pod_networks(&self) {
        let mut networks = self.pod_hosts.lock();
        let policies = self.table.network_policies();
        for network in networks.values_mut() {
            network.police(policies.as_deref(), &self.table);
        }
    }

    /// Writes every Linux pod's `/etc/hosts` again, as things are now.
    fn rewrite_pod_hosts(&self) {
        for (hosts, PodNetwork { namespace, pod, .. }) in self.pod_hosts.lock().iter() {
            if let Err(e) = super::names::write_hosts(hosts, &self.table, namespace, pod) {
                tracing::warn!("pod {namespace}/{pod}: {}: {e}", hosts.display());
            }
        }
    }

    /// One request on a service port's connection.
    fn service_request(
        &self,
        target: &ServiceListener,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send + use<> {
        let (namespace, service, port) = (&target.namespace, &target.service, target.port);
        let Some(route) = self.table.route(namespace, service) else {
            return Either::Left(ready(plain(
                StatusCode::NOT_FOUND,
                format!("404 Not Found: service {namespace}/{service} is gone\n"),
            )));
        };
        let Some(index) = route.port_index(Some(port)) else {
            return Either::Left(ready(plain(
                StatusCode::NOT_FOUND,
                format!("404 Not Found: service {namespace}/{service} has no port {port}\n"),
            )));
        };
        let host = request.headers().get(http::header::HOST).cloned();
        let request = prepare(request, peer, host, false);
        Either::Right(through_ingress(
            route,
            index,
            request,
            Some(peer.ip()),
            self.wait,
        ))
    }

    /// Waits for the front door's connections to end after shutdown: the
    /// requests in flight answered while their pods still run.
    pub async fn front_closed(&self) {
        self.front.close();
        self.front.wait().await;
    }

    /// Waits for every listener to finish draining after shutdown.
    pub async fn stopped(&self) {
        self.front_closed().await;
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// A pod's `hostPort` offered to a successor while it is served: withdrawn
/// when dropped (the pod stopped, or never started), so the port closes
/// with its listener, unless the daemon is handing its pods over.
pub struct HostPortOffer {
    sockets: Arc<crate::handover::Sockets>,
    name: String,
    leave: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for HostPortOffer {
    fn drop(&mut self) {
        if !self.leave.load(std::sync::atomic::Ordering::SeqCst) {
            self.sockets.withdraw(&self.name);
        }
    }
}

/// A port published on the host (a hostPort, `berth run -p`): shared with
/// berth's listeners on overlapping addresses (see [`bind_shared`]), but
/// refused, as Docker refuses it, when something listens on that very
/// address already (which sharing would otherwise let two of berth's
/// publishers do).
pub fn bind_published(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    if listening_on(address) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{address} is in use (something listens there already)"),
        ));
    }
    bind_shared(address)
}

/// Whether a socket of this network namespace listens on exactly
/// `address`, as /proc/net/tcp (or tcp6) lists it.
fn listening_on(address: SocketAddr) -> bool {
    let (table, wanted) = match address {
        SocketAddr::V4(a) => (
            "/proc/net/tcp",
            format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(a.ip().octets()),
                a.port()
            ),
        ),
        SocketAddr::V6(a) => {
            let words: String = a
                .ip()
                .octets()
                .chunks(4)
                .map(|w| format!("{:08X}", u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
                .collect();
            ("/proc/net/tcp6", format!("{words}:{:04X}", a.port()))
        }
    };
    std::fs::read_to_string(table).is_ok_and(|text| {
        text.lines().skip(1).any(|line| {
            let mut fields = line.split_whitespace().skip(1);
            let local = fields.next();
            let state = fields.nth(1);
            local == Some(wanted.as_str()) && state == Some("0A")
        })
    })
}

/// A listener that shares its port with berth's own other listeners on
/// overlapping addresses: a Service's virtual IP (`127.96.x.y:80`) and a
/// port published on all addresses (`0.0.0.0:80`, a hostPort or `run -p`)
/// would otherwise refuse each other, though they never take the same
/// connections (the kernel gives each to the most specific). Only sockets
/// that all ask for it share (SO_REUSEPORT, one user): a program of the
/// host's on the port still refuses berth, and is told.
pub fn bind_shared(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::from_std(crate::handover::bind_listener(address, true)?)
}

/// [`forward`] in the ingress's span: the trace's first hop on berth.
async fn through_ingress(
    route: Arc<super::table::Route>,
    port: usize,
    mut request: Request<Body>,
    client: Option<std::net::IpAddr>,
    wait: Duration,
) -> Response<Body> {
    let span = super::trace::Span::start(request.headers_mut(), || {
        format!("ingress {}/{}", route.key.namespace, route.key.name)
    });
    let response = forward(route, port, request, client, wait).await;
    span.end(response.status());
    response
}

fn prepare(
    request: Request<Incoming>,
    peer: SocketAddr,
    host: Option<HeaderValue>,
    https: bool,
) -> Request<Body> {
    let mut request = request.map(|body| {
        berth_serve::idle::IdleTimeout::new(body, berth_serve::idle::BODY_IDLE_TIMEOUT)
            .boxed_unsync()
    });
    add_forwarded(request.headers_mut(), peer.ip(), host, https);
    request
}

#[cfg(test)]
mod tests {
    use super::{host_name, lowercase, route_host};

    #[tokio::test]
    async fn a_published_port_is_refused_where_something_listens_already() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        assert!(super::listening_on(address));
        let err = super::bind_published(address).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        drop(taken);
        assert!(!super::listening_on(address));
        let published = super::bind_published(address).unwrap();
        // Another address on the same port stays open to berth (a virtual IP).
        let virtual_ip = std::net::SocketAddr::from(([127, 96, 0, 9], address.port()));
        let shared = super::bind_shared(virtual_ip).unwrap();
        drop((published, shared));
    }

    #[test]
    fn dot_segments_are_resolved_before_rules_see_a_path() {
        use super::without_dot_segments as clean;
        assert_eq!(clean("/public/../admin"), "/admin");
        assert_eq!(clean("/a/./b"), "/a/b");
        assert_eq!(clean("/../../etc"), "/etc");
        assert_eq!(clean("/a/b/.."), "/a/");
        assert_eq!(clean("/plain/path"), "/plain/path");
    }

    #[test]
    fn a_host_s_name_is_without_its_port() {
        assert_eq!(host_name("shop.example:8080"), "shop.example");
        assert_eq!(host_name("shop.example."), "shop.example");
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("shop.example"), "shop.example");
    }

    #[test]
    fn hosts_name_a_service_and_maybe_its_namespace() {
        let r = |h: &str| route_host(&lowercase(h)).map(|(ns, s)| format!("{ns}/{s}"));
        assert_eq!(r("web.localhost"), Some("default/web".into()));
        assert_eq!(r("web.localhost:8080"), Some("default/web".into()));
        assert_eq!(r("Web.Shop.LOCALHOST.:80"), Some("shop/web".into()));
        assert_eq!(r("localhost:8080"), None);
        assert_eq!(r(".localhost"), None);
        assert_eq!(r("a.b.c.localhost"), None);
        assert_eq!(r("example.com"), None);
        assert_eq!(r("127.0.0.1:8080"), None);
        assert_eq!(r("[::1]:8080"), None);
    }
}
