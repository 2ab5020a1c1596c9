//! What a workload is granted. Everything defaults to nothing: no env, no
//! directories, no outbound hosts. Limits default to the values `berth run`
//! documents.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::{Body, BoxFuture};

/// The authority a workload holds. Empty by default: deny everything.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// Environment variables, in the order given.
    pub env: Vec<(String, String)>,
    /// Host directories made visible inside the guest.
    pub dirs: Vec<DirGrant>,
    /// Hosts the guest may send HTTP requests to.
    pub outbound: Vec<OutboundRule>,
    /// The services the guest may call by name, in-process; none outside a pod.
    pub services: Option<Arc<dyn Services>>,
    /// Where the guest may open TCP connections (`wasi:sockets`).
    pub tcp: Vec<TcpGrant>,
}

/// Service names as a guest sees them: `http://<service>[.<namespace>[.svc[.cluster.local]]]`
/// reaches a service's ready endpoints without a socket.
pub trait Services: Send + Sync {
    /// What `host` (with `port` when the URL gave one) names: `None` when no
    /// service, so the request goes on as ordinary outbound HTTP; an error
    /// when a service the guest may not call.
    fn resolve(
        &self,
        host: &str,
        port: Option<u16>,
    ) -> Option<Result<Arc<dyn ServiceTarget>, String>>;

    /// The virtual IP of the service `host` names, for a guest's name
    /// lookup (`wasi:sockets`): `None` when it names no service; an error
    /// when a service the guest may not reach, or one without an address.
    fn address(&self, host: &str) -> Option<Result<std::net::IpAddr, String>> {
        let _ = host;
        None
    }

    /// Whether the workload's connections to addresses outside the
    /// cluster are limited (by its pod's NetworkPolicies), so each must be
    /// checked with [`Services::outside_allows`] once resolved.
    fn limits_outside(&self) -> bool {
        false
    }

    /// Why a connection to `address`, outside the cluster, is not allowed,
    /// if it is not.
    fn outside_allows(&self, address: std::net::SocketAddr) -> Result<(), String> {
        let _ = address;
        Ok(())
    }
}

/// One resolved service port; every call gets an HTTP answer (a 503 when
/// nothing is ready), as a client of the service would over the network.
pub trait ServiceTarget: Send + Sync {
    fn call(&self, request: http::Request<Body>) -> BoxFuture<'static, http::Response<Body>>;
}

impl fmt::Debug for dyn Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Services")
    }
}

/// Resource limits per request.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory an instance may hold, summed over its memories, in bytes.
    pub memory: u64,
    /// CPU time one request may use.
    pub cpu_time: Duration,
    /// The workload's share of the CPU over all its requests, in
    /// millicores (`resources.limits.cpu`); none: as much as it gets.
    pub cpu_millis: Option<u64>,
    /// Requests served at once; more wait up to `queue_timeout`.
    pub max_concurrency: usize,
    /// How long a request waits for a free slot before the caller is told busy.
    pub queue_timeout: Duration,
    /// Wall-clock time a guest has to start its response; CPU time alone
    /// would let a guest that waits forever hold its slot forever.
    pub response_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 128 << 20,
            cpu_time: Duration::from_secs(30),
            cpu_millis: None,
            max_concurrency: 1000,
            queue_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(300),
        }
    }
}

/// `HOST:GUEST[:ro|:rw]`: a host directory mounted at `GUEST`, read-only unless `rw`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
}

impl FromStr for DirGrant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (rest, writable) = if let Some(rest) = s.strip_suffix(":rw") {
            (rest, true)
        } else if let Some(rest) = s.strip_suffix(":ro") {
            (rest, false)
        } else {
            (s, false)
        };
        let Some((host, guest)) = rest.split_once(':') else {
            return Err(format!("{s:?}: expected HOST:GUEST[:ro|:rw]"));
        };
        if host.is_empty() {
            return Err(format!("{s:?}: the host directory is empty"));
        }
        if !guest.starts_with('/') {
            return Err(format!("{s:?}: the guest path {guest:?} must be absolute"));
        }
        if guest.split('/').any(|c| c == "..") {
            return Err(format!(
                "{s:?}: the guest path {guest:?} must not contain `..`"
            ));
        }
        Ok(DirGrant {
            host: PathBuf::from(host),
            guest: guest.to_owned(),
            writable,
        })
    }
}

/// `HOST[:PORT]`: an allowed destination for outbound HTTP. `*` as the host
/// allows any host but this machine's own (see the wasm sandbox); no port
/// allows any port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRule {
    host: String,
    port: Option<u16>,
}

impl OutboundRule {
    /// Whether the rule names its host (not `*`).
    pub fn names_host(&self) -> bool {
        self.host != "*"
    }

    /// Whether a request to `host:port` is allowed by this rule.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        // `example.com.` is the same host as `example.com`.
        let host = host.strip_suffix('.').unwrap_or(host);
        (self.host == "*" || self.host.eq_ignore_ascii_case(host))
            && self.port.is_none_or(|p| p == port)
    }
}

impl fmt::Display for OutboundRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => write!(f, "{host}:{port}"),
            None => write!(f, "{host}"),
        }
    }
}

impl FromStr for OutboundRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.contains("://") || s.contains('/') {
            return Err(format!(
                "{s:?}: give HOST or HOST:PORT, without a scheme or path"
            ));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            // [v6-address] or [v6-address]:port
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: unclosed `[` in IPv6 address"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("{s:?}: unexpected {after:?} after the address")),
            }
        } else {
            match s.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (s, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{s:?}: the host is empty"));
        }
        if host.contains(':') && !s.starts_with('[') {
            return Err(format!(
                "{s:?}: write IPv6 addresses in brackets, e.g. [::1]:8080"
            ));
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| format!("{s:?}: {p:?} is not a port number"))
            })
            .transpose()?;
        Ok(OutboundRule {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// The grants of a comma-separated list (an annotation's value, as
/// `a.example, b.example:8080`), each parsed; blank items are skipped.
pub fn grant_list<T: FromStr<Err = String>>(value: &str) -> Result<Vec<T>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|grant| !grant.is_empty())
        .map(T::from_str)
        .collect()
}

/// `HOST:PORT`: a destination a guest may open TCP connections to. The
/// host is a name (a Service's, resolved in-process, or one the host's
/// resolver knows) or an IP address (IPv6 in brackets); the port is
/// required, since a socket grant without one would reach every service
/// of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpGrant {
    pub host: String,
    pub port: u16,
}

impl TcpGrant {
    /// The granted host as an address, when it is one.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for TcpGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for TcpGrant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let rule: OutboundRule = s.parse()?;
        let Some(port) = rule.port else {
            return Err(format!(
                "{s:?}: give HOST:PORT (a TCP grant needs its port)"
            ));
        };
        if !rule.names_host() {
            return Err(format!(
                "{s:?}: name the host (a TCP grant is for one host, not `*`)"
            ));
        }
        if port == 0 {
            return Err(format!("{s:?}: port 0 is no port"));
        }
        Ok(TcpGrant {
            host: rule.host,
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_grants_default_to_read_only() {
        let g: DirGrant = "/srv/data:/data".parse().unwrap();
        assert_eq!(g.host, PathBuf::from("/srv/data"));
        assert_eq!(g.guest, "/data");
        assert!(!g.writable);
        assert!("/srv:/data:rw".parse::<DirGrant>().unwrap().writable);
        assert!(!"/srv:/data:ro".parse::<DirGrant>().unwrap().writable);
    }

    #[test]
    fn bad_dir_grants_say_why() {
        assert!(
            "/srv"
                .parse::<DirGrant>()
                .unwrap_err()
                .contains("HOST:GUEST")
        );
        assert!(
            "/srv:data"
                .parse::<DirGrant>()
                .unwrap_err()
                .contains("absolute")
        );
        assert!(
            "/srv:/a/../b"
                .parse::<DirGrant>()
                .unwrap_err()
                .contains("..")
        );
        assert!(":/data".parse::<DirGrant>().unwrap_err().contains("empty"));
    }

    #[test]
    fn tcp_grants_name_a_host_and_a_port() {
        let g: TcpGrant = "Redis.Default.svc:6379".parse().unwrap();
        assert_eq!((g.host.as_str(), g.port), ("redis.default.svc", 6379));
        assert_eq!(g.ip(), None);
        let v6: TcpGrant = "[::1]:5432".parse().unwrap();
        assert_eq!(v6.ip(), Some("::1".parse().unwrap()));
        assert_eq!(v6.to_string(), "[::1]:5432");
        assert!(
            "redis"
                .parse::<TcpGrant>()
                .unwrap_err()
                .contains("HOST:PORT")
        );
        assert!("*:6379".parse::<TcpGrant>().unwrap_err().contains("`*`"));
        assert!(
            "redis:0"
                .parse::<TcpGrant>()
                .unwrap_err()
                .contains("port 0")
        );
        assert!(
            "redis:http"
                .parse::<TcpGrant>()
                .unwrap_err()
                .contains("not a port")
        );
    }

    #[test]
    fn outbound_rules_match_host_and_port() {
        let any_port: OutboundRule = "Example.com".parse().unwrap();
        assert!(any_port.allows("example.com", 443));
        assert!(any_port.allows("EXAMPLE.com", 8080));
        assert!(!any_port.allows("evil.com", 443));
        assert!(!any_port.allows("sub.example.com", 443));

        let one_port: OutboundRule = "127.0.0.1:8080".parse().unwrap();
        assert!(one_port.allows("127.0.0.1", 8080));
        assert!(!one_port.allows("127.0.0.1", 8081));

        let v6: OutboundRule = "[::1]:80".parse().unwrap();
        assert!(v6.allows("[::1]", 80));
        assert_eq!(v6.to_string(), "[::1]:80");

        let dotted: OutboundRule = "example.com.".parse().unwrap();
        assert!(dotted.allows("example.com", 80));
        assert!(any_port.allows("example.com.", 80));

        let all: OutboundRule = "*".parse().unwrap();
        assert!(all.allows("anything.example", 1));
    }

    #[test]
    fn bad_outbound_rules_say_why() {
        assert!(
            "http://x"
                .parse::<OutboundRule>()
                .unwrap_err()
                .contains("scheme")
        );
        assert!(
            "x:http"
                .parse::<OutboundRule>()
                .unwrap_err()
                .contains("port")
        );
        assert!(":80".parse::<OutboundRule>().unwrap_err().contains("empty"));
        assert!(
            "::1"
                .parse::<OutboundRule>()
                .unwrap_err()
                .contains("brackets")
        );
        assert!(
            "fe80::1:80"
                .parse::<OutboundRule>()
                .unwrap_err()
                .contains("brackets")
        );
    }
}
