use super::*;
use crate::spec::parse_str;

fn deployment(replicas: u32, image: &str, memory: &str) -> Vec<Object> {
    let text = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: web\n        image: {image}\n        resources: {{requests: {{memory: {memory}}}}}\n"
    );
    parse_str(&text, "d.yaml")
        .unwrap()
        .into_iter()
        .map(|l| l.object)
        .collect()
}

fn controllers() -> Controllers {
    Controllers::new(vec!["a=4,4Gi".parse().unwrap(), "b=4,4Gi".parse().unwrap()])
}

/// What a kubelet would do: every bound pod becomes Ready, and every pod
/// being deleted stops and goes.
fn run_bound_pods(store: &mut Store) {
    for pod in store.list(Kind::Pod, None).unwrap() {
        let Object::Pod(p) = &pod.object else {
            continue;
        };
        let ns = p
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        if p.metadata.deleting() {
            store
                .delete_if(Kind::Pod, &ns, &p.metadata.name, &pod.uid)
                .unwrap();
            continue;
        }
        if p.spec.node_name.is_some() && !pod.status.pod_ready() {
            let status = Status::from_value(
                Kind::Pod,
                serde_json::json!({"phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}]}),
            )
            .unwrap();
            store
                .set_status(Kind::Pod, &ns, &p.metadata.name, &status)
                .unwrap();
        }
    }
}

fn pods_by_rs(store: &Store) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for pod in store.list(Kind::Pod, None).unwrap() {
        let owner = pod.object.metadata().owner_references[0].name.clone();
        *by.entry(owner).or_default() += 1;
    }
    by
}

/// Reconciles (with pods becoming ready) until nothing changes, checking
/// `each` after every pass.
fn settle(store: &mut Store, c: &Controllers, mut each: impl FnMut(&Store)) {
    for _ in 0..100 {
        let changed = c.reconcile(store).unwrap();
        each(store);
        run_bound_pods(store);
        if !changed
            && store
                .list(Kind::Pod, None)
                .unwrap()
                .iter()
                .all(|p| p.status.pod_ready())
        {
            return;
        }
    }
    panic!("the controllers never settled");
}

#[test]
fn a_deployment_makes_a_replicaset_and_scheduled_pods_and_scales() {
    let mut store = Store::in_memory().unwrap();
    let c = controllers();
    store.apply(&deployment(3, "web:1", "64Mi")).unwrap();
    settle(&mut store, &c, |_| {});
    let pods = store.list(Kind::Pod, None).unwrap();
    assert_eq!(pods.len(), 3);
    for pod in &pods {
        let Object::Pod(p) = &pod.object else {
            unreachable!()
        };
        assert!(p.spec.node_name.is_some());
        assert!(p.metadata.labels.contains_key(TEMPLATE_HASH_LABEL));
    }
    let d = store
        .get(Kind::Deployment, "default", "web")
        .unwrap()
        .unwrap();
    assert_eq!(d.status.to_value()["readyReplicas"], 3);
    assert_eq!(d.status.to_value()["updatedReplicas"], 3);

    store.apply(&deployment(5, "web:1", "64Mi")).unwrap();
    settle(&mut store, &c, |_| {});
    assert_eq!(store.list(Kind::Pod, None).unwrap().len(), 5);
    assert_eq!(store.list(Kind::ReplicaSet, None).unwrap().len(), 1);
    store.apply(&deployment(2, "web:1", "64Mi")).unwrap();
    settle(&mut store, &c, |_| {});
    assert_eq!(store.list(Kind::Pod, None).unwrap().len(), 2);

    // Deleting the deployment takes its ReplicaSet and pods along.
    store.delete(Kind::Deployment, "default", "web").unwrap();
    c.reconcile(&mut store).unwrap();
    c.reconcile(&mut store).unwrap();
    run_bound_pods(&mut store);
    assert!(store.list(Kind::ReplicaSet, None).unwrap().is_empty());
    assert!(store.list(Kind::Pod, None).unwrap().is_empty());
}

#[test]
fn a_rolling_update_stays_within_surge_and_unavailability() {
    let mut store = Store::in_memory().unwrap();
    let c = controllers();
    store.apply(&deployment(4, "web:1", "64Mi")).unwrap();
    settle(&mut store, &c, |_| {});
    store.apply(&deployment(4, "web:2", "64Mi")).unwrap();
    // 25% of 4: one pod over, one pod short at most.
    settle(&mut store, &c, |store| {
        // Those stopping (Terminating) count no more, as in Kubernetes.
        let pods: Vec<_> = store
            .list(Kind::Pod, None)
            .unwrap()
            .into_iter()
            .filter(|p| !p.object.metadata().deleting())
            .collect();
        assert!(pods.len() <= 5, "{} pods during the rollout", pods.len());
        let ready = pods.iter().filter(|p| p.status.pod_ready()).count();
        assert!(ready >= 3, "only {ready} ready during the rollout");
    });
    let by_rs = pods_by_rs(&store);
    assert_eq!(by_rs.len(), 1, "all pods on one ReplicaSet: {by_rs:?}");
    let pods = store.list(Kind::Pod, None).unwrap();
    assert!(pods.iter().all(|p| matches!(&p.object,
        Object::Pod(p) if p.spec.containers[0].image == "web:2")));
    let revisions: Vec<u64> = store
        .revisions("default", "web")
        .unwrap()
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(revisions, [1, 2]);
    // The old ReplicaSet stays, scaled to zero, for rollbacks.
    assert_eq!(store.list(Kind::ReplicaSet, None).unwrap().len(), 2);
    let events = store
        .events(Some("default"), Some(("Deployment", "web")))
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.reason == "ScalingReplicaSet" && e.message.contains("to 0"))
    );
}

#[test]
fn a_pod_that_fits_no_node_stays_pending_with_the_reason() {
    let mut store = Store::in_memory().unwrap();
    let c = controllers();
    store.apply(&deployment(1, "web:1", "8Gi")).unwrap();
    for _ in 0..3 {
        c.reconcile(&mut store).unwrap();
    }
    let pods = store.list(Kind::Pod, None).unwrap();
    assert_eq!(pods.len(), 1);
    let Object::Pod(p) = &pods[0].object else {
        unreachable!()
    };
    assert_eq!(p.spec.node_name, None);
    assert_eq!(pods[0].status.to_value()["phase"], "Pending");
    assert_eq!(
        pods[0].status.to_value()["conditions"][0]["message"],
        "0/2 nodes are available: 2 insufficient memory."
    );
    let events = store
        .events(Some("default"), Some(("Pod", &p.metadata.name)))
        .unwrap();
    assert_eq!(events.len(), 1, "reported once, not every pass: {events:?}");
    assert_eq!(events[0].reason, "FailedScheduling");
}

#[test]
fn a_rollout_past_its_deadline_is_reported_not_undone() {
    let mut store = Store::in_memory().unwrap();
    let c = controllers();
    let mut objects = deployment(2, "web:1", "64Mi");
    if let Object::Deployment(d) = &mut objects[0] {
        d.spec.progress_deadline_seconds = 0;
    }
    store.apply(&objects).unwrap();
    // Pods never turn ready: no kubelet runs them here.
    c.reconcile(&mut store).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    c.reconcile(&mut store).unwrap();
    let d = store
        .get(Kind::Deployment, "default", "web")
        .unwrap()
        .unwrap();
    let progressing = &d.status.to_value()["conditions"][1];
    assert_eq!(progressing["status"], "False");
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
    assert_eq!(
        store.list(Kind::Pod, None).unwrap().len(),
        2,
        "nothing is rolled back"
    );
}

/// Reconciles only what the watch reports, until quiet (pods becoming
/// ready as a kubelet would make them).
fn settle_watched(
    store: &mut Store,
    c: &Controllers,
    work: &mut Work,
    changes: &mut crate::state::Cursor,
) {
    for _ in 0..100 {
        c.reconcile_work(store, work, changes).unwrap();
        run_bound_pods(store);
        work.drain(changes);
        if work.is_empty() {
            return;
        }
    }
    panic!("the controllers never settled");
}

#[test]
fn the_watched_controllers_act_on_changes_without_passes_over_everything() {
    let mut store = Store::in_memory().unwrap();
    let c = controllers();
    let now = store.current_version().unwrap();
    let mut changes = store.hub().subscribe(now).unwrap();
    // Nothing but changes from here: no pass over everything.
    let mut work = Work::default();
    store.apply(&deployment(3, "web:1", "64Mi")).unwrap();
    settle_watched(&mut store, &c, &mut work, &mut changes);
    assert_eq!(pods_by_rs(&store).values().sum::<usize>(), 3);
    let d = store
        .get(Kind::Deployment, "default", "web")
        .unwrap()
        .unwrap();
    assert_eq!(
        d.status.to_value()["readyReplicas"],
        3,
        "the pods' readiness reached it"
    );

    // A pod deleted is replaced; a new template rolls out.
    let victim = store.list(Kind::Pod, None).unwrap()[0]
        .object
        .metadata()
        .name
        .clone();
    store.delete(Kind::Pod, "default", &victim).unwrap();
    settle_watched(&mut store, &c, &mut work, &mut changes);
    let pods = store.list(Kind::Pod, None).unwrap();
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| p.object.metadata().name != victim));
    store.apply(&deployment(3, "web:2", "64Mi")).unwrap();
    settle_watched(&mut store, &c, &mut work, &mut changes);
    let by_rs = pods_by_rs(&store);
    assert_eq!(by_rs.len(), 1, "{by_rs:?}");
    assert_eq!(by_rs.values().sum::<usize>(), 3);

    // Deleting the deployment takes its replica sets and pods along.
    store.delete(Kind::Deployment, "default", "web").unwrap();
    settle_watched(&mut store, &c, &mut work, &mut changes);
    assert!(store.list(Kind::ReplicaSet, None).unwrap().is_empty());
    assert!(store.list(Kind::Pod, None).unwrap().is_empty());
}

#[test]
fn falling_behind_the_watch_means_a_pass_over_everything() {
    let mut store = Store::in_memory().unwrap();
    let now = store.current_version().unwrap();
    let mut changes = store.hub().subscribe(now).unwrap();
    // More changes than the watch keeps for a subscriber that never reads.
    for i in 0..8200 {
        let text = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{}}}\n",
            i % 3
        );
        let object = parse_str(&text, "c.yaml").unwrap().remove(0).object;
        let mut object = object;
        if let Object::ConfigMap(cm) = &mut object {
            cm.data.insert("i".into(), i.to_string());
        }
        store.apply(&[object]).unwrap();
    }
    let mut work = Work::default();
    work.drain(&mut changes);
    assert!(work.all);
}

#[test]
fn replicas_past_the_namespace_quota_fail_to_be_created_and_say_so() {
    let mut store = Store::in_memory().unwrap();
    let mut c = controllers();
    c.pod_quota = 4;
    store.apply(&deployment(1_000_000, "web:1", "1Mi")).unwrap();
    for _ in 0..5 {
        c.reconcile(&mut store).unwrap();
    }
    assert_eq!(
        store.list(Kind::Pod, None).unwrap().len(),
        4,
        "the quota, not a million"
    );
    let rs = &store.list(Kind::ReplicaSet, None).unwrap()[0];
    assert_eq!(
        rs.status.to_value()["conditions"][0]["reason"],
        "FailedCreate"
    );
    let d = store
        .get(Kind::Deployment, "default", "web")
        .unwrap()
        .unwrap();
    let failure = d
        .status
        .deployment()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "ReplicaFailure"))
        .expect("the deployment says so too");
    assert!(
        failure
            .message
            .as_deref()
            .is_some_and(|m| m.contains("exceeded quota")),
        "{failure:?}"
    );
    let events = store.events(Some("default"), None).unwrap();
    assert_eq!(
        events.iter().filter(|e| e.reason == "FailedCreate").count(),
        1,
        "one event as it begins, not one a pass"
    );
}

#[test]
fn pods_past_a_nodes_max_pods_stay_pending_with_the_reason() {
    let mut store = Store::in_memory().unwrap();
    let c = Controllers::new(vec!["small=4,4Gi,2".parse().unwrap()]);
    assert_eq!(c.pod_quota, 2);
    let mut c = c;
    c.pod_quota = 100;
    store.apply(&deployment(3, "web:1", "1Mi")).unwrap();
    for _ in 0..5 {
        c.reconcile(&mut store).unwrap();
    }
    let pods = store.list(Kind::Pod, None).unwrap();
    let pending: Vec<_> = pods
        .iter()
        .filter(|p| p.status.to_value()["conditions"][0]["reason"] == "Unschedulable")
        .collect();
    assert_eq!(pods.len(), 3);
    assert_eq!(pending.len(), 1);
    assert!(
        pending[0].status.to_value()["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Too many pods")
    );
}

fn job(spec: &str) -> Vec<Object> {
    let text = format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: work}}\nspec:\n{spec}  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - {{name: c, image: tool:1}}\n"
    );
    parse_str(&text, "job.yaml")
        .unwrap()
        .into_iter()
        .map(|l| l.object)
        .collect()
}

/// What a kubelet would do with run-to-completion pods: each bound one
/// ends, as `outcome` says for its name, and each being deleted goes.
fn finish_bound_pods(store: &mut Store, outcome: impl Fn(&Pod) -> bool) {
    for pod in store.list(Kind::Pod, None).unwrap() {
        let Object::Pod(p) = &pod.object else {
            continue;
        };
        if p.metadata.deleting() {
            store
                .delete_if(Kind::Pod, "default", &p.metadata.name, &pod.uid)
                .unwrap();
            continue;
        }
        if p.spec.node_name.is_some() && pod.status.pod().and_then(|s| s.phase()).is_none() {
            let phase = if outcome(p) { "Succeeded" } else { "Failed" };
            let status =
                Status::from_value(Kind::Pod, serde_json::json!({"phase": phase})).unwrap();
            store
                .set_status(Kind::Pod, "default", &p.metadata.name, &status)
                .unwrap();
        }
    }
}

/// Runs the job's pods to their ends until the job has finished; checks
/// `each` after every pass. The job's status as JSON.
fn run_job(
    store: &mut Store,
    c: &Controllers,
    outcome: impl Fn(&Pod) -> bool,
    mut each: impl FnMut(&Store),
) -> serde_json::Value {
    for _ in 0..200 {
        c.reconcile(store).unwrap();
        each(store);
        let job = store.get(Kind::Job, "default", "work").unwrap().unwrap();
        let status = job.status.to_value();
        let finished = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True");
        if finished {
            return status;
        }
        finish_bound_pods(store, &outcome);
    }
    panic!("the job never finished");
}

fn active_pods_now(store: &Store) -> usize {
    store
        .list(Kind::Pod, None)
        .unwrap()
        .iter()
        .filter(|p| p.status.pod().and_then(|s| s.phase()).is_none())
        .count()
}

#[test]
fn a_job_runs_its_completions_at_most_parallelism_at_once() {
    let mut store = Store::in_memory().unwrap();
    let c = controllers();
    store
        .apply(&job("  completions: 5\n  parallelism: 2\n"))
        .unwrap();
    let mut most = 0;
    let status = run_job(
        &mut store,
        &c,
        |_| true,
        |s| most = most.max(active_pods_now(s)),
    );
    assert_eq!(most, 2);
    assert_eq!(status["succeeded"], 5);
    assert_eq!(status["active"], serde_json::Value::Null);
    assert!(status["completionTime"].is_string());
    let types: Vec<&str> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["SuccessCriteriaMet", "Complete"]);
    assert_eq!(store.list(Kind::Pod, None).unwrap().len(), 5);
    // Its pods are selected by the job's uid, as Kubernetes does.
    let job = store.get(Kind::Job, "default", "work").unwrap().unwrap();
    let Object::Job(j) = &job.object else {
        unreachable!()
    };
    let selector = j.spec.selector.as_ref().unwrap();
    for pod in store.list(Kind::Pod, None).unwrap() {
        assert!(selector.matches(&pod.object.metadata().labels));
        assert_eq!(pod.object.metadata().labels["job-name"], "work");
    }
    // Deleting the job takes its pods.
    store.delete(Kind::Job, "default", "work").unwrap();
    c.reconcile(&mut store).unwrap();
    assert!(store.list(Kind::Pod, None).unwrap().is_empty());
}

#[test]
fn a_job_whose_pods_fail_fails_past_its_backoff_limit() {
    let mut store = Store::in_memory().unwrap();
    let mut c = controllers();
    c.job_backoff = (Duration::ZERO, Duration::ZERO);
    store.apply(&job("  backoffLimit: 2\n")).unwrap();
    let status = run_job(&mut store, &c, |_| false, |_| {});
    assert_eq!(status["failed"], 3);
    let failed = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .unwrap();
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(store.list(Kind::Pod, None).unwrap().len(), 3);
}

#[test]
fn a_failed_pods_replacement_waits_its_back_off() {
    let mut store = Store::in_memory().unwrap();
    let c = controllers(); // 10 s
    store.apply(&job("")).unwrap();
    for _ in 0..5 {
        c.reconcile(&mut store).unwrap();
        finish_bound_pods(&mut store, |_| false);
    }
    // One pod ran and failed; the next waits 10 s.
    assert_eq!(store.list(Kind::Pod, None).unwrap().len(), 1);
    let mut work = Work::default();
    let record = store.get(Kind::Job, "default", "work").unwrap().unwrap();
    let (_, after) = c.reconcile_job(&mut store, &record).unwrap();
    let after = after.expect("a time to look again");
    assert!(
        after <= Duration::from_secs(10) && after > Duration::from_secs(5),
        "{after:?}"
    );
    work.again((Kind::Job, "default".into(), "work".into()), after);
    work.wake_due();
    assert!(work.jobs.is_empty(), "not due yet");
}

#[test]
fn an_indexed_job_runs_each_index_once() {
    let mut store = Store::in_memory().unwrap();
    let c = controllers();
    store
        .apply(&job(
            "  completions: 4\n  parallelism: 3\n  completionMode: Indexed\n",
        ))
        .unwrap();
    let status = run_job(&mut store, &c, |_| true, |_| {});
    assert_eq!(status["completedIndexes"], "0-3");
    let mut indexes: Vec<String> = store
        .list(Kind::Pod, None)
        .unwrap()
        .iter()
        .map(|p| {
            let Object::Pod(pod) = &p.object else {
                unreachable!()
            };
            let index = &pod.metadata.annotations[crate::spec::objects::COMPLETION_INDEX];
            assert!(pod.metadata.name.starts_with(&format!("work-{index}-")));
            let env = &pod.spec.containers[0].env[0];
            assert_eq!(env.name, "JOB_COMPLETION_INDEX");
            index.clone()
        })
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2", "3"]);
}

#[test]
fn a_suspended_job_runs_nothing_until_resumed() {
    let mut store = Store::in_memory().unwrap();
    let c = controllers();
    store.apply(&job("  suspend: true\n")).unwrap();
    for _ in 0..3 {
        c.reconcile(&mut store).unwrap();
    }
    assert!(store.list(Kind::Pod, None).unwrap().is_empty());
    let job_now = store.get(Kind::Job, "default", "work").unwrap().unwrap();
    assert_eq!(
        job_now.status.to_value()["conditions"][0]["reason"],
        "JobSuspended"
    );
    assert!(job_now.status.to_value()["startTime"].is_null());
    let Object::Job(mut j) = job_now.object else {
        unreachable!()
    };
    j.spec.suspend = Some(false);
    store.apply(&[Object::Job(j)]).unwrap();
    let status = run_job(&mut store, &c, |_| true, |_| {});
    assert_eq!(status["succeeded"], 1);
    assert!(status["startTime"].is_string());
}

fn cron_job(extra: &str) -> Vec<Object> {
    let text = format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: tick}}\nspec:\n  schedule: \"* * * * *\"\n  timeZone: UTC\n{extra}  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{{name: c, image: tool:1}}]\n"
    );
    parse_str(&text, "cron.yaml")
        .unwrap()
        .into_iter()
        .map(|l| l.object)
        .collect()
}

/// The cron job's jobs, oldest first.
fn jobs_of_cron(store: &Store) -> Vec<String> {
    let mut jobs: Vec<String> = store
        .list(Kind::Job, None)
        .unwrap()
        .iter()
        .map(|j| j.object.metadata().name.clone())
        .collect();
    jobs.sort();
    jobs
}

fn tick(c: &Controllers, store: &mut Store, now: Utc) {
    let record = store
        .get(Kind::CronJob, "default", "tick")
        .unwrap()
        .unwrap();
    c.reconcile_cronjob(store, &record, now).unwrap();
}

fn finish_job(store: &mut Store, name: &str, complete: bool) {
    let status = Status::from_value(
        Kind::Job,
        serde_json::json!({
            "conditions": [{"type": if complete { "Complete" } else { "Failed" }, "status": "True"}],
            "completionTime": "2026-12-06T00:00:00Z",
        }),
    )
    .unwrap();
    store
        .set_status(Kind::Job, "default", name, &status)
        .unwrap();
}

type Utc = k8s_openapi::chrono::DateTime<k8s_openapi::chrono::Utc>;

/// The start of this minute, far enough from the next that a store made
/// now is made within it.
fn this_minute() -> Utc {
    use k8s_openapi::chrono::{Duration as Span, DurationRound as _, Timelike as _};
    let now = k8s_openapi::chrono::Utc::now();
    if now.second() >= 55 {
        std::thread::sleep(Duration::from_secs(6));
    }
    k8s_openapi::chrono::Utc::now()
        .duration_trunc(Span::minutes(1))
        .unwrap()
}

/// Five seconds into the `n`th minute after `base`.
fn minutes_on(base: Utc, n: i64) -> Utc {
    use k8s_openapi::chrono::Duration as Span;
    base + Span::minutes(n) + Span::seconds(5)
}

#[test]
fn a_cron_job_runs_once_per_scheduled_time_and_keeps_its_history() {
    let base = this_minute();
    let mut store = Store::in_memory().unwrap();
    let c = controllers();
    store
        .apply(&cron_job("  successfulJobsHistoryLimit: 2\n"))
        .unwrap();
    tick(&c, &mut store, minutes_on(base, 0));
    assert!(jobs_of_cron(&store).is_empty(), "nothing due yet");
    tick(&c, &mut store, minutes_on(base, 1));
    tick(&c, &mut store, minutes_on(base, 1));
    let first = jobs_of_cron(&store);
    assert_eq!(first.len(), 1, "one job per time, however often it looks");
    let minute = minutes_on(base, 1).timestamp().div_euclid(60);
    assert_eq!(first[0], format!("tick-{minute}"));
    let cron = store
        .get(Kind::CronJob, "default", "tick")
        .unwrap()
        .unwrap();
    assert_eq!(cron.status.to_value()["active"][0]["name"], first[0]);
    // Allow: the next runs beside it.
    tick(&c, &mut store, minutes_on(base, 2));
    assert_eq!(jobs_of_cron(&store).len(), 2);
    for job in jobs_of_cron(&store) {
        finish_job(&mut store, &job, true);
    }
    tick(&c, &mut store, minutes_on(base, 3));
    tick(&c, &mut store, minutes_on(base, 4));
    for job in jobs_of_cron(&store) {
        finish_job(&mut store, &job, true);
    }
    tick(&c, &mut store, minutes_on(base, 4));
    // Four ran; the two oldest went.
    let kept = jobs_of_cron(&store);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(
        kept[1],
        format!("tick-{}", minutes_on(base, 4).timestamp().div_euclid(60))
    );
    let cron = store
        .get(Kind::CronJob, "default", "tick")
        .unwrap()
        .unwrap();
    assert!(cron.status.to_value()["active"].is_null());
    assert!(cron.status.to_value()["lastSuccessfulTime"].is_string());
}

#[test]
fn forbid_skips_while_a_run_goes_on_and_replace_stops_it() {
    let base = this_minute();
    let mut store = Store::in_memory().unwrap();
    let c = controllers();
    store
        .apply(&cron_job("  concurrencyPolicy: Forbid\n"))
        .unwrap();
    tick(&c, &mut store, minutes_on(base, 1));
    tick(&c, &mut store, minutes_on(base, 2));
    let jobs = jobs_of_cron(&store);
    assert_eq!(jobs.len(), 1, "the second run is skipped: {jobs:?}");
    // Once the first ends, the time still due runs.
    finish_job(&mut store, &jobs[0], true);
    tick(&c, &mut store, minutes_on(base, 2));
    assert_eq!(jobs_of_cron(&store).len(), 2);

    store
        .apply(&cron_job("  concurrencyPolicy: Replace\n"))
        .unwrap();
    tick(&c, &mut store, minutes_on(base, 3));
    let jobs = jobs_of_cron(&store);
    let newest = format!("tick-{}", minutes_on(base, 3).timestamp().div_euclid(60));
    assert!(jobs.contains(&newest), "{jobs:?}");
    let second = format!("tick-{}", minutes_on(base, 2).timestamp().div_euclid(60));
    assert!(
        !jobs.contains(&second),
        "the running one was replaced: {jobs:?}"
    );
}

#[test]
fn missed_runs_are_made_up_once_and_not_past_the_starting_deadline() {
    let base = this_minute();
    let mut store = Store::in_memory().unwrap();
    let c = controllers();
    store.apply(&cron_job("")).unwrap();
    // Down for three hours: one run, for the latest time.
    tick(&c, &mut store, minutes_on(base, 180));
    assert_eq!(
        jobs_of_cron(&store),
        [format!(
            "tick-{}",
            minutes_on(base, 180).timestamp().div_euclid(60)
        )]
    );

    let mut store = Store::in_memory().unwrap();
    store
        .apply(&cron_job("  startingDeadlineSeconds: 2\n"))
        .unwrap();
    // Five seconds past the minute, two allowed: skipped, and said.
    tick(&c, &mut store, minutes_on(base, 1));
    assert!(jobs_of_cron(&store).is_empty());
    let missed = store
        .events(None, None)
        .unwrap()
        .into_iter()
        .any(|e| e.reason == "MissSchedule");
    assert!(missed);
}

fn storage(yaml: &str) -> Vec<Object> {
    parse_str(yaml, "storage.yaml")
        .unwrap()
        .into_iter()
        .map(|l| l.object)
        .collect()
}

const CLAIM_AND_POD: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOncePod]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: one}
spec:
  containers: [{name: c, image: i}]
  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
"#;

#[test]
fn a_claim_of_the_default_class_gets_a_volume_and_its_data_goes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::in_memory().unwrap();
    let mut c = controllers();
    c.volumes_dir = Some(dir.path().to_owned());
    store.apply(&storage(CLAIM_AND_POD)).unwrap();
    c.reconcile(&mut store).unwrap();
    c.reconcile(&mut store).unwrap();
    let claim = store
        .get(Kind::PersistentVolumeClaim, "default", "data")
        .unwrap()
        .unwrap();
    assert_eq!(claim.status.storage_phase(), Some("Bound"));
    let status = claim.status.to_value();
    assert_eq!(status["capacity"]["storage"], "1Gi");
    let volumes = store.list(Kind::PersistentVolume, None).unwrap();
    assert_eq!(volumes.len(), 1);
    let Object::PersistentVolume(pv) = &volumes[0].object else {
        unreachable!()
    };
    assert_eq!(pv.metadata.name, format!("pvc-{}", claim.uid));
    assert_eq!(volumes[0].status.storage_phase(), Some("Bound"));
    let path = std::path::PathBuf::from(pv.spec.path().unwrap());
    assert!(path.is_dir() && path.starts_with(dir.path()));
    // The pod went to a node once its claim was bound.
    let pod = store.get(Kind::Pod, "default", "one").unwrap().unwrap();
    let Object::Pod(p) = &pod.object else {
        unreachable!()
    };
    assert!(p.spec.node_name.is_some());

    // A second pod on a ReadWriteOncePod claim waits, and says why.
    store
        .apply(&storage(
            &CLAIM_AND_POD[CLAIM_AND_POD.find("apiVersion: v1\nkind: Pod").unwrap()..]
                .replace("name: one", "name: two"),
        ))
        .unwrap();
    c.reconcile(&mut store).unwrap();
    let two = store.get(Kind::Pod, "default", "two").unwrap().unwrap();
    let condition = &two.status.to_value()["conditions"][0];
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("ReadWriteOncePod access mode"),
        "{condition}"
    );

    // The claim deleted: its volume (policy Delete) and its data go.
    store
        .delete(Kind::PersistentVolumeClaim, "default", "data")
        .unwrap();
    c.reconcile(&mut store).unwrap();
    assert!(store.list(Kind::PersistentVolume, None).unwrap().is_empty());
    assert!(!path.exists());
}

#[test]
fn a_claim_binds_a_volume_made_by_hand_that_fits_and_waits_when_none_does() {
    let mut store = Store::in_memory().unwrap();
    let c = controllers();
    store
        .apply(&storage(
            r#"
apiVersion: v1
kind: PersistentVolume
metadata: {name: small}
spec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], hostPath: {path: /srv/small}, storageClassName: ""}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: big}
spec: {capacity: {storage: 10Gi}, accessModes: [ReadWriteOnce], hostPath: {path: /srv/big}, storageClassName: ""}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: want}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 5Gi}}, storageClassName: ""}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: many}
spec: {accessModes: [ReadWriteMany], resources: {requests: {storage: 1Gi}}, storageClassName: ""}
"#,
        ))
        .unwrap();
    c.reconcile(&mut store).unwrap();
    c.reconcile(&mut store).unwrap();
    let want = store
        .get(Kind::PersistentVolumeClaim, "default", "want")
        .unwrap()
        .unwrap();
    assert_eq!(want.status.storage_phase(), Some("Bound"));
    let Object::PersistentVolumeClaim(w) = &want.object else {
        unreachable!()
    };
    assert_eq!(
        w.spec.volume_name.as_deref(),
        Some("big"),
        "the one with room"
    );
    let many = store
        .get(Kind::PersistentVolumeClaim, "default", "many")
        .unwrap()
        .unwrap();
    assert_eq!(many.status.storage_phase(), Some("Pending"));
    // Released when its claim goes, kept (Retain, the default by hand).
    store
        .delete(Kind::PersistentVolumeClaim, "default", "want")
        .unwrap();
    c.reconcile(&mut store).unwrap();
    let big = store
        .get(Kind::PersistentVolume, "", "big")
        .unwrap()
        .unwrap();
    assert_eq!(big.status.storage_phase(), Some("Released"));
}

fn stateful_set(replicas: u32, image: &str) -> Vec<Object> {
    storage(&format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web}}
spec:
  replicas: {replicas}
  serviceName: web
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: c, image: "{image}", volumeMounts: [{{name: data, mountPath: /data}}]}}]}}
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}
"#
    ))
}

fn pod_names(store: &Store) -> Vec<String> {
    let mut names: Vec<String> = store
        .list(Kind::Pod, None)
        .unwrap()
        .iter()
        .filter(|p| !p.object.metadata().deleting())
        .map(|p| p.object.metadata().name.clone())
        .collect();
    names.sort();
    names
}

#[test]
fn a_stateful_set_starts_in_order_keeps_claims_and_rolls_out_from_the_top() {
    let mut store = Store::in_memory().unwrap();
    let c = controllers();
    store.apply(&stateful_set(3, "web:1")).unwrap();
    // One at a time: each waits for the one before to be ready.
    let mut seen = Vec::new();
    settle(&mut store, &c, |s| {
        let names = pod_names(s);
        if seen.last() != Some(&names) {
            seen.push(names);
        }
    });
    assert_eq!(
        seen,
        [
            vec!["web-0"],
            vec!["web-0", "web-1"],
            vec!["web-0", "web-1", "web-2"]
        ]
    );
    let mut claims: Vec<String> = store
        .list(Kind::PersistentVolumeClaim, None)
        .unwrap()
        .iter()
        .map(|c| c.object.metadata().name.clone())
        .collect();
    claims.sort();
    assert_eq!(claims, ["data-web-0", "data-web-1", "data-web-2"]);
    let web1 = store.get(Kind::Pod, "default", "web-1").unwrap().unwrap();
    let Object::Pod(p) = &web1.object else {
        unreachable!()
    };
    let claim = p.spec.volumes[0].persistent_volume_claim.as_ref().unwrap();
    assert_eq!(claim.claim_name, "data-web-1");

    // Down to one, the highest first; the claims stay.
    store.apply(&stateful_set(1, "web:1")).unwrap();
    let mut order = Vec::new();
    settle(&mut store, &c, |s| {
        let names = pod_names(s);
        if order.last() != Some(&names) {
            order.push(names);
        }
    });
    assert_eq!(order.first().unwrap(), &vec!["web-0", "web-1"]);
    assert_eq!(pod_names(&store), ["web-0"]);
    assert_eq!(
        store.list(Kind::PersistentVolumeClaim, None).unwrap().len(),
        3
    );

    // A new template: replaced from the top down, one at a time.
    store.apply(&stateful_set(3, "web:1")).unwrap();
    settle(&mut store, &c, |_| {});
    store.apply(&stateful_set(3, "web:2")).unwrap();
    let mut replaced = Vec::new();
    settle(&mut store, &c, |s| {
        for pod in s.list(Kind::Pod, None).unwrap() {
            let Object::Pod(p) = &pod.object else {
                continue;
            };
            if p.spec.containers[0].image == "web:2" && !replaced.contains(&p.metadata.name) {
                replaced.push(p.metadata.name.clone());
            }
        }
    });
    assert_eq!(replaced, ["web-2", "web-1", "web-0"]);
    let set = store
        .get(Kind::StatefulSet, "default", "web")
        .unwrap()
        .unwrap();
    let status = set.status.to_value();
    assert_eq!(status["updatedReplicas"], 3);
    assert_eq!(status["currentRevision"], status["updateRevision"]);
}

#[test]
fn a_job_s_finished_pods_take_no_room_from_its_next_ones() {
    // Room for 20 pods on the node and in the namespace; 50 run, 20 at once.
    let mut store = Store::in_memory().unwrap();
    let c = Controllers::new(vec!["small=4,4Gi,20".parse().unwrap()]);
    store
        .apply(&job("  completions: 50\n  parallelism: 20\n"))
        .unwrap();
    let status = run_job(&mut store, &c, |_| true, |_| {});
    assert_eq!(status["succeeded"], 50);
    assert_eq!(store.list(Kind::Pod, None).unwrap().len(), 50);
}

#[test]
fn a_pod_that_never_ran_is_replaced_after_its_back_off_not_never() {
    let mut store = Store::in_memory().unwrap();
    let mut c = controllers();
    // Times are to the second: a pod made in this one ended at most 1 s ago.
    c.job_backoff = (Duration::from_secs(2), Duration::from_secs(2));
    store
        .apply(&job(
            "  backoffLimit: 3\n  activeDeadlineSeconds: 9223372036854775807\n",
        ))
        .unwrap();
    c.reconcile(&mut store).unwrap();
    c.reconcile(&mut store).unwrap();
    // Failed with no container status, as an image that cannot be pulled.
    finish_bound_pods(&mut store, |_| false);
    c.reconcile(&mut store).unwrap();
    assert_eq!(store.list(Kind::Pod, None).unwrap().len(), 1);
    std::thread::sleep(Duration::from_millis(2100));
    c.reconcile(&mut store).unwrap();
    assert_eq!(
        store.list(Kind::Pod, None).unwrap().len(),
        2,
        "the replacement came once the back-off was over"
    );
}

#[test]
fn a_volume_made_by_hand_never_takes_data_it_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("pvc-someone_default_theirs");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("keep"), "data").unwrap();
    let mut store = Store::in_memory().unwrap();
    let mut c = controllers();
    c.volumes_dir = Some(dir.path().to_owned());
    store
        .apply(&storage(&format!(
            r#"
apiVersion: v1
kind: PersistentVolume
metadata:
  name: sneaky
  annotations: {{pv.kubernetes.io/provisioned-by: berth.dev/local-path}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  hostPath: {{path: {}}}
  claimRef: {{namespace: default, name: gone, uid: nope}}
"#,
            other.display()
        )))
        .unwrap();
    c.reconcile(&mut store).unwrap();
    assert!(store.list(Kind::PersistentVolume, None).unwrap().is_empty());
    assert!(other.join("keep").exists(), "another claim's data stays");
    // And a path that climbs out is refused at once.
    let e = parse_str(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: up}\nspec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], hostPath: {path: /var/lib/berth/volumes/..}}\n",
        "pv.yaml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("without . or .."), "{e}");
}

#[test]
fn a_job_held_back_by_the_pod_quota_says_so_once() {
    let mut store = Store::in_memory().unwrap();
    let c = Controllers::new(vec!["small=4,4Gi,20".parse().unwrap()]);
    store
        .apply(&job("  completions: 30\n  parallelism: 30\n"))
        .unwrap();
    for _ in 0..5 {
        c.reconcile(&mut store).unwrap();
    }
    assert_eq!(store.list(Kind::Pod, None).unwrap().len(), 20);
    let said: Vec<_> = store
        .events(None, Some(("Job", "work")))
        .unwrap()
        .into_iter()
        .filter(|e| e.reason == "FailedCreate")
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].message.contains("exceeded quota"),
        "{}",
        said[0].message
    );
}

#[test]
fn a_volume_made_for_a_claim_by_name_waits_for_it_and_goes_to_no_other() {
    let mut store = Store::in_memory().unwrap();
    let c = controllers();
    store
        .apply(&storage(
            r#"
apiVersion: v1
kind: PersistentVolume
metadata: {name: reserved}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: ""
  hostPath: {path: /srv/reserved}
  claimRef: {namespace: default, name: mine}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: other}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}, storageClassName: ""}
"#,
        ))
        .unwrap();
    c.reconcile(&mut store).unwrap();
    let pv = store
        .get(Kind::PersistentVolume, "", "reserved")
        .unwrap()
        .unwrap();
    assert_eq!(
        pv.status.storage_phase(),
        Some("Available"),
        "kept, not deleted"
    );
    let other = store
        .get(Kind::PersistentVolumeClaim, "default", "other")
        .unwrap()
        .unwrap();
    assert_eq!(other.status.storage_phase(), Some("Pending"));
    store
        .apply(&storage(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: mine}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}, storageClassName: \"\"}\n",
        ))
        .unwrap();
    c.reconcile(&mut store).unwrap();
    c.reconcile(&mut store).unwrap();
    let mine = store
        .get(Kind::PersistentVolumeClaim, "default", "mine")
        .unwrap()
        .unwrap();
    assert_eq!(mine.status.storage_phase(), Some("Bound"));
}

#[test]
fn a_deadline_of_centuries_is_never_due_and_never_overflows_the_work_queue() {
    let mut store = Store::in_memory().unwrap();
    let c = controllers();
    store
        .apply(&job("  activeDeadlineSeconds: 9223372036854775807\n"))
        .unwrap();
    let mut changes = store.hub().subscribe(0).unwrap();
    let mut work = Work::everything();
    for _ in 0..3 {
        c.reconcile_work(&mut store, &mut work, &mut changes)
            .unwrap();
        work.everything_too();
    }
    let job = store.get(Kind::Job, "default", "work").unwrap().unwrap();
    assert!(job.status.to_value()["conditions"].is_null());
}

#[test]
fn a_replicaset_counts_and_scales_only_the_pods_of_its_namespace() {
    let mut store = Store::in_memory().unwrap();
    let c = controllers();
    store.apply(&deployment(2, "web:1", "64Mi")).unwrap();
    settle(&mut store, &c, |_| {});
    let rs = store.list(Kind::ReplicaSet, None).unwrap().remove(0);
    // A pod elsewhere naming the ReplicaSet as its controller (a copy
    // applied to another namespace) is not one of its replicas.
    let foreign = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: other}}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: stray\n  namespace: other\n  ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: {}, uid: {}, controller: true}}]\nspec:\n  containers: [{{name: web, image: 'web:1'}}]\n",
        rs.object.metadata().name,
        rs.uid
    );
    let objects: Vec<Object> = parse_str(&foreign, "stray.yaml")
        .unwrap()
        .into_iter()
        .map(|l| l.object)
        .collect();
    store.apply(&objects).unwrap();
    store.apply(&deployment(1, "web:1", "64Mi")).unwrap();
    settle(&mut store, &c, |_| {});
    let own: Vec<Record> = store
        .list(Kind::Pod, Some("default"))
        .unwrap()
        .into_iter()
        .filter(|p| !p.object.metadata().deleting())
        .collect();
    assert_eq!(own.len(), 1);
    assert!(
        store.get(Kind::Pod, "other", "stray").unwrap().is_some(),
        "the stray pod is not the ReplicaSet's to delete"
    );
    let rs = store
        .get(Kind::ReplicaSet, "default", &rs.object.metadata().name)
        .unwrap()
        .unwrap();
    assert_eq!(rs.status.to_value()["replicas"], 1);
    assert_eq!(rs.status.to_value()["readyReplicas"], 1);
}
