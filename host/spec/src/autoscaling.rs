//! autoscaling/v2 HorizontalPodAutoscaler, as berth reads it: what to
//! scale (a Deployment, StatefulSet or ReplicaSet, through its scale), the
//! bounds, the metrics and the behavior. The metrics berth has are Resource
//! (`cpu`, `memory`, from the sampled use `kubectl top` shows), Pods (the
//! per-pod request rate and in-flight requests the router counts, named in
//! [`POD_METRICS`]) and Object on a Service (its request rate, which is
//! what scales a target from zero). Anything else is refused by name.

use serde::{Deserialize, Serialize};

use super::objects::{LabelSelector, ObjectMeta};
use super::quantity::Quantity;

/// Per-pod metrics berth keeps: requests per second the router sent each
/// pod over the sampling window, and requests it is serving at once.
pub const POD_REQUESTS_PER_SECOND: &str = "berth_pod_requests_per_second";
pub const POD_REQUESTS_IN_FLIGHT: &str = "berth_pod_requests_in_flight";
pub const POD_METRICS: [&str; 2] = [POD_REQUESTS_PER_SECOND, POD_REQUESTS_IN_FLIGHT];

/// A Service's request rate (requests per second through the router to
/// it), for an Object metric whose describedObject is the Service.
pub const SERVICE_REQUESTS_PER_SECOND: &str = "berth_service_requests_per_second";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HorizontalPodAutoscaler {
    pub metadata: ObjectMeta,
    pub spec: HpaSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HpaSpec {
    pub scale_target_ref: CrossVersionObjectReference,
    /// Defaults to 1; 0 is allowed (Kubernetes' HPAScaleToZero gate) when
    /// a metric can see a target with no pods (an Object metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<u32>,
    pub max_replicas: u32,
    /// Empty means 80% CPU utilization, as Kubernetes defaults it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<Behavior>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CrossVersionObjectReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricSourceType {
    Resource,
    Pods,
    Object,
    External,
    ContainerResource,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricSpec {
    #[serde(rename = "type")]
    pub kind: MetricSourceType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceMetricSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodsMetricSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectMetricSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalMetricSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_resource: Option<ContainerResourceMetricSource>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceMetricSource {
    pub name: String,
    pub target: MetricTarget,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerResourceMetricSource {
    pub name: String,
    pub container: String,
    pub target: MetricTarget,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricIdentifier {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodsMetricSource {
    pub metric: MetricIdentifier,
    pub target: MetricTarget,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMetricSource {
    pub described_object: CrossVersionObjectReference,
    pub metric: MetricIdentifier,
    pub target: MetricTarget,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExternalMetricSource {
    pub metric: MetricIdentifier,
    pub target: MetricTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricTargetType {
    Utilization,
    Value,
    AverageValue,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricTarget {
    #[serde(rename = "type")]
    pub kind: MetricTargetType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_value: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_utilization: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Behavior {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRules>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRules>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectPolicy {
    Max,
    Min,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScalingRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stabilization_window_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_policy: Option<SelectPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<ScalingPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScalingPolicyType {
    Pods,
    Percent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScalingPolicy {
    #[serde(rename = "type")]
    pub kind: ScalingPolicyType,
    pub value: i32,
    pub period_seconds: i32,
}

impl ScalingRules {
    /// Kubernetes' defaults: up at once by 100% or 4 pods per 15 s,
    /// whichever is more; down after 5 minutes' stabilization, by up to
    /// 100% per 15 s.
    pub fn defaults(up: bool) -> ScalingRules {
        if up {
            ScalingRules {
                stabilization_window_seconds: Some(0),
                select_policy: Some(SelectPolicy::Max),
                policies: vec![
                    ScalingPolicy {
                        kind: ScalingPolicyType::Pods,
                        value: 4,
                        period_seconds: 15,
                    },
                    ScalingPolicy {
                        kind: ScalingPolicyType::Percent,
                        value: 100,
                        period_seconds: 15,
                    },
                ],
            }
        } else {
            ScalingRules {
                stabilization_window_seconds: Some(300),
                select_policy: Some(SelectPolicy::Max),
                policies: vec![ScalingPolicy {
                    kind: ScalingPolicyType::Percent,
                    value: 100,
                    period_seconds: 15,
                }],
            }
        }
    }

    /// These rules with what is unset taken from the defaults.
    fn filled(rules: Option<&ScalingRules>, up: bool) -> ScalingRules {
        let defaults = ScalingRules::defaults(up);
        let Some(rules) = rules else {
            return defaults;
        };
        ScalingRules {
            stabilization_window_seconds: rules
                .stabilization_window_seconds
                .or(defaults.stabilization_window_seconds),
            select_policy: rules.select_policy.or(defaults.select_policy),
            policies: if rules.policies.is_empty() {
                defaults.policies
            } else {
                rules.policies.clone()
            },
        }
    }
}

impl HpaSpec {
    /// Kubernetes' defaults, as kube-apiserver stores them: minReplicas 1,
    /// 80% CPU when no metric is named, and the behavior filled in.
    pub fn default_fields(&mut self) {
        self.min_replicas.get_or_insert(1);
        if self.metrics.is_empty() {
            self.metrics.push(MetricSpec {
                kind: MetricSourceType::Resource,
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        kind: MetricTargetType::Utilization,
                        value: None,
                        average_value: None,
                        average_utilization: Some(80),
                    },
                }),
                pods: None,
                object: None,
                external: None,
                container_resource: None,
            });
        }
        let behavior = self.behavior.get_or_insert_with(Behavior::default);
        behavior.scale_up = Some(ScalingRules::filled(behavior.scale_up.as_ref(), true));
        behavior.scale_down = Some(ScalingRules::filled(behavior.scale_down.as_ref(), false));
    }

    /// What berth cannot or will not do with this spec: (field path,
    /// message).
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |path: &str, message: String| Err((path.to_owned(), message));
        let target = &self.scale_target_ref;
        if !matches!(
            target.kind.as_str(),
            "Deployment" | "StatefulSet" | "ReplicaSet"
        ) {
            return bad(
                "spec.scaleTargetRef.kind",
                format!(
                    "{:?} cannot be scaled here (a Deployment, StatefulSet or ReplicaSet can)",
                    target.kind
                ),
            );
        }
        if let Some(version) = &target.api_version
            && version != "apps/v1"
        {
            return bad(
                "spec.scaleTargetRef.apiVersion",
                format!("{version:?}: berth's {} is apps/v1", target.kind),
            );
        }
        if target.name.is_empty() {
            return bad("spec.scaleTargetRef.name", "must be given".into());
        }
        if self.max_replicas < 1 {
            return bad("spec.maxReplicas", "must be at least 1".into());
        }
        let min = self.min_replicas.unwrap_or(1);
        if min > self.max_replicas {
            return bad(
                "spec.minReplicas",
                format!("{min} is more than maxReplicas ({})", self.max_replicas),
            );
        }
        let mut object_metric = false;
        for (i, metric) in self.metrics.iter().enumerate() {
            let at = format!("spec.metrics[{i}]");
            check_metric(metric, &at)?;
            object_metric |= metric.kind == MetricSourceType::Object;
        }
        if min == 0 && !object_metric {
            return bad(
                "spec.minReplicas",
                "0 needs an Object metric (a Service's request rate): with no pods there is \
                 nothing else to measure"
                    .into(),
            );
        }
        if let Some(behavior) = &self.behavior {
            for (name, rules) in [
                ("scaleUp", &behavior.scale_up),
                ("scaleDown", &behavior.scale_down),
            ] {
                let Some(rules) = rules else { continue };
                let at = format!("spec.behavior.{name}");
                if let Some(w) = rules.stabilization_window_seconds
                    && !(0..=3600).contains(&w)
                {
                    return bad(
                        &format!("{at}.stabilizationWindowSeconds"),
                        format!("{w} must be between 0 and 3600"),
                    );
                }
                for (j, policy) in rules.policies.iter().enumerate() {
                    if policy.value <= 0 {
                        return bad(
                            &format!("{at}.policies[{j}].value"),
                            format!("{} must be greater than 0", policy.value),
                        );
                    }
                    if !(1..=1800).contains(&policy.period_seconds) {
                        return bad(
                            &format!("{at}.policies[{j}].periodSeconds"),
                            format!("{} must be between 1 and 1800", policy.period_seconds),
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_metric(metric: &MetricSpec, at: &str) -> Result<(), (String, String)> {
    let bad = |path: String, message: String| Err((path, message));
    let given = [
        ("resource", metric.resource.is_some()),
        ("pods", metric.pods.is_some()),
        ("object", metric.object.is_some()),
        ("external", metric.external.is_some()),
        ("containerResource", metric.container_resource.is_some()),
    ];
    let wanted = match metric.kind {
        MetricSourceType::Resource => "resource",
        MetricSourceType::Pods => "pods",
        MetricSourceType::Object => "object",
        MetricSourceType::External => "external",
        MetricSourceType::ContainerResource => "containerResource",
    };
    for (field, set) in given {
        if set != (field == wanted) {
            return bad(
                format!("{at}.{field}"),
                if set {
                    format!("must not be set for a metric of type {:?}", metric.kind)
                } else {
                    format!("must be set for a metric of type {:?}", metric.kind)
                },
            );
        }
    }
    match metric.kind {
        MetricSourceType::Resource => {
            let source = metric.resource.as_ref().expect("checked above");
            if !matches!(source.name.as_str(), "cpu" | "memory") {
                return bad(
                    format!("{at}.resource.name"),
                    format!("{:?}: berth measures cpu and memory", source.name),
                );
            }
            check_target(&source.target, &format!("{at}.resource.target"), true)
        }
        MetricSourceType::Pods => {
            let source = metric.pods.as_ref().expect("checked above");
            if !POD_METRICS.contains(&source.metric.name.as_str()) {
                return bad(
                    format!("{at}.pods.metric.name"),
                    format!(
                        "{:?} is not a metric berth keeps for pods (it has {})",
                        source.metric.name,
                        POD_METRICS.join(", ")
                    ),
                );
            }
            if source.target.kind != MetricTargetType::AverageValue {
                return bad(
                    format!("{at}.pods.target.type"),
                    "must be AverageValue for a Pods metric".into(),
                );
            }
            check_target(&source.target, &format!("{at}.pods.target"), false)
        }
        MetricSourceType::Object => {
            let source = metric.object.as_ref().expect("checked above");
            if source.described_object.kind != "Service"
                || source.metric.name != SERVICE_REQUESTS_PER_SECOND
            {
                return bad(
                    format!("{at}.object"),
                    format!(
                        "berth keeps one object metric: {SERVICE_REQUESTS_PER_SECOND} of a \
                         Service (this names {:?} of a {})",
                        source.metric.name, source.described_object.kind
                    ),
                );
            }
            if !matches!(
                source.target.kind,
                MetricTargetType::Value | MetricTargetType::AverageValue
            ) {
                return bad(
                    format!("{at}.object.target.type"),
                    "must be Value or AverageValue for an Object metric".into(),
                );
            }
            check_target(&source.target, &format!("{at}.object.target"), false)
        }
        MetricSourceType::External | MetricSourceType::ContainerResource => bad(
            format!("{at}.type"),
            format!(
                "{:?} metrics are not supported by berth (Resource, Pods and Object are)",
                metric.kind
            ),
        ),
    }
}

fn check_target(target: &MetricTarget, at: &str, resource: bool) -> Result<(), (String, String)> {
    let bad = |path: &str, message: &str| Err((format!("{at}.{path}"), message.to_owned()));
    match target.kind {
        MetricTargetType::Utilization => {
            if !resource {
                return bad("type", "Utilization is for Resource metrics");
            }
            match target.average_utilization {
                Some(n) if n > 0 => Ok(()),
                Some(_) => bad("averageUtilization", "must be greater than 0"),
                None => bad("averageUtilization", "must be set for a Utilization target"),
            }
        }
        MetricTargetType::AverageValue => match target.average_value {
            Some(q) if q.millis() > 0 => Ok(()),
            Some(_) => bad("averageValue", "must be greater than 0"),
            None => bad("averageValue", "must be set for an AverageValue target"),
        },
        MetricTargetType::Value => {
            if resource {
                return bad(
                    "type",
                    "a Resource metric's target is Utilization or AverageValue",
                );
            }
            match target.value {
                Some(q) if q.millis() > 0 => Ok(()),
                Some(_) => bad("value", "must be greater than 0"),
                None => bad("value", "must be set for a Value target"),
            }
        }
    }
}
