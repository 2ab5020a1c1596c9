//! Serving a workload over HTTP, for berth's router and `berth run` as for
//! the containerd shim: accepts connections (HTTP/1.1 and h2c, or TLS),
//! serves each request from a workload, turns runtime failures into status
//! codes, and drains in-flight requests on shutdown.

pub mod idle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use berth_runtime::{Body, GuestFailure, ServeError, Workload};

/// Connections one listener serves at once.
const MAX_CONNECTIONS: usize = 10_000;

/// How long a client may take to send a request's headers, unless told.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `workload` on `listener` until `shutdown` is cancelled, then stops
/// accepting and waits up to `drain` for in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    workload: Arc<dyn Workload>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    accept(
        listener,
        shutdown,
        drain,
        HEADER_READ_TIMEOUT,
        move |request, peer| {
            let workload = workload.clone();
            async move { handle(&*workload, request, peer).await }
        },
    )
    .await
}

/// Accepts connections on `listener` and answers each request with
/// `handler`, until `shutdown`; then waits up to `drain` for in-flight
/// requests. A client that takes longer than `header_read` to send a
/// request's headers is cut off.
pub async fn accept<H, F>(
    listener: TcpListener,
    shutdown: CancellationToken,
    drain: Duration,
    header_read: Duration,
    handler: H,
) where
    H: Fn(http::Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    accept_with(listener, None, shutdown, drain, header_read, handler).await
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// [`accept`], over TLS when `tls` is given (HTTP/2 by ALPN, or
/// HTTP/1.1).
pub async fn accept_with<H, F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
    drain: Duration,
    header_read: Duration,
    handler: H,
) where
    H: Fn(http::Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let http = Http::new(header_read);
    accept_connections(listener, shutdown, drain, move |stream, peer, closing| {
        let (http, handler, tls) = (http.clone(), handler.clone(), tls.clone());
        async move {
            let Some(acceptor) = tls else {
                return http.serve(stream, peer, closing, handler).await;
            };
            let local = stream.local_addr().ok();
            // A client that never finishes its handshake holds nothing long.
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "TLS handshake: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            http.serve_io(stream, local, peer, closing, handler).await
        }
    })
    .await
}

/// Accepts connections on `listener` and hands each to `on_connection`
/// with a token cancelled when the listener closes (for the connection to
/// finish what it is doing and end), until `shutdown`; then waits up to
/// `drain` for the connections to end, and ends those left.
pub async fn accept_connections<C, F>(
    listener: TcpListener,
    shutdown: CancellationToken,
    drain: Duration,
    on_connection: C,
) where
    C: Fn(TcpStream, SocketAddr, CancellationToken) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let closing = CancellationToken::new();
    // The connections' tasks: aborted when this returns (the drain is
    // over) or is dropped (its caller stopped it), so no connection goes on
    // answering for a listener that has stopped.
    let mut open: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
    loop {
        while open.try_join_next().is_some() {}
        // At the cap, new connections wait in the kernel's backlog rather
        // than each costing a task and buffers here.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = connections.clone().acquire_owned() => permit.expect("never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small responses should not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let connection = on_connection(stream, peer, closing.clone());
        open.spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    drop(listener);
    closing.cancel();
    let all_ended = async { while open.join_next().await.is_some() {} };
    tokio::select! {
        () = all_ended => tracing::debug!("all connections ended"),
        _ = tokio::time::sleep(drain) => {
            tracing::warn!("connections still open after {drain:?}; closing them");
        }
    }
}

/// How long a closing connection is left to end by itself, its next answer
/// saying `Connection: close`, before an idle one is closed under the client.
/// Closing an idle keep-alive connection at once races the client's next
/// request, which then fails (a busy client always has one on its way); a
/// client that has sent nothing for this long is rarely about to.
pub const IDLE_GRACE: Duration = Duration::from_secs(1);

/// HTTP/1.1 and h2c on one connection at a time, with the header-read
/// timeout given.
#[derive(Clone)]
pub struct Http {
    builder: auto::Builder<TokioExecutor>,
}

impl Http {
    pub fn new(header_read: Duration) -> Http {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // A client gets this long to send a request's headers (slowloris).
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read);
        Http { builder }
    }

    /// Serves `stream`'s requests with `handler` until the client is done,
    /// or `closing` (then the request in flight is finished first).
    pub async fn serve<H, F>(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        closing: CancellationToken,
        handler: H,
    ) where
        H: Fn(http::Request<Incoming>, SocketAddr) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let local = stream.local_addr().ok();
        self.serve_io(stream, local, peer, closing, handler).await
    }

    async fn serve_io<S, H, F>(
        &self,
        stream: S,
        local: Option<SocketAddr>,
        peer: SocketAddr,
        closing: CancellationToken,
        handler: H,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        H: Fn(http::Request<Incoming>, SocketAddr) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        // Once closing, HTTP/1.1 answers say `Connection: close`, so a
        // client learns of the end with an answer instead of finding its
        // next request on a closed connection (see `IDLE_GRACE`).
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let marks = draining.clone();
        let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
            // HTTP/1.0 clients may send no Host; guests are promised an
            // authority, so it is the address they connected to.
            if request.uri().authority().is_none()
                && !request.headers().contains_key(http::header::HOST)
                && let Some(local) = local
                && let Ok(host) = http::HeaderValue::from_str(&local.to_string())
            {
                request.headers_mut().insert(http::header::HOST, host);
            }
            let mark = close_marker(request.version() <= http::Version::HTTP_11, marks.clone());
            // Mapped, not awaited in an async block, which would hold the
            // handler's future twice over.
            handler(request, peer).map(mark).never_error()
        });
        let connection = self.builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            _ = closing.cancelled() => {
                draining.store(true, std::sync::atomic::Ordering::Relaxed);
                tokio::select! {
                    ended = connection.as_mut() => ended,
                    () = tokio::time::sleep(IDLE_GRACE) => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%peer, "connection ended: {e}");
        }
    }
}

/// What marks an HTTP/1.1 answer `Connection: close` once `draining` is
/// set. (A function, so the closure's type is the one hyper's service asks
/// for, not one inferred for some shorter-lived error.)
fn close_marker(
    http1: bool,
    draining: Arc<std::sync::atomic::AtomicBool>,
) -> impl FnOnce(Response<Body>) -> Response<Body> {
    move |mut response| {
        if http1 && draining.load(std::sync::atomic::Ordering::Relaxed) {
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// Serves one request from `workload`: its body cut off when idle too
/// long, a failure answered with its status (see [`error_response`]).
pub async fn handle(
    workload: &dyn Workload,
    request: http::Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let start = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let request =
        request.map(|body| idle::IdleTimeout::new(body, idle::BODY_IDLE_TIMEOUT).boxed_unsync());
    let response = match workload.serve(request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(%peer, %method, path, "request failed: {error}");
            error_response(&error)
        }
    };
    tracing::debug!(
        %peer,
        %method,
        path,
        status = response.status().as_u16(),
        elapsed = ?start.elapsed(),
        workload = workload.name(),
        "request"
    );
    response
}

/// What the client sees of a failure: the status and a plain sentence, never
/// the guest's internals (those are in the server log).
pub fn error_response(error: &ServeError) -> Response<Body> {
    let (status, message) = match error {
        ServeError::Busy { .. }
        | ServeError::Guest {
            failure: GuestFailure::PoolExhausted,
            ..
        } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable: the workload is at its concurrency limit, try again\n",
        ),
        ServeError::Guest {
            failure: GuestFailure::ResponseTimeout(_),
            ..
        } => (
            StatusCode::GATEWAY_TIMEOUT,
            "504 Gateway Timeout: the workload did not answer in time\n",
        ),
        ServeError::Guest {
            failure: GuestFailure::Unreachable(_),
            ..
        } => (
            StatusCode::BAD_GATEWAY,
            "502 Bad Gateway: the container did not accept the connection\n",
        ),
        ServeError::Guest { .. } => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error: the workload failed to handle the request\n",
        ),
        ServeError::NotServing { .. } => (
            StatusCode::BAD_GATEWAY,
            "502 Bad Gateway: the workload is a command and serves no HTTP\n",
        ),
    };
    let mut response = Response::new(
        Full::new(Bytes::from_static(message.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn connections_still_open_when_the_drain_ends_are_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(accept(
            listener,
            shutdown.clone(),
            Duration::from_millis(100),
            HEADER_READ_TIMEOUT,
            |_request, _peer| async {
                // Longer than any drain.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Response::new(
                    Full::new(Bytes::new())
                        .map_err(|n| match n {})
                        .boxed_unsync(),
                )
            },
        ));
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        shutdown.cancel();
        serving.await.unwrap();
        // The request in flight was abandoned with its connection: the
        // client reads the end, not an answer an hour later.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
            .await
            .expect("the connection was left open");
        assert!(read.is_err() || rest.is_empty(), "{rest:?}");
    }

    /// Reads one HTTP/1.1 answer (headers and a `Content-Length` body).
    async fn read_answer(client: &mut tokio::net::TcpStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    return text;
                }
            }
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed before an answer: {text:?}");
            got.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn a_closing_listener_tells_its_clients_instead_of_cutting_them_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(accept(
            listener,
            shutdown.clone(),
            Duration::from_secs(10),
            HEADER_READ_TIMEOUT,
            |request: http::Request<Incoming>, _peer| async move {
                if request.uri().path() == "/slow" {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Response::new(
                    Full::new(Bytes::from_static(b"ok"))
                        .map_err(|n| match n {})
                        .boxed_unsync(),
                )
            },
        ));
        let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        // One client mid-request, one idle between requests.
        let mut busy = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut idle = tokio::net::TcpStream::connect(address).await.unwrap();
        idle.write_all(request("/").as_bytes()).await.unwrap();
        let first = read_answer(&mut idle).await;
        assert!(
            !first.to_ascii_lowercase().contains("connection: close"),
            "{first}"
        );
        busy.write_all(request("/slow").as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        shutdown.cancel();
        // The request in flight is answered, and told the connection ends.
        let answer = read_answer(&mut busy).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        // The idle client's next request, sent within the grace, is
        // answered too, not met with a closed connection.
        tokio::time::sleep(Duration::from_millis(200)).await;
        idle.write_all(request("/").as_bytes()).await.unwrap();
        let answer = read_answer(&mut idle).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        let mut rest = Vec::new();
        for client in [&mut busy, &mut idle] {
            let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
                .await
                .expect("the connection stayed open after its last answer");
            assert!(read.is_ok_and(|n| n == 0), "{rest:?}");
        }
        tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .expect("the listener did not end once its connections had")
            .unwrap();
    }
}
