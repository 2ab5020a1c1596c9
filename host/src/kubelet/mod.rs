//! The node agent: runs the pods the scheduler bound to this host's nodes,
//! and reports their status, as the kubelet does.
//!
//! Each pod gets a worker task. It resolves the pod's images (pulling what
//! the local store lacks), gives every container only what its spec
//! grants (env, with ConfigMap and Secret references resolved; volumes;
//! outbound hosts from the pod's `berth.dev/allow-outbound` annotation;
//! its memory limit) and starts it on the wasm runtime, each container a
//! workload of its own with its own instance pool and loopback listener.
//! A pod that fails to start is retried with Kubernetes' back-off (10s,
//! 20s, 40s … capped at 5 min, shorter in tests) and shown as
//! CrashLoopBackOff meanwhile. When the pod's object is deleted, its
//! listeners stop accepting, in-flight requests drain (up to the grace
//! period), and its volumes are removed.

mod board;
mod dns;
mod init;
mod probe;
mod reports;
mod sandbox;
mod start;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::runtime::wasm::WasmRuntime;
use crate::spec::objects::{Pod, RestartPolicy};
use crate::spec::status::{
    self, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodStatus, pod_condition,
};
use crate::spec::{Kind, Object, Status};
use crate::state::Event;
use crate::state::Shared as ApiState;
use k8s_openapi::api::core::v1::PodStatus as KubePodStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub use crate::state::log_path;

/// The end of a failed container's log, when its
/// `terminationMessagePolicy` is `FallbackToLogsOnError`: what the kubelet
/// reports as its message (the last 80 lines, at most 2048 bytes).
fn log_tail_if_asked(
    pod: &Pod,
    pod_dir: &std::path::Path,
    container: &str,
    run: u32,
) -> Option<String> {
    const LINES: usize = 80;
    const BYTES: usize = 2048;
    let spec = pod.spec.containers.iter().find(|c| c.name == container)?;
    if spec.termination_message_policy.as_deref() != Some("FallbackToLogsOnError") {
        return None;
    }
    // Its end only: 80 lines fit in far less, and a log may hold 10 MiB.
    let log = {
        use std::io::{Read as _, Seek as _};
        let mut file = std::fs::File::open(log_path(pod_dir, container, run)).ok()?;
        let size = file.metadata().ok()?.len();
        file.seek(std::io::SeekFrom::Start(size.saturating_sub(64 << 10)))
            .ok()?;
        let mut end = Vec::new();
        file.read_to_end(&mut end).ok()?;
        end
    };
    let text = String::from_utf8_lossy(&log);
    let lines: Vec<&str> = text.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(LINES)..].join("\n");
    if tail.len() > BYTES {
        let mut cut = tail.len() - BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail.drain(..cut);
    }
    (!tail.is_empty()).then_some(tail)
}

/// A pod the kubelet is to run, as the store has it.
struct Wanted {
    pod: Pod,
    generation: u64,
    /// Its restarts so far: the run it goes on from.
    restarts: u32,
    /// Its init containers' statuses, when they have all run (see
    /// [`initialized`]).
    initialized: Option<Vec<ContainerStatus>>,
}

/// The statuses of `pod`'s init containers when `status` says each that is
/// not a sidecar ran to success: a pod a daemon before this one had
/// initialized (and whose app containers it may adopt), which is not
/// initialized again, as the kubelet does not while the pod's sandbox
/// stands.
fn initialized(pod: &Pod, status: &PodStatus) -> Option<Vec<ContainerStatus>> {
    let statuses = status.kube.init_container_statuses.as_ref()?;
    let done = pod.spec.init_containers.iter().all(|container| {
        container.is_sidecar()
            || statuses.iter().any(|s| {
                s.name == container.name
                    && s.state
                        .as_ref()
                        .and_then(|state| state.terminated.as_ref())
                        .is_some_and(|t| t.exit_code == 0)
            })
    });
    (done && !pod.spec.init_containers.is_empty()).then(|| statuses.clone())
}

/// Restart back-off: `base`, doubling, at most `cap`; forgotten once a pod
/// has run for `reset`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    pub reset: Duration,
}

impl Backoff {
    /// The wait before restart number `restarts` (1-based); the first
    /// restart is immediate, as Kubernetes does.
    pub fn delay(&self, restarts: u32) -> Duration {
        if restarts <= 1 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(restarts - 2).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(300),
            // As Kubernetes: ten minutes of running.
            reset: Duration::from_secs(600),
        }
    }
}

struct Worker {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// The pod's generation it runs; a new one (a new image) replaces it.
    generation: u64,
    labels: std::collections::BTreeMap<String, String>,
    /// The seconds its containers get to stop: the pod's
    /// terminationGracePeriodSeconds, or a deletion's own grace period.
    grace: Arc<std::sync::atomic::AtomicU64>,
    /// Set when the daemon hands over while this run goes on: its
    /// containers that can outlive the daemon are left for the next to
    /// adopt. (Only such runs: one stopping for its deletion or its
    /// replacement stops as ever.)
    leave: Arc<std::sync::atomic::AtomicBool>,
}

/// What every pod worker needs.
#[derive(Clone)]
pub(crate) struct Context {
    pub state: Arc<ApiState>,
    /// Where statuses and events go (written off the async workers).
    reports: reports::Reporter,
    /// Pods starting at once.
    pub starting: Arc<tokio::sync::Semaphore>,
    pub runtime: Arc<WasmRuntime>,
    pub pods_dir: PathBuf,
    pub backoff: Backoff,
    /// Where running pods are registered as endpoints for services.
    pub routes: Arc<crate::router::Table>,
    /// How long a request waits for a service to have a ready endpoint.
    pub endpoint_wait: Duration,
    /// Linux pods' way to Services (see `Ingress::serve_pod_network`).
    pub ingress: Arc<crate::router::Ingress>,
    /// The host's resolver settings, which Linux pods' are made from.
    pub resolv_conf: PathBuf,
    /// Images resolved, by reference, with the store index they were
    /// resolved against (its mtime and size).
    pub images: Arc<parking_lot::Mutex<HashMap<String, (ImageStamp, start::Ready)>>>,
    /// The running Linux containers, for `kubectl exec`.
    pub execs: Arc<crate::runtime::linux::ExecTargets>,
}

pub(crate) type ImageStamp = (std::time::SystemTime, u64);

/// What the kubelet tells the router: the table pods join, and how long
/// guests' service calls wait for an endpoint.
pub struct Routing {
    pub table: Arc<crate::router::Table>,
    pub endpoint_wait: Duration,
    /// What gives Linux pods their way to Services.
    pub ingress: Arc<crate::router::Ingress>,
    /// The host's resolver settings, which Linux pods' are made from (the
    /// kubelet's `--resolv-conf`).
    pub resolv_conf: PathBuf,
}

pub struct Kubelet {
    context: Context,
    nodes: BTreeSet<String>,
    workers: HashMap<String, Worker>,
    /// Workers of updated pods, stopping before their successors start,
    /// with the run number the successor starts from.
    replacing: HashMap<String, (tokio::task::JoinHandle<()>, u32)>,
    /// Workers of deleted pods, stopping (draining), then their directories
    /// going.
    stopping: tokio_util::task::TaskTracker,
    /// The store's spec version the workers were last synced to.
    synced: Option<u64>,
    /// Pods being deleted whose workers are stopping: deleted once stopped.
    terminating: std::collections::HashSet<String>,
    /// Handing over: the runs `stop_all` stops leave their containers.
    leaving: bool,
}

impl Kubelet {
    pub fn new(
        state: Arc<ApiState>,
        runtime: Arc<WasmRuntime>,
        nodes: BTreeSet<String>,
        pods_dir: PathBuf,
        backoff: Backoff,
        routing: Routing,
    ) -> Kubelet {
        Kubelet {
            context: Context {
                starting: Arc::new(tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
                )),
                reports: reports::Reporter::start(state.clone()),
                state,
                runtime,
                pods_dir,
                backoff,
                routes: routing.table,
                endpoint_wait: routing.endpoint_wait,
                ingress: routing.ingress,
                resolv_conf: routing.resolv_conf,
                images: Arc::default(),
                execs: Arc::default(),
            },
            nodes,
            workers: HashMap::new(),
            replacing: HashMap::new(),
            stopping: tokio_util::task::TaskTracker::new(),
            synced: None,
            terminating: Default::default(),
            leaving: false,
        }
    }

    /// The running Linux containers, for the API's exec.
    pub fn exec_targets(&self) -> Arc<crate::runtime::linux::ExecTargets> {
        self.context.execs.clone()
    }

    /// Starts workers for newly bound pods and stops those of pods that
    /// are gone.
    pub fn sync(&mut self) {
        // This node's pods that are to run (by uid); of them, those whose
        // worker is to start (none yet, or a new spec), copied out of the
        // store; and those running whose labels changed.
        let mut present: HashSet<String> = HashSet::new();
        let mut wanted: HashMap<String, Wanted> = HashMap::new();
        let mut relabeled: Vec<(String, BTreeMap<String, String>)> = Vec::new();
        // Pods being deleted (by uid: namespace, name, grace period): they
        // stop, then the kubelet deletes them, as Kubernetes' does.
        let mut deleting: HashMap<String, (Pod, u64)> = HashMap::new();
        let visited = {
            let store = self.context.state.store.lock();
            let version = store.spec_version_of(Kind::Pod);
            // Status changes (most of them, while pods start) are not ours.
            if self.synced == Some(version) && self.replacing.is_empty() {
                return;
            }
            self.synced = Some(version);
            // Read where they are parsed: of ten thousand pods running
            // unchanged, none is copied.
            store.visit(Kind::Pod, |visited| {
                let Object::Pod(pod) = visited.object else {
                    return;
                };
                if !self.runs_here(pod) {
                    return;
                }
                let uid = visited.uid;
                if pod.metadata.deleting() {
                    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
                    deleting.insert(uid.to_owned(), ((**pod).clone(), grace));
                    return;
                }
                present.insert(uid.to_owned());
                if let Some(worker) = self.workers.get(uid)
                    && worker.generation == visited.generation
                {
                    // Labels are metadata, not spec: a running pod takes
                    // new ones in place, and the services selecting it
                    // follow.
                    if worker.labels != pod.metadata.labels {
                        relabeled.push((uid.to_owned(), pod.metadata.labels.clone()));
                    }
                    return;
                }
                let status = visited.status.pod();
                wanted.insert(
                    uid.to_owned(),
                    Wanted {
                        pod: (**pod).clone(),
                        generation: visited.generation,
                        restarts: status.map_or(0, PodStatus::restarts),
                        initialized: status.and_then(|status| initialized(pod, status)),
                    },
                );
            })
        };
        if let Err(e) = visited {
            tracing::error!("listing pods: {e}");
            self.synced = None;
            return;
        }
        for (uid, labels) in relabeled {
            if let Some(worker) = self.workers.get_mut(&uid) {
                self.context.routes.relabel(&uid, &labels);
                worker.labels = labels;
            }
        }
        let gone: Vec<String> = self
            .workers
            .keys()
            .filter(|uid| !present.contains(*uid))
            .cloned()
            .collect();
        // Those whose workers are stopping stay until they have stopped.
        self.terminating.retain(|uid| deleting.contains_key(uid));
        for uid in gone {
            if let Some(worker) = self.workers.remove(&uid) {
                let finish = deleting.remove(&uid).map(|(pod, grace)| {
                    self.terminating.insert(uid.clone());
                    worker
                        .grace
                        .store(grace, std::sync::atomic::Ordering::Relaxed);
                    // As the kubelet tells of a deletion: one event per
                    // container of the spec, so `describe` and the dashboard
                    // show why the pod went.
                    for container in &pod.spec.containers {
                        self.context.event(
                            &uid,
                            &pod,
                            "Normal",
                            "Killing",
                            &format!("Stopping container {}", container.name),
                        );
                    }
                    (
                        pod.metadata.namespace.clone().unwrap_or_default(),
                        pod.metadata.name.clone(),
                    )
                });
                worker.cancel.cancel();
                let dir = self.context.pods_dir.join(&uid);
                let state = self.context.state.clone();
                self.stopping.spawn(async move {
                    let _ = worker.task.await;
                    let _ =
                        tokio::task::spawn_blocking(move || sandbox::remove_pod_dir(&dir)).await;
                    if let Some((namespace, name)) = finish {
                        finish_deletion(state, namespace, name, uid).await;
                    }
                });
            }
        }
        // Being deleted, and nothing of them runs (never started, or not
        // since a restart): they go now.
        let idle: Vec<(String, String, String)> = deleting
            .into_iter()
            .filter(|(uid, _)| {
                !self.workers.contains_key(uid)
                    && !self.terminating.contains(uid)
                    && self
                        .replacing
                        .get(uid)
                        .is_none_or(|(task, _)| task.is_finished())
            })
            .map(|(uid, (pod, _))| {
                let namespace = pod.metadata.namespace.unwrap_or_default();
                (uid, namespace, pod.metadata.name)
            })
            .collect();
        for (uid, namespace, name) in idle {
            let state = self.context.state.clone();
            // A daemon killed while it stopped the pod may have left its
            // Linux containers running: they end with its directory.
            let dir = self.context.pods_dir.join(&uid);
            self.stopping.spawn(async move {
                let _ = tokio::task::spawn_blocking(move || sandbox::remove_pod_dir(&dir)).await;
                finish_deletion(state, namespace, name, uid).await;
            });
        }
        // A pod deleted while its old run stopped: once stopped, its
        // directory goes as any deleted pod's does.
        let pods_dir = &self.context.pods_dir;
        let mut stopped = Vec::new();
        self.replacing.retain(|uid, (task, _)| {
            let keep = present.contains(uid) || !task.is_finished();
            if !keep {
                stopped.push(pods_dir.join(uid));
            }
            keep
        });
        // Off the sync: ending containers a killed daemon left takes up to
        // their grace each.
        for dir in stopped {
            self.stopping.spawn(async move {
                let _ = tokio::task::spawn_blocking(move || sandbox::remove_pod_dir(&dir)).await;
            });
        }
        for (
            uid,
            Wanted {
                pod,
                generation,
                restarts,
                initialized,
            },
        ) in wanted
        {
            // A new image: the containers stop (draining) and start again
            // from it, counted as a restart, as Kubernetes does.
            if let Some(worker) = self.workers.remove(&uid) {
                worker.cancel.cancel();
                self.context.event(
                    &uid,
                    &pod,
                    "Normal",
                    "Killing",
                    "Stopping the pod's containers: their image changed",
                );
                self.replacing
                    .insert(uid.clone(), (worker.task, restarts + 1));
            }
            // The old run must be gone first: the same pod may not serve twice.
            // A pod this daemon has not run yet goes on from the run its
            // status counts (a predecessor's, whose containers it may adopt).
            let first_run = match self.replacing.get(&uid) {
                Some((task, _)) if !task.is_finished() => continue,
                Some(_) => self.replacing.remove(&uid).map_or(0, |(_, run)| run),
                None => restarts,
            };
            let cancel = CancellationToken::new();
            let labels = pod.metadata.labels.clone();
            let grace = Arc::new(std::sync::atomic::AtomicU64::new(
                pod.spec.termination_grace_period_seconds,
            ));
            let leave = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let task = tokio::spawn(run_pod(
                self.context.clone(),
                uid.clone(),
                pod,
                cancel.clone(),
                grace.clone(),
                leave.clone(),
                first_run,
                // Only a pod this daemon has not run before: one it replaces
                // runs them again, as a new pod does.
                initialized.filter(|_| first_run == restarts),
            ));
            self.workers.insert(
                uid,
                Worker {
                    cancel,
                    task,
                    generation,
                    labels,
                    grace,
                    leave,
                },
            );
        }
    }

    /// After a restart, no pod of this node is running whatever its stored
    /// status says: mark them not ready until their workers report, so the
    /// controllers do not count on pods that are gone.
    pub fn forget_running(&self) {
        let mut store = self.context.state.store.lock();
        let pods = match store.list(Kind::Pod, None) {
            Ok(pods) => pods,
            Err(e) => {
                tracing::error!("listing pods: {e}");
                return;
            }
        };
        for record in pods {
            let Object::Pod(pod) = &record.object else {
                continue;
            };
            if !self.runs_here(pod) {
                continue;
            }
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            // Restart counts stand: a daemon's restart is no container's,
            // and the run a count names is where a container that outlived
            // the daemon is found again.
            let restarted: Vec<ContainerStatus> = record
                .status
                .pod()
                .and_then(|s| s.kube.container_statuses.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|c| ContainerStatus {
                    ready: false,
                    started: Some(false),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some("ContainerCreating".into()),
                            ..ContainerStateWaiting::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..c
                })
                .collect();
            let status = Status::from(PodStatus {
                kube: KubePodStatus {
                    phase: Some("Pending".into()),
                    reason: Some("ContainerCreating".into()),
                    conditions: Some(vec![
                        pod_condition("PodScheduled", true),
                        pod_condition("Ready", false),
                    ]),
                    container_statuses: (!restarted.is_empty()).then_some(restarted),
                    // What ran to success stays so: the pod is not
                    // initialized again (see `initialized`).
                    init_container_statuses: record
                        .status
                        .pod()
                        .and_then(|s| s.kube.init_container_statuses.clone()),
                    ..KubePodStatus::default()
                },
                ..PodStatus::default()
            });
            if let Err(e) = store.set_status(Kind::Pod, ns, &pod.metadata.name, &status) {
                tracing::error!("resetting pod {}: {e}", pod.metadata.name);
            }
        }
    }

    /// Whether `pod` is bound to one of this kubelet's nodes.
    fn runs_here(&self, pod: &Pod) -> bool {
        pod.spec
            .node_name
            .as_ref()
            .is_some_and(|n| self.nodes.contains(n))
    }

    /// The uids of this node's pods the store says are ready: what a daemon
    /// taking over waits to have serving again before it opens its ingress.
    pub fn ready_pods(&self) -> Vec<String> {
        let listed = self.context.state.store.lock().list(Kind::Pod, None);
        let pods = match listed {
            Ok(pods) => pods,
            Err(e) => {
                tracing::error!("listing pods: {e}");
                return Vec::new();
            }
        };
        pods.into_iter()
            .filter(|record| {
                let Object::Pod(pod) = &record.object else {
                    return false;
                };
                self.runs_here(pod)
                    && !pod.metadata.deleting()
                    && record.status.pod().is_some_and(PodStatus::ready)
            })
            .map(|record| record.uid)
            .collect()
    }

    /// Removes the directories (volumes, logs) of pods the store no longer
    /// has: deleted while their worker could not clean up, or by `up` on its
    /// way out.
    /// Ends what a previous berth left running for the networks of pods
    /// none of whose containers still runs (pasta outlives berth with the
    /// containers it serves, and is adopted with them): at start.
    pub fn close_stale_networks(&self) {
        let Ok(entries) = std::fs::read_dir(&self.context.pods_dir) else {
            return;
        };
        for entry in entries.flatten() {
            if !crate::runtime::linux::any_running(&entry.path().join("containers")) {
                crate::runtime::linux::network::close_outside(&entry.path().join("pasta.pid"));
            }
        }
    }

    pub fn remove_orphan_dirs(&self) {
        let Ok(entries) = std::fs::read_dir(&self.context.pods_dir) else {
            return;
        };
        let known: std::collections::HashSet<String> =
            match self.context.state.store.lock().list(Kind::Pod, None) {
                Ok(pods) => pods.into_iter().map(|p| p.uid).collect(),
                Err(e) => {
                    tracing::error!("listing pods: {e}");
                    return;
                }
            };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) && !self.workers.contains_key(&name) {
                sandbox::remove_pod_dir(&entry.path());
            }
        }
    }

    /// From now on, pods stopping leave the containers that can outlive
    /// this daemon running, for the daemon taking over to adopt.
    pub fn leave_running(&mut self) {
        self.leaving = true;
    }

    /// Stops every pod, draining each, and waits for them.
    pub async fn stop_all(&mut self) {
        for worker in self.workers.values() {
            if self.leaving {
                worker
                    .leave
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            worker.cancel.cancel();
        }
        for (_, worker) in self.workers.drain() {
            let _ = worker.task.await;
        }
        for (_, (task, _)) in self.replacing.drain() {
            let _ = task.await;
        }
        // And the pods deleted just before, still draining.
        self.stopping.close();
        self.stopping.wait().await;
        // Their last statuses and events, before the daemon exits.
        self.context.reports.flush().await;
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl Context {
    /// Records the status of pod `uid`: that very pod, not a successor
    /// made under the same name while this was on its way.
    fn set_status(&self, uid: &str, pod: &Pod, status: PodStatus) {
        self.reports.status(uid, &pod.metadata.name, status);
    }

    /// Records an event about pod `uid`: that very pod, even if it is
    /// gone or replaced under its name by the time the event is written.
    fn event(&self, uid: &str, pod: &Pod, kind_of_event: &str, reason: &str, message: &str) {
        let event = Event {
            time: now(),
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            kind: "Pod".into(),
            name: pod.metadata.name.clone(),
            kind_of_event: kind_of_event.into(),
            reason: reason.into(),
            message: message.into(),
            uid: Some(uid.to_owned()),
        };
        self.reports.event(event);
    }
}

/// Why a pod could not start: Kubernetes' waiting reason and a message.
#[derive(Debug)]
pub(crate) struct StartFailure {
    pub reason: &'static str,
    pub message: String,
}

/// A pod's container as its status shows it.
struct Observed {
    name: String,
    image: String,
    endpoint: String,
    runtime: &'static str,
    started: bool,
    ready: bool,
}

fn running_status(
    containers: &[Observed],
    restarts: u32,
    started_at: &Time,
    running_since: &Time,
) -> PodStatus {
    let all_ready = containers.iter().all(|c| c.ready);
    let statuses = containers
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone(),
            ready: c.ready,
            restart_count: count(restarts),
            started: Some(c.started),
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(running_since.clone()),
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        })
        .collect();
    PodStatus {
        kube: KubePodStatus {
            phase: Some("Running".into()),
            host_ip: Some("127.0.0.1".into()),
            pod_ip: Some("127.0.0.1".into()),
            start_time: Some(started_at.clone()),
            conditions: Some(vec![
                pod_condition("PodScheduled", true),
                pod_condition("Initialized", true),
                pod_condition("ContainersReady", all_ready),
                pod_condition("Ready", all_ready),
            ]),
            container_statuses: Some(statuses),
            ..KubePodStatus::default()
        },
        endpoints: containers
            .iter()
            .filter(|c| !c.endpoint.is_empty())
            .map(|c| (c.name.clone(), c.endpoint.clone()))
            .collect(),
        runtimes: containers
            .iter()
            .map(|c| (c.name.clone(), c.runtime.to_owned()))
            .collect(),
    }
}

/// A restart count as Kubernetes types it.
fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A stopped pod's status: `phase` for `reason`, its containers (if any)
/// as given.
fn stopped_status(
    phase: &str,
    reason: &str,
    message: Option<String>,
    started_at: &Time,
    conditions: Vec<PodCondition>,
    containers: Option<Vec<ContainerStatus>>,
) -> PodStatus {
    PodStatus {
        kube: KubePodStatus {
            phase: Some(phase.into()),
            reason: Some(reason.into()),
            message,
            host_ip: Some("127.0.0.1".into()),
            start_time: Some(started_at.clone()),
            conditions: Some(conditions),
            container_statuses: containers,
            ..KubePodStatus::default()
        },
        ..PodStatus::default()
    }
}

/// The status of a container that is not running, in `state`.
fn not_running(
    c: &crate::spec::objects::Container,
    restarts: u32,
    state: ContainerState,
) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        ready: false,
        started: Some(false),
        restart_count: count(restarts),
        state: Some(state),
        ..ContainerStatus::default()
    }
}

/// Each container's last run as the kubelet reports a pod that has
/// stopped: for `failed` (container, code, reason, message) that
/// container's end; for the others their own `ends` where known (a
/// process stopped with the pod: 143 after SIGTERM, 137 after SIGKILL),
/// else Completed.
fn terminated_statuses(
    pod: &Pod,
    restarts: u32,
    started_at: &Time,
    failed: Option<(&str, i32, &str, &str)>,
    ends: &HashMap<String, crate::runtime::Exited>,
) -> Vec<ContainerStatus> {
    let finished = status::now();
    pod.spec
        .containers
        .iter()
        .map(|c| {
            let (exit_code, reason, message) = match (failed, ends.get(&c.name)) {
                (Some((name, code, reason, message)), _) if name == c.name => {
                    (code, reason, Some(message.to_owned()))
                }
                (_, Some(end)) => (end.code, end.reason, end.detail.clone()),
                (_, None) => (0, "Completed", None),
            };
            not_running(
                c,
                restarts,
                ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code,
                        reason: Some(reason.into()),
                        message,
                        started_at: Some(started_at.clone()),
                        finished_at: Some(finished.clone()),
                        ..ContainerStateTerminated::default()
                    }),
                    ..ContainerState::default()
                },
            )
        })
        .collect()
}

/// Why a running pod stopped.
enum Stopped {
    /// The pod was deleted (or the daemon stops).
    Deleted,
    /// A container failed its liveness probe.
    Unhealthy(String),
    /// A container's process ended.
    Exited(String, crate::runtime::Exited),
}

/// Watches started containers (`specs`, as `running`): runs their probes
/// and reports them to `report` whenever what it shows changes, until the
/// pod is deleted, one of them ends, or one fails its liveness probe.
async fn supervise(
    context: &Context,
    uid: &str,
    pod: &Pod,
    running: &[start::Running],
    specs: &[crate::spec::objects::Container],
    cancel: &CancellationToken,
    mut report: impl FnMut(&[Observed]),
) -> Stopped {
    let mut containers: Vec<Observed> = running
        .iter()
        .zip(specs)
        .map(|(r, spec)| Observed {
            name: r.name.clone(),
            image: r.image.clone(),
            endpoint: r.endpoint.to_string(),
            runtime: if r.linux.is_some() { "linux" } else { "wasm" },
            started: spec.startup_probe.is_none(),
            ready: spec.startup_probe.is_none() && spec.readiness_probe.is_none(),
        })
        .collect();
    let mut probers: Vec<probe::Prober> = Vec::new();
    for (i, (r, spec)) in running.iter().zip(specs).enumerate() {
        for (kind, p) in [
            (probe::Kind::Startup, &spec.startup_probe),
            (probe::Kind::Readiness, &spec.readiness_probe),
            (probe::Kind::Liveness, &spec.liveness_probe),
        ] {
            if let Some(p) = p {
                probers.push(probe::Prober::new(
                    i,
                    kind,
                    p.clone(),
                    r.endpoint,
                    r.linux
                        .clone()
                        .map(|(netns, pid)| (netns, r.ports.clone(), pid)),
                ));
            }
        }
    }
    report(&containers);
    let client = probe::client();
    loop {
        // Only probes of started containers run, startup probes until then.
        let active = |p: &probe::Prober, containers: &[Observed]| {
            let started = containers[p.container].started;
            (p.kind == probe::Kind::Startup) != started
        };
        let next = probers
            .iter()
            .filter(|p| active(p, &containers))
            .map(|p| p.due())
            .min();
        let wait = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let exits = futures_util::future::select_all(running.iter().map(|r| {
            let name = r.name.clone();
            let exited = r.workload.exited();
            Box::pin(async move { (name, exited.await) })
        }));
        tokio::select! {
            _ = cancel.cancelled() => return Stopped::Deleted,
            ((name, exited), _, _) = exits => return Stopped::Exited(name, exited),
            _ = wait => {}
        }
        let now_instant = tokio::time::Instant::now();
        let mut changed = false;
        for prober in probers.iter_mut() {
            if !active(prober, &containers) || prober.due() > now_instant {
                continue;
            }
            let verdict = prober.run(&client).await;
            let c = &mut containers[prober.container];
            match (prober.kind, verdict) {
                (probe::Kind::Startup, probe::Verdict::Passed) => {
                    c.started = true;
                    if specs[prober.container].readiness_probe.is_none() {
                        c.ready = true;
                    }
                    changed = true;
                }
                (probe::Kind::Readiness, probe::Verdict::Passed) if !c.ready => {
                    c.ready = true;
                    changed = true;
                }
                (probe::Kind::Readiness, probe::Verdict::Failed) if c.ready => {
                    c.ready = false;
                    context.event(
                        uid,
                        pod,
                        "Warning",
                        "Unhealthy",
                        &format!("Readiness probe failed for container {}", c.name),
                    );
                    changed = true;
                }
                (probe::Kind::Liveness | probe::Kind::Startup, probe::Verdict::Failed) => {
                    let what = if prober.kind == probe::Kind::Startup {
                        "Startup"
                    } else {
                        "Liveness"
                    };
                    context.event(
                        uid,
                        pod,
                        "Warning",
                        "Unhealthy",
                        &format!("{what} probe failed for container {}", c.name),
                    );
                    return Stopped::Unhealthy(c.name.clone());
                }
                _ => {}
            }
        }
        if changed {
            report(&containers);
        }
    }
}

/// Deletes a pod whose deletion began, now that its containers have
/// stopped: unless another pod has taken its name since.
async fn finish_deletion(state: Arc<ApiState>, namespace: String, name: String, uid: String) {
    let deleting = state.clone();
    let deleted = tokio::task::spawn_blocking(move || {
        deleting
            .store
            .lock()
            .delete_if(Kind::Pod, &namespace, &name, &uid)
    })
    .await;
    match deleted {
        Ok(Ok(true)) => state.changed.notify_one(),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::error!("deleting a stopped pod: {e}"),
        Err(e) => tracing::error!("deleting a stopped pod: {e}"),
    }
}

/// One run of a pod: its init containers, then its app containers (again
/// and again as its restartPolicy says), then its sidecars' stop.
#[expect(clippy::too_many_arguments, reason = "a pod's run is these")]
async fn run_pod(
    context: Context,
    uid: String,
    pod: Pod,
    cancel: CancellationToken,
    stop_grace: Arc<std::sync::atomic::AtomicU64>,
    leave: Arc<std::sync::atomic::AtomicBool>,
    first_run: u32,
    initialized: Option<Vec<ContainerStatus>>,
) {
    let pod = Arc::new(pod);
    // Initialized by a daemon before this one, whose containers run on to
    // be adopted: the pod's sandbox stands, and its init is not run again.
    // (With none running, it starts anew, init containers first.)
    let initialized = match initialized {
        Some(statuses) => {
            let containers = context.pods_dir.join(&uid).join("containers");
            tokio::task::spawn_blocking(move || crate::runtime::linux::any_running(&containers))
                .await
                .unwrap_or(false)
                .then_some(statuses)
        }
        None => None,
    };
    let run = init::PodRun {
        board: Arc::new(board::Board::new(context.clone(), uid.clone(), pod.clone())),
        sandbox: Arc::new(sandbox::Sandbox::new(
            &pod,
            context.pods_dir.join(&uid),
            leave,
        )),
        context,
        pod,
        stop_grace,
        started_at: status::now(),
    };
    for warning in run.sandbox.memory_volumes(&run.pod) {
        run.context
            .event(&uid, &run.pod, "Warning", "FailedMount", &warning);
    }
    let Some(sidecars) = init::initialize(&run, &cancel, initialized).await else {
        return;
    };
    let last = run_apps(&run, &uid, &cancel, first_run).await;
    sidecars.stop().await;
    if let Some(status) = last {
        // Done: its network goes, its status stays until it is deleted.
        run.sandbox.release_network();
        run.board.apps(status, false);
        cancel.cancelled().await;
    }
}

/// Runs the app containers, restarting them as the pod's restartPolicy
/// says, until the pod is deleted (None) or done: then its last status.
async fn run_apps(
    run: &init::PodRun,
    uid: &str,
    cancel: &CancellationToken,
    first_run: u32,
) -> Option<PodStatus> {
    let (context, pod, started_at) = (&run.context, &*run.pod, &run.started_at);
    let mut restarts: u32 = first_run;
    // Failures since the pod last ran for the back-off's reset time: what
    // the delay grows with.
    let mut failures: u32 = 0;
    let grace = Duration::from_secs(pod.spec.termination_grace_period_seconds);
    let dir = run.sandbox.dir.clone();
    loop {
        let attempt = cancel.child_token();
        // Starts take turns a few at a time: each trial instantiation
        // dirties a pool slot, and a thousand at once would dirty a
        // thousand slots (and contend for the CPUs) to no one's benefit.
        let permit = context.starting.clone().acquire_owned().await;
        let started =
            start::start(context, &run.sandbox, pod, attempt.clone(), grace, restarts).await;
        drop(permit);
        // The container that ended the run, and its exit code; how the
        // others ended.
        let mut ran: Option<(String, i32)> = None;
        let mut ends: HashMap<String, crate::runtime::Exited> = HashMap::new();
        let failure = match started {
            Ok(running) => {
                for c in &running {
                    context.event(
                        uid,
                        pod,
                        "Normal",
                        "Started",
                        &format!("Started container {}", c.name),
                    );
                }
                let endpoint =
                    Arc::new(crate::router::PodEndpoint::new(
                        uid.to_owned(),
                        pod.metadata
                            .namespace
                            .clone()
                            .unwrap_or_else(|| "default".into()),
                        pod.metadata.name.clone(),
                        pod.metadata.labels.clone(),
                        running
                            .iter()
                            .map(|c| crate::router::ContainerEndpoint {
                                name: c.name.clone(),
                                ports: c.ports.clone(),
                                workload: c.workload.clone(),
                                sidecar: false,
                            })
                            .chain(pod.spec.sidecars().zip(&run.sandbox.sidecars).map(
                                |(c, slot)| crate::router::ContainerEndpoint {
                                    name: c.name.clone(),
                                    ports: c.ports.clone(),
                                    workload: slot.clone(),
                                    sidecar: true,
                                },
                            ))
                            .collect(),
                        // Checked when the pod was applied; a pod stored
                        // before that check says so and runs unlimited.
                        crate::spec::objects::max_concurrency(&pod.metadata).unwrap_or_else(|e| {
                            tracing::warn!(
                                "pod {}: {}: {e}; no limit",
                                pod.metadata.name,
                                crate::spec::objects::CONCURRENCY_ANNOTATION
                            );
                            None
                        }),
                    ));
                context.routes.add_pod(endpoint.clone());
                let ran_from = tokio::time::Instant::now();
                for c in &running {
                    if let Some((_, pids)) = &c.linux {
                        context.execs.insert(uid, &c.name, *pids);
                    }
                }
                let running_since = status::now();
                let stopped = supervise(
                    context,
                    uid,
                    pod,
                    &running,
                    &pod.spec.containers,
                    cancel,
                    |observed| {
                        run.board.apps(
                            running_status(observed, restarts, started_at, &running_since),
                            observed.iter().all(|c| c.ready),
                        );
                    },
                )
                .await;
                context.execs.remove_pod(uid);
                if ran_from.elapsed() >= context.backoff.reset {
                    failures = 0;
                }
                // Out of every service first, so no new request comes;
                // then the requests it has finish (within the grace period).
                context.routes.remove_pod(uid);
                // A deletion may have asked for less time than the spec.
                let grace =
                    Duration::from_secs(run.stop_grace.load(std::sync::atomic::Ordering::Relaxed));
                endpoint.drained(grace).await;
                // Processes get SIGTERM, and SIGKILL after the grace period;
                // unless the daemon hands over, and the next adopts them.
                let leaving = run.sandbox.leave.load(std::sync::atomic::Ordering::SeqCst);
                futures_util::future::join_all(
                    running
                        .iter()
                        .filter(|c| !(leaving && c.workload.leave_running()))
                        .map(|c| c.workload.stop(grace)),
                )
                .await;
                // How each container ended, where its backend can say: a
                // process's exit status (a served wasm component drains and
                // has none; it is shown Completed).
                // Stopped, a process's end is known at once: nothing waits.
                ends = running
                    .iter()
                    .filter_map(|c| {
                        use futures_util::FutureExt as _;
                        Some((c.name.clone(), c.workload.exited().now_or_never()?))
                    })
                    .collect();
                attempt.cancel();
                for c in running {
                    let _ = c.serving.await;
                }
                match stopped {
                    Stopped::Deleted => return None,
                    Stopped::Exited(container, exited) => {
                        let succeeded = exited.code == 0;
                        context.event(
                            uid,
                            pod,
                            if succeeded { "Normal" } else { "Warning" },
                            "Exited",
                            &format!(
                                "Container {container} exited with code {} ({})",
                                exited.code, exited.reason
                            ),
                        );
                        if succeeded && pod.spec.restart_policy != RestartPolicy::Always {
                            // Each container's last run, as the kubelet
                            // reports it: `logs` reads it, kubectl prints
                            // Completed.
                            let statuses =
                                terminated_statuses(pod, restarts, started_at, None, &ends);
                            return Some(stopped_status(
                                "Succeeded",
                                "Completed",
                                None,
                                started_at,
                                vec![pod_condition("Ready", false)],
                                Some(statuses),
                            ));
                        }
                        ran = Some((container.clone(), exited.code));
                        StartFailure {
                            reason: exited.reason,
                            message: match &exited.detail {
                                Some(detail) => format!(
                                    "container {container} could not run (code {}): {detail}",
                                    exited.code
                                ),
                                None => log_tail_if_asked(pod, &dir, &container, restarts)
                                    .unwrap_or_else(|| {
                                        format!(
                                            "container {container} exited with code {}",
                                            exited.code
                                        )
                                    }),
                            },
                        }
                    }
                    Stopped::Unhealthy(container) => {
                        context.event(
                            uid,
                            pod,
                            "Normal",
                            "Killing",
                            &format!(
                                "Container {container} failed its liveness probe, will be restarted"
                            ),
                        );
                        StartFailure {
                            reason: "Unhealthy",
                            message: format!("container {container} failed its liveness probe"),
                        }
                    }
                }
            }
            Err(failure) => {
                context.event(uid, pod, "Warning", "Failed", &failure.message);
                failure
            }
        };
        if pod.spec.restart_policy == RestartPolicy::Never {
            // A container that ran shows how it ended (`logs` reads its
            // run); one that never started has no state to show.
            let statuses = ran.as_ref().map(|(container, code)| {
                terminated_statuses(
                    pod,
                    restarts,
                    started_at,
                    Some((container, *code, failure.reason, &failure.message)),
                    &ends,
                )
            });
            return Some(stopped_status(
                "Failed",
                failure.reason,
                Some(failure.message),
                started_at,
                vec![pod_condition("Ready", false)],
                statuses,
            ));
        }
        restarts += 1;
        failures += 1;
        let delay = context.backoff.delay(failures);
        tracing::warn!(
            "pod {}: {}: {} (restart {restarts} in {delay:?})",
            pod.metadata.name,
            failure.reason,
            failure.message
        );
        let reason = waiting_reason(failure.reason, delay);
        if !delay.is_zero() {
            context.event(
                uid,
                pod,
                "Warning",
                "BackOff",
                &format!("Back-off {delay:?} restarting failed pod"),
            );
        }
        let containers = pod
            .spec
            .containers
            .iter()
            .map(|c| {
                not_running(
                    c,
                    restarts,
                    ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason.into()),
                            message: Some(failure.message.clone()),
                        }),
                        ..ContainerState::default()
                    },
                )
            })
            .collect();
        run.board.apps(
            stopped_status(
                "Pending",
                reason,
                Some(failure.message),
                started_at,
                vec![
                    pod_condition("PodScheduled", true),
                    pod_condition("ContainersReady", false),
                    pod_condition("Ready", false),
                ],
                Some(containers),
            ),
            false,
        );
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// How the kubelet words the wait after a failure with back-off `delay`:
/// a pull that failed backs off as ImagePullBackOff, a configuration that
/// cannot work says so until it is fixed, and a container that ran and
/// failed is in CrashLoopBackOff.
fn waiting_reason(failure: &'static str, delay: Duration) -> &'static str {
    match failure {
        _ if delay.is_zero() => failure,
        "ErrImagePull" | "ImagePullBackOff" => "ImagePullBackOff",
        "CreateContainerConfigError" | "CreateContainerError" | "InvalidImageName" => failure,
        _ => "CrashLoopBackOff",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_second_restart_up_to_the_cap() {
        let b = Backoff::default();
        let delays: Vec<u64> = (1..=8).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.delay(200), Duration::from_secs(300));
    }
}
