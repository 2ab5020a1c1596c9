//! The daemon, composed: the store and its shared state, the controllers,
//! the kubelet, the router's ingress and node ports, and the Kubernetes API
//! (HTTPS and the unix socket), wired together here and nowhere else, with
//! the control loop that drives the controllers, the kubelet and the
//! router's services from the store's watch. `berth daemon` and `berth up`
//! (cli/) configure and start it; each part depends only on what is below
//! it (api, controller, kubelet, router → state, spec, runtime).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::api::ApiState;
use crate::controller::Controllers;
use crate::kubelet::{Backoff, Kubelet};
use crate::runtime::wasm::WasmRuntime;
use crate::scheduler::Node;
use crate::spec::Kind;
use crate::state::Store;

/// How a daemon runs: its nodes, limits, listeners and back-off.
#[derive(Debug, Clone)]
pub struct Config {
    /// The nodes to schedule onto; none: one with this host's CPUs and memory.
    pub nodes: Vec<Node>,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub backoff_reset: Duration,
    /// The most pods a namespace may hold; none: as many as the nodes run.
    pub pod_quota: Option<u64>,
    /// Where the Kubernetes API listens over HTTPS; none: a free loopback port.
    pub api_listen: Option<std::net::SocketAddr>,
    /// More names for the API's certificate.
    pub tls_sans: Vec<String>,
    pub ingress: std::net::SocketAddr,
    pub ingress_tls: std::net::SocketAddr,
    pub node_port_range: std::ops::RangeInclusive<u16>,
    pub service_cidr: crate::state::ServiceNetwork,
    /// How long a request to a service with no ready endpoint waits for one.
    pub endpoint_wait: Duration,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// The host's resolver settings, which Linux pods' are made from.
    pub resolv_conf: std::path::PathBuf,
    /// Also serve `/metrics`, without auth, here.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Count each request through the router by service (on unless a
    /// benchmark measures what that costs).
    pub request_metrics: bool,
    /// How often pods' and the node's use is sampled (metrics.k8s.io,
    /// `kubectl top`, the autoscaler).
    pub metrics_resolution: Duration,
    /// How often each HorizontalPodAutoscaler is synced.
    pub hpa_sync_period: Duration,
    /// How long a request to a service scaled to zero waits for a replica.
    pub scale_from_zero_timeout: Duration,
    /// The EncryptionConfiguration sealing Secrets at rest; none: the
    /// home's `encryption.yaml`, made with a new key if missing.
    pub encryption_config: Option<std::path::PathBuf>,
    /// Take over from the daemon serving the same home: its listening
    /// sockets, then (once it has stopped) its store.
    pub take_over: bool,
}

/// How long a daemon taking over waits for its predecessor to stop: its
/// pods' grace periods, and then some.
const RELEASE_WAIT: Duration = Duration::from_secs(120);

/// How long a daemon that took over waits for the pods that were ready to
/// be ready again before its ingress accepts (requests queue meanwhile;
/// after it they wait for endpoints as any request does).
const READY_AGAIN_WAIT: Duration = Duration::from_secs(3);

/// How often the controllers look at everything, not only at what the
/// watch says changed.
const FULL_PASS_EVERY: Duration = Duration::from_secs(10);

/// Work run beside the daemon's loop (`berth up`'s), given the state and
/// the shutdown token; its exit code is the command's.
pub type Companion = Box<
    dyn FnOnce(
            Arc<ApiState>,
            CancellationToken,
            std::net::SocketAddr,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ExitCode> + Send>>
        + Send,
>;

/// Runs a daemon whose state, certificates, kubeconfig, socket and pods
/// are in `home` (images and compiled code are shared through
/// `$BERTH_HOME` whatever it is), its wasm pods on `wasm`, until
/// `shutdown`; then stops every pod gracefully. Call inside the async
/// runtime; keep `wasm` alive past it (its epoch ticker is what makes a
/// spinning guest yield, so the runtime's shutdown can drop its task).
pub async fn serve(
    mut args: Config,
    home: &std::path::Path,
    wasm: Arc<WasmRuntime>,
    shutdown: CancellationToken,
    companion: Option<Companion>,
) -> anyhow::Result<ExitCode> {
    // Another resolver file than the host's must be there, and is named
    // absolutely (pods start long after, perhaps from another directory).
    if args.resolv_conf != std::path::Path::new("/etc/resolv.conf") {
        args.resolv_conf = std::fs::canonicalize(&args.resolv_conf)
            .ok()
            .filter(|p| p.is_file())
            .with_context(|| {
                format!(
                    "--resolv-conf {}: not a file of resolver settings",
                    args.resolv_conf.display()
                )
            })?;
    }
    // It holds the store, whose Secrets no other user may read.
    crate::home::private_dir(home).with_context(|| format!("making {} private", home.display()))?;
    let db = home.join("state.db");
    // Secrets are in the store: the database and its journal files are the
    // owner's alone (SQLite gives the journals the database's mode).
    private_file(&db)?;
    for journal in ["state.db-wal", "state.db-shm"] {
        let path = home.join(journal);
        if path.exists() {
            private_file(&path)?;
        }
    }
    let api_address = args
        .api_listen
        .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    // A daemon that is not taking over holds the home before it writes
    // anything in it (a key, certificates): one refused changes nothing.
    let held = if args.take_over {
        None
    } else {
        Some(crate::handover::Lease::take(home, Duration::ZERO)?)
    };
    // Read before a predecessor is asked to stop: a daemon that cannot
    // start for its configuration leaves the one serving in place.
    let sealing = args
        .encryption_config
        .clone()
        .unwrap_or_else(|| home.join("encryption.yaml"));
    let sealer = crate::state::Sealer::load_or_make(&sealing, args.encryption_config.is_none())?;
    let key = sealer.writing_key().map(str::to_owned);
    let credentials = crate::api::pki::load_or_make(home, &args.tls_sans)
        .context("making the API's certificates and token")?;
    let (sockets, lease) = match held {
        Some(lease) => (crate::handover::Sockets::default(), lease),
        None => {
            let (predecessor, taken) = crate::handover::Successor::connect(home)?;
            tracing::info!(
                "taking over from the daemon serving {} ({} listening sockets)",
                home.display(),
                taken.len()
            );
            let sockets = crate::handover::Sockets::inherited(taken);
            // What this daemon listens on that the old one did not is bound
            // before the old one stops: a failure leaves it serving.
            let wanted = [
                ("ingress", Some(args.ingress)),
                ("ingress-tls", Some(args.ingress_tls)),
                ("api", Some(api_address)),
                ("metrics", args.metrics_listen),
            ];
            for (name, address) in wanted {
                if let Some(address) = address {
                    sockets
                        .prebind(name, address, crate::handover::bind_tcp)
                        .with_context(|| format!("binding {name} on {address}"))?;
                }
            }
            // Every Secret opens with this daemon's keys: checked while the
            // old one still serves, so a key left out stops only this one.
            crate::state::check_sealed(&db, &sealer).with_context(|| {
                format!(
                    "reading the store's Secrets as {} says (a key it no longer lists?)",
                    sealing.display()
                )
            })?;
            // The service is this process from here on: told before the
            // predecessor exits, or a unit would take its exit for the
            // service's and stop (systemd accepts MAINPID from any of the
            // unit's processes with NotifyAccess=all). READY follows once
            // this one serves.
            tell_service_manager(&[sd_notify::NotifyState::MainPid(std::process::id())]);
            predecessor.release(RELEASE_WAIT)?;
            let lease = crate::handover::Lease::take(home, Duration::from_secs(10))?;
            (sockets, lease)
        }
    };
    let sockets = Arc::new(sockets);
    let mut store = Store::open(&db).with_context(|| format!("opening {}", db.display()))?;
    let resealed = store.seal_with(sealer).with_context(|| {
        format!(
            "sealing the store's Secrets as {} says (a key it no longer lists?)",
            sealing.display()
        )
    })?;
    if !resealed.is_empty() {
        tracing::info!(
            "stored {} objects again as {} says (key {}): {}",
            resealed.len(),
            sealing.display(),
            key.as_deref().unwrap_or("none: identity"),
            resealed.join(", ")
        );
    }
    store.set_node_port_range(args.node_port_range.clone());
    store.set_service_network(args.service_cidr);
    let state = Arc::new(ApiState {
        store: parking_lot::Mutex::new(store),
        changed: tokio::sync::Notify::new(),
        urgent: std::sync::atomic::AtomicBool::new(false),
        pods_dir: home.join("pods"),
    });
    let nodes = if args.nodes.is_empty() {
        vec![Node::host()]
    } else {
        args.nodes
    };
    let socket = crate::api::socket_in(home);
    let listener = sockets
        .unix("api-socket", || crate::api::bind(&socket)?.into_std())
        .and_then(tokio::net::UnixListener::from_std)
        .with_context(|| format!("binding {}", socket.display()))?;
    let mut metrics = crate::metrics::Metrics::new();
    let activator: Arc<dyn crate::router::Activator> = Arc::new(
        crate::controller::autoscaler::Activation::new(state.clone(), args.scale_from_zero_timeout),
    );
    let table = Arc::new(crate::router::Table::new(
        args.request_metrics.then(|| metrics.http.clone()),
        Some(activator),
    ));
    metrics.register_collector(Box::new(crate::metrics::PodsCollector {
        table: table.clone(),
        state: state.clone(),
    }));
    let control = crate::metrics::ControllerMetrics::register(metrics.registry_mut());
    let metrics = Arc::new(metrics);
    let usage = crate::metrics::UsageHistory::new(args.metrics_resolution);
    let sampler = tokio::spawn(usage.clone().run(table.clone(), shutdown.clone()));
    let mut autoscalers =
        crate::controller::autoscaler::Autoscalers::new(usage.clone(), args.hpa_sync_period);
    let metrics_listener = match args.metrics_listen {
        Some(address) => Some(
            sockets
                .tcp("metrics", address, crate::handover::bind_tcp)
                .and_then(tokio::net::TcpListener::from_std)
                .with_context(|| format!("binding metrics on {address} (see --metrics-listen)"))?,
        ),
        None => None,
    };
    let (ingress, ingress_address) = crate::router::Ingress::bind(
        table.clone(),
        sockets.clone(),
        args.ingress,
        args.endpoint_wait,
        shutdown.clone(),
        Duration::from_secs(30),
        args.header_timeout,
        args.service_cidr.to_string(),
    )
    .with_context(|| format!("binding the ingress on {} (see --ingress)", args.ingress))?;
    let ingress_tls = ingress.bind_tls(args.ingress_tls).with_context(|| {
        format!(
            "binding the ingress's HTTPS listener on {} (see --ingress-tls)",
            args.ingress_tls
        )
    })?;

    let node_names = nodes.iter().map(|n| n.name.clone()).collect();
    let nodes_for_api = nodes.clone();
    let mut controllers = Controllers::new(nodes);
    if let Some(quota) = args.pod_quota {
        controllers.pod_quota = quota;
    }
    controllers.job_backoff = (args.backoff_base, args.backoff_cap);
    controllers.volumes_dir = Some(home.join("volumes"));
    let mut kubelet = Kubelet::new(
        state.clone(),
        wasm.clone(),
        node_names,
        state.pods_dir.clone(),
        Backoff {
            base: args.backoff_base,
            cap: args.backoff_cap,
            reset: args.backoff_reset,
        },
        crate::kubelet::Routing {
            table: table.clone(),
            endpoint_wait: args.endpoint_wait,
            ingress: ingress.clone(),
            resolv_conf: args.resolv_conf.clone(),
        },
    );
    // Taking over, the pods' statuses stand: the predecessor ran them until
    // a moment ago, and this daemon's kubelet starts them again at once.
    let ready_before = if args.take_over {
        kubelet.ready_pods()
    } else {
        kubelet.forget_running();
        Vec::new()
    };
    kubelet.close_stale_networks();
    kubelet.remove_orphan_dirs();
    let kube = Arc::new(crate::api::KubeApi {
        state: state.clone(),
        nodes: nodes_for_api,
        started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        shutdown: shutdown.clone(),
        execs: kubelet.exec_targets(),
        pod_quota: controllers.pod_quota,
        metrics: metrics.clone(),
        usage: usage.clone(),
    });
    let api_listener = sockets
        .tcp("api", api_address, crate::handover::bind_tcp)
        .and_then(tokio::net::TcpListener::from_std)
        .with_context(|| {
            format!("binding the Kubernetes API on {api_address} (see --api-listen)")
        })?;
    let api_bound = api_listener.local_addr()?;
    let kubeconfig = crate::api::pki::kubeconfig_path(home);
    crate::api::pki::write_private(
        &kubeconfig,
        crate::api::pki::kubeconfig(&credentials, api_bound).as_bytes(),
    )
    .context("writing the kubeconfig")?;
    // The dashboard, on its own host of the ingress and under /ui/ on the
    // API port; its sign-in links are minted through the API.
    let history = Arc::new(crate::dashboard::History::default());
    let history_task = tokio::spawn(history.clone().keep(
        metrics.http.clone(),
        table.clone(),
        shutdown.clone(),
    ));
    let dashboard = crate::dashboard::Dashboard::new(
        crate::api::kube_router(kube.clone()),
        history,
        ingress_address,
        api_bound,
        shutdown.clone(),
    );
    ingress.serve_own_host(crate::dashboard::HOST, dashboard.for_ingress());
    let https_api = tokio::spawn(crate::api::serve_tls(
        api_listener,
        credentials.server.clone(),
        dashboard.under_ui().merge(crate::api::with_token(
            crate::api::kube_router(kube.clone()).merge(dashboard.admin_router()),
            credentials.token.clone(),
        )),
        shutdown.clone(),
    ));
    // The socket's owner is trusted: the Kubernetes API without a token.
    let api = tokio::spawn(
        axum::serve(
            listener,
            crate::api::kube_router(kube.clone()).merge(dashboard.admin_router()),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future(),
    );
    let offer = crate::handover::Offer::listen(home, sockets.clone(), {
        let shutdown = shutdown.clone();
        move || {
            tracing::info!("a new daemon takes over: stopping");
            shutdown.cancel();
        }
    })?;
    // Scripts and tests read this line to know the daemon is up.
    println!("berth: daemon serving {}", socket.display());
    println!(
        "berth: Kubernetes API on https://{api_bound}/ (KUBECONFIG={})",
        kubeconfig.display()
    );
    println!("berth: ingress on http://{ingress_address}/");
    let metrics_task = match metrics_listener {
        Some(listener) => {
            println!(
                "berth: metrics on http://{}/metrics",
                listener.local_addr()?
            );
            Some(tokio::spawn(
                metrics.clone().serve(listener, shutdown.clone()),
            ))
        }
        None => None,
    };
    println!("berth: ingress (TLS) on https://{ingress_tls}/");
    let companion =
        companion.map(|c| tokio::spawn(c(state.clone(), shutdown.clone(), ingress_address)));
    let mut routed = None;
    let mut policed = None;
    let mut opening = Some(ready_before);
    // The controllers work from the store's watch: what changed since
    // their last pass, with a pass over everything at start and on a
    // slow tick.
    let mut changes = {
        let store = state.store.lock();
        let now = store.current_version()?;
        store
            .hub()
            .subscribe(now)
            .map_err(|e| anyhow::anyhow!("watching the store from {now}: {e:?}"))?
    };
    let mut work = crate::controller::Work::everything();
    let mut swept = std::time::Instant::now();
    // When the change the next pass handles was noticed.
    let mut noticed: Option<std::time::Instant> = None;
    loop {
        let pass = std::time::Instant::now();
        if let Some(at) = noticed.take() {
            control.waited(pass.duration_since(at));
        }
        if swept.elapsed() >= FULL_PASS_EVERY {
            work.everything_too();
            swept = pass;
            if let Err(e) = state.store.lock().expire_events(crate::state::EVENT_TTL) {
                tracing::error!("expiring events: {e}");
            }
        }
        // A few rounds, each feeding the next, the store's lock taken
        // per round so requests are answered in between.
        for _ in 0..8 {
            let mut store = state.store.lock();
            match controllers.reconcile_round(&mut store, &mut work, &mut changes) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::error!("reconciling: {e}");
                    work.everything_too();
                    break;
                }
            }
        }
        match autoscalers.sync(&mut state.store.lock()) {
            Ok(true) => state.changed.notify_one(),
            Ok(false) => {}
            Err(e) => tracing::error!("autoscaling: {e}"),
        }
        kubelet.sync();
        sync_routes(&state, &table, &ingress, ingress_address, &mut routed);
        sync_network_policies(&state, &table, &ingress, &mut policed);
        if let Some(ready_before) = opening.take() {
            // The routes are known now; what a predecessor handed over and
            // no route took is not wanted. (Pods' host ports are taken as
            // their pods start: those wait for them, see open_when_ready.)
            for name in sockets.forget_inherited(|name| !name.starts_with(HOST_PORT_SOCKETS)) {
                tracing::info!("closed {name}, handed over but no longer wanted");
            }
            tokio::spawn(open_when_ready(
                ingress.clone(),
                table.clone(),
                ready_before,
                sockets.clone(),
                shutdown.clone(),
            ));
        }
        let took = pass.elapsed();
        control.pass(took);
        control.queues(&work.depth());
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = state.changed.notified() => {
                noticed = Some(std::time::Instant::now());
                // Changes come in bursts (a pod starting per few ms):
                // gather them into one pass, and when passes grow long
                // (thousands of pods), leave the pods as much time to
                // start as the pass took. Unless a request waits on it.
                if !state.urgent.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(took.max(Duration::from_millis(20))).await;
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    let handing_over = offer.close();
    // Handing over, the successor is the service now (it said so, with its
    // pid): the service is not stopping.
    if !handing_over {
        tell_service_manager(&[sd_notify::NotifyState::Stopping]);
    }
    if handing_over {
        // The successor adopts the Linux containers as they run.
        kubelet.leave_running();
    } else {
        // No successor holds the sockets: closed with their listeners, so
        // clients are refused, not kept waiting.
        sockets.withdraw_all();
    }
    // The requests in flight at the front door are answered before the
    // pods behind it stop.
    ingress.front_closed().await;
    tracing::info!("shutting down: stopping pods");
    kubelet.stop_all().await;
    ingress.stopped().await;
    let _ = api.await;
    let _ = https_api.await;
    let _ = sampler.await;
    let _ = history_task.await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    if !handing_over {
        let _ = std::fs::remove_file(&socket);
    }
    let code = match companion {
        Some(task) => task.await.unwrap_or(ExitCode::FAILURE),
        None => ExitCode::SUCCESS,
    };
    // `up` deletes its pods on the way out: their logs and volumes go too.
    kubelet.remove_orphan_dirs();
    // Last: the successor writes the store from the moment it hears, and
    // a request of ours still under way must not write it behind its back.
    state.store.lock().close();
    drop(lease);
    offer.stopped();
    Ok(code)
}

/// Opens `ingress` once the pods in `ready_before` (a predecessor's, by
/// uid) are ready in `table` again, or after [`READY_AGAIN_WAIT`]:
/// requests queue in the kernel meanwhile rather than meet a daemon with
/// no endpoints yet.
async fn open_when_ready(
    ingress: Arc<crate::router::Ingress>,
    table: Arc<crate::router::Table>,
    ready_before: Vec<String>,
    sockets: Arc<crate::handover::Sockets>,
    shutdown: CancellationToken,
) {
    let started = std::time::Instant::now();
    let mut waiting = ready_before;
    while !waiting.is_empty() && started.elapsed() < READY_AGAIN_WAIT && !shutdown.is_cancelled() {
        waiting.retain(|uid| !table.is_pod_ready(uid));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if !waiting.is_empty() {
        tracing::warn!(
            "{} pods not ready again after {:?}; the ingress opens anyway",
            waiting.len(),
            started.elapsed()
        );
    }
    tracing::debug!("ingress open after {:?}", started.elapsed());
    ingress.open();
    tell_service_manager(&[
        sd_notify::NotifyState::MainPid(std::process::id()),
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
    // A pod not ready when handed over (backing off, or slow to start)
    // takes its host port later: kept a while, queueing its clients,
    // rather than closed under them.
    tokio::select! {
        () = tokio::time::sleep(HOST_PORT_CLAIM_WAIT.saturating_sub(started.elapsed())) => {}
        () = shutdown.cancelled() => {}
    }
    for name in sockets.forget_inherited(|name| name.starts_with(HOST_PORT_SOCKETS)) {
        tracing::info!("closed {name}, handed over but no pod took it");
    }
}

/// Tells systemd (a `Type=notify` unit's `$NOTIFY_SOCKET`; nothing when
/// unset) how the daemon is. A successor taking over says `MAINPID` with
/// its own pid, so a unit with `NotifyAccess=all` follows it across a
/// hot restart instead of stopping when the predecessor exits.
fn tell_service_manager(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("telling systemd (NOTIFY_SOCKET): {e}");
    }
}

/// How the sockets of pods' host ports are named (see `Ingress::host_port`).
const HOST_PORT_SOCKETS: &str = "hostport ";

/// How long a host port handed over waits for its pod to take it.
const HOST_PORT_CLAIM_WAIT: Duration = Duration::from_secs(30);

/// `path` as a file only its owner may read, made empty if missing.
fn private_file(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))
}

/// Keeps the router's services those of the store.
/// Routes by the ingresses berth serves, and says where they answer
/// (`status.loadBalancer`), as an ingress controller does.
fn set_ingresses(
    state: &ApiState,
    table: &crate::router::Table,
    ingress: &crate::router::Ingress,
    records: &[crate::state::Record],
    address: std::net::SocketAddr,
) {
    use k8s_openapi::api::networking::v1::{
        IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
    };
    let ingresses: Vec<&crate::spec::objects::Ingress> = records
        .iter()
        .filter_map(|r| match &r.object {
            crate::spec::Object::Ingress(i) => Some(&**i),
            _ => None,
        })
        .collect();
    table.set_ingresses(crate::router::IngressRules::new(ingresses.iter().copied()));
    ingress.set_certificates(certificates(state, &ingresses));
    let served = crate::spec::Status::Ingress(IngressStatus {
        load_balancer: Some(IngressLoadBalancerStatus {
            ingress: Some(vec![IngressLoadBalancerIngress {
                ip: Some(address.ip().to_string()),
                ..IngressLoadBalancerIngress::default()
            }]),
        }),
    });
    let mut store = state.store.lock();
    for (record, ingress) in records.iter().zip(&ingresses) {
        if ingress.served() && record.status != served {
            let ns = record.object.namespace().unwrap_or("default");
            if let Err(e) = store.set_status(Kind::Ingress, ns, &ingress.metadata.name, &served) {
                tracing::warn!(
                    "ingress {ns}/{}: writing its status: {e}",
                    ingress.metadata.name
                );
            }
        }
    }
}

/// The certificates of the served ingresses' `spec.tls`: each Secret
/// (`kubernetes.io/tls`, the ingress's namespace) for the hosts listed, or
/// for any host when none are. A Secret missing or unusable is a warning
/// event on the ingress, and its hosts get no certificate.
fn certificates(
    state: &ApiState,
    ingresses: &[&crate::spec::objects::Ingress],
) -> crate::router::CertificateSet {
    let mut set = crate::router::CertificateSet::default();
    let mut store = state.store.lock();
    let mut warnings = Vec::new();
    for ingress in ingresses.iter().filter(|i| i.served()) {
        let ns = ingress.metadata.namespace.as_deref().unwrap_or("default");
        for tls in &ingress.spec.tls {
            let Some(secret_name) = &tls.secret_name else {
                continue;
            };
            let secret = match store.get(Kind::Secret, ns, secret_name) {
                Ok(Some(record)) => match record.object {
                    crate::spec::Object::Secret(secret) => Some(secret),
                    _ => None,
                },
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!("reading secret {ns}/{secret_name}: {e}");
                    continue;
                }
            };
            let key = secret
                .ok_or_else(|| format!("secret {ns}/{secret_name} not found"))
                .and_then(|secret| {
                    let field = |name: &str| {
                        secret
                            .data
                            .get(name)
                            .and_then(|v| crate::spec::load::base64_decode(v))
                            .or_else(|| secret.string_data.get(name).map(|v| v.as_bytes().to_vec()))
                            .ok_or_else(|| format!("secret {ns}/{secret_name} has no {name}"))
                    };
                    crate::router::certified_key(&field("tls.crt")?, &field("tls.key")?)
                        .map_err(|e| format!("secret {ns}/{secret_name}: {e}"))
                });
            match key {
                Ok(key) if tls.hosts.is_empty() => {
                    set.fallback.get_or_insert(key);
                }
                Ok(key) => {
                    for host in &tls.hosts {
                        set.by_host
                            .entry(host.to_ascii_lowercase())
                            .or_insert_with(|| key.clone());
                    }
                }
                Err(message) => warnings.push(crate::state::Event {
                    time: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                        .to_string(),
                    namespace: ns.to_owned(),
                    kind: "Ingress".into(),
                    name: ingress.metadata.name.clone(),
                    kind_of_event: "Warning".into(),
                    reason: "BadCertificate".into(),
                    message,
                    uid: None,
                }),
            }
        }
    }
    // Said once, not on every route sync the same Secret is still bad in.
    for warning in &warnings {
        if let Err(e) = store.record_event_unless_repeated(warning) {
            tracing::warn!("recording ingress events: {e}");
        }
    }
    set
}

/// The objects of `kinds` when `version` (of the store) moved since
/// `synced`; `None` when it did not, or the store failed (said, and tried
/// again next pass).
fn listed_if_changed(
    state: &ApiState,
    synced: &mut Option<(u64, u64)>,
    version: impl FnOnce(&crate::state::Store) -> (u64, u64),
    kinds: [Kind; 2],
) -> Option<(Vec<crate::state::Record>, Vec<crate::state::Record>)> {
    let listed = {
        let store = state.store.lock();
        let now = version(&store);
        if *synced == Some(now) {
            return None;
        }
        *synced = Some(now);
        store
            .list(kinds[0], None)
            .and_then(|first| Ok((first, store.list(kinds[1], None)?)))
    };
    match listed {
        Ok(records) => Some(records),
        Err(e) => {
            tracing::error!("listing {}s and {}s: {e}", kinds[0], kinds[1]);
            *synced = None;
            None
        }
    }
}

/// Puts the store's NetworkPolicies in force in the router, with the
/// namespaces' labels their namespace selectors match, when either (or a
/// pod) changed.
fn sync_network_policies(
    state: &ApiState,
    table: &crate::router::Table,
    ingress: &Arc<crate::router::Ingress>,
    synced: &mut Option<(u64, u64)>,
) {
    // Pods' labels too: a Linux pod's own egress limit follows them.
    let version = |store: &crate::state::Store| {
        (
            store.spec_version_of(Kind::NetworkPolicy),
            store.spec_version_of(Kind::Namespace) + store.spec_version_of(Kind::Pod),
        )
    };
    let Some((policies, namespaces)) = listed_if_changed(
        state,
        synced,
        version,
        [Kind::NetworkPolicy, Kind::Namespace],
    ) else {
        return;
    };
    let policies: Vec<&crate::spec::objects::NetworkPolicy> = policies
        .iter()
        .filter_map(|r| match &r.object {
            crate::spec::Object::NetworkPolicy(p) => Some(&**p),
            _ => None,
        })
        .collect();
    let namespaces = namespaces.into_iter().map(|r| {
        let meta = r.object.metadata();
        (meta.name.clone(), meta.labels.clone())
    });
    table.set_network_policies(crate::router::NetworkPolicies::new(policies, namespaces));
    // Each Linux pod's changed limit is an nft run: off the daemon's loop.
    let ingress = ingress.clone();
    tokio::task::spawn_blocking(move || ingress.police_pod_networks());
}

fn sync_routes(
    state: &ApiState,
    table: &crate::router::Table,
    ingress: &Arc<crate::router::Ingress>,
    address: std::net::SocketAddr,
    synced: &mut Option<(u64, u64)>,
) {
    // A Secret's change may be an ingress's certificate's.
    let version = |store: &crate::state::Store| {
        (
            store.spec_version_of(Kind::Service),
            store.spec_version_of(Kind::Ingress) + store.spec_version_of(Kind::Secret),
        )
    };
    let Some((services, ingresses)) =
        listed_if_changed(state, synced, version, [Kind::Service, Kind::Ingress])
    else {
        return;
    };
    let services: Vec<crate::spec::objects::Service> = services
        .into_iter()
        .filter_map(|r| match r.object {
            crate::spec::Object::Service(s) => Some(s),
            _ => None,
        })
        .collect();
    set_ingresses(state, table, ingress, &ingresses, address);
    table.set_services(&services);
    if !ingress.sync_service_ports() {
        // Again next pass, changes or not.
        *synced = None;
    }
}
