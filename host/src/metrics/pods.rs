//! Pods and their containers, read at each scrape: what each running
//! container uses (from its workload: cgroup counters for a Linux
//! container, berth's own meters for wasm), the requests the router gave
//! each pod, and from the store every pod's phase and restarts. Container
//! metrics keep cAdvisor's names, the store's kube-state-metrics', so
//! dashboards and alerts written for a cluster read them unchanged.
//! Labels name objects (namespace, pod, container), never a uid.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;

use crate::router::Table;
use crate::spec::{Kind, Object};
use crate::state::Shared;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    namespace: String,
    pod: String,
    container: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabels {
    namespace: String,
    pod: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    namespace: String,
    phase: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    namespace: String,
    pod: String,
    container: String,
    reason: String,
}

type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

pub struct PodsCollector {
    pub table: Arc<Table>,
    pub state: Arc<Shared>,
}

impl std::fmt::Debug for PodsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodsCollector").finish_non_exhaustive()
    }
}

fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: &impl EncodeMetric,
) -> std::fmt::Result {
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

impl PodsCollector {
    fn running(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let cpu = Family::<ContainerLabels, FloatCounter>::default();
        let memory = Family::<ContainerLabels, Gauge>::default();
        let instances = Family::<ContainerLabels, Gauge>::default();
        let oom = Family::<ContainerLabels, Counter>::default();
        let requests = Family::<PodLabels, Counter>::default();
        let in_flight = Family::<PodLabels, Gauge>::default();
        let mut pods = self.table.pods();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        for pod in &pods {
            let labels = PodLabels {
                namespace: pod.namespace.clone(),
                pod: pod.name.clone(),
            };
            requests.get_or_create(&labels).inc_by(pod.served());
            in_flight
                .get_or_create(&labels)
                .set(i64::try_from(pod.in_flight()).unwrap_or(i64::MAX));
            for container in pod.containers() {
                let labels = ContainerLabels {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                    container: container.name.clone(),
                };
                let usage = container.workload.usage();
                cpu.get_or_create(&labels).inc_by(usage.cpu.as_secs_f64());
                oom.get_or_create(&labels).inc_by(usage.oom_kills);
                memory
                    .get_or_create(&labels)
                    .set(i64::try_from(usage.memory).unwrap_or(i64::MAX));
                if let Some(n) = usage.instances {
                    instances
                        .get_or_create(&labels)
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
        }
        family(
            encoder,
            "container_cpu_usage",
            "CPU time a running container has used (a wasm container: its guest calls)",
            Some(&Unit::Seconds),
            &cpu,
        )?;
        family(
            encoder,
            "container_memory_working_set",
            "Memory a running container holds (a wasm container: its live instances' linear \
             memory)",
            Some(&Unit::Bytes),
            &memory,
        )?;
        family(
            encoder,
            "berth_wasm_instances",
            "Wasm instances alive in a container now (one per request being served)",
            None,
            &instances,
        )?;
        family(
            encoder,
            "container_oom_events",
            "Out-of-memory kills in a running container since it started: processes the \
             kernel's OOM killer ended, wasm instances that asked for more than their memory \
             limit",
            None,
            &oom,
        )?;
        family(
            encoder,
            "berth_pod_requests",
            "Requests the router has sent a running pod",
            None,
            &requests,
        )?;
        family(
            encoder,
            "berth_pod_requests_in_flight",
            "Requests a running pod is serving now",
            None,
            &in_flight,
        )
    }

    fn stored(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let records = match self.state.store.lock().list(Kind::Pod, None) {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!("reading pods for /metrics: {e}");
                return Ok(());
            }
        };
        let phases = Family::<PhaseLabels, Gauge>::default();
        let restarts = Family::<ContainerLabels, Counter>::default();
        let terminated = Family::<ReasonLabels, FloatGauge>::default();
        for record in &records {
            let Object::Pod(pod) = &record.object else {
                continue;
            };
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let status = record.status.pod();
            phases
                .get_or_create(&PhaseLabels {
                    namespace: namespace.clone(),
                    phase: status
                        .and_then(|s| s.phase())
                        .unwrap_or("Pending")
                        .to_owned(),
                })
                .inc();
            for container in status
                .and_then(|s| s.kube.container_statuses.as_ref())
                .into_iter()
                .flatten()
            {
                let labels = ContainerLabels {
                    namespace: namespace.clone(),
                    pod: pod.metadata.name.clone(),
                    container: container.name.clone(),
                };
                restarts
                    .get_or_create(&labels)
                    .inc_by(u64::try_from(container.restart_count).unwrap_or(0));
                if let Some(reason) = container
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .and_then(|t| t.reason.clone())
                {
                    terminated
                        .get_or_create(&ReasonLabels {
                            namespace: labels.namespace,
                            pod: labels.pod,
                            container: labels.container,
                            reason,
                        })
                        .set(1.0);
                }
            }
        }
        family(
            encoder,
            "berth_pods",
            "Pods by namespace and phase",
            None,
            &phases,
        )?;
        family(
            encoder,
            "kube_pod_container_status_restarts",
            "Restarts of a pod's container",
            None,
            &restarts,
        )?;
        family(
            encoder,
            "kube_pod_container_status_last_terminated_reason",
            "Why a container last ended (OOMKilled: the out-of-memory killer, or a wasm guest \
             over its memory limit)",
            None,
            &terminated,
        )
    }
}

impl Collector for PodsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        self.running(&mut encoder)?;
        self.stored(&mut encoder)
    }
}

/// The one workload of `berth run`, as a container named after it.
pub struct WorkloadCollector {
    pub name: String,
    pub workload: Arc<dyn crate::runtime::Workload>,
}

impl std::fmt::Debug for WorkloadCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCollector")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    container: String,
}

impl Collector for WorkloadCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let usage = self.workload.usage();
        let labels = NameLabel {
            container: self.name.clone(),
        };
        let cpu = Family::<NameLabel, FloatCounter>::default();
        cpu.get_or_create(&labels).inc_by(usage.cpu.as_secs_f64());
        let memory = Family::<NameLabel, Gauge>::default();
        memory
            .get_or_create(&labels)
            .set(i64::try_from(usage.memory).unwrap_or(i64::MAX));
        let oom = Family::<NameLabel, Counter>::default();
        oom.get_or_create(&labels).inc_by(usage.oom_kills);
        family(
            &mut encoder,
            "container_cpu_usage",
            "CPU time the workload has used (its guest calls)",
            Some(&Unit::Seconds),
            &cpu,
        )?;
        family(
            &mut encoder,
            "container_memory_working_set",
            "Linear memory of its live instances",
            Some(&Unit::Bytes),
            &memory,
        )?;
        family(
            &mut encoder,
            "container_oom_events",
            "Out-of-memory kills since it started (processes the OOM killer ended, wasm \
             instances over their memory limit)",
            None,
            &oom,
        )?;
        if let Some(n) = usage.instances {
            let instances = Family::<NameLabel, Gauge>::default();
            instances
                .get_or_create(&labels)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
            family(
                &mut encoder,
                "berth_wasm_instances",
                "Wasm instances alive now (one per request being served)",
                None,
                &instances,
            )?;
        }
        Ok(())
    }
}
