//! Statuses: what the controllers and the kubelet observe of an object,
//! as Kubernetes' own types (k8s-openapi, the pinned minor the API serves).
//! The controller writes them, the API serves them and the router reads
//! them, so one typed shape is the contract between all three; a field
//! Kubernetes does not have is a compile error, not a silent `null`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::batch::v1 as batch;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as networking;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use super::Kind;

pub use apps::{
    DeploymentCondition, DeploymentStatus, ReplicaSetCondition, ReplicaSetStatus, StatefulSetStatus,
};
pub use batch::{CronJobStatus, JobCondition, JobStatus};
pub use core::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition,
};
pub use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus, MetricStatus,
};

/// A pod's status: Kubernetes' fields, and where berth serves each wasm
/// container on the host (berth's own addition, so `berth ps` and `berth
/// up` can print a URL; clients that do not know it ignore it).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PodStatus {
    #[serde(flatten)]
    pub kube: core::PodStatus,
    /// `127.0.0.1:PORT` by container name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<String, String>,
    /// `wasm` or `linux` by container name: the runtime each runs on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runtimes: BTreeMap<String, String>,
}

impl PodStatus {
    /// Whether the kubelet has reported the pod Ready.
    pub fn ready(&self) -> bool {
        self.kube
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    }

    pub fn phase(&self) -> Option<&str> {
        self.kube.phase.as_deref()
    }

    /// The restarts of its first container, which berth restarts with
    /// the pod.
    pub fn restarts(&self) -> u32 {
        self.kube
            .container_statuses
            .iter()
            .flatten()
            .next()
            .map_or(0, |c| u32::try_from(c.restart_count).unwrap_or(0))
    }

    /// The status of container `name`, an app or an init container.
    pub fn container(&self, name: &str) -> Option<&ContainerStatus> {
        self.kube
            .container_statuses
            .iter()
            .chain(&self.kube.init_container_statuses)
            .flatten()
            .find(|c| c.name == name)
    }
}

/// An object's status, of its kind's type. ConfigMaps and Secrets have
/// none.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Status {
    #[default]
    None,
    Namespace(core::NamespaceStatus),
    Pod(Box<PodStatus>),
    Deployment(Box<DeploymentStatus>),
    ReplicaSet(Box<ReplicaSetStatus>),
    Service(core::ServiceStatus),
    Job(Box<JobStatus>),
    CronJob(Box<CronJobStatus>),
    Ingress(networking::IngressStatus),
    PersistentVolumeClaim(Box<core::PersistentVolumeClaimStatus>),
    PersistentVolume(core::PersistentVolumeStatus),
    StatefulSet(Box<StatefulSetStatus>),
    HorizontalPodAutoscaler(Box<HorizontalPodAutoscalerStatus>),
}

impl Status {
    /// The status of an object of `kind` from its JSON: an empty object is
    /// the kind's empty status.
    pub fn from_value(kind: Kind, value: serde_json::Value) -> serde_json::Result<Status> {
        Status::parse(kind, value)
    }

    /// [`Status::from_value`] from JSON text, without a `Value` between:
    /// the store reads thousands of pod statuses a second while pods start.
    pub fn from_json(kind: Kind, text: &str) -> serde_json::Result<Status> {
        let mut reader = serde_json::Deserializer::from_str(text);
        let status = Status::parse(kind, &mut reader)?;
        reader.end()?;
        Ok(status)
    }

    /// The one reading of a status, whatever it is read from.
    fn parse<'de, D: serde::Deserializer<'de>>(kind: Kind, from: D) -> Result<Status, D::Error> {
        Ok(match kind {
            Kind::ConfigMap | Kind::Secret | Kind::NetworkPolicy => {
                serde::de::IgnoredAny::deserialize(from)?;
                Status::None
            }
            Kind::Namespace => Status::Namespace(Deserialize::deserialize(from)?),
            Kind::Pod => Status::Pod(Deserialize::deserialize(from)?),
            Kind::Deployment => Status::Deployment(Deserialize::deserialize(from)?),
            Kind::ReplicaSet => Status::ReplicaSet(Deserialize::deserialize(from)?),
            Kind::Service => Status::Service(Deserialize::deserialize(from)?),
            Kind::Job => Status::Job(Deserialize::deserialize(from)?),
            Kind::CronJob => Status::CronJob(Deserialize::deserialize(from)?),
            Kind::Ingress => Status::Ingress(Deserialize::deserialize(from)?),
            Kind::PersistentVolumeClaim => {
                Status::PersistentVolumeClaim(Deserialize::deserialize(from)?)
            }
            Kind::PersistentVolume => Status::PersistentVolume(Deserialize::deserialize(from)?),
            Kind::StatefulSet => Status::StatefulSet(Deserialize::deserialize(from)?),
            Kind::HorizontalPodAutoscaler => {
                Status::HorizontalPodAutoscaler(Deserialize::deserialize(from)?)
            }
        })
    }

    /// As stored: [`Status::to_value`]'s text, written directly.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("statuses serialise")
    }

    /// The empty status of an object of `kind`.
    pub fn empty(kind: Kind) -> Status {
        Status::from_value(kind, serde_json::json!({})).expect("every status may be empty")
    }

    /// As served: `{}` when nothing has been observed.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("statuses serialise")
    }

    /// Whether it is a status an object of `kind` can have.
    pub fn fits(&self, kind: Kind) -> bool {
        matches!(
            (self, kind),
            (Status::None, _)
                | (Status::Namespace(_), Kind::Namespace)
                | (Status::Pod(_), Kind::Pod)
                | (Status::Deployment(_), Kind::Deployment)
                | (Status::ReplicaSet(_), Kind::ReplicaSet)
                | (Status::Service(_), Kind::Service)
                | (Status::Job(_), Kind::Job)
                | (Status::CronJob(_), Kind::CronJob)
                | (Status::Ingress(_), Kind::Ingress)
                | (
                    Status::PersistentVolumeClaim(_),
                    Kind::PersistentVolumeClaim
                )
                | (Status::PersistentVolume(_), Kind::PersistentVolume)
                | (Status::StatefulSet(_), Kind::StatefulSet)
                | (
                    Status::HorizontalPodAutoscaler(_),
                    Kind::HorizontalPodAutoscaler
                )
        )
    }

    pub fn pod(&self) -> Option<&PodStatus> {
        match self {
            Status::Pod(s) => Some(s),
            _ => None,
        }
    }

    pub fn deployment(&self) -> Option<&DeploymentStatus> {
        match self {
            Status::Deployment(s) => Some(s),
            _ => None,
        }
    }

    pub fn replica_set(&self) -> Option<&ReplicaSetStatus> {
        match self {
            Status::ReplicaSet(s) => Some(s),
            _ => None,
        }
    }

    pub fn autoscaler(&self) -> Option<&HorizontalPodAutoscalerStatus> {
        match self {
            Status::HorizontalPodAutoscaler(s) => Some(s),
            _ => None,
        }
    }

    pub fn stateful_set(&self) -> Option<&StatefulSetStatus> {
        match self {
            Status::StatefulSet(s) => Some(s),
            _ => None,
        }
    }

    pub fn job(&self) -> Option<&JobStatus> {
        match self {
            Status::Job(s) => Some(s),
            _ => None,
        }
    }

    pub fn cron_job(&self) -> Option<&CronJobStatus> {
        match self {
            Status::CronJob(s) => Some(s),
            _ => None,
        }
    }

    /// A claim's or a volume's phase.
    pub fn storage_phase(&self) -> Option<&str> {
        match self {
            Status::PersistentVolumeClaim(s) => s.phase.as_deref(),
            Status::PersistentVolume(s) => s.phase.as_deref(),
            _ => None,
        }
    }

    /// Whether it is a pod's that has finished (Succeeded or Failed): it
    /// holds no room, no claim, and nothing runs in it any more.
    pub fn pod_finished(&self) -> bool {
        matches!(
            self.pod().and_then(PodStatus::phase),
            Some("Succeeded" | "Failed")
        )
    }

    /// Whether it is a pod's, reported Ready.
    pub fn pod_ready(&self) -> bool {
        self.pod().is_some_and(PodStatus::ready)
    }
}

/// Each kind's status as its own type writes it; no status, `{}`.
impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, to: S) -> Result<S::Ok, S::Error> {
        match self {
            Status::None => serde::ser::SerializeMap::end(to.serialize_map(Some(0))?),
            Status::Namespace(s) => s.serialize(to),
            Status::Pod(s) => s.serialize(to),
            Status::Deployment(s) => s.serialize(to),
            Status::ReplicaSet(s) => s.serialize(to),
            Status::Service(s) => s.serialize(to),
            Status::Job(s) => s.serialize(to),
            Status::CronJob(s) => s.serialize(to),
            Status::Ingress(s) => s.serialize(to),
            Status::PersistentVolumeClaim(s) => s.serialize(to),
            Status::PersistentVolume(s) => s.serialize(to),
            Status::StatefulSet(s) => s.serialize(to),
            Status::HorizontalPodAutoscaler(s) => s.serialize(to),
        }
    }
}

impl From<PodStatus> for Status {
    fn from(s: PodStatus) -> Status {
        Status::Pod(Box::new(s))
    }
}

impl From<DeploymentStatus> for Status {
    fn from(s: DeploymentStatus) -> Status {
        Status::Deployment(Box::new(s))
    }
}

impl From<ReplicaSetStatus> for Status {
    fn from(s: ReplicaSetStatus) -> Status {
        Status::ReplicaSet(Box::new(s))
    }
}

impl From<JobStatus> for Status {
    fn from(s: JobStatus) -> Status {
        Status::Job(Box::new(s))
    }
}

impl From<CronJobStatus> for Status {
    fn from(s: CronJobStatus) -> Status {
        Status::CronJob(Box::new(s))
    }
}

impl From<HorizontalPodAutoscalerStatus> for Status {
    fn from(s: HorizontalPodAutoscalerStatus) -> Status {
        Status::HorizontalPodAutoscaler(Box::new(s))
    }
}

impl From<StatefulSetStatus> for Status {
    fn from(s: StatefulSetStatus) -> Status {
        Status::StatefulSet(Box::new(s))
    }
}

/// `True` or `False`, as conditions spell them.
pub fn flag(value: bool) -> String {
    if value { "True" } else { "False" }.to_owned()
}

/// A pod condition without times or reasons.
pub fn pod_condition(type_: &str, status: bool) -> PodCondition {
    PodCondition {
        type_: type_.to_owned(),
        status: flag(status),
        ..PodCondition::default()
    }
}

/// Now, as a Kubernetes timestamp (to the second, as Kubernetes writes
/// them).
pub fn now() -> Time {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
    Time(k8s_openapi::chrono::DateTime::from_timestamp(seconds, 0).unwrap_or_default())
}

/// A timestamp in RFC 3339, as berth keeps creation times.
pub fn time(rfc3339: &str) -> Option<Time> {
    k8s_openapi::chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| Time(t.with_timezone(&k8s_openapi::chrono::Utc)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_status_round_trips_with_its_endpoints_beside_kubernetes_fields() {
        let json = serde_json::json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "web", "image": "hello:1", "ready": true,
                "restartCount": 2, "imageID": "", "state": {"running": {"startedAt": "2026-12-06T10:00:00Z"}}}],
            "endpoints": {"web": "127.0.0.1:41000"},
        });
        let status = Status::from_value(Kind::Pod, json.clone()).unwrap();
        let pod = status.pod().unwrap();
        assert!(pod.ready());
        assert_eq!(pod.restarts(), 2);
        assert_eq!(pod.endpoints["web"], "127.0.0.1:41000");
        assert_eq!(status.to_value(), json);
        let text = status.to_json();
        assert_eq!(Status::from_json(Kind::Pod, &text).unwrap(), status);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            json
        );
    }

    #[test]
    fn empty_statuses_are_empty_objects_and_unknown_fields_are_dropped() {
        for kind in Kind::ALL {
            // Kubernetes requires a ReplicaSet's (and a StatefulSet's)
            // count, and so says 0.
            let empty = match kind {
                Kind::ReplicaSet | Kind::StatefulSet => serde_json::json!({"replicas": 0}),
                Kind::HorizontalPodAutoscaler => serde_json::json!({"desiredReplicas": 0}),
                _ => serde_json::json!({}),
            };
            assert_eq!(Status::empty(kind).to_value(), empty, "{kind}");
        }
        let old = serde_json::json!({"containerStatuses": [{"name": "c", "image": "i",
            "ready": false, "restartCount": 0, "endpoint": "127.0.0.1:1"}]});
        let status = Status::from_value(Kind::Pod, old).unwrap();
        assert!(
            status.to_value()["containerStatuses"][0]
                .get("endpoint")
                .is_none()
        );
    }

    #[test]
    fn a_status_of_the_wrong_shape_is_an_error() {
        let bad = serde_json::json!({"replicas": "three"});
        assert!(Status::from_value(Kind::Deployment, bad).is_err());
    }
}
