//! The resources the Kubernetes API serves: their group, version, names,
//! scope and verbs. Discovery, the REST paths and kubectl's short names all
//! read this one table.

use crate::spec::Kind;

/// Where a resource's objects come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Kept in the store's objects table, of this kind.
    Stored(Kind),
    /// The store's event log.
    Events,
    /// The daemon's configured nodes.
    Nodes,
    /// The `default` service account every namespace has.
    ServiceAccounts,
    /// The runtime classes berth decides: `wasm` and `linux`.
    RuntimeClasses,
    /// The ingress class berth serves: `berth`, the default.
    IngressClasses,
    /// The storage class berth provisions: `local-path`, the default.
    StorageClasses,
    /// Each Service's pods, as core/v1 Endpoints.
    Endpoints,
    /// Each Service's pods, as discovery.k8s.io/v1 EndpointSlices.
    EndpointSlices,
    /// Running pods' use, sampled: metrics.k8s.io as metrics-server serves it.
    PodMetrics,
    /// The nodes' use, sampled.
    NodeMetrics,
    /// autoscaling/v1 HPAs: the stored v2 ones converted, served by
    /// `api/autoscaling_v1.rs` on the way to and from v2.
    AutoscalingV1,
}

#[derive(Debug)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// `(name, kind of its object, verbs)`.
    pub subresources: &'static [(&'static str, &'static str, &'static [&'static str])],
    pub source: Source,
}

const WRITABLE: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const READ_ONLY: &[&str] = &["get", "list", "watch"];
const STATUS: (&str, &str, &[&str]) = ("status", "", &["get", "patch", "update"]);

pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        namespaced: false,
        verbs: &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        categories: &[],
        subresources: &[STATUS],
        source: Source::Stored(Kind::Namespace),
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        namespaced: true,
        verbs: WRITABLE,
        categories: &["all"],
        subresources: &[
            STATUS,
            ("log", "Pod", &["get"]),
            ("exec", "PodExecOptions", &["create", "get"]),
            ("portforward", "PodPortForwardOptions", &["create", "get"]),
            ("attach", "PodAttachOptions", &["create", "get"]),
        ],
        source: Source::Stored(Kind::Pod),
    },
    Resource {
        group: "",
        version: "v1",
        kind: "PersistentVolumeClaim",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        short_names: &["pvc"],
        namespaced: true,
        verbs: WRITABLE,
        categories: &[],
        subresources: &[STATUS],
        source: Source::Stored(Kind::PersistentVolumeClaim),
    },
    Resource {
        group: "",
        version: "v1",
        kind: "PersistentVolume",
        plural: "persistentvolumes",
        singular: "persistentvolume",
        short_names: &["pv"],
        namespaced: false,
        verbs: WRITABLE,
        categories: &[],
        subresources: &[STATUS],
        source: Source::Stored(Kind::PersistentVolume),
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        namespaced: true,
        verbs: WRITABLE,
        categories: &["all"],
        subresources: &[STATUS],
        source: Source::Stored(Kind::Service),
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        short_names: &["cm"],
        namespaced: true,
        verbs: WRITABLE,
        categories: &[],
        subresources: &[],
        source: Source::Stored(Kind::ConfigMap),
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
        namespaced: true,
        verbs: WRITABLE,
        categories: &[],
        subresources: &[],
        source: Source::Stored(Kind::Secret),
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        namespaced: true,
        verbs: READ_ONLY,
        categories: &[],
        subresources: &[],
        source: Source::Events,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
        namespaced: false,
        verbs: READ_ONLY,
        categories: &[],
        subresources: &[],
        source: Source::Nodes,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        short_names: &["sa"],
        namespaced: true,
        verbs: READ_ONLY,
        categories: &[],
        subresources: &[],
        source: Source::ServiceAccounts,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        short_names: &["ep"],
        namespaced: true,
        verbs: READ_ONLY,
        categories: &[],
        subresources: &[],
        source: Source::Endpoints,
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        short_names: &["deploy"],
        namespaced: true,
        verbs: WRITABLE,
        categories: &["all"],
        subresources: &[STATUS, ("scale", "Scale", &["get", "patch", "update"])],
        source: Source::Stored(Kind::Deployment),
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        short_names: &["rs"],
        namespaced: true,
        verbs: WRITABLE,
        categories: &["all"],
        subresources: &[STATUS, ("scale", "Scale", &["get", "patch", "update"])],
        source: Source::Stored(Kind::ReplicaSet),
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "StatefulSet",
        plural: "statefulsets",
        singular: "statefulset",
        short_names: &["sts"],
        namespaced: true,
        verbs: WRITABLE,
        categories: &["all"],
        subresources: &[STATUS, ("scale", "Scale", &["get", "patch", "update"])],
        source: Source::Stored(Kind::StatefulSet),
    },
    Resource {
        group: "autoscaling",
        version: "v2",
        kind: "HorizontalPodAutoscaler",
        plural: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        short_names: &["hpa"],
        namespaced: true,
        verbs: WRITABLE,
        categories: &["all"],
        subresources: &[STATUS],
        source: Source::Stored(Kind::HorizontalPodAutoscaler),
    },
    // A view of the same objects (see api/autoscaling_v1.rs), after v2 so
    // v2 is the group's preferred version.
    Resource {
        group: "autoscaling",
        version: "v1",
        kind: "HorizontalPodAutoscaler",
        plural: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        short_names: &["hpa"],
        namespaced: true,
        verbs: &["create", "delete", "get", "list"],
        categories: &[],
        subresources: &[],
        source: Source::AutoscalingV1,
    },
    Resource {
        group: "batch",
        version: "v1",
        kind: "Job",
        plural: "jobs",
        singular: "job",
        short_names: &[],
        namespaced: true,
        verbs: WRITABLE,
        categories: &["all"],
        subresources: &[STATUS],
        source: Source::Stored(Kind::Job),
    },
    Resource {
        group: "batch",
        version: "v1",
        kind: "CronJob",
        plural: "cronjobs",
        singular: "cronjob",
        short_names: &["cj"],
        namespaced: true,
        verbs: WRITABLE,
        categories: &["all"],
        subresources: &[STATUS],
        source: Source::Stored(Kind::CronJob),
    },
    Resource {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        namespaced: true,
        verbs: READ_ONLY,
        categories: &[],
        subresources: &[],
        source: Source::Events,
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        short_names: &[],
        namespaced: true,
        verbs: READ_ONLY,
        categories: &[],
        subresources: &[],
        source: Source::EndpointSlices,
    },
    Resource {
        group: "networking.k8s.io",
        version: "v1",
        kind: "Ingress",
        plural: "ingresses",
        singular: "ingress",
        short_names: &["ing"],
        namespaced: true,
        verbs: WRITABLE,
        categories: &[],
        subresources: &[STATUS],
        source: Source::Stored(Kind::Ingress),
    },
    Resource {
        group: "networking.k8s.io",
        version: "v1",
        kind: "NetworkPolicy",
        plural: "networkpolicies",
        singular: "networkpolicy",
        short_names: &["netpol"],
        namespaced: true,
        verbs: WRITABLE,
        categories: &[],
        subresources: &[],
        source: Source::Stored(Kind::NetworkPolicy),
    },
    Resource {
        group: "networking.k8s.io",
        version: "v1",
        kind: "IngressClass",
        plural: "ingressclasses",
        singular: "ingressclass",
        short_names: &[],
        namespaced: false,
        verbs: READ_ONLY,
        categories: &[],
        subresources: &[],
        source: Source::IngressClasses,
    },
    Resource {
        group: "storage.k8s.io",
        version: "v1",
        kind: "StorageClass",
        plural: "storageclasses",
        singular: "storageclass",
        short_names: &["sc"],
        namespaced: false,
        verbs: READ_ONLY,
        categories: &[],
        subresources: &[],
        source: Source::StorageClasses,
    },
    Resource {
        group: "node.k8s.io",
        version: "v1",
        kind: "RuntimeClass",
        plural: "runtimeclasses",
        singular: "runtimeclass",
        short_names: &[],
        namespaced: false,
        verbs: READ_ONLY,
        categories: &[],
        subresources: &[],
        source: Source::RuntimeClasses,
    },
    Resource {
        group: "metrics.k8s.io",
        version: "v1beta1",
        kind: "PodMetrics",
        plural: "pods",
        singular: "",
        short_names: &[],
        namespaced: true,
        verbs: &["get", "list"],
        categories: &[],
        subresources: &[],
        source: Source::PodMetrics,
    },
    Resource {
        group: "metrics.k8s.io",
        version: "v1beta1",
        kind: "NodeMetrics",
        plural: "nodes",
        singular: "",
        short_names: &[],
        namespaced: false,
        verbs: &["get", "list"],
        categories: &[],
        subresources: &[],
        source: Source::NodeMetrics,
    },
];

impl Resource {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, or `pods`: how Kubernetes names the resource in
    /// messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn writable(&self) -> bool {
        self.stored().is_some()
    }

    /// The kind of the store's objects it serves, if they are.
    pub fn stored(&self) -> Option<Kind> {
        match self.source {
            Source::Stored(kind) => Some(kind),
            _ => None,
        }
    }
}

/// The resource `plural` of `group`/`version`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource serving the store's objects of `kind`.
pub fn of_kind(kind: Kind) -> &'static Resource {
    RESOURCES
        .iter()
        .find(|r| r.source == Source::Stored(kind))
        .expect("every stored kind is served")
}

/// The resource a client means by `kind`: the stored one, else the
/// core group's (Event is served in core/v1 and events.k8s.io/v1).
pub fn by_kind(kind: &str) -> Option<&'static Resource> {
    Kind::parse(kind).map(of_kind).or_else(|| {
        RESOURCES
            .iter()
            .find(|r| r.kind == kind && r.group.is_empty())
    })
}

/// The group-versions served, in the order discovery lists them.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !seen.contains(&(r.group, r.version)) {
            seen.push((r.group, r.version));
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_kind_is_served_once_under_its_own_name() {
        for kind in Kind::ALL {
            let resource = of_kind(kind);
            assert_eq!(resource.kind, kind.as_str());
            assert_eq!(resource.api_version(), kind.api_version());
            assert_eq!(resource.namespaced, kind.namespaced());
            let serving = RESOURCES.iter().filter(|r| r.stored() == Some(kind));
            assert_eq!(serving.count(), 1, "{kind}");
        }
    }
}
