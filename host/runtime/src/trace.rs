//! Spans a backend makes of what it runs: the guest's call and each of its
//! outbound requests, children of the request's `traceparent`. The backend
//! only starts and ends them; the host that exports spans (berth with
//! `--otlp-endpoint`) installs the [`Tracer`] that makes them. With none
//! installed a backend makes no span and passes the request's context on
//! as it came.

use std::sync::{Arc, OnceLock};

/// What a span stands for, as OpenTelemetry's kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Work inside the host: a guest's call.
    Internal,
    /// A request the guest makes, to a service or out of the host.
    Client,
}

pub trait Tracer: Send + Sync {
    /// Starts a span named `name`, a child of the context `parent` carries
    /// (a `traceparent` value; the root of a new trace when there is none,
    /// or it is not one).
    fn start(
        &self,
        parent: Option<&http::HeaderValue>,
        name: String,
        kind: SpanKind,
    ) -> Box<dyn Span>;
}

/// A started span; it ends when dropped.
pub trait Span: Send {
    /// Its own context, as the `traceparent` of what it calls.
    fn traceparent(&self) -> http::HeaderValue;
    /// The HTTP status it ended with (5xx marks it failed).
    fn status(&mut self, code: u16);
    /// Why it failed.
    fn fail(&mut self, reason: &str);
}

static TRACER: OnceLock<Arc<dyn Tracer>> = OnceLock::new();

/// Makes `tracer` the process's; there is one, installed once.
pub fn install(tracer: Arc<dyn Tracer>) -> Result<(), &'static str> {
    TRACER
        .set(tracer)
        .map_err(|_| "a tracer is installed already")
}

/// The installed tracer, if spans are exported.
pub fn tracer() -> Option<&'static dyn Tracer> {
    TRACER.get().map(|t| &**t)
}
