//! W3C trace context through the router. A request arriving with a valid
//! `traceparent` continues its trace; one without starts one. Each hop the
//! router makes is a span (the ingress's, then one per Service the request
//! is routed to), whose id the next hop sees as its parent in the
//! `traceparent` the router passes on: the guest gets it, and the wasm
//! runtime puts it on the guest's outgoing requests and service calls
//! when the guest does not, so a chain of services is one trace.
//!
//! With `--otlp-endpoint`, spans are made by the OpenTelemetry SDK and
//! exported in batches over OTLP/HTTP; without, the router only
//! propagates the context (two random ids and a header per hop).

use std::sync::OnceLock;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;

pub const TRACEPARENT: &str = "traceparent";

/// A trace id, a span id and the sampled flag: what `traceparent` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl TraceParent {
    /// `00-<32 hex>-<16 hex>-<2 hex>`, lowercase, ids not all zero, as
    /// the W3C recommendation has it; anything else is no context.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        let text = std::str::from_utf8(value).ok()?.trim();
        let mut parts = text.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        // A later version may add fields; version ff is invalid.
        if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceParent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// Written into a buffer on the stack: this is on every request's path.
    pub fn header(&self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        for i in 0..32 {
            text[3 + i] = HEX[((self.trace_id >> (124 - 4 * i)) & 0xf) as usize];
        }
        for i in 0..16 {
            text[36 + i] = HEX[((self.span_id >> (60 - 4 * i)) & 0xf) as usize];
        }
        text[54] = if self.sampled { b'1' } else { b'0' };
        HeaderValue::from_bytes(&text).expect("hex is a valid header")
    }

    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

/// The SDK's tracer, once `--otlp-endpoint` installed one.
static TRACER: OnceLock<opentelemetry_sdk::trace::SdkTracer> = OnceLock::new();

/// Flushes and stops the exporter when dropped (at the daemon's exit).
pub struct Exporter(opentelemetry_sdk::trace::SdkTracerProvider);

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            tracing::warn!("flushing spans to the OTLP endpoint: {e}");
        }
    }
}

/// Exports spans to the OTLP/HTTP collector at `endpoint` (a base URL,
/// `/v1/traces` added unless it is there), as service `service`.
pub fn export_to(endpoint: &str, service: &str) -> Result<Exporter, String> {
    let endpoint = if endpoint.trim_end_matches('/').ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint.clone())
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("the OTLP exporter for {endpoint}: {e}"))?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build();
    TRACER
        .set(provider.tracer("berth"))
        .map_err(|_| "spans are already exported".to_owned())?;
    // The runtimes' spans (a guest's call, its outbound requests) go the
    // same way.
    berth_runtime::trace::install(std::sync::Arc::new(RuntimeTracer)).map_err(|e| e.to_owned())?;
    Ok(Exporter(provider))
}

/// The context `parent` names, for a span started under it.
fn parent_context(parent: Option<TraceParent>) -> Context {
    match parent {
        Some(p) => Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(p.trace_id.to_be_bytes()),
            SpanId::from_bytes(p.span_id.to_be_bytes()),
            if p.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            TraceState::default(),
        )),
        None => Context::new(),
    }
}

/// A span of the SDK's, named `name`, under `parent` (or the root of a new
/// trace).
fn start_span(
    tracer: &opentelemetry_sdk::trace::SdkTracer,
    name: String,
    kind: SpanKind,
    parent: Option<TraceParent>,
) -> opentelemetry_sdk::trace::Span {
    tracer
        .span_builder(name)
        .with_kind(kind)
        .start_with_context(tracer, &parent_context(parent))
}

fn context_of(span: &opentelemetry_sdk::trace::Span) -> TraceParent {
    let made = span.span_context();
    TraceParent {
        trace_id: u128::from_be_bytes(made.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(made.span_id().to_bytes()),
        sampled: made.is_sampled(),
    }
}

/// Records `status` on `span`: 5xx marks it failed.
fn set_status(span: &mut opentelemetry_sdk::trace::Span, status: StatusCode) {
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    if status.is_server_error() {
        span.set_status(opentelemetry::trace::Status::error(
            status.canonical_reason().unwrap_or("server error"),
        ));
    }
}

/// The runtimes' spans, made by the SDK's tracer.
struct RuntimeTracer;

impl berth_runtime::trace::Tracer for RuntimeTracer {
    fn start(
        &self,
        parent: Option<&HeaderValue>,
        name: String,
        kind: berth_runtime::trace::SpanKind,
    ) -> Box<dyn berth_runtime::trace::Span> {
        let parent = parent.and_then(|v| TraceParent::parse(v.as_bytes()));
        let tracer = TRACER.get().expect("installed with the tracer");
        let kind = match kind {
            berth_runtime::trace::SpanKind::Internal => SpanKind::Internal,
            berth_runtime::trace::SpanKind::Client => SpanKind::Client,
        };
        let span = start_span(tracer, name, kind, parent);
        Box::new(RuntimeSpan {
            context: context_of(&span),
            span,
        })
    }
}

struct RuntimeSpan {
    context: TraceParent,
    /// Ended when dropped (the SDK's span does).
    span: opentelemetry_sdk::trace::Span,
}

impl berth_runtime::trace::Span for RuntimeSpan {
    fn traceparent(&self) -> HeaderValue {
        self.context.header()
    }

    fn status(&mut self, code: u16) {
        if let Ok(status) = StatusCode::from_u16(code) {
            set_status(&mut self.span, status);
        }
    }

    fn fail(&mut self, reason: &str) {
        self.span
            .set_status(opentelemetry::trace::Status::error(reason.to_owned()));
    }
}

/// One hop of a request: timed and exported when an exporter is
/// installed, its context passed on either way.
pub struct Span {
    context: TraceParent,
    otel: Option<opentelemetry_sdk::trace::Span>,
}

impl Span {
    /// Starts a span of the request whose headers are `headers`, as a
    /// child of its `traceparent` (or the root of a new trace), and puts
    /// the span's own context in its place for the next hop.
    pub fn start(headers: &mut HeaderMap, name: impl FnOnce() -> String) -> Span {
        let parent = headers
            .get(TRACEPARENT)
            .and_then(|v| TraceParent::parse(v.as_bytes()));
        let span = match TRACER.get() {
            Some(tracer) => {
                let otel = start_span(tracer, name(), SpanKind::Server, parent);
                Span {
                    context: context_of(&otel),
                    otel: Some(otel),
                }
            }
            None => Span {
                context: TraceParent {
                    trace_id: parent.map_or_else(|| fastrand::u128(1..), |p| p.trace_id),
                    span_id: fastrand::u64(1..),
                    sampled: parent.is_none_or(|p| p.sampled),
                },
                otel: None,
            },
        };
        headers.insert(TRACEPARENT, span.context.header());
        span
    }

    pub fn context(&self) -> TraceParent {
        self.context
    }

    /// Ends the span with the response's status.
    pub fn end(self, status: StatusCode) {
        if let Some(mut otel) = self.otel {
            set_status(&mut otel, status);
            otel.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_and_written_as_w3c_says() {
        let given = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = TraceParent::parse(given).unwrap();
        assert_eq!(p.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(p.span_id, 0x00f067aa0ba902b7);
        assert!(p.sampled);
        assert_eq!(p.header().as_bytes(), given);
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"garbage",
        ] {
            assert_eq!(
                TraceParent::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_span_continues_the_trace_it_is_given_and_starts_one_when_not() {
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let span = Span::start(&mut headers, || "route".into());
        let passed = TraceParent::parse(headers[TRACEPARENT].as_bytes()).unwrap();
        assert_eq!(passed.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_ne!(passed.span_id, 0x00f067aa0ba902b7);
        assert_eq!(passed, span.context());
        let mut fresh = HeaderMap::new();
        let root = Span::start(&mut fresh, || "ingress".into());
        assert!(TraceParent::parse(fresh[TRACEPARENT].as_bytes()).is_some());
        assert!(root.context().sampled);
    }
}
