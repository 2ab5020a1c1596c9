//! Pod statuses and events on their way to the store.
//!
//! Pod workers run on the async workers that also serve requests, and the
//! store is SQLite behind the mutex the control loop holds while it
//! reconciles (milliseconds with a thousand pods). So workers never write
//! it themselves: they queue what they report, and one thread writes it, in
//! the order it was reported, taking the lock once for all that waits.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};

use crate::spec::status::PodStatus;
use crate::spec::{Kind, Status};
use crate::state::Event;
use crate::state::Shared as ApiState;

enum Report {
    Status {
        uid: String,
        /// For the log.
        name: String,
        status: Box<PodStatus>,
    },
    Event(Event),
    /// Answered once everything queued before it is written.
    Flushed(tokio::sync::oneshot::Sender<()>),
}

/// Reports written under one hold of the store's lock, at most: the
/// control loop and the API wait for it meanwhile.
const BATCH: usize = 256;

/// The sending end: cheap to clone; the writer thread ends when the last
/// clone is dropped, after writing what was queued.
#[derive(Clone)]
pub(crate) struct Reporter {
    queue: Sender<Report>,
}

impl Reporter {
    pub(crate) fn start(state: Arc<ApiState>) -> Reporter {
        let (queue, reports) = std::sync::mpsc::channel();
        // Without its thread nothing would be recorded: a daemon that
        // cannot spawn one thread at start has nothing to run pods with.
        std::thread::Builder::new()
            .name("berth-reports".into())
            .spawn(move || write(&state, &reports))
            .expect("starting the status writer thread");
        Reporter { queue }
    }

    pub(crate) fn status(&self, uid: &str, name: &str, status: PodStatus) {
        self.send(Report::Status {
            uid: uid.to_owned(),
            name: name.to_owned(),
            status: Box::new(status),
        });
    }

    pub(crate) fn event(&self, event: Event) {
        self.send(Report::Event(event));
    }

    /// Waits until everything reported so far is in the store (at
    /// shutdown: the last statuses and events of the pods just stopped).
    pub(crate) async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        self.send(Report::Flushed(done));
        let _ = written.await;
    }

    fn send(&self, report: Report) {
        // Fails only once the writer is gone: at exit, or after a panic
        // poisoned the store, which every other user of it then meets too.
        let _ = self.queue.send(report);
    }
}

fn write(state: &ApiState, reports: &Receiver<Report>) {
    while let Ok(first) = reports.recv() {
        let batch: Vec<Report> = std::iter::once(first)
            .chain(reports.try_iter().take(BATCH - 1))
            .collect();
        let mut statuses = Vec::new();
        let mut events = Vec::new();
        let mut flushed = Vec::new();
        for report in batch {
            match report {
                Report::Status { uid, name, status } => {
                    statuses.push((uid, name, Status::Pod(status)));
                }
                Report::Event(event) => events.push(event),
                Report::Flushed(done) => flushed.push(done),
            }
        }
        // The statuses in one transaction and the events in another, not
        // in runs as they came: each pod's start reports a status, an
        // event, another status, so keeping their order cost a commit per
        // report. A pod's statuses stay in order, and its events too; a
        // status and an event are different objects with versions of
        // their own, which Kubernetes orders neither.
        let mut store = state.store.lock();
        let wrote_statuses = write_statuses(&mut store, &mut statuses);
        write_events(&mut store, &mut events);
        drop(store);
        if wrote_statuses {
            state.changed.notify_one();
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// Writes the pods' statuses gathered (and empties the list); whether
/// there were any.
fn write_statuses(
    store: &mut crate::state::Store,
    statuses: &mut Vec<(String, String, Status)>,
) -> bool {
    if statuses.is_empty() {
        return false;
    }
    let keyed: Vec<(&str, &Status)> = statuses
        .iter()
        .map(|(uid, _, status)| (uid.as_str(), status))
        .collect();
    match store.set_statuses_of(Kind::Pod, &keyed) {
        Ok(outcomes) => {
            for ((_, name, _), outcome) in statuses.iter().zip(outcomes) {
                if let Err(e) = outcome {
                    tracing::error!("recording the status of pod {name}: {e}");
                }
            }
        }
        Err(e) => tracing::error!("recording the statuses of {} pods: {e}", statuses.len()),
    }
    statuses.clear();
    true
}

/// Writes the events gathered (and empties the list).
fn write_events(store: &mut crate::state::Store, events: &mut Vec<Event>) {
    if events.is_empty() {
        return;
    }
    if let Err(e) = store.record_events(events) {
        tracing::error!("recording {} events: {e}", events.len());
    }
    events.clear();
}
