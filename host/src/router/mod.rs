//! The HTTP front door. `listener` accepts connections; a `berth run`
//! listener serves one workload directly. For pods, the [`Table`] holds
//! every Service's ready endpoints; the ingress routes by Host
//! (`<service>[.<namespace>].localhost`), NodePort services get listeners
//! of their own, and guests reach services by name, all in-process.

mod ingress;
mod l4;
mod listener;
mod metrics;
mod names;
mod network_policy;
mod proxy;
mod rules;
mod services;
mod table;
mod tls;
pub mod trace;

pub use berth_serve::accept;
pub use ingress::{HostPortOffer, Ingress, OwnHost, bind_published};
pub use l4::publish;
pub use listener::{serve, serve_published};
pub use metrics::{DURATION_BUCKETS, HttpMetrics, RouteMetrics, ServiceTotals, Timing};
pub use names::{rewrite_in_place, write_hosts};
pub use network_policy::NetworkPolicies;
pub use rules::IngressRules;
pub use services::{PodPorts, PodServices};
pub use table::{Activator, BALANCE_ANNOTATION, ContainerEndpoint, PodEndpoint, Policy, Table};
pub use tls::{CertificateSet, Certificates, certified_key, server_config as tls_server_config};
