//! `berth run`'s and a pod's listener: berth-serve's accept loop, with
//! each request counted in berth's metrics.

use std::sync::Arc;
use std::time::Duration;

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
