//! A command component as a pod's container (a worker or a batch step):
//! it runs once, from its start, with the pod's grants and limits, and its
//! end is the container's exit, which the kubelet turns into Completed or
//! Error, a restart or not, as it does for a Linux container's process.
//!
//! A component of both worlds given a command line is both at once
//! ([`Beside`]): served, with its `run` going on beside, as a Linux
//! process serving on one thread while its main loop runs on another; the
//! container is its `run`, and ends with it.

use tokio::sync::watch;
use wasmtime_wasi::p2::bindings::CommandPre;

use super::command::{self, Finished, Invocation};
use super::usage::Meter;
use super::workload::{Host, WasmWorkload};
use berth_runtime::{
    Body, BoxFuture, Exited, GuestFailure, RuntimeError, ServeError, Workload, WorkloadSpec,
};

pub(super) struct CommandWorkload {
    name: String,
    ended: watch::Receiver<Option<Exited>>,
    task: tokio::task::AbortHandle,
    /// Set by `stop`: the run ended because it was asked to.
    stopped: std::sync::Arc<std::sync::atomic::AtomicBool>,
    meter: std::sync::Arc<Meter>,
}

impl CommandWorkload {
    /// Starts the run; it goes on in a task of its own.
    pub(super) fn start(pre: CommandPre<Host>, mut spec: WorkloadSpec) -> CommandWorkload {
        // A worker runs as long as it runs: the CPU time limit is one
        // request's, and its share of the CPU (`cpu_millis`) still holds.
        spec.limits.cpu_time = std::time::Duration::MAX;
        let name = spec.name.clone();
        let (tell, ended) = watch::channel(None);
        let invocation = Invocation {
            args: spec.args.clone(),
            stdin: false,
        };
        let log = spec.log.clone();
        let meter = std::sync::Arc::new(Meter::default());
        let metered = meter.clone();
        let task = tokio::spawn(async move {
            let exited = exited(command::run(pre, spec, invocation, metered.clone()).await);
            if exited.reason == "OOMKilled" {
                metered.out_of_memory();
            }
            // What a limit or a trap did is the container's to show: its
            // log says it, beside what the guest wrote.
            if let (Some(log), Some(detail)) = (&log, &exited.detail) {
                log.write_line(berth_runtime::Stream::Stderr, &format!("berth: {detail}"));
            }
            let _ = tell.send(Some(exited));
        });
        CommandWorkload {
            name,
            ended,
            task: task.abort_handle(),
            stopped: Default::default(),
            meter,
        }
    }
}

/// How a run ended, in the kubelet's words.
fn exited(finished: Result<Finished, RuntimeError>) -> Exited {
    match finished {
        Ok(Finished {
            code,
            failure: None,
        }) => Exited {
            code,
            reason: if code == 0 { "Completed" } else { "Error" },
            detail: None,
        },
        Ok(Finished {
            code,
            failure: Some(failure),
        }) => Exited {
            code,
            reason: match failure {
                GuestFailure::MemoryExceeded { .. } => "OOMKilled",
                _ => "Error",
            },
            detail: Some(failure.to_string()),
        },
        Err(e) => Exited {
            code: command::TRAPPED,
            reason: "Error",
            detail: Some(e.to_string()),
        },
    }
}

impl Workload for CommandWorkload {
    fn name(&self) -> &str {
        &self.name
    }

    fn usage(&self) -> berth_runtime::Usage {
        self.meter.usage()
    }

    fn serve(
        &self,
        _request: http::Request<Body>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, ServeError>> {
        let workload = self.name.clone();
        Box::pin(async move { Err(ServeError::NotServing { workload }) })
    }

    fn exited(&self) -> BoxFuture<'static, Exited> {
        let mut ended = self.ended.clone();
        let stopped = self.stopped.clone();
        Box::pin(async move {
            loop {
                if let Some(exited) = ended.borrow_and_update().clone() {
                    return exited;
                }
                if ended.changed().await.is_err() {
                    if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                        // Stopped as asked: it never ends by itself now.
                        return std::future::pending().await;
                    }
                    // The run's task died without a word (a panic in the
                    // host): the container ended, in error.
                    return Exited {
                        code: command::TRAPPED,
                        reason: "Error",
                        detail: Some("the run ended without an exit status".into()),
                    };
                }
            }
        })
    }

    /// A WASI command has no signal to be asked with: it is stopped at
    /// once, whatever the grace.
    fn stop(&self, _grace: std::time::Duration) -> BoxFuture<'static, ()> {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.abort();
        Box::pin(async {})
    }
}

impl Drop for CommandWorkload {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A component of both worlds run both ways: its requests are served as
/// any HTTP component's, and its `run` is the container's life.
pub(super) struct Beside {
    served: WasmWorkload,
    run: CommandWorkload,
}

impl Beside {
    pub(super) fn new(served: WasmWorkload, run: CommandWorkload) -> Beside {
        Beside { served, run }
    }
}

impl Workload for Beside {
    fn name(&self) -> &str {
        self.served.name()
    }

    fn usage(&self) -> berth_runtime::Usage {
        let (served, run) = (self.served.usage(), self.run.usage());
        berth_runtime::Usage {
            cpu: served.cpu + run.cpu,
            memory: served.memory + run.memory,
            instances: Some(served.instances.unwrap_or(0) + run.instances.unwrap_or(0)),
            oom_kills: served.oom_kills + run.oom_kills,
        }
    }

    fn serve(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, ServeError>> {
        self.served.serve(request)
    }

    fn exited(&self) -> BoxFuture<'static, Exited> {
        self.run.exited()
    }

    fn stop(&self, grace: std::time::Duration) -> BoxFuture<'static, ()> {
        let (served, run) = (self.served.stop(grace), self.run.stop(grace));
        Box::pin(async move {
            run.await;
            served.await;
        })
    }
}
