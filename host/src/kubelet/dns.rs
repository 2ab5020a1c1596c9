//! A Linux pod's `/etc/resolv.conf`, as the kubelet makes it: from the
//! pod's `dnsPolicy` and `dnsConfig` over the host's resolver settings
//! (`--resolv-conf`, the kubelet's flag of that name). berth has no
//! cluster DNS server: a pod's `/etc/hosts` names the Services (see
//! `router::write_hosts`), and the name server a pod on its own network
//! asks is its way out's DNS forwarder, which takes each query to the
//! host's name server.

use std::net::IpAddr;
use std::path::Path;

use crate::runtime::linux::network::DNS_FORWARDER;
use crate::spec::objects::{PodDnsConfig, PodSpec};

/// Resolver settings, as a resolv.conf has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Resolver {
    pub nameservers: Vec<IpAddr>,
    pub searches: Vec<String>,
    /// `name` or `name:value`, in order.
    pub options: Vec<String>,
}

/// The most name servers a resolver reads (glibc's MAXNS).
const MAX_NAMESERVERS: usize = 3;

impl Resolver {
    /// The host's settings from `path`; none when it cannot be read.
    pub fn read(path: &Path) -> Resolver {
        match std::fs::read_to_string(path) {
            Ok(text) => Resolver::parse(&text),
            Err(e) => {
                tracing::warn!(
                    "reading {} for pods' name servers: {e} (see --resolv-conf)",
                    path.display()
                );
                Resolver::default()
            }
        }
    }

    /// resolv.conf's text: `nameserver`, `search` (the last one counts, as
    /// for glibc; `domain` too), `options`; comments and the rest ignored.
    pub fn parse(text: &str) -> Resolver {
        let mut resolver = Resolver::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(server) = words.next().and_then(|w| w.parse().ok()) {
                        resolver.nameservers.push(server);
                    }
                }
                Some("search" | "domain") => {
                    resolver.searches = words.map(str::to_owned).collect();
                }
                Some("options") => resolver.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        resolver
    }

    /// What a pod of `spec` is given. On its own network (`own_network`)
    /// the host's name servers are reached through the pod's way out:
    /// `ClusterFirst` asks its forwarder, `Default` the host's servers,
    /// except loopback ones, which the pod cannot reach (the forwarder,
    /// which takes queries to the host's first server, stands for that one
    /// when it is loopback). On the host's network it has the host's
    /// settings. `None`
    /// has `dnsConfig` alone; `dnsConfig` adds to the others, as the
    /// kubelet merges it.
    pub fn for_pod(&self, spec: &PodSpec, own_network: bool) -> Resolver {
        let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
        let mut pod = match (policy, own_network) {
            ("None", _) => Resolver::default(),
            (_, false) => self.clone(),
            ("Default", true) => Resolver {
                nameservers: self
                    .nameservers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| match (i, s.is_loopback()) {
                        (0, true) => Some(IpAddr::V4(DNS_FORWARDER)),
                        (_, true) => None,
                        (_, false) => Some(*s),
                    })
                    .collect(),
                ..self.clone()
            },
            _ => Resolver {
                nameservers: vec![IpAddr::V4(DNS_FORWARDER)],
                ..self.clone()
            },
        };
        if let Some(PodDnsConfig {
            nameservers,
            searches,
            options,
        }) = &spec.dns_config
        {
            pod.nameservers
                .extend(nameservers.iter().filter_map(|s| s.parse::<IpAddr>().ok()));
            pod.searches.extend(searches.iter().cloned());
            for option in options {
                // A later option of a name replaces the earlier one.
                pod.options
                    .retain(|o| o.split(':').next() != Some(option.name.as_str()));
                pod.options.push(match &option.value {
                    Some(value) => format!("{}:{value}", option.name),
                    None => option.name.clone(),
                });
            }
        }
        let mut seen = std::collections::HashSet::new();
        pod.nameservers.retain(|s| seen.insert(*s));
        pod.nameservers.truncate(MAX_NAMESERVERS);
        let mut seen = std::collections::HashSet::new();
        pod.searches.retain(|s| seen.insert(s.clone()));
        pod
    }

    /// As a resolv.conf.
    pub fn text(&self) -> String {
        let mut text = String::from("# Written by berth for this pod (dnsPolicy, dnsConfig).\n");
        for server in &self.nameservers {
            text.push_str(&format!("nameserver {server}\n"));
        }
        if !self.searches.is_empty() {
            text.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            text.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PodSpec {
        yaml_serde::from_str(&format!("{yaml}\ncontainers: []\n")).unwrap()
    }

    const HOST: &str = "# from the network\nnameserver 127.0.0.53\nnameserver 192.0.2.1 # second\n\
                        search corp.example lab.example\noptions edns0 trust-ad\n";

    #[test]
    fn a_pod_asks_its_way_out_which_asks_the_host_s_name_server() {
        let host = Resolver::parse(HOST);
        assert_eq!(
            host.nameservers,
            [
                "127.0.0.53".parse::<IpAddr>().unwrap(),
                "192.0.2.1".parse().unwrap()
            ]
        );
        let pod = host.for_pod(&spec(""), true);
        assert_eq!(
            pod.text(),
            "# Written by berth for this pod (dnsPolicy, dnsConfig).\nnameserver 169.254.1.1\n\
             search corp.example lab.example\noptions edns0 trust-ad\n"
        );
        // Default: the host's servers, the forwarder for the first, a
        // loopback one; a later loopback one (the forwarder cannot take
        // queries there) left out.
        let pod = host.for_pod(&spec("dnsPolicy: Default"), true);
        assert_eq!(
            pod.nameservers,
            [
                "169.254.1.1".parse::<IpAddr>().unwrap(),
                "192.0.2.1".parse().unwrap()
            ]
        );
        let later = Resolver::parse("nameserver 192.0.2.1\nnameserver 127.0.0.53\n");
        assert_eq!(
            later.for_pod(&spec("dnsPolicy: Default"), true).nameservers,
            ["192.0.2.1".parse::<IpAddr>().unwrap()]
        );
        // On the host's network: the host's, as they are.
        assert_eq!(host.for_pod(&spec("hostNetwork: true"), false), host);
    }

    #[test]
    fn dns_config_adds_to_the_policy_and_none_is_it_alone() {
        let host = Resolver::parse(HOST);
        let pod = host.for_pod(
            &spec(
                "dnsConfig: {nameservers: [192.0.2.9, 192.0.2.10, 192.0.2.11], searches: [corp.example, x.example], \
                 options: [{name: edns0}, {name: ndots, value: '2'}, {name: trust-ad, value: '0'}]}",
            ),
            true,
        );
        // Three servers at most; searches once each; an option named again replaced.
        assert_eq!(pod.nameservers.len(), 3);
        assert_eq!(pod.nameservers[0], IpAddr::V4(DNS_FORWARDER));
        assert_eq!(pod.searches, ["corp.example", "lab.example", "x.example"]);
        assert_eq!(pod.options, ["edns0", "ndots:2", "trust-ad:0"]);
        let alone = host.for_pod(
            &spec("dnsPolicy: None\ndnsConfig: {nameservers: [192.0.2.9]}"),
            true,
        );
        assert_eq!(
            alone,
            Resolver {
                nameservers: vec!["192.0.2.9".parse().unwrap()],
                ..Resolver::default()
            }
        );
    }
}
