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
    /// An event recorded.
    Event(LoggedEvent),
    /// An event expired (with the resourceVersion of its deletion).
    EventGone(LoggedEvent),
}

impl Change {
    pub fn resource_version(&self) -> u64 {
        match self {
            Change::Object { record, .. } => record.resource_version,
            Change::Event(event) | Change::EventGone(event) => event.resource_version,
        }
    }
}

/// How many recent changes a watch can resume within, at most.
const WINDOW: usize = 8192;
/// And how much of them, counted as their stored text: a window of large
/// objects (8,192 changes of a 100 KB ConfigMap would be 800 MB) is kept
/// shorter, and a watcher resuming before it lists again.
const WINDOW_BYTES: usize = 32 << 20;

/// Recent changes, and a signal for watchers that there are more. The
/// window is the one place changes are kept: a watcher reads what it has
/// not seen from it, so however many watchers there are (and however slow)
/// they hold nothing more, and one that falls behind the window is told it
/// is too old, as one whose resourceVersion is.
#[derive(Debug)]
pub struct Hub {
    inner: Mutex<Window>,
    /// The newest change's resourceVersion.
    latest: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug)]
struct Window {
    /// Each change with its size, oldest first.
    changes: VecDeque<(Arc<Change>, usize)>,
    bytes: usize,
    /// Every change after this resourceVersion is in the window.
    complete_after: u64,
}

impl Window {
    /// The changes after `since`, or how far back the window reaches.
    fn after(&self, since: u64) -> Result<Vec<Arc<Change>>, TooOld> {
        if since < self.complete_after {
            return Err(TooOld {
                oldest: self.complete_after,
            });
        }
        let first = self
            .changes
            .partition_point(|(c, _)| c.resource_version() <= since);
        Ok(self
            .changes
            .range(first..)
            .map(|(c, _)| c.clone())
            .collect())
    }
}

/// A watcher's place in a hub's changes.
#[derive(Debug)]
pub struct Cursor {
    hub: Arc<Hub>,
    /// The last change taken (or where the watch started).
    after: u64,
    latest: tokio::sync::watch::Receiver<u64>,
}

impl Cursor {
    /// The changes since the last taken, without waiting (none when there
    /// are none). `TooOld` when some were forgotten before this watcher took
    /// them: it is then moved past them, to the newest change, so a caller
    /// that looks at everything again can go on from here.
    pub fn take(&mut self) -> Result<Vec<Arc<Change>>, TooOld> {
        self.latest.borrow_and_update();
        let window = self.hub.inner.lock().unwrap_or_else(|e| e.into_inner());
        match window.after(self.after) {
            Ok(changes) => {
                if let Some(last) = changes.last() {
                    self.after = last.resource_version();
                }
                Ok(changes)
            }
            Err(too_old) => {
                self.after = *self.latest.borrow();
                Err(too_old)
            }
        }
    }

    /// Waits until there are changes not yet taken, and takes them.
    pub async fn next(&mut self) -> Result<Vec<Arc<Change>>, TooOld> {
        loop {
            let changes = self.take()?;
            if !changes.is_empty() {
                return Ok(changes);
            }
            // Seen before `take` read the window: a change published since
            // wakes this at once. The hub lives as long as this cursor.
            let _ = self.latest.changed().await;
        }
    }

    /// The resourceVersion of the last change taken.
    pub fn position(&self) -> u64 {
        self.after
    }
}

/// Why a watch cannot start where it asked.
#[derive(Debug, PartialEq, Eq)]
pub struct TooOld {
    pub oldest: u64,
}

impl Hub {
    /// A hub whose window starts at `current`: the resourceVersion the
    /// store has reached, so a watch from there on needs nothing earlier.
    pub fn new(current: u64) -> Hub {
        Hub {
            inner: Mutex::new(Window {
                changes: VecDeque::new(),
                bytes: 0,
                complete_after: current,
            }),
            latest: tokio::sync::watch::Sender::new(current),
        }
    }

    /// Adds a committed change, `size` bytes as stored, to the window.
    pub(super) fn publish(&self, change: Change, size: usize) {
        self.publish_all([(change, size)]);
    }

    /// Adds the changes of one commit at once: a watcher never sees part
    /// of them (they may share one resourceVersion, as a namespace's
    /// objects deleted with it do, and a watcher goes on after the last
    /// version it took).
    pub(super) fn publish_all(&self, changes: impl IntoIterator<Item = (Change, usize)>) {
        let mut window = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut newest = None;
        for (change, size) in changes {
            newest = Some(change.resource_version());
            window.changes.push_back((Arc::new(change), size));
            window.bytes += size;
        }
        let Some(version) = newest else {
            return;
        };
        // The newest change always stays, however large.
        while window.changes.len() > WINDOW
            || (window.bytes > WINDOW_BYTES && window.changes.len() > 1)
        {
            let Some((dropped, size)) = window.changes.pop_front() else {
                break;
            };
            window.bytes -= size;
            window.complete_after = dropped.resource_version();
        }
        // Told under the window's lock, so the newest version a watcher
        // sees is always in the window or behind it.
        self.latest.send_replace(version);
    }

    /// A cursor at `since`: the changes after it are its first to take.
    /// `TooOld` when some after `since` are forgotten.
    pub fn subscribe(self: &Arc<Self>, since: u64) -> Result<Cursor, TooOld> {
        let window = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if since < window.complete_after {
            return Err(TooOld {
                oldest: window.complete_after,
            });
        }
        Ok(Cursor {
            hub: self.clone(),
            after: since,
            latest: self.latest.subscribe(),
        })
    }

    /// How many changes, of how many bytes, the window holds.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let window = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (window.changes.len(), window.bytes)
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
        let hub = Arc::new(Hub::new(10));
        assert_eq!(hub.subscribe(5).unwrap_err(), TooOld { oldest: 10 });
        for version in 11..=13 {
            hub.publish(change(version), 100);
        }
        let mut cursor = hub.subscribe(11).unwrap();
        let versions = |changes: Vec<Arc<Change>>| -> Vec<u64> {
            changes.iter().map(|c| c.resource_version()).collect()
        };
        assert_eq!(versions(cursor.take().unwrap()), [12, 13]);
        assert!(cursor.take().unwrap().is_empty());
        hub.publish(change(14), 100);
        assert_eq!(versions(cursor.take().unwrap()), [14]);
        // Past the window, the oldest kept version moves on.
        for version in 15..15 + WINDOW as u64 {
            hub.publish(change(version), 100);
        }
        assert_eq!(hub.held(), (WINDOW, WINDOW * 100));
        assert!(hub.subscribe(12).is_err());
        assert!(hub.subscribe(14 + WINDOW as u64).is_ok());
        // A cursor left behind is told, and goes on from the newest.
        hub.publish(change(15 + WINDOW as u64), 100);
        assert_eq!(cursor.take().unwrap_err(), TooOld { oldest: 15 });
        hub.publish(change(16 + WINDOW as u64), 100);
        assert_eq!(versions(cursor.take().unwrap()), [16 + WINDOW as u64]);
    }

    #[test]
    fn large_changes_keep_the_window_within_its_bytes() {
        let hub = Arc::new(Hub::new(0));
        let big = 1 << 20;
        for version in 1..=100 {
            hub.publish(change(version), big);
        }
        let (changes, bytes) = hub.held();
        assert_eq!(changes, WINDOW_BYTES / big);
        assert!(bytes <= WINDOW_BYTES);
        assert!(hub.subscribe(100 - changes as u64).is_ok());
        assert!(hub.subscribe(99 - changes as u64).is_err());
        // One change larger than the whole window is still kept.
        hub.publish(change(101), WINDOW_BYTES * 2);
        assert_eq!(hub.held().0, 1);
        assert!(hub.subscribe(100).is_ok());
    }

    #[tokio::test]
    async fn a_waiting_watcher_wakes_for_each_change() {
        let hub = Arc::new(Hub::new(0));
        let mut cursor = hub.subscribe(0).unwrap();
        for version in 1..=2 {
            let waiting = tokio::spawn(async move {
                let changes = cursor.next().await.unwrap();
                (changes.len(), changes[0].resource_version(), cursor)
            });
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            assert!(!waiting.is_finished(), "woke with nothing new");
            hub.publish(change(version), 10);
            let (taken, first, back) = waiting.await.unwrap();
            assert_eq!((taken, first), (1, version));
            cursor = back;
        }
    }
}
