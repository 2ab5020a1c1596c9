//! The HTTP front door: listeners that accept connections and hand each
//! request to a workload. Today a listener serves one workload directly
//! (`berth run`); host-based routes, endpoints and load balancing across
//! replicas grow here.

mod listener;

pub use listener::serve;
