//! A pod's init containers, before its app containers start.
//!
//! They run one after another, each to completion, in the pod's sandbox
//! (its volumes, its network), as Kubernetes runs them: one that fails is
//! run again with the pod's back-off (`Init:CrashLoopBackOff`) unless the
//! pod's restartPolicy is Never, which fails the pod (`Init:Error`). An
//! init container with `restartPolicy: Always` is a sidecar: started in its
//! turn, it keeps running (restarted whenever it ends) beside the app
//! containers, through their restarts, and stops after them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use k8s_openapi::api::core::v1::PodStatus as KubePodStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio_util::sync::CancellationToken;

use super::board::Board;
use super::sandbox::Sandbox;
use super::{Context, StartFailure, Stopped, count, not_running, start, supervise, waiting_reason};
use crate::spec::objects::{Container, Pod, RestartPolicy};
use crate::spec::status::{
    self, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodStatus, pod_condition,
};

/// The pod's running sidecars, in the order they started.
#[derive(Default)]
pub(super) struct Sidecars {
    kept: Vec<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Sidecars {
    /// Stops them, the last started first, each within the pod's grace
    /// period (read when each stops: a deletion may shorten it).
    pub async fn stop(self) {
        for (stop, task) in self.kept.into_iter().rev() {
            stop.cancel();
            let _ = task.await;
        }
    }
}

/// What a pod's run needs to run its containers: shared by its tasks.
#[derive(Clone)]
pub(super) struct PodRun {
    pub context: Context,
    pub board: Arc<Board>,
    pub sandbox: Arc<Sandbox>,
    pub pod: Arc<Pod>,
    /// The pod's grace period, as the spec or a deletion says.
    pub stop_grace: Arc<AtomicU64>,
    pub started_at: Time,
}

impl PodRun {
    fn grace(&self) -> Duration {
        Duration::from_secs(self.stop_grace.load(Ordering::Relaxed))
    }

    fn spec_grace(&self) -> Duration {
        Duration::from_secs(self.pod.spec.termination_grace_period_seconds)
    }
}

/// Runs the init containers; the sidecars running when all are done, or
/// None if the pod's run is over (deleted, or failed for good: then its
/// status says so and this returns once the pod is deleted).
/// `initialized`: the statuses of init containers a daemon before this one
/// ran to success for the pod; they are not run again (its sidecars are
/// started, or adopted, as ever).
pub(super) async fn initialize(
    run: &PodRun,
    cancel: &CancellationToken,
    initialized: Option<Vec<ContainerStatus>>,
) -> Option<Sidecars> {
    let pod = &run.pod;
    let mut sidecars = Sidecars::default();
    if pod.spec.init_containers.is_empty() {
        return Some(sidecars);
    }
    let done_before = |name: &str| {
        initialized
            .as_ref()?
            .iter()
            .find(|s| s.name == name)
            .cloned()
    };
    if initialized.is_none() {
        run.board.apps(initializing(pod, &run.started_at), false);
    }
    for (index, container) in pod.spec.init_containers.iter().enumerate() {
        let status = done_before(&container.name)
            .unwrap_or_else(|| waiting(container, 0, "PodInitializing", None));
        run.board.init(index, status);
    }
    for (index, container) in pod.spec.init_containers.iter().enumerate() {
        let done = if container.is_sidecar() {
            let stop = CancellationToken::new();
            let (started, mut is_started) = tokio::sync::watch::channel(false);
            let first_run = done_before(&container.name)
                .map_or(0, |s| u32::try_from(s.restart_count).unwrap_or(0));
            let task = tokio::spawn(keep_sidecar(
                run.clone(),
                index,
                stop.clone(),
                started,
                first_run,
            ));
            sidecars.kept.push((stop, task));
            // The next starts once this one has (its startup probe passed).
            tokio::select! {
                _ = cancel.cancelled() => Done::Deleted,
                _ = is_started.wait_for(|s| *s) => Done::Completed,
            }
        } else if initialized.is_some() {
            Done::Completed
        } else {
            complete(run, index, container, cancel).await
        };
        match done {
            Done::Completed => {}
            Done::Deleted => {
                sidecars.stop().await;
                return None;
            }
            Done::Failed(status) => {
                sidecars.stop().await;
                run.board.apps(*status, false);
                cancel.cancelled().await;
                return None;
            }
        }
    }
    Some(sidecars)
}

enum Done {
    Completed,
    Deleted,
    /// Failed with the pod's restartPolicy Never: the pod's last status.
    Failed(Box<PodStatus>),
}

/// Runs init container `index` until it completes, again after each
/// failure (with back-off) unless the pod never restarts.
async fn complete(
    run: &PodRun,
    index: usize,
    container: &Container,
    cancel: &CancellationToken,
) -> Done {
    let (context, pod, board) = (&run.context, &run.pod, &run.board);
    let mut runs: u32 = 0;
    let mut failures: u32 = 0;
    let mut last: Option<ContainerStateTerminated> = None;
    loop {
        let attempt = cancel.child_token();
        let started = start::start_one(
            context,
            &run.sandbox,
            pod,
            container,
            attempt.clone(),
            run.spec_grace(),
            runs,
        )
        .await;
        let failure = match started {
            Ok(running) => {
                context.event(
                    board.uid(),
                    pod,
                    "Normal",
                    "Started",
                    &format!("Started init container {}", container.name),
                );
                let since = status::now();
                board.init(
                    index,
                    running_status(container, runs, &since, false, last.clone()),
                );
                let exited = tokio::select! {
                    _ = cancel.cancelled() => None,
                    exited = running.workload.exited() => Some(exited),
                };
                if exited.is_none() {
                    running.workload.stop(run.grace()).await;
                }
                attempt.cancel();
                let _ = running.serving.await;
                let Some(exited) = exited else {
                    return Done::Deleted;
                };
                let ended = ContainerStateTerminated {
                    exit_code: exited.code,
                    reason: Some(exited.reason.into()),
                    message: exited.detail.clone(),
                    started_at: Some(since),
                    finished_at: Some(status::now()),
                    ..ContainerStateTerminated::default()
                };
                if exited.code == 0 {
                    board.init(index, terminated(container, runs, ended, last));
                    return Done::Completed;
                }
                context.event(
                    board.uid(),
                    pod,
                    "Warning",
                    "Exited",
                    &format!(
                        "Init container {} exited with code {} ({})",
                        container.name, exited.code, exited.reason
                    ),
                );
                let message = match &exited.detail {
                    Some(detail) => format!(
                        "init container {} could not run (code {}): {detail}",
                        container.name, exited.code
                    ),
                    None => format!(
                        "init container {} exited with code {}",
                        container.name, exited.code
                    ),
                };
                if pod.spec.restart_policy == RestartPolicy::Never {
                    board.init(index, terminated(container, runs, ended, last));
                    return Done::Failed(Box::new(failed(pod, &run.started_at, message)));
                }
                last = Some(ended);
                runs += 1;
                StartFailure {
                    reason: exited.reason,
                    message,
                }
            }
            Err(failure) => {
                context.event(board.uid(), pod, "Warning", "Failed", &failure.message);
                if pod.spec.restart_policy == RestartPolicy::Never {
                    board.init(
                        index,
                        waiting(container, runs, failure.reason, Some(&failure.message)),
                    );
                    return Done::Failed(Box::new(failed(pod, &run.started_at, failure.message)));
                }
                failure
            }
        };
        failures += 1;
        let delay = context.backoff.delay(failures);
        board.init(index, backing_off(container, runs, &failure, delay, &last));
        if !delay.is_zero() {
            context.event(
                board.uid(),
                pod,
                "Warning",
                "BackOff",
                &format!(
                    "Back-off {delay:?} restarting failed init container {}",
                    container.name
                ),
            );
        }
        tokio::select! {
            _ = cancel.cancelled() => return Done::Deleted,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Keeps sidecar `index` running until `stop`: probed as an app
/// container is, restarted (with back-off) whenever it ends or fails its
/// liveness probe, whatever the pod's restartPolicy. `started` is set once
/// it has started (passed its startup probe, if it has one).
async fn keep_sidecar(
    run: PodRun,
    index: usize,
    stop: CancellationToken,
    started: tokio::sync::watch::Sender<bool>,
    first_run: u32,
) {
    let (context, pod, board) = (&run.context, &run.pod, &run.board);
    let container = &pod.spec.init_containers[index];
    // From the run a daemon before this one left running, to adopt it.
    let mut runs: u32 = first_run;
    let mut failures: u32 = 0;
    let mut last: Option<ContainerStateTerminated> = None;
    loop {
        let attempt = stop.child_token();
        let failure = match start::start_one(
            context,
            &run.sandbox,
            pod,
            container,
            attempt.clone(),
            run.spec_grace(),
            runs,
        )
        .await
        {
            Ok(running) => {
                context.event(
                    board.uid(),
                    pod,
                    "Normal",
                    "Started",
                    &format!("Started sidecar container {}", container.name),
                );
                let slot = pod
                    .spec
                    .sidecars()
                    .zip(&run.sandbox.sidecars)
                    .find(|(c, _)| c.name == container.name)
                    .map(|(_, slot)| slot.clone());
                if let Some(slot) = &slot {
                    slot.set(Some(running.workload.clone()));
                }
                let mut running = [running];
                start::serve_wasm_ports_in_pod_network(
                    &run.sandbox,
                    &mut running,
                    &attempt,
                    run.spec_grace(),
                );
                let since = status::now();
                let ran_from = tokio::time::Instant::now();
                let stopped = supervise(
                    context,
                    board.uid(),
                    pod,
                    &running,
                    std::slice::from_ref(container),
                    &stop,
                    |observed| {
                        let o = &observed[0];
                        if o.started {
                            started.send_replace(true);
                        }
                        let mut shown =
                            running_status(container, runs, &since, o.ready, last.clone());
                        shown.started = Some(o.started);
                        board.init(index, shown);
                    },
                )
                .await;
                if ran_from.elapsed() >= context.backoff.reset {
                    failures = 0;
                }
                let [running] = running;
                if let Some(slot) = &slot {
                    slot.set(None);
                }
                // Handing over: left for the next daemon to adopt.
                if run.sandbox.leave.load(Ordering::SeqCst) && running.workload.leave_running() {
                    attempt.cancel();
                    let _ = running.serving.await;
                    return;
                }
                running.workload.stop(run.grace()).await;
                let exited = running.workload.exited().now_or_never();
                attempt.cancel();
                let _ = running.serving.await;
                let ended = ContainerStateTerminated {
                    exit_code: exited.as_ref().map_or(0, |e| e.code),
                    reason: Some(exited.as_ref().map_or("Completed", |e| e.reason).into()),
                    message: exited.as_ref().and_then(|e| e.detail.clone()),
                    started_at: Some(since),
                    finished_at: Some(status::now()),
                    ..ContainerStateTerminated::default()
                };
                runs += 1;
                match stopped {
                    Stopped::Deleted => {
                        board.init(index, terminated(container, runs - 1, ended, last));
                        return;
                    }
                    Stopped::Exited(name, exited) => {
                        context.event(
                            board.uid(),
                            pod,
                            "Warning",
                            "Exited",
                            &format!(
                                "Sidecar container {name} exited with code {} ({}), \
                                 will be restarted",
                                exited.code, exited.reason
                            ),
                        );
                        last = Some(ended);
                        StartFailure {
                            reason: exited.reason,
                            message: format!(
                                "sidecar container {name} exited with code {}",
                                exited.code
                            ),
                        }
                    }
                    Stopped::Unhealthy(name) => {
                        last = Some(ended);
                        StartFailure {
                            reason: "Unhealthy",
                            message: format!("sidecar container {name} failed its liveness probe"),
                        }
                    }
                }
            }
            Err(failure) => {
                context.event(board.uid(), pod, "Warning", "Failed", &failure.message);
                failure
            }
        };
        failures += 1;
        let delay = context.backoff.delay(failures);
        board.init(index, backing_off(container, runs, &failure, delay, &last));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The pod while its init containers run: Pending, not Initialized, its
/// app containers waiting.
fn initializing(pod: &Pod, started_at: &Time) -> PodStatus {
    let statuses = pod
        .spec
        .containers
        .iter()
        .map(|c| waiting(c, 0, "PodInitializing", None))
        .collect();
    PodStatus {
        kube: KubePodStatus {
            phase: Some("Pending".into()),
            host_ip: Some("127.0.0.1".into()),
            pod_ip: Some("127.0.0.1".into()),
            start_time: Some(started_at.clone()),
            conditions: Some(vec![
                pod_condition("PodScheduled", true),
                pod_condition("Initialized", false),
                pod_condition("ContainersReady", false),
                pod_condition("Ready", false),
            ]),
            container_statuses: Some(statuses),
            ..KubePodStatus::default()
        },
        ..PodStatus::default()
    }
}

/// The pod failed for good in an init container (restartPolicy Never).
fn failed(pod: &Pod, started_at: &Time, message: String) -> PodStatus {
    let mut status = initializing(pod, started_at);
    status.kube.phase = Some("Failed".into());
    status.kube.message = Some(message);
    status
}

fn waiting(c: &Container, runs: u32, reason: &str, message: Option<&str>) -> ContainerStatus {
    not_running(
        c,
        runs,
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: message.map(str::to_owned),
            }),
            ..ContainerState::default()
        },
    )
}

/// A container waiting out its back-off after `failure`, its last run
/// (if it ran) shown as its last state.
fn backing_off(
    c: &Container,
    runs: u32,
    failure: &StartFailure,
    delay: Duration,
    last: &Option<ContainerStateTerminated>,
) -> ContainerStatus {
    let reason = waiting_reason(failure.reason, delay);
    let mut shown = waiting(c, runs, reason, Some(&failure.message));
    shown.last_state = last_state(last.clone());
    shown
}

fn last_state(last: Option<ContainerStateTerminated>) -> Option<ContainerState> {
    last.map(|t| ContainerState {
        terminated: Some(t),
        ..ContainerState::default()
    })
}

fn running_status(
    c: &Container,
    runs: u32,
    since: &Time,
    ready: bool,
    last: Option<ContainerStateTerminated>,
) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        ready,
        started: Some(true),
        restart_count: count(runs),
        state: Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(since.clone()),
            }),
            ..ContainerState::default()
        }),
        last_state: last_state(last),
        ..ContainerStatus::default()
    }
}

fn terminated(
    c: &Container,
    runs: u32,
    ended: ContainerStateTerminated,
    last: Option<ContainerStateTerminated>,
) -> ContainerStatus {
    let mut shown = not_running(
        c,
        runs,
        ContainerState {
            terminated: Some(ended),
            ..ContainerState::default()
        },
    );
    shown.last_state = last_state(last);
    shown
}
