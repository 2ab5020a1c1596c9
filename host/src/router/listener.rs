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
    let Some(metrics) = metrics else {
        return berth_serve::serve(listener, workload, shutdown, drain).await;
    };
    accept(
        listener,
        shutdown,
        drain,
        HEADER_READ_TIMEOUT,
        move |request, peer| {
            let workload = workload.clone();
            let metrics = metrics.clone();
            async move {
                let timing = metrics.begin(request.method());
                let response = handle(&*workload, request, peer).await;
                metrics.end(timing, response.status());
                response
            }
        },
    )
    .await
}

/// [`serve`] on a pod's published port (`hostPort`): a client `admit`
/// refuses (NetworkPolicies) is answered 403 naming the policy, as a
/// denied client of a wasm pod is through the router.
pub async fn serve_published<A>(
    listener: TcpListener,
    workload: Arc<dyn Workload>,
    admit: A,
    shutdown: CancellationToken,
    drain: Duration,
) where
    A: Fn(SocketAddr) -> bool + Send + Sync + 'static,
{
    let admit = Arc::new(admit);
    accept(
        listener,
        shutdown,
        drain,
        HEADER_READ_TIMEOUT,
        move |request, peer| {
            let workload = workload.clone();
            let admitted = admit(peer);
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
                handle(&*workload, request, peer).await
            }
        },
    )
    .await
}
