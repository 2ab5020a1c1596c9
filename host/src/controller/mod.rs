//! The controllers: the loops that turn declared objects into pods and keep
//! them so, as kube-controller-manager and kube-scheduler do.
//!
//! One `reconcile` pass, run whenever anything changes and on a tick:
//! 1. garbage collection: ReplicaSets whose Deployment is gone, and pods
//!    whose ReplicaSet is gone, are deleted;
//! 2. Deployments: one ReplicaSet per pod template (named by the
//!    template's hash), scaled for a rolling update within maxSurge and
//!    maxUnavailable, or Recreate; revisions recorded; status written;
//! 3. ReplicaSets: pods created or deleted to match the replica count;
//! 4. scheduling: unbound pods bound to a node, or left Pending with the
//!    reason none fits.
//!
//! Pods are run by the kubelet (`crate::kubelet`), which writes their
//! status; readiness read here comes from there.

pub mod autoscaler;
mod cronjob;
mod job;
mod statefulset;
mod volumes;

pub use volumes::claim_in_use;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::scheduler::{self, Node, Requests};
use crate::spec::objects::{
    Deployment, FOREGROUND_DELETION, ObjectMeta, OwnerReference, Pod, ReplicaSet, ReplicaSetSpec,
    StrategyType,
};
use crate::spec::status::{
    self, DeploymentCondition, DeploymentStatus, PodCondition, PodStatus, ReplicaSetCondition,
    ReplicaSetStatus,
};
use crate::spec::{Kind, Object, Status};
use crate::state::{Event, Record, Result, Store};

pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// Where `kubectl apply` keeps what it last applied: never copied from a
/// deployment to its replica sets.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Conditions with Kubernetes' times: one whose status is as `before`
/// keeps its lastTransitionTime, and one whose reason and message are too
/// keeps its lastUpdateTime; the rest are stamped now.
fn with_times(
    mut conditions: Vec<DeploymentCondition>,
    before: Option<&DeploymentStatus>,
) -> Vec<DeploymentCondition> {
    let now = status::now();
    for c in &mut conditions {
        let old = before
            .and_then(|b| b.conditions.as_ref())
            .and_then(|old| old.iter().find(|o| o.type_ == c.type_))
            .filter(|o| o.status == c.status);
        c.last_transition_time = old
            .and_then(|o| o.last_transition_time.clone())
            .or_else(|| Some(now.clone()));
        c.last_update_time = old
            .filter(|o| o.reason == c.reason && o.message == c.message)
            .and_then(|o| o.last_update_time.clone())
            .or_else(|| Some(now.clone()));
    }
    conditions
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    getrandom::fill(&mut bytes).expect("the OS random source");
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Whether two pod templates are the same but for the hash label and
/// defaults spelt out.
fn same_template(
    a: &crate::spec::objects::PodTemplateSpec,
    b: &crate::spec::objects::PodTemplateSpec,
) -> bool {
    let plain = |t: &crate::spec::objects::PodTemplateSpec| {
        let mut t = t.clone();
        t.metadata.labels.remove(TEMPLATE_HASH_LABEL);
        crate::spec::defaults::canonical(&mut t.spec);
        t
    };
    plain(a) == plain(b)
}

/// The hash naming a pod template's ReplicaSet.
pub fn template_hash(template: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(template.to_string()))[..10].to_owned()
}

/// The objects of `kind` in `namespace` that `owner` controls.
fn owned(store: &Store, kind: Kind, namespace: &str, owner: &Record) -> Result<Vec<Record>> {
    Ok(store
        .list_owned(kind, &owner.uid)?
        .into_iter()
        .filter(|r| r.object.namespace() == Some(namespace))
        .collect())
}

/// How many pods a replica set controls, and how many of them are ready:
/// `(total, ready)`. Pods being deleted count for nothing, as in
/// Kubernetes: their replacements start at once.
fn pod_counts(store: &Store, rs: &Record) -> Result<(u32, u32)> {
    let (mut total, mut ready) = (0, 0);
    let namespace = rs.object.namespace();
    store.visit_owned(Kind::Pod, &rs.uid, |pod| {
        // A pod of another namespace naming it as its owner is not its.
        if !pod.object.metadata().deleting() && pod.object.namespace() == namespace {
            total += 1;
            ready += u32::from(pod.status.pod_ready());
        }
    })?;
    Ok((total, ready))
}

fn owner(kind: &str, api_version: &str, record: &Record) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: record.object.metadata().name.clone(),
        uid: record.uid.clone(),
        controller: true,
        block_owner_deletion: Some(true),
    }
}

/// The grace period a pod's deletion gives its containers to stop, or
/// `None` when it can go at once: not bound to a node, finished, or
/// deleted with no grace (`asked`, else its spec's).
pub fn termination_grace(record: &Record, asked: Option<u64>) -> Option<u64> {
    let Object::Pod(pod) = &record.object else {
        return None;
    };
    let grace = asked.unwrap_or(pod.spec.termination_grace_period_seconds);
    let finished = record.status.pod_finished();
    (grace > 0 && pod.spec.node_name.is_some() && !finished).then_some(grace)
}

/// Deletes an object as a controller or the garbage collector does: a
/// running pod is marked Terminating and left to the kubelet, which stops
/// it within its grace period (its endpoints leave first, in-flight
/// requests finish) and then deletes it; anything else goes at once.
pub fn delete_gracefully(store: &mut Store, record: &Record) -> Result<()> {
    let ns = record.object.namespace().unwrap_or("").to_owned();
    let name = &record.object.metadata().name;
    if record.object.metadata().deleting() {
        return Ok(());
    }
    if record.object.kind() == Kind::PersistentVolumeClaim {
        return volumes::delete_claim(store, record);
    }
    match termination_grace(record, None) {
        Some(grace) => {
            store.mark_deleting(Kind::Pod, &ns, name, &record.uid, grace, &[])?;
        }
        None => {
            store.delete(record.object.kind(), &ns, name)?;
        }
    }
    Ok(())
}

/// Deletes ReplicaSets whose Deployment is gone and pods whose ReplicaSet
/// is gone, as Kubernetes' garbage collector does (a running pod is marked
/// Terminating and left to the kubelet); whether it deleted any.
pub fn collect_garbage(store: &mut Store) -> Result<bool> {
    collect(store, false)
}

/// [`collect_garbage`] when no kubelet runs any more (`berth up` on its
/// way out): every orphan goes at once, running or not.
pub fn collect_garbage_now(store: &mut Store) -> Result<bool> {
    collect(store, true)
}

fn collect(store: &mut Store, now: bool) -> Result<bool> {
    let mut changed = false;
    for (kind, owner_kind) in [
        (Kind::ReplicaSet, Kind::Deployment),
        (Kind::Pod, Kind::ReplicaSet),
        (Kind::Job, Kind::CronJob),
        (Kind::Pod, Kind::Job),
        (Kind::Pod, Kind::StatefulSet),
        (Kind::PersistentVolumeClaim, Kind::StatefulSet),
    ] {
        let owners: BTreeSet<String> = store
            .list(owner_kind, None)?
            .into_iter()
            .map(|r| r.uid)
            .collect();
        let orphaned = |meta: &ObjectMeta| {
            meta.owner_references
                .iter()
                .any(|o| o.controller && o.kind == owner_kind.as_str() && !owners.contains(&o.uid))
        };
        // Found where they are parsed, and only orphans read out: a pass
        // copies none of ten thousand pods that have their owner.
        let mut orphans = Vec::new();
        store.visit(kind, |visited| {
            let object = visited.object;
            if orphaned(object.metadata()) {
                orphans.push((
                    object.namespace().unwrap_or("").to_owned(),
                    object.metadata().name.clone(),
                ));
            }
        })?;
        for (ns, name) in orphans {
            let Some(record) = store.get(kind, &ns, &name)? else {
                continue;
            };
            let meta = record.object.metadata();
            if now {
                store.delete(kind, &ns, &meta.name)?;
                changed = true;
            } else if !meta.deleting() {
                delete_gracefully(store, &record)?;
                changed = true;
            }
        }
    }
    Ok(changed)
}

pub struct Controllers {
    pub nodes: Vec<Node>,
    /// The most pods a namespace may hold (a ResourceQuota's `count/pods`
    /// every namespace has): a replica count past it ends in FailedCreate,
    /// not in a million stored pods.
    pub pod_quota: u64,
    /// A Job's next pod after a failure waits the first of these, doubling
    /// per failure up to the second (Kubernetes: 10 s and 6 min).
    pub job_backoff: (Duration, Duration),
    /// Where local-path volumes get their directories (`$BERTH_HOME/volumes`);
    /// none, and volumes are recorded but no directory is made or removed.
    pub volumes_dir: Option<std::path::PathBuf>,
}

impl Controllers {
    /// Controllers for `nodes`, with the default quota: as many pods per
    /// namespace as the nodes can run.
    pub fn new(nodes: Vec<Node>) -> Controllers {
        let pod_quota = nodes.iter().map(|n| n.max_pods).sum();
        Controllers {
            nodes,
            pod_quota,
            job_backoff: (Duration::from_secs(10), Duration::from_secs(360)),
            volumes_dir: None,
        }
    }
}

/// What the controllers must look at again, gathered from the store's
/// watch as kube-controller-manager's informers feed its work queues: the
/// deployments and replica sets a change touched (a pod's change is its
/// replica set's, a replica set's its deployment's), the owners deleted
/// (whose dependents the garbage collector takes), and whether a pod needs
/// a node.
#[derive(Debug, Default)]
pub struct Work {
    /// Everything: at start, after falling behind the watch, on a slow tick.
    all: bool,
    deployments: BTreeSet<(String, String)>,
    replicasets: BTreeSet<(String, String)>,
    jobs: BTreeSet<(String, String)>,
    cronjobs: BTreeSet<(String, String)>,
    statefulsets: BTreeSet<(String, String)>,
    /// Jobs and cron jobs (by kind) to look at again at a time, whatever changes: a back-off, a
    /// deadline or a TTL falling due.
    later: BTreeMap<(Kind, String, String), Instant>,
    /// Dependents' kind and their deleted owner's uid.
    orphans: Vec<(Kind, String)>,
    schedule: bool,
    /// A claim or a volume changed: bind, provision, reclaim.
    volumes: bool,
}

impl Work {
    /// A pass over everything.
    pub fn everything() -> Work {
        Work {
            all: true,
            ..Work::default()
        }
    }

    /// Asks for a pass over everything (a slow tick's safety net, and what
    /// waits on time rather than on a change: progress deadlines).
    pub fn everything_too(&mut self) {
        self.all = true;
    }

    pub fn is_empty(&self) -> bool {
        !self.all
            && !self.schedule
            && !self.volumes
            && self.deployments.is_empty()
            && self.replicasets.is_empty()
            && self.jobs.is_empty()
            && self.cronjobs.is_empty()
            && self.statefulsets.is_empty()
            && self.orphans.is_empty()
    }

    /// What waits, by queue: objects to reconcile, and timed wake-ups.
    pub fn depth(&self) -> [(&'static str, usize); 7] {
        [
            ("deployments", self.deployments.len()),
            ("replicasets", self.replicasets.len()),
            ("jobs", self.jobs.len()),
            ("cronjobs", self.cronjobs.len()),
            ("statefulsets", self.statefulsets.len()),
            ("orphans", self.orphans.len()),
            ("timers", self.later.len()),
        ]
    }

    /// Moves the jobs whose time has come into the work.
    fn wake_due(&mut self) {
        let now = Instant::now();
        let due: Vec<(Kind, String, String)> = self
            .later
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            self.later.remove(&key);
            let (kind, ns, name) = key;
            if kind == Kind::CronJob {
                self.cronjobs.insert((ns, name));
            } else {
                self.jobs.insert((ns, name));
            }
        }
    }

    /// Asks for a job or cron job to be looked at again after `after`.
    fn again(&mut self, key: (Kind, String, String), after: Duration) {
        // A time past what the clock can say (a deadline of centuries) is
        // never: the slow pass looks again anyway.
        let Some(at) = Instant::now().checked_add(after) else {
            return;
        };
        let when = self.later.entry(key).or_insert(at);
        *when = (*when).min(at);
    }

    /// Notes what `change` asks of the controllers.
    pub fn note(&mut self, change: &crate::state::Change) {
        use crate::state::{Change, ChangeType};
        // Events ask nothing of the controllers.
        let Change::Object { change, record } = change else {
            return;
        };
        let meta = record.object.metadata();
        let ns = record.object.namespace().unwrap_or("").to_owned();
        let controller = |kind: &str| {
            meta.owner_references
                .iter()
                .find(|o| o.controller && o.kind == kind)
                .map(|o| (ns.clone(), o.name.clone()))
        };
        let deleted = *change == ChangeType::Deleted;
        match &record.object {
            Object::Deployment(_) if deleted => {
                self.orphans.push((Kind::ReplicaSet, record.uid.clone()))
            }
            Object::Deployment(_) => {
                self.deployments.insert((ns.clone(), meta.name.clone()));
            }
            Object::ReplicaSet(_) => {
                if deleted {
                    self.orphans.push((Kind::Pod, record.uid.clone()));
                } else {
                    self.replicasets.insert((ns.clone(), meta.name.clone()));
                }
                self.deployments.extend(controller("Deployment"));
            }
            Object::StatefulSet(_) if deleted => {
                self.orphans.push((Kind::Pod, record.uid.clone()));
                self.orphans
                    .push((Kind::PersistentVolumeClaim, record.uid.clone()));
            }
            Object::StatefulSet(_) => {
                self.statefulsets.insert((ns.clone(), meta.name.clone()));
            }
            Object::PersistentVolumeClaim(_) | Object::PersistentVolume(_) => {
                self.volumes = true;
                // A claim bound may let a pending pod go to a node.
                self.schedule = true;
            }
            Object::CronJob(_) if deleted => self.orphans.push((Kind::Job, record.uid.clone())),
            Object::CronJob(_) => {
                self.cronjobs.insert((ns.clone(), meta.name.clone()));
            }
            Object::Job(_) => {
                if deleted {
                    self.orphans.push((Kind::Pod, record.uid.clone()));
                } else {
                    self.jobs.insert((ns.clone(), meta.name.clone()));
                }
                self.cronjobs.extend(controller("CronJob"));
            }
            Object::Pod(pod) => {
                self.replicasets.extend(controller("ReplicaSet"));
                self.jobs.extend(controller("Job"));
                self.statefulsets.extend(controller("StatefulSet"));
                // A new pod wants a node; a pod gone leaves room for one.
                self.schedule |= deleted || pod.spec.node_name.is_none();
                // A pod gone may let go of a claim deleted while in use.
                self.volumes |= deleted
                    && pod
                        .spec
                        .volumes
                        .iter()
                        .any(|v| v.persistent_volume_claim.is_some());
            }
            _ => {}
        }
    }

    /// Takes in every change `changes` holds; falling behind the watch
    /// (changes dropped) means looking at everything.
    pub fn drain(&mut self, changes: &mut crate::state::Cursor) {
        match changes.take() {
            Ok(changes) => {
                for change in changes {
                    self.note(&change);
                }
            }
            Err(_) => self.all = true,
        }
    }
}

impl Controllers {
    /// Reconciles what `work` names, then what that changed, as the watch
    /// (`changes`, subscribed to the same store) reports it, until nothing
    /// is left or a few rounds have passed (what is left stays in `work`
    /// for the next call).
    pub fn reconcile_work(
        &self,
        store: &mut Store,
        work: &mut Work,
        changes: &mut crate::state::Cursor,
    ) -> Result<()> {
        for _ in 0..8 {
            if !self.reconcile_round(store, work, changes)? {
                break;
            }
        }
        Ok(())
    }

    /// One round of [`Controllers::reconcile_work`]: what `work` and the
    /// watch name now; whether there was any. The daemon takes the store's
    /// lock per round, so API requests are served between rounds.
    pub fn reconcile_round(
        &self,
        store: &mut Store,
        work: &mut Work,
        changes: &mut crate::state::Cursor,
    ) -> Result<bool> {
        work.drain(changes);
        work.wake_due();
        if work.is_empty() {
            return Ok(false);
        }
        let mut todo = std::mem::take(work);
        work.later = std::mem::take(&mut todo.later);
        if todo.all {
            self.reconcile_all(store, Some(work))?;
            return Ok(true);
        }
        for (kind, uid) in &todo.orphans {
            for dependent in store.list_owned(*kind, uid)? {
                delete_gracefully(store, &dependent)?;
            }
        }
        // A replica set's change is its deployment's too (its status
        // counts the pods).
        for (ns, name) in &todo.replicasets {
            if let Some(rs) = store.get(Kind::ReplicaSet, ns, name)?
                && let Some(owner) = rs
                    .object
                    .metadata()
                    .owner_references
                    .iter()
                    .find(|o| o.controller && o.kind == "Deployment")
            {
                todo.deployments.insert((ns.clone(), owner.name.clone()));
            }
        }
        for (ns, name) in &todo.deployments {
            if let Some(deployment) = store.get(Kind::Deployment, ns, name)? {
                self.reconcile_deployment(store, &deployment)?;
            }
        }
        for (ns, name) in &todo.replicasets {
            if let Some(rs) = store.get(Kind::ReplicaSet, ns, name)? {
                self.reconcile_replicaset(store, &rs)?;
            }
        }
        for (ns, name) in &todo.jobs {
            if let Some(job) = store.get(Kind::Job, ns, name)? {
                let (_, after) = self.reconcile_job(store, &job)?;
                if let Some(after) = after {
                    work.again((Kind::Job, ns.clone(), name.clone()), after);
                }
            }
        }
        for (ns, name) in &todo.statefulsets {
            if let Some(set) = store.get(Kind::StatefulSet, ns, name)? {
                self.reconcile_statefulset(store, &set)?;
            }
        }
        for (ns, name) in &todo.cronjobs {
            if let Some(cron) = store.get(Kind::CronJob, ns, name)? {
                let now = k8s_openapi::chrono::Utc::now();
                let (_, after) = self.reconcile_cronjob(store, &cron, now)?;
                if let Some(after) = after {
                    work.again((Kind::CronJob, ns.clone(), name.clone()), after);
                }
            }
        }
        if todo.volumes {
            self.reconcile_volumes(store)?;
        }
        if todo.schedule {
            self.schedule(store)?;
        }
        Ok(true)
    }

    /// One pass over everything; whether anything changed.
    pub fn reconcile(&self, store: &mut Store) -> Result<bool> {
        self.reconcile_all(store, None)
    }

    /// [`Controllers::reconcile`], noting in `work` when to look at a job
    /// again.
    fn reconcile_all(&self, store: &mut Store, mut work: Option<&mut Work>) -> Result<bool> {
        let mut changed = collect_garbage(store)?;
        for deployment in store.list(Kind::Deployment, None)? {
            changed |= self.reconcile_deployment(store, &deployment)?;
        }
        for rs in store.list(Kind::ReplicaSet, None)? {
            changed |= self.reconcile_replicaset(store, &rs)?;
        }
        for set in store.list(Kind::StatefulSet, None)? {
            changed |= self.reconcile_statefulset(store, &set)?;
        }
        let now = k8s_openapi::chrono::Utc::now();
        for cron in store.list(Kind::CronJob, None)? {
            let (cron_changed, after) = self.reconcile_cronjob(store, &cron, now)?;
            changed |= cron_changed;
            if let (Some(work), Some(after)) = (work.as_deref_mut(), after) {
                let ns = cron.object.namespace().unwrap_or("default").to_owned();
                let name = cron.object.metadata().name.clone();
                work.again((Kind::CronJob, ns, name), after);
            }
        }
        for job in store.list(Kind::Job, None)? {
            let (job_changed, after) = self.reconcile_job(store, &job)?;
            changed |= job_changed;
            if let (Some(work), Some(after)) = (work.as_deref_mut(), after) {
                let ns = job.object.namespace().unwrap_or("default").to_owned();
                work.again((Kind::Job, ns, job.object.metadata().name.clone()), after);
            }
        }
        changed |= self.reconcile_volumes(store)?;
        changed |= self.schedule(store)?;
        Ok(changed)
    }

    /// An owner deleted in the foreground: its dependents are deleted
    /// (in the foreground too, as Kubernetes' garbage collector does), and
    /// once none is left, so is it.
    fn finish_foreground(&self, store: &mut Store, record: &Record) -> Result<bool> {
        let meta = record.object.metadata();
        let kind = record.object.kind();
        let ns = record.object.namespace().unwrap_or("").to_owned();
        if !meta.finalizers.iter().any(|f| f == FOREGROUND_DELETION) {
            return Ok(false);
        }
        let dependents = kind.dependents().unwrap_or(Kind::Pod);
        let left = store.list_owned(dependents, &record.uid)?;
        if left.is_empty() {
            return store.delete_if(kind, &ns, &meta.name, &record.uid);
        }
        let mut changed = false;
        for dependent in left.iter().filter(|d| !d.object.metadata().deleting()) {
            let name = &dependent.object.metadata().name;
            changed |= match &dependent.object {
                Object::ReplicaSet(_) => store
                    .mark_deleting(
                        Kind::ReplicaSet,
                        &ns,
                        name,
                        &dependent.uid,
                        0,
                        &[FOREGROUND_DELETION],
                    )?
                    .is_some(),
                Object::Pod(pod) if pod.spec.node_name.is_some() => store
                    .mark_deleting(
                        Kind::Pod,
                        &ns,
                        name,
                        &dependent.uid,
                        pod.spec.termination_grace_period_seconds,
                        &[],
                    )?
                    .is_some(),
                _ => store.delete_if(dependents, &ns, name, &dependent.uid)?,
            };
        }
        Ok(changed)
    }

    fn reconcile_deployment(&self, store: &mut Store, record: &Record) -> Result<bool> {
        let Object::Deployment(deployment) = &record.object else {
            return Ok(false);
        };
        if deployment.metadata.deleting() {
            return self.finish_foreground(store, record);
        }
        let ns = record.object.namespace().unwrap_or("default").to_owned();
        let name = &deployment.metadata.name;
        let mut template = deployment.spec.template.clone();
        crate::spec::defaults::canonical(&mut template.spec);
        // The replica set already running this template is the current
        // one, whatever hash it was named by (as Kubernetes compares
        // templates, not hashes): a berth that hashes differently, or a
        // template spelling its defaults out, rolls nothing out.
        let running = owned(store, Kind::ReplicaSet, &ns, record)?
            .into_iter()
            .find_map(|rs| match &rs.object {
                Object::ReplicaSet(r) if same_template(&r.spec.template, &template) => r
                    .spec
                    .template
                    .metadata
                    .labels
                    .get(TEMPLATE_HASH_LABEL)
                    .filter(|h| r.metadata.name == format!("{name}-{h}"))
                    .cloned(),
                _ => None,
            });
        let hash = running
            .unwrap_or_else(|| template_hash(&serde_json::to_value(&template).expect("JSON")));
        template
            .metadata
            .labels
            .insert(TEMPLATE_HASH_LABEL.into(), hash.clone());
        // A paused deployment rolls nothing out: a changed template waits
        // for `rollout resume`, as in Kubernetes.
        if deployment.spec.paused {
            let owned = owned(store, Kind::ReplicaSet, &ns, record)?;
            if !owned
                .iter()
                .any(|r| r.object.metadata().name == format!("{name}-{hash}"))
            {
                return self.paused_status(store, record, &owned);
            }
        }
        let revision = store.record_revision(
            &ns,
            name,
            &hash,
            &serde_json::to_value(&deployment.spec.template).expect("JSON"),
        )?;

        // As Kubernetes' controller does, the deployment names the revision
        // it rolls out (`kubectl rollout status --revision` reads it).
        let revision_text = revision.to_string();
        if deployment.metadata.annotations.get(REVISION_ANNOTATION) != Some(&revision_text) {
            let mut annotated = record.object.clone();
            annotated
                .metadata_mut()
                .annotations
                .insert(REVISION_ANNOTATION.to_owned(), revision_text);
            store.apply(std::slice::from_ref(&annotated))?;
        }

        let owned = owned(store, Kind::ReplicaSet, &ns, record)?;
        let mut ready_counts = std::collections::HashMap::new();
        for rs in &owned {
            ready_counts.insert(rs.uid.clone(), pod_counts(store, rs)?.1);
        }
        let ready_of = |rs: &Record| ready_counts.get(&rs.uid).copied().unwrap_or(0);
        let replicas_of = |rs: &Record| match &rs.object {
            Object::ReplicaSet(r) => r.spec.replicas,
            _ => 0,
        };
        let new_name = format!("{name}-{hash}");
        let desired = deployment.spec.replicas;
        let mut changed = false;
        // As Kubernetes' controller does: the new replica set carries the
        // deployment's annotations (the change-cause `rollout history`
        // shows), but not kubectl's own or the revision.
        let mut annotations: BTreeMap<String, String> = deployment
            .metadata
            .annotations
            .iter()
            .filter(|(k, _)| {
                k.as_str() != LAST_APPLIED_ANNOTATION && k.as_str() != REVISION_ANNOTATION
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        annotations.insert(REVISION_ANNOTATION.to_owned(), revision.to_string());
        let new_rs = match owned.iter().find(|r| r.object.metadata().name == new_name) {
            Some(rs) if rs.object.metadata().annotations == annotations => rs.clone(),
            Some(rs) => {
                let mut updated = rs.object.clone();
                updated.metadata_mut().annotations = annotations;
                store.apply(std::slice::from_ref(&updated))?;
                changed = true;
                store
                    .get(Kind::ReplicaSet, &ns, &new_name)?
                    .unwrap_or_else(|| rs.clone())
            }
            None => {
                let mut selector = deployment.spec.selector.clone();
                selector
                    .match_labels
                    .insert(TEMPLATE_HASH_LABEL.into(), hash.clone());
                let rs = ReplicaSet {
                    metadata: ObjectMeta {
                        name: new_name.clone(),
                        namespace: Some(ns.clone()),
                        labels: template.metadata.labels.clone(),
                        annotations,
                        owner_references: vec![owner("Deployment", "apps/v1", record)],
                        ..ObjectMeta::default()
                    },
                    spec: ReplicaSetSpec {
                        // Scaled up below, within the rollout's limits.
                        replicas: if owned.is_empty() { desired } else { 0 },
                        selector,
                        template: template.clone(),
                    },
                };
                store.apply(&[Object::ReplicaSet(Box::new(rs))])?;
                self.event(
                    store,
                    &ns,
                    "Deployment",
                    name,
                    "Normal",
                    "ScalingReplicaSet",
                    &format!("Created replica set {new_name}"),
                )?;
                changed = true;
                store
                    .get(Kind::ReplicaSet, &ns, &new_name)?
                    .expect("just created")
            }
        };
        let old: Vec<&Record> = owned
            .iter()
            .filter(|r| r.object.metadata().name != new_name)
            .collect();

        // The replica counts this pass aims for: (record, replicas).
        let mut targets: Vec<(Record, u32)> = Vec::new();
        let new_replicas = replicas_of(&new_rs);
        let old_total: u32 = old.iter().map(|r| replicas_of(r)).sum();
        match deployment.spec.strategy.kind {
            StrategyType::Recreate => {
                if old_total > 0 {
                    for rs in &old {
                        targets.push(((*rs).clone(), 0));
                    }
                } else {
                    let mut old_pods = false;
                    for rs in &old {
                        old_pods |= pod_counts(store, rs)?.0 > 0;
                    }
                    if !old_pods {
                        targets.push((new_rs.clone(), desired));
                    }
                }
            }
            StrategyType::RollingUpdate => {
                let (surge, unavailable) = deployment.spec.surge_and_unavailable();
                let mut new_target = new_replicas;
                if new_replicas > desired {
                    new_target = desired;
                } else if new_replicas < desired {
                    let room = (desired + surge).saturating_sub(new_replicas + old_total);
                    new_target = new_replicas + room.min(desired - new_replicas);
                }
                targets.push((new_rs.clone(), new_target));
                // Old pods go while enough stay available: every ready pod
                // above the minimum may go, and unready old ones freely.
                let ready_total: u32 =
                    ready_of(&new_rs) + old.iter().map(|r| ready_of(r)).sum::<u32>();
                let mut can_remove =
                    ready_total.saturating_sub(desired.saturating_sub(unavailable));
                for rs in &old {
                    let replicas = replicas_of(rs);
                    let unready = replicas.saturating_sub(ready_of(rs));
                    let remove = replicas.min(unready + can_remove);
                    can_remove = can_remove.saturating_sub(remove.saturating_sub(unready));
                    targets.push(((*rs).clone(), replicas - remove));
                }
            }
        }
        for (rs, replicas) in targets {
            let Object::ReplicaSet(mut object) = rs.object.clone() else {
                continue;
            };
            if object.spec.replicas == replicas {
                continue;
            }
            let verb = if replicas > object.spec.replicas {
                "up"
            } else {
                "down"
            };
            let message = format!(
                "Scaled {verb} replica set {} from {} to {replicas}",
                object.metadata.name, object.spec.replicas
            );
            object.spec.replicas = replicas;
            store.apply(&[Object::ReplicaSet(object)])?;
            self.event(
                store,
                &ns,
                "Deployment",
                name,
                "Normal",
                "ScalingReplicaSet",
                &message,
            )?;
            changed = true;
        }

        // Old ReplicaSets at zero beyond the history limit are deleted.
        let mut idle: Vec<&Record> = old
            .iter()
            .copied()
            .filter(|r| replicas_of(r) == 0)
            .collect();
        idle.sort_by_key(|r| r.resource_version);
        let limit = deployment.spec.revision_history_limit as usize;
        if idle.len() > limit {
            for rs in &idle[..idle.len() - limit] {
                store.delete(Kind::ReplicaSet, &ns, &rs.object.metadata().name)?;
                changed = true;
            }
        }

        changed |= self.deployment_status(store, record, deployment, &new_name)?;
        Ok(changed)
    }

    fn deployment_status(
        &self,
        store: &mut Store,
        record: &Record,
        deployment: &Deployment,
        new_name: &str,
    ) -> Result<bool> {
        let ns = record.object.namespace().unwrap_or("default").to_owned();
        let owned = owned(store, Kind::ReplicaSet, &ns, record)?;
        let mut total = 0;
        let mut updated = 0;
        let mut ready = 0;
        for rs in &owned {
            let (pods, ready_pods) = pod_counts(store, rs)?;
            total += pods;
            if rs.object.metadata().name == new_name {
                updated += pods;
            }
            ready += ready_pods;
        }
        let desired = deployment.spec.replicas;
        let (_, unavailable) = deployment.spec.surge_and_unavailable();
        let complete = updated == desired && total == desired && ready == desired;
        let available = ready >= desired.saturating_sub(unavailable);
        // A rollout that has not completed within the deadline (counted
        // from its ReplicaSet's creation) is reported, not rolled back.
        let started = owned
            .iter()
            .find(|r| r.object.metadata().name == new_name)
            .and_then(|r| humantime::parse_rfc3339(&r.created).ok());
        let overdue = !complete
            && started.is_some_and(|t| {
                t.elapsed().unwrap_or_default().as_secs()
                    > deployment.spec.progress_deadline_seconds
            });
        let condition =
            |type_: &str, status: &str, reason: &str, message: String| DeploymentCondition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: Some(reason.to_owned()),
                message: Some(message),
                ..DeploymentCondition::default()
            };
        let progressing = if overdue {
            condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{new_name}\" has timed out progressing."),
            )
        } else if complete {
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            )
        } else {
            condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
            )
        };
        let mut conditions = vec![
            if available {
                condition(
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.".into(),
                )
            } else {
                condition(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.".into(),
                )
            },
            progressing,
        ];
        // A replica set that cannot make its pods says so on the
        // deployment too, as Kubernetes' controller surfaces it.
        if let Some(failure) = owned.iter().find_map(|rs| {
            rs.status
                .replica_set()?
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "ReplicaFailure")
        }) {
            conditions.push(DeploymentCondition {
                type_: failure.type_.clone(),
                status: failure.status.clone(),
                reason: failure.reason.clone(),
                message: failure.message.clone(),
                ..DeploymentCondition::default()
            });
        }
        let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        let status = Status::from(DeploymentStatus {
            observed_generation: i64::try_from(record.generation).ok(),
            replicas: Some(count(total)),
            updated_replicas: Some(count(updated)),
            ready_replicas: Some(count(ready)),
            available_replicas: Some(count(ready)),
            unavailable_replicas: Some(count(desired.saturating_sub(ready))),
            conditions: Some(with_times(conditions, record.status.deployment())),
            ..DeploymentStatus::default()
        });
        if status == record.status {
            return Ok(false);
        }
        store.set_status(Kind::Deployment, &ns, &deployment.metadata.name, &status)?;
        Ok(true)
    }

    /// The status of a paused deployment whose template has no replica set
    /// yet: its pods counted from the replica sets it has, and Progressing
    /// Unknown with Kubernetes' reason DeploymentPaused.
    fn paused_status(&self, store: &mut Store, record: &Record, owned: &[Record]) -> Result<bool> {
        let ns = record.object.namespace().unwrap_or("default").to_owned();
        let (mut total, mut ready) = (0u32, 0u32);
        for rs in owned {
            let (pods, ready_pods) = pod_counts(store, rs)?;
            total += pods;
            ready += ready_pods;
        }
        let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        let mut status = record.status.deployment().cloned().unwrap_or_default();
        status.observed_generation = i64::try_from(record.generation).ok();
        status.replicas = Some(count(total));
        status.ready_replicas = Some(count(ready));
        status.available_replicas = Some(count(ready));
        status.updated_replicas = Some(0);
        let mut conditions: Vec<DeploymentCondition> = status
            .conditions
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ != "Progressing")
            .collect();
        conditions.push(DeploymentCondition {
            type_: "Progressing".into(),
            status: "Unknown".into(),
            reason: Some("DeploymentPaused".into()),
            message: Some("Deployment is paused".into()),
            ..DeploymentCondition::default()
        });
        status.conditions = Some(with_times(conditions, record.status.deployment()));
        let status = Status::from(status);
        if status == record.status {
            return Ok(false);
        }
        let name = record.object.metadata().name.clone();
        store.set_status(Kind::Deployment, &ns, &name, &status)?;
        Ok(true)
    }

    fn reconcile_replicaset(&self, store: &mut Store, record: &Record) -> Result<bool> {
        let Object::ReplicaSet(rs) = &record.object else {
            return Ok(false);
        };
        if rs.metadata.deleting() {
            return self.finish_foreground(store, record);
        }
        let ns = record.object.namespace().unwrap_or("default").to_owned();
        // Counted where they are parsed: a pass with nothing to create or
        // delete (most, while ten thousand replicas start) copies no pod.
        let (total, mut ready) = pod_counts(store, record)?;
        let mut total = total as usize;
        let want = rs.spec.replicas as usize;
        let mut changed = false;
        // What the namespace's pod quota leaves room for.
        let in_namespace = store.count_active_pods(&ns)?;
        let room =
            usize::try_from(self.pod_quota.saturating_sub(in_namespace)).unwrap_or(usize::MAX);
        let missing = want.saturating_sub(total);
        let refused = missing.saturating_sub(room);
        let failure = (refused > 0).then(|| {
            format!(
                "pods \"{}-…\" are forbidden: exceeded quota: {refused} more pods would pass the \
                 {} a namespace may hold (used: {in_namespace}; see --pod-quota)",
                rs.metadata.name, self.pod_quota
            )
        });
        let want = want - refused;
        if total < want {
            // All the missing pods in one write, and their events in
            // another: a pass that creates ten thousand holds the store
            // for two transactions, not twenty thousand.
            let mut names: BTreeSet<String> = BTreeSet::new();
            store.visit_owned(Kind::Pod, &record.uid, |pod| {
                names.insert(pod.object.metadata().name.clone());
            })?;
            let mut created = Vec::with_capacity(want - total);
            while total + created.len() < want {
                let name = format!("{}-{}", rs.metadata.name, random_suffix());
                if !names.insert(name.clone()) {
                    continue;
                }
                let mut template = rs.spec.template.clone();
                template.spec.node_name = None;
                created.push(Object::Pod(Box::new(Pod {
                    metadata: ObjectMeta {
                        name,
                        namespace: Some(ns.clone()),
                        labels: template.metadata.labels.clone(),
                        annotations: template.metadata.annotations.clone(),
                        owner_references: vec![owner("ReplicaSet", "apps/v1", record)],
                        ..ObjectMeta::default()
                    },
                    spec: template.spec,
                })));
            }
            store.apply(&created)?;
            let events: Vec<Event> = created
                .iter()
                .map(|pod| {
                    event_of(
                        &ns,
                        "ReplicaSet",
                        &rs.metadata.name,
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created pod: {}", pod.metadata().name),
                    )
                })
                .collect();
            store.record_events(&events)?;
            // None of them is ready yet.
            total += created.len();
            changed = true;
        }
        if total > want {
            let mut pods: Vec<Record> = owned(store, Kind::Pod, &ns, record)?
                .into_iter()
                .filter(|p| !p.object.metadata().deleting())
                .collect();
            // Unscheduled first, then unready, then the newest.
            pods.sort_by_key(|p| {
                let bound = matches!(&p.object, Object::Pod(pod) if pod.spec.node_name.is_some());
                (
                    bound,
                    p.status.pod_ready(),
                    std::cmp::Reverse(p.resource_version),
                )
            });
            // The ones kept are the last `want`.
            let kept = pods.split_off(pods.len().saturating_sub(want));
            for pod in &pods {
                let pod_name = &pod.object.metadata().name;
                delete_gracefully(store, pod)?;
                self.event(
                    store,
                    &ns,
                    "ReplicaSet",
                    &rs.metadata.name,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {pod_name}"),
                )?;
            }
            total = kept.len();
            ready = kept.iter().filter(|p| p.status.pod_ready()).count() as u32;
            changed = true;
        }
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let was_failing = record.status.replica_set().is_some_and(|s| {
            s.conditions
                .iter()
                .flatten()
                .any(|c| c.reason.as_deref() == Some("FailedCreate"))
        });
        let mut status = ReplicaSetStatus {
            replicas: count(total),
            ready_replicas: Some(count(ready as usize)),
            available_replicas: Some(count(ready as usize)),
            observed_generation: i64::try_from(record.generation).ok(),
            ..ReplicaSetStatus::default()
        };
        if let Some(message) = &failure {
            let since = record
                .status
                .replica_set()
                .and_then(|s| s.conditions.as_ref()?.first()?.last_transition_time.clone());
            status.conditions = Some(vec![ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some("FailedCreate".into()),
                message: Some(message.clone()),
                last_transition_time: since.or_else(|| Some(status::now())),
            }]);
            // Once, as it begins: not on every pass it goes on.
            if !was_failing {
                self.event(
                    store,
                    &ns,
                    "ReplicaSet",
                    &rs.metadata.name,
                    "Warning",
                    "FailedCreate",
                    message,
                )?;
            }
        }
        let status = Status::from(status);
        if status != record.status {
            store.set_status(Kind::ReplicaSet, &ns, &rs.metadata.name, &status)?;
            changed = true;
        }
        Ok(changed)
    }

    fn schedule(&self, store: &mut Store) -> Result<bool> {
        // What is bound, counted where it is parsed; only the pods to
        // place are copied out.
        let mut allocated: BTreeMap<String, Requests> = BTreeMap::new();
        let mut pods = Vec::new();
        store.visit(Kind::Pod, |pod| {
            let Object::Pod(p) = pod.object else {
                return;
            };
            match &p.spec.node_name {
                // A finished pod holds nothing on its node any more (a
                // Job's completed pods stay, for their logs and status).
                Some(node) if !pod.status.pod_finished() => {
                    *allocated.entry(node.clone()).or_default() += scheduler::requests(&p.spec);
                }
                Some(_) => {}
                None => pods.push((pod.uid.to_owned(), p.clone(), pod.status.clone())),
            }
        })?;
        let mut changed = false;
        // The pods bound in this pass, written together, and their events.
        let mut bound = Vec::new();
        let mut scheduled = Vec::new();
        // ReadWriteOncePod claims given to a pod in this pass.
        let mut once_claims = BTreeSet::new();
        for (uid, mut p, current) in pods {
            let ns = p
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let want = scheduler::requests(&p.spec);
            let placed =
                match volumes::claims_block(store, &p, &uid, self.nodes.len(), &mut once_claims)? {
                    Some(reason) => Err(reason),
                    None => scheduler::schedule_pod(&self.nodes, &allocated, &p.spec),
                };
            match placed {
                Ok(node) => {
                    *allocated.entry(node.clone()).or_default() += want;
                    p.spec.node_name = Some(node.clone());
                    let name = p.metadata.name.clone();
                    bound.push(Object::Pod(p));
                    scheduled.push(event_of(
                        &ns,
                        "Pod",
                        &name,
                        "Normal",
                        "Scheduled",
                        &format!("Successfully assigned {ns}/{name} to {node}"),
                    ));
                    changed = true;
                }
                Err(reason) => {
                    let status = Status::from(PodStatus {
                        kube: k8s_openapi::api::core::v1::PodStatus {
                            phase: Some("Pending".into()),
                            conditions: Some(vec![PodCondition {
                                reason: Some("Unschedulable".into()),
                                message: Some(reason.clone()),
                                ..status::pod_condition("PodScheduled", false)
                            }]),
                            ..Default::default()
                        },
                        ..PodStatus::default()
                    });
                    if status != current {
                        store.set_status(Kind::Pod, &ns, &p.metadata.name, &status)?;
                        self.event(
                            store,
                            &ns,
                            "Pod",
                            &p.metadata.name,
                            "Warning",
                            "FailedScheduling",
                            &reason,
                        )?;
                        changed = true;
                    }
                }
            }
        }
        if !bound.is_empty() {
            store.apply(&bound)?;
            store.record_events(&scheduled)?;
        }
        Ok(changed)
    }

    #[allow(clippy::too_many_arguments, reason = "an event is these fields")]
    fn event(
        &self,
        store: &mut Store,
        namespace: &str,
        kind: &str,
        name: &str,
        kind_of_event: &str,
        reason: &str,
        message: &str,
    ) -> Result<()> {
        store.record_event(&event_of(
            namespace,
            kind,
            name,
            kind_of_event,
            reason,
            message,
        ))
    }
}

/// An event about object `kind` `name`, now.
fn event_of(
    namespace: &str,
    kind: &str,
    name: &str,
    kind_of_event: &str,
    reason: &str,
    message: &str,
) -> Event {
    Event {
        time: now(),
        namespace: namespace.into(),
        kind: kind.into(),
        name: name.into(),
        kind_of_event: kind_of_event.into(),
        reason: reason.into(),
        message: message.into(),
        uid: None,
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
