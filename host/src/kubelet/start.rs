//! Starting one pod: each container resolved to a component and the
//! capabilities its spec grants, started on the wasm runtime and served on
//! a loopback listener of its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_registry::client::{
    Client, ClientOptions, Credentials, DEFAULT_CHUNK_SIZE, Quiet, Remote,
};
use berth_registry::{ContentStore, Reference};
use tokio_util::sync::CancellationToken;

use super::sandbox::Sandbox;
use super::{Context, StartFailure};
use crate::image;
use crate::image::materialize::{Materialized, materialize};
use crate::image::model::Image;
use crate::runtime::{
    Capabilities, DirGrant, Limits, LogFile, OutboundRule, Runtime as _, WorkloadSpec,
};
use crate::spec::Kind;
use crate::spec::Object;
use crate::spec::objects::{
    Container, OUTBOUND_ANNOTATION, Pod, PodField, PullPolicy, SERVICES_ANNOTATION, Volume,
};

/// An image ready to start, for the runtime its platform needs.
#[derive(Debug, Clone)]
pub(crate) enum Ready {
    Wasm(Materialized),
    Linux {
        rootfs: PathBuf,
        run: crate::image::model::RunConfig,
    },
}

pub(crate) struct Running {
    pub name: String,
    pub image: String,
    pub endpoint: SocketAddr,
    pub ports: Vec<crate::spec::objects::ContainerPort>,
    pub workload: Arc<dyn crate::runtime::Workload>,
    pub serving: tokio::task::JoinHandle<()>,
    /// A Linux container's network and pid 1, for its probes.
    pub linux: Option<(
        crate::runtime::linux::NetnsConnector,
        crate::runtime::linux::ContainerPids,
    )>,
}

impl Running {
    /// Makes `task` (a listener of the container's) part of its serving:
    /// awaiting `serving` awaits it too.
    fn serving_too(&mut self, task: tokio::task::JoinHandle<()>) {
        let own = std::mem::replace(&mut self.serving, tokio::spawn(async {}));
        self.serving = tokio::spawn(async move {
            let _ = own.await;
            let _ = task.await;
        });
    }
}

fn failure(reason: &'static str, message: impl Into<String>) -> StartFailure {
    StartFailure {
        reason,
        message: message.into(),
    }
}

/// Starts the app containers of `pod`; on any failure, stops those
/// started.
pub(crate) async fn start(
    context: &Context,
    sandbox: &Sandbox,
    pod: &Pod,
    cancel: CancellationToken,
    grace: Duration,
    restarts: u32,
) -> Result<Vec<Running>, StartFailure> {
    // Bound before anything starts, so a port in use is said first.
    let host_ports = bind_host_ports(context, pod, &sandbox.leave)?;
    let mut running = Vec::new();
    for container in &pod.spec.containers {
        match start_one(
            context,
            sandbox,
            pod,
            container,
            cancel.clone(),
            grace,
            restarts,
        )
        .await
        {
            Ok(r) => running.push(r),
            Err(e) => {
                cancel.cancel();
                for r in running {
                    let _ = r.serving.await;
                }
                return Err(e);
            }
        }
    }
    serve_wasm_ports_in_pod_network(sandbox, &mut running, &cancel, grace);
    serve_host_ports(
        context,
        sandbox,
        pod,
        host_ports,
        &mut running,
        &cancel,
        grace,
    );
    Ok(running)
}

/// Starts one container of `pod` (an app container, an init container or
/// a sidecar), its `run`th: its ports answer on the pod's localhost.
pub(crate) async fn start_one(
    context: &Context,
    sandbox: &Sandbox,
    pod: &Pod,
    container: &Container,
    cancel: CancellationToken,
    grace: Duration,
    run: u32,
) -> Result<Running, StartFailure> {
    let r = start_container(context, sandbox, pod, container, cancel, grace, run).await?;
    sandbox
        .ports
        .started(r.ports.iter().map(|p| p.container_port), &r.workload);
    Ok(r)
}

/// A container port published on the host (`hostPort`): its listener.
struct HostPort {
    container: String,
    port: u16,
    /// The container port's name, for NetworkPolicies that name it.
    port_name: Option<String>,
    listener: tokio::net::TcpListener,
    /// Offered to a successor while served (and when the run is left
    /// running for one).
    offer: crate::router::HostPortOffer,
}

/// Listeners for the pod's `hostPort`s, on `hostIP` or all addresses: the
/// ones a predecessor handed over, else bound now.
fn bind_host_ports(
    context: &Context,
    pod: &Pod,
    leave: &Arc<std::sync::atomic::AtomicBool>,
) -> Result<Vec<HostPort>, StartFailure> {
    let mut bound = Vec::new();
    // On the host's network its processes bind their ports themselves.
    if pod.spec.host_network {
        return Ok(bound);
    }
    for container in &pod.spec.containers {
        for port in &container.ports {
            let Some(host_port) = port.host_port else {
                continue;
            };
            let ip = match port.host_ip.as_deref() {
                Some(ip) => ip.parse().map_err(|_| {
                    failure(
                        "RunContainerError",
                        format!("hostIP {ip:?} is not an IP address"),
                    )
                })?,
                None => std::net::IpAddr::from([0, 0, 0, 0]),
            };
            let address = SocketAddr::new(ip, host_port);
            let (listener, offer) =
                context
                    .ingress
                    .host_port(address, leave.clone())
                    .map_err(|e| {
                        failure(
                            "RunContainerError",
                            format!(
                                "container {}: hostPort {host_port} on {address}: {e}",
                                container.name
                            ),
                        )
                    })?;
            bound.push(HostPort {
                container: container.name.clone(),
                port: port.container_port,
                port_name: port.name.clone(),
                listener,
                offer,
            });
        }
    }
    Ok(bound)
}

/// Serves each `hostPort` until the pod stops: a Linux container's
/// connections carried into its network, a wasm container's served HTTP.
/// Each is its container's own: awaiting the container's `serving` awaits
/// it too, so its connections are answered before berth lets go. Its
/// clients are not pods: the pod's NetworkPolicies let them in only by an
/// `ipBlock`, as for the ingress's.
fn serve_host_ports(
    context: &Context,
    sandbox: &Sandbox,
    pod: &Pod,
    ports: Vec<HostPort>,
    running: &mut [Running],
    cancel: &CancellationToken,
    grace: Duration,
) {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    for HostPort {
        container,
        port,
        port_name,
        listener,
        offer,
    } in ports
    {
        let Some(running) = running.iter_mut().find(|r| r.name == container) else {
            continue;
        };
        let workload = running.workload.clone();
        let cancel = cancel.clone();
        let (table, uid, ns, labels) = (
            context.routes.clone(),
            pod_uid(&sandbox.dir),
            namespace.to_owned(),
            pod.metadata.labels.clone(),
        );
        let admit = move |peer: SocketAddr| {
            table.admits_host_client(&uid, &ns, &labels, port, port_name.as_deref(), peer.ip())
        };
        let served = if running.linux.is_some() {
            let name = format!(
                "hostPort {} of pod {namespace}/{} (container port {port})",
                listener.local_addr().map_or(0, |a| a.port()),
                pod.metadata.name
            );
            tokio::spawn(async move {
                crate::router::publish(
                    name,
                    listener,
                    move || {
                        workload.connect(Some(port)).unwrap_or_else(|| {
                            Box::pin(async {
                                Err(std::io::Error::other("the container takes no connections"))
                            })
                        })
                    },
                    admit,
                    cancel,
                )
                .await;
                drop(offer);
            })
        } else {
            tokio::spawn(async move {
                crate::router::serve_published(listener, workload, admit, cancel, grace).await;
                drop(offer);
            })
        };
        running.serving_too(served);
    }
}

/// A Linux container's `127.0.0.1:PORT` is the pod's too: where a wasm
/// container of the pod declares PORT, berth listens on it inside the
/// pod's network namespace and hands each connection to the guest. A port
/// that cannot be bound there (a process of the pod took it) is logged.
/// The listeners are the container's own: awaiting its `serving` awaits
/// them too, so a next run of it finds its ports free.
pub(crate) fn serve_wasm_ports_in_pod_network(
    sandbox: &Sandbox,
    running: &mut [Running],
    cancel: &CancellationToken,
    grace: Duration,
) {
    let Some(netns) = sandbox.network() else {
        return;
    };
    for wasm in running.iter_mut().filter(|r| r.linux.is_none()) {
        let mut listeners = Vec::new();
        for port in &wasm.ports {
            let v4 = SocketAddr::from(([127, 0, 0, 1], port.container_port));
            let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port.container_port));
            for address in [v4, v6] {
                let listener = crate::runtime::linux::listen_in(&netns, address)
                    .and_then(tokio::net::TcpListener::from_std);
                match listener {
                    Ok(listener) => {
                        listeners.push(tokio::spawn(crate::router::serve(
                            listener,
                            wasm.workload.clone(),
                            cancel.clone(),
                            grace,
                            None,
                        )));
                    }
                    // A host without IPv6 has no ::1 to listen on.
                    Err(e) if address.is_ipv6() => tracing::debug!(
                        container = %wasm.name,
                        "listening on {address} in the pod's network: {e}"
                    ),
                    Err(e) => tracing::warn!(
                        container = %wasm.name,
                        "listening on {address} in the pod's network: {e}"
                    ),
                }
            }
        }
        for listener in listeners {
            wasm.serving_too(listener);
        }
    }
}

async fn start_container(
    context: &Context,
    sandbox: &Sandbox,
    pod: &Pod,
    container: &Container,
    cancel: CancellationToken,
    grace: Duration,
    restarts: u32,
) -> Result<Running, StartFailure> {
    let dir = sandbox.dir.as_path();
    let ready = match ensure_image(
        context,
        &pod_uid(&sandbox.dir),
        pod,
        &container.image,
        container.image_pull_policy,
    )
    .await?
    {
        Ready::Wasm(ready) => ready,
        Ready::Linux { rootfs, run } => {
            return start_linux(
                context, sandbox, pod, container, cancel, grace, restarts, rootfs, run,
            )
            .await;
        }
    };
    // A wasm guest has no Linux capabilities to be given: it can only do
    // what its grants allow (users, root filesystem and dropped
    // capabilities it has none of, so those settings hold already).
    if container
        .security_context
        .as_ref()
        .and_then(|c| c.capabilities.as_ref())
        .is_some_and(|c| !c.add.is_empty())
    {
        return Err(failure(
            "CreateContainerConfigError",
            format!(
                "container {}: securityContext.capabilities.add: a wasm guest has no Linux \
                 capabilities; grant it what it needs (outbound hosts, volumes) instead",
                container.name
            ),
        ));
    }
    // Nor processes to run a command in: an exec probe would be a TCP
    // check in disguise, so it is refused, naming the probe.
    let probes = [
        ("startupProbe", &container.startup_probe),
        ("readinessProbe", &container.readiness_probe),
        ("livenessProbe", &container.liveness_probe),
    ];
    if let Some((which, _)) = probes
        .iter()
        .find(|(_, p)| p.as_ref().is_some_and(|p| p.exec.is_some()))
    {
        return Err(failure(
            "CreateContainerConfigError",
            format!(
                "container {}: {which}.exec: a wasm guest has no processes to run a command in; \
                 probe it with httpGet (or tcpSocket) instead",
                container.name
            ),
        ));
    }
    let (pod_owned, container_owned, dir_owned) = (pod.clone(), container.clone(), dir.to_owned());
    let state = context.state.clone();
    let mut spec = tokio::task::spawn_blocking(move || {
        workload_spec(&state, &pod_owned, &container_owned, &dir_owned, ready)
    })
    .await
    .map_err(|e| failure("CreateContainerError", e.to_string()))??;
    // One log per run of the container: `logs --previous` reads the one before.
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let services = crate::router::PodServices::new(
        context.routes.clone(),
        namespace,
        pod.metadata
            .annotations
            .get(SERVICES_ANNOTATION)
            .map(String::as_str),
        context.endpoint_wait,
    )
    .map_err(|e| failure("CreateContainerConfigError", e))?
    .with_pod_ports(sandbox.ports.clone())
    .as_pod(&pod.metadata.name);
    spec.capabilities.services = Some(Arc::new(services));
    let log = super::log_path(dir, &container.name, restarts);
    spec.log = Some(Arc::new(LogFile::new(log)));
    let workload = context
        .runtime
        .start(spec)
        .await
        .map_err(|e| failure("RunContainerError", e.to_string()))?;
    serve_container(container, workload, cancel, grace).await
}

/// A listener on a loopback port of its own. Ports are taken in turn from
/// the kernel's ephemeral range rather than asked of it (port 0): its
/// search for a free port grows with the ports taken, and ten thousand
/// pods' listeners made it a quarter of their start.
fn bind_loopback() -> std::io::Result<tokio::net::TcpListener> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static RANGE: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    let (low, high) = *RANGE.get_or_init(|| {
        // Daemons side by side start at different places.
        NEXT.store(fastrand::u32(..), Ordering::Relaxed);
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|text| {
                let mut ports = text.split_whitespace().map(str::parse::<u32>);
                match (ports.next(), ports.next()) {
                    (Some(Ok(low)), Some(Ok(high))) if 0 < low && low <= high && high <= 65535 => {
                        Some((low, high))
                    }
                    _ => None,
                }
            })
            .unwrap_or((32768, 60999))
    });
    let span = high - low + 1;
    for _ in 0..64 {
        let port = low + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        match std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            Ok(listener) => {
                listener.set_nonblocking(true)?;
                return tokio::net::TcpListener::from_std(listener);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(e),
        }
    }
    // Crowded: the kernel finds one.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// A loopback listener of the container's own (for probes and `ps`), and
/// its Running record.
async fn serve_container(
    container: &Container,
    workload: Arc<dyn crate::runtime::Workload>,
    cancel: CancellationToken,
    grace: Duration,
) -> Result<Running, StartFailure> {
    let listener =
        bind_loopback().map_err(|e| failure("RunContainerError", format!("listening: {e}")))?;
    let endpoint = listener
        .local_addr()
        .map_err(|e| failure("RunContainerError", e.to_string()))?;
    let serving = tokio::spawn(crate::router::serve(
        listener,
        workload.clone(),
        cancel,
        grace,
        None,
    ));
    Ok(Running {
        name: container.name.clone(),
        image: container.image.clone(),
        endpoint,
        ports: container.ports.clone(),
        workload,
        serving,
        linux: None,
    })
}

/// A Linux container: its process in namespaces of its own (the network
/// one shared with the pod's first container), its output into the log.
#[expect(clippy::too_many_arguments, reason = "a container start is these")]
async fn start_linux(
    context: &Context,
    sandbox: &Sandbox,
    pod: &Pod,
    container: &Container,
    cancel: CancellationToken,
    grace: Duration,
    restarts: u32,
    rootfs: PathBuf,
    run: crate::image::model::RunConfig,
) -> Result<Running, StartFailure> {
    use crate::runtime::linux::{self, ContainerSpec, Output, cgroup, config::Network, plan};
    let dir = sandbox.dir.as_path();
    let LinuxSecurity {
        user,
        capabilities,
        read_only_root,
    } = linux_security(pod, container, dir, run.user.as_deref().unwrap_or_default())?;
    let (state, pod_owned, container_owned, dir_owned) = (
        context.state.clone(),
        pod.clone(),
        container.clone(),
        dir.to_owned(),
    );
    let (env, mounts) = tokio::task::spawn_blocking(move || {
        let env = container_env(&state, &pod_owned, &pod_uid(&dir_owned), &container_owned)?;
        let mounts = volume_mounts(&state, &pod_owned, &container_owned, &dir_owned)?;
        share_empty_dirs(&pod_owned, &dir_owned)?;
        Ok::<_, StartFailure>((env, mounts))
    })
    .await
    .map_err(|e| failure("CreateContainerError", e.to_string()))??;
    let network = if pod.spec.host_network {
        Network::Host
    } else {
        match sandbox.network() {
            Some(path) => Network::Join(path),
            None => Network::Own,
        }
    };
    let mut mounts = mounts;
    // The pod's own /etc/hosts, naming it and the Services, as the kubelet
    // manages it, unless the pod shares the host's network (and names) or
    // the container mounts its own.
    let hosts = dir.join("hosts");
    if network != Network::Host {
        mount_pod_file(&mut mounts, &hosts, "/etc/hosts", |path| {
            crate::router::write_hosts(
                path,
                &context.routes,
                pod.metadata.namespace.as_deref().unwrap_or("default"),
                &pod.metadata.name,
            )
        })?;
    }
    // And its resolv.conf, from its dnsPolicy and dnsConfig over the
    // host's, rewritten in place and only if it changed (the pod's other
    // containers have it mounted).
    mount_pod_file(
        &mut mounts,
        &dir.join("resolv.conf"),
        "/etc/resolv.conf",
        |path| {
            let text = super::dns::Resolver::read(&context.resolv_conf)
                .for_pod(&pod.spec, network != Network::Host)
                .text();
            crate::router::rewrite_in_place(path, &text)
        },
    )?;
    let limits = &container.resources.limits;
    let user_namespace = match (pod.spec.host_network, pod.spec.host_users) {
        (true, _) | (_, Some(true)) => crate::runtime::linux::UserIds::Host,
        (false, Some(false)) => crate::runtime::linux::UserIds::RequiredPrivate,
        (false, None) => crate::runtime::linux::UserIds::Private,
    };
    let spec = ContainerSpec {
        user_namespace,
        prepared_root: false,
        id: format!(
            "{}-{}-{restarts}",
            dir.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            container.name
        ),
        hostname: pod.metadata.name.clone(),
        rootfs,
        // A directory per run: a run still stopping never shares its
        // writable layer with the next.
        state_dir: dir
            .join("containers")
            .join(format!("{}-{restarts}", container.name)),
        args: plan::command_line(
            run.entrypoint.as_deref().unwrap_or_default(),
            run.cmd.as_deref().unwrap_or_default(),
            container.command.as_deref(),
            container.args.as_deref(),
        ),
        env: plan::environment(
            run.env.as_deref().unwrap_or_default(),
            &env,
            &pod.metadata.name,
        ),
        cwd: container
            .working_dir
            .clone()
            .or(run.working_dir)
            .unwrap_or_default(),
        user,
        capabilities,
        read_only_root,
        network: network.clone(),
        joined: Vec::new(),
        mounts: mounts
            .into_iter()
            .map(|m| linux::config::BindMount {
                source: m.host,
                target: m.guest,
                writable: m.writable,
            })
            .collect(),
        cgroup: None,
        limits: cgroup::Limits {
            memory: limits.memory.and_then(|q| q.to_bytes()),
            pids: Some(DEFAULT_PIDS_LIMIT),
            cpu_millis: limits
                .cpu
                .map(|q| u64::try_from(q.millis()).unwrap_or(u64::MAX)),
        },
    };
    // One a daemon before this one started, still running (or ended with
    // its exit code kept): adopted, not started again.
    let adopted = {
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || linux::adopt(&spec))
            .await
            .map_err(|e| failure("RunContainerError", e.to_string()))?
    };
    let started = match adopted {
        Some(adopted) => {
            tracing::info!(
                pod = %pod.metadata.name,
                container = %container.name,
                "adopted the container a previous daemon left running (pid {})",
                adopted.pid
            );
            adopted
        }
        None => {
            // What a run that died with no one to see it left (a writable
            // layer the new one must not start from), and any run still
            // going that is not to be adopted (the store did not know of
            // it, another image's, one killed mid-start).
            let (stale, name) = (spec.state_dir.clone(), container.name.clone());
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(containers) = stale.parent() {
                    linux::abandon_runs(containers, &name);
                }
                if stale.exists() {
                    let _ = std::fs::remove_dir_all(&stale);
                }
            })
            .await;
            let log = linux::config::LogTarget {
                path: super::log_path(dir, &container.name, restarts),
                max_bytes: crate::runtime::LOG_MAX_BYTES,
                max_files: crate::runtime::LOG_MAX_FILES,
            };
            linux::start(&spec, Output::Log(log))
                .await
                .map_err(|e| failure("RunContainerError", e.to_string()))?
        }
    };
    if network == Network::Own {
        // The pod's network from now on, whichever of its containers runs:
        // unless the container has already ended (it ran and exited at
        // once), taking its network with it; the next makes one afresh.
        match sandbox.hold_network(&started.netns_path()) {
            Ok((netns, network_ends)) => {
                serve_pod_network(
                    context,
                    pod,
                    &netns,
                    hosts,
                    &dir.join("pasta.pid"),
                    network_ends,
                    sandbox.leave.clone(),
                )
                .await;
            }
            Err(e) => tracing::debug!(
                pod = %pod.metadata.name,
                "the pod's network went with its container: {e}"
            ),
        }
    }
    let netns = (network != Network::Host).then(|| started.netns_path());
    let connector = linux::NetnsConnector::new(netns)
        .map_err(|e| failure("RunContainerError", format!("the container's network: {e}")))?;
    let port = container.ports.first().map_or(80, |p| p.container_port);
    let pids = started.pids();
    let workload = linux::LinuxWorkload::new(
        format!("{}/{}", pod.metadata.name, container.name),
        started,
        port,
        connector.clone(),
    );
    let mut running = serve_container(container, workload, cancel, grace).await?;
    running.linux = Some((connector, pids));
    Ok(running)
}

/// Mounts the pod's own file at `path` (written by `write`) read-only on
/// `guest`, a file under /etc, unless the container mounts that file or
/// its /etc itself.
fn mount_pod_file(
    mounts: &mut Vec<DirGrant>,
    path: &Path,
    guest: &str,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), StartFailure> {
    if mounts.iter().any(|m| m.guest == "/etc" || m.guest == guest) {
        return Ok(());
    }
    path.parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| write(path))
        .map_err(|e| failure("CreateContainerError", format!("the pod's {guest}: {e}")))?;
    mounts.push(DirGrant {
        host: path.to_owned(),
        guest: guest.to_owned(),
        writable: false,
    });
    Ok(())
}

/// What a pod's network namespace (`netns`) is given, for as long as it is
/// the pod's: its Services by their addresses, and a way out (pasta, which
/// is left running for a successor when `leave` is set by then).
async fn serve_pod_network(
    context: &Context,
    pod: &Pod,
    netns: &Path,
    hosts: PathBuf,
    pid_file: &Path,
    network_ends: CancellationToken,
    leave: Arc<std::sync::atomic::AtomicBool>,
) {
    if let Err(e) = context.ingress.serve_pod_network(
        netns,
        hosts,
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        &pod.metadata.name,
        &pod.metadata.labels,
        network_ends.clone(),
    ) {
        tracing::warn!(
            pod = %pod.metadata.name,
            "the pod cannot reach Services by their addresses: {e}"
        );
    }
    // pasta reads the host's /etc/resolv.conf itself.
    let resolv_conf = (context.resolv_conf != Path::new("/etc/resolv.conf"))
        .then_some(context.resolv_conf.as_path());
    match crate::runtime::linux::network::connect_outside(netns, pid_file, resolv_conf).await {
        Ok(outside) => {
            tokio::spawn(async move {
                network_ends.cancelled().await;
                if leave.load(std::sync::atomic::Ordering::SeqCst) {
                    outside.leave();
                } else {
                    let _ = tokio::task::spawn_blocking(move || outside.close()).await;
                }
            });
        }
        Err(e) => tracing::warn!(
            pod = %pod.metadata.name,
            "the pod has no way out of its network: {e}"
        ),
    }
}

/// Processes a container may run at once unless the pod says otherwise.
const DEFAULT_PIDS_LIMIT: u64 = 4096;

/// A Linux container's securityContext, as the runtime takes it.
struct LinuxSecurity {
    user: crate::runtime::linux::config::User,
    capabilities: rustix::thread::CapabilitySet,
    read_only_root: bool,
}

/// What a Linux container's securityContext (over its pod's) makes of it:
/// its user over the image's (`image_user`), its capabilities, and whether
/// its root is read-only. Refused as the kubelet refuses it, before
/// anything is made: `runAsNonRoot` with a container that would run as
/// root, or one whose uid cannot be told from the image's config.
fn linux_security(
    pod: &Pod,
    container: &Container,
    dir: &Path,
    image_user: &str,
) -> Result<LinuxSecurity, StartFailure> {
    use crate::runtime::linux::{config::User, identity, plan};
    let security = crate::spec::security::effective(
        pod.spec.security_context.as_ref(),
        container.security_context.as_ref(),
    );
    if security.run_as_non_root {
        identity::check_non_root(image_user, security.run_as_user).map_err(|e| {
            // Kubernetes' format.Pod: name_namespace(uid); the pod's dir
            // is named by its uid.
            let named = format!(
                "{}_{}({})",
                pod.metadata.name,
                pod.metadata.namespace.as_deref().unwrap_or("default"),
                pod_uid(dir)
            );
            config_error(format!(
                "{e} (pod: {named:?}, container: {})",
                container.name
            ))
        })?;
    }
    let capabilities = plan::capabilities(&security.add, &security.drop).map_err(|e| {
        config_error(format!(
            "container {}: securityContext.capabilities: {e}",
            container.name
        ))
    })?;
    let user = User {
        image: image_user.to_owned(),
        uid: security.run_as_user,
        gid: security.run_as_group,
        groups: security.extra_groups,
    };
    Ok(LinuxSecurity {
        user,
        capabilities,
        read_only_root: security.read_only_root_filesystem,
    })
}

/// The pod's emptyDir volumes as the kubelet leaves them: writable by
/// every user (0777: a container may run as anyone), and with an
/// `fsGroup`, owned by that group with the setgid bit, so what is made in
/// them stays the group's (its processes are in that group too).
///
/// The group is set on disk as a container names it: one with a user
/// namespace of its own sees its volumes through an idmapped mount, which
/// shows each id on disk as the same id inside (its gid 2000 is 2000 on
/// disk), so one owner serves it and a container with host ids alike.
fn share_empty_dirs(pod: &Pod, dir: &Path) -> Result<(), StartFailure> {
    use std::os::unix::fs::PermissionsExt as _;
    let fs_group = pod
        .spec
        .security_context
        .as_ref()
        .and_then(|c| c.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    for volume in pod.spec.volumes.iter().filter(|v| v.empty_dir.is_some()) {
        let path = dir.join("volumes").join(&volume.name);
        // Made when a container first mounts it.
        if !path.is_dir() {
            continue;
        }
        let io = |e: std::io::Error| config_error(format!("volume {}: {e}", volume.name));
        let mut mode = 0o777;
        if let Some(group) = fs_group {
            std::os::unix::fs::lchown(&path, None, Some(group)).map_err(io)?;
            mode |= 0o2000;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    }
    Ok(())
}

/// The image unpacked and ready, pulled first if the store lacks it (or
/// the policy says always). Replicas of one image start by the thousand:
/// the answer is kept while the store's tags are unchanged.
async fn ensure_image(
    context: &Context,
    uid: &str,
    pod: &Pod,
    reference: &str,
    policy: Option<PullPolicy>,
) -> Result<Ready, StartFailure> {
    let key = format!(
        "{}|{reference}",
        pod.spec.runtime_class_name.as_deref().unwrap_or("")
    );
    // The store's tags as they are now: a cached answer holds while they do.
    let stamp = std::fs::metadata(image::store_dir().join("index.json"))
        .and_then(|m| Ok((m.modified()?, m.len())))
        .ok();
    if policy != Some(PullPolicy::Always)
        && let Some(stamp) = stamp
        && let Some((seen, ready)) = context.images.lock().get(&key)
        && *seen == stamp
    {
        return Ok(ready.clone());
    }
    let ready = resolve_image(context, uid, pod, reference, policy).await?;
    if let Some(stamp) = stamp {
        context.images.lock().insert(key, (stamp, ready.clone()));
    }
    Ok(ready)
}

async fn resolve_image(
    context: &Context,
    uid: &str,
    pod: &Pod,
    reference: &str,
    policy: Option<PullPolicy>,
) -> Result<Ready, StartFailure> {
    let parsed: Reference = reference
        .parse()
        .map_err(|e: berth_registry::ReferenceError| failure("InvalidImageName", e.to_string()))?;
    let store = ContentStore::open(image::store_dir())
        .map_err(|e| failure("ErrImagePull", e.to_string()))?;
    let present = image::lookup(&store, &parsed).is_ok();
    let pull = match policy {
        Some(PullPolicy::Always) => true,
        Some(PullPolicy::Never) => false,
        Some(PullPolicy::IfNotPresent) | None => !present,
    };
    if pull {
        context.event(
            uid,
            pod,
            "Normal",
            "Pulling",
            &format!("Pulling image \"{reference}\""),
        );
        // The store is read off the async workers, as everywhere.
        let (state, owned) = (context.state.clone(), pod.clone());
        let configs = tokio::task::spawn_blocking(move || pull_secret_configs(&state, &owned))
            .await
            .unwrap_or_default();
        let credentials = Credentials::load(&crate::home::berth_home().join("auth.json"))
            .map_err(|e| failure("ErrImagePull", e))?
            .overlaid(pull_secrets(context, uid, pod, configs));
        let client = Client::new(ClientOptions {
            insecure: false,
            credentials,
            concurrency: 4,
            chunk_size: DEFAULT_CHUNK_SIZE,
            state_dir: crate::home::berth_home().join("client"),
            certs_dir: Some(crate::home::berth_home().join("certs.d")),
        })
        .map_err(|e| failure("ErrImagePull", e.to_string()))?;
        let name = match (&parsed.tag, &parsed.digest) {
            (None, Some(digest)) => format!("{}@{digest}", parsed.repository),
            _ => parsed.tagged_name(),
        };
        match client
            .pull(&store, &Remote::parse(&parsed), &name, &Quiet)
            .await
        {
            Ok(pulled) => context.event(
                uid,
                pod,
                "Normal",
                "Pulled",
                &format!(
                    "Successfully pulled image \"{reference}\" ({})",
                    pulled.digest
                ),
            ),
            Err(e) if present => {
                context.event(
                    uid,
                    pod,
                    "Warning",
                    "Failed",
                    &format!("pulling {reference}: {e}; using the local image"),
                );
            }
            Err(e) => return Err(failure("ErrImagePull", format!("pulling {reference}: {e}"))),
        }
    } else if !present {
        return Err(failure(
            "ErrImageNeverPull",
            format!("image {reference} is not in the local store and imagePullPolicy is Never"),
        ));
    }
    let runtime = pod.spec.runtime_class_name.clone();
    tokio::task::spawn_blocking(move || {
        let descriptor =
            image::lookup(&store, &parsed).map_err(|e| failure("ErrImagePull", e.to_string()))?;
        let loaded = Image::resolve_for(&store, &descriptor, runtime.as_deref())
            .map_err(|e| failure("CreateContainerError", e.to_string()))?;
        let unpack_error = |e: crate::image::model::ImageError| {
            failure(
                "CreateContainerError",
                format!("image {}: {e}", descriptor.digest()),
            )
        };
        if loaded.platform.os == "linux" {
            let rootfs = crate::image::materialize::materialize_rootfs(
                &store,
                &image::images_dir(),
                &loaded,
            )
            .map_err(unpack_error)?;
            return Ok(Ready::Linux {
                rootfs,
                run: loaded.run.clone(),
            });
        }
        materialize(&store, &image::images_dir(), &loaded)
            .map(Ready::Wasm)
            .map_err(unpack_error)
    })
    .await
    .map_err(|e| failure("CreateContainerError", e.to_string()))?
}

fn config_error(message: impl Into<String>) -> StartFailure {
    failure("CreateContainerConfigError", message)
}

/// A ConfigMap's or Secret's entries, values decoded.
type ConfigData = Vec<(String, Vec<u8>)>;

/// The data of ConfigMap or Secret `name`, values decoded.
fn config_data(
    state: &crate::state::Shared,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<Option<ConfigData>, StartFailure> {
    let record = state
        .store
        .lock()
        .get(kind, namespace, name)
        .map_err(|e| config_error(e.to_string()))?;
    Ok(record.map(|r| match r.object {
        Object::ConfigMap(cm) => cm
            .data
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .chain(
                cm.binary_data
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, crate::spec::load::base64_decode(&v)?))),
            )
            .collect(),
        Object::Secret(secret) => secret
            .data
            .into_iter()
            .filter_map(|(k, v)| Some((k, crate::spec::load::base64_decode(&v)?)))
            .chain(
                secret
                    .string_data
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes())),
            )
            .collect(),
        _ => Vec::new(),
    }))
}

/// Each of the pod's imagePullSecrets and its Docker config, if it is a
/// Secret of type `kubernetes.io/dockerconfigjson` (or the older
/// `dockercfg`, whose text is the `auths` map alone). Reads the store.
fn pull_secret_configs(state: &crate::state::Shared, pod: &Pod) -> Vec<(String, Option<String>)> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    pod.spec
        .image_pull_secrets
        .iter()
        .map(|reference| {
            let found = config_data(state, Kind::Secret, ns, &reference.name)
                .ok()
                .flatten()
                .unwrap_or_default();
            let config = found.iter().find_map(|(key, value)| {
                let text = String::from_utf8_lossy(value);
                match key.as_str() {
                    ".dockerconfigjson" => Some(text.into_owned()),
                    ".dockercfg" => Some(format!("{{\"auths\": {text}}}")),
                    _ => None,
                }
            });
            (reference.name.clone(), config)
        })
        .collect()
}

/// The registry credentials of the pod's imagePullSecrets (their
/// `configs`), later ones winning. One missing or unreadable is a warning,
/// and the pull goes on without it, as the kubelet does.
fn pull_secrets(
    context: &Context,
    uid: &str,
    pod: &Pod,
    configs: Vec<(String, Option<String>)>,
) -> Credentials {
    let mut all = Credentials::default();
    for (name, config) in configs {
        match config.map(|text| Credentials::parse(&text)) {
            Some(Ok(credentials)) => all = all.overlaid(credentials),
            Some(Err(e)) => context.event(
                uid, pod,
                "Warning",
                "FailedToRetrieveImagePullSecret",
                &format!("Secret {name}: its .dockerconfigjson is unreadable: {e}"),
            ),
            None => context.event(
                uid, pod,
                "Warning",
                "FailedToRetrieveImagePullSecret",
                &format!(
                    "Unable to retrieve some image pull secrets ({name}); attempting to pull the image may not succeed."
                ),
            ),
        }
    }
    all
}

/// A container's environment: HOSTNAME, then envFrom, then env (later
/// wins, as in Kubernetes), ConfigMap, Secret and pod field references
/// resolved.
fn container_env(
    state: &crate::state::Shared,
    pod: &Pod,
    uid: &str,
    container: &Container,
) -> Result<Vec<(String, String)>, StartFailure> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let text = |bytes: Vec<u8>, what: &str| {
        String::from_utf8(bytes).map_err(|_| config_error(format!("{what} is not UTF-8 text")))
    };

    // Environment: HOSTNAME, then envFrom, then env (later wins, as in Kubernetes).
    let mut env: Vec<(String, String)> = vec![("HOSTNAME".into(), pod.metadata.name.clone())];
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    };
    for from in &container.env_from {
        let (kind, reference) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), _) => (Kind::ConfigMap, r),
            (_, Some(r)) => (Kind::Secret, r),
            _ => continue,
        };
        match config_data(state, kind, ns, &reference.name)? {
            Some(data) => {
                for (k, v) in data {
                    let value = text(v, &format!("{kind} {} key {k}", reference.name))?;
                    set(
                        &mut env,
                        format!("{}{k}", from.prefix.as_deref().unwrap_or("")),
                        value,
                    );
                }
            }
            None if reference.optional => {}
            None => return Err(config_error(format!("{kind} {} not found", reference.name))),
        }
    }
    for var in &container.env {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(from)) if from.field_ref.is_some() => {
                let path = from
                    .field_ref
                    .as_ref()
                    .map_or("", |f| f.field_path.as_str());
                let field = PodField::parse(path).map_err(config_error)?;
                Some(pod_field(pod, uid, &field))
            }
            (None, Some(from)) => {
                let (kind, key) = match (&from.config_map_key_ref, &from.secret_key_ref) {
                    (Some(k), _) => (Kind::ConfigMap, k),
                    (_, Some(k)) => (Kind::Secret, k),
                    _ => continue,
                };
                let found = config_data(state, kind, ns, &key.name)?.and_then(|data| {
                    data.into_iter()
                        .find(|(k, _)| *k == key.key)
                        .map(|(_, v)| v)
                });
                match found {
                    Some(v) => Some(text(v, &format!("{kind} {} key {}", key.name, key.key))?),
                    None if key.optional => None,
                    None => {
                        return Err(config_error(format!(
                            "{kind} {} has no key {} (for {})",
                            key.name, key.key, var.name
                        )));
                    }
                }
            }
            (None, None) => Some(String::new()),
        };
        if let Some(value) = value {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

/// The pod's uid: its directory is named by it.
fn pod_uid(dir: &Path) -> String {
    dir.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// A pod's field, as its status and metadata show it: a pod's address is
/// the host's loopback, where its ports are reached.
fn pod_field(pod: &Pod, uid: &str, field: &PodField) -> String {
    let meta = &pod.metadata;
    match field {
        PodField::Name => meta.name.clone(),
        PodField::Namespace => meta.namespace.clone().unwrap_or_else(|| "default".into()),
        PodField::Uid => uid.to_owned(),
        PodField::Label(key) => meta.labels.get(key).cloned().unwrap_or_default(),
        PodField::Annotation(key) => meta.annotations.get(key).cloned().unwrap_or_default(),
        PodField::NodeName => pod.spec.node_name.clone().unwrap_or_default(),
        PodField::ServiceAccountName => pod
            .spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into()),
        PodField::HostIp | PodField::PodIp => "127.0.0.1".into(),
    }
}

fn workload_spec(
    state: &crate::state::Shared,
    pod: &Pod,
    container: &Container,
    dir: &Path,
    ready: Materialized,
) -> Result<WorkloadSpec, StartFailure> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let env = container_env(state, pod, &pod_uid(dir), container)?;

    // Filesystem: the image's bundles, read-only, then the volume mounts.
    let mut dirs: Vec<DirGrant> = ready
        .mounts
        .iter()
        .map(|(host, guest)| DirGrant {
            host: host.clone(),
            guest: guest.clone(),
            writable: false,
        })
        .collect();
    dirs.extend(volume_mounts(state, pod, container, dir)?);

    let outbound = crate::spec::objects::grants::<OutboundRule>(&pod.metadata, OUTBOUND_ANNOTATION)
        .map_err(config_error)?;

    let mut limits = Limits::default();
    if let Some(memory) = container.resources.limits.memory.and_then(|q| q.to_bytes()) {
        limits.memory = memory;
    }
    limits.cpu_millis = container
        .resources
        .limits
        .cpu
        .map(|q| u64::try_from(q.millis()).unwrap_or(u64::MAX))
        // As Kubernetes: a limit of 0 is no limit.
        .filter(|millis| *millis > 0);
    // Arguments past the program's name: a component of both worlds runs
    // `run` too. (`command` alone names the program, as the shim's
    // `process.args[0]` names the component: `command: [/hello.wasm]` is
    // served, as under containerd.)
    let invoked = container.command.as_ref().is_some_and(|c| c.len() > 1)
        || container.args.as_ref().is_some_and(|a| !a.is_empty());
    // A command's argv: `command` (its name first) or the container's
    // name, then `args`, as a shell would give them.
    let args = match &container.command {
        Some(command) if !command.is_empty() => command.clone(),
        _ => vec![container.name.clone()],
    }
    .into_iter()
    .chain(container.args.iter().flatten().cloned())
    .collect();
    Ok(WorkloadSpec {
        log: None,
        name: format!("{ns}/{}/{}", pod.metadata.name, container.name),
        component: ready.component,
        args,
        invoked,
        capabilities: Capabilities {
            env,
            dirs,
            outbound,
            services: None,
            tcp: crate::spec::objects::grants(&pod.metadata, crate::spec::objects::TCP_ANNOTATION)
                .map_err(config_error)?,
        },
        limits,
    })
}

/// The host directories of a container's volume mounts.
fn volume_mounts(
    state: &crate::state::Shared,
    pod: &Pod,
    container: &Container,
    dir: &Path,
) -> Result<Vec<DirGrant>, StartFailure> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut dirs = Vec::new();
    for mount in &container.volume_mounts {
        let volume = pod
            .spec
            .volumes
            .iter()
            .find(|v| v.name == mount.name)
            .ok_or_else(|| config_error(format!("no volume {}", mount.name)))?;
        dirs.extend(volume_dirs(
            state,
            ns,
            volume,
            dir,
            &mount.mount_path,
            mount.read_only,
        )?);
    }
    Ok(dirs)
}

/// Where the volume bound to claim `name` keeps its data.
fn claim_path(state: &crate::state::Shared, ns: &str, name: &str) -> Result<PathBuf, StartFailure> {
    let store = state.store.lock();
    let get = |kind: Kind, ns: &str, name: &str| {
        store
            .get(kind, ns, name)
            .map_err(|e| config_error(e.to_string()))
    };
    let claim = match get(Kind::PersistentVolumeClaim, ns, name)?.map(|r| r.object) {
        Some(Object::PersistentVolumeClaim(claim)) => claim,
        _ => {
            return Err(config_error(format!(
                "persistentvolumeclaim \"{name}\" not found"
            )));
        }
    };
    let volume = claim.spec.volume_name.as_deref().unwrap_or("");
    match get(Kind::PersistentVolume, "", volume)?.map(|r| r.object) {
        Some(Object::PersistentVolume(pv)) => pv
            .spec
            .path()
            .map(PathBuf::from)
            .ok_or_else(|| config_error(format!("volume {volume} has no path"))),
        _ => Err(config_error(format!(
            "persistentvolumeclaim \"{name}\" is not bound to a volume"
        ))),
    }
}

fn volume_dirs(
    state: &crate::state::Shared,
    ns: &str,
    volume: &Volume,
    pod_dir: &Path,
    mount_path: &str,
    read_only: bool,
) -> Result<Vec<DirGrant>, StartFailure> {
    let local = pod_dir.join("volumes").join(&volume.name);
    let io = |e: std::io::Error| config_error(format!("volume {}: {e}", volume.name));
    let grant = |host: PathBuf, writable: bool| DirGrant {
        host,
        guest: mount_path.to_owned(),
        writable,
    };
    // Each key as a file (only `items`, at their paths, when given), with
    // its mode (`defaultMode`, 0644 unless given), as the kubelet writes
    // a configMap or secret volume.
    let files = |kind: Kind,
                 name: &str,
                 optional: bool,
                 items: &[crate::spec::objects::KeyToPath],
                 default_mode: Option<u32>|
     -> Result<Vec<DirGrant>, StartFailure> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::create_dir_all(&local).map_err(io)?;
        let data = match config_data(state, kind, ns, name)? {
            Some(data) => data,
            None if optional => Vec::new(),
            None => return Err(config_error(format!("{kind} {name} not found"))),
        };
        let chosen: Vec<(String, u32, &[u8])> = if items.is_empty() {
            data.iter()
                .map(|(key, value)| (key.clone(), default_mode.unwrap_or(0o644), &value[..]))
                .collect()
        } else {
            let mut chosen = Vec::new();
            for item in items {
                match data.iter().find(|(key, _)| *key == item.key) {
                    Some((_, value)) => chosen.push((
                        item.path.clone(),
                        item.mode.or(default_mode).unwrap_or(0o644),
                        &value[..],
                    )),
                    None if optional => {}
                    None => {
                        return Err(config_error(format!(
                            "{kind} {name} has no key {}",
                            item.key
                        )));
                    }
                }
            }
            chosen
        };
        // A secret volume that could not be a tmpfs is on disk: only its
        // owner may read it there, whatever its defaultMode asks.
        let on_disk =
            kind == Kind::Secret && !crate::runtime::linux::is_mount_point(&local).map_err(io)?;
        if on_disk {
            std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        for (path, mode, value) in chosen {
            let file = local.join(&path);
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let mode = if on_disk { mode & 0o600 } else { mode };
            std::fs::write(&file, value).map_err(io)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        }
        Ok(vec![grant(local.clone(), false)])
    };
    if let Some(cm) = &volume.config_map {
        return files(
            Kind::ConfigMap,
            &cm.name,
            cm.optional,
            &cm.items,
            cm.default_mode,
        );
    }
    if let Some(secret) = &volume.secret {
        return files(
            Kind::Secret,
            &secret.secret_name,
            secret.optional,
            &secret.items,
            secret.default_mode,
        );
    }
    if volume.empty_dir.is_some() {
        std::fs::create_dir_all(&local).map_err(io)?;
        return Ok(vec![grant(local, !read_only)]);
    }
    if let Some(host) = &volume.host_path {
        return Ok(vec![grant(PathBuf::from(&host.path), !read_only)]);
    }
    if let Some(source) = &volume.persistent_volume_claim {
        let path = claim_path(state, ns, &source.claim_name)?;
        std::fs::create_dir_all(&path).map_err(io)?;
        return Ok(vec![grant(path, !read_only && !source.read_only)]);
    }
    if let Some(image_volume) = &volume.image {
        let parsed: Reference = image_volume
            .reference
            .parse()
            .map_err(|e: berth_registry::ReferenceError| config_error(e.to_string()))?;
        let store =
            ContentStore::open(image::store_dir()).map_err(|e| config_error(e.to_string()))?;
        let descriptor = image::lookup(&store, &parsed)
            .map_err(|e| config_error(format!("image volume {}: {e}", image_volume.reference)))?;
        let loaded =
            Image::resolve(&store, &descriptor).map_err(|e| config_error(e.to_string()))?;
        let ready = image::materialize::materialize(&store, &image::images_dir(), &loaded)
            .map_err(|e| config_error(e.to_string()))?;
        let base = mount_path.trim_end_matches('/');
        return Ok(ready
            .mounts
            .into_iter()
            .map(|(host, guest)| DirGrant {
                host,
                guest: format!("{base}{}", if guest == "/" { "" } else { guest.as_str() }),
                writable: false,
            })
            .collect());
    }
    Err(config_error(format!(
        "volume {} has no source",
        volume.name
    )))
}
