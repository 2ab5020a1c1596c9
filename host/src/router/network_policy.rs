//! NetworkPolicies as the router enforces them. Every connection from one
//! pod to another crosses the router on berth (a Linux pod's through the
//! redirect in its network, a wasm guest's in-process), so the router is
//! where they are checked: a Service's endpoints a client may not reach
//! are not picked for it, as if the client's packets to them were dropped.
//!
//! Who the client is comes from its address: a pod's client address (see
//! `Table::client_address`) names it, any other address is not a pod and
//! only an `ipBlock` can match it; an `ipBlock` matches no pod.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::runtime::linux::network::{EgressRule, PortRange};
use crate::spec::objects::{
    IntOrString, LabelSelector, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec, PolicyType,
};

/// The label Kubernetes puts on every namespace, so a namespace selector
/// can pick one by name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The policies in force, by namespace, and the namespaces' labels.
#[derive(Debug, Default)]
pub struct NetworkPolicies {
    policies: HashMap<String, Vec<NetworkPolicySpec>>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
}

/// A pod as a policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct PodRef<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// One end of a connection: a pod, or an address that is none.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    pub pod: Option<PodRef<'a>>,
    pub ip: Option<IpAddr>,
}

/// A connection's destination: a pod's port, by number and, when the
/// container names it, by name.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    pub pod: PodRef<'a>,
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    pub port_name: Option<&'a str>,
}

impl NetworkPolicies {
    /// The policies of `policies`, with the labels of `namespaces`
    /// (`(name, labels)`); `None` when there are no policies, so the
    /// router's path without them stays as it was.
    pub fn new<'a>(
        policies: impl IntoIterator<Item = &'a NetworkPolicy>,
        namespaces: impl IntoIterator<Item = (String, BTreeMap<String, String>)>,
    ) -> Option<NetworkPolicies> {
        let mut by_namespace: HashMap<String, Vec<NetworkPolicySpec>> = HashMap::new();
        for policy in policies {
            let namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
            by_namespace
                .entry(namespace.to_owned())
                .or_default()
                .push(policy.spec.clone());
        }
        if by_namespace.is_empty() {
            return None;
        }
        Some(NetworkPolicies {
            policies: by_namespace,
            namespaces: namespaces.into_iter().collect(),
        })
    }

    /// Whether a connection from `from` to `to` is allowed: by the egress
    /// policies of the client's pod and the ingress policies of the
    /// destination's, as on a cluster (both must allow it).
    pub fn allows(&self, from: &Peer<'_>, to: &Destination<'_>) -> bool {
        self.ingress_allows(from, to) && self.egress_allows(from, to)
    }

    fn ingress_allows(&self, from: &Peer<'_>, to: &Destination<'_>) -> bool {
        self.admitted(to.pod, PolicyType::Ingress, |spec| {
            spec.ingress.iter().any(|rule| {
                ports_match(&rule.ports, to.port, to.port_name)
                    && (rule.from.is_empty()
                        || rule.from.iter().any(|peer| {
                            self.peer_matches(peer, to.pod.namespace, from.pod, from.ip)
                        }))
            })
        })
    }

    fn egress_allows(&self, from: &Peer<'_>, to: &Destination<'_>) -> bool {
        from.pod.is_none_or(|client| {
            self.egress_admits(client, Some(to.pod), to.ip, to.port, to.port_name)
        })
    }

    /// Whether pod `from` may open connections to an address outside the
    /// cluster, `ip` port `port`: its egress policies' ipBlocks.
    pub fn allows_outside(&self, from: PodRef<'_>, ip: IpAddr, port: u16) -> bool {
        self.egress_admits(from, None, Some(ip), Some(port), None)
    }

    /// Whether `client`'s egress policies let it connect to pod `pod` (or
    /// to no pod), at `ip`, on the port numbered `port` (named `name`).
    fn egress_admits(
        &self,
        client: PodRef<'_>,
        pod: Option<PodRef<'_>>,
        ip: Option<IpAddr>,
        port: Option<u16>,
        name: Option<&str>,
    ) -> bool {
        self.admitted(client, PolicyType::Egress, |spec| {
            spec.egress.iter().any(|rule| {
                ports_match(&rule.ports, port, name)
                    && (rule.to.is_empty()
                        || rule
                            .to
                            .iter()
                            .any(|peer| self.peer_matches(peer, client.namespace, pod, ip)))
            })
        })
    }

    /// Whether `pod` takes (ingress) or makes (egress) a connection: no
    /// policy isolates it for `direction`, or one that does `admits` it.
    fn admitted(
        &self,
        pod: PodRef<'_>,
        direction: PolicyType,
        admits: impl Fn(&NetworkPolicySpec) -> bool,
    ) -> bool {
        let mut isolated = false;
        for spec in self.selecting(pod, direction) {
            isolated = true;
            if admits(spec) {
                return true;
            }
        }
        !isolated
    }

    /// Whether some policy isolates pod `pod` for `direction`.
    pub fn isolates(&self, pod: PodRef<'_>, direction: PolicyType) -> bool {
        self.selecting(pod, direction).next().is_some()
    }

    /// What a Linux pod's own network lets out when its policies isolate
    /// it for egress (`None`: everything): their rules' ipBlocks (a rule
    /// with no peers, anywhere) on their ports, and whether the pod's
    /// resolver may be asked (a rule allows port 53 to pods or anywhere, as
    /// clusters' policies allow DNS to the pods that serve it).
    pub fn egress_rules(&self, pod: PodRef<'_>) -> Option<(Vec<EgressRule>, bool)> {
        let mut rules = Vec::new();
        let mut resolve = false;
        let mut isolated = false;
        for spec in self.selecting(pod, PolicyType::Egress) {
            isolated = true;
            for rule in &spec.egress {
                let ports: Vec<PortRange> = if rule.ports.is_empty() {
                    ["tcp", "udp", "sctp"]
                        .into_iter()
                        .map(|protocol| PortRange {
                            protocol,
                            first: 1,
                            last: 65535,
                        })
                        .collect()
                } else {
                    rule.ports.iter().filter_map(port_range).collect()
                };
                // Port 53 to pods (where a cluster's DNS runs) or anywhere:
                // the pod's resolver stands for that DNS here.
                resolve |= ports.iter().any(|r| (r.first..=r.last).contains(&53))
                    && (rule.to.is_empty() || rule.to.iter().any(|p| p.ip_block.is_none()));
                if ports.is_empty() {
                    continue;
                }
                let anywhere = [
                    ("0.0.0.0/0".to_owned(), Vec::new()),
                    ("::/0".to_owned(), Vec::new()),
                ];
                let blocks: Vec<(String, Vec<String>)> = if rule.to.is_empty() {
                    anywhere.into()
                } else {
                    rule.to
                        .iter()
                        .filter_map(|peer| peer.ip_block.as_ref())
                        .map(|b| (b.cidr.clone(), b.except.clone()))
                        .collect()
                };
                for (network, except) in blocks {
                    rules.push(EgressRule {
                        network,
                        except,
                        ports: ports.clone(),
                    });
                }
            }
        }
        isolated.then_some((rules, resolve))
    }

    /// The policies of `pod`'s namespace that select it for `direction`.
    fn selecting<'s>(
        &'s self,
        pod: PodRef<'s>,
        direction: PolicyType,
    ) -> impl Iterator<Item = &'s NetworkPolicySpec> + 's {
        self.policies
            .get(pod.namespace)
            .into_iter()
            .flatten()
            .filter(move |spec| spec.isolates(direction) && spec.pod_selector.matches(pod.labels))
    }

    /// Whether `peer`, of a policy in `namespace`, names the pod `pod` (if
    /// the other end is one) or the address `ip`.
    fn peer_matches(
        &self,
        peer: &NetworkPolicyPeer,
        namespace: &str,
        pod: Option<PodRef<'_>>,
        ip: Option<IpAddr>,
    ) -> bool {
        // An ipBlock names addresses outside the cluster, never a pod:
        // pods' client addresses are berth's own, and a rule for "the
        // internet but private ranges" must not take every pod in.
        if let Some(block) = &peer.ip_block {
            return pod.is_none() && ip.is_some_and(|ip| in_block(ip, &block.cidr, &block.except));
        }
        let Some(pod) = pod else {
            return false;
        };
        let namespace_matches = match &peer.namespace_selector {
            Some(selector) => self.namespace_matches(selector, pod.namespace),
            None => pod.namespace == namespace,
        };
        namespace_matches
            && peer
                .pod_selector
                .as_ref()
                .is_none_or(|selector| selector.matches(pod.labels))
    }

    fn namespace_matches(&self, selector: &LabelSelector, namespace: &str) -> bool {
        let mut labels = self.namespaces.get(namespace).cloned().unwrap_or_default();
        labels
            .entry(NAMESPACE_NAME_LABEL.to_owned())
            .or_insert_with(|| namespace.to_owned());
        selector.matches(&labels)
    }
}

/// The ports a policy's port names outside the cluster: a number or a
/// range (a name is a container's, and no outside address has one).
fn port_range(p: &NetworkPolicyPort) -> Option<PortRange> {
    let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
        "TCP" => "tcp",
        "UDP" => "udp",
        "SCTP" => "sctp",
        _ => return None,
    };
    let (first, last) = match &p.port {
        None => (1, 65535),
        Some(IntOrString::Int(n)) => {
            let first = u16::try_from(*n).ok()?;
            let last = p.end_port.map_or(Some(first), |e| u16::try_from(e).ok())?;
            (first, last)
        }
        Some(IntOrString::String(_)) => return None,
    };
    Some(PortRange {
        protocol,
        first,
        last,
    })
}

fn in_block(ip: IpAddr, cidr: &str, except: &[String]) -> bool {
    let ip = ip.to_canonical();
    let inside = |range: &str| {
        range
            .parse::<ipnet::IpNet>()
            .is_ok_and(|net| net.contains(&ip))
    };
    inside(cidr) && !except.iter().any(|e| inside(e))
}

fn ports_match(ports: &[NetworkPolicyPort], number: Option<u16>, name: Option<&str>) -> bool {
    ports.is_empty() || ports.iter().any(|p| port_matches(p, number, name))
}

/// Whether `p` names the port numbered `number` (named `name`). Only TCP
/// is carried, so a UDP or SCTP rule names nothing.
fn port_matches(p: &NetworkPolicyPort, number: Option<u16>, name: Option<&str>) -> bool {
    if p.protocol.as_deref().unwrap_or("TCP") != "TCP" {
        return false;
    }
    match &p.port {
        None => true,
        Some(IntOrString::Int(start)) => number.is_some_and(|n| {
            let n = i64::from(n);
            let end = p.end_port.map_or(*start, i64::from);
            (*start..=end).contains(&n)
        }),
        Some(IntOrString::String(wanted)) => name == Some(wanted.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(yaml: &str) -> NetworkPolicies {
        let loaded = crate::spec::parse_str(yaml, "policy.yaml").unwrap();
        let policies: Vec<NetworkPolicy> = loaded
            .into_iter()
            .filter_map(|l| match l.object {
                crate::spec::Object::NetworkPolicy(p) => Some(*p),
                _ => None,
            })
            .collect();
        let namespaces = [(
            "tools".to_owned(),
            BTreeMap::from([("team".to_owned(), "ops".to_owned())]),
        )];
        NetworkPolicies::new(&policies, namespaces).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const DB_FROM_API: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: api}}
    - namespaceSelector: {matchLabels: {team: ops}}
      podSelector: {matchLabels: {role: backup}}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.9.0.0/16]}
    ports:
    - {port: 5432}
    - {port: metrics}
";

    #[test]
    fn ingress_admits_the_pods_namespaces_addresses_and_ports_its_rules_name() {
        let p = policies(DB_FROM_API);
        let db = labels(&[("app", "db")]);
        let to = |port, name| Destination {
            pod: PodRef {
                namespace: "shop",
                labels: &db,
            },
            ip: None,
            port: Some(port),
            port_name: name,
        };
        let api = labels(&[("app", "api")]);
        let backup = labels(&[("role", "backup")]);
        let web = labels(&[("app", "web")]);
        let pod = |namespace, labels| Peer {
            pod: Some(PodRef { namespace, labels }),
            ip: None,
        };
        assert!(p.allows(&pod("shop", &api), &to(5432, None)));
        assert!(p.allows(&pod("shop", &api), &to(9100, Some("metrics"))));
        assert!(!p.allows(&pod("shop", &api), &to(8080, None)), "port");
        assert!(!p.allows(&pod("shop", &web), &to(5432, None)), "pod");
        assert!(!p.allows(&pod("other", &api), &to(5432, None)), "namespace");
        assert!(p.allows(&pod("tools", &backup), &to(5432, None)));
        assert!(!p.allows(&pod("tools", &api), &to(5432, None)), "both");
        let address = |ip: &str| Peer {
            pod: None,
            ip: Some(ip.parse().unwrap()),
        };
        assert!(p.allows(&address("10.1.2.3"), &to(5432, None)));
        // A pod at an address of the block is still a pod: no ipBlock
        // takes it in.
        let pod_there = Peer {
            pod: Some(PodRef {
                namespace: "shop",
                labels: &web,
            }),
            ip: Some("10.1.2.3".parse().unwrap()),
        };
        assert!(!p.allows(&pod_there, &to(5432, None)));
        assert!(!p.allows(&address("10.9.2.3"), &to(5432, None)), "except");
        assert!(!p.allows(&address("127.0.0.1"), &to(5432, None)));
        // A pod no policy selects takes anything.
        let free = Destination {
            pod: PodRef {
                namespace: "shop",
                labels: &web,
            },
            ..to(80, None)
        };
        assert!(p.allows(&address("127.0.0.1"), &free));
    }

    #[test]
    fn egress_limits_where_the_selected_pods_connect() {
        let p = policies(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: out, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: tools}}
  - to:
    - ipBlock: {cidr: 192.0.2.0/24}
    ports:
    - {port: 443}
    - {port: 8000, endPort: 8010}
",
        );
        let web = labels(&[("app", "web")]);
        let other = labels(&[("app", "other")]);
        let from = Peer {
            pod: Some(PodRef {
                namespace: "shop",
                labels: &web,
            }),
            ip: None,
        };
        let to = |namespace, port| Destination {
            pod: PodRef {
                namespace,
                labels: &other,
            },
            ip: None,
            port: Some(port),
            port_name: None,
        };
        assert!(p.allows(&from, &to("tools", 80)));
        assert!(!p.allows(&from, &to("shop", 80)));
        // Not isolated for ingress by an Egress-only policy.
        let into = Destination {
            pod: PodRef {
                namespace: "shop",
                labels: &web,
            },
            ..to("shop", 80)
        };
        assert!(p.allows(
            &Peer {
                pod: None,
                ip: None
            },
            &into
        ));
        let pod = PodRef {
            namespace: "shop",
            labels: &web,
        };
        let ip = "192.0.2.7".parse().unwrap();
        assert!(p.allows_outside(pod, ip, 443));
        assert!(p.allows_outside(pod, ip, 8005));
        assert!(!p.allows_outside(pod, ip, 8011));
        assert!(!p.allows_outside(pod, "198.51.100.1".parse().unwrap(), 443));
        let (rules, resolve) = p.egress_rules(pod).unwrap();
        // The namespace rule allows every port: DNS too.
        assert!(resolve);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].network, "192.0.2.0/24");
        let ports: Vec<(&str, u16, u16)> = rules[0]
            .ports
            .iter()
            .map(|r| (r.protocol, r.first, r.last))
            .collect();
        assert_eq!(ports, [("tcp", 443, 443), ("tcp", 8000, 8010)]);
        let free = PodRef {
            namespace: "shop",
            labels: &other,
        };
        assert!(p.egress_rules(free).is_none());
        assert!(p.allows_outside(free, ip, 1));
    }

    #[test]
    fn an_empty_ingress_list_denies_all_and_an_empty_rule_allows_all() {
        let deny = policies(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: shop}
spec:
  podSelector: {}
",
        );
        let any = labels(&[]);
        let to = Destination {
            pod: PodRef {
                namespace: "shop",
                labels: &any,
            },
            ip: None,
            port: Some(80),
            port_name: None,
        };
        let from = Peer {
            pod: Some(PodRef {
                namespace: "shop",
                labels: &any,
            }),
            ip: None,
        };
        assert!(!deny.allows(&from, &to));
        let allow = policies(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: shop}
spec:
  podSelector: {}
  ingress: [{}]
",
        );
        assert!(allow.allows(&from, &to));
        assert!(NetworkPolicies::new(&[], []).is_none());
    }
}
