//! What a Service is given when it is stored, as kube-apiserver's
//! allocators give it: a virtual IP from the service network, and node
//! ports for NodePort and LoadBalancer services.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::{Kind, Object, Result, StateError, object_from_json};
use crate::spec::objects::{Service, ServiceSpec, ServiceType};

/// The range Services' virtual IPs come from (kube-apiserver's
/// `--service-cluster-ip-range`). berth's is on the loopback (all of
/// 127.0.0.0/8 is this machine's on Linux, with no address to configure),
/// so the router can listen on a Service's IP for wasm guests and host
/// processes alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceNetwork {
    base: u32,
    prefix: u8,
}

impl Default for ServiceNetwork {
    /// 127.96.0.0/12: a million addresses, away from 127.0.0.0/16 where
    /// hosts keep their own (127.0.0.1, 127.0.0.53, 127.0.1.1), so the
    /// chance that two berths on one machine pick one address is small.
    fn default() -> ServiceNetwork {
        ServiceNetwork {
            base: u32::from(Ipv4Addr::new(127, 96, 0, 0)),
            prefix: 12,
        }
    }
}

impl FromStr for ServiceNetwork {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<ServiceNetwork, String> {
        let (address, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected an IPv4 CIDR such as 127.96.0.0/12"))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{s:?}: {address:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=28).contains(p))
            .ok_or_else(|| format!("{s:?}: the prefix length must be 8–28"))?;
        if !address.is_loopback() {
            return Err(format!(
                "{s:?}: the service network must be within 127.0.0.0/8, which is this \
                 machine's without configuring an address"
            ));
        }
        let base = u32::from(address);
        let network = ServiceNetwork {
            base: base & mask(prefix),
            prefix,
        };
        if network.base != base {
            return Err(format!(
                "{s:?}: host bits are set (the network is {network})"
            ));
        }
        // 127.0.0.0/16 is where hosts keep their own loopback addresses
        // (127.0.0.1, a resolver's 127.0.0.53), and a pod's redirect of the
        // service network would take its localhost with it.
        let shared = prefix.min(16);
        if base & mask(shared) == u32::from(Ipv4Addr::new(127, 0, 0, 0)) & mask(shared) {
            return Err(format!(
                "{s:?}: overlaps 127.0.0.0/16, the host's and each pod's own loopback \
                 addresses"
            ));
        }
        Ok(network)
    }
}

impl std::fmt::Display for ServiceNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX << (32 - prefix)
}

impl ServiceNetwork {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.base
    }

    /// Whether `ip` may be a service's: in the network, and neither its
    /// first nor its last address.
    fn usable(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        self.contains(ip) && n != self.base && n != self.base | !mask(self.prefix)
    }

    /// The address of `key` (a headless Service's pod, by name): where its
    /// hash falls in the network, or the next usable one after it that is
    /// not `taken`; the same for the same key while the network's
    /// addresses in use stay the same. None when every one is taken.
    pub fn address_for(&self, key: &str, taken: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
        // FNV-1a: stable across builds and runs, unlike std's hasher.
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let usable = (1u32 << (32 - self.prefix)) - 2;
        let start = (hash % u64::from(usable)) as u32;
        (0..usable)
            .map(|i| Ipv4Addr::from(self.base + 1 + (start + i) % usable))
            .find(|ip| !taken(*ip))
    }

    /// A free address, drawn at random as kube-apiserver does (so berths
    /// sharing a machine rarely meet on one).
    fn allocate(&self, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let size = 1u32 << (32 - self.prefix);
        // Usable addresses: all but the first and the last.
        let usable = size - 2;
        if used.len() as u64 >= u64::from(usable) {
            return None;
        }
        // Random probes first; a nearly full network is walked from one.
        for _ in 0..64 {
            let ip = Ipv4Addr::from(self.base + 1 + fastrand::u32(..usable));
            if !used.contains(&ip) {
                return Some(ip);
            }
        }
        let start = fastrand::u32(..usable);
        (0..usable)
            .map(|i| Ipv4Addr::from(self.base + 1 + (start + i) % usable))
            .find(|ip| !used.contains(ip))
    }
}

/// `service` as stored: with its virtual IP (see [`cluster_ip`]) and node
/// ports (see [`node_ports`]), checked against every other service's.
pub(super) fn allocate(
    tx: &rusqlite::Transaction<'_>,
    service: &Service,
    range: &std::ops::RangeInclusive<u16>,
    network: &ServiceNetwork,
) -> Result<Service> {
    let mut service = service.clone();
    let namespace = service
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = service.metadata.name.clone();
    let mut others = Vec::new();
    let mut previous = None;
    let mut rows =
        tx.prepare_cached("SELECT namespace, name, object FROM objects WHERE kind = 'Service'")?;
    let stored = rows.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    for row in stored {
        let (ns, other, text) = row?;
        let Object::Service(other_service) = object_from_json(Kind::Service, &other, &text)? else {
            continue;
        };
        if ns == namespace && other == name {
            previous = Some(other_service.spec);
        } else {
            others.push((format!("{ns}/{other}"), other_service.spec));
        }
    }
    cluster_ip(&mut service, previous.as_ref(), &others, network)?;
    node_ports(&mut service, previous.as_ref(), &others, range)?;
    Ok(service)
}

/// A service keeps its virtual IP for life, as in Kubernetes: one written
/// back without it (a replace of its manifest) keeps the one it had; a new
/// one gets the address it asks for, if in the network and free, or a free
/// one; `None` stays headless.
fn cluster_ip(
    service: &mut Service,
    previous: Option<&ServiceSpec>,
    others: &[(String, ServiceSpec)],
    network: &ServiceNetwork,
) -> Result<()> {
    let name = &service.metadata.name;
    let asked = service.spec.cluster_ip.clone().filter(|ip| !ip.is_empty());
    let had = previous.and_then(|p| p.cluster_ip.clone());
    let chosen = match (asked, had) {
        (None, Some(had)) => had,
        (Some(asked), Some(had)) if asked == had => had,
        (Some(asked), Some(had)) => {
            return Err(StateError::Rejected(format!(
                "Service {name}: spec.clusterIP: field is immutable (it is {had}, asked {asked})"
            )));
        }
        (Some(asked), None) if asked == "None" => asked,
        (Some(asked), None) => {
            let ip: Ipv4Addr = asked.parse().map_err(|_| {
                StateError::Rejected(format!(
                    "Service {name}: spec.clusterIP: {asked:?} is not an IPv4 address"
                ))
            })?;
            if !network.usable(ip) {
                return Err(StateError::Rejected(format!(
                    "Service {name}: spec.clusterIP: {ip} is not in the service network {network}"
                )));
            }
            if let Some((owner, _)) = others.iter().find(|(_, s)| s.virtual_ip() == Some(ip)) {
                return Err(StateError::Rejected(format!(
                    "Service {name}: spec.clusterIP: {ip} is already allocated to service {owner}"
                )));
            }
            asked
        }
        (None, None) => {
            let used: HashSet<Ipv4Addr> =
                others.iter().filter_map(|(_, s)| s.virtual_ip()).collect();
            network
                .allocate(&used)
                .ok_or_else(|| {
                    StateError::Rejected(format!(
                        "Service {name}: no free clusterIP left in the service network {network}"
                    ))
                })?
                .to_string()
        }
    };
    service.spec.cluster_ips = if chosen == "None" {
        Vec::new()
    } else {
        vec![chosen.clone()]
    };
    service.spec.cluster_ip = Some(chosen);
    Ok(())
}

/// A node port on each port of a NodePort or LoadBalancer service: the one
/// it asks for if no other service has it, else the one it had, else the
/// lowest free one in `range`, as Kubernetes allocates.
fn node_ports(
    service: &mut Service,
    previous: Option<&ServiceSpec>,
    others: &[(String, ServiceSpec)],
    range: &std::ops::RangeInclusive<u16>,
) -> Result<()> {
    let name = service.metadata.name.clone();
    let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
    if service.spec.kind == ServiceType::ClusterIP {
        if let Some(port) = service.spec.ports.iter().find(|p| p.node_port.is_some()) {
            return Err(StateError::Rejected(format!(
                "Service {name}: port {}: nodePort needs type NodePort or LoadBalancer",
                port.port
            )));
        }
        return Ok(());
    }
    let mut used: BTreeMap<u16, String> = BTreeMap::new();
    for (owner, spec) in others {
        for port in &spec.ports {
            if let Some(n) = port.node_port {
                used.insert(n, owner.clone());
            }
        }
    }
    for port in &service.spec.ports {
        if let Some(n) = port.node_port {
            if !range.contains(&n) {
                return Err(StateError::Rejected(format!(
                    "Service {name}: port {}: nodePort {n} is outside the range {}-{}",
                    port.port,
                    range.start(),
                    range.end()
                )));
            }
            if let Some(owner) = used.get(&n) {
                return Err(StateError::Rejected(format!(
                    "Service {name}: port {}: nodePort {n} is already allocated to service {owner}",
                    port.port
                )));
            }
            used.insert(n, format!("{namespace}/{name}"));
        }
    }
    for port in service.spec.ports.iter_mut() {
        if port.node_port.is_some() {
            continue;
        }
        let kept = previous
            .into_iter()
            .flat_map(|p| &p.ports)
            .find(|p| p.port == port.port)
            .and_then(|p| p.node_port)
            .filter(|n| !used.contains_key(n));
        let chosen = match kept {
            Some(n) => n,
            None => range
                .clone()
                .find(|n| !used.contains_key(n))
                .ok_or_else(|| {
                    StateError::Rejected(format!(
                        "Service {name}: no free nodePort left in {}-{}",
                        range.start(),
                        range.end()
                    ))
                })?,
        };
        used.insert(chosen, format!("{namespace}/{name}"));
        port.node_port = Some(chosen);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_s_address_is_stable_usable_and_steps_past_those_taken() {
        let n: ServiceNetwork = "127.96.0.0/28".parse().unwrap();
        let first = n.address_for("default/web/web-0", |_| false).unwrap();
        assert_eq!(n.address_for("default/web/web-0", |_| false), Some(first));
        assert!(n.usable(first));
        // Taken: the next usable one, wrapping past the network's last.
        let next = n
            .address_for("default/web/web-0", |ip| ip == first)
            .unwrap();
        assert!(n.usable(next) && next != first);
        assert_eq!(n.address_for("x", |_| true), None);
        // Keys spread over the network.
        let spread: HashSet<Ipv4Addr> = (0..50)
            .filter_map(|i| n.address_for(&format!("default/web/web-{i}"), |_| false))
            .collect();
        assert!(spread.len() > 8, "{spread:?}");
    }

    #[test]
    fn service_networks_are_loopback_cidrs() {
        let n: ServiceNetwork = "127.96.0.0/12".parse().unwrap();
        assert_eq!(n, ServiceNetwork::default());
        assert!(n.contains(Ipv4Addr::new(127, 100, 1, 2)));
        assert!(!n.contains(Ipv4Addr::new(127, 0, 0, 1)));
        assert!(!n.usable(Ipv4Addr::new(127, 96, 0, 0)));
        assert!(!n.usable(Ipv4Addr::new(127, 111, 255, 255)));
        assert!(n.usable(Ipv4Addr::new(127, 111, 255, 254)));
        let err = |s: &str| s.parse::<ServiceNetwork>().unwrap_err();
        assert!(err("10.96.0.0/12").contains("127.0.0.0/8"));
        assert!(err("127.96.0.1/12").contains("host bits"));
        assert!(err("127.96.0.0").contains("CIDR"));
        assert!(err("127.96.0.0/30").contains("8–28"));
        assert!(err("127.0.0.0/8").contains("overlaps 127.0.0.0/16"));
        assert!(err("127.0.64.0/18").contains("overlaps 127.0.0.0/16"));
        assert!("127.1.0.0/16".parse::<ServiceNetwork>().is_ok());
    }

    #[test]
    fn a_full_network_allocates_every_address_once_and_then_says_so() {
        let n: ServiceNetwork = "127.1.2.0/28".parse().unwrap();
        let mut used = HashSet::new();
        for _ in 0..14 {
            let ip = n.allocate(&used).expect("a free address");
            assert!(n.usable(ip), "{ip}");
            assert!(used.insert(ip), "{ip} twice");
        }
        assert_eq!(n.allocate(&used), None);
    }
}
