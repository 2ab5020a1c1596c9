//! `pods/attach`: the output of a running container's main process, from
//! the moment of attaching, over the same WebSocket channel protocol as
//! exec (`v5.channel.k8s.io`, `v4`), for wasm and Linux containers alike.
//! It ends with the container's run (a restart ends it, as on a cluster).
//!
//! berth starts containers without a standard input, so there is nothing
//! to attach `-i` to: that is a 400 saying so. Both output streams arrive
//! on stdout: the kubelet keeps them as one log, in order.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde_json::json;

use super::KubeApi;
use super::exec::{frame, normal_close, serde_urlencoded_pairs};
use super::status::ApiError;

const STDOUT: u8 = 1;
const ERROR: u8 = 3;

pub async fn serve(
    api: Arc<KubeApi>,
    mut parts: axum::http::request::Parts,
    namespace: String,
    name: String,
) -> Result<Response, ApiError> {
    let pairs = serde_urlencoded_pairs(parts.uri.query().unwrap_or(""));
    let flag = |wanted: &str| {
        pairs
            .iter()
            .any(|(k, v)| k == wanted && super::rest::truthy(v))
    };
    if flag("stdin") {
        return Err(ApiError::BadRequest(format!(
            "pod {name}'s containers run without standard input: attach shows their output (leave out -i)"
        )));
    }
    if !flag("stdout") && !flag("stderr") {
        return Err(ApiError::BadRequest(
            "you must specify at least 1 of stdin, stdout, stderr".into(),
        ));
    }
    let container = pairs
        .iter()
        .find(|(k, v)| k == "container" && !v.is_empty())
        .map(|(_, v)| v.clone());
    let options = super::logs::LogOptions {
        container,
        follow: true,
        tail_lines: Some(0),
        ..Default::default()
    };
    // Refusals (no such pod or container, not running) before the upgrade,
    // so kubectl prints them.
    let pod = super::rest::get_pod(&api, &namespace, &name).await?;
    if pod["status"]["phase"] != "Running" {
        return Err(ApiError::BadRequest(format!(
            "pod {name} is not running (phase {}): there is nothing to attach to",
            pod["status"]["phase"].as_str().unwrap_or("Pending")
        )));
    }
    let output = super::logs::pod_log(api.state.clone(), namespace, name, options).await?;
    let upgrade = super::exec::channel_upgrade(&mut parts, "attach").await?;
    Ok(upgrade
        .on_upgrade(move |socket| stream(socket, output))
        .into_response())
}

async fn stream(mut socket: WebSocket, output: Response) {
    let mut body = output.into_body().into_data_stream();
    loop {
        tokio::select! {
            chunk = body.next() => match chunk {
                Some(Ok(bytes)) if bytes.is_empty() => {}
                Some(Ok(bytes)) => {
                    if socket.send(frame(STDOUT, &bytes)).await.is_err() {
                        return;
                    }
                }
                // The run ended: so does the attach.
                Some(Err(_)) | None => break,
            },
            message = socket.recv() => match message {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                // Resizes and the like mean nothing here.
                Some(Ok(_)) => {}
            },
        }
    }
    let status = json!({"metadata": {}, "status": "Success"});
    let _ = socket
        .send(frame(ERROR, status.to_string().as_bytes()))
        .await;
    let _ = socket.send(normal_close()).await;
}
