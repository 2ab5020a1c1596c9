//! metrics.k8s.io/v1beta1, as metrics-server serves it: a PodMetrics for
//! each running pod and a NodeMetrics for each node, from the daemon's
//! sampled use (`crate::metrics::UsageHistory`). `kubectl top` reads
//! these; so does anything written against metrics-server.
//!
//! Usage is a quantity as metrics-server writes it: CPU in nanocores
//! (`250000000n`), memory in Ki. A node is the machine when it is the
//! only one (the host's default node: all the machine uses, berth
//! included); configured nodes share one machine, so each shows what its
//! pods use.

use serde_json::{Value, json};

use super::server::KubeApi;
use super::status::ApiError;
use crate::spec::{Kind, Object};
use crate::state::Store;

fn cpu(cores: f64) -> String {
    format!("{}n", (cores.max(0.0) * 1e9).round() as u64)
}

fn memory(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

fn rfc3339(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A window as metav1.Duration writes it (Go's duration syntax).
fn window(window: std::time::Duration) -> String {
    format!("{:.3}s", window.as_secs_f64())
}

/// The running pods of `namespace` (all, without one) that have been
/// sampled twice.
pub fn pod_metrics(
    api: &KubeApi,
    store: &Store,
    namespace: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    let mut items = Vec::new();
    for record in store.list(Kind::Pod, namespace)? {
        let Object::Pod(pod) = &record.object else {
            continue;
        };
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let Some(usage) = api.usage.pod(&record.uid) else {
            continue;
        };
        let containers: Vec<Value> = usage
            .containers
            .iter()
            .map(|(name, cores, bytes)| {
                json!({"name": name, "usage": {"cpu": cpu(*cores), "memory": memory(*bytes)}})
            })
            .collect();
        items.push(json!({
            "kind": "PodMetrics",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {
                "name": pod.metadata.name,
                "namespace": ns,
                "labels": pod.metadata.labels,
                "creationTimestamp": rfc3339(std::time::SystemTime::now()),
            },
            "timestamp": rfc3339(usage.timestamp),
            "window": window(usage.window),
            "containers": containers,
        }));
    }
    Ok(items)
}

/// Each node's use: the machine's for the only node, else its pods'.
pub fn node_metrics(api: &KubeApi, store: &Store) -> Result<Vec<Value>, ApiError> {
    let mut per_node: std::collections::HashMap<String, (f64, u64)> = Default::default();
    let mut sampled = None;
    if api.nodes.len() > 1 {
        for record in store.list(Kind::Pod, None)? {
            let Object::Pod(pod) = &record.object else {
                continue;
            };
            let (Some(node), Some(usage)) =
                (pod.spec.node_name.as_ref(), api.usage.pod(&record.uid))
            else {
                continue;
            };
            let sum = per_node.entry(node.clone()).or_default();
            for (_, cores, bytes) in &usage.containers {
                sum.0 += cores;
                sum.1 += bytes;
            }
            sampled.get_or_insert((usage.timestamp, usage.window));
        }
    }
    let machine = api.usage.node();
    let Some((timestamp, took)) = machine
        .as_ref()
        .map(|m| (m.timestamp, m.window))
        .or(sampled)
    else {
        return Ok(Vec::new());
    };
    Ok(api
        .nodes
        .iter()
        .map(|node| {
            let (cores, bytes) = match (&machine, api.nodes.len()) {
                (Some(m), 1) => (m.cores, m.memory),
                _ => per_node.get(&node.name).copied().unwrap_or_default(),
            };
            json!({
                "kind": "NodeMetrics",
                "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {
                    "name": node.name,
                    "labels": node.labels(),
                    "creationTimestamp": rfc3339(std::time::SystemTime::now()),
                },
                "timestamp": rfc3339(timestamp),
                "window": window(took),
                "usage": {"cpu": cpu(cores), "memory": memory(bytes)},
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantities_are_written_as_metrics_server_writes_them() {
        assert_eq!(super::cpu(0.25), "250000000n");
        assert_eq!(super::cpu(-0.1), "0n");
        assert_eq!(super::memory(10 << 20), "10240Ki");
        assert_eq!(
            super::window(std::time::Duration::from_millis(10_500)),
            "10.500s"
        );
    }
}
