//! Reading manifests: multi-document YAML files (or directories of them)
//! into typed objects, then checking what types alone cannot say. Every
//! error names the file, the object and the field path, so a bad manifest
//! is fixed from the message alone, and nothing of a bad file is applied.

use std::path::PathBuf;

use serde::Deserialize as _;

use super::Kind;
use super::objects::{
    ConfigMap, Container, CronJob, Deployment, Ingress, Job, Namespace, OUTBOUND_ANNOTATION,
    ObjectMeta, PersistentVolume, PersistentVolumeClaim, Pod, PodSpec, Probe, ReplicaSet, Secret,
    Service, ServiceType, StatefulSet,
};

/// One object of a manifest, of a kind berth knows.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    ConfigMap(ConfigMap),
    Secret(Secret),
    Pod(Box<Pod>),
    Deployment(Box<Deployment>),
    ReplicaSet(Box<ReplicaSet>),
    Service(Service),
    Job(Box<Job>),
    CronJob(Box<CronJob>),
    Ingress(Box<Ingress>),
    PersistentVolumeClaim(Box<PersistentVolumeClaim>),
    PersistentVolume(Box<PersistentVolume>),
    StatefulSet(Box<StatefulSet>),
    HorizontalPodAutoscaler(Box<super::autoscaling::HorizontalPodAutoscaler>),
    NetworkPolicy(Box<super::objects::NetworkPolicy>),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::Secret(_) => Kind::Secret,
            Object::Pod(_) => Kind::Pod,
            Object::Deployment(_) => Kind::Deployment,
            Object::ReplicaSet(_) => Kind::ReplicaSet,
            Object::Service(_) => Kind::Service,
            Object::Job(_) => Kind::Job,
            Object::CronJob(_) => Kind::CronJob,
            Object::Ingress(_) => Kind::Ingress,
            Object::PersistentVolumeClaim(_) => Kind::PersistentVolumeClaim,
            Object::PersistentVolume(_) => Kind::PersistentVolume,
            Object::StatefulSet(_) => Kind::StatefulSet,
            Object::HorizontalPodAutoscaler(_) => Kind::HorizontalPodAutoscaler,
            Object::NetworkPolicy(_) => Kind::NetworkPolicy,
        }
    }

    pub fn api_version(&self) -> &'static str {
        self.kind().api_version()
    }

    /// The object as JSON, without apiVersion and kind.
    pub fn to_value(&self) -> serde_json::Value {
        match self {
            Object::Namespace(o) => serde_json::to_value(o),
            Object::ConfigMap(o) => serde_json::to_value(o),
            Object::Secret(o) => serde_json::to_value(o),
            Object::Pod(o) => serde_json::to_value(o),
            Object::Deployment(o) => serde_json::to_value(o),
            Object::ReplicaSet(o) => serde_json::to_value(o),
            Object::Service(o) => serde_json::to_value(o),
            Object::Job(o) => serde_json::to_value(o),
            Object::CronJob(o) => serde_json::to_value(o),
            Object::Ingress(o) => serde_json::to_value(o),
            Object::PersistentVolumeClaim(o) => serde_json::to_value(o),
            Object::PersistentVolume(o) => serde_json::to_value(o),
            Object::StatefulSet(o) => serde_json::to_value(o),
            Object::HorizontalPodAutoscaler(o) => serde_json::to_value(o),
            Object::NetworkPolicy(o) => serde_json::to_value(o),
        }
        .expect("typed objects serialise")
    }

    /// The inverse of [`Object::to_value`] for an object of `kind`.
    pub fn from_value(kind: Kind, value: serde_json::Value) -> Result<Object, serde_json::Error> {
        Ok(match kind {
            Kind::Namespace => Object::Namespace(serde_json::from_value(value)?),
            Kind::ConfigMap => Object::ConfigMap(serde_json::from_value(value)?),
            Kind::Secret => Object::Secret(serde_json::from_value(value)?),
            Kind::Pod => Object::Pod(serde_json::from_value(value)?),
            Kind::Deployment => Object::Deployment(serde_json::from_value(value)?),
            Kind::ReplicaSet => Object::ReplicaSet(serde_json::from_value(value)?),
            Kind::Service => Object::Service(serde_json::from_value(value)?),
            Kind::Job => Object::Job(serde_json::from_value(value)?),
            Kind::CronJob => Object::CronJob(serde_json::from_value(value)?),
            Kind::Ingress => Object::Ingress(serde_json::from_value(value)?),
            Kind::PersistentVolumeClaim => {
                Object::PersistentVolumeClaim(serde_json::from_value(value)?)
            }
            Kind::PersistentVolume => Object::PersistentVolume(serde_json::from_value(value)?),
            Kind::StatefulSet => Object::StatefulSet(serde_json::from_value(value)?),
            Kind::HorizontalPodAutoscaler => {
                Object::HorizontalPodAutoscaler(serde_json::from_value(value)?)
            }
            Kind::NetworkPolicy => Object::NetworkPolicy(serde_json::from_value(value)?),
        })
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::ReplicaSet(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Job(o) => &o.metadata,
            Object::CronJob(o) => &o.metadata,
            Object::Ingress(o) => &o.metadata,
            Object::PersistentVolumeClaim(o) => &o.metadata,
            Object::PersistentVolume(o) => &o.metadata,
            Object::StatefulSet(o) => &o.metadata,
            Object::HorizontalPodAutoscaler(o) => &o.metadata,
            Object::NetworkPolicy(o) => &o.metadata,
        }
    }

    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Namespace(o) => &mut o.metadata,
            Object::ConfigMap(o) => &mut o.metadata,
            Object::Secret(o) => &mut o.metadata,
            Object::Pod(o) => &mut o.metadata,
            Object::Deployment(o) => &mut o.metadata,
            Object::ReplicaSet(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::Job(o) => &mut o.metadata,
            Object::CronJob(o) => &mut o.metadata,
            Object::Ingress(o) => &mut o.metadata,
            Object::PersistentVolumeClaim(o) => &mut o.metadata,
            Object::PersistentVolume(o) => &mut o.metadata,
            Object::StatefulSet(o) => &mut o.metadata,
            Object::HorizontalPodAutoscaler(o) => &mut o.metadata,
            Object::NetworkPolicy(o) => &mut o.metadata,
        }
    }

    /// The namespace the object lives in (`default` unless it says), or
    /// `None` for namespaces themselves, which are cluster-wide.
    pub fn namespace(&self) -> Option<&str> {
        if self.kind().namespaced() {
            Some(self.metadata().namespace.as_deref().unwrap_or("default"))
        } else {
            None
        }
    }
}

/// An object and where it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub object: Object,
    /// `FILE` or `FILE (document N)`.
    pub source: String,
    /// The document as written, for the API server (which checks it again
    /// and records the fields it sets, not berth's defaults).
    pub raw: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {object}{path}{message}")]
pub struct ManifestError {
    /// The file, and the document in it when it holds several.
    pub file: String,
    /// `Deployment web: `, or empty when the object could not be named.
    pub object: String,
    /// `spec.replicas: `, or empty.
    pub path: String,
    pub message: String,
}

impl ManifestError {
    fn new(source: &str, message: impl Into<String>) -> ManifestError {
        ManifestError {
            file: source.to_owned(),
            object: String::new(),
            path: String::new(),
            message: message.into(),
        }
    }
}

/// Reads `paths`: files, or directories whose `*.yaml`/`*.yml`/`*.json`
/// files are read in name order (as `kubectl apply -f DIR` does).
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<Loaded>, ManifestError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| ManifestError::new(&path.display().to_string(), e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                })
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    let mut loaded = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let text =
            std::fs::read_to_string(&file).map_err(|e| ManifestError::new(&name, e.to_string()))?;
        loaded.extend(parse_str(&text, &name)?);
    }
    Ok(loaded)
}

/// The deepest flow collections (`[`, `{`) YAML text may nest: far past
/// any Kubernetes object (or JSON kept in one), and short of where the
/// YAML parser's work grows with the square of the depth (200 KB of
/// brackets took it 20 s).
pub const MAX_YAML_NESTING: usize = 100;

/// Refuses YAML nesting flow collections deeper than
/// [`MAX_YAML_NESTING`], in one linear pass before any parser sees it.
/// Brackets in comments and in quoted scalars do not count. A quote opens
/// a scalar only where one can begin (at a line's start, or after `[`,
/// `{`, `,`, `:`, `-` or `?` and a space), and a quoted scalar is taken to
/// end with its line: a quote in the middle of a plain scalar or a block
/// scalar is text, and cannot hide what follows it. (A legitimately
/// multi-line quoted scalar has its later lines' brackets counted, which
/// only a pathological one would notice.)
pub fn check_nesting(text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    for (number, line) in text.lines().enumerate() {
        let mut quote: Option<char> = None;
        let mut escaped = false;
        // The last character outside a quoted scalar that was not a space,
        // and the character just before this one.
        let mut last_mark: Option<char> = None;
        let mut previous: Option<char> = None;
        for c in line.chars() {
            if let Some(q) = quote {
                if escaped {
                    escaped = false;
                } else if q == '"' && c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                    last_mark = Some(c);
                }
                previous = Some(c);
                continue;
            }
            match c {
                '#' if previous.is_none_or(char::is_whitespace) => break,
                '"' | '\''
                    if last_mark.is_none_or(|m| "[{,:-?".contains(m))
                        && previous.is_none_or(|p| p.is_whitespace() || "[{,".contains(p)) =>
                {
                    quote = Some(c);
                }
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_YAML_NESTING {
                        return Err(format!(
                            "line {}: nested deeper than {MAX_YAML_NESTING} levels of [ and {{",
                            number + 1
                        ));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if !c.is_whitespace() {
                last_mark = Some(c);
            }
            previous = Some(c);
        }
    }
    Ok(())
}

/// Parses every document of `text` (named `source` in errors).
pub fn parse_str(text: &str, source: &str) -> Result<Vec<Loaded>, ManifestError> {
    check_nesting(text).map_err(|e| ManifestError::new(source, format!("not accepted: {e}")))?;
    let mut documents = Vec::new();
    for document in yaml_serde::Deserializer::from_str(text) {
        let value = yaml_serde::Value::deserialize(document)
            .map_err(|e| ManifestError::new(source, format!("not valid YAML: {e}")))?;
        documents.push(value);
    }
    let documents: Vec<yaml_serde::Value> =
        documents.into_iter().filter(|v| !v.is_null()).collect();
    let several = documents.len() > 1;
    let mut loaded = Vec::new();
    for (i, value) in documents.into_iter().enumerate() {
        let source = if several {
            format!("{source} (document {})", i + 1)
        } else {
            source.to_owned()
        };
        let raw = serde_json::to_value(&value)
            .map_err(|e| ManifestError::new(&source, format!("not expressible as JSON: {e}")))?;
        let mut object = parse_object(value, &source)?;
        validate(&object).map_err(|(path, message)| ManifestError {
            file: source.clone(),
            object: format!("{} {}: ", object.kind(), object.metadata().name),
            path: if path.is_empty() {
                path
            } else {
                format!("{path}: ")
            },
            message,
        })?;
        apply_defaults(&mut object);
        // As the API server does: stringData is a write-only convenience,
        // merged into data (winning over it) and never stored or shown.
        if let Object::Secret(secret) = &mut object {
            use base64::Engine as _;
            for (key, value) in std::mem::take(&mut secret.string_data) {
                let encoded = base64::engine::general_purpose::STANDARD.encode(value);
                secret.data.insert(key, encoded);
            }
        }
        loaded.push(Loaded {
            object,
            source,
            raw,
        });
    }
    Ok(loaded)
}

/// Kubernetes' defaults for fields that have them, set as kube-apiserver
/// sets them, so what is stored (and `get -o yaml` shows) is what a cluster
/// shows. Pod specs are the exception: stored canonical, their defaults
/// shown (see `spec::defaults`), so a default never changes a template's
/// hash.
fn apply_defaults(object: &mut Object) {
    use crate::objects::{IntOrString, StrategyType};
    match object {
        Object::Pod(pod) => super::defaults::canonical(&mut pod.spec),
        Object::ReplicaSet(rs) => super::defaults::canonical(&mut rs.spec.template.spec),
        _ => {}
    }
    match object {
        Object::Deployment(deployment) => {
            super::defaults::canonical(&mut deployment.spec.template.spec);
            let strategy = &mut deployment.spec.strategy;
            if strategy.kind == StrategyType::RollingUpdate {
                let rolling = strategy.rolling_update.get_or_insert_with(Default::default);
                let quarter = || IntOrString::String("25%".into());
                rolling.max_surge.get_or_insert_with(quarter);
                rolling.max_unavailable.get_or_insert_with(quarter);
            }
        }
        Object::Service(service) => {
            for port in &mut service.spec.ports {
                port.protocol.get_or_insert_with(|| "TCP".into());
            }
        }
        Object::Job(job) => default_job(&mut job.spec),
        Object::HorizontalPodAutoscaler(hpa) => hpa.spec.default_fields(),
        Object::StatefulSet(set) => {
            use crate::objects::{
                ClaimRetentionPolicy, PodManagementPolicy, RetentionPolicy,
                StatefulSetRollingUpdate, StatefulSetUpdateStrategy, StatefulSetUpdateType,
            };
            super::defaults::canonical(&mut set.spec.template.spec);
            let spec = &mut set.spec;
            spec.pod_management_policy
                .get_or_insert(PodManagementPolicy::OrderedReady);
            let strategy = spec
                .update_strategy
                .get_or_insert_with(StatefulSetUpdateStrategy::default);
            let kind = *strategy
                .kind
                .get_or_insert(StatefulSetUpdateType::RollingUpdate);
            if kind == StatefulSetUpdateType::RollingUpdate {
                strategy
                    .rolling_update
                    .get_or_insert_with(StatefulSetRollingUpdate::default)
                    .partition
                    .get_or_insert(0);
            }
            spec.revision_history_limit.get_or_insert(10);
            let retention = spec
                .persistent_volume_claim_retention_policy
                .get_or_insert_with(ClaimRetentionPolicy::default);
            retention
                .when_deleted
                .get_or_insert(RetentionPolicy::Retain);
            retention.when_scaled.get_or_insert(RetentionPolicy::Retain);
            for claim in &mut spec.volume_claim_templates {
                claim
                    .spec
                    .volume_mode
                    .get_or_insert_with(|| "Filesystem".into());
            }
        }
        Object::PersistentVolumeClaim(claim) => {
            // As the DefaultStorageClass admission plugin: no class is the
            // default one.
            claim
                .spec
                .storage_class_name
                .get_or_insert_with(|| crate::objects::LOCAL_PATH.into());
            claim
                .spec
                .volume_mode
                .get_or_insert_with(|| "Filesystem".into());
        }
        Object::PersistentVolume(volume) => {
            use crate::objects::ReclaimPolicy;
            volume
                .spec
                .persistent_volume_reclaim_policy
                .get_or_insert(ReclaimPolicy::Retain);
            volume
                .spec
                .volume_mode
                .get_or_insert_with(|| "Filesystem".into());
        }
        Object::CronJob(cron) => {
            use crate::objects::ConcurrencyPolicy;
            default_job(&mut cron.spec.job_template.spec);
            let spec = &mut cron.spec;
            spec.concurrency_policy
                .get_or_insert(ConcurrencyPolicy::Allow);
            spec.suspend.get_or_insert(false);
            spec.successful_jobs_history_limit.get_or_insert(3);
            spec.failed_jobs_history_limit.get_or_insert(1);
        }
        _ => {}
    }
}

/// Kubernetes' defaults of a job's spec (a Job's or a CronJob's template).
fn default_job(spec: &mut crate::objects::JobSpec) {
    use crate::objects::CompletionMode;
    super::defaults::canonical(&mut spec.template.spec);
    {
        // Neither given: one pod, once. Parallelism alone: a work queue.
        if spec.completions.is_none() && spec.parallelism.is_none() {
            spec.completions = Some(1);
        }
        spec.parallelism.get_or_insert(1);
        spec.completion_mode
            .get_or_insert(CompletionMode::NonIndexed);
        spec.backoff_limit.get_or_insert(6);
        spec.suspend.get_or_insert(false);
        spec.pod_replacement_policy
            .get_or_insert_with(|| "TerminatingOrFailed".into());
    }
}

fn parse_object(value: yaml_serde::Value, source: &str) -> Result<Object, ManifestError> {
    let yaml_serde::Value::Mapping(mut mapping) = value else {
        return Err(ManifestError::new(
            source,
            "a manifest must be a mapping with apiVersion and kind",
        ));
    };
    let mut take = |key: &str| {
        mapping
            .remove(key)
            .and_then(|v| v.as_str().map(str::to_owned))
    };
    let api_version =
        take("apiVersion").ok_or_else(|| ManifestError::new(source, "apiVersion is missing"))?;
    let kind = take("kind").ok_or_else(|| ManifestError::new(source, "kind is missing"))?;
    let name = mapping
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("")
        .to_owned();
    let Some(known_kind) = Kind::parse(&kind).filter(|k| k.api_version() == api_version) else {
        let known: Vec<String> = Kind::ALL
            .iter()
            .map(|k| format!("{} {k}", k.api_version()))
            .collect();
        return Err(ManifestError::new(
            source,
            format!(
                "{api_version} {kind} is not a kind berth supports (it knows {})",
                known.join(", ")
            ),
        ));
    };
    let value = yaml_serde::Value::Mapping(mapping);
    let typed = |e: serde_path_to_error::Error<yaml_serde::Error>| {
        let path = e.path().to_string();
        ManifestError {
            file: source.to_owned(),
            object: format!("{kind} {name}: "),
            path: if path == "." {
                String::new()
            } else {
                format!("{path}: ")
            },
            message: e.into_inner().to_string(),
        }
    };
    Ok(match known_kind {
        Kind::Namespace => {
            Object::Namespace(serde_path_to_error::deserialize(value).map_err(typed)?)
        }
        Kind::ConfigMap => {
            Object::ConfigMap(serde_path_to_error::deserialize(value).map_err(typed)?)
        }
        Kind::Secret => Object::Secret(serde_path_to_error::deserialize(value).map_err(typed)?),
        Kind::Pod => Object::Pod(serde_path_to_error::deserialize(value).map_err(typed)?),
        Kind::Deployment => {
            Object::Deployment(serde_path_to_error::deserialize(value).map_err(typed)?)
        }
        Kind::ReplicaSet => {
            Object::ReplicaSet(serde_path_to_error::deserialize(value).map_err(typed)?)
        }
        Kind::Service => Object::Service(serde_path_to_error::deserialize(value).map_err(typed)?),
        Kind::Job => Object::Job(serde_path_to_error::deserialize(value).map_err(typed)?),
        Kind::CronJob => Object::CronJob(serde_path_to_error::deserialize(value).map_err(typed)?),
        Kind::Ingress => Object::Ingress(serde_path_to_error::deserialize(value).map_err(typed)?),
        Kind::PersistentVolumeClaim => {
            Object::PersistentVolumeClaim(serde_path_to_error::deserialize(value).map_err(typed)?)
        }
        Kind::PersistentVolume => {
            Object::PersistentVolume(serde_path_to_error::deserialize(value).map_err(typed)?)
        }
        Kind::StatefulSet => {
            Object::StatefulSet(serde_path_to_error::deserialize(value).map_err(typed)?)
        }
        Kind::HorizontalPodAutoscaler => {
            Object::HorizontalPodAutoscaler(serde_path_to_error::deserialize(value).map_err(typed)?)
        }
        Kind::NetworkPolicy => {
            Object::NetworkPolicy(serde_path_to_error::deserialize(value).map_err(typed)?)
        }
    })
}

/// A failed check: (field path, message).
type Invalid = (String, String);

fn invalid(path: impl Into<String>, message: impl Into<String>) -> Invalid {
    (path.into(), message.into())
}

/// RFC 1123 label: lowercase alphanumerics and `-`, at most 63, starting
/// and ending alphanumeric.
pub fn is_dns_label(s: &str) -> bool {
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| ok(b) || b == b'-')
        && ok(s.as_bytes()[0])
        && ok(s.as_bytes()[s.len() - 1])
}

/// RFC 1123 subdomain: labels joined by `.`, at most 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_label_value(v: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric();
    v.is_empty()
        || (v.len() <= 63
            && v.bytes().all(|b| ok(b) || matches!(b, b'-' | b'_' | b'.'))
            && ok(v.as_bytes()[0])
            && ok(v.as_bytes()[v.len() - 1]))
}

fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

fn validate_meta(meta: &ObjectMeta, labels_path: &str, named: bool) -> Result<(), Invalid> {
    if named {
        if meta.name.is_empty() {
            return Err(invalid("metadata.name", "a name is required"));
        }
        if !is_dns_subdomain(&meta.name) {
            return Err(invalid(
                "metadata.name",
                format!(
                    "{:?} must be lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit",
                    meta.name
                ),
            ));
        }
    }
    if let Some(ns) = &meta.namespace
        && !is_dns_label(ns)
    {
        return Err(invalid(
            "metadata.namespace",
            format!("{ns:?} is not a valid namespace name"),
        ));
    }
    for (k, v) in &meta.labels {
        if !is_label_key(k) {
            return Err(invalid(
                format!("{labels_path}.labels"),
                format!("{k:?} is not a valid label key"),
            ));
        }
        if !is_label_value(v) {
            return Err(invalid(
                format!("{labels_path}.labels.{k}"),
                format!("{v:?} is not a valid label value"),
            ));
        }
    }
    super::objects::max_concurrency(meta).map_err(|e| {
        invalid(
            format!(
                "{labels_path}.annotations.{}",
                super::objects::CONCURRENCY_ANNOTATION
            ),
            e,
        )
    })?;
    let refused = |annotation: &str| {
        let field = format!("{labels_path}.annotations.{annotation}");
        move |e: String| invalid(field, e)
    };
    let tcp = super::objects::TCP_ANNOTATION;
    super::objects::grants::<berth_runtime::TcpGrant>(meta, tcp).map_err(refused(tcp))?;
    super::objects::grants::<berth_runtime::OutboundRule>(meta, OUTBOUND_ANNOTATION)
        .map_err(refused(OUTBOUND_ANNOTATION))?;
    Ok(())
}

fn validate(object: &Object) -> Result<(), Invalid> {
    validate_meta(object.metadata(), "metadata", true)?;
    match object {
        Object::Namespace(_) => Ok(()),
        Object::ConfigMap(cm) => {
            for key in cm.data.keys().chain(cm.binary_data.keys()) {
                check_data_key("data", key)?;
            }
            for (key, value) in &cm.binary_data {
                base64_decode(value)
                    .ok_or_else(|| invalid(format!("binaryData.{key}"), "not valid base64"))?;
            }
            Ok(())
        }
        Object::Secret(secret) => {
            for (key, value) in &secret.data {
                check_data_key("data", key)?;
                base64_decode(value)
                    .ok_or_else(|| invalid(format!("data.{key}"), "not valid base64"))?;
            }
            for key in secret.string_data.keys() {
                check_data_key("stringData", key)?;
            }
            Ok(())
        }
        Object::Pod(pod) => validate_pod_spec(&pod.spec, "spec"),
        Object::ReplicaSet(rs) => {
            let spec = &rs.spec;
            validate_meta(&spec.template.metadata, "spec.template.metadata", false)?;
            if !spec.selector.matches(&spec.template.metadata.labels) {
                return Err(invalid(
                    "spec.selector",
                    "does not match spec.template.metadata.labels",
                ));
            }
            validate_pod_spec(&spec.template.spec, "spec.template.spec")
        }
        Object::Deployment(d) => {
            let spec = &d.spec;
            validate_replicated(&spec.selector, &spec.template, "deployment")?;
            for (field, value) in [
                (
                    "maxSurge",
                    spec.strategy
                        .rolling_update
                        .as_ref()
                        .and_then(|r| r.max_surge.as_ref()),
                ),
                (
                    "maxUnavailable",
                    spec.strategy
                        .rolling_update
                        .as_ref()
                        .and_then(|r| r.max_unavailable.as_ref()),
                ),
            ] {
                if let Some(v) = value
                    && v.scaled(100, false).is_none_or(|n| n < 0)
                {
                    return Err(invalid(
                        format!("spec.strategy.rollingUpdate.{field}"),
                        format!("{v:?} must be a non-negative number or percentage"),
                    ));
                }
            }
            validate_pod_spec(&spec.template.spec, "spec.template.spec")
        }
        Object::Job(job) => validate_job(&job.metadata, &job.spec, "spec"),
        Object::Ingress(ingress) => validate_ingress(&ingress.spec),
        Object::NetworkPolicy(policy) => validate_network_policy(&policy.spec),
        Object::HorizontalPodAutoscaler(hpa) => hpa.spec.check(),
        Object::StatefulSet(set) => {
            let spec = &set.spec;
            // Its pods' names, `<set>-<ordinal>`, are label values.
            if set.metadata.name.len() > 52 {
                return Err(invalid(
                    "metadata.name",
                    "must be no more than 52 characters (its pods are named after it)",
                ));
            }
            validate_replicated(&spec.selector, &spec.template, "stateful set")?;
            let start = spec.ordinals.as_ref().map_or(0, |o| o.start);
            if u64::from(start) + u64::from(spec.replicas) > i32::MAX as u64 {
                return Err(invalid(
                    "spec.replicas",
                    "replicas and ordinals.start together must stay within 2147483647",
                ));
            }
            for (i, claim) in spec.volume_claim_templates.iter().enumerate() {
                if !is_dns_label(&claim.metadata.name) {
                    return Err(invalid(
                        format!("spec.volumeClaimTemplates[{i}].metadata.name"),
                        format!("{:?} is not a valid name", claim.metadata.name),
                    ));
                }
                if claim.spec.access_modes.is_empty() {
                    return Err(invalid(
                        format!("spec.volumeClaimTemplates[{i}].spec.accessModes"),
                        "at least 1 access mode is required",
                    ));
                }
            }
            // The claim templates are volumes of every pod.
            let mut pod = spec.template.spec.clone();
            for claim in &spec.volume_claim_templates {
                pod.volumes.retain(|v| v.name != claim.metadata.name);
                pod.volumes.push(super::objects::Volume {
                    name: claim.metadata.name.clone(),
                    config_map: None,
                    secret: None,
                    empty_dir: None,
                    host_path: None,
                    image: None,
                    persistent_volume_claim: Some(super::objects::ClaimVolume {
                        claim_name: claim.metadata.name.clone(),
                        read_only: false,
                    }),
                });
            }
            validate_pod_spec(&pod, "spec.template.spec")
        }
        Object::PersistentVolumeClaim(claim) => {
            let spec = &claim.spec;
            if spec.access_modes.is_empty() {
                return Err(invalid(
                    "spec.accessModes",
                    "at least 1 access mode is required",
                ));
            }
            if spec.resources.requests.storage.is_none() {
                return Err(invalid(
                    "spec.resources.requests.storage",
                    "a size is required",
                ));
            }
            if spec
                .volume_mode
                .as_deref()
                .is_some_and(|m| m != "Filesystem")
            {
                return Err(invalid(
                    "spec.volumeMode",
                    "only Filesystem volumes are supported",
                ));
            }
            Ok(())
        }
        Object::PersistentVolume(volume) => {
            let spec = &volume.spec;
            match (&spec.host_path, &spec.local) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(invalid(
                        "spec",
                        "a volume needs exactly one of hostPath or local (the sources berth has)",
                    ));
                }
            }
            if spec.path().is_some_and(|p| {
                !p.starts_with('/') || p.split('/').any(|part| part == "." || part == "..")
            }) {
                return Err(invalid(
                    "spec.hostPath.path",
                    "must be an absolute path without . or .. in it",
                ));
            }
            if spec.capacity.storage.is_none() {
                return Err(invalid("spec.capacity.storage", "a size is required"));
            }
            if spec.access_modes.is_empty() {
                return Err(invalid(
                    "spec.accessModes",
                    "at least 1 access mode is required",
                ));
            }
            Ok(())
        }
        Object::CronJob(cron) => {
            // Its jobs are named NAME-TIME (eleven more characters), and
            // job names are label values.
            if cron.metadata.name.len() > 52 {
                return Err(invalid(
                    "metadata.name",
                    "must be no more than 52 characters (its jobs are named after it)",
                ));
            }
            super::schedule::Schedule::parse(&cron.spec.schedule, cron.spec.time_zone.as_deref())
                .map_err(|(field, message)| invalid(field, message))?;
            let template = &cron.spec.job_template;
            validate_meta(&template.metadata, "spec.jobTemplate.metadata", false)?;
            validate_job(&template.metadata, &template.spec, "spec.jobTemplate.spec")
        }
        Object::Service(svc) => {
            if let Some(ip) = &svc.spec.cluster_ip
                && !ip.is_empty()
                && ip != "None"
                && ip.parse::<std::net::Ipv4Addr>().is_err()
            {
                return Err(invalid(
                    "spec.clusterIP",
                    format!(
                        "{ip:?} is not an IPv4 address (leave it out for one to be allocated, \
                         or say None for a headless service)"
                    ),
                ));
            }
            if !svc.spec.cluster_ips.is_empty()
                && (svc.spec.cluster_ips.len() != 1
                    || svc.spec.cluster_ip.as_ref() != svc.spec.cluster_ips.first())
            {
                return Err(invalid(
                    "spec.clusterIPs",
                    "must be [clusterIP] (berth's services have one IP family, IPv4)",
                ));
            }
            if svc.spec.ports.is_empty() {
                return Err(invalid("spec.ports", "a service needs at least one port"));
            }
            for (i, port) in svc.spec.ports.iter().enumerate() {
                let path = format!("spec.ports[{i}]");
                if port.port == 0 {
                    return Err(invalid(format!("{path}.port"), "must be 1–65535"));
                }
                if let Some(p) = &port.protocol
                    && p != "TCP"
                {
                    return Err(invalid(
                        format!("{path}.protocol"),
                        format!(
                            "{p} is not supported: berth proxies TCP only (HTTP services request \
                             by request, others at layer 4)"
                        ),
                    ));
                }
                if port.node_port.is_some() && svc.spec.kind == ServiceType::ClusterIP {
                    return Err(invalid(
                        format!("{path}.nodePort"),
                        "only NodePort and LoadBalancer services have one",
                    ));
                }
                if svc.spec.ports.len() > 1 && port.name.is_none() {
                    return Err(invalid(
                        format!("{path}.name"),
                        "ports of a service with several must be named",
                    ));
                }
            }
            Ok(())
        }
    }
}

/// What an update may not change of what is stored, as kube-apiserver
/// refuses it: a Job's selector, pod template, completions and mode (its
/// parallelism, suspension and deadlines may change). A job written back
/// without the selector and labels its controller gave it keeps them.
/// The field that may not change, and why, if any.
pub fn check_update(old: &Object, new: &mut Object) -> Result<(), (String, String)> {
    let immutable = |field: &str| Err((field.to_owned(), "field is immutable".to_owned()));
    match (old, &mut *new) {
        // A claim keeps its volume: written back without it (a replace of
        // its manifest), it would otherwise be given a new, empty one. Only
        // its size may change, as in Kubernetes.
        (Object::PersistentVolumeClaim(old), Object::PersistentVolumeClaim(new)) => {
            if new.spec.volume_name.is_none() {
                new.spec.volume_name.clone_from(&old.spec.volume_name);
            }
            let mut same = new.spec.clone();
            same.resources = old.spec.resources.clone();
            if same != old.spec {
                return Err((
                    "spec".to_owned(),
                    "spec is immutable after creation except resources.requests".to_owned(),
                ));
            }
            return Ok(());
        }
        // A volume keeps its claim and its place on disk.
        (Object::PersistentVolume(old), Object::PersistentVolume(new)) => {
            if new.spec.claim_ref.is_none() {
                new.spec.claim_ref.clone_from(&old.spec.claim_ref);
            }
            if new.spec.host_path != old.spec.host_path || new.spec.local != old.spec.local {
                return immutable("spec.persistentvolumesource");
            }
            return Ok(());
        }
        _ => {}
    }
    let (Object::Job(old), Object::Job(new)) = (old, new) else {
        return Ok(());
    };
    if new.spec.selector.is_none()
        && let Some(selector) = &old.spec.selector
    {
        new.spec.selector = Some(selector.clone());
        for (key, value) in &old.spec.template.metadata.labels {
            new.spec
                .template
                .metadata
                .labels
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
    }
    if old.spec.selector.is_some() && new.spec.selector != old.spec.selector {
        return immutable("spec.selector");
    }
    if new.spec.template != old.spec.template {
        return immutable("spec.template");
    }
    if new.spec.completions != old.spec.completions {
        return immutable("spec.completions");
    }
    if new.spec.completion_mode != old.spec.completion_mode {
        return immutable("spec.completionMode");
    }
    Ok(())
}

/// What a Deployment's and a StatefulSet's (`what`) selector and template
/// must be: a selector that finds the template's pods, which run always.
fn validate_replicated(
    selector: &super::objects::LabelSelector,
    template: &super::objects::PodTemplateSpec,
    what: &str,
) -> Result<(), Invalid> {
    if selector.match_labels.is_empty() && selector.match_expressions.is_empty() {
        return Err(invalid("spec.selector", "a selector is required"));
    }
    validate_meta(&template.metadata, "spec.template.metadata", false)?;
    if !selector.matches(&template.metadata.labels) {
        return Err(invalid(
            "spec.selector",
            format!(
                "does not match spec.template.metadata.labels: the {what} would never find its pods"
            ),
        ));
    }
    if template.spec.restart_policy != super::objects::RestartPolicy::Always {
        return Err(invalid(
            "spec.template.spec.restartPolicy",
            format!("a {what}'s pods must have restartPolicy Always"),
        ));
    }
    Ok(())
}

/// What kube-apiserver checks of a NetworkPolicy: selectors that can
/// match, peers that say one thing, addresses and ports that parse.
fn validate_network_policy(spec: &super::objects::NetworkPolicySpec) -> Result<(), Invalid> {
    use super::objects::{NetworkPolicyPeer, NetworkPolicyPort};
    validate_selector(&spec.pod_selector, "spec.podSelector")?;
    if let Some(types) = &spec.policy_types
        && (types.len() > 2 || (types.len() == 2 && types[0] == types[1]))
    {
        return Err(invalid(
            "spec.policyTypes",
            "may list Ingress and Egress once each",
        ));
    }
    let peer = |p: &NetworkPolicyPeer, at: &str| -> Result<(), Invalid> {
        match (&p.pod_selector, &p.namespace_selector, &p.ip_block) {
            (None, None, None) => {
                return Err(invalid(
                    at,
                    "must give a podSelector, a namespaceSelector or an ipBlock",
                ));
            }
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err(invalid(
                    at,
                    "an ipBlock may not be given with a podSelector or a namespaceSelector",
                ));
            }
            _ => {}
        }
        if let Some(s) = &p.pod_selector {
            validate_selector(s, &format!("{at}.podSelector"))?;
        }
        if let Some(s) = &p.namespace_selector {
            validate_selector(s, &format!("{at}.namespaceSelector"))?;
        }
        if let Some(block) = &p.ip_block {
            let range = |text: &str, at: String| {
                text.parse::<ipnet::IpNet>().map_err(|_| {
                    invalid(
                        at,
                        format!("{text:?} is not an address range (ADDRESS/BITS)"),
                    )
                })
            };
            let cidr = range(&block.cidr, format!("{at}.ipBlock.cidr"))?;
            for (i, except) in block.except.iter().enumerate() {
                let at = format!("{at}.ipBlock.except[{i}]");
                let inner = range(except, at.clone())?;
                if !cidr.contains(&inner) || inner.prefix_len() <= cidr.prefix_len() {
                    return Err(invalid(
                        at,
                        format!("{except} is not strictly inside the cidr {}", block.cidr),
                    ));
                }
            }
        }
        Ok(())
    };
    let port = |p: &NetworkPolicyPort, at: &str| -> Result<(), Invalid> {
        if let Some(protocol) = &p.protocol
            && !matches!(protocol.as_str(), "TCP" | "UDP" | "SCTP")
        {
            return Err(invalid(
                format!("{at}.protocol"),
                format!("{protocol:?} is not TCP, UDP or SCTP"),
            ));
        }
        let start = match &p.port {
            Some(super::objects::IntOrString::Int(n)) if (1..=65535).contains(n) => Some(*n),
            Some(super::objects::IntOrString::String(name)) if is_port_name(name) => None,
            Some(other) => {
                return Err(invalid(
                    format!("{at}.port"),
                    format!("{other:?} is neither a port number from 1 to 65535 nor a port name"),
                ));
            }
            None => None,
        };
        if let Some(end) = p.end_port {
            let Some(start) = start else {
                return Err(invalid(
                    format!("{at}.endPort"),
                    "may only be given with a numbered port",
                ));
            };
            if i64::from(end) < start || end > 65535 {
                return Err(invalid(
                    format!("{at}.endPort"),
                    format!("{end} must be from the port ({start}) to 65535"),
                ));
            }
        }
        Ok(())
    };
    for (i, rule) in spec.ingress.iter().enumerate() {
        for (j, p) in rule.from.iter().enumerate() {
            peer(p, &format!("spec.ingress[{i}].from[{j}]"))?;
        }
        for (j, p) in rule.ports.iter().enumerate() {
            port(p, &format!("spec.ingress[{i}].ports[{j}]"))?;
        }
    }
    for (i, rule) in spec.egress.iter().enumerate() {
        for (j, p) in rule.to.iter().enumerate() {
            peer(p, &format!("spec.egress[{i}].to[{j}]"))?;
        }
        for (j, p) in rule.ports.iter().enumerate() {
            port(p, &format!("spec.egress[{i}].ports[{j}]"))?;
        }
    }
    Ok(())
}

/// A label selector's expressions as kube-apiserver checks them: `In` and
/// `NotIn` need values, `Exists` and `DoesNotExist` take none.
fn validate_selector(selector: &super::objects::LabelSelector, at: &str) -> Result<(), Invalid> {
    use super::objects::SelectorOperator;
    for (i, e) in selector.match_expressions.iter().enumerate() {
        let needs_values = matches!(e.operator, SelectorOperator::In | SelectorOperator::NotIn);
        if needs_values == e.values.is_empty() {
            return Err(invalid(
                format!("{at}.matchExpressions[{i}].values"),
                if needs_values {
                    format!("{:?} needs values", e.operator)
                } else {
                    format!("{:?} takes no values", e.operator)
                },
            ));
        }
    }
    Ok(())
}

/// A port's name as Kubernetes has it (IANA_SVC_NAME): up to 15 lowercase
/// letters, digits and inner single hyphens, with a letter among them.
fn is_port_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

fn validate_ingress(spec: &super::objects::IngressSpec) -> Result<(), Invalid> {
    use super::objects::{IngressBackend, PathType};
    let backend = |b: &IngressBackend, at: &str| -> Result<(), Invalid> {
        let Some(service) = &b.service else {
            return Err(invalid(
                format!("{at}.service"),
                "a backend needs a service (resource backends are not supported)",
            ));
        };
        if !is_dns_label(&service.name) {
            return Err(invalid(
                format!("{at}.service.name"),
                format!("{:?} is not a valid service name", service.name),
            ));
        }
        match (&service.port.name, service.port.number) {
            (Some(_), None) | (None, Some(1..)) => Ok(()),
            (Some(_), Some(_)) => Err(invalid(
                format!("{at}.service.port"),
                "give the port's name or its number, not both",
            )),
            _ => Err(invalid(
                format!("{at}.service.port"),
                "a port name or a number from 1 to 65535 is required",
            )),
        }
    };
    if let Some(b) = &spec.default_backend {
        backend(b, "spec.defaultBackend")?;
    }
    if spec.rules.is_empty() && spec.default_backend.is_none() {
        return Err(invalid(
            "spec",
            "either defaultBackend or rules must be specified",
        ));
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if let Some(host) = &rule.host {
            let name = host.strip_prefix("*.").unwrap_or(host);
            if !is_dns_subdomain(name) || name.parse::<std::net::IpAddr>().is_ok() {
                return Err(invalid(
                    format!("{at}.host"),
                    format!(
                        "{host:?} must be a DNS name (lowercase), or `*.` and one; not an IP address"
                    ),
                ));
            }
        }
        for (j, path) in rule.http.iter().flat_map(|h| &h.paths).enumerate() {
            let at = format!("{at}.http.paths[{j}]");
            let text = path.path.as_deref().unwrap_or("");
            if path.path_type != PathType::ImplementationSpecific && !text.starts_with('/') {
                return Err(invalid(
                    format!("{at}.path"),
                    format!("{text:?} must be an absolute path (starting with /)"),
                ));
            }
            backend(&path.backend, &format!("{at}.backend"))?;
        }
    }
    for (i, tls) in spec.tls.iter().enumerate() {
        if tls
            .secret_name
            .as_deref()
            .is_some_and(|n| !is_dns_subdomain(n))
        {
            return Err(invalid(
                format!("spec.tls[{i}].secretName"),
                "not a valid secret name",
            ));
        }
    }
    Ok(())
}

/// The most pods of one job: its completions and parallelism (and an
/// Indexed job's indexes) are bounded as Kubernetes bounds them.
const MAX_JOB_PODS: u32 = 100_000;

/// A job's spec, at `at` (`spec`, or a CronJob's `spec.jobTemplate.spec`).
fn validate_job(
    meta: &ObjectMeta,
    spec: &super::objects::JobSpec,
    at: &str,
) -> Result<(), Invalid> {
    use super::objects::RestartPolicy;
    // Its name becomes a label value on every pod.
    if meta.name.len() > 63 {
        return Err(invalid(
            "metadata.name",
            "must be no more than 63 characters (it becomes the pods' job-name label)",
        ));
    }
    for (field, value) in [
        ("completions", spec.completions),
        ("parallelism", spec.parallelism),
    ] {
        if value.is_some_and(|n| n > MAX_JOB_PODS) {
            return Err(invalid(
                format!("{at}.{field}"),
                format!("must be no more than {MAX_JOB_PODS}"),
            ));
        }
    }
    if spec.backoff_limit.is_some_and(|n| n > i32::MAX as u32) {
        return Err(invalid(
            format!("{at}.backoffLimit"),
            "must be at most 2147483647",
        ));
    }
    // Kubernetes' bounds: int64 seconds, and an int32 TTL.
    if spec
        .active_deadline_seconds
        .is_some_and(|s| s > i64::MAX as u64)
    {
        return Err(invalid(
            format!("{at}.activeDeadlineSeconds"),
            "must be at most 9223372036854775807",
        ));
    }
    if spec
        .ttl_seconds_after_finished
        .is_some_and(|s| s > i32::MAX as u64)
    {
        return Err(invalid(
            format!("{at}.ttlSecondsAfterFinished"),
            "must be at most 2147483647",
        ));
    }
    if spec.active_deadline_seconds == Some(0) {
        return Err(invalid(
            format!("{at}.activeDeadlineSeconds"),
            "must be greater than zero",
        ));
    }
    if spec.indexed() && spec.completions.is_none() {
        return Err(invalid(
            format!("{at}.completions"),
            "an Indexed job needs completions (its pods are indexed 0 to completions − 1)",
        ));
    }
    if let Some(policy) = &spec.pod_replacement_policy
        && !matches!(policy.as_str(), "TerminatingOrFailed" | "Failed")
    {
        return Err(invalid(
            format!("{at}.podReplacementPolicy"),
            format!("{policy:?}: supported values are \"TerminatingOrFailed\" and \"Failed\""),
        ));
    }
    validate_meta(
        &spec.template.metadata,
        &format!("{at}.template.metadata"),
        false,
    )?;
    if let Some(selector) = &spec.selector
        && !selector.matches(&spec.template.metadata.labels)
    {
        return Err(invalid(
            format!("{at}.selector"),
            "does not match spec.template.metadata.labels: the job would never find its pods",
        ));
    }
    if spec.template.spec.restart_policy == RestartPolicy::Always {
        return Err(invalid(
            format!("{at}.template.spec.restartPolicy"),
            "a job's pods run to completion: restartPolicy must be OnFailure or Never",
        ));
    }
    validate_pod_spec(&spec.template.spec, &format!("{at}.template.spec"))
}

fn check_data_key(field: &str, key: &str) -> Result<(), Invalid> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!("{field}.{key}"),
            "keys must be letters, digits, `-`, `_` and `.`",
        ))
    }
}

pub fn base64_decode(value: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()
}

fn validate_pod_spec(spec: &PodSpec, path: &str) -> Result<(), Invalid> {
    if spec.containers.is_empty() {
        return Err(invalid(
            format!("{path}.containers"),
            "a pod needs at least one container",
        ));
    }
    if let Some(class) = &spec.runtime_class_name
        && class != "wasm"
        && class != "linux"
    {
        return Err(invalid(
            format!("{path}.runtimeClassName"),
            format!("{class:?}: berth has the runtime classes wasm and linux"),
        ));
    }
    if spec.host_network && spec.host_users == Some(false) {
        return Err(invalid(
            format!("{path}.hostUsers"),
            "false cannot go with hostNetwork: true (the host's network belongs to the host's users)",
        ));
    }
    validate_pod_extras(spec, path)?;
    let mut volume_names = std::collections::BTreeSet::new();
    for (i, volume) in spec.volumes.iter().enumerate() {
        let vpath = format!("{path}.volumes[{i}]");
        if !is_dns_label(&volume.name) {
            return Err(invalid(
                format!("{vpath}.name"),
                format!("{:?} is not a valid volume name", volume.name),
            ));
        }
        if !volume_names.insert(volume.name.as_str()) {
            return Err(invalid(
                format!("{vpath}.name"),
                format!("{} is used twice", volume.name),
            ));
        }
        let sources = [
            volume.config_map.is_some(),
            volume.secret.is_some(),
            volume.empty_dir.is_some(),
            volume.host_path.is_some(),
            volume.image.is_some(),
            volume.persistent_volume_claim.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(invalid(
                vpath,
                "exactly one of configMap, secret, emptyDir, hostPath, image or \
                 persistentVolumeClaim is required",
            ));
        }
        let projected = [
            volume
                .config_map
                .as_ref()
                .map(|c| ("configMap", &c.items, c.default_mode)),
            volume
                .secret
                .as_ref()
                .map(|c| ("secret", &c.items, c.default_mode)),
        ];
        for (source, items, default_mode) in projected.into_iter().flatten() {
            check_mode(default_mode, &format!("{vpath}.{source}.defaultMode"))?;
            for (j, item) in items.iter().enumerate() {
                let ipath = format!("{vpath}.{source}.items[{j}]");
                check_mode(item.mode, &format!("{ipath}.mode"))?;
                let relative = std::path::Path::new(&item.path);
                if item.path.is_empty()
                    || relative.is_absolute()
                    || relative
                        .components()
                        .any(|c| !matches!(c, std::path::Component::Normal(_)))
                {
                    return Err(invalid(
                        format!("{ipath}.path"),
                        format!(
                            "{:?} must be a relative path without `..` or `.`",
                            item.path
                        ),
                    ));
                }
            }
        }
        if let Some(medium) = volume.empty_dir.as_ref().and_then(|e| e.medium.as_deref())
            && !medium.is_empty()
            && medium != "Memory"
        {
            return Err(invalid(
                format!("{vpath}.emptyDir.medium"),
                format!("{medium:?}: berth has the host's disk (\"\") and Memory"),
            ));
        }
        if let Some(host) = &volume.host_path
            && !host.path.starts_with('/')
        {
            return Err(invalid(
                format!("{vpath}.hostPath.path"),
                "must be an absolute path",
            ));
        }
    }
    // Init containers first, as they start: one list of names for both.
    let listed = spec
        .init_containers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("{path}.initContainers[{i}]"), c, true))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("{path}.containers[{i}]"), c, false)),
        );
    let mut names = std::collections::BTreeSet::new();
    // The pod's containers share one network: a port is one container's,
    // among those that run together (the app's and the sidecars; an init
    // container runs alone).
    let mut ports: std::collections::HashMap<(u16, &str), &str> = Default::default();
    for (cpath, container, init) in listed {
        if !names.insert(container.name.as_str()) {
            return Err(invalid(
                format!("{cpath}.name"),
                format!("{} is used twice", container.name),
            ));
        }
        validate_container(container, &cpath, &volume_names)?;
        if !init && container.restart_policy.is_some() {
            return Err(invalid(
                format!("{cpath}.restartPolicy"),
                "may not be set for non-init containers (the pod's restartPolicy is theirs)",
            ));
        }
        if init && !container.is_sidecar() {
            let probes = [
                ("readinessProbe", &container.readiness_probe),
                ("livenessProbe", &container.liveness_probe),
                ("startupProbe", &container.startup_probe),
            ];
            if let Some((probe, _)) = probes.iter().find(|(_, p)| p.is_some()) {
                return Err(invalid(
                    format!("{cpath}.{probe}"),
                    "may not be set for init containers without restartPolicy: Always \
                     (they run to completion; a sidecar may be probed)",
                ));
            }
            continue;
        }
        for (j, port) in container.ports.iter().enumerate() {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            if let Some(other) = ports.insert((port.container_port, protocol), &container.name)
                && other != container.name
            {
                return Err(invalid(
                    format!("{cpath}.ports[{j}].containerPort"),
                    format!(
                        "{}/{protocol} is declared by containers {other} and {}: the containers \
                         of a pod share its network, so a port is one container's",
                        port.container_port, container.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The fields charts carry that berth gives a meaning to (see
/// `spec::placement` and `spec::security`): refused only where that
/// meaning cannot hold.
fn validate_pod_extras(spec: &PodSpec, path: &str) -> Result<(), Invalid> {
    for (key, value) in &spec.node_selector {
        if !is_label_key(key) || !is_label_value(value) {
            return Err(invalid(
                format!("{path}.nodeSelector"),
                format!("{key}={value} is not a valid label"),
            ));
        }
    }
    if let Some(affinity) = &spec.affinity {
        super::placement::check_affinity(affinity, &format!("{path}.affinity"))?;
    }
    if let Some(context) = &spec.security_context {
        super::security::check_pod(context, &format!("{path}.securityContext"))?;
    }
    for (field, name) in [
        ("serviceAccountName", &spec.service_account_name),
        ("serviceAccount", &spec.service_account),
    ] {
        if let Some(name) = name
            && !is_dns_subdomain(name)
        {
            return Err(invalid(
                format!("{path}.{field}"),
                format!("{name:?} is not a valid service account name"),
            ));
        }
    }
    if let (Some(a), Some(b)) = (&spec.service_account_name, &spec.service_account)
        && a != b
    {
        return Err(invalid(
            format!("{path}.serviceAccount"),
            format!("{b:?} is not serviceAccountName {a:?} (it is its deprecated spelling)"),
        ));
    }
    for (i, secret) in spec.image_pull_secrets.iter().enumerate() {
        if !is_dns_subdomain(&secret.name) {
            return Err(invalid(
                format!("{path}.imagePullSecrets[{i}].name"),
                format!("{:?} is not a valid secret name", secret.name),
            ));
        }
    }
    check_dns(spec, path)?;
    if let Some(scheduler) = &spec.scheduler_name
        && scheduler != DEFAULT_SCHEDULER
    {
        return Err(invalid(
            format!("{path}.schedulerName"),
            format!("{scheduler:?}: berth has one scheduler, {DEFAULT_SCHEDULER}"),
        ));
    }
    Ok(())
}

/// `dnsPolicy` and `dnsConfig`, as kube-apiserver checks them.
fn check_dns(spec: &PodSpec, path: &str) -> Result<(), Invalid> {
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    if !["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"].contains(&policy) {
        return Err(invalid(
            format!("{path}.dnsPolicy"),
            format!(
                "{policy:?}: supported values: \"ClusterFirst\", \"ClusterFirstWithHostNet\", \
                 \"Default\", \"None\""
            ),
        ));
    }
    let config = spec.dns_config.clone().unwrap_or_default();
    if policy == "None" && config.nameservers.is_empty() {
        return Err(invalid(
            format!("{path}.dnsConfig.nameservers"),
            "must provide at least one DNS nameserver when dnsPolicy is None",
        ));
    }
    if config.nameservers.len() > 3 {
        return Err(invalid(
            format!("{path}.dnsConfig.nameservers"),
            format!(
                "must not have more than 3 nameservers: {:?}",
                config.nameservers
            ),
        ));
    }
    for (i, server) in config.nameservers.iter().enumerate() {
        if server.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(
                format!("{path}.dnsConfig.nameservers[{i}]"),
                format!("{server:?}: must be a valid IP address"),
            ));
        }
    }
    if config.searches.len() > 32 {
        return Err(invalid(
            format!("{path}.dnsConfig.searches"),
            "must not have more than 32 search paths",
        ));
    }
    if config.searches.iter().map(|s| s.len() + 1).sum::<usize>() > 2048 {
        return Err(invalid(
            format!("{path}.dnsConfig.searches"),
            "must not have more than 2048 characters (including spaces) in the search list",
        ));
    }
    for (i, search) in config.searches.iter().enumerate() {
        let name = search.strip_suffix('.').unwrap_or(search);
        if !is_dns_subdomain(name) {
            return Err(invalid(
                format!("{path}.dnsConfig.searches[{i}]"),
                format!("{search:?}: must be a DNS subdomain"),
            ));
        }
    }
    for (i, option) in config.options.iter().enumerate() {
        if option.name.is_empty() {
            return Err(invalid(
                format!("{path}.dnsConfig.options[{i}].name"),
                "Required value",
            ));
        }
    }
    Ok(())
}

/// A file mode Kubernetes takes for a projected key: 0 to 0777.
fn check_mode(mode: Option<u32>, path: &str) -> Result<(), Invalid> {
    match mode {
        Some(mode) if mode > 0o777 => Err(invalid(
            path,
            format!("{mode} is not a file mode (0 to 0777, 511 in decimal)"),
        )),
        _ => Ok(()),
    }
}

/// The name Kubernetes gives its scheduler, and so berth its own.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

fn validate_container(
    c: &Container,
    path: &str,
    volumes: &std::collections::BTreeSet<&str>,
) -> Result<(), Invalid> {
    if !is_dns_label(&c.name) {
        return Err(invalid(
            format!("{path}.name"),
            format!("{:?} is not a valid container name", c.name),
        ));
    }
    if c.image.trim().is_empty() {
        return Err(invalid(format!("{path}.image"), "an image is required"));
    }
    if let Some(context) = &c.security_context {
        super::security::check_container(context, &format!("{path}.securityContext"))?;
    }
    if let Some(policy) = &c.termination_message_policy
        && policy != "File"
        && policy != "FallbackToLogsOnError"
    {
        return Err(invalid(
            format!("{path}.terminationMessagePolicy"),
            format!("{policy:?} is not File or FallbackToLogsOnError"),
        ));
    }
    for (i, env) in c.env.iter().enumerate() {
        let epath = format!("{path}.env[{i}]");
        if env.name.is_empty() || env.name.contains('=') {
            return Err(invalid(
                format!("{epath}.name"),
                format!("{:?} is not a valid variable name", env.name),
            ));
        }
        match (&env.value, &env.value_from) {
            (Some(_), Some(_)) => {
                return Err(invalid(epath, "give value or valueFrom, not both"));
            }
            (None, Some(from)) => {
                let given = [
                    from.config_map_key_ref.is_some(),
                    from.secret_key_ref.is_some(),
                    from.field_ref.is_some(),
                ];
                if given.iter().filter(|g| **g).count() != 1 {
                    return Err(invalid(
                        format!("{epath}.valueFrom"),
                        "exactly one of configMapKeyRef, secretKeyRef or fieldRef is required",
                    ));
                }
                if let Some(field) = &from.field_ref {
                    let fpath = format!("{epath}.valueFrom.fieldRef");
                    if field.api_version.as_deref().is_some_and(|v| v != "v1") {
                        return Err(invalid(
                            format!("{fpath}.apiVersion"),
                            "only \"v1\" is supported",
                        ));
                    }
                    super::objects::PodField::parse(&field.field_path)
                        .map_err(|e| invalid(format!("{fpath}.fieldPath"), e))?;
                }
            }
            _ => {}
        }
    }
    for (i, from) in c.env_from.iter().enumerate() {
        if from.config_map_ref.is_some() == from.secret_ref.is_some() {
            return Err(invalid(
                format!("{path}.envFrom[{i}]"),
                "exactly one of configMapRef or secretRef is required",
            ));
        }
    }
    for (i, port) in c.ports.iter().enumerate() {
        if port.container_port == 0 {
            return Err(invalid(
                format!("{path}.ports[{i}].containerPort"),
                "must be 1–65535",
            ));
        }
        if let Some(p) = &port.protocol
            && p != "TCP"
        {
            return Err(invalid(
                format!("{path}.ports[{i}].protocol"),
                format!("{p} is not supported (TCP only)"),
            ));
        }
        if port.host_port == Some(0) {
            return Err(invalid(
                format!("{path}.ports[{i}].hostPort"),
                "must be 1–65535",
            ));
        }
        if let Some(ip) = &port.host_ip {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid(
                    format!("{path}.ports[{i}].hostIP"),
                    format!("{ip:?} is not an IP address"),
                ));
            }
            if port.host_port.is_none() {
                return Err(invalid(
                    format!("{path}.ports[{i}].hostIP"),
                    "only a port with a hostPort has one",
                ));
            }
        }
    }
    for (i, mount) in c.volume_mounts.iter().enumerate() {
        let mpath = format!("{path}.volumeMounts[{i}]");
        if !volumes.contains(mount.name.as_str()) {
            return Err(invalid(
                format!("{mpath}.name"),
                format!("no volume named {}", mount.name),
            ));
        }
        if !mount.mount_path.starts_with('/') || mount.mount_path.split('/').any(|p| p == "..") {
            return Err(invalid(
                format!("{mpath}.mountPath"),
                "must be an absolute path without `..`",
            ));
        }
    }
    let r = &c.resources;
    for (resource, request, limit) in [
        ("cpu", r.requests.cpu, r.limits.cpu),
        ("memory", r.requests.memory, r.limits.memory),
    ] {
        if let (Some(request), Some(limit)) = (request, limit)
            && request > limit
        {
            return Err(invalid(
                format!("{path}.resources.requests.{resource}"),
                format!("the request {request} is more than the limit {limit}"),
            ));
        }
    }
    for (name, probe) in [
        ("readinessProbe", &c.readiness_probe),
        ("livenessProbe", &c.liveness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(probe) = probe {
            validate_probe(probe, &format!("{path}.{name}"))?;
        }
    }
    Ok(())
}

fn validate_probe(p: &Probe, path: &str) -> Result<(), Invalid> {
    let handlers = [
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
        p.exec.is_some(),
    ];
    if handlers.iter().filter(|h| **h).count() != 1 {
        return Err(invalid(
            path,
            "exactly one of httpGet, tcpSocket or exec is required",
        ));
    }
    if let Some(http) = &p.http_get
        && (!http.path.starts_with('/') || http.path.parse::<http::uri::PathAndQuery>().is_err())
    {
        return Err(invalid(
            format!("{path}.httpGet.path"),
            format!(
                "{:?} is not a path (it starts with /, without spaces)",
                http.path
            ),
        ));
    }
    if p.period_seconds == 0
        || p.timeout_seconds == 0
        || p.failure_threshold == 0
        || p.success_threshold == 0
    {
        return Err(invalid(
            path,
            "periodSeconds, timeoutSeconds, failureThreshold and successThreshold must be at least 1",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
