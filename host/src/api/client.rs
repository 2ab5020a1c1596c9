//! The CLI's side of the control API: one HTTP/1.1 request per call over
//! the daemon's unix socket.

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
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| {
            format!(
                "no berth daemon at {} (start one with `berth daemon`)",
                socket.display()
            )
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("talking to the daemon")?;
    tokio::spawn(connection);
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "berth")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .context("building the request")?;
    let response = sender
        .send_request(request)
        .await
        .context("talking to the daemon")?;
    let status = response.status().as_u16();
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

/// The error message of a failed call.
pub fn error_of(json: &serde_json::Value) -> String {
    json.get("error")
        .and_then(|e| e.as_str())
        .unwrap_or("the daemon refused the request")
        .to_owned()
}

/// `GET path`, copying the body to stdout as it arrives (for `logs -f`).
/// A refusal is returned as an error with the daemon's message.
pub async fn get_streaming(socket: &Path, path: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| {
            format!(
                "no berth daemon at {} (start one with `berth daemon`)",
                socket.display()
            )
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("talking to the daemon")?;
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method("GET")
        .uri(path)
        .header(http::header::HOST, "berth")
        .body(Full::new(Bytes::new()))
        .context("building the request")?;
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
