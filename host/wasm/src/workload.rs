//! One started component and how it serves a request.
//!
//! Per request: wait for a concurrency slot, build a store holding a fresh
//! sandboxed `WasiCtx` and the request's limits, instantiate from the pool and
//! call `wasi:http/incoming-handler#handle`. The guest may keep streaming the
//! body after it has set the response, so the response is returned as soon as
//! it exists and the rest of the call finishes in its own task; when the guest
//! is done first (the common case) no task is spawned at all.

use std::sync::Arc;
use std::task::Poll;

use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use wasmtime::component::ResourceTable;
use wasmtime::{CallHook, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::engine::POOL_SLOTS;
use super::limits::{CpuBudget, CpuMeter, CpuQuota, MemoryBudget};
use super::sandbox::{OutboundHooks, Sandbox};
use super::usage::Meter;
use berth_runtime::{
    Body, BoxError, BoxFuture, GuestFailure, Limits, RuntimeError, ServeError, Workload,
    WorkloadSpec,
};

/// The data of one request's store.
pub(crate) struct Host {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound: OutboundHooks,
    memory: MemoryBudget,
    cpu: CpuBudget,
    /// The workload's CPU share, when it has a limit.
    meter: Option<CpuMeter>,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl Host {
    pub(super) fn tcp_policy(&self) -> Option<Arc<super::sockets::TcpPolicy>> {
        self.outbound.tcp.clone()
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

pub(super) struct WasmWorkload {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    pre: ProxyPre<Host>,
    sandbox: Sandbox,
    limits: Limits,
    slots: Arc<Semaphore>,
    quota: Option<Arc<CpuQuota>>,
    meter: Arc<Meter>,
}

impl WasmWorkload {
    /// Grants the sandbox and instantiates once, so a component that cannot
    /// start within its limits (say, an initial memory above `--memory`)
    /// fails here rather than on every request.
    pub(super) async fn start(
        spec: WorkloadSpec,
        pre: ProxyPre<Host>,
    ) -> Result<Self, RuntimeError> {
        if spec.limits.max_concurrency > POOL_SLOTS as usize {
            return Err(RuntimeError::Limits {
                reason: format!(
                    "a concurrency of {} is more than the {POOL_SLOTS} instances the engine can hold",
                    spec.limits.max_concurrency
                ),
            });
        }
        let sandbox = Sandbox::new(&spec.name, &spec.capabilities, spec.log.clone())?;
        let slots = Arc::new(Semaphore::new(spec.limits.max_concurrency.max(1)));
        let inner = Inner {
            name: spec.name,
            pre,
            sandbox,
            quota: spec.limits.cpu_millis.map(CpuQuota::new),
            limits: spec.limits,
            slots,
            meter: Arc::default(),
        };
        let instantiate_error = |reason: String| RuntimeError::Instantiate {
            path: spec.component.clone(),
            reason,
        };
        let mut store = inner.new_store();
        if let Err(e) = inner.pre.instantiate_async(&mut store).await {
            return Err(instantiate_error(classify(store.data(), &e).to_string()));
        }
        Ok(WasmWorkload {
            inner: Arc::new(inner),
        })
    }
}

impl Workload for WasmWorkload {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn usage(&self) -> berth_runtime::Usage {
        self.inner.meter.usage()
    }

    fn serve(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, ServeError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.serve(request).await })
    }
}

type GuestResponse = Result<hyper::Response<HyperOutgoingBody>, ErrorCode>;

/// A guest call's span, when spans are exported: ended with the call's
/// outcome, or failed if the call is dropped before it ends (its response
/// deadline passed, or its client went).
struct CallSpan(Option<Box<dyn berth_runtime::trace::Span>>);

impl CallSpan {
    fn end(mut self, failure: Option<&GuestFailure>) {
        if let (Some(span), Some(failure)) = (self.0.as_mut(), failure) {
            span.fail(&failure.to_string());
        }
        // Ended as it is dropped, not as one cut short.
        drop(self.0.take());
    }
}

impl Drop for CallSpan {
    fn drop(&mut self) {
        if let Some(span) = &mut self.0 {
            span.fail("the call was ended before it finished");
        }
    }
}

impl Inner {
    async fn serve(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, ServeError> {
        let permit = self.slot().await?;
        let guest_error = |failure| ServeError::Guest {
            workload: self.name.clone(),
            failure,
        };

        let mut store = self.new_store();
        let incoming = request.headers().get("traceparent");
        // The guest's call is a span of its own when spans are exported:
        // its outbound requests are its children.
        let span = CallSpan(berth_runtime::trace::tracer().map(|tracer| {
            tracer.start(
                incoming,
                format!("guest {}", self.name),
                berth_runtime::trace::SpanKind::Internal,
            )
        }));
        store.data_mut().outbound.traceparent = match &span.0 {
            Some(span) => Some(span.traceparent()),
            None => incoming.cloned(),
        };
        let (tx, mut rx) = oneshot::channel::<GuestResponse>();
        let request = request.map(|body| body.map_err(to_wasi_error));
        let (req, out) = {
            let mut http = store.data_mut().http();
            let req = http.new_incoming_request(Scheme::Http, request);
            let out = http.new_response_outparam(tx);
            match (req, out) {
                (Ok(req), Ok(out)) => (req, out),
                (Err(e), _) | (_, Err(e)) => {
                    return Err(guest_error(GuestFailure::Instantiate(format!("{e:#}"))));
                }
            }
        };

        let pre = self.pre.clone();
        let quota = self.quota.clone();
        let meter = self.meter.clone();
        let mut guest = Box::pin(async move {
            let outcome = meter
                .metered(async {
                    // A workload over its CPU share starts nothing new until
                    // it is back under (its running requests pause at ticks).
                    while let Some(pause) = quota.as_ref().and_then(|q| q.pause()) {
                        tokio::time::sleep(pause).await;
                    }
                    let proxy = pre
                        .instantiate_async(&mut store)
                        .await
                        .map_err(|e| instantiate_failure(&e))?;
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, req, out)
                        .await
                        .map_err(|e| classify(store.data(), &e))
                })
                .await;
            // The slot is held until the guest is done, streaming included,
            // and its pool slot is back (the store is gone) before the next
            // request may take the permit.
            drop(store);
            drop(permit);
            if let Err(failure) = &outcome
                && matches!(failure, GuestFailure::MemoryExceeded { .. })
            {
                meter.out_of_memory();
            }
            // Its span ends with the call.
            span.end(outcome.as_ref().err());
            outcome
        });

        // Most guests are done within their first poll, a hello world
        // always: they need no timer, and arming one takes the timer
        // wheel's lock twice. The deadline still counts from here.
        let due = tokio::time::Instant::now() + self.limits.response_timeout;
        let first = std::future::poll_fn(|cx| Poll::Ready(guest.as_mut().poll(cx))).await;
        if let Poll::Ready(outcome) = first {
            return self.finished(outcome, &mut rx);
        }
        // A response already set (a body still streaming) goes out now,
        // however long that first poll took.
        match rx.try_recv() {
            Ok(sent) => return self.streaming(sent, guest),
            // Dropped unset (the receiver must not be polled again now).
            Err(oneshot::error::TryRecvError::Closed) => {
                return self.unanswered(guest, due).await;
            }
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        tokio::select! {
            biased;
            // Dropping the guest future (on return) drops its store: the
            // instance stops wherever it was waiting.
            () = tokio::time::sleep_until(due) => {
                Err(guest_error(GuestFailure::ResponseTimeout(self.limits.response_timeout)))
            }
            outcome = &mut guest => self.finished(outcome, &mut rx),
            sent = &mut rx => match sent {
                Ok(sent) => self.streaming(sent, guest),
                // The guest dropped the response slot without setting it.
                Err(_) => self.unanswered(guest, due).await,
            },
        }
    }

    /// The answer of a guest that dropped its response slot unset: why, as
    /// its call ends (by the response deadline at the latest).
    async fn unanswered(
        &self,
        guest: std::pin::Pin<Box<impl Future<Output = Result<(), GuestFailure>>>>,
        due: tokio::time::Instant,
    ) -> Result<http::Response<Body>, ServeError> {
        let failure = match tokio::time::timeout_at(due, guest).await {
            Ok(outcome) => outcome.err().unwrap_or(GuestFailure::NoResponse),
            Err(_) => GuestFailure::ResponseTimeout(self.limits.response_timeout),
        };
        Err(ServeError::Guest {
            workload: self.name.clone(),
            failure,
        })
    }

    /// The answer of a guest that set its response and is still running
    /// (streaming its body): the rest of its call goes on in a task of its
    /// own, holding its slot until it is done.
    fn streaming(
        &self,
        sent: GuestResponse,
        guest: std::pin::Pin<Box<impl Future<Output = Result<(), GuestFailure>> + Send + 'static>>,
    ) -> Result<http::Response<Body>, ServeError> {
        let name = self.name.clone();
        match sent {
            Ok(response) => {
                tokio::spawn(async move {
                    if let Err(failure) = guest.await {
                        log_late_failure(&name, &failure);
                    }
                });
                Ok(to_runtime_response(response))
            }
            Err(code) => {
                tokio::spawn(guest);
                Err(ServeError::Guest {
                    workload: name,
                    failure: GuestFailure::ErrorResponse(format!("{code:?}")),
                })
            }
        }
    }

    /// The answer of a guest that is done: its store is gone, so the
    /// response slot was either set or dropped.
    fn finished(
        &self,
        outcome: Result<(), GuestFailure>,
        rx: &mut oneshot::Receiver<GuestResponse>,
    ) -> Result<http::Response<Body>, ServeError> {
        let guest_error = |failure| ServeError::Guest {
            workload: self.name.clone(),
            failure,
        };
        match rx.try_recv() {
            Ok(Ok(response)) => {
                if let Err(failure) = outcome {
                    self.log_late_failure(&failure);
                }
                Ok(to_runtime_response(response))
            }
            Ok(Err(code)) => Err(guest_error(GuestFailure::ErrorResponse(format!(
                "{code:?}"
            )))),
            Err(_) => Err(guest_error(
                outcome.err().unwrap_or(GuestFailure::NoResponse),
            )),
        }
    }

    /// Waits for a concurrency slot, at most `queue_timeout`.
    async fn slot(&self) -> Result<OwnedSemaphorePermit, ServeError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let waited = self.limits.queue_timeout;
        match tokio::time::timeout(waited, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ServeError::Busy {
                workload: self.name.clone(),
                limit: self.limits.max_concurrency,
                waited,
            }),
        }
    }

    fn new_store(&self) -> Store<Host> {
        new_store(
            self.pre.engine(),
            self.sandbox.wasi_ctx(),
            self.sandbox.outbound(),
            &self.limits,
            self.quota.clone(),
            Some(self.meter.clone()),
        )
    }

    fn log_late_failure(&self, failure: &GuestFailure) {
        log_late_failure(&self.name, failure);
    }
}

/// A store for one run of a guest: `wasi` its grants, with the memory and
/// CPU-time limits of `limits` and the workload's CPU share `quota`,
/// its instance and memory counted by `meter`.
pub(super) fn new_store(
    engine: &wasmtime::Engine,
    wasi: WasiCtx,
    outbound: OutboundHooks,
    limits: &Limits,
    quota: Option<Arc<CpuQuota>>,
    meter: Option<Arc<Meter>>,
) -> Store<Host> {
    let host = Host {
        table: ResourceTable::new(),
        wasi,
        http: WasiHttpCtx::new(),
        outbound,
        memory: MemoryBudget::new(limits.memory, meter),
        cpu: CpuBudget::new(limits.cpu_time),
        meter: quota.map(CpuMeter::new),
    };
    let mut store = Store::new(engine, host);
    store.data_mut().table.set_max_capacity(MAX_RESOURCES);
    store.limiter(|host| &mut host.memory);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let host = ctx.data_mut();
        match host.meter.as_mut().map(CpuMeter::at_tick) {
            Some((pause, resumed)) => host.cpu.tick(pause, Some(resumed)),
            None => host.cpu.tick(None, None),
        }
    });
    // Time in host calls (sleeps, I/O) is not CPU time: restart the
    // tick count whenever guest code gets control back (see limits.rs).
    // That is on return from the host, and also on each entry into wasm:
    // a host call hands its results over by calling the guest's
    // `cabi_realloc`, before it returns.
    store.call_hook(|mut ctx, hook| {
        let resumed = matches!(hook, CallHook::ReturningFromHost | CallHook::CallingWasm);
        if resumed {
            ctx.set_epoch_deadline(1);
        }
        // The CPU share is billed by the guest's measured running time.
        if let Some(meter) = ctx.data_mut().meter.as_mut() {
            if resumed {
                meter.resumed();
            } else {
                meter.stopped();
            }
        }
        Ok(())
    });
    store
}

/// A guest that fails after its response headers went out can only cut the
/// body short; nobody else will report it, so it is logged here.
fn log_late_failure(workload: &str, failure: &GuestFailure) {
    tracing::warn!(
        workload,
        "guest failed after sending its response: {failure}"
    );
}

/// Resources (streams, fields, pollables…) one request may hold at once.
/// Their host-side memory is outside the guest's `--memory`, so it is capped
/// by count; a real handler holds a few dozen.
const MAX_RESOURCES: usize = 4096;

/// An instantiation that failed because every pool slot is taken is the
/// host being busy, not the guest failing.
fn instantiate_failure(error: &wasmtime::Error) -> GuestFailure {
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return GuestFailure::PoolExhausted;
    }
    GuestFailure::Instantiate(format!("{error:#}"))
}

/// Names the limit a failed call ran into, rather than the trap it caused.
pub(super) fn classify(host: &Host, error: &wasmtime::Error) -> GuestFailure {
    if host.cpu.exceeded {
        return GuestFailure::CpuTimeExceeded(host.cpu.limit());
    }
    let trap = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    };
    if let Some(requested) = host.memory.refused {
        return GuestFailure::MemoryExceeded {
            limit: host.memory.limit(),
            requested,
            trap,
        };
    }
    GuestFailure::Trap(trap)
}

fn to_runtime_response(response: hyper::Response<HyperOutgoingBody>) -> http::Response<Body> {
    response.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed_unsync())
}

fn to_wasi_error(error: BoxError) -> wasmtime_wasi_http::Error {
    match error.downcast::<hyper::Error>() {
        Ok(e) => wasmtime_wasi_http::Error::Hyper(*e),
        Err(e) => wasmtime_wasi_http::Error::InternalError(Some(e.to_string())),
    }
}
