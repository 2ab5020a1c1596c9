//! The CLI's side of the control API: one HTTP/1.1 request per call over
//! the daemon's unix socket, or over TCP to the daemon `BERTH_HOST` names
//! (`ADDR` or `http://ADDR`), with the token from `BERTH_TOKEN` or the file
//! `BERTH_TOKEN_FILE`.

use std::path::Path;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

/// Sends `method path` with an optional JSON body; returns the status and
/// the parsed JSON reply.
pub async fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    call_as(socket, method, path, "application/json", body).await
}

/// [`call`] with a body of another JSON media type (a merge patch).
pub async fn call_as(
    socket: &Path,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let (mut sender, auth) = open(socket).await?;
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let request = build(
        method,
        path,
        content_type,
        auth.as_deref(),
        Bytes::from(bytes),
    )?;
    let response = sender
        .send_request(request)
        .await
        .context("talking to the daemon")?;
    let status = response.status().as_u16();
    if status == 401 {
        anyhow::bail!(
            "this berth daemon refused the request: it needs its API token (BERTH_TOKEN or BERTH_TOKEN_FILE)"
        );
    }
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the daemon's answer")?
        .to_bytes();
    let json = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body).context("the daemon's answer is not JSON")?
    };
    Ok((status, json))
}

fn build(
    method: &str,
    path: &str,
    content_type: &str,
    auth: Option<&str>,
    body: Bytes,
) -> anyhow::Result<http::Request<Full<Bytes>>> {
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "berth")
        .header(http::header::CONTENT_TYPE, content_type);
    if let Some(auth) = auth {
        request = request.header(http::header::AUTHORIZATION, auth);
    }
    request
        .body(Full::new(body))
        .context("building the request")
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A connection to the daemon, and the Authorization header it needs.
async fn open(socket: &Path) -> anyhow::Result<(Sender, Option<String>)> {
    if let Some(host) = std::env::var("BERTH_HOST").ok().filter(|h| !h.is_empty()) {
        let address = host.trim_start_matches("http://").trim_end_matches('/');
        let token = match (
            std::env::var("BERTH_TOKEN"),
            std::env::var_os("BERTH_TOKEN_FILE"),
        ) {
            (Ok(token), _) if !token.is_empty() => token,
            (_, Some(file)) => std::fs::read_to_string(&file)
                .with_context(|| format!("reading BERTH_TOKEN_FILE {}", file.to_string_lossy()))?
                .trim()
                .to_owned(),
            _ => anyhow::bail!(
                "BERTH_HOST is set: the daemon's token is needed too (BERTH_TOKEN or BERTH_TOKEN_FILE)"
            ),
        };
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .with_context(|| format!("no berth daemon at {address} (BERTH_HOST)"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("talking to the daemon")?;
        tokio::spawn(connection);
        return Ok((sender, Some(format!("Bearer {token}"))));
    }
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| {
            format!(
                "no berth daemon at {} (start one with `berth daemon`)",
                socket.display()
            )
        })?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("talking to the daemon")?;
    tokio::spawn(connection);
    Ok((sender, None))
}

/// The error message of a failed call: a Kubernetes Status's message, or
/// the private API's error.
pub fn error_of(json: &serde_json::Value) -> String {
    json.get("message")
        .or_else(|| json.get("error"))
        .and_then(|e| e.as_str())
        .unwrap_or("the daemon refused the request")
        .to_owned()
}

/// The Kubernetes API path of `kind`'s objects: in `namespace` (all of
/// them with `None`), or the one `name`d.
pub fn path(kind: &str, namespace: Option<&str>, name: Option<&str>) -> anyhow::Result<String> {
    let resource = super::resources::by_kind(kind)
        .with_context(|| format!("berth's API has no kind {kind}"))?;
    let mut path = if resource.group.is_empty() {
        format!("/api/{}", resource.version)
    } else {
        format!("/apis/{}/{}", resource.group, resource.version)
    };
    if let Some(ns) = namespace.filter(|_| resource.namespaced) {
        path.push_str(&format!("/namespaces/{ns}"));
    }
    path.push('/');
    path.push_str(resource.plural);
    if let Some(name) = name {
        path.push('/');
        path.push_str(name);
    }
    Ok(path)
}

/// Percent-encodes a query parameter's value.
pub fn query_value(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `GET path`, copying the body to stdout as it arrives (for `logs -f`).
/// A refusal is returned as an error with the daemon's message.
pub async fn get_streaming(socket: &Path, path: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let (mut sender, auth) = open(socket).await?;
    let request = build(
        "GET",
        path,
        "application/json",
        auth.as_deref(),
        Bytes::new(),
    )?;
    let response = sender
        .send_request(request)
        .await
        .context("talking to the daemon")?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let bytes = body
            .collect()
            .await
            .context("reading the daemon's answer")?
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        anyhow::bail!("{}", error_of(&json));
    }
    let mut out = std::io::stdout().lock();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the daemon's answer")?;
        if let Some(data) = frame.data_ref() {
            out.write_all(data).context("writing the output")?;
            out.flush().context("writing the output")?;
        }
    }
    Ok(())
}
