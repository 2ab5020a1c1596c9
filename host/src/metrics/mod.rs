//! What berth counts, for Prometheus and for people: one registry per
//! process, served at `/metrics` in the Prometheus text format 0.0.4, or
//! in OpenMetrics when the scraper's `Accept` asks for it (both encoded by
//! prometheus-client).
//!
//! Counters on the request path (the router's [`HttpMetrics`]) are kept
//! as requests pass; everything else (the process, pods and containers,
//! the store's pods) is read by collectors at each scrape, so it costs
//! nothing between scrapes. A scrape runs on a blocking thread: collectors read
//! /proc, cgroup files and the store.

mod controllers;
mod pods;
mod process;
mod usage;

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::registry::Registry;

use crate::router::HttpMetrics;
pub use controllers::ControllerMetrics;
pub use pods::{PodsCollector, WorkloadCollector};
pub use process::ProcessCollector;
pub use usage::{NodeUsage, PodUsage, UsageHistory};

/// A process's metrics: build it, register what it has, then share it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Where the router counts requests.
    pub http: Arc<HttpMetrics>,
}

/// How a page of metrics is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4: what every scraper
    /// reads, and `promtool check metrics` checks.
    Text,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics if `accept` names it, as Prometheus's own scraper does
    /// when it prefers it; else the text format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The process's own figures and the request counters.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let http = HttpMetrics::register(&mut registry);
        Metrics { registry, http }
    }

    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// For metrics kept elsewhere (the registry server's) to register in.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Every metric, as one page. Blocking: collectors read files and
    /// the store.
    pub fn render(&self, format: Format) -> String {
        let mut page = String::new();
        let written = match format {
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut page, &self.registry)
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut page, &self.registry)
            }
        };
        // Writing to a String fails only if a collector does, and each
        // reports its own trouble and writes what it has.
        if let Err(e) = written {
            tracing::warn!("encoding metrics: {e}");
        }
        page
    }

    /// The `/metrics` response to a request that sent `accept`.
    pub async fn respond(self: Arc<Self>, accept: Option<String>) -> Response {
        let format = Format::negotiate(accept.as_deref());
        let page = tokio::task::spawn_blocking(move || self.render(format))
            .await
            .unwrap_or_default();
        let mut response = Response::new(Body::from(page));
        response.headers_mut().insert(
            ::http::header::CONTENT_TYPE,
            ::http::HeaderValue::from_static(format.content_type()),
        );
        response
    }

    /// A router serving only `GET /metrics`, without auth: for
    /// `--metrics-listen` (a loopback port for scrapers) and `berth run
    /// --metrics`.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        let metrics = self.clone();
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move |headers: ::http::HeaderMap| {
                let accept = headers
                    .get(::http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                metrics.clone().respond(accept)
            }),
        )
    }

    /// Serves [`Metrics::router`] on `listener` until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let router = self.router();
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::warn!("serving metrics: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_follows_accept() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.1")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
    }

    #[test]
    fn a_page_has_the_process_and_ends_as_its_format_says() {
        let metrics = Metrics::new();
        let text = metrics.render(Format::Text);
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter"),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(!text.contains("# EOF"));
        let open = metrics.render(Format::OpenMetrics);
        assert!(open.ends_with("# EOF\n"), "{open}");
    }
}
