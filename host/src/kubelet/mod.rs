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

mod start;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::ApiState;
use crate::runtime::wasm::WasmRuntime;
use crate::spec::Object;
use crate::spec::objects::Pod;
use crate::state::Event;

/// Restart back-off: `base`, doubling, at most `cap`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
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
        }
    }
}

struct Worker {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// What every pod worker needs.
#[derive(Clone)]
pub(crate) struct Context {
    pub state: Arc<ApiState>,
    pub runtime: Arc<WasmRuntime>,
    pub pods_dir: PathBuf,
    pub backoff: Backoff,
}

pub struct Kubelet {
    context: Context,
    nodes: BTreeSet<String>,
    workers: HashMap<String, Worker>,
}

impl Kubelet {
    pub fn new(
        state: Arc<ApiState>,
        runtime: Arc<WasmRuntime>,
        nodes: BTreeSet<String>,
        pods_dir: PathBuf,
        backoff: Backoff,
    ) -> Kubelet {
        Kubelet {
            context: Context {
                state,
                runtime,
                pods_dir,
                backoff,
            },
            nodes,
            workers: HashMap::new(),
        }
    }

    /// Starts workers for newly bound pods and stops those of pods that
    /// are gone.
    pub fn sync(&mut self) {
        let pods = match self
            .context
            .state
            .store
            .lock()
            .expect("lock")
            .list("Pod", None)
        {
            Ok(pods) => pods,
            Err(e) => {
                tracing::error!("listing pods: {e}");
                return;
            }
        };
        let mut wanted: HashMap<String, Pod> = HashMap::new();
        for record in pods {
            if let Object::Pod(pod) = record.object
                && pod
                    .spec
                    .node_name
                    .as_ref()
                    .is_some_and(|n| self.nodes.contains(n))
            {
                wanted.insert(record.uid, *pod);
            }
        }
        let gone: Vec<String> = self
            .workers
            .keys()
            .filter(|uid| !wanted.contains_key(*uid))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(worker) = self.workers.remove(&uid) {
                worker.cancel.cancel();
                let dir = self.context.pods_dir.join(&uid);
                tokio::spawn(async move {
                    let _ = worker.task.await;
                    let _ = tokio::fs::remove_dir_all(dir).await;
                });
            }
        }
        for (uid, pod) in wanted {
            if self.workers.contains_key(&uid) {
                continue;
            }
            let cancel = CancellationToken::new();
            let task = tokio::spawn(run_pod(
                self.context.clone(),
                uid.clone(),
                pod,
                cancel.clone(),
            ));
            self.workers.insert(uid, Worker { cancel, task });
        }
    }

    /// Stops every pod, draining each, and waits for them.
    pub async fn stop_all(&mut self) {
        for worker in self.workers.values() {
            worker.cancel.cancel();
        }
        for (_, worker) in self.workers.drain() {
            let _ = worker.task.await;
        }
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl Context {
    fn set_status(&self, pod: &Pod, status: serde_json::Value) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let result = self.state.store.lock().expect("lock").set_status(
            "Pod",
            ns,
            &pod.metadata.name,
            &status,
        );
        if let Err(e) = result {
            tracing::error!("recording the status of pod {}: {e}", pod.metadata.name);
        }
        self.state.changed.notify_one();
    }

    fn event(&self, pod: &Pod, kind_of_event: &str, reason: &str, message: &str) {
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
        };
        if let Err(e) = self.state.store.lock().expect("lock").record_event(&event) {
            tracing::error!("recording an event: {e}");
        }
    }
}

/// Why a pod could not start: Kubernetes' waiting reason and a message.
#[derive(Debug)]
pub(crate) struct StartFailure {
    pub reason: &'static str,
    pub message: String,
}

async fn run_pod(context: Context, uid: String, pod: Pod, cancel: CancellationToken) {
    let mut restarts: u32 = 0;
    let started_at = now();
    let grace = Duration::from_secs(pod.spec.termination_grace_period_seconds);
    loop {
        let dir = context.pods_dir.join(&uid);
        match start::start(&context, &pod, &dir, cancel.child_token(), grace).await {
            Ok(running) => {
                let containers: Vec<serde_json::Value> = running
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "name": c.name, "image": c.image, "ready": true,
                            "restartCount": restarts, "started": true,
                            "state": {"running": {"startedAt": now()}},
                            "endpoint": c.endpoint.to_string(),
                        })
                    })
                    .collect();
                context.set_status(
                    &pod,
                    serde_json::json!({
                        "phase": "Running",
                        "hostIP": "127.0.0.1",
                        "podIP": "127.0.0.1",
                        "startTime": started_at,
                        "conditions": [
                            {"type": "PodScheduled", "status": "True"},
                            {"type": "Initialized", "status": "True"},
                            {"type": "ContainersReady", "status": "True"},
                            {"type": "Ready", "status": "True"},
                        ],
                        "containerStatuses": containers,
                    }),
                );
                for c in &running {
                    context.event(
                        &pod,
                        "Normal",
                        "Started",
                        &format!("Started container {}", c.name),
                    );
                }
                cancel.cancelled().await;
                for c in running {
                    let _ = c.serving.await;
                }
                return;
            }
            Err(failure) => {
                restarts += 1;
                let delay = context.backoff.delay(restarts);
                tracing::warn!(
                    "pod {}: {}: {} (restart {restarts} in {delay:?})",
                    pod.metadata.name,
                    failure.reason,
                    failure.message
                );
                context.event(&pod, "Warning", "Failed", &failure.message);
                let reason = if delay.is_zero() {
                    failure.reason
                } else {
                    "CrashLoopBackOff"
                };
                if !delay.is_zero() {
                    context.event(
                        &pod,
                        "Warning",
                        "BackOff",
                        &format!("Back-off {delay:?} restarting failed pod"),
                    );
                }
                let containers: Vec<serde_json::Value> = pod
                    .spec
                    .containers
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "name": c.name, "image": c.image, "ready": false,
                            "restartCount": restarts, "started": false,
                            "state": {"waiting": {"reason": reason, "message": failure.message}},
                        })
                    })
                    .collect();
                context.set_status(
                    &pod,
                    serde_json::json!({
                        "phase": "Pending",
                        "reason": reason,
                        "message": failure.message,
                        "hostIP": "127.0.0.1",
                        "startTime": started_at,
                        "conditions": [
                            {"type": "PodScheduled", "status": "True"},
                            {"type": "ContainersReady", "status": "False"},
                            {"type": "Ready", "status": "False"},
                        ],
                        "containerStatuses": containers,
                    }),
                );
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
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
