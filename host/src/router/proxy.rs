//! One request through a Service: pick a ready endpoint, hand the request to
//! its workload in-process, count it in flight until its response body
//! ends, and retry once elsewhere when the replica failed before answering
//! and the request can safely be sent again.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};

use super::table::{NoRoom, Route};
use crate::runtime::{Body, GuestFailure, ServeError};
use berth_serve::error_response;

/// Serves `request` from `route`'s endpoints on service port `port`,
/// waiting up to `wait` for one to be ready; counted in the route's
/// metrics.
pub async fn forward(
    route: Arc<Route>,
    port: usize,
    mut request: Request<Body>,
    client: Option<IpAddr>,
    wait: Duration,
) -> Response<Body> {
    route.count();
    let span = super::trace::Span::start(request.headers_mut(), || {
        format!("route {}/{}", route.key.namespace, route.key.name)
    });
    let timing = route.metrics.as_ref().map(|m| m.begin(request.method()));
    let counted = route.clone();
    let response = forward_uncounted(route, port, request, client, wait).await;
    if let (Some(metrics), Some(timing)) = (&counted.metrics, timing) {
        metrics.end(timing, response.status());
    }
    tracing::debug!(
        trace_id = %span.context().trace_id_hex(),
        service = %format_args!("{}/{}", counted.key.namespace, counted.key.name),
        status = response.status().as_u16(),
        "request"
    );
    span.end(response.status());
    response
}

/// [`forward`], uncounted.
///
/// The waits are rare and their futures large (timers, notifications), so
/// they are boxed: this future is moved into place for every request.
async fn forward_uncounted(
    mut route: Arc<Route>,
    mut port: usize,
    mut request: Request<Body>,
    client: Option<IpAddr>,
    wait: Duration,
) -> Response<Body> {
    strip_hop_by_hop(request.headers_mut());
    let endpoints = route.endpoints(port).len();
    let mut woken = None;
    if endpoints == 0 {
        // Scaled to zero: the activator brings a replica and the request
        // is held for it (a cold start), as Knative's activator holds it.
        let mut hold = wait;
        let asked = tokio::time::Instant::now();
        if let Some(activator) = &route.activator
            && let Some(longer) =
                Box::pin(activator.wake(&route.key.namespace, &route.key.name)).await
        {
            hold = longer;
            woken = Some((longer, asked));
        }
        match Box::pin(wait_for_endpoints(route, port, hold)).await {
            Ok(now) => (route, port) = now,
            Err(gone) => {
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("503 Service Unavailable: {gone}\n"),
                );
            }
        }
    }
    // What it takes to send the request again: only for a method that may
    // be repeated, and only when it has no body that would be gone.
    // With one endpoint there is nowhere else to send it (unless more
    // turned ready while this one waited for the first).
    let again = ((endpoints != 1 || woken.is_some()) && replayable(&request)).then(|| {
        let mut copy = Request::new(());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        copy
    });
    // A replica at its concurrency limit passes the request to one with
    // room; when none has, the request waits for room.
    let acquired = match route.try_acquire(port, client, None) {
        Err(NoRoom::AllBusy | NoRoom::Stopping) => {
            Box::pin(route.acquire(port, client, wait)).await
        }
        done => done,
    };
    let endpoint = match acquired {
        Ok(counted) => counted,
        Err(NoRoom::Denied) => return denied(&route, client),
        Err(NoRoom::AllBusy) => {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "503 Service Unavailable: every ready replica of service {}/{} is at its \
                     concurrency limit (waited {wait:?}); try again\n",
                    route.key.namespace, route.key.name
                ),
            );
        }
        Err(NoRoom::NoEndpoints | NoRoom::Stopping) => {
            let why = match woken {
                Some((hold, _)) => format!(
                    "it was scaled to zero, and no replica was ready within {hold:?} of this \
                     request waking it"
                ),
                None => "it has no ready endpoints".to_owned(),
            };
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "503 Service Unavailable: service {}/{}: {why}\n",
                    route.key.namespace, route.key.name
                ),
            );
        }
    };
    let mut error = match endpoint.serve(request).await {
        Ok(response) => return finish(response, endpoint),
        Err(error) => error,
    };
    // A replica just woken from zero may be ready before its process
    // listens (a Linux container without a readiness probe): a request
    // held for it tries again, briefly apart, until its hold is up.
    if let (Some((hold, asked)), Some(again)) = (woken, &again) {
        let mut pause = Duration::from_millis(5);
        while unreachable(&error) && asked.elapsed() + pause < hold {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
            match endpoint.serve(replay(again)).await {
                Ok(response) => return finish(response, endpoint),
                Err(next) => error = next,
            }
        }
    }
    let failed = endpoint.pod.clone();
    drop(endpoint);
    if let Some(again) = again
        && worth_retrying(&error)
        && let Ok(other) = route.try_acquire(port, client, Some(&failed.uid))
    {
        tracing::info!(
            service = %format_args!("{}/{}", route.key.namespace, route.key.name),
            failed = %failed.name,
            retry = %other.pod.name,
            "retrying a request: {error}"
        );
        return match other.serve(replay(&again)).await {
            Ok(response) => finish(response, other),
            Err(error) => {
                tracing::warn!(pod = %other.pod.name, "request failed: {error}");
                error_response(&error)
            }
        };
    }
    tracing::warn!(pod = %failed.name, "request failed: {error}");
    error_response(&error)
}

/// Sends `request` to one pod of `route`, the one named `pod`, on `port`:
/// a StatefulSet's pod by its stable name (`web-0.web`). No other replica
/// stands in for it.
pub async fn forward_to_pod(
    route: Arc<Route>,
    port: usize,
    pod: String,
    mut request: Request<Body>,
    client: Option<IpAddr>,
) -> Response<Body> {
    route.count();
    let span = super::trace::Span::start(request.headers_mut(), || {
        format!("route {}/{} {pod}", route.key.namespace, route.key.name)
    });
    let timing = route.metrics.as_ref().map(|m| m.begin(request.method()));
    let response = forward_to_pod_uncounted(&route, port, pod, request, client).await;
    if let (Some(metrics), Some(timing)) = (&route.metrics, timing) {
        metrics.end(timing, response.status());
    }
    span.end(response.status());
    response
}

async fn forward_to_pod_uncounted(
    route: &Route,
    port: usize,
    pod: String,
    mut request: Request<Body>,
    client: Option<IpAddr>,
) -> Response<Body> {
    strip_hop_by_hop(request.headers_mut());
    let endpoint = match route.acquire_pod(port, &pod, client) {
        Some(Ok(counted)) => counted,
        Some(Err(NoRoom::Denied)) => return denied(route, client),
        Some(Err(NoRoom::AllBusy)) => {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("503 Service Unavailable: pod {pod} is at its concurrency limit\n"),
            );
        }
        _ => {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "503 Service Unavailable: pod {pod} is not a ready endpoint of service {}/{}\n",
                    route.key.namespace, route.key.name
                ),
            );
        }
    };
    match endpoint.serve(request).await {
        Ok(response) => finish(response, endpoint),
        Err(error) => {
            tracing::warn!(%pod, "request failed: {error}");
            error_response(&error)
        }
    }
}

/// The answer to a request NetworkPolicies keep from every ready endpoint
/// of `route`: on a cluster its packets would be dropped; here the client
/// is told why, as 403.
fn denied(route: &Route, client: Option<IpAddr>) -> Response<Body> {
    let who = client.map_or("this client".to_owned(), |ip| format!("client {ip}"));
    plain(
        StatusCode::FORBIDDEN,
        format!(
            "403 Forbidden: NetworkPolicy: {who} may reach no ready endpoint of service {}/{}\n",
            route.key.namespace, route.key.name
        ),
    )
}

/// Waits up to `wait` for `route`'s `port` to have an endpoint (still none
/// after it: the pick says so). A service edited meanwhile goes on in its
/// new route, on the same port: that route and port are returned.
pub(super) async fn wait_for_endpoints(
    mut route: Arc<Route>,
    mut port: usize,
    wait: Duration,
) -> Result<(Arc<Route>, usize), String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        route.wait_for_endpoints(port, deadline).await;
        let Some(next) = route.successor() else {
            return Ok((route, port));
        };
        let number = route.port_number(port);
        let Some((next, index)) = next.and_then(|r| r.port_index(Some(number)).map(|i| (r, i)))
        else {
            return Err(format!(
                "service {}/{} port {number} went away",
                route.key.namespace, route.key.name
            ));
        };
        (route, port) = (next, index);
    }
}

/// The response on its way, counted in flight until its body is done.
fn finish(mut response: Response<Body>, guard: super::table::InFlight) -> Response<Body> {
    strip_hop_by_hop(response.headers_mut());
    response.map(|body| {
        body.map_frame(move |frame| {
            let _held = &guard;
            frame
        })
        .boxed_unsync()
    })
}

/// A replica that never answered: it was busy, or its instance died.
/// Limits a request itself ran into would only be hit again.
fn worth_retrying(error: &ServeError) -> bool {
    match error {
        ServeError::Busy { .. } => true,
        // Another replica of the same pod template is a command too.
        ServeError::NotServing { .. } => false,
        ServeError::Guest { failure, .. } => matches!(
            failure,
            GuestFailure::Trap(_)
                | GuestFailure::NoResponse
                | GuestFailure::PoolExhausted
                | GuestFailure::Unreachable(_)
        ),
    }
}

/// The request `head` again, without a body (only bodiless ones are
/// replayed).
fn replay(head: &Request<()>) -> Request<Body> {
    let mut copy = Request::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *copy.method_mut() = head.method().clone();
    *copy.uri_mut() = head.uri().clone();
    *copy.version_mut() = head.version();
    *copy.headers_mut() = head.headers().clone();
    copy
}

/// The replica's process did not take the connection.
fn unreachable(error: &ServeError) -> bool {
    matches!(
        error,
        ServeError::Guest {
            failure: GuestFailure::Unreachable(_),
            ..
        }
    )
}

fn replayable(request: &Request<Body>) -> bool {
    use hyper::body::Body as _;
    let idempotent = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    idempotent && request.body().is_end_stream()
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        &header::CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
    ]
    .contains(&name)
}

/// Headers that belong to one connection, not to the request: a proxy
/// drops them (RFC 9110 §7.6.1), with those the Connection header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none: a scan of a few names beats nine removals.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    for name in hop {
        headers.remove(name);
    }
}

/// Tells the workload who asked and how, as the edge: X-Forwarded-For gets
/// the client appended; -Proto and -Host are the router's to say (a client
/// could otherwise claim https, or another host for the links a guest
/// builds).
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    host: Option<HeaderValue>,
    https: bool,
) {
    // Room for the three at once, rather than growing the map twice.
    headers.reserve(3);
    let chain = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {client}"),
        None => client.to_string(),
    };
    if let Ok(value) = HeaderValue::try_from(chain) {
        headers.insert(&X_FORWARDED_FOR, value);
    }
    let proto = if https { "https" } else { "http" };
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match host {
        Some(value) => {
            headers.insert(&X_FORWARDED_HOST, value);
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

/// A plain-text answer from the router itself.
pub fn plain(status: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(message))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn forwarded_for_is_extended_and_proto_and_host_are_the_router_s() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert("x-forwarded-host", HeaderValue::from_static("bank.example"));
        add_forwarded(
            &mut headers,
            "127.0.0.1".parse().unwrap(),
            Some(HeaderValue::from_static("web.localhost:8080")),
            false,
        );
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "web.localhost:8080");
    }
}
