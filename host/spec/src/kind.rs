//! The kinds of object berth stores. One enum, so a store lookup, a status
//! and a watch agree on what they mean by "Pod" and the compiler checks it;
//! the names only appear as strings where Kubernetes puts them on the wire.

use std::fmt;

/// A kind of object berth keeps in its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    ConfigMap,
    Secret,
    Pod,
    Deployment,
    ReplicaSet,
    Service,
    Job,
    CronJob,
    Ingress,
    PersistentVolumeClaim,
    PersistentVolume,
    StatefulSet,
    HorizontalPodAutoscaler,
    NetworkPolicy,
}

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::Namespace,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::Pod,
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::Service,
        Kind::Job,
        Kind::CronJob,
        Kind::Ingress,
        Kind::PersistentVolumeClaim,
        Kind::PersistentVolume,
        Kind::StatefulSet,
        Kind::HorizontalPodAutoscaler,
        Kind::NetworkPolicy,
    ];

    /// The name Kubernetes gives it: `kind:` in a manifest.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Service => "Service",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
            Kind::Ingress => "Ingress",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
            Kind::PersistentVolume => "PersistentVolume",
            Kind::StatefulSet => "StatefulSet",
            Kind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            Kind::NetworkPolicy => "NetworkPolicy",
        }
    }

    pub const fn api_version(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet => "apps/v1",
            Kind::Job | Kind::CronJob => "batch/v1",
            Kind::Ingress | Kind::NetworkPolicy => "networking.k8s.io/v1",
            Kind::HorizontalPodAutoscaler => "autoscaling/v2",
            _ => "v1",
        }
    }

    /// Whether its objects live in a namespace.
    pub const fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::PersistentVolume)
    }

    /// The kind of the objects this kind's controller makes and owns, which
    /// go with it.
    pub const fn dependents(self) -> Option<Kind> {
        match self {
            Kind::Deployment => Some(Kind::ReplicaSet),
            Kind::ReplicaSet | Kind::Job | Kind::StatefulSet => Some(Kind::Pod),
            Kind::CronJob => Some(Kind::Job),
            _ => None,
        }
    }

    /// The kind Kubernetes names `name`, if berth stores it.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl rusqlite::ToSql for Kind {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_back_from_its_name() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("pod"), None);
        assert_eq!(Kind::parse("Node"), None);
    }
}
