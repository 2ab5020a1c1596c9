//! Services at layer 4: a connection to a Service port that is not
//! declared HTTP goes, bytes both ways, to a ready endpoint that takes
//! connections (a Linux container, through its network namespace), as
//! kube-proxy does. Each connection is one choice of endpoint (round
//! robin, ClientIP affinity honoured), counted in flight on it until the
//! connection closes, so a replica leaving the endpoints gets no new
//! connections and keeps its open ones until they close or its grace
//! period ends. Endpoints that take no connections (a wasm HTTP
//! component) are served HTTP on the connection instead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::table::{InFlight, NoRoom, Route};

/// What became of a connection.
pub(super) enum Spliced {
    /// Proxied to an endpoint until either side closed, or closed because
    /// no endpoint would take it.
    Done,
    /// The endpoint chosen takes no connections: the stream back, to be
    /// served HTTP.
    NotSockets(TcpStream),
}

/// Proxies `client` to an endpoint of `route`'s `port`, waiting up to
/// `wait` for one (one scaled to zero is woken as a request would wake it).
pub(super) async fn splice(
    route: Arc<Route>,
    port: usize,
    client: TcpStream,
    peer: SocketAddr,
    wait: Duration,
) -> Spliced {
    let service = format!("{}/{}", route.key.namespace, route.key.name);
    let (route, port) = match ready_route(route, port, wait).await {
        Ok(found) => found,
        Err(why) => {
            tracing::info!(%peer, "service {service}: connection closed: {why}");
            return Spliced::Done;
        }
    };
    // From when there is an endpoint: one just woken from zero may take a
    // moment more to listen.
    let deadline = tokio::time::Instant::now() + wait;
    let mut failed: Option<String> = None;
    let mut pause = Duration::from_millis(5);
    let (endpoint, upstream) = loop {
        let endpoint = match route.try_acquire(port, Some(peer.ip()), failed.as_deref()) {
            Ok(endpoint) => endpoint,
            // The one that failed is the only one: it again, after a pause.
            Err(NoRoom::NoEndpoints) if failed.is_some() => {
                match route.try_acquire(port, Some(peer.ip()), None) {
                    Ok(endpoint) => endpoint,
                    Err(why) => {
                        tracing::info!(%peer, "service {service}: connection closed: {why:?}");
                        return Spliced::Done;
                    }
                }
            }
            Err(NoRoom::Denied) => return refuse(&client, peer, &format!("service {service}")),
            Err(_) => match route.acquire(port, Some(peer.ip()), wait).await {
                Ok(endpoint) => endpoint,
                Err(why) => {
                    tracing::info!(
                        %peer,
                        "service {service}: connection closed: no ready endpoint took it ({why:?})"
                    );
                    return Spliced::Done;
                }
            },
        };
        let Some(connecting) = endpoint.connect() else {
            return Spliced::NotSockets(client);
        };
        match connecting.await {
            Ok(upstream) => break (endpoint, upstream),
            Err(e) => {
                // Ready before it listens (no readiness probe), or going
                // away: another replica, or this one again shortly, until
                // the wait is over. The client's connection is already
                // accepted, so it only sees a slower start.
                if tokio::time::Instant::now() + pause >= deadline {
                    tracing::warn!(
                        %peer,
                        pod = %endpoint.pod.name,
                        "service {service}: connection closed: the endpoint refused it: {e}"
                    );
                    return Spliced::Done;
                }
                tracing::debug!(pod = %endpoint.pod.name, "service {service}: connecting: {e}");
                failed = Some(endpoint.pod.uid.clone());
                drop(endpoint);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    };
    // A connection carried is one request to the autoscaler (one served
    // HTTP instead counts its requests as they come).
    route.count();
    keep_alive(&client);
    keep_alive(&upstream);
    carry(&client, &upstream, &endpoint).await;
    Spliced::Done
}

/// [`splice`] to the pod named `pod` alone (a connection to its own
/// address, as a headless Service's DNS names it): closed when that pod is
/// not a ready endpoint of `port`, or refuses it.
pub(super) async fn splice_to_pod(
    route: Arc<Route>,
    port: usize,
    pod: &str,
    client: TcpStream,
    peer: SocketAddr,
) -> Spliced {
    let service = format!("{}/{}", route.key.namespace, route.key.name);
    let endpoint = match route.acquire_pod(port, pod, Some(peer.ip())) {
        Some(Ok(endpoint)) => endpoint,
        Some(Err(NoRoom::Denied)) => return refuse(&client, peer, &format!("service {service}")),
        Some(Err(why)) => {
            tracing::info!(%peer, "pod {pod} of service {service}: connection closed: {why:?}");
            return Spliced::Done;
        }
        None => {
            tracing::info!(%peer, "pod {pod} of service {service}: connection closed: not ready");
            return Spliced::Done;
        }
    };
    let Some(connecting) = endpoint.connect() else {
        return Spliced::NotSockets(client);
    };
    match connecting.await {
        Ok(upstream) => {
            route.count();
            keep_alive(&client);
            keep_alive(&upstream);
            carry(&client, &upstream, &endpoint).await;
        }
        Err(e) => tracing::info!(%peer, "pod {pod} of service {service}: connection refused: {e}"),
    }
    Spliced::Done
}

/// Ends a connection NetworkPolicies deny with a reset, as close to a
/// refusal as an accepted connection can come.
fn refuse(client: &TcpStream, peer: SocketAddr, to: &str) -> Spliced {
    tracing::info!(%peer, "{to}: connection refused: NetworkPolicy denies it");
    let _ = rustix::net::sockopt::set_socket_linger(client, Some(Duration::ZERO));
    Spliced::Done
}

/// TCP keepalive on a carried connection: a peer that vanished without a
/// word (a client's machine gone, a NAT's state dropped) ends it within a
/// few minutes instead of holding its endpoint in flight for ever.
fn keep_alive(stream: &TcpStream) {
    use rustix::net::sockopt;
    let _ = sockopt::set_socket_keepalive(stream, true);
    let _ = sockopt::set_tcp_keepidle(stream, Duration::from_secs(60));
    let _ = sockopt::set_tcp_keepintvl(stream, Duration::from_secs(10));
    let _ = sockopt::set_tcp_keepcnt(stream, 6);
}

/// Bytes both ways until both sides are done; `endpoint` stays counted
/// in flight meanwhile.
async fn carry(client: &TcpStream, upstream: &TcpStream, endpoint: &InFlight) {
    match both_ways(client, upstream).await {
        Ok((sent, received)) => {
            tracing::debug!(pod = %endpoint.pod.name, sent, received, "connection closed");
        }
        Err(e) => tracing::debug!(pod = %endpoint.pod.name, "connection ended: {e}"),
    }
}

/// Bytes both ways until both sides are done: those sent, and received.
async fn both_ways(a: &TcpStream, b: &TcpStream) -> std::io::Result<(u64, u64)> {
    tokio::try_join!(pump(a, b), pump(b, a))
}

/// A published port, as `docker run -p` and a container's `hostPort`
/// have it: each connection to `listener` is carried to a new connection
/// made by `connect` (into the container's network), until `shutdown`.
/// A client `admit` refuses (NetworkPolicies) is reset at once. `name`
/// says which port it is in the log.
pub async fn publish<C, A>(
    name: String,
    listener: tokio::net::TcpListener,
    connect: C,
    admit: A,
    shutdown: tokio_util::sync::CancellationToken,
) where
    C: Fn() -> crate::runtime::BoxFuture<'static, std::io::Result<TcpStream>>
        + Send
        + Sync
        + 'static,
    A: Fn(SocketAddr) -> bool + Send + Sync + 'static,
{
    let connect = Arc::new(connect);
    let name: Arc<str> = name.into();
    berth_serve::accept_connections(
        listener,
        shutdown,
        Duration::ZERO,
        move |client, peer, _| {
            let connecting = admit(peer).then(|| connect());
            let name = name.clone();
            async move {
                let Some(connecting) = connecting else {
                    refuse(&client, peer, &name);
                    return;
                };
                let upstream = match connecting.await {
                    Ok(upstream) => upstream,
                    Err(e) => {
                        tracing::info!(%peer, "{name}: connecting: {e}");
                        return;
                    }
                };
                if let Err(e) = both_ways(&client, &upstream).await {
                    tracing::debug!(%peer, "{name}: the connection ended: {e}");
                }
            }
        },
    )
    .await
}

/// How much one splice moves at most: the pipe's size.
const PIPE_SIZE: usize = 1 << 20;

/// Bytes from `from` to `to` until `from` ends (then `to`'s sending side
/// is shut, passing the half-close on), through a pipe with splice(2):
/// the kernel moves the pages, nothing is copied through berth, which
/// keeps a proxied stream near a direct one's throughput.
async fn pump(from: &TcpStream, to: &TcpStream) -> std::io::Result<u64> {
    use rustix::pipe::{PipeFlags, SpliceFlags, splice};
    use std::os::fd::AsFd as _;
    use tokio::io::Interest;
    let (pipe_out, pipe_in) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    let size = rustix::pipe::fcntl_setpipe_size(&pipe_in, PIPE_SIZE).unwrap_or(64 << 10);
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let mut total = 0u64;
    loop {
        // The pipe is empty here, so a splice that would block waits on
        // the socket alone.
        let n = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                Ok(splice(from.as_fd(), None, &pipe_in, None, size, flags)?)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            let _ = rustix::net::shutdown(to, rustix::net::Shutdown::Write);
            return Ok(total);
        }
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                Ok(splice(&pipe_out, None, to.as_fd(), None, left, flags)?)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
    }
}

/// The route and port to take a connection from now: a service with no
/// endpoint is woken (if it can be) and waited for.
async fn ready_route(
    route: Arc<Route>,
    port: usize,
    wait: Duration,
) -> Result<(Arc<Route>, usize), String> {
    if !route.endpoints(port).is_empty() {
        return Ok((route, port));
    }
    let mut hold = wait;
    if let Some(activator) = &route.activator
        && let Some(longer) = activator.wake(&route.key.namespace, &route.key.name).await
    {
        hold = longer;
    }
    super::proxy::wait_for_endpoints(route, port, hold).await
}
