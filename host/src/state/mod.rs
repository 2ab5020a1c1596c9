//! The durable state: every object the user applied, with the fields the
//! API server keeps (uid, resourceVersion, generation, creationTimestamp,
//! status), plus events and rollout history, in one SQLite database (WAL).
//!
//! Every change is a transaction: an apply of many objects lands whole or
//! not at all, and after a crash (even kill -9) the daemon reopens the
//! database and finds exactly what was committed.

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension as _, params};

use crate::spec::{Kind, Object, Status};

pub mod sealed;
mod services;
pub mod watch;

pub use sealed::Sealer;
pub use services::ServiceNetwork;

pub use watch::{Change, ChangeType, Cursor, Hub};

/// How long events are kept, as kube-apiserver's `--event-ttl` default.
pub const EVENT_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    uid TEXT NOT NULL UNIQUE,
    resource_version INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    created TEXT NOT NULL,
    object TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT '{}',
    owner TEXT,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    namespace TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    resource_version INTEGER NOT NULL DEFAULT 0,
    uid TEXT
);
CREATE INDEX IF NOT EXISTS events_by_object ON events (namespace, kind, name);
CREATE INDEX IF NOT EXISTS events_by_time ON events (time);
CREATE TABLE IF NOT EXISTS revisions (
    namespace TEXT NOT NULL,
    deployment TEXT NOT NULL,
    revision INTEGER NOT NULL,
    template_hash TEXT NOT NULL,
    template TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (namespace, deployment, revision)
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// The store and what its users share: the API, the controllers and the
/// kubelet each hold one of these, and none of them owns it.
pub struct Shared {
    /// One lock for the store; it never poisons (see `parking_lot`): a
    /// panic under it leaves the store as its last transaction did.
    pub store: parking_lot::Mutex<Store>,
    /// Woken after every change, for the controllers.
    pub changed: tokio::sync::Notify,
    /// Set with a change someone is waiting on (a request held while its
    /// service wakes from zero): the next pass starts at once rather than
    /// gathering a burst of changes first.
    pub urgent: std::sync::atomic::AtomicBool,
    /// Where each pod's volumes and logs are, by pod uid.
    pub pods_dir: std::path::PathBuf,
}

/// The log of run number `run` (0 first) of a container of the pod whose
/// directory is `pod_dir`: the kubelet writes it, the API reads it.
pub fn log_path(pod_dir: &Path, container: &str, run: u32) -> std::path::PathBuf {
    pod_dir
        .join("logs")
        .join(container)
        .join(format!("{run}.log"))
}

/// An object as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub uid: String,
    pub resource_version: u64,
    pub generation: u64,
    pub created: String,
    pub object: Object,
    pub status: Status,
}

/// An object as [`Store::visit`] shows it: where it is parsed, not a copy.
#[derive(Clone, Copy)]
pub struct Visited<'a> {
    pub uid: &'a str,
    pub generation: u64,
    pub object: &'a Object,
    pub status: &'a Status,
}

/// What an apply did to one object, as `kubectl apply` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub time: String,
    pub namespace: String,
    pub kind: String,
    pub name: String,
    /// `Normal` or `Warning`.
    pub kind_of_event: String,
    pub reason: String,
    pub message: String,
    /// The uid of the object as its emitter knew it; when not given, the
    /// uid of the object of that name when the event is recorded (which
    /// may be a same-named successor's, or none if it went at once).
    pub uid: Option<String>,
}

/// An event as the store keeps it: with its place in the one sequence of
/// resourceVersions, so it is listed and watched like any object, and the
/// uid its object had when it was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Never repeats: the event's name is made of it.
    pub id: i64,
    pub resource_version: u64,
    pub uid: Option<String>,
    pub event: Event,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored {kind} {name} is unreadable: {reason}")]
    Corrupt {
        kind: String,
        name: String,
        reason: String,
    },
    #[error("{0}")]
    Rejected(String),
    /// The store was handed over (see [`Store::close`]).
    #[error("this berth daemon has stopped and handed the store over; ask again")]
    Closed,
}

pub type Result<T> = std::result::Result<T, StateError>;

pub struct Store {
    conn: Connection,
    node_ports: std::ops::RangeInclusive<u16>,
    service_network: ServiceNetwork,
    /// Objects and statuses as last parsed, by uid: the controllers and the
    /// kubelet list every pod many times a second while a thousand start,
    /// and a text compare is far cheaper than parsing it again.
    parsed: std::cell::RefCell<std::collections::HashMap<String, Parsed>>,
    /// Bumped by every change to an object itself (not its status), by
    /// the object's kind.
    spec_versions: HashMap<Kind, u64>,
    /// Where committed changes go, for watchers.
    hub: std::sync::Arc<Hub>,
    /// Where recorded events go, for their watchers.
    event_hub: std::sync::Arc<Hub>,
    /// Seals the objects stored encrypted (Secrets) and opens them.
    sealer: Sealer,
    /// Set once this daemon has handed the store to its successor: a write
    /// still coming (a request that outlived the drain) is refused, since
    /// neither this daemon's watchers nor the successor's would hear of it.
    closed: bool,
}

struct Parsed {
    kind: Kind,
    /// Every write of an object or its status takes a new resourceVersion,
    /// and no read happens inside a write's transaction (which could roll
    /// back and give the number to another write), so the same version is
    /// the same texts: unchanged rows are not even read.
    resource_version: u64,
    object: Object,
    status: Status,
    /// The stored texts' length, what a change to it holds in the watch.
    size: usize,
    /// The object's text's alone (a status write changes the rest).
    object_size: usize,
}

/// Kubernetes' default range for NodePort services.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// An object a sealer may seal, as stored and opened.
struct Opened {
    kind: Kind,
    /// `namespace/name`, for messages.
    label: String,
    uid: String,
    stored: String,
    text: String,
}

/// Every object a sealer may seal, opened with `sealer`: an error names
/// the first that does not open.
fn open_sealable(conn: &Connection, sealer: &Sealer) -> Result<Vec<Opened>> {
    let mut rows = conn.prepare(
        "SELECT kind, namespace, name, uid, object FROM objects WHERE kind IN ('Secret', 'ConfigMap')",
    )?;
    let found = rows
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                format!("{}/{}", row.get::<_, String>(1)?, row.get::<_, String>(2)?),
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
            ))
        })?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut opened = Vec::new();
    for (kind, label, uid, stored) in found {
        let Some(kind) = Kind::parse(&kind) else {
            continue;
        };
        // Every sealed one is opened, stale or not: a key of the right
        // name but the wrong bytes is found now, not when the object is
        // next read.
        let text = sealer
            .open(&uid, &stored)
            .map_err(|e| sealed_error(kind, &label, e))?;
        opened.push(Opened {
            kind,
            label,
            uid,
            stored,
            text,
        });
    }
    Ok(opened)
}

/// Opens every sealed object of the store at `path` with `sealer`, only
/// reading: a daemon taking over finds a key it lacks while the one
/// serving still serves, rather than after it has stopped.
pub fn check_sealed(path: &Path, sealer: &Sealer) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    open_sealable(&conn, sealer).map(drop)
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn new_uid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The object without its metadata, JSON: what `generation` tracks.
fn spec_json(object: &Object) -> String {
    let mut value = object_json(object);
    if let Some(map) = value.as_object_mut() {
        map.remove("metadata");
    }
    value.to_string()
}

fn object_json(object: &Object) -> serde_json::Value {
    object.to_value()
}

fn sealed_error(kind: Kind, name: &str, e: sealed::SealError) -> StateError {
    StateError::Corrupt {
        kind: kind.to_string(),
        name: name.to_owned(),
        reason: e.to_string(),
    }
}

fn object_from_json(kind: Kind, name: &str, text: &str) -> Result<Object> {
    let corrupt = |reason: String| StateError::Corrupt {
        kind: kind.to_string(),
        name: name.to_owned(),
        reason,
    };
    let value = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    Object::from_value(kind, value).map_err(|e| corrupt(e.to_string()))
}

/// A pod as an update leaves it: the node it was bound to kept, and
/// nothing of its spec changed but its containers' images, as Kubernetes
/// allows (a changed image restarts the pod's containers).
fn update_pod(new: &crate::spec::objects::Pod, old: &Object) -> Result<crate::spec::objects::Pod> {
    let Object::Pod(old) = old else {
        return Ok(new.clone());
    };
    let mut pod = new.clone();
    if pod.spec.node_name.is_none() {
        pod.spec.node_name.clone_from(&old.spec.node_name);
    }
    // Binding (no node yet → a node) is the scheduler's one change.
    let bound = pod.spec.node_name.clone();
    let comparable = |spec: &crate::spec::objects::PodSpec| {
        let mut spec = spec.clone();
        // A default spelt out (or stored so by an older berth) is no change.
        crate::spec::defaults::canonical(&mut spec);
        for c in spec.containers.iter_mut().chain(&mut spec.init_containers) {
            c.image.clear();
        }
        if spec.node_name.is_none() {
            spec.node_name.clone_from(&bound);
        }
        spec
    };
    if comparable(&pod.spec) != comparable(&old.spec) {
        return Err(StateError::Rejected(format!(
            "Pod {}: a pod's spec may not change, but for its containers' images \
             (delete the pod and create it again, or let a Deployment replace it)",
            pod.metadata.name
        )));
    }
    Ok(pod)
}

/// Objects are keyed by (kind, namespace, name); namespaces themselves
/// have the empty namespace.
fn key(object: &Object) -> (Kind, String, String) {
    (
        object.kind(),
        object.namespace().unwrap_or("").to_owned(),
        object.metadata().name.clone(),
    )
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    pub fn in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store> {
        // WAL: readers never wait for the writer, and a committed
        // transaction survives the process dying (kill -9) at any point.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // What a write replaces or deletes (a Secret as it was) is zeroed,
        // not left readable in the file's free pages.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        migrate_owner_column(&conn)?;
        migrate_event_columns(&conn)?;
        // Every statement the store runs stays prepared (about twenty).
        conn.set_prepared_statement_cache_capacity(64);
        let current: u64 = conn
            .query_row(
                "SELECT value FROM counters WHERE name = 'resource_version'",
                [],
                |row| row.get(0),
            )
            .optional()?
            .unwrap_or(0);
        Ok(Store {
            conn,
            node_ports: NODE_PORTS,
            service_network: ServiceNetwork::default(),
            parsed: Default::default(),
            spec_versions: HashMap::new(),
            hub: std::sync::Arc::new(Hub::new(current)),
            event_hub: std::sync::Arc::new(Hub::new(current)),
            sealer: Sealer::identity(),
            closed: false,
        })
    }

    /// Refuses every write from now on (see [`Store::check_open`]).
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Before a write: an error once the store is closed.
    fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(StateError::Closed);
        }
        Ok(())
    }

    /// Seals and opens objects with `sealer` from now on, and stores every
    /// object a write now would store otherwise (plain where it should be
    /// sealed, or sealed with a key no longer first) again, in one
    /// transaction, wiping what it overwrote: so a key is rotated by a
    /// restart. What was stored again, by name of kind; an object that
    /// opens with none of the keys (or with a key of its name but other
    /// bytes) is an error naming it, and nothing changes.
    pub fn seal_with(&mut self, sealer: Sealer) -> Result<Vec<String>> {
        self.check_open()?;
        let tx = self.conn.transaction()?;
        let mut resealed = Vec::new();
        {
            let mut update = tx.prepare("UPDATE objects SET object = ?1 WHERE uid = ?2")?;
            for opened in open_sealable(&tx, &sealer)? {
                if !sealer.stale(opened.kind, &opened.stored) {
                    continue;
                }
                update.execute(params![
                    sealer.seal(opened.kind, &opened.uid, &opened.text),
                    opened.uid
                ])?;
                resealed.push(format!("{} {}", opened.kind, opened.label));
            }
        }
        tx.commit()?;
        if !resealed.is_empty() {
            // The old forms may linger in the write-ahead log: empty it.
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        self.sealer = sealer;
        self.parsed.borrow_mut().clear();
        Ok(resealed)
    }

    /// Where NodePort services get their ports when they name none.
    pub fn set_node_port_range(&mut self, range: std::ops::RangeInclusive<u16>) {
        self.node_ports = range;
    }

    /// Where Services get their virtual IPs when they name none.
    pub fn set_service_network(&mut self, network: ServiceNetwork) {
        self.service_network = network;
    }

    /// Creates or updates `objects` in one transaction. Namespaced objects
    /// need their namespace (`default` always exists) to exist already or
    /// be part of the same apply; if any object is refused, none changes.
    pub fn apply(&mut self, objects: &[Object]) -> Result<Vec<Outcome>> {
        self.apply_or_try(objects, false)
    }

    /// What [`Store::apply`] would do, changing nothing (`dryRun=All`).
    pub fn apply_dry(&mut self, objects: &[Object]) -> Result<Vec<Outcome>> {
        self.apply_or_try(objects, true)
    }

    fn apply_or_try(&mut self, objects: &[Object], dry: bool) -> Result<Vec<Outcome>> {
        self.check_open()?;
        let tx = self.conn.transaction()?;
        let mut outcomes = Vec::with_capacity(objects.len());
        for object in objects {
            if let Some(ns) = object.namespace()
                && ns != "default"
            {
                let exists: bool = tx
                    .prepare_cached("SELECT 1 FROM objects WHERE kind = 'Namespace' AND namespace = '' AND name = ?1")?
.query_row(
                        [ns],
                        |_| Ok(true),
                    )
                    .optional()?
                    .is_some();
                let in_apply = objects
                    .iter()
                    .any(|o| matches!(o, Object::Namespace(n) if n.metadata.name == ns));
                if !exists && !in_apply {
                    return Err(StateError::Rejected(format!(
                        "{} {}: namespace {ns} does not exist (create it, or apply it in the same files)",
                        object.kind(),
                        object.metadata().name
                    )));
                }
            }
            let allocated;
            let object = match object {
                Object::Service(service) => {
                    allocated = Object::Service(services::allocate(
                        &tx,
                        service,
                        &self.node_ports,
                        &self.service_network,
                    )?);
                    &allocated
                }
                other => other,
            };
            let (kind, namespace, name) = key(object);
            let stored: Option<(String, u64, String)> = tx
                .prepare_cached("SELECT object, generation, uid FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3")?
.query_row(
                    params![kind, namespace, name],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?;
            let stored = match stored {
                Some((text, generation, uid)) => {
                    let text = self
                        .sealer
                        .open(&uid, &text)
                        .map_err(|e| sealed_error(kind, &name, e))?;
                    Some((text, generation, uid))
                }
                None => None,
            };
            let merged;
            let object = match (object, &stored) {
                (Object::Pod(pod), Some((old_text, _, _))) => {
                    merged = Object::Pod(Box::new(update_pod(
                        pod,
                        &object_from_json(kind, &name, old_text)?,
                    )?));
                    &merged
                }
                _ => object,
            };
            // A deletion under way is the server's to record: an update
            // (which never carries it) leaves it as it is.
            let carried;
            let object = match &stored {
                Some((old_text, _, _))
                    if !object.metadata().deleting()
                        && old_text.contains("\"deletionTimestamp\"") =>
                {
                    let old = object_from_json(kind, &name, old_text)?;
                    let mut with = object.clone();
                    let (meta, was) = (with.metadata_mut(), old.metadata());
                    meta.deletion_timestamp.clone_from(&was.deletion_timestamp);
                    meta.deletion_grace_period_seconds = was.deletion_grace_period_seconds;
                    meta.finalizers.clone_from(&was.finalizers);
                    carried = with;
                    &carried
                }
                _ => object,
            };
            let text = object_json(object).to_string();
            let version = next_version(&tx)?;
            let outcome = match stored {
                None => {
                    let uid = new_uid();
                    let text = self.sealer.seal(kind, &uid, &text);
                    tx.prepare_cached("INSERT INTO objects (kind, namespace, name, uid, resource_version, generation, created, object, owner)
                         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8)")?
.execute(
                        params![kind, namespace, name, uid, version, now(), text, controller_of(object)],
                    )?;
                    Outcome::Created
                }
                Some((old_text, _, _)) if old_text == text => Outcome::Unchanged,
                Some((old_text, generation, uid)) => {
                    let old = object_from_json(kind, &name, &old_text)?;
                    let generation = if spec_json(&old) == spec_json(object) {
                        generation
                    } else {
                        generation + 1
                    };
                    let text = self.sealer.seal(kind, &uid, &text);
                    tx.prepare_cached(
                        "UPDATE objects SET object = ?4, generation = ?5, resource_version = ?6, owner = ?7
                         WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                    )?
                    .execute(params![kind, namespace, name, text, generation, version, controller_of(object)])?;
                    Outcome::Configured
                }
            };
            outcomes.push(outcome);
        }
        if dry {
            // Dropped, the transaction rolls back.
            return Ok(outcomes);
        }
        tx.commit()?;
        for (object, outcome) in objects.iter().zip(&outcomes) {
            if *outcome != Outcome::Unchanged {
                *self.spec_versions.entry(object.kind()).or_default() += 1;
            }
        }
        for (object, outcome) in objects.iter().zip(&outcomes) {
            let change = match outcome {
                Outcome::Created => ChangeType::Added,
                Outcome::Configured => ChangeType::Modified,
                Outcome::Unchanged => continue,
            };
            let (kind, namespace, name) = key(object);
            self.publish(change, kind, &namespace, &name)?;
        }
        Ok(outcomes)
    }

    /// Begins an object's deletion instead of deleting it: it stays, marked
    /// (`deletionTimestamp`, the grace period, the finalizers), until what
    /// holds it lets go and deletes it. The object as marked, or `None` if
    /// there is none with `uid`.
    pub fn mark_deleting(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        uid: &str,
        grace_seconds: u64,
        finalizers: &[&str],
    ) -> Result<Option<Record>> {
        let Some(record) = self.get(kind, namespace, name)?.filter(|r| r.uid == uid) else {
            return Ok(None);
        };
        let mut object = record.object;
        let meta = object.metadata_mut();
        // As Kubernetes records it: when the deletion is due.
        // (A grace of centuries is due at the latest time RFC 3339 writes.)
        let latest = std::time::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799);
        let due = std::time::SystemTime::now()
            .checked_add(std::time::Duration::from_secs(grace_seconds))
            .map_or(latest, |due| due.min(latest));
        meta.deletion_timestamp = Some(humantime::format_rfc3339_seconds(due).to_string());
        meta.deletion_grace_period_seconds = Some(grace_seconds);
        for finalizer in finalizers {
            if !meta.finalizers.iter().any(|f| f == finalizer) {
                meta.finalizers.push((*finalizer).to_owned());
            }
        }
        self.apply(std::slice::from_ref(&object))?;
        self.get(kind, namespace, name)
    }

    /// Deletes the object at a key if it is still the one with `uid`.
    pub fn delete_if(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<bool> {
        if self
            .get(kind, namespace, name)?
            .is_some_and(|r| r.uid == uid)
        {
            return self.delete(kind, namespace, name);
        }
        Ok(false)
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Option<Record>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT name, uid, resource_version, generation, created, object, status FROM objects
             WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
        )?;
        Ok(self
            .records(kind, &mut statement, params![kind, namespace, name])?
            .pop())
    }

    /// Changes so far to objects of `kind` themselves (apply, delete), not
    /// to their status: who only watches those can skip a pass when it is
    /// unchanged (the kubelet looks again when pods change, the router when
    /// services do, and neither when a ConfigMap does).
    pub fn spec_version_of(&self, kind: Kind) -> u64 {
        self.spec_versions.get(&kind).copied().unwrap_or(0)
    }

    /// The record of a row of a `SELECT name, uid, resource_version,
    /// generation, created, object, status` over objects of `kind`: as last
    /// parsed if its version has not moved, else read and parsed.
    fn record(&self, kind: Kind, row: &rusqlite::Row<'_>) -> Result<Record> {
        let uid: String = row.get(1)?;
        let resource_version: u64 = row.get(2)?;
        let generation: u64 = row.get(3)?;
        let created: String = row.get(4)?;
        let mut parsed = self.parsed.borrow_mut();
        if let Some(p) = parsed.get(&uid)
            && p.kind == kind
            && p.resource_version == resource_version
        {
            return Ok(Record {
                uid,
                resource_version,
                generation,
                created,
                object: p.object.clone(),
                status: p.status.clone(),
            });
        }
        let name: String = row.get(0)?;
        let object_text: String = row.get(5)?;
        let status_text: String = row.get(6)?;
        let opened = self
            .sealer
            .open(&uid, &object_text)
            .map_err(|e| sealed_error(kind, &name, e))?;
        let object = object_from_json(kind, &name, &opened)?;
        // A status is what was last observed, and is observed again: one
        // an older berth stored in another shape is dropped, not a reason
        // to fail every list of its kind.
        let status = Status::from_json(kind, &status_text).unwrap_or_else(|e| {
            tracing::warn!("{kind} {name}: dropping a stored status of another shape: {e}");
            Status::empty(kind)
        });
        parsed.insert(
            uid.clone(),
            Parsed {
                kind: object.kind(),
                resource_version,
                object: object.clone(),
                status: status.clone(),
                size: object_text.len() + status_text.len(),
                object_size: object_text.len(),
            },
        );
        Ok(Record {
            uid,
            resource_version,
            generation,
            created,
            object,
            status,
        })
    }

    /// The records a `SELECT name, uid, resource_version, generation,
    /// created, object, status` over objects of `kind` yields.
    fn records(
        &self,
        kind: Kind,
        statement: &mut rusqlite::CachedStatement<'_>,
        params: impl rusqlite::Params,
    ) -> Result<Vec<Record>> {
        let mut rows = statement.query(params)?;
        let mut records = Vec::new();
        while let Some(row) = rows.next()? {
            records.push(self.record(kind, row)?);
        }
        Ok(records)
    }

    /// Objects of `kind`, in `namespace` or in all of them, by namespace and name.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> Result<Vec<Record>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT name, uid, resource_version, generation, created, object, status FROM objects
             WHERE kind = ?1 AND (?2 IS NULL OR namespace = ?2) ORDER BY namespace, name",
        )?;
        let records = self.records(kind, &mut statement, params![kind, namespace])?;
        if namespace.is_none() {
            self.forget_all_but(kind, records.iter().map(|r| r.uid.as_str()));
        }
        Ok(records)
    }

    /// Forgets the parsed objects of `kind` but those of `uids`: every
    /// object of the kind there is, so the others were deleted.
    fn forget_all_but<'a>(&self, kind: Kind, uids: impl Iterator<Item = &'a str>) {
        let seen: std::collections::HashSet<&str> = uids.collect();
        self.parsed
            .borrow_mut()
            .retain(|uid, p| p.kind != kind || seen.contains(uid.as_str()));
    }

    /// A page of [`Store::list`]: at most `limit` objects after the key
    /// `after` (namespace, name), read by the primary key's order, so a
    /// paged list costs its page, not every object of the kind.
    pub fn list_page(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let (after_ns, after_name) = after.unzip();
        let mut statement = self.conn.prepare_cached(
            "SELECT name, uid, resource_version, generation, created, object, status FROM objects
             WHERE kind = ?1 AND (?2 IS NULL OR namespace = ?2)
               AND (?3 IS NULL OR (namespace, name) > (?3, ?4))
             ORDER BY namespace, name LIMIT ?5",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.records(
            kind,
            &mut statement,
            params![kind, namespace, after_ns, after_name, limit],
        )
    }

    /// Calls `f` with each object of `kind` whose controlling owner has
    /// `owner_uid` (with its uid, generation and status), by name, as [`Store::list_owned`] lists
    /// them but without copying either: a controller counting ten thousand
    /// pods on every pass reads them where they are parsed. Only the rows'
    /// keys are read; an object's texts only when it changed since it was
    /// last parsed.
    pub fn visit_owned(
        &self,
        kind: Kind,
        owner_uid: &str,
        f: impl FnMut(Visited<'_>),
    ) -> Result<()> {
        let keys = self.keys(
            "SELECT uid, resource_version, generation FROM objects
             WHERE kind = ?1 AND owner = ?2 ORDER BY namespace, name",
            params![kind, owner_uid],
        )?;
        self.visit_keys(kind, keys, f)
    }

    /// [`Store::visit_owned`] over every object of `kind`, as
    /// [`Store::list`] lists them (and, as it does, forgetting the parsed
    /// objects of the kind that are gone).
    pub fn visit(&self, kind: Kind, f: impl FnMut(Visited<'_>)) -> Result<()> {
        let keys = self.keys(
            "SELECT uid, resource_version, generation FROM objects
             WHERE kind = ?1 ORDER BY namespace, name",
            params![kind],
        )?;
        self.forget_all_but(kind, keys.iter().map(|(uid, _, _)| uid.as_str()));
        self.visit_keys(kind, keys, f)
    }

    /// The uid, resourceVersion and generation of each row `query` (which
    /// selects those three) yields.
    fn keys(&self, query: &str, params: impl rusqlite::Params) -> Result<Vec<(String, u64, u64)>> {
        Ok(self
            .conn
            .prepare_cached(query)?
            .query_map(params, |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// Calls `f` with each object of `kind` named by its uid and
    /// resourceVersion (and generation) in `keys`, parsed (again) only if
    /// it changed. `f` sees the parse cache borrowed: it may not read the
    /// store (it would panic); what it needs read is read after.
    fn visit_keys(
        &self,
        kind: Kind,
        keys: Vec<(String, u64, u64)>,
        mut f: impl FnMut(Visited<'_>),
    ) -> Result<()> {
        for (uid, resource_version, generation) in keys {
            let fresh = self
                .parsed
                .borrow()
                .get(&uid)
                .is_some_and(|p| p.kind == kind && p.resource_version == resource_version);
            if !fresh {
                let mut statement = self.conn.prepare_cached(
                    "SELECT name, uid, resource_version, generation, created, object, status
                     FROM objects WHERE uid = ?1",
                )?;
                let mut rows = statement.query(params![uid])?;
                let Some(row) = rows.next()? else {
                    continue;
                };
                // Parsed into the cache, where it is read below.
                self.record(kind, row)?;
            }
            if let Some(p) = self.parsed.borrow().get(&uid) {
                f(Visited {
                    uid: &uid,
                    generation,
                    object: &p.object,
                    status: &p.status,
                });
            }
        }
        Ok(())
    }

    /// Objects of `kind` whose controlling owner has `owner_uid`, by name:
    /// an index lookup, so a controller's pass costs what it owns, not
    /// every object of the kind.
    pub fn list_owned(&self, kind: Kind, owner_uid: &str) -> Result<Vec<Record>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT name, uid, resource_version, generation, created, object, status FROM objects
             WHERE kind = ?1 AND owner = ?2 ORDER BY namespace, name",
        )?;
        self.records(kind, &mut statement, params![kind, owner_uid])
    }

    /// Deletes an object (a namespace with all it holds); whether it existed.
    pub fn delete(&mut self, kind: Kind, namespace: &str, name: &str) -> Result<bool> {
        Ok(self.delete_record(kind, namespace, name)?.is_some())
    }

    /// [`Store::delete`], answering the object as it was, with the
    /// deletion's resourceVersion.
    pub fn delete_record(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Record>> {
        if kind == Kind::Namespace && name == "default" {
            return Err(StateError::Rejected(
                "the default namespace cannot be deleted".into(),
            ));
        }
        let Some(record) = self.get(kind, namespace, name)? else {
            return Ok(None);
        };
        // What goes with it, for the watchers.
        let mut gone = vec![record];
        if kind == Kind::Namespace {
            let mut contained = self.conn.prepare_cached(
                "SELECT kind, name FROM objects WHERE namespace = ?1 ORDER BY kind, name",
            )?;
            let keys = contained
                .query_map([name], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            drop(contained);
            for (kind, object) in keys {
                let Some(kind) = Kind::parse(&kind) else {
                    continue;
                };
                if let Some(r) = self.get(kind, name, &object)? {
                    gone.push(r);
                }
            }
        }
        self.check_open()?;
        let tx = self.conn.transaction()?;
        let version = next_version(&tx)?;
        tx.prepare_cached("DELETE FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3")?
            .execute(params![kind, namespace, name])?;
        if kind == Kind::Deployment {
            tx.prepare_cached("DELETE FROM revisions WHERE namespace = ?1 AND deployment = ?2")?
                .execute(params![namespace, name])?;
        }
        // A namespace takes everything in it along, as in Kubernetes.
        if kind == Kind::Namespace {
            tx.prepare_cached("DELETE FROM objects WHERE namespace = ?1")?
                .execute([name])?;
            tx.prepare_cached("DELETE FROM revisions WHERE namespace = ?1")?
                .execute([name])?;
            tx.prepare_cached("DELETE FROM events WHERE namespace = ?1")?
                .execute([name])?;
        }
        tx.commit()?;
        for record in &gone {
            *self.spec_versions.entry(record.object.kind()).or_default() += 1;
        }
        let deleted: Vec<(Change, usize)> = gone
            .iter()
            .cloned()
            .rev()
            .map(|mut record| {
                record.resource_version = version;
                let size = self.size_of(&record.uid);
                let change = Change::Object {
                    change: ChangeType::Deleted,
                    record,
                };
                (change, size)
            })
            .collect();
        self.hub.publish_all(deleted);
        let mut record = gone.swap_remove(0);
        record.resource_version = version;
        Ok(Some(record))
    }

    /// Replaces an object's status (a new resourceVersion, same generation).
    pub fn set_status(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        status: &Status,
    ) -> Result<bool> {
        let changed = self.update_status(
            "UPDATE objects SET status = ?1, resource_version = ?2 WHERE kind = ?3 AND namespace = ?4 AND name = ?5",
            &[&kind, &namespace, &name],
            kind,
            status,
        )?
        .is_some();
        if changed {
            self.publish(ChangeType::Modified, kind, namespace, name)?;
        }
        Ok(changed)
    }

    /// [`Store::set_status`] of the object with `uid`: false when it is
    /// gone, even if another now has its name.
    pub fn set_status_of(&mut self, kind: Kind, uid: &str, status: &Status) -> Result<bool> {
        self.set_statuses_of(kind, &[(uid, status)])?
            .pop()
            .expect("one outcome per status")
    }

    /// [`Store::set_status_of`] of many objects of `kind` in one
    /// transaction: the kubelet reports a status per pod starting, and one
    /// commit (and one counter write) per batch costs far less than one
    /// each. Each object changed takes a resourceVersion of its own and
    /// goes to the watchers, in the order given. What each did (false: the
    /// object is gone), or why its status was refused; the whole batch
    /// fails only when the store does.
    pub fn set_statuses_of(
        &mut self,
        kind: Kind,
        statuses: &[(&str, &Status)],
    ) -> Result<Vec<Result<bool>>> {
        self.check_open()?;
        let fitting = statuses.iter().filter(|(_, s)| s.fits(kind)).count() as u64;
        let mut outcomes = Vec::with_capacity(statuses.len());
        let mut changed = Vec::new();
        {
            let tx = self.conn.transaction()?;
            let mut version = match fitting {
                0 => 0,
                n => take_versions(&tx, n)? + 1 - n,
            };
            {
                // What the change's record needs comes back with the
                // write: no reading the row again to publish it.
                let mut update = tx.prepare_cached(
                    "UPDATE objects SET status = ?1, resource_version = ?2 WHERE kind = ?3 AND uid = ?4
                     RETURNING namespace, name, generation, created",
                )?;
                for (uid, status) in statuses {
                    if !status.fits(kind) {
                        outcomes.push(Err(StateError::Rejected(format!(
                            "a {kind} cannot take the status {status:?}"
                        ))));
                        continue;
                    }
                    let text = status.to_json();
                    let row: Option<(String, String, u64, String)> = update
                        .query_row(params![text, version, kind, uid], |row| {
                            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                        })
                        .optional()?;
                    outcomes.push(Ok(row.is_some()));
                    if let Some(row) = row {
                        changed.push((*uid, version, text, row));
                    }
                    version += 1;
                }
            }
            tx.commit()?;
        }
        for (uid, version, text, (namespace, name, generation, created)) in changed {
            // The object's text is as it was: its parse stands, with the
            // status as stored and the new version (the kubelet writes ten
            // thousand statuses while pods start; reading each back would
            // parse its whole pod again), and it is the record published.
            let parsed = self
                .parsed
                .get_mut()
                .get_mut(uid)
                .filter(|p| p.kind == kind);
            match (parsed, Status::from_json(kind, &text)) {
                (Some(parsed), Ok(stored)) => {
                    parsed.resource_version = version;
                    parsed.status = stored;
                    parsed.size = parsed.object_size + text.len();
                    let record = Record {
                        uid: uid.to_owned(),
                        resource_version: version,
                        generation,
                        created,
                        object: parsed.object.clone(),
                        status: parsed.status.clone(),
                    };
                    let size = parsed.size;
                    self.hub.publish(
                        Change::Object {
                            change: ChangeType::Modified,
                            record,
                        },
                        size,
                    );
                }
                // Not parsed yet: read (and parsed) to be published.
                _ => self.publish(ChangeType::Modified, kind, &namespace, &name)?,
            }
        }
        Ok(outcomes)
    }

    /// Runs `update` (status ?1, resourceVersion ?2, then `key`) in a
    /// transaction of its own; if it changed an object, the version it took
    /// and the status's text as stored.
    fn update_status(
        &mut self,
        update: &str,
        key: &[&dyn rusqlite::ToSql],
        kind: Kind,
        status: &Status,
    ) -> Result<Option<(u64, String)>> {
        if !status.fits(kind) {
            return Err(StateError::Rejected(format!(
                "a {kind} cannot take the status {status:?}"
            )));
        }
        self.check_open()?;
        let tx = self.conn.transaction()?;
        let version = next_version(&tx)?;
        let status = status.to_json();
        let values: [&dyn rusqlite::ToSql; 2] = [&status, &version];
        let n = tx
            .prepare_cached(update)?
            .execute(rusqlite::params_from_iter(values.iter().chain(key)))?;
        tx.commit()?;
        Ok((n > 0).then_some((version, status)))
    }

    /// Tells the watchers of a committed change to the object at a key.
    fn publish(
        &mut self,
        change: ChangeType,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<()> {
        if let Some(record) = self.get(kind, namespace, name)? {
            let size = self.size_of(&record.uid);
            self.hub.publish(Change::Object { change, record }, size);
        }
        Ok(())
    }

    /// The stored size of the object with `uid`, as last read.
    fn size_of(&self, uid: &str) -> usize {
        self.parsed.borrow().get(uid).map_or(0, |p| p.size)
    }

    /// How many pods of a namespace count against its quota: those not
    /// finished (Succeeded or Failed), as Kubernetes' quota counts them, so
    /// a Job's thousandth completed pod takes no room from its next.
    pub fn count_active_pods(&self, namespace: &str) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM objects WHERE kind = 'Pod' AND namespace = ?1
                 AND COALESCE(json_extract(status, '$.phase'), '') NOT IN ('Succeeded', 'Failed')",
            )?
            .query_row(params![namespace], |row| row.get(0))?)
    }

    /// How many objects of `kind` a namespace holds.
    pub fn count(&self, kind: Kind, namespace: &str) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM objects WHERE kind = ?1 AND namespace = ?2")?
            .query_row(params![kind, namespace], |row| row.get(0))?)
    }

    /// Where watchers subscribe to committed changes.
    pub fn hub(&self) -> std::sync::Arc<Hub> {
        self.hub.clone()
    }

    /// Where watchers of events subscribe to them as they are recorded.
    pub fn event_hub(&self) -> std::sync::Arc<Hub> {
        self.event_hub.clone()
    }

    /// The resourceVersion of the latest change.
    pub fn current_version(&self) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM counters WHERE name = 'resource_version'")?
            .query_row([], |row| row.get(0))
            .optional()?
            .unwrap_or(0))
    }

    pub fn record_event(&mut self, event: &Event) -> Result<()> {
        self.record_events(std::slice::from_ref(event))
    }

    /// [`Store::record_event`] of many, in one transaction. Each takes a
    /// resourceVersion of its own and goes to the watchers.
    pub fn record_events(&mut self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.check_open()?;
        let tx = self.conn.transaction()?;
        let mut logged = Vec::with_capacity(events.len());
        // The batch's versions taken at once: one counter write, not one
        // per event (three events for each pod starting).
        let last = take_versions(&tx, events.len() as u64)?;
        let mut version = last + 1 - events.len() as u64;
        {
            let mut insert = tx.prepare_cached("INSERT INTO events (time, namespace, kind, name, type, reason, message, resource_version, uid) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")?;
            let mut uid_of = tx.prepare_cached(
                "SELECT uid FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
            )?;
            for event in events {
                // Cluster-scoped objects are stored outside every namespace.
                let namespace = match Kind::parse(&event.kind) {
                    Some(kind) if !kind.namespaced() => "",
                    _ => event.namespace.as_str(),
                };
                let uid: Option<String> = match &event.uid {
                    Some(uid) => Some(uid.clone()),
                    None => uid_of
                        .query_row(params![event.kind, namespace, event.name], |row| row.get(0))
                        .optional()?,
                };
                insert.execute(params![
                    event.time,
                    event.namespace,
                    event.kind,
                    event.name,
                    event.kind_of_event,
                    event.reason,
                    event.message,
                    version,
                    uid
                ])?;
                logged.push(LoggedEvent {
                    id: tx.last_insert_rowid(),
                    resource_version: version,
                    uid,
                    event: event.clone(),
                });
                version += 1;
            }
        }
        tx.commit()?;
        self.event_hub.publish_all(logged.into_iter().map(|event| {
            let size = event_size(&event);
            (Change::Event(event), size)
        }));
        Ok(())
    }

    /// Forgets events recorded before `ttl` ago, as kube-apiserver lets
    /// them expire: a pod crash-looping for a week leaves an hour of them,
    /// not a week. How many went.
    pub fn expire_events(&mut self, ttl: std::time::Duration) -> Result<usize> {
        let Some(before) = std::time::SystemTime::now().checked_sub(ttl) else {
            return Ok(0);
        };
        let before = humantime::format_rfc3339_seconds(before).to_string();
        self.check_open()?;
        let tx = self.conn.transaction()?;
        let mut expired: Vec<LoggedEvent> = tx
            .prepare_cached(&format!("{EVENT_COLUMNS} WHERE time < ?1 ORDER BY id"))?
            .query_map([&before], logged_event)?
            .collect::<std::result::Result<_, _>>()?;
        if expired.is_empty() {
            return Ok(0);
        }
        // Gone at one version, as a namespace's objects are: watchers are
        // told, as of a TTL's deletion in kube-apiserver.
        let version = next_version(&tx)?;
        tx.prepare_cached("DELETE FROM events WHERE time < ?1")?
            .execute([&before])?;
        tx.commit()?;
        let gone = expired.len();
        self.event_hub
            .publish_all(expired.drain(..).map(|mut event| {
                event.resource_version = version;
                let size = event_size(&event);
                (Change::EventGone(event), size)
            }));
        Ok(gone)
    }

    /// Records `event` unless the object had the same one (reason and
    /// message) in the last ten minutes, the window in which Kubernetes
    /// folds repeats into one event: what a controller finds again on
    /// every pass (a quota reached, a bad certificate) is said once, not
    /// once a pass. Whether it was recorded.
    pub fn record_event_unless_repeated(&mut self, event: &Event) -> Result<bool> {
        let since = humantime::format_rfc3339_seconds(
            std::time::SystemTime::now() - std::time::Duration::from_secs(600),
        )
        .to_string();
        let repeated = self
            .conn
            .prepare_cached(
                "SELECT 1 FROM events WHERE namespace = ?1 AND kind = ?2 AND name = ?3
                 AND reason = ?4 AND message = ?5 AND time >= ?6 LIMIT 1",
            )?
            .query_row(
                params![
                    event.namespace,
                    event.kind,
                    event.name,
                    event.reason,
                    event.message,
                    since
                ],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if repeated {
            return Ok(false);
        }
        self.record_event(event)?;
        Ok(true)
    }

    /// Events, oldest first: of one object, or of a namespace, or all.
    pub fn events(
        &self,
        namespace: Option<&str>,
        object: Option<(&str, &str)>,
    ) -> Result<Vec<Event>> {
        let (kind, name) = object.unzip();
        let mut statement = self.conn.prepare_cached(&format!(
            "{EVENT_COLUMNS} WHERE (?1 IS NULL OR namespace = ?1) AND (?2 IS NULL OR kind = ?2) \
             AND (?3 IS NULL OR name = ?3) ORDER BY id"
        ))?;
        let rows = statement.query_map(params![namespace, kind, name], |row| {
            logged_event(row).map(|logged| logged.event)
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Events as the API serves them, oldest first.
    pub fn event_log(&self, namespace: Option<&str>) -> Result<Vec<LoggedEvent>> {
        let mut statement = self.conn.prepare_cached(&format!(
            "{EVENT_COLUMNS} WHERE (?1 IS NULL OR namespace = ?1) ORDER BY id"
        ))?;
        let rows = statement.query_map(params![namespace], logged_event)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Records `template` as a revision of a deployment unless its hash is
    /// already the latest one; returns the revision number in effect.
    pub fn record_revision(
        &mut self,
        namespace: &str,
        deployment: &str,
        template_hash: &str,
        template: &serde_json::Value,
    ) -> Result<u64> {
        self.check_open()?;
        let tx = self.conn.transaction()?;
        let latest: Option<(u64, String)> = tx
            .prepare_cached("SELECT revision, template_hash FROM revisions WHERE namespace = ?1 AND deployment = ?2
                 ORDER BY revision DESC LIMIT 1")?
.query_row(
                params![namespace, deployment],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let revision = match &latest {
            Some((revision, hash)) if hash == template_hash => *revision,
            Some((revision, _)) => revision + 1,
            None => 1,
        };
        if latest.as_ref().is_none_or(|(r, _)| *r != revision) {
            tx.prepare_cached("INSERT INTO revisions (namespace, deployment, revision, template_hash, template, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
.execute(
                params![namespace, deployment, revision, template_hash, template.to_string(), now()],
            )?;
        }
        tx.commit()?;
        Ok(revision)
    }

    /// A deployment's revisions, oldest first: (revision, hash, template).
    pub fn revisions(
        &self,
        namespace: &str,
        deployment: &str,
    ) -> Result<Vec<(u64, String, serde_json::Value)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT revision, template_hash, template FROM revisions WHERE namespace = ?1 AND deployment = ?2 ORDER BY revision",
        )?;
        let rows = statement.query_map(params![namespace, deployment], |row| {
            Ok((
                row.get::<_, u64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (revision, hash, template) = row?;
            let template = serde_json::from_str(&template).map_err(|e| StateError::Corrupt {
                kind: "revision".into(),
                name: format!("{deployment} #{revision}"),
                reason: e.to_string(),
            })?;
            out.push((revision, hash, template));
        }
        Ok(out)
    }
}

/// The uid of the object's controlling owner, kept in its own indexed
/// column for [`Store::list_owned`].
fn controller_of(object: &Object) -> Option<&str> {
    object
        .metadata()
        .owner_references
        .iter()
        .find(|o| o.controller)
        .map(|o| o.uid.as_str())
}

/// Databases made before events had a resourceVersion and their object's
/// uid get both: the version the store is at, and the uid of the object of
/// that name now (the best there is to know).
fn migrate_event_columns(conn: &Connection) -> Result<()> {
    let has_version = conn
        .prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = 'resource_version'")?
        .exists([])?;
    if !has_version {
        // One transaction: a crash half-way leaves the old table whole.
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE events ADD COLUMN resource_version INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE events ADD COLUMN uid TEXT;
             UPDATE events SET
                 resource_version = COALESCE(
                     (SELECT value FROM counters WHERE name = 'resource_version'), 0),
                 uid = (SELECT o.uid FROM objects o WHERE o.kind = events.kind AND o.name = events.name
                        AND o.namespace = CASE WHEN events.kind IN ('Namespace', 'PersistentVolume')
                                               THEN '' ELSE events.namespace END);
             COMMIT;",
        )?;
    }
    Ok(())
}

/// Databases made before the owner column get it, filled from each
/// object's ownerReferences, and its index.
fn migrate_owner_column(conn: &Connection) -> Result<()> {
    let has_owner = conn
        .prepare("SELECT 1 FROM pragma_table_info('objects') WHERE name = 'owner'")?
        .exists([])?;
    if !has_owner {
        conn.execute_batch(
            "ALTER TABLE objects ADD COLUMN owner TEXT;
             UPDATE objects SET owner = (
                 SELECT json_extract(value, '$.uid')
                 FROM json_each(json_extract(objects.object, '$.metadata.ownerReferences'))
                 WHERE json_extract(value, '$.controller') = 1
                 LIMIT 1
             );",
        )?;
    }
    conn.execute_batch("CREATE INDEX IF NOT EXISTS objects_by_owner ON objects (kind, owner);")?;
    Ok(())
}

/// The next resourceVersion: one counter across all objects, as etcd's
/// revision is, so versions order every change.
/// About what an event's stored row holds: its texts and the names.
fn event_size(event: &LoggedEvent) -> usize {
    512 + event.event.message.len() + event.event.reason.len()
}

/// The start of a query of events, each read with [`logged_event`].
const EVENT_COLUMNS: &str = "SELECT id, time, namespace, kind, name, type, reason, message, \
     resource_version, uid FROM events";

fn logged_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<LoggedEvent> {
    Ok(LoggedEvent {
        id: row.get(0)?,
        event: Event {
            time: row.get(1)?,
            namespace: row.get(2)?,
            kind: row.get(3)?,
            name: row.get(4)?,
            kind_of_event: row.get(5)?,
            reason: row.get(6)?,
            message: row.get(7)?,
            uid: row.get(9)?,
        },
        resource_version: row.get(8)?,
        uid: row.get(9)?,
    })
}

fn next_version(tx: &rusqlite::Transaction<'_>) -> Result<u64> {
    take_versions(tx, 1)
}

/// Takes the next `n` resourceVersions (at least one); the last of them.
fn take_versions(tx: &rusqlite::Transaction<'_>, n: u64) -> Result<u64> {
    let n = n.max(1);
    tx.prepare_cached(
        "INSERT INTO counters (name, value) VALUES ('resource_version', ?1)
         ON CONFLICT (name) DO UPDATE SET value = value + ?1",
    )?
    .execute([n])?;
    Ok(tx
        .prepare_cached("SELECT value FROM counters WHERE name = 'resource_version'")?
        .query_row([], |row| row.get(0))?)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
