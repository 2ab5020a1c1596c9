//! Every list the page keeps current, over one response.
//!
//! A browser opens at most six HTTP/1.1 connections to a host, and a watch
//! holds one for as long as it lasts: a page watching a dozen kinds would
//! have none left to act with. So the page asks for one feed of all the
//! kinds it shows, and berth runs each list-then-watch against its own
//! API (as client-go's informers do), writing one line per message:
//! `{"resource": R, "type": "LIST", "items": [...]}` when a list is (re)read,
//! then `{"resource": R, "type": "ADDED"|"MODIFIED"|"DELETED", "object": …}`.
//! A watch that ends or fails is listed again; the feed ends when the page
//! goes.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// What the page may watch, by the name it uses, and the API path of the
/// list across namespaces.
pub const RESOURCES: &[(&str, &str)] = &[
    ("namespaces", "/api/v1/namespaces"),
    ("deployments", "/apis/apps/v1/deployments"),
    ("statefulsets", "/apis/apps/v1/statefulsets"),
    ("replicasets", "/apis/apps/v1/replicasets"),
    ("jobs", "/apis/batch/v1/jobs"),
    ("cronjobs", "/apis/batch/v1/cronjobs"),
    ("pods", "/api/v1/pods"),
    ("services", "/api/v1/services"),
    ("ingresses", "/apis/networking.k8s.io/v1/ingresses"),
    ("hpas", "/apis/autoscaling/v2/horizontalpodautoscalers"),
    ("events", "/api/v1/events"),
    ("secrets", "/api/v1/secrets"),
];

/// The feed's body: each of `resources` listed and watched against `kube`,
/// until the page goes or `shutdown`.
pub fn feed(
    kube: &Router,
    resources: Vec<&'static str>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Body {
    let (send, mut receive) = mpsc::channel::<Bytes>(256);
    for (name, path) in RESOURCES.iter().filter(|(n, _)| resources.contains(n)) {
        let shutdown = shutdown.clone();
        let inform = inform(kube.clone(), name, path, send.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                () = inform => {}
            }
        });
    }
    drop(send);
    let lines = futures_util::stream::poll_fn(move |cx| {
        receive
            .poll_recv(cx)
            .map(|line| line.map(Ok::<_, Infallible>))
    });
    Body::from_stream(lines)
}

/// What the page is sent of an object: a Secret's keys without their
/// values (the page asks for one Secret's when someone wants to see them).
fn shown(resource: &str, mut object: Value) -> Value {
    if resource == "secrets" {
        if let Some(data) = object.get_mut("data").and_then(Value::as_object_mut) {
            for value in data.values_mut() {
                *value = Value::String(String::new());
            }
        }
        if let Some(fields) = object.as_object_mut() {
            fields.remove("stringData");
        }
    }
    object
}

fn shown_all(resource: &str, items: &Value) -> Value {
    match items.as_array() {
        Some(items) => Value::Array(items.iter().map(|o| shown(resource, o.clone())).collect()),
        None => Value::Array(Vec::new()),
    }
}

fn line(message: &Value) -> Bytes {
    let mut text = message.to_string();
    text.push('\n');
    Bytes::from(text)
}

async fn get(kube: &Router, path: &str) -> Option<Body> {
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(Body::empty())
        .ok()?;
    let mut kube = kube.clone();
    let response = match tower_service::Service::call(&mut kube, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    (response.status() == StatusCode::OK).then(|| response.into_body())
}

/// Lists and watches one resource into `send` until the page goes.
async fn inform(kube: Router, name: &'static str, path: &'static str, send: mpsc::Sender<Bytes>) {
    loop {
        tokio::select! {
            _ = send.closed() => return,
            () = list_and_watch(&kube, name, path, &send) => {}
        }
        // Listed again after a pause: a failing list is not hammered.
        tokio::select! {
            _ = send.closed() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn list(kube: &Router, path: &str) -> Option<Value> {
    let collected = get(kube, path).await?.collect().await.ok()?;
    serde_json::from_slice(&collected.to_bytes()).ok()
}

async fn list_and_watch(kube: &Router, name: &str, path: &str, send: &mpsc::Sender<Bytes>) {
    let Some(list) = list(kube, path).await else {
        return;
    };
    let version = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_owned();
    let message =
        json!({"resource": name, "type": "LIST", "items": shown_all(name, &list["items"])});
    if send.send(line(&message)).await.is_err() {
        return;
    }
    let watch = format!("{path}?watch=1&allowWatchBookmarks=true&resourceVersion={version}");
    let Some(mut body) = get(kube, &watch).await else {
        return;
    };
    let mut pending: Vec<u8> = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let event: Vec<u8> = pending.drain(..=end).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&event) else {
                continue;
            };
            match event["type"].as_str() {
                Some(kind @ ("ADDED" | "MODIFIED" | "DELETED")) => {
                    let message =
                        json!({"resource": name, "type": kind, "object": event["object"]});
                    if send.send(line(&message)).await.is_err() {
                        return;
                    }
                }
                // Too old, or gone: list again.
                Some("ERROR") => return,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_sent_without_its_values() {
        let secret = json!({"kind": "Secret", "metadata": {"name": "db"},
                            "data": {"password": "aHVudGVyMg=="}, "stringData": {"user": "admin"}});
        let sent = shown("secrets", secret.clone());
        assert_eq!(sent["data"], json!({"password": ""}));
        assert!(sent.get("stringData").is_none());
        assert_eq!(shown("configmaps", secret.clone()), secret);
    }
}
