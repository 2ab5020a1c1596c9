//! `berth run`'s and a pod's listener: berth-serve's accept loop, with
//! each request counted in berth's metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use berth_serve::{HEADER_READ_TIMEOUT, accept, handle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::runtime::Workload;

/// Serves `workload` on `listener` until `shutdown` is cancelled, then stops
/// accepting and waits up to `drain` for in-flight requests to finish.
/// Requests are counted in `metrics` when given.
pub async fn serve(
    listener: TcpListener,
    workload: Arc<dyn Workload>,
    shutdown: CancellationToken,
    drain: Duration,
    metrics: Option<Arc<super::RouteMetrics>>,
) {
    if metrics.is_none() {
        return berth_serve::serve(listener, workload, shutdown, drain).await;
    }
    serve_checked(listener, workload, shutdown, drain, metrics, None).await
}

/// Who may be served: a client's address in, whether NetworkPolicies
/// admit it out.
type Admit = Arc<dyn Fn(SocketAddr) -> bool + Send + Sync>;

/// [`serve`] on a pod's published port (`hostPort`): a client `admit`
/// refuses (NetworkPolicies) is answered 403 naming the policy, as a
/// denied client of a wasm pod is through the router.
pub async fn serve_published(
    listener: TcpListener,
    workload: Arc<dyn Workload>,
    admit: impl Fn(SocketAddr) -> bool + Send + Sync + 'static,
    shutdown: CancellationToken,
    drain: Duration,
) {
    serve_checked(
        listener,
        workload,
        shutdown,
        drain,
        None,
        Some(Arc::new(admit)),
    )
    .await
}

async fn serve_checked(
    listener: TcpListener,
    workload: Arc<dyn Workload>,
    shutdown: CancellationToken,
    drain: Duration,
    metrics: Option<Arc<super::RouteMetrics>>,
    admit: Option<Admit>,
) {
    accept(
        listener,
        shutdown,
        drain,
        HEADER_READ_TIMEOUT,
        move |request, peer| {
            let workload = workload.clone();
            let metrics = metrics.clone();
            let admitted = admit.as_ref().is_none_or(|admit| admit(peer));
            async move {
                if !admitted {
                    return super::proxy::plain(
                        StatusCode::FORBIDDEN,
                        format!(
                            "403 Forbidden: NetworkPolicy: client {} may not reach container {} on \
                             its published port\n",
                            peer.ip(),
                            workload.name()
                        ),
                    );
                }
                let timing = metrics.as_ref().map(|m| m.begin(request.method()));
                let response = handle(&*workload, request, peer).await;
                if let (Some(metrics), Some(timing)) = (&metrics, timing) {
                    metrics.end(timing, response.status());
                }
                response
            }
        },
    )
    .await
}
