//! The HorizontalPodAutoscaler controller, with Kubernetes' algorithm:
//! every sync period (15 s unless told) each HPA reads its target's scale
//! and pods, turns each metric into a replica count (desired =
//! ceil(current × current value / target), nothing within a tolerance of
//! 10%, pods without readings filled in so as not to overshoot), takes the
//! largest, then applies its behavior (stabilization windows and the
//! scale-up and scale-down policies) and its bounds, writes the target's
//! replicas, and reports conditions and events as kube-controller-manager
//! does.
//!
//! Readings come from [`Readings`]: the daemon's sampled use
//! (`crate::metrics::UsageHistory`), or a table in tests. What the
//! controller remembers between syncs (recent recommendations and
//! rescales, for the behavior) is in memory, as Kubernetes keeps it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;

use super::Result;
use crate::metrics::PodUsage;
use crate::spec::autoscaling::{
    HorizontalPodAutoscaler, MetricSourceType, MetricSpec, MetricTargetType,
    POD_REQUESTS_PER_SECOND, ScalingPolicyType, ScalingRules, SelectPolicy,
};
use crate::spec::objects::{LabelSelector, Pod};
use crate::spec::status::{self, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus};
use crate::spec::{Kind, Object};
use crate::state::{Record, Store};

/// What the autoscaler reads.
pub trait Readings: Send + Sync {
    /// The use of the pod with `uid`.
    fn pod(&self, uid: &str) -> Option<PodUsage>;
    /// Requests per second to a Service.
    fn service_rate(&self, namespace: &str, name: &str) -> Option<f64>;
}

impl Readings for crate::metrics::UsageHistory {
    fn pod(&self, uid: &str) -> Option<PodUsage> {
        crate::metrics::UsageHistory::pod(self, uid)
    }

    fn service_rate(&self, namespace: &str, name: &str) -> Option<f64> {
        crate::metrics::UsageHistory::service_rate(self, namespace, name)
    }
}

/// Kubernetes' `--horizontal-pod-autoscaler-tolerance`.
const TOLERANCE: f64 = 0.1;

pub struct Autoscalers {
    readings: std::sync::Arc<dyn Readings>,
    pub sync_period: Duration,
    memory: HashMap<String, Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    next: Option<Instant>,
    /// Desired counts of recent syncs, for the stabilization windows.
    recommendations: Vec<(Instant, u32)>,
    /// Replicas added (positive) or removed (negative) by recent rescales,
    /// for the policies' periods.
    rescales: Vec<(Instant, i64)>,
}

/// A pod the target's selector picks, as the metrics read it.
struct Member {
    pod: Pod,
    uid: String,
    ready: bool,
}

/// One metric's answer: a replica count and what was read, or why not.
enum Proposal {
    Replicas {
        replicas: u32,
        status: Box<v2::MetricStatus>,
        /// How a rescale's reason names it.
        name: String,
    },
    Failed {
        reason: &'static str,
        message: String,
    },
}

impl Autoscalers {
    pub fn new(readings: std::sync::Arc<dyn Readings>, sync_period: Duration) -> Autoscalers {
        Autoscalers {
            readings,
            sync_period,
            memory: HashMap::new(),
        }
    }

    /// Syncs every HPA whose period is up; whether any rescaled.
    pub fn sync(&mut self, store: &mut Store) -> Result<bool> {
        let now = Instant::now();
        let records = store.list(Kind::HorizontalPodAutoscaler, None)?;
        self.memory
            .retain(|uid, _| records.iter().any(|r| &r.uid == uid));
        // Each target's HPAs: two that scale one target would fight over
        // it, so neither does (Kubernetes' AmbiguousSelector).
        let mut by_target: HashMap<(String, String, String), Vec<String>> = HashMap::new();
        for record in &records {
            if let Object::HorizontalPodAutoscaler(hpa) = &record.object
                && !hpa.metadata.deleting()
            {
                by_target
                    .entry(target_key(hpa))
                    .or_default()
                    .push(hpa.metadata.name.clone());
            }
        }
        let mut rescaled = false;
        for record in &records {
            let Object::HorizontalPodAutoscaler(hpa) = &record.object else {
                continue;
            };
            if hpa.metadata.deleting() {
                continue;
            }
            let sharing = &by_target[&target_key(hpa)];
            let memory = self.memory.entry(record.uid.clone()).or_default();
            if memory.next.is_some_and(|due| now < due) {
                continue;
            }
            memory.next = Some(now + self.sync_period);
            let (status, scaled) = if sharing.len() > 1 {
                (ambiguous(store, record, hpa, sharing)?, false)
            } else {
                reconcile(store, record, hpa, memory, &*self.readings, now)?
            };
            rescaled |= scaled;
            if record.status.autoscaler() != Some(&status) {
                store.set_status_of(Kind::HorizontalPodAutoscaler, &record.uid, &status.into())?;
            }
        }
        Ok(rescaled)
    }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
) -> HorizontalPodAutoscalerCondition {
    HorizontalPodAutoscalerCondition {
        type_: type_.into(),
        status: status::flag(ok),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: None,
    }
}

/// Conditions keep their lastTransitionTime while their status holds.
fn with_times(
    mut conditions: Vec<HorizontalPodAutoscalerCondition>,
    before: &HorizontalPodAutoscalerStatus,
) -> Vec<HorizontalPodAutoscalerCondition> {
    for c in &mut conditions {
        c.last_transition_time = before
            .conditions
            .iter()
            .flatten()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
            .and_then(|o| o.last_transition_time.clone())
            .or_else(|| Some(status::now()));
    }
    conditions
}

fn event(
    store: &mut Store,
    hpa: &HorizontalPodAutoscaler,
    warning: bool,
    reason: &str,
    message: &str,
) -> Result<()> {
    let event = super::event_of(
        hpa.metadata.namespace.as_deref().unwrap_or("default"),
        "HorizontalPodAutoscaler",
        &hpa.metadata.name,
        if warning { "Warning" } else { "Normal" },
        reason,
        message,
    );
    if warning {
        store.record_event_unless_repeated(&event)?;
    } else {
        store.record_event(&event)?;
    }
    Ok(())
}

/// The object `hpa` scales, unless it is gone or going.
fn target_of(
    store: &Store,
    namespace: &str,
    hpa: &HorizontalPodAutoscaler,
) -> Result<Option<Record>> {
    let reference = &hpa.spec.scale_target_ref;
    let Some(kind) = Kind::parse(&reference.kind) else {
        return Ok(None);
    };
    Ok(store
        .get(kind, namespace, &reference.name)?
        .filter(|t| !t.object.metadata().deleting()))
}

/// The namespace, kind and name an HPA scales.
fn target_key(hpa: &HorizontalPodAutoscaler) -> (String, String, String) {
    let reference = &hpa.spec.scale_target_ref;
    (
        hpa.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        reference.kind.clone(),
        reference.name.clone(),
    )
}

/// The status of an HPA that shares its target with others: it does not
/// scale, and says why, as Kubernetes does.
fn ambiguous(
    store: &mut Store,
    record: &Record,
    hpa: &HorizontalPodAutoscaler,
    sharing: &[String],
) -> Result<HorizontalPodAutoscalerStatus> {
    let before = record.status.autoscaler().cloned().unwrap_or_default();
    let namespace = hpa.metadata.namespace.as_deref().unwrap_or("default");
    let reference = &hpa.spec.scale_target_ref;
    let names: Vec<String> = sharing.iter().map(|n| format!("{namespace}/{n}")).collect();
    let message = format!(
        "{} {:?} is scaled by multiple HPAs: [{}]",
        reference.kind.to_lowercase(),
        reference.name,
        names.join(" ")
    );
    if !before
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "ScalingActive" && c.reason.as_deref() == Some("AmbiguousSelector"))
    {
        event(store, hpa, true, "AmbiguousSelector", &message)?;
    }
    Ok(HorizontalPodAutoscalerStatus {
        observed_generation: Some(record.generation as i64),
        conditions: Some(with_times(
            vec![condition(
                "ScalingActive",
                false,
                "AmbiguousSelector",
                message,
            )],
            &before,
        )),
        ..before.clone()
    })
}

/// The target's replicas and selector.
fn scale_of(object: &Object) -> Option<(u32, &LabelSelector)> {
    match object {
        Object::Deployment(d) => Some((d.spec.replicas, &d.spec.selector)),
        Object::StatefulSet(s) => Some((s.spec.replicas, &s.spec.selector)),
        Object::ReplicaSet(r) => Some((r.spec.replicas, &r.spec.selector)),
        _ => None,
    }
}

fn with_replicas(mut object: Object, replicas: u32) -> Object {
    match &mut object {
        Object::Deployment(d) => d.spec.replicas = replicas,
        Object::StatefulSet(s) => s.spec.replicas = replicas,
        Object::ReplicaSet(r) => r.spec.replicas = replicas,
        _ => {}
    }
    object
}

fn reconcile(
    store: &mut Store,
    record: &Record,
    hpa: &HorizontalPodAutoscaler,
    memory: &mut Memory,
    readings: &dyn Readings,
    now: Instant,
) -> Result<(HorizontalPodAutoscalerStatus, bool)> {
    let before = record.status.autoscaler().cloned().unwrap_or_default();
    let namespace = hpa.metadata.namespace.as_deref().unwrap_or("default");
    let spec = &hpa.spec;
    let reference = &spec.scale_target_ref;
    let (min, max) = (spec.min_replicas.unwrap_or(1), spec.max_replicas);
    let mut status = HorizontalPodAutoscalerStatus {
        observed_generation: Some(record.generation as i64),
        last_scale_time: before.last_scale_time.clone(),
        current_replicas: before.current_replicas,
        desired_replicas: before.desired_replicas,
        current_metrics: None,
        conditions: None,
    };
    let target = target_of(store, namespace, hpa)?;
    let Some((target, (current, selector))) = target
        .as_ref()
        .and_then(|t| scale_of(&t.object).map(|scale| (t, scale)))
    else {
        let message = format!(
            "the HPA controller was unable to get the target's current scale: {} {:?} not found",
            reference.kind.to_lowercase(),
            reference.name
        );
        event(store, hpa, true, "FailedGetScale", &message)?;
        status.conditions = Some(with_times(
            vec![condition("AbleToScale", false, "FailedGetScale", message)],
            &before,
        ));
        return Ok((status, false));
    };
    status.current_replicas = Some(current as i32);
    // Woken from zero by a request since the last sync: that is a
    // recommendation too, so the scale-down window holds it up.
    if before.desired_replicas == 0 && current > 0 {
        memory.recommendations.push((now, current));
    }
    let mut conditions = vec![condition(
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale".into(),
    )];
    if current == 0 && min > 0 {
        conditions.push(condition(
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
        ));
        status.desired_replicas = 0;
        status.conditions = Some(with_times(conditions, &before));
        return Ok((status, false));
    }

    let (wanted, reason) = if current > max {
        (
            max,
            "Current number of replicas above Spec.MaxReplicas".to_owned(),
        )
    } else if current < min {
        (
            min,
            "Current number of replicas below Spec.MinReplicas".to_owned(),
        )
    } else {
        let pods: Vec<Member> = store
            .list(Kind::Pod, Some(namespace))?
            .into_iter()
            .filter_map(|r| match r.object {
                Object::Pod(pod)
                    if !pod.metadata.deleting()
                        && !r.status.pod_finished()
                        && selector.matches(&pod.metadata.labels) =>
                {
                    Some(Member {
                        ready: r.status.pod_ready(),
                        uid: r.uid,
                        pod: *pod,
                    })
                }
                _ => None,
            })
            .collect();
        let mut best: Option<(u32, String)> = None;
        let mut failure = None;
        let mut statuses = Vec::new();
        for metric in &spec.metrics {
            match propose(metric, namespace, current, &pods, readings) {
                Proposal::Replicas {
                    replicas,
                    status,
                    name,
                } => {
                    statuses.push(*status);
                    if best.as_ref().is_none_or(|(r, _)| replicas > *r) {
                        best = Some((replicas, name));
                    }
                }
                Proposal::Failed { reason, message } => {
                    failure.get_or_insert((reason, message));
                }
            }
        }
        status.current_metrics = (!statuses.is_empty()).then_some(statuses);
        match (best, failure) {
            (Some((replicas, name)), _) => {
                conditions.push(condition(
                    "ScalingActive",
                    true,
                    "ValidMetricFound",
                    format!(
                        "the HPA was able to successfully calculate a replica count from {name}"
                    ),
                ));
                let reason = if replicas > current {
                    format!("{name} above target")
                } else {
                    "All metrics below target".to_owned()
                };
                (replicas, reason)
            }
            (None, failure) => {
                let (reason, message) = failure.unwrap_or((
                    "InvalidMetricSourceType",
                    "no metrics to compute from".into(),
                ));
                let message = format!("the HPA was unable to compute the replica count: {message}");
                event(store, hpa, true, reason, &message)?;
                conditions.push(condition("ScalingActive", false, reason, message));
                status.desired_replicas = current as i32;
                status.conditions = Some(with_times(conditions, &before));
                return Ok((status, false));
            }
        }
    };

    let (desired, able, limited) = normalize(spec, memory, current, wanted, now);
    conditions[0] = able;
    conditions.push(limited);
    if desired != current {
        store.apply(&[with_replicas(target.object.clone(), desired)])?;
        memory
            .rescales
            .push((now, i64::from(desired) - i64::from(current)));
        event(
            store,
            hpa,
            false,
            "SuccessfulRescale",
            &format!("New size: {desired}; reason: {reason}"),
        )?;
        conditions[0] = condition(
            "AbleToScale",
            true,
            "SucceededRescale",
            format!("the HPA controller was able to update the target scale to {desired}"),
        );
        status.last_scale_time = Some(status::now());
    }
    status.desired_replicas = desired as i32;
    status.conditions = Some(with_times(conditions, &before));
    Ok((status, desired != current))
}

/// The router's activator: a request for a Service with no replica scales
/// to one the targets at zero of the HPAs that scale them from zero on
/// that Service's request rate (minReplicas 0, an Object metric naming
/// it), and the request is held up to `hold` for the replica to be ready.
pub struct Activation {
    state: std::sync::Arc<crate::state::Shared>,
    hold: Duration,
    /// Services asked about in the last second, and whether an HPA wakes
    /// them: the requests of one burst wake a service once, and requests
    /// to a service no HPA wakes (one whose pods are all down, say) do
    /// not each read the store.
    recent: std::sync::Arc<parking_lot::Mutex<Answers>>,
}

/// (namespace, service) → when it was asked, and whether an HPA wakes it.
type Answers = HashMap<(String, String), (Instant, bool)>;

impl Activation {
    pub fn new(state: std::sync::Arc<crate::state::Shared>, hold: Duration) -> Activation {
        Activation {
            state,
            hold,
            recent: std::sync::Arc::default(),
        }
    }
}

impl crate::router::Activator for Activation {
    fn wake(
        &self,
        namespace: &str,
        service: &str,
    ) -> crate::runtime::BoxFuture<'static, Option<Duration>> {
        let key = (namespace.to_owned(), service.to_owned());
        let hold = self.hold;
        {
            let mut recent = self.recent.lock();
            recent.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(1));
            if let Some((_, covered)) = recent.get(&key) {
                return Box::pin(std::future::ready(covered.then_some(hold)));
            }
        }
        let (state, recent) = (self.state.clone(), self.recent.clone());
        Box::pin(async move {
            let (namespace, service) = key.clone();
            let woken = tokio::task::spawn_blocking(move || {
                let woke = wake(&mut state.store.lock(), &namespace, &service);
                if matches!(woke, Ok(true)) {
                    state
                        .urgent
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    state.changed.notify_one();
                }
                woke
            })
            .await;
            match woken {
                Ok(Ok(covered)) => {
                    recent.lock().insert(key, (Instant::now(), covered));
                    covered.then_some(hold)
                }
                Ok(Err(e)) => {
                    tracing::warn!("waking {}/{} from zero: {e}", key.0, key.1);
                    None
                }
                Err(e) => {
                    tracing::warn!("waking {}/{} from zero: {e}", key.0, key.1);
                    None
                }
            }
        })
    }
}

/// Scales to one the targets at zero of the HPAs in `namespace` that scale
/// from zero on Service `service`; whether any HPA does (so a request may
/// wait for the replica).
pub fn wake(store: &mut Store, namespace: &str, service: &str) -> Result<bool> {
    let mut covered = false;
    for record in store.list(Kind::HorizontalPodAutoscaler, Some(namespace))? {
        let Object::HorizontalPodAutoscaler(hpa) = &record.object else {
            continue;
        };
        let on_service = hpa.spec.metrics.iter().any(|m| {
            m.object.as_ref().is_some_and(|o| {
                o.described_object.kind == "Service" && o.described_object.name == service
            })
        });
        if hpa.spec.min_replicas != Some(0) || !on_service || hpa.metadata.deleting() {
            continue;
        }
        covered = true;
        let Some(target) = target_of(store, namespace, hpa)? else {
            continue;
        };
        if scale_of(&target.object).is_some_and(|(n, _)| n == 0) {
            store.apply(&[with_replicas(target.object.clone(), 1)])?;
            event(
                store,
                hpa,
                false,
                "SuccessfulRescale",
                &format!(
                    "New size: 1; reason: a request for Service {namespace}/{service} arrived at \
                     zero replicas"
                ),
            )?;
        }
    }
    Ok(covered)
}

/// A quantity as Kubernetes writes a metric's value: whole numbers as
/// they are, others in thousandths (`1500m`).
fn quantity(value: f64) -> KubeQuantity {
    let millis = (value.max(0.0) * 1000.0).round() as u64;
    KubeQuantity(if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    })
}

/// The replicas for a metric whose per-pod `values` (of the pods read;
/// `missing` more pods have none yet) average against `target`, as
/// Kubernetes' replica calculator: within the tolerance, no change; pods
/// without readings count as 0 when scaling up and as on target when
/// scaling down, and if that flips the direction, no change either.
fn replicas_for(current: u32, read: usize, missing: usize, sum: f64, target: f64) -> u32 {
    let ratio = sum / (read as f64 * target);
    if missing == 0 {
        if (ratio - 1.0).abs() <= TOLERANCE {
            return current;
        }
        return (ratio * read as f64).ceil() as u32;
    }
    let filled = if ratio > 1.0 {
        sum
    } else {
        sum + missing as f64 * target
    };
    let all = read + missing;
    let new_ratio = filled / (all as f64 * target);
    if (new_ratio - 1.0).abs() <= TOLERANCE || (ratio > 1.0) != (new_ratio > 1.0) {
        return current;
    }
    (new_ratio * all as f64).ceil() as u32
}

fn propose(
    metric: &MetricSpec,
    namespace: &str,
    current: u32,
    pods: &[Member],
    readings: &dyn Readings,
) -> Proposal {
    match metric.kind {
        MetricSourceType::Resource => {
            let source = metric.resource.as_ref().expect("validated");
            let cpu = source.name == "cpu";
            let failed = |message: String| Proposal::Failed {
                reason: "FailedGetResourceMetric",
                message: format!("failed to get {} utilization: {message}", source.name),
            };
            let (mut sum, mut requested, mut read, mut missing, mut missing_requests) =
                (0.0, 0.0, 0usize, 0usize, 0.0);
            for Member { pod, uid, ready } in pods {
                let mut request = 0.0;
                // Sidecars run beside the app and are measured with it.
                for c in pod.spec.containers.iter().chain(pod.spec.sidecars()) {
                    let asked = if cpu {
                        c.resources.requests.cpu
                    } else {
                        c.resources.requests.memory
                    };
                    match asked {
                        Some(q) => request += q.millis() as f64 / 1000.0,
                        None if source.target.kind == MetricTargetType::Utilization => {
                            return failed(format!(
                                "missing request for {} in container {} of Pod {}",
                                source.name, c.name, pod.metadata.name
                            ));
                        }
                        None => {}
                    }
                }
                // CPU of a pod not yet ready is its start-up, not its load.
                let usage = readings.pod(uid).filter(|_| *ready || !cpu);
                match usage {
                    Some(usage) => {
                        sum += usage
                            .containers
                            .iter()
                            .map(|(_, cores, bytes)| if cpu { *cores } else { *bytes as f64 })
                            .sum::<f64>();
                        requested += request;
                        read += 1;
                    }
                    None => {
                        missing += 1;
                        missing_requests += request;
                    }
                }
            }
            if read == 0 {
                return failed(
                    "did not receive metrics for targeted pods (pods might be unready)".into(),
                );
            }
            let target = &source.target;
            let (replicas, value) = if target.kind == MetricTargetType::Utilization {
                if requested <= 0.0 {
                    return failed(format!("no {} requested by the pods read", source.name));
                }
                let want = f64::from(target.average_utilization.expect("validated"));
                let per_pod_request = (requested + missing_requests) / (read + missing) as f64;
                let utilization = sum * 100.0 / requested;
                // Utilization against the pods' requests, as a per-pod
                // value against a per-pod target.
                let replicas = replicas_for(
                    current,
                    read,
                    missing,
                    utilization * (read as f64) * per_pod_request / 100.0,
                    want * per_pod_request / 100.0,
                );
                (
                    replicas,
                    v2::MetricValueStatus {
                        average_utilization: Some(utilization.round() as i32),
                        average_value: Some(quantity(sum / read as f64)),
                        value: None,
                    },
                )
            } else {
                let want = target.average_value.expect("validated").millis() as f64 / 1000.0;
                (
                    replicas_for(current, read, missing, sum, want),
                    v2::MetricValueStatus {
                        average_utilization: None,
                        average_value: Some(quantity(sum / read as f64)),
                        value: None,
                    },
                )
            };
            Proposal::Replicas {
                replicas,
                name: if target.kind == MetricTargetType::Utilization {
                    format!(
                        "{} resource utilization (percentage of request)",
                        source.name
                    )
                } else {
                    format!("{} resource", source.name)
                },
                status: Box::new(v2::MetricStatus {
                    type_: "Resource".into(),
                    resource: Some(v2::ResourceMetricStatus {
                        name: source.name.clone(),
                        current: value,
                    }),
                    ..Default::default()
                }),
            }
        }
        MetricSourceType::Pods => {
            let source = metric.pods.as_ref().expect("validated");
            let (mut sum, mut read, mut missing) = (0.0, 0usize, 0usize);
            for Member { uid, .. } in pods {
                match readings.pod(uid) {
                    Some(usage) => {
                        sum += if source.metric.name == POD_REQUESTS_PER_SECOND {
                            usage.requests_per_second
                        } else {
                            usage.in_flight as f64
                        };
                        read += 1;
                    }
                    None => missing += 1,
                }
            }
            if read == 0 {
                return Proposal::Failed {
                    reason: "FailedGetPodsMetric",
                    message: format!(
                        "unable to get metric {}: no readings for the target's pods yet",
                        source.metric.name
                    ),
                };
            }
            let want = source.target.average_value.expect("validated").millis() as f64 / 1000.0;
            Proposal::Replicas {
                replicas: replicas_for(current, read, missing, sum, want),
                name: format!("pods metric {}", source.metric.name),
                status: Box::new(v2::MetricStatus {
                    type_: "Pods".into(),
                    pods: Some(v2::PodsMetricStatus {
                        metric: v2::MetricIdentifier {
                            name: source.metric.name.clone(),
                            selector: None,
                        },
                        current: v2::MetricValueStatus {
                            average_value: Some(quantity(sum / read as f64)),
                            ..Default::default()
                        },
                    }),
                    ..Default::default()
                }),
            }
        }
        MetricSourceType::Object => {
            let source = metric.object.as_ref().expect("validated");
            let service = &source.described_object.name;
            let Some(rate) = readings.service_rate(namespace, service) else {
                return Proposal::Failed {
                    reason: "FailedGetObjectMetric",
                    message: format!(
                        "unable to get metric {} of Service {namespace}/{service}: it has no \
                         readings (does it exist?)",
                        source.metric.name
                    ),
                };
            };
            let target = &source.target;
            let ready = pods.iter().filter(|m| m.ready).count() as u32;
            let (replicas, value) = match target.kind {
                MetricTargetType::AverageValue => {
                    let want = target.average_value.expect("validated").millis() as f64 / 1000.0;
                    let ratio = rate / (want * f64::from(current.max(1)));
                    let replicas = if current > 0 && (ratio - 1.0).abs() <= TOLERANCE {
                        current
                    } else {
                        (rate / want).ceil() as u32
                    };
                    (
                        replicas,
                        v2::MetricValueStatus {
                            average_value: Some(quantity(rate / f64::from(current.max(1)))),
                            ..Default::default()
                        },
                    )
                }
                _ => {
                    let want = target.value.expect("validated").millis() as f64 / 1000.0;
                    let ratio = rate / want;
                    let replicas = if (ratio - 1.0).abs() <= TOLERANCE {
                        current
                    } else {
                        (ratio * f64::from(ready.max(1))).ceil() as u32
                    };
                    (
                        replicas,
                        v2::MetricValueStatus {
                            value: Some(quantity(rate)),
                            ..Default::default()
                        },
                    )
                }
            };
            Proposal::Replicas {
                replicas,
                name: format!("Service metric {}", source.metric.name),
                status: Box::new(v2::MetricStatus {
                    type_: "Object".into(),
                    object: Some(v2::ObjectMetricStatus {
                        described_object: v2::CrossVersionObjectReference {
                            api_version: Some("v1".into()),
                            kind: "Service".into(),
                            name: service.clone(),
                        },
                        metric: v2::MetricIdentifier {
                            name: source.metric.name.clone(),
                            selector: None,
                        },
                        current: value,
                    }),
                    ..Default::default()
                }),
            }
        }
        MetricSourceType::External | MetricSourceType::ContainerResource => Proposal::Failed {
            reason: "InvalidMetricSourceType",
            message: format!("{:?} metrics are not supported", metric.kind),
        },
    }
}

/// The behavior and the bounds applied to `wanted`: the count to scale
/// to, the AbleToScale condition (stabilized or not) and ScalingLimited.
fn normalize(
    spec: &crate::spec::autoscaling::HpaSpec,
    memory: &mut Memory,
    current: u32,
    wanted: u32,
    now: Instant,
) -> (
    u32,
    HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerCondition,
) {
    let behavior = spec.behavior.clone().unwrap_or_default();
    let up = behavior.scale_up.unwrap_or_default();
    let down = behavior.scale_down.unwrap_or_default();
    let window = |rules: &ScalingRules| {
        Duration::from_secs(
            u64::try_from(rules.stabilization_window_seconds.unwrap_or(0)).unwrap_or(0),
        )
    };
    let (up_window, down_window) = (window(&up), window(&down));
    // Stabilization: scale up no further than the lowest recent
    // recommendation, down no further than the highest.
    let (mut up_recommendation, mut down_recommendation) = (wanted, wanted);
    for (at, replicas) in &memory.recommendations {
        let age = now.saturating_duration_since(*at);
        if age < up_window {
            up_recommendation = up_recommendation.min(*replicas);
        }
        if age < down_window {
            down_recommendation = down_recommendation.max(*replicas);
        }
    }
    let longest = up_window.max(down_window);
    memory
        .recommendations
        .retain(|(at, _)| now.saturating_duration_since(*at) < longest);
    memory.recommendations.push((now, wanted));
    let mut stabilized = current.max(up_recommendation).min(down_recommendation);
    let able = if stabilized == wanted {
        condition(
            "AbleToScale",
            true,
            "ReadyForNewScale",
            "recommended size matches current size".into(),
        )
    } else if stabilized > wanted {
        condition(
            "AbleToScale",
            true,
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation".into(),
        )
    } else {
        condition(
            "AbleToScale",
            true,
            "ScaleUpStabilized",
            "recent recommendations were lower than current one, applying the lowest recent recommendation".into(),
        )
    };
    let (min, max) = (spec.min_replicas.unwrap_or(1), spec.max_replicas);
    let mut limited = condition(
        "ScalingLimited",
        false,
        "DesiredWithinRange",
        "the desired count is within the acceptable range".into(),
    );
    let periods = up
        .policies
        .iter()
        .chain(&down.policies)
        .map(|p| Duration::from_secs(u64::try_from(p.period_seconds).unwrap_or(0)))
        .max()
        .unwrap_or_default();
    memory
        .rescales
        .retain(|(at, _)| now.saturating_duration_since(*at) < periods);
    if stabilized > current {
        let limit = scale_up_limit(current, &memory.rescales, &up, now);
        if stabilized > limit {
            stabilized = limit;
            limited = condition(
                "ScalingLimited",
                true,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate".into(),
            );
        }
    } else if stabilized < current {
        let limit = scale_down_limit(current, &memory.rescales, &down, now);
        if stabilized < limit {
            stabilized = limit;
            limited = condition(
                "ScalingLimited",
                true,
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate".into(),
            );
        }
    }
    if stabilized > max {
        stabilized = max;
        limited = condition(
            "ScalingLimited",
            true,
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count".into(),
        );
    } else if stabilized < min {
        stabilized = min;
        limited = condition(
            "ScalingLimited",
            true,
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count".into(),
        );
    }
    (stabilized, able, limited)
}

/// Replicas changed (added, or removed when `removed`) within `period`.
fn changed_within(rescales: &[(Instant, i64)], period: i32, now: Instant, removed: bool) -> i64 {
    let period = Duration::from_secs(u64::try_from(period).unwrap_or(0));
    rescales
        .iter()
        .filter(|(at, change)| {
            now.saturating_duration_since(*at) < period && (*change < 0) == removed && *change != 0
        })
        .map(|(_, change)| change.abs())
        .sum()
}

/// The most replicas the scale-up policies allow now.
fn scale_up_limit(
    current: u32,
    rescales: &[(Instant, i64)],
    rules: &ScalingRules,
    now: Instant,
) -> u32 {
    let select = rules.select_policy.unwrap_or(SelectPolicy::Max);
    if select == SelectPolicy::Disabled || rules.policies.is_empty() {
        return if select == SelectPolicy::Disabled {
            current
        } else {
            u32::MAX
        };
    }
    let proposals = rules.policies.iter().map(|policy| {
        let start =
            i64::from(current) - changed_within(rescales, policy.period_seconds, now, false);
        match policy.kind {
            ScalingPolicyType::Pods => start + i64::from(policy.value),
            ScalingPolicyType::Percent => {
                (start as f64 * (1.0 + f64::from(policy.value) / 100.0)).ceil() as i64
            }
        }
    });
    let limit = match select {
        SelectPolicy::Min => proposals.min(),
        _ => proposals.max(),
    }
    .unwrap_or(i64::from(current));
    u32::try_from(limit.max(i64::from(current))).unwrap_or(u32::MAX)
}

/// The fewest replicas the scale-down policies allow now.
fn scale_down_limit(
    current: u32,
    rescales: &[(Instant, i64)],
    rules: &ScalingRules,
    now: Instant,
) -> u32 {
    let select = rules.select_policy.unwrap_or(SelectPolicy::Max);
    if select == SelectPolicy::Disabled {
        return current;
    }
    if rules.policies.is_empty() {
        return 0;
    }
    let proposals = rules.policies.iter().map(|policy| {
        let start = i64::from(current) + changed_within(rescales, policy.period_seconds, now, true);
        match policy.kind {
            ScalingPolicyType::Pods => start - i64::from(policy.value),
            ScalingPolicyType::Percent => {
                (start as f64 * (1.0 - f64::from(policy.value) / 100.0)) as i64
            }
        }
    });
    // Max selects the policy that allows the biggest change: the fewest.
    let limit = match select {
        SelectPolicy::Min => proposals.max(),
        _ => proposals.min(),
    }
    .unwrap_or(i64::from(current));
    u32::try_from(limit.clamp(0, i64::from(current))).unwrap_or(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::autoscaling::ScalingPolicy;

    struct NoReadings;

    impl Readings for NoReadings {
        fn pod(&self, _: &str) -> Option<PodUsage> {
            None
        }
        fn service_rate(&self, _: &str, _: &str) -> Option<f64> {
            None
        }
    }

    fn hpa(name: &str) -> String {
        format!(
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: {name}}}\n\
             spec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}\n  \
             minReplicas: 3\n  maxReplicas: 5\n  metrics:\n  - type: Resource\n    \
             resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 50}}}}\n"
        )
    }

    #[test]
    fn two_hpas_on_one_target_neither_scale_and_say_so() {
        let mut store = Store::in_memory().unwrap();
        let text = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 1\n  \
             selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    \
             spec:\n      containers:\n      - {{name: web, image: web:1}}\n---\n{}---\n{}",
            hpa("first"),
            hpa("second")
        );
        let objects: Vec<Object> = crate::spec::parse_str(&text, "t.yaml")
            .unwrap()
            .into_iter()
            .map(|l| l.object)
            .collect();
        store.apply(&objects).unwrap();
        let mut autoscalers = Autoscalers::new(std::sync::Arc::new(NoReadings), Duration::ZERO);
        autoscalers.sync(&mut store).unwrap();
        let replicas = |store: &Store| {
            let d = store
                .get(Kind::Deployment, "default", "web")
                .unwrap()
                .unwrap();
            scale_of(&d.object).unwrap().0
        };
        // Below its minimum of 3, yet not scaled: two HPAs claim it.
        assert_eq!(replicas(&store), 1);
        for name in ["first", "second"] {
            let record = store
                .get(Kind::HorizontalPodAutoscaler, "default", name)
                .unwrap()
                .unwrap();
            let status = record.status.autoscaler().unwrap();
            let active = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "ScalingActive")
                .unwrap();
            assert_eq!(active.status, "False");
            assert_eq!(active.reason.as_deref(), Some("AmbiguousSelector"));
            let message = active.message.as_deref().unwrap();
            assert!(
                message.contains("default/first default/second"),
                "{message}"
            );
        }
        // One left: it scales the target up to its minimum.
        store
            .delete(Kind::HorizontalPodAutoscaler, "default", "second")
            .unwrap();
        autoscalers.sync(&mut store).unwrap();
        assert_eq!(replicas(&store), 3);
    }

    #[test]
    fn replicas_follow_kubernetes_ratio_with_a_tolerance() {
        // 2 pods at 90% of a 50% target: ceil(1.8 × 2) = 4.
        assert_eq!(replicas_for(2, 2, 0, 1.8, 0.5), 4);
        // Within 10% of the target: no change.
        assert_eq!(replicas_for(3, 3, 0, 1.59, 0.5), 3);
        // Half the target: down to ceil(0.5 × 4).
        assert_eq!(replicas_for(4, 4, 0, 1.0, 0.5), 2);
        // A new pod without readings counts as idle while scaling up…
        assert_eq!(replicas_for(2, 1, 1, 1.6, 0.5), 4);
        assert_eq!(replicas_for(2, 1, 1, 1.0, 0.5), 2);
        // …and a flip of direction through it means no change.
        assert_eq!(replicas_for(3, 1, 2, 0.6, 0.5), 3);
    }

    #[test]
    fn policies_limit_the_rate_of_change() {
        let now = Instant::now();
        // Kubernetes' defaults: +4 pods or +100% per 15 s, the larger.
        let up = ScalingRules::defaults(true);
        // From 1: +4 pods beats +100%.
        assert_eq!(scale_up_limit(1, &[], &up, now), 5);
        // From 10: +100% beats +4.
        assert_eq!(scale_up_limit(10, &[], &up, now), 20);
        // 3 added within the period already count against it.
        assert_eq!(scale_up_limit(5, &[(now, 3)], &up, now), 6);
        let down = ScalingRules {
            stabilization_window_seconds: Some(300),
            select_policy: Some(SelectPolicy::Max),
            policies: vec![ScalingPolicy {
                kind: ScalingPolicyType::Pods,
                value: 1,
                period_seconds: 60,
            }],
        };
        assert_eq!(scale_down_limit(4, &[], &down, now), 3);
        assert_eq!(scale_down_limit(3, &[(now, -1)], &down, now), 3);
        let disabled = ScalingRules {
            select_policy: Some(SelectPolicy::Disabled),
            ..down
        };
        assert_eq!(scale_down_limit(4, &[], &disabled, now), 4);
    }

    #[test]
    fn a_scale_down_waits_out_its_stabilization_window() {
        let mut spec: crate::spec::autoscaling::HpaSpec = yaml_serde::from_str(
            "scaleTargetRef: {kind: Deployment, name: web}\nmaxReplicas: 10\n",
        )
        .unwrap();
        spec.default_fields();
        let mut memory = Memory::default();
        let start = Instant::now();
        // High, then low: the high recommendation holds for 300 s.
        assert_eq!(normalize(&spec, &mut memory, 2, 6, start).0, 6);
        let later = start + Duration::from_secs(60);
        let (n, able, _) = normalize(&spec, &mut memory, 6, 1, later);
        assert_eq!(n, 6);
        assert_eq!(able.reason.as_deref(), Some("ScaleDownStabilized"));
        let after = start + Duration::from_secs(400);
        assert_eq!(normalize(&spec, &mut memory, 6, 1, after).0, 1);
        // Bounded by maxReplicas, and says so.
        let (n, _, limited) = normalize(&spec, &mut memory, 1, 40, after);
        assert_eq!(n, 5, "4 pods at most in 15 s from 1");
        assert_eq!(limited.reason.as_deref(), Some("ScaleUpLimit"));
    }
}
