//! Changes to stored objects, and events as they are recorded, in
//! resourceVersion order, for watchers. The store publishes each change
//! after it commits, under its lock, so the order here is the commit order.
//! A bounded window of recent changes lets a watch resume from a
//! resourceVersion it saw; one older than the window (or from before a
//! restart, when the window starts empty) is answered 410 Gone and the
//! client lists again, as with kube-apiserver's watch cache. Events have a
//! hub of their own, as they have a watch cache of their own there: a burst
//! of them (three for each of ten thousand pods starting) must not push the
//! pods' own changes out of the window their watchers resume in.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::{LoggedEvent, Record};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "changes live behind an Arc, made once each; boxing would add an allocation per object change"
)]
pub enum Change {
    Object {
        change: ChangeType,
        /// The object as it is after the change (before it, for a
        /// deletion, but with the deletion's resourceVersion).
        record: Record,
    },
    /// An event recorded (events are only ever added; they expire unseen).
    Event(LoggedEvent),
}

impl Change {
    pub fn resource_version(&self) -> u64 {
        match self {
            Change::Object { record, .. } => record.resource_version,
            Change::Event(event) => event.resource_version,
        }
    }
}

/// How many recent changes a watch can resume within.
const WINDOW: usize = 8192;

#[derive(Debug)]
pub struct Hub {
    inner: Mutex<Window>,
    sender: tokio::sync::broadcast::Sender<Arc<Change>>,
}

#[derive(Debug)]
struct Window {
    changes: VecDeque<Arc<Change>>,
    /// Every change after this resourceVersion is in the window.
    complete_after: u64,
}

/// The changes a watcher missed, and a receiver for the ones to come.
pub type Subscription = (
    Vec<Arc<Change>>,
    tokio::sync::broadcast::Receiver<Arc<Change>>,
);

/// Why a watch cannot start where it asked.
#[derive(Debug, PartialEq, Eq)]
pub struct TooOld {
    pub oldest: u64,
}

impl Hub {
    /// A hub whose window starts at `current`: the resourceVersion the
    /// store has reached, so a watch from there on needs nothing earlier.
    pub fn new(current: u64) -> Hub {
        let (sender, _) = tokio::sync::broadcast::channel(WINDOW);
        Hub {
            inner: Mutex::new(Window {
                changes: VecDeque::new(),
                complete_after: current,
            }),
            sender,
        }
    }

    pub(super) fn publish(&self, change: Change) {
        let change = Arc::new(change);
        let mut window = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if window.changes.len() == WINDOW
            && let Some(dropped) = window.changes.pop_front()
        {
            window.complete_after = dropped.resource_version();
        }
        window.changes.push_back(change.clone());
        // Sent under the window's lock, so a subscriber that took the window
        // then subscribed under the same lock misses nothing and sees nothing
        // twice.
        let _ = self.sender.send(change);
    }

    /// The changes after `since` still in the window, and a receiver for
    /// the ones to come; `TooOld` when some after `since` are forgotten.
    pub fn subscribe(&self, since: u64) -> Result<Subscription, TooOld> {
        let window = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if since < window.complete_after {
            return Err(TooOld {
                oldest: window.complete_after,
            });
        }
        let backlog = window
            .changes
            .iter()
            .filter(|c| c.resource_version() > since)
            .cloned()
            .collect();
        Ok((backlog, self.sender.subscribe()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Object;

    fn change(version: u64) -> Change {
        let object = crate::spec::parse_str(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
            "test",
        )
        .unwrap()
        .remove(0)
        .object;
        assert!(matches!(object, Object::ConfigMap(_)));
        Change::Object {
            change: ChangeType::Modified,
            record: crate::state::Record {
                uid: "u".into(),
                resource_version: version,
                generation: 1,
                created: String::new(),
                object,
                status: crate::spec::Status::None,
            },
        }
    }

    #[test]
    fn a_watch_resumes_within_the_window_and_is_told_when_it_is_too_old() {
        let hub = Hub::new(10);
        assert_eq!(hub.subscribe(5).unwrap_err(), TooOld { oldest: 10 });
        for version in 11..=13 {
            hub.publish(change(version));
        }
        let (backlog, mut receiver) = hub.subscribe(11).unwrap();
        let versions: Vec<u64> = backlog.iter().map(|c| c.resource_version()).collect();
        assert_eq!(versions, [12, 13]);
        hub.publish(change(14));
        assert_eq!(receiver.try_recv().unwrap().resource_version(), 14);
        // Past the window, the oldest kept version moves on.
        for version in 15..15 + WINDOW as u64 {
            hub.publish(change(version));
        }
        assert!(hub.subscribe(12).is_err());
        assert!(hub.subscribe(14 + WINDOW as u64).is_ok());
    }
}
