//! A running container as the router and the kubelet see it: a
//! [`Workload`] whose requests go over a socket opened inside the
//! container's network namespace (it has no address the host can route
//! to), which ends when its process does, and stops with SIGTERM then
//! SIGKILL.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{oneshot, watch};

use super::{Container, Exit};
use berth_runtime::{Body, BoxError, BoxFuture, Exited, GuestFailure, ServeError, Workload};

/// A request for a socket of the namespace.
type Connect = oneshot::Sender<std::io::Result<std::os::fd::OwnedFd>>;

/// How long a connection to a container may take to be accepted.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens connections from inside a network namespace: a thread that moved
/// into it once makes every socket (a socket's namespace is its maker's,
/// and a thread's namespace is its own: tokio's workers must stay in the
/// host's), and the connect itself happens on tokio, so connections to a
/// slow container do not wait on one another.
#[derive(Clone)]
pub struct NetnsConnector {
    requests: std::sync::mpsc::Sender<Connect>,
}

impl NetnsConnector {
    /// A connector into the namespace at `netns` (`/proc/PID/ns/net`), or
    /// the host's own when `None`. A namespace that cannot be opened (its
    /// container is gone already) fails every connection with why.
    pub fn new(netns: Option<std::path::PathBuf>) -> std::io::Result<NetnsConnector> {
        let namespace = netns
            .map(|path| std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display())))
            .transpose();
        let (requests, incoming) = std::sync::mpsc::channel::<Connect>();
        std::thread::Builder::new()
            .name("berth-netns".into())
            .spawn(move || {
                let entered = namespace.and_then(|ns| match ns {
                    Some(ns) => {
                        use std::os::fd::AsFd as _;
                        rustix::thread::move_into_link_name_space(
                            ns.as_fd(),
                            Some(rustix::thread::LinkNameSpaceType::Network),
                        )
                        .map_err(|e| e.to_string())
                    }
                    None => Ok(()),
                });
                if let Err(e) = entered {
                    for reply in incoming {
                        let _ = reply.send(Err(std::io::Error::other(format!(
                            "entering the container's network: {e}"
                        ))));
                    }
                    return;
                }
                use rustix::net::{AddressFamily, SocketFlags, SocketType};
                for reply in incoming {
                    let _ = reply.send(
                        rustix::net::socket_with(
                            AddressFamily::INET,
                            SocketType::STREAM,
                            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                            None,
                        )
                        .map_err(std::io::Error::from),
                    );
                }
            })?;
        Ok(NetnsConnector { requests })
    }
}

impl NetnsConnector {
    /// A connection to `port` on the namespace's loopback.
    pub fn connect(&self, port: u16) -> BoxFuture<'static, std::io::Result<tokio::net::TcpStream>> {
        let requests = self.requests.clone();
        Box::pin(async move {
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            let (reply, answer) = oneshot::channel();
            requests
                .send(reply)
                .map_err(|_| std::io::Error::other("the container's network is gone"))?;
            let socket = answer
                .await
                .map_err(|_| std::io::Error::other("the container's network is gone"))??;
            let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(address))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connecting to {address} took over {CONNECT_TIMEOUT:?}"),
                    )
                })??;
            let _ = stream.set_nodelay(true);
            Ok(stream)
        })
    }
}

impl tower_service::Service<http::Uri> for NetnsConnector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, std::io::Result<Self::Response>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.connect(uri.port_u16().unwrap_or(80));
        Box::pin(async move { Ok(TokioIo::new(connecting.await?)) })
    }
}

/// A listening socket at `address` inside the network namespace at `netns`
/// (`/proc/PID/ns/net`); the socket stays there.
pub fn listen_in(
    netns: &std::path::Path,
    address: SocketAddr,
) -> std::io::Result<std::net::TcpListener> {
    crate::network::in_network(netns, move || {
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
}

/// What ends a container's handle.
enum Ending {
    /// SIGTERM, then SIGKILL after the grace.
    Stop(Duration),
    /// Nothing: the container runs on for the next berth to adopt.
    Leave,
}

pub struct LinuxWorkload {
    name: String,
    port: u16,
    client: Client<NetnsConnector, Body>,
    connector: NetnsConnector,
    exit: watch::Receiver<Option<Exit>>,
    stop: Mutex<Option<oneshot::Sender<Ending>>>,
    usage: crate::cgroup::UsageFiles,
    outlives: bool,
}

impl LinuxWorkload {
    /// Takes over `container`, serving HTTP on its `port` (in its network).
    /// Its output is in its log by the time it has exited (its init writes
    /// the log, and ends after the last writer has), so whoever reads the
    /// log for its exit (a FallbackToLogsOnError message) finds all of it.
    pub fn new(
        name: String,
        container: Container,
        port: u16,
        connector: NetnsConnector,
    ) -> Arc<LinuxWorkload> {
        let (exit_tx, exit) = watch::channel(None);
        let (stop_tx, stop_rx) = oneshot::channel::<Ending>();
        let usage = container.usage_files();
        let outlives = container.outlives();
        tokio::spawn(async move {
            let mut container = container;
            let exit = tokio::select! {
                exit = container.wait() => exit,
                ending = stop_rx => match ending {
                    Ok(Ending::Stop(grace)) => container.stop(grace).await,
                    // Its handle goes, the container stays (and its
                    // exit is never told here).
                    Ok(Ending::Leave) => return,
                    // The workload was dropped: no one will ask again.
                    Err(_) => container.stop(Duration::ZERO).await,
                },
            };
            container.remove();
            let _ = exit_tx.send(Some(exit));
        });
        Arc::new(LinuxWorkload {
            name,
            port,
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector.clone()),
            connector,
            exit,
            stop: Mutex::new(Some(stop_tx)),
            usage,
            outlives,
        })
    }

    fn finished(&self) -> BoxFuture<'static, Exit> {
        let mut exit = self.exit.clone();
        Box::pin(async move {
            loop {
                if let Some(exit) = exit.borrow_and_update().clone() {
                    return exit;
                }
                if exit.changed().await.is_err() {
                    return Exit {
                        code: 128 + 9,
                        oom_killed: false,
                        error: None,
                    };
                }
            }
        })
    }
}

impl Workload for LinuxWorkload {
    fn name(&self) -> &str {
        &self.name
    }

    /// Read from its cgroups: a few small files, on the caller's thread.
    fn usage(&self) -> berth_runtime::Usage {
        berth_runtime::Usage {
            cpu: self.usage.cpu().unwrap_or_default(),
            memory: self.usage.memory().unwrap_or(0),
            instances: None,
            oom_kills: self.usage.oom_kills(),
        }
    }

    fn serve(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, ServeError>> {
        self.serve_on(request, None)
    }

    fn serve_on(
        &self,
        request: http::Request<Body>,
        port: Option<u16>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, ServeError>> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let name = self.name.clone();
        let port = port.unwrap_or(self.port);
        let uri = format!("http://127.0.0.1:{port}{path}");
        let client = self.client.clone();
        Box::pin(async move {
            parts.uri = uri
                .parse()
                .map_err(|e: http::uri::InvalidUri| ServeError::Guest {
                    workload: name.clone(),
                    failure: GuestFailure::Unreachable(e.to_string()),
                })?;
            // The client speaks HTTP/1.1 to the container, whatever came in.
            parts.version = http::Version::HTTP_11;
            let response = client
                .request(http::Request::from_parts(parts, body))
                .await
                .map_err(|e| ServeError::Guest {
                    workload: name,
                    failure: GuestFailure::Unreachable(format!("{e:#}")),
                })?;
            Ok(response.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()))
        })
    }

    fn connect(
        &self,
        port: Option<u16>,
    ) -> Option<BoxFuture<'static, std::io::Result<tokio::net::TcpStream>>> {
        Some(self.connector.connect(port.unwrap_or(self.port)))
    }

    fn exited(&self) -> BoxFuture<'static, Exited> {
        let finished = self.finished();
        Box::pin(async move {
            let exit = finished.await;
            Exited {
                code: exit.code,
                reason: exit.reason(),
                detail: exit.error,
            }
        })
    }

    fn leave_running(&self) -> bool {
        if !self.outlives {
            return false;
        }
        if let Some(stop) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(Ending::Leave);
        }
        true
    }

    fn stop(&self, grace: Duration) -> BoxFuture<'static, ()> {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(Ending::Stop(grace));
        }
        let finished = self.finished();
        Box::pin(async move {
            finished.await;
        })
    }
}
