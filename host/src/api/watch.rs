//! Watches: a chunked stream of `{"type": …, "object": …}` lines, one per
//! change, as kube-apiserver sends them. Without a resourceVersion (or
//! with 0) the watch starts with an ADDED event for every object there is;
//! with one, it resumes after it, or answers an ERROR event with a 410
//! Status when that version is older than the store's window, and the
//! client lists again. Bookmarks carry the latest version while nothing
//! matching changes, so a resumed watch needs no backlog.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::KubeApi;
use super::resources::Source;
use super::rest::{Params, Selectors, Target, read_all};
use super::status::ApiError;
use super::table::{self, Include};
use crate::state::Change;

/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

fn event(kind: &str, object: Value) -> bytes::Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    bytes::Bytes::from(line)
}

pub async fn serve(
    api: Arc<KubeApi>,
    target: Target,
    params: Params,
    table: Option<Include>,
) -> Result<Response, ApiError> {
    let resource = target.resource;
    let selectors = Selectors::of(resource, &params)?;
    let since: Option<u64> = match params.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(rv.parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "resourceVersion {rv:?} is not one this server gave"
            ))
        })?),
    };
    let timeout =
        match params.get("timeoutSeconds").map(String::as_str) {
            None | Some("") => Duration::from_secs(1800 + fastrand::u64(..1800)),
            Some(t) => Duration::from_secs(t.parse().map_err(|_| {
                ApiError::BadRequest(format!("timeoutSeconds {t:?} is not a number"))
            })?),
        };
    let bookmarks = super::rest::flag(&params, "allowWatchBookmarks");
    let initial_end = super::rest::flag(&params, "sendInitialEvents");
    let hub = {
        let store = api.state.store.lock();
        if resource.source == Source::Events {
            store.event_hub()
        } else {
            store.hub()
        }
    };
    let namespace = target.namespace.clone();
    let reader = api.clone();
    // The initial state and the subscription are taken under one lock of
    // the store, so no change falls between them.
    let start = tokio::task::spawn_blocking(move || {
        let store = reader.state.store.lock();
        let current = store.current_version()?;
        let initial = match since {
            None => read_all(&reader, &store, resource, namespace.as_deref())?.0,
            Some(_) => Vec::new(),
        };
        let subscribed = hub.subscribe(since.unwrap_or(current));
        Ok::<_, ApiError>((initial, subscribed, current))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("a store task failed: {e}")))??;
    let (initial, subscribed, current) = start;

    let kind = resource.kind;
    let namespace = target.namespace.clone();
    let shutdown = api.shutdown.clone();
    let (sender, receiver) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    let render = move |object: Value, first: &mut bool| -> Value {
        match table {
            None => object,
            Some(include) => {
                let mut t = table::watch_row(kind, &object, include);
                if std::mem::take(first) {
                    t["columnDefinitions"] =
                        table::table(kind, &[], include, "", None)["columnDefinitions"].clone();
                }
                t
            }
        }
    };
    tokio::spawn(async move {
        let mut first = true;
        let mut last = since.unwrap_or(current);
        let mut cursor = match subscribed {
            Ok(s) => s,
            Err(too_old) => {
                let error = ApiError::Gone {
                    wanted: since.unwrap_or(0),
                    oldest: too_old.oldest,
                };
                let _ = sender.send(event("ERROR", error.status())).await;
                return;
            }
        };
        for object in initial {
            if selectors.matches(&object)
                && sender
                    .send(event("ADDED", render(object, &mut first)))
                    .await
                    .is_err()
            {
                return;
            }
        }
        if initial_end {
            let bookmark = json!({
                "kind": kind, "apiVersion": resource.api_version(),
                "metadata": {"resourceVersion": current.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"}},
            });
            if sender.send(event("BOOKMARK", bookmark)).await.is_err() {
                return;
            }
        }
        let send_change = |change: &Change, first: &mut bool| -> Option<bytes::Bytes> {
            let in_namespace =
                |ns: Option<&str>| namespace.as_deref().is_none_or(|want| ns == Some(want));
            let (kind, object) = match change {
                Change::Object { change, record }
                    if resource.stored() == Some(record.object.kind())
                        && in_namespace(record.object.namespace()) =>
                {
                    (change.as_str(), super::view(record))
                }
                Change::Event(logged) | Change::EventGone(logged)
                    if resource.source == Source::Events
                        && in_namespace(Some(&logged.event.namespace)) =>
                {
                    let kind = if matches!(change, Change::EventGone(_)) {
                        "DELETED"
                    } else {
                        "ADDED"
                    };
                    (kind, super::rest::event_object(resource, logged))
                }
                _ => return None,
            };
            if !selectors.matches(&object) {
                return None;
            }
            Some(event(kind, render(object, first)))
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut bookmark = tokio::time::interval(BOOKMARK_EVERY);
        bookmark.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = shutdown.cancelled() => return,
                _ = sender.closed() => return,
                _ = bookmark.tick(), if bookmarks => {
                    let mark = json!({
                        "kind": kind, "apiVersion": resource.api_version(),
                        "metadata": {"resourceVersion": last.to_string()},
                    });
                    if sender.send(event("BOOKMARK", mark)).await.is_err() {
                        return;
                    }
                }
                taken = cursor.next() => match taken {
                    Ok(changes) => {
                        for change in changes {
                            last = change.resource_version();
                            if let Some(line) = send_change(&change, &mut first)
                                && sender.send(line).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                    // Too slow a reader, left behind by the window: it
                    // lists again, as after a 410.
                    Err(too_old) => {
                        let error = ApiError::Gone { wanted: last, oldest: too_old.oldest };
                        let _ = sender.send(event("ERROR", error.status())).await;
                        return;
                    }
                },
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let line = receiver.recv().await?;
        Some((Ok::<_, std::io::Error>(line), receiver))
    });
    let mut response = (StatusCode::OK, super::rest::stream_body(stream)).into_response();
    // JSON watches are plain `application/json`, as kube-apiserver sends
    // them; clients frame them as a stream of objects.
    super::rest::content_type(&mut response, "application/json");
    Ok(response)
}
