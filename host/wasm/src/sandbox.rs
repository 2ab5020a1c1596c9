//! The one place a guest is given anything of the host.
//!
//! A [`Sandbox`] is built once per workload from its [`Capabilities`] and
//! hands each request a fresh `WasiCtx` holding exactly those grants: the env
//! it was given, the directories it was granted (cap-std preopens, read-only
//! unless granted writable), TCP only to granted destinations (see
//! `sockets`), stdout/stderr into berth's log (see
//! `output.rs`), and an outbound-HTTP policy that refuses every host not on
//! its list. Host directories are opened here and
//! nowhere else.

use http_body_util::BodyExt;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use wasmtime_wasi::filesystem::WasiFilesystemCtx;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use super::output::GuestOutput;
use super::sockets::TcpPolicy;
use berth_runtime::trace::{Span, SpanKind};
use berth_runtime::{Capabilities, OutboundRule, RuntimeError, Services};

pub(super) struct Sandbox {
    workload: Arc<str>,
    log: Option<Arc<dyn berth_runtime::LogSink>>,
    env: Vec<(String, String)>,
    /// The granted directories, opened once at start: every context gets
    /// a copy of these preopens (the very descriptors), so a request opens
    /// nothing, and gets the directories as they were at start, whatever
    /// is renamed or swapped for a symlink along their paths later.
    preopens: Option<Arc<WasiFilesystemCtx>>,
    outbound: Arc<OutboundPolicy>,
    tcp: Option<Arc<TcpPolicy>>,
}

/// One `--dir` grant, by the directory it opened: its canonical path and
/// (device, inode), where the guest sees it, and how. The path too, so the
/// same directory reached through a read-only bind mount and through its
/// writable original (or two that a filesystem without stable inode
/// numbers numbers alike) are never one.
#[derive(PartialEq, Eq, Hash)]
struct Granted {
    host: PathBuf,
    device: u64,
    inode: u64,
    guest: String,
    writable: bool,
}

/// Preopens held open, by the grants they hold, shared by every workload
/// granted the same directories: ten thousand replicas of an image each
/// holding its tree open were ten thousand descriptors, enough to leave
/// none for the API to accept a connection with. Sharing keeps the
/// guarantee (the very directories opened at start), as a held descriptor
/// is the inode. Only a whole list is shared (wasmtime-wasi makes a
/// preopen from a path it opens itself, never from a descriptor held
/// already): a replica that also mounts a volume of its own holds a
/// descriptor for each of its directories.
static HELD: std::sync::Mutex<Option<Held>> = std::sync::Mutex::new(None);

type Held = HashMap<Vec<Granted>, std::sync::Weak<WasiFilesystemCtx>>;

/// The preopens of `grants`, each of whose directories is `opened` at
/// the same index: those already held for the same grants, or new ones
/// made from these very descriptors. On failure, which grant failed.
fn preopens(
    grants: Vec<Granted>,
    opened: &[std::fs::File],
) -> Result<Arc<WasiFilesystemCtx>, (usize, wasmtime::Error)> {
    use std::os::fd::AsRawFd as _;
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    let held = held.get_or_insert_with(HashMap::new);
    if let Some(preopens) = held.get(&grants).and_then(std::sync::Weak::upgrade) {
        return Ok(preopens);
    }
    let mut builder = WasiCtxBuilder::new();
    for (i, (grant, dir)) in grants.iter().zip(opened).enumerate() {
        let perms = if grant.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        // wasmtime-wasi preopens by path only: the descriptor's link in
        // /proc opens the directory already opened, not whatever is at its
        // path now.
        let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
        builder
            .preopened_dir(&path, &grant.guest, perms)
            .map_err(|e| {
                (
                    i,
                    e.context(format!("reopening it as {path} (is /proc mounted?)")),
                )
            })?;
    }
    let preopens = Arc::new(builder.build().filesystem().clone());
    held.insert(grants, Arc::downgrade(&preopens));
    // Forget the preopens no workload holds any more, now and then.
    if held.len().is_power_of_two() && held.len() >= 64 {
        held.retain(|_, preopens| preopens.strong_count() > 0);
    }
    Ok(preopens)
}

impl Sandbox {
    /// Checks every grant up front, so a bad `--dir` fails at start rather
    /// than on the first request.
    pub(super) fn new(
        workload: &str,
        caps: &Capabilities,
        log: Option<Arc<dyn berth_runtime::LogSink>>,
    ) -> Result<Self, RuntimeError> {
        use std::os::unix::fs::MetadataExt as _;
        let mut grants = Vec::with_capacity(caps.dirs.len());
        let mut opened = Vec::with_capacity(caps.dirs.len());
        for grant in &caps.dirs {
            let dir_error = |reason: String| RuntimeError::Dir {
                host: grant.host.clone(),
                guest: grant.guest.clone(),
                reason,
            };
            let host = grant
                .host
                .canonicalize()
                .map_err(|e| dir_error(e.to_string()))?;
            let handle = std::fs::File::open(&host).map_err(|e| dir_error(e.to_string()))?;
            let meta = handle.metadata().map_err(|e| dir_error(e.to_string()))?;
            if !meta.is_dir() {
                return Err(dir_error("not a directory".into()));
            }
            grants.push(Granted {
                host,
                device: meta.dev(),
                inode: meta.ino(),
                guest: grant.guest.clone(),
                writable: grant.writable,
            });
            opened.push(handle);
        }
        let preopens = if grants.is_empty() {
            None
        } else {
            Some(
                preopens(grants, &opened).map_err(|(i, e)| RuntimeError::Dir {
                    host: caps.dirs[i].host.clone(),
                    guest: caps.dirs[i].guest.clone(),
                    reason: format!("{e:#}"),
                })?,
            )
        };
        Ok(Sandbox {
            workload: workload.into(),
            log,
            env: caps.env.clone(),
            preopens,
            tcp: TcpPolicy::new(workload, &caps.tcp, caps.services.clone()),
            outbound: Arc::new(OutboundPolicy {
                workload: workload.to_owned(),
                rules: caps.outbound.clone(),
                services: caps.services.clone(),
                denials: LogBudget::default(),
            }),
        })
    }

    /// A context for one request holding exactly the granted capabilities.
    pub(super) fn wasi_ctx(&self) -> WasiCtx {
        let mut builder = WasiCtxBuilder::new();
        self.output_to_log(&mut builder);
        self.grant(builder)
    }

    /// The guest's stdout and stderr into berth's log and its own.
    fn output_to_log(&self, builder: &mut WasiCtxBuilder) {
        builder
            .stdout(GuestOutput::new(
                self.workload.clone(),
                berth_runtime::Stream::Stdout,
                self.log.clone(),
            ))
            .stderr(GuestOutput::new(
                self.workload.clone(),
                berth_runtime::Stream::Stderr,
                self.log.clone(),
            ));
    }

    /// A context for one run of a command: its arguments, and berth's own
    /// standard streams (stdin only when asked, as `docker run -i`), unless
    /// it has a log to write to (a pod's container).
    pub(super) fn command_ctx(&self, args: &[String], stdin: bool) -> WasiCtx {
        let mut builder = WasiCtxBuilder::new();
        builder.args(args);
        if self.log.is_some() {
            self.output_to_log(&mut builder);
        } else {
            builder.inherit_stdout().inherit_stderr();
        }
        if stdin {
            builder.inherit_stdin();
        }
        self.grant(builder)
    }

    /// `builder` with the env, directories and TCP destinations granted.
    fn grant(&self, mut builder: WasiCtxBuilder) -> WasiCtx {
        builder
            .envs(&self.env)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Some(tcp) = &self.tcp {
            tcp.grant(&mut builder);
        }
        let mut ctx = builder.build();
        if let Some(preopens) = &self.preopens {
            ctx.filesystem().clone_from(preopens);
        }
        ctx
    }

    pub(super) fn outbound(&self) -> OutboundHooks {
        OutboundHooks {
            policy: self.outbound.clone(),
            traceparent: None,
            tcp: self.tcp.clone(),
        }
    }
}

/// Refuses `request` with `HttpRequestDenied`, after taking (a bounded
/// amount of) its body: a guest still writing it would otherwise see its
/// stream cut and report "connection reset" instead of the denial. Bounded
/// in time too: a guest may wait for the response before it finishes the body.
fn deny(request: http::Request<WasiBody>) -> SendFuture {
    let mut body = request.into_body();
    Box::new(async move {
        let drain = async {
            let mut taken = 0usize;
            while taken < DENIED_BODY_DRAIN {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        taken += frame.data_ref().map_or(0, |data| data.len());
                    }
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(DENIED_BODY_WAIT, drain).await;
        Err(wasmtime_wasi_http::Error::HttpRequestDenied)
    })
}

/// Where `host:port` is, when it is neither this machine nor its link; a
/// name that resolves to a loopback, unspecified, link-local or local
/// interface address (any of its addresses) is refused with
/// `DestinationIpProhibited`.
async fn outside_address(
    host: &str,
    port: u16,
    limit: Option<std::time::Duration>,
    policy: &OutboundPolicy,
) -> Result<std::net::SocketAddr, wasmtime_wasi_http::Error> {
    let addresses = resolve(host, port, limit).await?;
    // Read each time: interfaces come and go.
    let interfaces = interface_addresses();
    let local = addresses
        .iter()
        .find(|a| not_the_network(a.ip()) || interfaces.contains(&unmapped(a.ip())));
    if let Some(local) = local {
        if let Some(dropped) = policy.denials.take() {
            tracing::warn!(
                workload = %policy.workload,
                destination = %format_args!("{host}:{port}"),
                address = %local,
                suppressed = dropped,
                "denied outbound request: `*` does not include this machine or link-local \
                 addresses; allow the host by name"
            );
        }
        return Err(wasmtime_wasi_http::Error::DestinationIpProhibited);
    }
    addresses
        .first()
        .copied()
        .ok_or(wasmtime_wasi_http::Error::DestinationNotFound)
}

/// The addresses `host:port` resolves to, within `limit`.
async fn resolve(
    host: &str,
    port: u16,
    limit: Option<std::time::Duration>,
) -> Result<Vec<std::net::SocketAddr>, wasmtime_wasi_http::Error> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let lookup = tokio::net::lookup_host((bare, port));
    let found = match limit {
        Some(limit) => tokio::time::timeout(limit, lookup)
            .await
            .map_err(|_| wasmtime_wasi_http::Error::DnsTimeout)?,
        None => lookup.await,
    };
    Ok(found
        .map_err(|e| wasmtime_wasi_http::Error::DnsError {
            rcode: Some(e.to_string()),
            info_code: None,
        })?
        .collect())
}

/// An address `*` does not reach whatever this machine's interfaces:
/// loopback and unspecified (this machine), and link-local, where a cloud
/// host's metadata service answers with its credentials (169.254.169.254).
fn not_the_network(ip: std::net::IpAddr) -> bool {
    match unmapped(ip) {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified() || v4.is_link_local(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || v6.is_unicast_link_local()
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 one it is.
fn unmapped(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// The addresses of this machine's interfaces (a listener on 0.0.0.0, as
/// an ingress may be, answers on every one).
#[expect(unsafe_code, reason = "getifaddrs has no safe wrapper here")]
pub fn interface_addresses() -> Vec<std::net::IpAddr> {
    let mut found = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list this function walks
    // read-only and frees once; each sockaddr is read as the type its
    // family names.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return found;
        }
        let mut at = head;
        while let Some(entry) = at.as_ref() {
            if let Some(address) = entry.ifa_addr.as_ref() {
                match i32::from(address.sa_family) {
                    libc::AF_INET => {
                        let v4 = &*entry.ifa_addr.cast::<libc::sockaddr_in>();
                        // Network order in memory: its bytes are the address.
                        found.push(std::net::IpAddr::from(v4.sin_addr.s_addr.to_ne_bytes()));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*entry.ifa_addr.cast::<libc::sockaddr_in6>();
                        found.push(std::net::IpAddr::from(v6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            at = entry.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    found
}

/// The guest's timeouts, or berth's where it set none: the engine's own
/// default is ten minutes, long enough for a dead peer to hold a request
/// slot that long.
fn with_default_timeouts(options: Option<RequestOptions>) -> RequestOptions {
    let options = options.unwrap_or_default();
    RequestOptions {
        connect_timeout: options.connect_timeout.or(Some(OUTBOUND_CONNECT_TIMEOUT)),
        first_byte_timeout: options
            .first_byte_timeout
            .or(Some(OUTBOUND_FIRST_BYTE_TIMEOUT)),
        between_bytes_timeout: options
            .between_bytes_timeout
            .or(Some(OUTBOUND_BETWEEN_BYTES_TIMEOUT)),
    }
}

const OUTBOUND_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const OUTBOUND_FIRST_BYTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
const OUTBOUND_BETWEEN_BYTES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What the `send_request` hook returns: the response and the future that
/// drives its connection.
type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
            )>,
        > + Send,
>;

/// How much of a denied request's body is read before it is dropped, and
/// for how long.
const DENIED_BODY_DRAIN: usize = 64 << 10;
const DENIED_BODY_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

pub(super) struct OutboundPolicy {
    workload: String,
    rules: Vec<OutboundRule>,
    services: Option<Arc<dyn Services>>,
    /// A guest retrying a denied call in a loop must not flood the log.
    denials: LogBudget,
}

/// At most `PER_SECOND` lines a second; the rest are counted and reported
/// in the next line that gets through.
#[derive(Default)]
pub(super) struct LogBudget(std::sync::Mutex<LogWindow>);

#[derive(Default)]
struct LogWindow {
    start: Option<std::time::Instant>,
    used: u32,
    dropped: u64,
}

impl LogBudget {
    const PER_SECOND: u32 = 10;

    /// `Some(dropped since the last line)` if this line may be logged.
    pub(super) fn take(&self) -> Option<u64> {
        let mut w = self.0.lock().expect("lock");
        let now = std::time::Instant::now();
        if w.start
            .is_none_or(|s| now.duration_since(s) >= std::time::Duration::from_secs(1))
        {
            w.start = Some(now);
            w.used = 0;
        }
        if w.used < Self::PER_SECOND {
            w.used += 1;
            Some(std::mem::take(&mut w.dropped))
        } else {
            w.dropped += 1;
            None
        }
    }
}

/// The `wasi:http` hooks of one request: a request naming a service goes to
/// it in-process; other outbound requests pass only to allowed hosts; the
/// rest fail inside the guest with `HttpRequestDenied`.
pub(super) struct OutboundHooks {
    policy: Arc<OutboundPolicy>,
    /// The trace context of the request this instance serves: put on its
    /// outgoing requests and service calls that carry none, so a chain
    /// of calls is one trace whether or not the guest propagates it.
    pub(super) traceparent: Option<http::HeaderValue>,
    /// For the guest's name lookups (see `sockets`).
    pub(super) tcp: Option<Arc<TcpPolicy>>,
}

impl WasiHttpHooks for OutboundHooks {
    /// The default list, checked in place: the trait's default builds a
    /// closure in an `Arc` for every header of every request.
    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
    }

    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> SendFuture {
        match self.trace(&mut request) {
            None => self.route(request, options, fut),
            Some(mut span) => {
                let sent = Box::into_pin(self.route(request, options, fut));
                Box::new(async move {
                    let sent = sent.await;
                    match &sent {
                        Ok((response, _)) => span.status(response.status().as_u16()),
                        Err(e) => span.fail(&e.to_string()),
                    }
                    sent
                })
            }
        }
    }
}

impl OutboundHooks {
    /// The trace context of an outgoing request that carries none: with a
    /// tracer, a CLIENT span under the guest's call, which the request
    /// names as its parent; without, the guest's call's own context. A
    /// request the guest gave a context keeps it (the guest traces it).
    fn trace(&self, request: &mut http::Request<WasiBody>) -> Option<Box<dyn Span>> {
        if request.headers().contains_key("traceparent") {
            return None;
        }
        let Some(tracer) = berth_runtime::trace::tracer() else {
            if let Some(traceparent) = &self.traceparent {
                request
                    .headers_mut()
                    .insert("traceparent", traceparent.clone());
            }
            return None;
        };
        let name = format!(
            "{} {}",
            request.method(),
            request.uri().host().unwrap_or_default()
        );
        let span = tracer.start(self.traceparent.as_ref(), name, SpanKind::Client);
        request
            .headers_mut()
            .insert("traceparent", span.traceparent());
        Some(span)
    }

    /// Where an outgoing request goes: to a service in-process, out to an
    /// allowed host, or nowhere (denied).
    fn route(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> SendFuture {
        let uri = request.uri();
        let host = uri.host().unwrap_or("");
        let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        // The sender connects to the whole authority; userinfo would make it
        // differ from the host checked here.
        let has_userinfo = uri.authority().is_some_and(|a| a.as_str().contains('@'));
        let policy = &self.policy;
        if !tls
            && !has_userinfo
            && let Some(services) = &policy.services
            && let Some(resolved) = services.resolve(host, uri.port_u16())
        {
            return match resolved {
                Ok(target) => {
                    tracing::debug!(workload = %policy.workload, %uri, "service call");
                    drop(fut);
                    let request = request.map(|body| {
                        body.map_err(|e| Box::new(e) as berth_runtime::BoxError)
                            .boxed_unsync()
                    });
                    // The guest's own patience, as over a network: the
                    // first byte is the response head, here.
                    let first_byte = options.and_then(|o| o.first_byte_timeout);
                    Box::new(async move {
                        let call = target.call(request);
                        let response = match first_byte {
                            Some(limit) => tokio::time::timeout(limit, call)
                                .await
                                .map_err(|_| wasmtime_wasi_http::Error::ConnectionReadTimeout)?,
                            None => call.await,
                        };
                        let response = response.map(|body| {
                            body.map_err(|e| {
                                wasmtime_wasi_http::Error::InternalError(Some(e.to_string()))
                            })
                            .boxed_unsync()
                        });
                        Ok((
                            response,
                            Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
                        ))
                    })
                }
                Err(reason) => {
                    if let Some(dropped) = policy.denials.take() {
                        tracing::warn!(
                            workload = %policy.workload,
                            %uri,
                            suppressed = dropped,
                            "denied service call: {reason}"
                        );
                    }
                    deny(request)
                }
            };
        }
        if has_userinfo || !policy.rules.iter().any(|rule| rule.allows(host, port)) {
            if let Some(dropped) = policy.denials.take() {
                tracing::warn!(
                    workload = %policy.workload,
                    destination = %format_args!("{host}:{port}"),
                    suppressed = dropped,
                    "denied outbound request: host not in the workload's allowed outbound hosts"
                );
            }
            return deny(request);
        }
        tracing::debug!(workload = %policy.workload, %uri, "outbound request");
        // The guest-side completion future is only needed by hooks that
        // stream the request body themselves; the default sender does not.
        drop(fut);
        let options = with_default_timeouts(options);
        // `*` is the network, not this machine: its loopback (the ingress,
        // node ports, whatever else listens there) must be named.
        let named = policy
            .rules
            .iter()
            .any(|rule| rule.names_host() && rule.allows(host, port));
        // A pod whose NetworkPolicies limit its egress connects only to an
        // address they allow: resolved here, even for a host named.
        let limited = policy.services.as_ref().filter(|s| s.limits_outside());
        let outside = (!named || limited.is_some()).then(|| (host.to_owned(), self.policy.clone()));
        let limited = limited.cloned();
        Box::new(async move {
            let mut request = request;
            if let Some((host, policy)) = outside {
                let address = if named {
                    resolve(&host, port, options.connect_timeout)
                        .await?
                        .first()
                        .copied()
                        .ok_or(wasmtime_wasi_http::Error::DestinationNotFound)?
                } else {
                    outside_address(&host, port, options.connect_timeout, &policy).await?
                };
                if let Some(services) = &limited
                    && let Err(reason) = services.outside_allows(address)
                {
                    if let Some(dropped) = policy.denials.take() {
                        tracing::warn!(
                            workload = %policy.workload,
                            destination = %format_args!("{host}:{port}"),
                            %address,
                            suppressed = dropped,
                            "denied outbound request: {reason}"
                        );
                    }
                    return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
                }
                // Plain HTTP goes to the address checked, not to a second
                // lookup that could answer otherwise; the Host header keeps
                // the name. (TLS needs the name to connect: there a second
                // answer could differ, but would then have to present a
                // certificate for the name.)
                if !tls {
                    let mut parts = request.uri().clone().into_parts();
                    parts.authority = address.to_string().parse().ok();
                    *request.uri_mut() = http::Uri::from_parts(parts)
                        .map_err(|_| wasmtime_wasi_http::Error::HttpRequestUriInvalid)?;
                }
            }
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{LogBudget, Sandbox, interface_addresses, not_the_network};
    use berth_runtime::{Capabilities, DirGrant};
    use std::sync::Arc;

    #[test]
    fn replicas_granted_the_same_directories_hold_one_descriptor_for_each() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let caps = |path: &std::path::Path, writable| Capabilities {
            dirs: vec![DirGrant {
                host: path.to_owned(),
                guest: "/data".into(),
                writable,
            }],
            ..Capabilities::default()
        };
        let a = Sandbox::new("a", &caps(dir.path(), false), None).unwrap();
        let b = Sandbox::new("b", &caps(dir.path(), false), None).unwrap();
        let c = Sandbox::new("c", &caps(other.path(), false), None).unwrap();
        let d = Sandbox::new("d", &caps(dir.path(), true), None).unwrap();
        let held = |s: &Sandbox| s.preopens.clone().unwrap();
        assert!(Arc::ptr_eq(&held(&a), &held(&b)));
        assert!(!Arc::ptr_eq(&held(&a), &held(&c)));
        // Granted writable is another grant, never the read-only one.
        assert!(!Arc::ptr_eq(&held(&a), &held(&d)));
        assert!(
            Sandbox::new("none", &Capabilities::default(), None)
                .unwrap()
                .preopens
                .is_none()
        );
    }

    #[test]
    fn the_interfaces_of_this_machine_are_listed() {
        let found = interface_addresses();
        assert!(found.contains(&"127.0.0.1".parse().unwrap()), "{found:?}");
    }

    #[test]
    fn loopback_unspecified_and_link_local_are_not_the_network_in_either_family() {
        for local in [
            "127.0.0.1",
            "127.9.9.9",
            "0.0.0.0",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "169.254.169.254",
            "::ffff:169.254.0.1",
            "fe80::1",
            "febf::1",
        ] {
            assert!(not_the_network(local.parse().unwrap()), "{local}");
        }
        for outside in [
            "10.0.0.1",
            "192.0.2.7",
            "169.253.255.255",
            "2001:db8::1",
            "fec0::1",
            "::ffff:192.0.2.7",
        ] {
            assert!(!not_the_network(outside.parse().unwrap()), "{outside}");
        }
    }

    #[test]
    fn a_flood_of_lines_is_cut_to_the_budget_and_counted() {
        let budget = LogBudget::default();
        let passed: Vec<Option<u64>> = (0..25).map(|_| budget.take()).collect();
        assert_eq!(passed.iter().filter(|p| p.is_some()).count(), 10);
        assert!(passed[..10].iter().all(|p| *p == Some(0)));
        // The next window's first line reports what was dropped.
        budget.0.lock().unwrap().start = None;
        assert_eq!(budget.take(), Some(15));
        assert_eq!(budget.take(), Some(0));
    }
}
