//! `pods/exec`: a command run in a pod's Linux container, its streams
//! carried over a WebSocket in Kubernetes' channel protocol
//! (`v5.channel.k8s.io`, what kubectl 1.30+ speaks, and `v4`): each binary
//! message starts with its channel (0 stdin, 1 stdout, 2 stderr, 3 the
//! closing Status with the exit code, 4 terminal resizes; v5 adds 255 to
//! close a channel). The command runs through `berth-init exec`, as exec
//! probes do: in the container's namespaces, cgroups, root, environment
//! and privileges.
//!
//! A wasm container has no processes to run a command in: exec there is a
//! 400 saying so. Without a terminal device, `tty` runs the command with
//! pipes (stderr merged into stdout, as a terminal would show it).

use std::sync::Arc;

use axum::extract::FromRequestParts as _;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::KubeApi;
use super::status::ApiError;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;

/// What an exec request asks for.
#[derive(Debug)]
struct ExecRequest {
    command: Vec<String>,
    container: Option<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

fn parse(query: &str) -> Result<ExecRequest, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(query);
    let flag = |name: &str| {
        pairs
            .iter()
            .any(|(k, v)| k == name && super::rest::truthy(v))
    };
    let command: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return Err(ApiError::BadRequest(
            "you must specify at least 1 command".into(),
        ));
    }
    let request = ExecRequest {
        command,
        container: pairs
            .iter()
            .find(|(k, _)| k == "container")
            .map(|(_, v)| v.clone())
            .filter(|c| !c.is_empty()),
        stdin: flag("stdin"),
        stdout: flag("stdout"),
        stderr: flag("stderr"),
        tty: flag("tty"),
    };
    if !(request.stdin || request.stdout || request.stderr) {
        return Err(ApiError::BadRequest(
            "you must specify at least 1 of stdin, stdout, stderr".into(),
        ));
    }
    Ok(request)
}

/// The query's pairs, repeated keys kept (`command` is one per argument).
pub(super) fn serde_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{query}").parse().unwrap_or_default(),
    )
    .map(|q| q.0)
    .unwrap_or_default()
}

pub async fn serve(
    api: Arc<KubeApi>,
    mut parts: axum::http::request::Parts,
    namespace: String,
    name: String,
) -> Result<Response, ApiError> {
    let request = parse(parts.uri.query().unwrap_or(""))?;
    let pod = super::rest::get_pod(&api, &namespace, &name).await?;
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_owned();
    let containers: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let container = match &request.container {
        Some(c) if containers.contains(c) => c.clone(),
        Some(c) => {
            return Err(ApiError::BadRequest(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None => containers
            .first()
            .cloned()
            .ok_or_else(|| ApiError::BadRequest(format!("pod {name} has no containers")))?,
    };
    let Some(pids) = api.execs.get(&uid, &container) else {
        return Err(ApiError::BadRequest(if is_running(&pod, &container) {
            format!(
                "container {container} of pod {name} is a wasm component: it has no processes to run a command in (exec works in Linux containers)"
            )
        } else {
            format!("container {container} is not running in pod {name}")
        }));
    };
    let upgrade = channel_upgrade(&mut parts, "exec").await?;
    let init =
        crate::runtime::linux::init_binary().map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(upgrade
        .on_upgrade(move |socket| async move {
            let v5 = socket.protocol().is_some_and(|p| p == "v5.channel.k8s.io");
            run(socket, v5, init, pids, request).await;
        })
        .into_response())
}

/// The WebSocket upgrade of a request in the channel protocol (`v5`, or
/// `v4`), or a 400 saying `what` needs one.
pub(super) async fn channel_upgrade(
    parts: &mut axum::http::request::Parts,
    what: &str,
) -> Result<WebSocketUpgrade, ApiError> {
    let upgrade = WebSocketUpgrade::from_request_parts(parts, &())
        .await
        .map_err(|e| {
            ApiError::BadRequest(format!(
                "{what} needs a WebSocket upgrade (v5.channel.k8s.io): {}",
                e.body_text()
            ))
        })?;
    Ok(upgrade.protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"]))
}

/// Whether the pod's status has `container` running: one the kubelet runs
/// but has no exec target for is a wasm container.
fn is_running(pod: &serde_json::Value, container: &str) -> bool {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["name"] == container && c["state"]["running"].is_object())
}

/// A close with status 1000: kubectl reads any other as a failed stream.
pub(super) fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    }))
}

pub(super) fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::Binary(bytes.into())
}

async fn run(
    mut socket: WebSocket,
    v5: bool,
    init: std::path::PathBuf,
    pids: crate::runtime::linux::ContainerPids,
    request: ExecRequest,
) {
    let piped = std::process::Stdio::piped;
    let null = std::process::Stdio::null;
    let spawned = tokio::process::Command::new(&init)
        .arg("exec")
        .arg(pids.pid.to_string())
        .arg(pids.init.to_string())
        .args(&request.command)
        .stdin(if request.stdin { piped() } else { null() })
        .stdout(if request.stdout || request.tty {
            piped()
        } else {
            null()
        })
        .stderr(if request.stderr || request.tty {
            piped()
        } else {
            null()
        })
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let status = json!({"metadata": {}, "status": "Failure", "reason": "InternalError",
                "message": format!("starting the command: {e}")});
            let _ = socket
                .send(frame(ERROR, status.to_string().as_bytes()))
                .await;
            let _ = socket.send(normal_close()).await;
            return;
        }
    };
    let (output_tx, mut output_rx) = tokio::sync::mpsc::channel::<(u8, Vec<u8>)>(16);
    // With a terminal asked for, its output is one stream, as a terminal shows.
    let stderr_channel = if request.tty { STDOUT } else { STDERR };
    for (pipe, channel) in [
        (
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            STDOUT,
        ),
        (
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            stderr_channel,
        ),
    ] {
        let Some(mut pipe) = pipe else { continue };
        let tx = output_tx.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 32 * 1024];
            loop {
                match pipe.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((channel, buffer[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(output_tx);
    let mut stdin = child.stdin.take();
    let mut outputs_open = true;
    let status = loop {
        tokio::select! {
            output = output_rx.recv(), if outputs_open => match output {
                Some((channel, data)) => {
                    if socket.send(frame(channel, &data)).await.is_err() {
                        let _ = child.kill().await;
                        return;
                    }
                }
                None => outputs_open = false,
            },
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(data))) => match data.first() {
                    Some(&STDIN) => {
                        if let Some(pipe) = stdin.as_mut()
                            && pipe.write_all(&data[1..]).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    Some(&CLOSE) if v5 && data.get(1) == Some(&STDIN) => stdin = None,
                    // Resizes mean nothing without a terminal device.
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    let _ = child.kill().await;
                    return;
                }
                Some(Ok(_)) => {}
            },
            exited = child.wait(), if !outputs_open => break exited,
        }
    };
    let code = status.ok().and_then(|s| s.code()).unwrap_or(137);
    let status = if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {:?}, exit code {code}",
                request.command
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
    };
    let _ = socket
        .send(frame(ERROR, status.to_string().as_bytes()))
        .await;
    let _ = socket.send(normal_close()).await;
}
