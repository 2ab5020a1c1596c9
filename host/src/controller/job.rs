//! The Job controller: pods run to completion, as kube-controller-manager's
//! job controller runs them. A job makes pods (up to `parallelism` at once)
//! until `completions` of them have succeeded (each index once, for an
//! Indexed job), and fails once more have failed than `backoffLimit`
//! allows or it has run past `activeDeadlineSeconds`. A failed pod's
//! replacement waits, doubling from the back-off base, as Kubernetes'
//! does. A finished job goes, with its pods, `ttlSecondsAfterFinished`
//! after it finished.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use super::{Controllers, delete_gracefully, owner, random_suffix};
use crate::spec::objects::{
    COMPLETION_INDEX, EnvVar, EnvVarSource, JOB_CONTROLLER_UID, JOB_NAME, Job, LabelSelector,
    ObjectFieldSelector, ObjectMeta, Pod, RestartPolicy,
};
use crate::spec::status::{self, JobCondition, JobStatus};
use crate::spec::{Kind, Object, Status};
use crate::state::{Event, Record, Result, Store};

/// The labels Kubernetes also sets, under their older names.
const LEGACY_CONTROLLER_UID: &str = "controller-uid";
const LEGACY_JOB_NAME: &str = "job-name";

/// A job's pods, by where they are.
#[derive(Default)]
struct Pods {
    active: Vec<Record>,
    terminating: usize,
    succeeded: Vec<Record>,
    failed: Vec<Record>,
}

impl Pods {
    fn of(store: &Store, ns: &str, job: &Record) -> Result<Pods> {
        let mut pods = Pods::default();
        for pod in super::owned(store, Kind::Pod, ns, job)? {
            let phase = pod.status.pod().and_then(|s| s.phase()).unwrap_or("");
            match phase {
                "Succeeded" => pods.succeeded.push(pod),
                "Failed" => pods.failed.push(pod),
                _ if pod.object.metadata().deleting() => pods.terminating += 1,
                _ => pods.active.push(pod),
            }
        }
        Ok(pods)
    }
}

/// An Indexed job's pod's index.
fn index_of(pod: &Record) -> Option<u32> {
    pod.object
        .metadata()
        .annotations
        .get(COMPLETION_INDEX)?
        .parse()
        .ok()
}

/// `completedIndexes` as Kubernetes writes it: `0-2,5,7-8`.
pub fn format_indexes(indexes: &BTreeSet<u32>) -> String {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &i in indexes {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == i => *last = i,
            _ => runs.push((i, i)),
        }
    }
    runs.iter()
        .map(|&(first, last)| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The inverse of [`format_indexes`]; what does not parse is dropped (a
/// status is the controller's own writing).
pub fn parse_indexes(text: &str, below: u32) -> BTreeSet<u32> {
    let mut indexes = BTreeSet::new();
    for run in text.split(',').filter(|r| !r.is_empty()) {
        let (first, last) = run.split_once('-').unwrap_or((run, run));
        if let (Ok(first), Ok(last)) = (first.parse::<u32>(), last.parse::<u32>()) {
            indexes.extend(first..=last.min(below.saturating_sub(1)));
        }
    }
    indexes
}

fn condition(type_: &str, reason: &str, message: &str) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        ..JobCondition::default()
    }
}

fn holds(status: Option<&JobStatus>, type_: &str) -> bool {
    status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// `conditions` with each one's times kept from `before` while its status
/// is unchanged, else stamped now.
fn with_times(mut conditions: Vec<JobCondition>, before: Option<&JobStatus>) -> Vec<JobCondition> {
    let now = status::now();
    for c in &mut conditions {
        let old = before
            .and_then(|b| b.conditions.as_ref())
            .and_then(|old| old.iter().find(|o| o.type_ == c.type_))
            .filter(|o| o.status == c.status);
        c.last_transition_time = old
            .and_then(|o| o.last_transition_time.clone())
            .or_else(|| Some(now.clone()));
        c.last_probe_time = old
            .and_then(|o| o.last_probe_time.clone())
            .or_else(|| Some(now.clone()));
    }
    conditions
}

fn system_time(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> SystemTime {
    let seconds = u64::try_from(t.0.timestamp()).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

/// When a finished pod ended: its containers' last end; for one that
/// never ran (its image not found), when its conditions last changed, else
/// when it was made. Never now: a failure must grow older, or its
/// back-off would never end.
fn ended(pod: &Record) -> SystemTime {
    let status = pod.status.pod();
    status
        .and_then(|s| s.kube.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .chain(
            status
                .and_then(|s| s.kube.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|c| c.last_transition_time.as_ref()),
        )
        .map(system_time)
        .max()
        .or_else(|| humantime::parse_rfc3339(&pod.created).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// How long after `since` a deadline of `seconds` is due: zero once due,
/// and never (the longest wait) past what the clock can say.
fn left(since: SystemTime, seconds: Duration) -> Duration {
    match since.checked_add(seconds) {
        Some(due) => due
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
        None => Duration::MAX,
    }
}

impl Controllers {
    /// Reconciles one job; when it must be looked at again without any
    /// change to it (a back-off, a deadline, a TTL), after how long.
    pub(super) fn reconcile_job(
        &self,
        store: &mut Store,
        record: &Record,
    ) -> Result<(bool, Option<Duration>)> {
        let Object::Job(job) = &record.object else {
            return Ok((false, None));
        };
        if job.metadata.deleting() {
            return Ok((self.finish_foreground(store, record)?, None));
        }
        if job.spec.selector.is_none() && job.spec.manual_selector != Some(true) {
            // As kube-apiserver does on create, once the uid is known: the
            // job selects its pods by it. The change brings the job back.
            store.apply(&[Object::Job(Box::new(selected(job, &record.uid)))])?;
            return Ok((true, None));
        }
        let ns = record.object.namespace().unwrap_or("default").to_owned();
        let name = job.metadata.name.clone();
        let spec = &job.spec;
        let before = record.status.job();
        let mut pods = Pods::of(store, &ns, record)?;
        let mut changed = false;
        let mut wake: Option<Duration> = None;
        let mut soonest = |d: Duration| {
            wake = Some(wake.map_or(d, |w| w.min(d)));
        };
        let mut events = Vec::new();
        let event = |type_: &str, reason: &str, message: String| {
            super::event_of(&ns, "Job", &name, type_, reason, &message)
        };

        // What has ended so far: never less than the status said (a pod
        // deleted after it was counted still counts).
        // Under OnFailure a failure is a container restarted in place: the
        // running pods' restarts count toward the limit (not as failed
        // pods), as Kubernetes counts them.
        let restarts: u32 = if spec.template.spec.restart_policy == RestartPolicy::OnFailure {
            pods.active
                .iter()
                .filter_map(|p| p.status.pod()?.kube.container_statuses.as_ref())
                .flatten()
                .map(|c| u32::try_from(c.restart_count).unwrap_or(0))
                .fold(0u32, u32::saturating_add)
        } else {
            0
        };
        let restarted_past_limit = match spec.backoff_limit() {
            0 => restarts > 0,
            limit => restarts >= limit,
        };
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let was = |f: fn(&JobStatus) -> Option<i32>| {
            before
                .and_then(f)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0)
        };
        let succeeded = was(|s| s.succeeded).max(count(pods.succeeded.len()));
        let failed = was(|s| s.failed).max(count(pods.failed.len()));
        let completions = spec.completions;
        let mut completed = BTreeSet::new();
        if spec.indexed() {
            let total = completions.unwrap_or(0);
            if let Some(text) = before.and_then(|s| s.completed_indexes.as_deref()) {
                completed = parse_indexes(text, total);
            }
            completed.extend(
                pods.succeeded
                    .iter()
                    .filter_map(index_of)
                    .filter(|i| *i < total),
            );
        }

        let now = SystemTime::now();
        let mut start_time = before.and_then(|s| s.start_time.clone());
        let mut completion_time = before.and_then(|s| s.completion_time.clone());
        let mut conditions: Vec<JobCondition> = before
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let finished = holds(before, "Complete") || holds(before, "Failed");
        let suspended = spec.suspended() && !finished;

        if !finished {
            // Suspending stops its pods; resuming starts the clock anew.
            let was_suspended = holds(before, "Suspended");
            if suspended {
                if !was_suspended {
                    conditions.retain(|c| c.type_ != "Suspended");
                    conditions.push(condition("Suspended", "JobSuspended", "Job suspended"));
                    events.push(event("Normal", "Suspended", "Job suspended".into()));
                }
                for pod in std::mem::take(&mut pods.active) {
                    delete_gracefully(store, &pod)?;
                    pods.terminating += 1;
                    changed = true;
                }
            } else {
                if was_suspended {
                    conditions.retain(|c| c.type_ != "Suspended");
                    conditions.push(JobCondition {
                        status: "False".into(),
                        ..condition("Suspended", "JobResumed", "Job resumed")
                    });
                    events.push(event("Normal", "Resumed", "Job resumed".into()));
                    start_time = None;
                }
                start_time.get_or_insert_with(status::now);
            }
        }

        let failing = holds(before, "FailureTarget");
        let failure = if finished || suspended || failing {
            None
        } else if failed > spec.backoff_limit() || restarted_past_limit {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ))
        } else if let (Some(deadline), Some(start)) =
            (spec.active_deadline_seconds, start_time.as_ref())
        {
            let due = left(system_time(start), Duration::from_secs(deadline));
            if due.is_zero() {
                Some((
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                ))
            } else {
                soonest(due);
                None
            }
        } else {
            None
        };
        if let Some((reason, message)) = failure {
            conditions.push(condition("FailureTarget", reason, message));
            events.push(event("Warning", reason, message.into()));
        }
        let failing = failing || failure.is_some();

        let complete = !finished
            && !failing
            && !suspended
            && if spec.indexed() {
                count(completed.len()) >= completions.unwrap_or(0)
            } else if let Some(c) = completions {
                succeeded >= c
            } else {
                // A work queue: done once one has succeeded and the rest
                // have ended.
                succeeded > 0 && pods.active.is_empty()
            };
        let succeeding = holds(before, "SuccessCriteriaMet") || complete;
        if complete && !holds(before, "SuccessCriteriaMet") {
            conditions.push(condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
        }

        // A job that is done, either way, stops what still runs.
        if (failing || succeeding) && !finished {
            for pod in std::mem::take(&mut pods.active) {
                delete_gracefully(store, &pod)?;
                pods.terminating += 1;
                changed = true;
            }
            if pods.terminating == 0 {
                if failing {
                    let target = conditions
                        .iter()
                        .find(|c| c.type_ == "FailureTarget")
                        .cloned();
                    if let Some(target) = target {
                        conditions.push(JobCondition {
                            type_: "Failed".into(),
                            ..target
                        });
                    }
                } else {
                    conditions.push(condition(
                        "Complete",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    ));
                    completion_time = Some(status::now());
                    events.push(event("Normal", "Completed", "Job completed".into()));
                }
            }
        }

        if !finished && !failing && !succeeding && !suspended {
            let created = self.run_pods(
                store,
                record,
                job,
                &mut pods,
                failed,
                &completed,
                succeeded,
                &mut soonest,
                &mut events,
            )?;
            changed |= created;
        }

        // A finished job goes after its TTL, its pods with it.
        let done = holds(before, "Complete") || holds(before, "Failed");
        if done && let Some(ttl) = spec.ttl_seconds_after_finished {
            let since = before
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
                .find_map(|c| c.last_transition_time.as_ref())
                .map_or(now, system_time);
            let due = left(since, Duration::from_secs(ttl));
            if due.is_zero() {
                store.delete(Kind::Job, &ns, &name)?;
                return Ok((true, None));
            }
            soonest(due);
        }

        let ready = pods.active.iter().filter(|p| p.status.pod_ready()).count();
        let nonzero = |n: u32| (n > 0).then(|| i32::try_from(n).unwrap_or(i32::MAX));
        let status = Status::from(JobStatus {
            active: nonzero(count(pods.active.len())),
            succeeded: nonzero(succeeded),
            failed: nonzero(failed),
            ready: Some(i32::try_from(ready).unwrap_or(i32::MAX)),
            terminating: Some(i32::try_from(pods.terminating).unwrap_or(i32::MAX)),
            start_time,
            completion_time,
            completed_indexes: (spec.indexed() && !completed.is_empty())
                .then(|| format_indexes(&completed)),
            conditions: (!conditions.is_empty()).then(|| with_times(conditions, before)),
            uncounted_terminated_pods: Some(Default::default()),
            ..JobStatus::default()
        });
        if status != record.status {
            store.set_status(Kind::Job, &ns, &name, &status)?;
            changed = true;
        }
        if !events.is_empty() {
            store.record_events(&events)?;
        }
        Ok((changed, wake))
    }

    /// Starts the pods a running job is short of (or stops those past its
    /// parallelism); whether it changed any.
    #[allow(clippy::too_many_arguments, reason = "one job's reconcile state")]
    fn run_pods(
        &self,
        store: &mut Store,
        record: &Record,
        job: &Job,
        pods: &mut Pods,
        failed: u32,
        completed: &BTreeSet<u32>,
        succeeded: u32,
        soonest: &mut impl FnMut(Duration),
        events: &mut Vec<Event>,
    ) -> Result<bool> {
        let spec = &job.spec;
        let ns = record.object.namespace().unwrap_or("default").to_owned();
        let name = &job.metadata.name;
        let parallelism = spec.parallelism() as usize;
        // The indexes still to run, lowest first; for a job without
        // indexes, how many pods are still wanted.
        let running: BTreeSet<u32> = pods.active.iter().filter_map(index_of).collect();
        let pending: Vec<u32> = if spec.indexed() {
            (0..spec.completions.unwrap_or(0))
                .filter(|i| !completed.contains(i) && !running.contains(i))
                .collect()
        } else {
            Vec::new()
        };
        let wanted = if spec.indexed() {
            parallelism.min(running.len() + pending.len())
        } else if let Some(c) = spec.completions {
            parallelism.min(c.saturating_sub(succeeded) as usize)
        } else if succeeded > 0 {
            // A work queue with a success: no new pods; those running end.
            pods.active.len()
        } else {
            parallelism
        };
        let mut changed = false;
        if pods.active.len() > wanted {
            // Parallelism lowered: the newest go.
            pods.active
                .sort_by_key(|p| std::cmp::Reverse(p.resource_version));
            for pod in pods.active.drain(..pods.active.len() - wanted) {
                delete_gracefully(store, &pod)?;
                pods.terminating += 1;
                events.push(super::event_of(
                    &ns,
                    "Job",
                    name,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {}", pod.object.metadata().name),
                ));
                changed = true;
            }
            return Ok(changed);
        }
        // podReplacementPolicy Failed: a terminating pod is replaced only
        // once it has gone; TerminatingOrFailed (the default): at once.
        let waiting = if spec.pod_replacement_policy.as_deref() == Some("Failed") {
            pods.terminating
        } else {
            0
        };
        if pods.active.len() + waiting >= wanted {
            return Ok(false);
        }
        if failed > 0 && spec.template.spec.restart_policy == RestartPolicy::Never {
            // As Kubernetes' job controller: the next pod after a failure
            // waits base × 2^(failures − 1), capped.
            let last = pods.failed.iter().map(ended).max();
            if let Some(last) = last {
                let doublings = failed.saturating_sub(1).min(30);
                let delay = self
                    .job_backoff
                    .0
                    .saturating_mul(1 << doublings)
                    .min(self.job_backoff.1);
                let due = left(last, delay);
                if !due.is_zero() {
                    soonest(due);
                    return Ok(false);
                }
            }
        }
        let room = usize::try_from(self.pod_quota.saturating_sub(store.count_active_pods(&ns)?))
            .unwrap_or(usize::MAX);
        let short = wanted - pods.active.len() - waiting;
        if short > room {
            // As a replica set: the namespace's pod quota holds, and says so.
            store.record_event_unless_repeated(&super::event_of(
                &ns,
                "Job",
                name,
                "Warning",
                "FailedCreate",
                &format!(
                    "Error creating: pods \"{name}-…\" are forbidden: exceeded quota: the {} pods \
                     a namespace may hold are running (see --pod-quota)",
                    self.pod_quota
                ),
            ))?;
        }
        let missing = short.min(room);
        let mut indexes = pending.into_iter();
        let mut created = Vec::with_capacity(missing);
        for _ in 0..missing {
            let index = if spec.indexed() {
                match indexes.next() {
                    Some(i) => Some(i),
                    None => break,
                }
            } else {
                None
            };
            created.push(Object::Pod(Box::new(pod_for(job, record, &ns, index))));
        }
        if created.is_empty() {
            return Ok(false);
        }
        store.apply(&created)?;
        events.extend(created.iter().map(|pod| {
            super::event_of(
                &ns,
                "Job",
                name,
                "Normal",
                "SuccessfulCreate",
                &format!("Created pod: {}", pod.metadata().name),
            )
        }));
        Ok(true)
    }
}

/// The job with the selector and pod labels kube-apiserver gives a job
/// that names none: its uid, and its name.
fn selected(job: &Job, uid: &str) -> Job {
    let mut job = job.clone();
    let labels = &mut job.spec.template.metadata.labels;
    for key in [JOB_CONTROLLER_UID, LEGACY_CONTROLLER_UID] {
        labels.insert(key.into(), uid.into());
    }
    for key in [JOB_NAME, LEGACY_JOB_NAME] {
        labels.insert(key.into(), job.metadata.name.clone());
    }
    job.spec.selector = Some(LabelSelector {
        match_labels: [(JOB_CONTROLLER_UID.to_owned(), uid.to_owned())].into(),
        ..LabelSelector::default()
    });
    job
}

/// One pod of `job`: of index `index` for an Indexed job, which it finds
/// in its annotation, label and `JOB_COMPLETION_INDEX`.
fn pod_for(job: &Job, record: &Record, ns: &str, index: Option<u32>) -> Pod {
    let name = &job.metadata.name;
    let mut template = job.spec.template.clone();
    template.spec.node_name = None;
    let mut meta = ObjectMeta {
        name: match index {
            Some(i) => format!("{name}-{i}-{}", random_suffix()),
            None => format!("{name}-{}", random_suffix()),
        },
        namespace: Some(ns.to_owned()),
        labels: template.metadata.labels,
        annotations: template.metadata.annotations,
        owner_references: vec![owner("Job", "batch/v1", record)],
        ..ObjectMeta::default()
    };
    if let Some(i) = index {
        meta.annotations
            .insert(COMPLETION_INDEX.into(), i.to_string());
        meta.labels.insert(COMPLETION_INDEX.into(), i.to_string());
        for c in &mut template.spec.containers {
            c.env.retain(|e| e.name != "JOB_COMPLETION_INDEX");
            c.env.insert(
                0,
                EnvVar {
                    name: "JOB_COMPLETION_INDEX".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        config_map_key_ref: None,
                        secret_key_ref: None,
                        field_ref: Some(ObjectFieldSelector {
                            api_version: Some("v1".into()),
                            field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                        }),
                    }),
                },
            );
        }
    }
    Pod {
        metadata: meta,
        spec: template.spec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_are_written_as_runs_and_read_back() {
        let set: BTreeSet<u32> = [0, 1, 2, 5, 7, 8].into();
        assert_eq!(format_indexes(&set), "0-2,5,7-8");
        assert_eq!(parse_indexes("0-2,5,7-8", 10), set);
        // Indexes past the job's completions are not its own.
        assert_eq!(parse_indexes("0-2,5,7-8", 6), [0, 1, 2, 5].into());
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert!(parse_indexes("", 3).is_empty());
    }
}
