//! `wasi:sockets` as granted: a guest may open TCP connections only to the
//! hosts and ports its grants name (`--allow-tcp HOST:PORT`, a pod's
//! `berth.dev/allow-tcp`), and look up only those names. A Service's name
//! resolves in-process to its virtual IP, where berth's router takes the
//! connection to a ready endpoint. No listening sockets and no UDP.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::SocketError;
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{
    self, HostResolveAddressStream, ResolveAddressStream,
};
use wasmtime_wasi::p2::bindings::sockets::network::{self, ErrorCode, IpAddress, Network};
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsCtxView, WasiSocketsView as _};

use super::sandbox::LogBudget;
use super::workload::Host;
use berth_runtime::{Services, TcpGrant};

/// How long a granted name's lookup may take when a connection is checked.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// One workload's TCP grants.
pub(super) struct TcpPolicy {
    workload: String,
    grants: Vec<TcpGrant>,
    services: Option<Arc<dyn Services>>,
    /// A guest retrying a denied connection in a loop must not flood the log.
    denials: LogBudget,
}

impl TcpPolicy {
    /// The policy of `grants`; `None` when there are none (no sockets).
    pub(super) fn new(
        workload: &str,
        grants: &[TcpGrant],
        services: Option<Arc<dyn Services>>,
    ) -> Option<Arc<TcpPolicy>> {
        (!grants.is_empty()).then(|| {
            Arc::new(TcpPolicy {
                workload: workload.to_owned(),
                grants: grants.to_vec(),
                services,
                denials: LogBudget::default(),
            })
        })
    }

    /// `builder` allowed TCP connections this policy grants, and name
    /// lookups of the names it grants.
    pub(super) fn grant(self: &Arc<Self>, builder: &mut WasiCtxBuilder) {
        let policy = self.clone();
        builder
            .allow_tcp(true)
            .allow_ip_name_lookup(true)
            .socket_addr_check(move |address, used| {
                let policy = policy.clone();
                Box::pin(async move { policy.allows(address, used).await })
            });
    }

    /// Whether the guest may use `address` so: connect to a granted host
    /// and port, from an ephemeral port (the bind a connect makes);
    /// nothing else (no listening, no UDP).
    async fn allows(&self, address: SocketAddr, used: SocketAddrUse) -> bool {
        match used {
            SocketAddrUse::TcpConnect => {}
            SocketAddrUse::TcpBind if address.ip().is_unspecified() && address.port() == 0 => {
                return true;
            }
            _ => {
                self.deny(
                    &format!("{used:?} {address}"),
                    "only TCP connections out are granted",
                );
                return false;
            }
        }
        for grant in self.grants.iter().filter(|g| g.port == address.port()) {
            let (found, service) = self.addresses(&grant.host).await;
            if !found.contains(&address.ip()) {
                continue;
            }
            // Outside the cluster, its pod's NetworkPolicies have a say.
            if !service
                && let Some(services) = self.services.as_ref().filter(|s| s.limits_outside())
                && let Err(reason) = services.outside_allows(address)
            {
                self.deny(&address.to_string(), &reason);
                return false;
            }
            return true;
        }
        self.deny(
            &address.to_string(),
            "not a host and port the workload's TCP grants name",
        );
        false
    }

    /// What granted `host` is now: itself, a Service's virtual IP, or what
    /// the host's resolver says; and whether it names a Service.
    async fn addresses(&self, host: &str) -> (Vec<IpAddr>, bool) {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return (vec![ip.to_canonical()], false);
        }
        if let Some(found) = self.service(host) {
            return (found.into_iter().collect(), true);
        }
        let found =
            match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, 0))).await {
                Ok(Ok(found)) => found.map(|a| a.ip().to_canonical()).collect(),
                _ => Vec::new(),
            };
        (found, false)
    }

    /// The virtual IP of the Service `name` names, if it names one (an
    /// empty answer for one the guest may not reach).
    fn service(&self, name: &str) -> Option<Option<IpAddr>> {
        let services = self.services.as_ref()?;
        match services.address(name)? {
            Ok(ip) => Some(Some(ip)),
            Err(reason) => {
                self.deny(name, &reason);
                Some(None)
            }
        }
    }

    /// What a guest's lookup of `name` asks the resolver: a Service's
    /// address in its place, an address as it is, a granted name as it
    /// is; `None` for a name no grant names.
    fn lookup(&self, name: &str) -> Option<String> {
        let bare = name.trim_end_matches('.').to_ascii_lowercase();
        if bare.parse::<IpAddr>().is_ok()
            || bare
                .strip_prefix('[')
                .and_then(|b| b.strip_suffix(']'))
                .is_some_and(|b| b.parse::<IpAddr>().is_ok())
        {
            return Some(name.to_owned());
        }
        if !self.grants.iter().any(|g| g.host == bare) {
            self.deny(name, "a name lookup of a host no TCP grant names");
            return None;
        }
        match self.service(&bare) {
            Some(Some(ip)) => Some(ip.to_string()),
            Some(None) => None,
            None => Some(bare),
        }
    }

    fn deny(&self, destination: &str, reason: &str) {
        if let Some(suppressed) = self.denials.take() {
            tracing::warn!(
                workload = %self.workload,
                destination,
                suppressed,
                "denied socket use: {reason}"
            );
        }
    }
}

/// `wasi:sockets/ip-name-lookup` through a workload's [`TcpPolicy`], in
/// place of wasmtime-wasi's own (which asks the host's resolver for any
/// name): Service names resolve in-process, names no grant names do not
/// resolve at all.
pub(super) fn add_lookup_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    ip_name_lookup::add_to_linker::<Host, Lookup>(linker, |host| {
        let policy = host.tcp_policy();
        Lookup {
            sockets: host.sockets(),
            policy,
        }
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

struct Lookup<'a> {
    sockets: WasiSocketsCtxView<'a>,
    policy: Option<Arc<TcpPolicy>>,
}

impl HasData for Lookup<'static> {
    type Data<'a> = Lookup<'a>;
}

impl ip_name_lookup::Host for Lookup<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> Result<Resource<ResolveAddressStream>, SocketError> {
        let Some(policy) = &self.policy else {
            return Err(ErrorCode::PermanentResolverFailure.into());
        };
        let Some(name) = policy.lookup(&name) else {
            return Err(ErrorCode::NameUnresolvable.into());
        };
        ip_name_lookup::Host::resolve_addresses(&mut self.sockets, network, name)
    }
}

impl HostResolveAddressStream for Lookup<'_> {
    fn resolve_next_address(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> Result<Option<IpAddress>, SocketError> {
        HostResolveAddressStream::resolve_next_address(&mut self.sockets, stream)
    }

    fn subscribe(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        HostResolveAddressStream::subscribe(&mut self.sockets, stream)
    }

    fn drop(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        HostResolveAddressStream::drop(&mut self.sockets, stream)
    }
}

// The lookup's errors are the network interface's: converted as
// wasmtime-wasi converts them.
impl network::Host for Lookup<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        network::Host::convert_error_code(&mut self.sockets, error)
    }

    fn network_error_code(
        &mut self,
        error: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        network::Host::network_error_code(&mut self.sockets, error)
    }
}

impl network::HostNetwork for Lookup<'_> {
    fn drop(&mut self, network: Resource<Network>) -> wasmtime::Result<()> {
        network::HostNetwork::drop(&mut self.sockets, network)
    }
}
