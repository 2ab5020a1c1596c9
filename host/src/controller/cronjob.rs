//! The CronJob controller, as kube-controller-manager's: at each time its
//! schedule names, a job from its template. A run missed (the daemon was
//! down) is made up once, for the latest time missed, unless it is older
//! than `startingDeadlineSeconds`; a run while the last still runs is
//! allowed, skipped (Forbid) or replaces it (Replace). Finished jobs past
//! the history limits go.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::{DateTime, Utc};

use super::{Controllers, owner};
use crate::spec::objects::{ConcurrencyPolicy, CronJob, Job, ObjectMeta};
use crate::spec::schedule::Schedule;
use crate::spec::status::{CronJobStatus, JobStatus};
use crate::spec::{Kind, Object, Status};
use crate::state::{Record, Result, Store};

/// The annotation on a job saying which scheduled time it runs for.
const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// How a job ended, if it has: `Some(true)` complete, `Some(false)` failed.
fn outcome(status: Option<&JobStatus>) -> Option<bool> {
    let holds = |type_: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
    };
    if holds("Complete") {
        Some(true)
    } else if holds("Failed") {
        Some(false)
    } else {
        None
    }
}

fn utc(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl Controllers {
    /// Reconciles one cron job as of `now`; when to look at it again
    /// (its next scheduled time).
    pub(super) fn reconcile_cronjob(
        &self,
        store: &mut Store,
        record: &Record,
        now: DateTime<Utc>,
    ) -> Result<(bool, Option<Duration>)> {
        let Object::CronJob(cron) = &record.object else {
            return Ok((false, None));
        };
        if cron.metadata.deleting() {
            return Ok((self.finish_foreground(store, record)?, None));
        }
        let ns = record.object.namespace().unwrap_or("default").to_owned();
        let name = cron.metadata.name.clone();
        let before = record.status.cron_job();
        let mut changed = false;
        let mut events = Vec::new();
        let event = |type_: &str, reason: &str, message: String| {
            super::event_of(&ns, "CronJob", &name, type_, reason, &message)
        };

        let jobs: Vec<Record> = super::owned(store, Kind::Job, &ns, record)?
            .into_iter()
            .filter(|j| !j.object.metadata().deleting())
            .collect();
        let mut active = Vec::new();
        let mut succeeded = Vec::new();
        let mut failed = Vec::new();
        for job in jobs {
            match outcome(job.status.job()) {
                None => active.push(job),
                Some(true) => succeeded.push(job),
                Some(false) => failed.push(job),
            }
        }
        let mut last_successful = before.and_then(|s| s.last_successful_time.clone());
        for job in &succeeded {
            if let Some(done) = job.status.job().and_then(|s| s.completion_time.clone())
                && last_successful.as_ref().is_none_or(|t| t.0 < done.0)
            {
                last_successful = Some(done);
            }
        }

        // History: the oldest finished jobs past each limit go.
        for (mut finished, limit) in [
            (
                succeeded,
                cron.spec.successful_jobs_history_limit.unwrap_or(3),
            ),
            (failed, cron.spec.failed_jobs_history_limit.unwrap_or(1)),
        ] {
            let limit = limit as usize;
            if finished.len() <= limit {
                continue;
            }
            finished.sort_by(|a, b| {
                (&a.created, a.resource_version).cmp(&(&b.created, b.resource_version))
            });
            for job in &finished[..finished.len() - limit] {
                let job_name = &job.object.metadata().name;
                store.delete(Kind::Job, &ns, job_name)?;
                events.push(event(
                    "Normal",
                    "SuccessfulDelete",
                    format!("Deleted job {job_name}"),
                ));
                changed = true;
            }
        }

        let schedule = match Schedule::parse(&cron.spec.schedule, cron.spec.time_zone.as_deref()) {
            Ok(schedule) => schedule,
            Err((_, message)) => {
                // Checked when applied; a zone the host has since lost.
                events.push(event("Warning", "UnparseableSchedule", message));
                store.record_events(&events)?;
                return Ok((changed, None));
            }
        };
        let mut last_schedule = before.and_then(|s| s.last_schedule_time.clone());
        let suspended = cron.spec.suspend == Some(true);
        if !suspended {
            // The latest time named since the last run (or the cron job's
            // creation), if any: runs missed before it are not made up.
            let since = last_schedule
                .as_ref()
                .map(|t| t.0)
                .or_else(|| utc(&record.created))
                .unwrap_or(now);
            let due = schedule.latest_until(now).filter(|t| *t > since);
            if let Some(due) = due {
                let late = (now - due).to_std().unwrap_or_default();
                let too_late = cron
                    .spec
                    .starting_deadline_seconds
                    .is_some_and(|d| late > Duration::from_secs(d));
                let policy = cron.spec.concurrency_policy.unwrap_or_default();
                if too_late {
                    events.push(event(
                        "Warning",
                        "MissSchedule",
                        format!("Missed scheduled time to start a job: {}", due.to_rfc3339()),
                    ));
                    // As Kubernetes: the missed time counts as scheduled,
                    // so it is not tried again.
                    last_schedule = Some(Time(due));
                } else if policy == ConcurrencyPolicy::Forbid && !active.is_empty() {
                    // Left due: it runs once the running job ends (its end
                    // brings the cron job back), if still within its
                    // deadline.
                } else {
                    if policy == ConcurrencyPolicy::Replace {
                        for job in active.drain(..) {
                            let job_name = &job.object.metadata().name;
                            store.delete(Kind::Job, &ns, job_name)?;
                            events.push(event(
                                "Normal",
                                "SuccessfulDelete",
                                format!("Deleted job {job_name}"),
                            ));
                        }
                    }
                    let job = job_for(cron, record, &ns, due, &schedule);
                    let job_name = job.metadata.name.clone();
                    if store.get(Kind::Job, &ns, &job_name)?.is_none() {
                        store.apply(&[Object::Job(Box::new(job))])?;
                        events.push(event(
                            "Normal",
                            "SuccessfulCreate",
                            format!("Created job {job_name}"),
                        ));
                        if let Some(created) = store.get(Kind::Job, &ns, &job_name)? {
                            active.push(created);
                        }
                    }
                    last_schedule = Some(Time(due));
                    changed = true;
                }
            }
        }

        let status = Status::from(CronJobStatus {
            active: (!active.is_empty()).then(|| {
                active
                    .iter()
                    .map(|job| ObjectReference {
                        api_version: Some("batch/v1".into()),
                        kind: Some("Job".into()),
                        name: Some(job.object.metadata().name.clone()),
                        namespace: Some(ns.clone()),
                        uid: Some(job.uid.clone()),
                        // No resourceVersion: each write to the job would
                        // otherwise rewrite the cron job's status too.
                        ..ObjectReference::default()
                    })
                    .collect()
            }),
            last_schedule_time: last_schedule,
            last_successful_time: last_successful,
        });
        if status != record.status {
            store.set_status(Kind::CronJob, &ns, &name, &status)?;
            changed = true;
        }
        if !events.is_empty() {
            store.record_events(&events)?;
        }
        let next = (!suspended)
            .then(|| schedule.next_after(now))
            .flatten()
            .map(|t| (t - now).to_std().unwrap_or_default());
        Ok((changed, next))
    }
}

/// The job a cron job runs for its time `due`: named by the minute, as
/// Kubernetes names it, so a time is never run twice.
fn job_for(
    cron: &CronJob,
    record: &Record,
    ns: &str,
    due: DateTime<Utc>,
    schedule: &Schedule,
) -> Job {
    let template = &cron.spec.job_template;
    let minutes = due.timestamp().div_euclid(60);
    let mut annotations = template.metadata.annotations.clone();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), schedule.local_text(due));
    Job {
        metadata: ObjectMeta {
            name: format!("{}-{minutes}", cron.metadata.name),
            namespace: Some(ns.to_owned()),
            labels: template.metadata.labels.clone(),
            annotations,
            owner_references: vec![owner("CronJob", "batch/v1", record)],
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
    }
}
