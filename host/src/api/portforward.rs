//! `pods/portforward`: TCP connections to a pod's ports, as kubectl 1.27 to
//! 1.33 open them. The connection upgrades to SPDY/3.1 — directly
//! (`Upgrade: SPDY/3.1`, what kubectl before 1.31 uses and later ones fall
//! back to), or tunnelled in a WebSocket whose binary messages carry the
//! SPDY byte stream (subprotocol `SPDY/3.1+portforward.k8s.io`, kubectl
//! 1.31's default). On it, each forwarded connection is a pair of streams
//! kubectl opens with the same `requestid`: `error` (where berth writes why
//! a connection failed) and `data` (the connection's bytes).
//!
//! A Linux pod's port is reached inside its network namespace, as the
//! kubelet does; a wasm pod's ports are its HTTP handler, reached on the
//! pod's own loopback endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts as _;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt as _, Stream, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use super::KubeApi;
use super::spdy::{self, Frame};
use super::status::ApiError;

const PROTOCOL: &str = "portforward.k8s.io";
const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// Streams waiting for their partner, per connection: kubectl opens the
/// two of a pair back to back, so more than this is not kubectl.
const MAX_PENDING: usize = 256;
/// Forwarded connections at once, per port-forward session.
const MAX_CONNECTIONS: usize = 1024;
/// Bytes a connection may have sent that its pod has not read yet. The
/// session's one read loop never waits on a connection (a slow one would
/// stall every other, and pings), so this is its bound instead: past it
/// the connection is reset.
const MAX_QUEUED: usize = 4 << 20;

/// A forwarded connection's upload: what the client sent, and how many of
/// those bytes the pod has yet to read.
type Upload = (
    mpsc::UnboundedSender<Bytes>,
    Arc<std::sync::atomic::AtomicUsize>,
);

pub async fn serve(
    api: Arc<KubeApi>,
    mut parts: axum::http::request::Parts,
    namespace: String,
    name: String,
) -> Result<Response, ApiError> {
    let pod = super::rest::get_pod(&api, &namespace, &name).await?;
    let ports = Arc::new(PodPorts::of(&api, &pod)?);
    let upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if upgrade == "websocket" {
        let socket = WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .map_err(|e| {
                ApiError::BadRequest(format!("port-forward's WebSocket: {}", e.body_text()))
            })?;
        // Offered anything else, the answer names no subprotocol and
        // kubectl falls back to SPDY.
        return Ok(socket
            .protocols([TUNNEL])
            .on_upgrade(move |socket| tunnelled(socket, ports))
            .into_response());
    }
    if upgrade.split(',').any(|u| u.trim() == "spdy/3.1") {
        let offered: Vec<&str> = parts
            .headers
            .get_all("x-stream-protocol-version")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        if !offered.is_empty() && !offered.contains(&PROTOCOL) {
            return Err(ApiError::BadRequest(format!(
                "port-forward speaks {PROTOCOL}; the client offered {}",
                offered.join(", ")
            )));
        }
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or_else(|| ApiError::BadRequest("this connection cannot be upgraded".into()))?;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => direct(hyper_util::rt::TokioIo::new(upgraded), ports).await,
                Err(e) => tracing::debug!("port-forward: the upgrade failed: {e}"),
            }
        });
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        headers.insert(
            "x-stream-protocol-version",
            HeaderValue::from_static(PROTOCOL),
        );
        return Ok(response);
    }
    Err(ApiError::BadRequest(format!(
        "port-forward upgrades the connection: to SPDY/3.1 ({PROTOCOL}), or to a WebSocket \
         carrying it ({TUNNEL})"
    )))
}

/// How a pod's ports are reached.
struct PodPorts {
    name: String,
    uid: String,
    /// Inside the network namespace of the pod's Linux containers.
    netns: Option<crate::runtime::linux::NetnsConnector>,
    /// The pod's wasm HTTP handler, and the ports its wasm containers
    /// declare (any port, if they declare none and no Linux container runs).
    wasm: Option<(SocketAddr, Vec<u16>)>,
}

impl PodPorts {
    fn of(api: &KubeApi, pod: &serde_json::Value) -> Result<PodPorts, ApiError> {
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let uid = pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if pod["status"]["phase"] != "Running" {
            return Err(ApiError::BadRequest(format!(
                "pod {name} is not running (phase {})",
                pod["status"]["phase"].as_str().unwrap_or("Pending")
            )));
        }
        let containers = pod["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut linux = None;
        let mut wasm_ports = Vec::new();
        let mut wasm_endpoint = None;
        for container in &containers {
            let cname = container["name"].as_str().unwrap_or_default();
            if let Some(pids) = api.execs.get(&uid, cname) {
                linux.get_or_insert(pids);
                continue;
            }
            wasm_ports.extend(
                container["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["containerPort"].as_u64())
                    .filter_map(|p| u16::try_from(p).ok()),
            );
            if let Some(endpoint) = pod["status"]["endpoints"][cname]
                .as_str()
                .and_then(|e| e.parse::<SocketAddr>().ok())
            {
                wasm_endpoint.get_or_insert(endpoint);
            }
        }
        let netns = linux
            .map(|pids| crate::runtime::linux::NetnsConnector::new(Some(pids.netns_path())))
            .transpose()
            .map_err(|e| ApiError::Internal(format!("reaching pod {name}'s network: {e}")))?;
        if netns.is_none() && wasm_endpoint.is_none() {
            return Err(ApiError::BadRequest(format!(
                "pod {name} has no running container to forward to"
            )));
        }
        Ok(PodPorts {
            name,
            uid,
            netns,
            wasm: wasm_endpoint.map(|e| (e, wasm_ports)),
        })
    }

    async fn connect(&self, port: u16) -> Result<tokio::net::TcpStream, String> {
        let wasm = self.wasm.as_ref().filter(|(_, ports)| {
            ports.contains(&port) || (ports.is_empty() && self.netns.is_none())
        });
        if let Some((endpoint, _)) = wasm {
            let stream = tokio::net::TcpStream::connect(endpoint)
                .await
                .map_err(|e| format!("the wasm handler at {endpoint}: {e}"))?;
            let _ = stream.set_nodelay(true);
            return Ok(stream);
        }
        match &self.netns {
            Some(netns) => {
                use tower_service::Service as _;
                let uri: http::Uri = format!("http://127.0.0.1:{port}/")
                    .parse()
                    .map_err(|e| format!("port {port}: {e}"))?;
                let stream = netns
                    .clone()
                    .call(uri)
                    .await
                    .map_err(|e| format!("dial tcp4 127.0.0.1:{port}: {e}"))?;
                Ok(stream.into_inner())
            }
            None => Err(format!(
                "the pod's wasm containers serve ports {:?}, not {port}",
                self.wasm
                    .as_ref()
                    .map(|(_, p)| p.clone())
                    .unwrap_or_default()
            )),
        }
    }
}

/// SPDY straight on the upgraded connection.
async fn direct<T>(io: T, ports: Arc<PodPorts>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (read, mut write) = tokio::io::split(io);
    let (out, mut frames) = mpsc::channel::<Bytes>(64);
    let writer = tokio::spawn(async move {
        while let Some(frame) = frames.recv().await {
            if write.write_all(&frame).await.is_err() || write.flush().await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    let inbound = tokio_util::io::ReaderStream::new(read);
    session(inbound, out, ports).await;
    let _ = writer.await;
}

/// SPDY in a WebSocket: inbound binary messages are pieces of one byte
/// stream (kubectl writes a frame field by field, empty messages too);
/// each outbound frame goes in a message of its own.
async fn tunnelled(socket: WebSocket, ports: Arc<PodPorts>) {
    let (mut sink, stream) = socket.split();
    let (out, mut frames) = mpsc::channel::<Bytes>(64);
    let writer = tokio::spawn(async move {
        while let Some(frame) = frames.recv().await {
            if sink.send(Message::Binary(frame)).await.is_err() {
                return;
            }
        }
        let _ = sink
            .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                code: axum::extract::ws::close_code::NORMAL,
                reason: "".into(),
            })))
            .await;
    });
    let inbound = stream.filter_map(|message| async move {
        match message {
            Ok(Message::Binary(bytes)) => Some(Ok(bytes)),
            Ok(Message::Text(_)) => Some(Err(std::io::Error::other(
                "a text message in a SPDY tunnel",
            ))),
            Ok(Message::Close(_)) => {
                Some(Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)))
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => None,
            Err(e) => Some(Err(std::io::Error::other(e))),
        }
    });
    session(Box::pin(inbound), out, ports).await;
    let _ = writer.await;
}

/// Half of a pair of streams, waiting for the other.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: u16,
}

/// Serves one SPDY connection until the client goes away.
async fn session<S>(mut inbound: S, out: mpsc::Sender<Bytes>, ports: Arc<PodPorts>)
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    let mut reader = spdy::Reader::default();
    let mut writer = spdy::Writer::default();
    let mut pending: HashMap<String, Pair> = HashMap::new();
    // Each forwarded connection's upload, by its data stream.
    let mut uploads: HashMap<u32, Upload> = HashMap::new();
    // The error stream paired with each data stream.
    let mut errors: HashMap<u32, u32> = HashMap::new();
    let mut connections = tokio::task::JoinSet::new();
    let mut by_stream: HashMap<u32, tokio::task::AbortHandle> = HashMap::new();
    'connection: while let Some(chunk) = inbound.next().await {
        let Ok(chunk) = chunk else { break };
        reader.push(&chunk);
        loop {
            let frame = match reader.next() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(pod = %ports.name, "port-forward: {e}");
                    break 'connection;
                }
            };
            while connections.try_join_next().is_some() {}
            match frame {
                Frame::SynStream { id, headers, .. } => {
                    let header = |name: &str| {
                        headers
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, v)| v.as_str())
                    };
                    let port = header("port")
                        .and_then(|p| p.parse::<u16>().ok())
                        .filter(|p| *p > 0);
                    let kind = header("streamtype");
                    let (Some(port), Some(kind @ ("error" | "data"))) = (port, kind) else {
                        if out.send(spdy::rst_stream(id, spdy::CANCEL)).await.is_err() {
                            break 'connection;
                        }
                        continue;
                    };
                    if pending.len() >= MAX_PENDING || connections.len() >= MAX_CONNECTIONS {
                        if out.send(spdy::rst_stream(id, spdy::CANCEL)).await.is_err() {
                            break 'connection;
                        }
                        continue;
                    }
                    // Replied at once: kubectl opens the data stream only
                    // once its error stream is accepted.
                    if out.send(writer.syn_reply(id)).await.is_err() {
                        break 'connection;
                    }
                    let request = header("requestid").unwrap_or_default().to_owned();
                    let pair = pending.entry(request.clone()).or_default();
                    pair.port = port;
                    if kind == "error" {
                        pair.error = Some(id);
                    } else {
                        pair.data = Some(id);
                    }
                    if let (Some(error), Some(data)) = (pair.error, pair.data) {
                        let port = pair.port;
                        pending.remove(&request);
                        let (upload, uploaded) = mpsc::unbounded_channel();
                        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                        uploads.insert(data, (upload, queued.clone()));
                        errors.insert(data, error);
                        let handle = connections.spawn(forward(
                            ports.clone(),
                            port,
                            error,
                            data,
                            (uploaded, queued),
                            out.clone(),
                        ));
                        by_stream.insert(data, handle);
                    }
                }
                Frame::Data { id, fin, data } => {
                    if let Some((upload, queued)) = uploads.get(&id) {
                        let waiting = queued
                            .fetch_add(data.len(), std::sync::atomic::Ordering::Relaxed)
                            + data.len();
                        if waiting > MAX_QUEUED {
                            uploads.remove(&id);
                            if let Some(handle) = by_stream.remove(&id) {
                                handle.abort();
                            }
                            // Both streams end, so kubectl closes the
                            // connection rather than wait on it.
                            let mut ending = vec![spdy::rst_stream(id, spdy::CANCEL)];
                            if let Some(error) = errors.remove(&id) {
                                ending.push(spdy::data(error, true, b""));
                            }
                            for frame in ending {
                                if out.send(frame).await.is_err() {
                                    break 'connection;
                                }
                            }
                            continue;
                        }
                        if !data.is_empty() && upload.send(data).is_err() {
                            uploads.remove(&id);
                        }
                        if fin {
                            // Dropping the sender is the end of the upload.
                            uploads.remove(&id);
                        }
                    }
                }
                Frame::RstStream { id, .. } => {
                    uploads.remove(&id);
                    if let Some(handle) = by_stream.remove(&id) {
                        handle.abort();
                    }
                }
                Frame::Ping { id } => {
                    if out.send(spdy::ping(id)).await.is_err() {
                        break 'connection;
                    }
                }
                Frame::GoAway => break 'connection,
                Frame::Ignored => {}
            }
            by_stream.retain(|_, handle| !handle.is_finished());
            errors.retain(|data, _| by_stream.contains_key(data));
        }
    }
    connections.abort_all();
}

/// One forwarded connection: the pod's port, joined to the data stream.
async fn forward(
    ports: Arc<PodPorts>,
    port: u16,
    error: u32,
    data: u32,
    (mut upload, queued): (
        mpsc::UnboundedReceiver<Bytes>,
        Arc<std::sync::atomic::AtomicUsize>,
    ),
    out: mpsc::Sender<Bytes>,
) {
    let stream = match ports.connect(port).await {
        Ok(stream) => stream,
        Err(reason) => {
            // kubectl prints this and ends the whole port-forward, as it
            // does on a cluster.
            let message = format!(
                "error forwarding port {port} to pod {}, uid {}: {reason}",
                ports.name, ports.uid
            );
            let _ = out.send(spdy::data(error, false, message.as_bytes())).await;
            let _ = out.send(spdy::data(data, true, b"")).await;
            let _ = out.send(spdy::data(error, true, b"")).await;
            return;
        }
    };
    let (mut read, mut write) = stream.into_split();
    let uploading = async move {
        while let Some(chunk) = upload.recv().await {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
            queued.fetch_sub(chunk.len(), std::sync::atomic::Ordering::Relaxed);
        }
        // The client is done sending: so is the connection's write side.
        let _ = write.shutdown().await;
    };
    let downloading = async {
        let mut buffer = vec![0u8; 32 << 10];
        loop {
            match read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out
                        .send(spdy::data(data, false, &buffer[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        // The pod closed its side: both streams end, and kubectl closes
        // the local connection.
        let _ = out.send(spdy::data(data, true, b"")).await;
        let _ = out.send(spdy::data(error, true, b"")).await;
    };
    tokio::join!(uploading, downloading);
}
