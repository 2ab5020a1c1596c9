//! Server-side apply as kube-apiserver runs it (`PATCH` with
//! `Content-Type: application/apply-patch+yaml`, which is what
//! `kubectl apply --server-side [--force-conflicts]` sends), and the field
//! ownership bookkeeping every other write does, both kept in
//! `metadata.managedFields` in Kubernetes' own `FieldsV1` encoding so that
//! kubectl, client libraries and controllers read them unchanged.
//!
//! The model is structured-merge-diff's: a manager owns a set of field paths
//! (`f:spec`, `f:replicas`, `k:{"name":"web"}` for an element of a list keyed
//! by `name`, `v:"a"` for an element of a set). An apply replaces the
//! applier's set with the fields of its configuration, merges the
//! configuration into the live object (lists keyed by their map keys, sets
//! unioned, atomic lists and maps replaced), removes what the applier owned
//! before, no longer applies and nobody else owns, and refuses (409) to
//! change a value another manager owns unless forced. Any other write
//! (create, update, patch) gives its manager the fields it changed and takes
//! them from everybody else. Lists and maps are typed from the OpenAPI v3
//! `components.schemas` berth serves, read the way kube-openapi's
//! `schemaconv` reads them: `x-kubernetes-list-type`,
//! `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`, and for built-in
//! types without a list type, `x-kubernetes-patch-strategy: merge` with
//! `x-kubernetes-patch-merge-key`.
//!
//! Nothing here panics on odd input: the applied configuration is checked
//! and rejected with [`ApplyError::Invalid`]; stored objects and stored
//! managedFields that do not fit the schema are read leniently, because
//! refusing them would make the object unwritable.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::schema::Schemas;

/// The deepest an object may nest: a bound on recursion, far past anything
/// a Kubernetes object needs.
const MAX_DEPTH: usize = 100;
/// kube-apiserver keeps at most this many `Update` entries; older ones are
/// folded into an `ancient-changes` entry per apiVersion.
const MAX_UPDATE_MANAGERS: usize = 10;
const ANCIENT_CHANGES: &str = "ancient-changes";
/// The manager kube records the existing fields under when an object that
/// has no managedFields at all (it predates field tracking) is applied to.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";
/// kube-apiserver's limit on a fieldManager's length.
const MAX_MANAGER_LEN: usize = 128;

/// Metadata the server sets, never owned by anyone: kube strips these from
/// every manager's set (`stripmeta.go`), along with `apiVersion`, `kind`
/// and `metadata` itself.
const STRIPPED_METADATA: [&str; 9] = [
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "clusterName",
    "generation",
    "managedFields",
    "resourceVersion",
];

/// Metadata an applied configuration may carry but never changes: the server
/// keeps its own values (kube resets them on every update), so they are
/// dropped before merging rather than merged and reset later.
const SERVER_METADATA: [&str; 8] = [
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Why an apply was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// 409: other managers own fields the applied config sets to other values.
    #[error("{}", conflict_message(conflicts))]
    Conflict { conflicts: Vec<FieldConflict> },
    /// 400/422 style: fieldManager missing, body not an object, a map-list
    /// element missing its key, nesting too deep...
    #[error("{0}")]
    Invalid(String),
}

/// One field an apply would take from another manager.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldConflict {
    /// The manager that owns the field, as its managedFields entry names it.
    pub manager: String,
    /// The field as kube prints it: `.spec.replicas`,
    /// `.spec.template.spec.containers[name="web"].image`.
    pub field: String,
    /// The owner's apiVersion when it owns the field through an `Update`
    /// entry: kube tells updaters apart by version and names it
    /// (`using apps/v1`); `None` for appliers.
    pub api_version: Option<String>,
    /// The owner's subresource (`status`), if its entry names one.
    pub subresource: Option<String>,
}

impl FieldConflict {
    /// The owner as kube's conflict messages name it:
    /// `"kubectl" using apps/v1`, or just `"other-applier"`.
    pub fn owner(&self) -> String {
        let mut owner = quote(&self.manager);
        if let Some(sub) = &self.subresource {
            let _ = write!(owner, " with subresource {}", quote(sub));
        }
        if let Some(version) = &self.api_version {
            let _ = write!(owner, " using {version}");
        }
        owner
    }

    /// The message of this conflict's `details.causes` entry:
    /// `conflict with "kubectl" using apps/v1`.
    pub fn message(&self) -> String {
        format!("conflict with {}", self.owner())
    }
}

/// kube's wording: one conflict on one line, several grouped by manager.
fn conflict_message(conflicts: &[FieldConflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: {}: {}",
            only.message(),
            only.field
        );
    }
    let mut by_owner: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for conflict in conflicts {
        by_owner
            .entry(conflict.owner())
            .or_default()
            .push(&conflict.field);
    }
    let mut lines = Vec::new();
    for (owner, fields) in by_owner {
        lines.push(format!("conflicts with {owner}:"));
        lines.extend(fields.into_iter().map(|field| format!("- {field}")));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// One server-side apply.
#[derive(Debug, Clone, Copy)]
pub struct ApplyRequest<'a> {
    /// The stored object, `None` when the apply creates it.
    pub live: Option<&'a Value>,
    /// The request body: the configuration being applied.
    pub applied: &'a Value,
    /// The `fieldManager` query parameter.
    pub manager: &'a str,
    /// The `force` query parameter (`--force-conflicts`).
    pub force: bool,
    /// OpenAPI v3 `components.schemas`.
    pub schemas: &'a Map<String, Value>,
    /// The schema name of the object, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub root: &'a str,
    /// The request's group/version, e.g. `apps/v1`.
    pub api_version: &'a str,
    /// RFC 3339 time recorded on the managedFields entries written.
    pub now: &'a str,
}

/// The object after the apply (with metadata.managedFields updated), or the
/// conflicts.
///
/// `status` in the configuration is ignored, as on any main-resource write,
/// and so are the metadata the server maintains (`resourceVersion`, `uid`,
/// `creationTimestamp`, `generation`, ...): the result keeps the live values.
/// The caller still checks a `resourceVersion` the body carries as a
/// precondition, and sets those fields on a create.
pub fn server_side_apply(req: &ApplyRequest) -> Result<Value, ApplyError> {
    check_manager(req.manager)?;
    let Some(body) = req.applied.as_object() else {
        return Err(ApplyError::Invalid(format!(
            "the applied configuration must be a JSON object, not {}",
            shape(req.applied)
        )));
    };
    let version = body.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if version != req.api_version {
        return Err(ApplyError::Invalid(format!(
            "Incorrect version specified in apply patch. Specified patch version: {version}, expected: {}",
            req.api_version
        )));
    }
    // kube refuses these rather than ignoring them: a client that sends back
    // an object it read would otherwise silently reset everybody's ownership.
    if body
        .get("metadata")
        .and_then(|meta| meta.get("managedFields"))
        .is_some_and(|fields| !fields.is_null())
    {
        return Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let live = match req.live {
        Some(live) if live.is_object() => Some(without_managed_fields(live)),
        Some(live) => {
            return Err(ApplyError::Invalid(format!(
                "the stored object is {}, not an object",
                shape(live)
            )));
        }
        None => None,
    };

    let types = Types {
        schemas: req.schemas,
    };
    let root = types.root(req.root);
    let config = sanitized_config(req.applied);
    let mut applied_set = Set::default();
    types.config_fields(&config, &root, &mut Vec::new(), &mut applied_set, 0)?;

    let mut managers = req.live.map(decode_managed_fields).unwrap_or_default();
    if let Some(live) = &live
        && managers.is_empty()
    {
        // The object predates field tracking: what it holds is recorded as
        // the work of one updater, so the first apply conflicts with values
        // it would change instead of silently taking them.
        let changes = types.changes(None, live, &root);
        let set = strip_server_fields(changes.added.union(&changes.modified));
        if !set.is_empty() {
            managers.push(Entry {
                manager: BEFORE_FIRST_APPLY.into(),
                operation: Operation::Update,
                api_version: req.api_version.into(),
                subresource: String::new(),
                time: Some(req.now.into()),
                set,
            });
        }
    }

    let me = Entry {
        manager: req.manager.into(),
        operation: Operation::Apply,
        api_version: req.api_version.into(),
        subresource: String::new(),
        time: None,
        set: Set::default(),
    };
    let previous = managers
        .iter()
        .position(|entry| entry.same_owner(&me))
        .map(|at| managers.remove(at));

    let mut result = types
        .merge(live.as_ref(), Some(&config), &root, 0)
        .unwrap_or_else(|| Value::Object(Map::new()));
    if let Some(previous) = &previous {
        let mut owned = applied_set.clone();
        for entry in &managers {
            owned.union_with(&entry.set);
        }
        types.prune(&mut result, &root, &previous.set, Some(&owned), 0);
    }

    let empty = Value::Object(Map::new());
    let before = live.as_ref().unwrap_or(&empty);
    let changes = types.changes(Some(before), &result, &root);
    let changed = changes.added.union(&changes.modified);
    let mut conflicts = Vec::new();
    for entry in &managers {
        let taken = entry.set.intersection(&changed);
        conflicts.extend(
            taken
                .paths()
                .iter()
                .map(|path| entry.conflict(display_path(path))),
        );
    }
    if !conflicts.is_empty() && !req.force {
        conflicts.sort_by_key(FieldConflict::owner);
        return Err(ApplyError::Conflict { conflicts });
    }
    for entry in &mut managers {
        entry.set = entry.set.difference(&changed).difference(&changes.removed);
    }
    managers.retain(|entry| !entry.set.is_empty());

    // The entry's time records the last apply that changed the object; an
    // apply that changes nothing leaves it alone, as kube does.
    let time = if *before == result && previous.is_some() {
        previous.and_then(|entry| entry.time)
    } else {
        None
    };
    let set = strip_server_fields(applied_set);
    if !set.is_empty() {
        managers.push(Entry {
            time: time.or_else(|| Some(req.now.into())),
            set,
            ..me
        });
    }
    cap_update_managers(&mut managers);
    set_managed_fields(&mut result, &managers);
    Ok(result)
}

/// For ordinary writes (create/update/patch by a manager, operation
/// Update): records in managedFields what `manager` changed between `old`
/// (None for a create) and `new`, removing those fields from other
/// managers' entries (appliers' too: that is how `kubectl scale` takes
/// `spec.replicas` from an applier) as kube does; returns `new` with
/// managedFields set.
///
/// `new` may carry managedFields of its own: a non-empty valid list replaces
/// the stored one and `[]` (or `[{}]`) resets it, as kube allows; absent, or
/// unreadable, the stored entries of `old` are used.
pub fn track_update(
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    api_version: &str,
    now: &str,
    schemas: &Map<String, Value>,
    root: &str,
) -> Value {
    let mut result = new.clone();
    if !result.is_object() {
        return result;
    }
    let types = Types { schemas };
    let root = types.root(root);
    let mut managers = base_managers(old, new);
    let old = old
        .filter(|old| old.is_object())
        .map(without_managed_fields);
    let changes = types.changes(old.as_ref(), &without_managed_fields(new), &root);
    let changed = changes.added.union(&changes.modified);
    for entry in &mut managers {
        entry.set = entry.set.difference(&changed).difference(&changes.removed);
    }
    managers.retain(|entry| !entry.set.is_empty());

    let current = strip_server_fields(changed);
    if !current.is_empty() {
        let me = Entry {
            // kube names an anonymous writer from its User-Agent; with
            // nothing to go on it is "unknown", as in kube.
            manager: if manager.is_empty() {
                "unknown"
            } else {
                manager
            }
            .into(),
            operation: Operation::Update,
            api_version: api_version.into(),
            subresource: String::new(),
            time: Some(now.into()),
            set: current,
        };
        match managers.iter_mut().find(|entry| entry.same_owner(&me)) {
            Some(entry) => {
                entry.set.union_with(&me.set);
                entry.time = me.time;
            }
            None => managers.push(me),
        }
    }
    cap_update_managers(&mut managers);
    set_managed_fields(&mut result, &managers);
    result
}

/// kube's `decodeLiveOrNew`: a write may set managedFields itself.
fn base_managers(old: Option<&Value>, new: &Value) -> Vec<Entry> {
    match new
        .get("metadata")
        .and_then(|meta| meta.get("managedFields"))
    {
        Some(Value::Array(entries))
            if entries.is_empty()
                || (entries.len() == 1 && entries[0].as_object().is_some_and(Map::is_empty)) =>
        {
            Vec::new()
        }
        Some(Value::Array(_)) => {
            let mine = decode_managed_fields(new);
            if mine.is_empty() {
                old.map(decode_managed_fields).unwrap_or_default()
            } else {
                mine
            }
        }
        _ => old.map(decode_managed_fields).unwrap_or_default(),
    }
}

fn check_manager(manager: &str) -> Result<(), ApplyError> {
    if manager.is_empty() {
        return Err(ApplyError::Invalid(
            "fieldManager: Required value: is required for apply patch".into(),
        ));
    }
    if manager.len() > MAX_MANAGER_LEN {
        return Err(ApplyError::Invalid(format!(
            "fieldManager: Too long: may not be more than {MAX_MANAGER_LEN} bytes"
        )));
    }
    if manager.chars().any(char::is_control) {
        return Err(ApplyError::Invalid(
            "fieldManager: Invalid value: invalid characters".into(),
        ));
    }
    Ok(())
}

/// The configuration as merged: without `status` (main-resource writes
/// never change it) and without the metadata the server maintains.
fn sanitized_config(applied: &Value) -> Value {
    let mut config = applied.clone();
    if let Some(map) = config.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in SERVER_METADATA {
                meta.remove(field);
            }
        }
    }
    config
}

fn without_managed_fields(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    object
}

fn without_status(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    object
}

/// Removes what nobody may own: `apiVersion`, `kind`, `metadata` itself and
/// the server's metadata fields (only as members, like kube's `Difference`),
/// and all of `status`, which main-resource writes do not manage.
fn strip_server_fields(mut set: Set) -> Set {
    for field in ["f:apiVersion", "f:kind", "f:metadata", "f:status"] {
        set.members.remove(field);
    }
    set.children.remove("f:status");
    if let Some(meta) = set.children.get_mut("f:metadata") {
        for field in STRIPPED_METADATA {
            meta.members.remove(&format!("f:{field}"));
        }
        if meta.is_empty() {
            set.children.remove("f:metadata");
        }
    }
    set
}

fn shape(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn is_empty_container(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Object(map)) => map.is_empty(),
        Some(Value::Array(list)) => list.is_empty(),
        Some(_) => false,
    }
}

// ---------------------------------------------------------------------------
// Field sets

/// A set of field paths, as structured-merge-diff's `fieldpath.Set`: path
/// elements are kept in their `FieldsV1` spelling (`f:name`,
/// `k:{"name":"web"}`, `v:"a"`, `i:0`), canonicalised so equal elements are
/// equal strings. `members` are paths that end here; `children` hold the
/// paths that go deeper (never an empty set).
#[derive(Debug, Default, Clone, PartialEq)]
struct Set {
    members: BTreeSet<String>,
    children: BTreeMap<String, Set>,
}

impl Set {
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    fn insert(&mut self, path: &[String]) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut node = self;
        for pe in parents {
            node = node.children.entry(pe.clone()).or_default();
        }
        node.members.insert(last.clone());
    }

    fn union_with(&mut self, other: &Set) {
        self.members.extend(other.members.iter().cloned());
        for (pe, child) in &other.children {
            self.children
                .entry(pe.clone())
                .or_default()
                .union_with(child);
        }
    }

    fn union(&self, other: &Set) -> Set {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    fn difference(&self, other: &Set) -> Set {
        let members = self.members.difference(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, child) in &self.children {
            let rest = match other.children.get(pe) {
                Some(theirs) => child.difference(theirs),
                None => child.clone(),
            };
            if !rest.is_empty() {
                children.insert(pe.clone(), rest);
            }
        }
        Set { members, children }
    }

    fn intersection(&self, other: &Set) -> Set {
        let members = self.members.intersection(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, child) in &self.children {
            if let Some(theirs) = other.children.get(pe) {
                let both = child.intersection(theirs);
                if !both.is_empty() {
                    children.insert(pe.clone(), both);
                }
            }
        }
        Set { members, children }
    }

    /// Every path in the set, members before deeper paths, as kube iterates.
    fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        for pe in &self.members {
            prefix.push(pe.clone());
            out.push(prefix.clone());
            prefix.pop();
        }
        for (pe, child) in &self.children {
            prefix.push(pe.clone());
            child.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// The `fieldsV1` object: `{}` for a path that ends here, nested objects
    /// for deeper ones, `".": {}` where a path both ends and goes deeper.
    /// Keys are inserted in kube's order (`.` first, then by element), so
    /// the output matches even with an insertion-ordered JSON map.
    fn to_fields(&self) -> Value {
        Value::Object(self.fields_map(false))
    }

    fn fields_map(&self, includes_self: bool) -> Map<String, Value> {
        let mut map = Map::new();
        if includes_self {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        let keys: BTreeSet<&String> = self.members.iter().chain(self.children.keys()).collect();
        for key in keys {
            let inner = match self.children.get(key) {
                Some(child) => child.fields_map(self.members.contains(key)),
                None => Map::new(),
            };
            map.insert(key.clone(), Value::Object(inner));
        }
        map
    }

    /// Reads a stored `fieldsV1` object. Elements that do not parse are
    /// skipped: stored ownership that cannot be read is ownership of nothing.
    fn from_fields(fields: &Value, depth: usize) -> Set {
        let mut set = Set::default();
        let Some(map) = fields.as_object() else {
            return set;
        };
        for (key, child) in map {
            let (Some(pe), Some(inner)) = (canonical_pe(key), child.as_object()) else {
                continue;
            };
            if inner.is_empty() || inner.contains_key(".") {
                set.members.insert(pe.clone());
            }
            if depth < MAX_DEPTH {
                let sub = Set::from_fields(child, depth + 1);
                if !sub.is_empty() {
                    set.children.entry(pe).or_default().union_with(&sub);
                }
            }
        }
        set
    }
}

/// A stored path element in the spelling this module produces, so that
/// `k:{"protocol":"TCP","containerPort":80}` written by another encoder
/// still matches `k:{"containerPort":80,"protocol":"TCP"}`.
fn canonical_pe(key: &str) -> Option<String> {
    let (kind, rest) = key.split_at_checked(2)?;
    match kind {
        "f:" => Some(key.to_owned()),
        "k:" => match serde_json::from_str::<Value>(rest).ok()? {
            Value::Object(fields) if !fields.is_empty() => {
                let mut out = String::from("k:");
                write_json(&mut out, &Value::Object(fields), 0);
                Some(out)
            }
            _ => None,
        },
        "v:" => {
            let value: Value = serde_json::from_str(rest).ok()?;
            let mut out = String::from("v:");
            write_json(&mut out, &value, 0);
            Some(out)
        }
        "i:" => rest.parse::<i64>().ok().map(|index| format!("i:{index}")),
        _ => None,
    }
}

/// A path as kube prints it in conflicts: `.spec.containers[name="web"].image`.
fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for pe in path {
        let (kind, rest) = pe.split_at_checked(2).unwrap_or(("", pe));
        match kind {
            "f:" => {
                out.push('.');
                out.push_str(rest);
            }
            "k:" => {
                let fields = match serde_json::from_str::<Value>(rest) {
                    Ok(Value::Object(fields)) => fields,
                    _ => Map::new(),
                };
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| format!("{name}={}", display_value(value)))
                    .collect();
                let _ = write!(out, "[{}]", parts.join(","));
            }
            "v:" => {
                let value = serde_json::from_str(rest).unwrap_or(Value::Null);
                let _ = write!(out, "[={}]", display_value(&value));
            }
            "i:" => {
                let _ = write!(out, "[{rest}]");
            }
            _ => out.push_str(pe),
        }
    }
    out
}

/// structured-merge-diff's `value.ToString`: strings quoted, the rest bare.
fn display_value(value: &Value) -> String {
    match value {
        Value::String(text) => quote(text),
        other => other.to_string(),
    }
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("\"{text}\""))
}

/// JSON as Go's encoder writes it inside `k:`/`v:` path elements: object
/// keys sorted, `<`, `>`, `&`, U+2028 and U+2029 escaped, integral numbers
/// without a fraction.
fn write_json(out: &mut String, value: &Value, depth: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) => match (number.as_i64(), number.as_u64(), number.as_f64()) {
            (Some(int), _, _) => {
                let _ = write!(out, "{int}");
            }
            (None, Some(uint), _) => {
                let _ = write!(out, "{uint}");
            }
            (None, None, Some(float)) if float.fract() == 0.0 && float.abs() < 1e15 => {
                let _ = write!(out, "{}", float as i64);
            }
            _ => {
                let _ = write!(out, "{number}");
            }
        },
        Value::String(text) => write_json_string(out, text),
        Value::Array(items) if depth < MAX_DEPTH => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item, depth + 1);
            }
            out.push(']');
        }
        Value::Object(fields) if depth < MAX_DEPTH => {
            let mut names: Vec<&String> = fields.keys().collect();
            names.sort();
            out.push('{');
            for (i, name) in names.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, name);
                out.push(':');
                write_json(out, &fields[name.as_str()], depth + 1);
            }
            out.push('}');
        }
        Value::Array(_) | Value::Object(_) => out.push_str("null"),
    }
}

fn write_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------
// managedFields entries

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One managedFields entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: Operation,
    api_version: String,
    subresource: String,
    time: Option<String>,
    set: Set,
}

impl Entry {
    /// kube's manager identifier: name, operation and subresource, plus the
    /// apiVersion for updaters (an applier keeps one entry across versions).
    fn same_owner(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == Operation::Apply || self.api_version == other.api_version)
    }

    fn conflict(&self, field: String) -> FieldConflict {
        FieldConflict {
            manager: self.manager.clone(),
            field,
            api_version: (self.operation == Operation::Update).then(|| self.api_version.clone()),
            subresource: (!self.subresource.is_empty()).then(|| self.subresource.clone()),
        }
    }

    fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("manager".into(), self.manager.clone().into());
        map.insert("operation".into(), self.operation.as_str().into());
        map.insert("apiVersion".into(), self.api_version.clone().into());
        if let Some(time) = &self.time {
            map.insert("time".into(), time.clone().into());
        }
        map.insert("fieldsType".into(), "FieldsV1".into());
        map.insert("fieldsV1".into(), self.set.to_fields());
        if !self.subresource.is_empty() {
            map.insert("subresource".into(), self.subresource.clone().into());
        }
        Value::Object(map)
    }
}

/// The entries stored on an object; entries that cannot be read are
/// dropped, and two entries for the same owner are merged.
fn decode_managed_fields(object: &Value) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    let Some(stored) = object
        .get("metadata")
        .and_then(|meta| meta.get("managedFields"))
        .and_then(Value::as_array)
    else {
        return entries;
    };
    for raw in stored {
        let text = |field: &str| raw.get(field).and_then(Value::as_str);
        let operation = match text("operation") {
            Some("Apply") => Operation::Apply,
            Some("Update") => Operation::Update,
            _ => continue,
        };
        if text("fieldsType").is_some_and(|kind| kind != "FieldsV1") {
            continue;
        }
        let entry = Entry {
            manager: text("manager").unwrap_or_default().into(),
            operation,
            api_version: text("apiVersion").unwrap_or_default().into(),
            subresource: text("subresource").unwrap_or_default().into(),
            time: text("time").map(Into::into),
            set: raw
                .get("fieldsV1")
                .map(|fields| Set::from_fields(fields, 0))
                .unwrap_or_default(),
        };
        match entries.iter_mut().find(|known| known.same_owner(&entry)) {
            Some(known) => {
                known.set.union_with(&entry.set);
                known.time = known.time.take().max(entry.time);
            }
            None => entries.push(entry),
        }
    }
    entries
}

/// Writes the entries the way kube orders them: appliers first, then by
/// time, manager, apiVersion and subresource; no entry for an empty set,
/// and no managedFields at all when nobody owns anything.
fn set_managed_fields(object: &mut Value, entries: &[Entry]) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    let mut entries: Vec<&Entry> = entries.iter().filter(|e| !e.set.is_empty()).collect();
    entries.sort_by(|a, b| {
        (
            a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.into_iter().map(Entry::to_json).collect()),
        );
    }
}

/// kube's `capManagersManager`: past the cap, the oldest updaters are folded
/// into one `ancient-changes` entry per apiVersion.
fn cap_update_managers(managers: &mut Vec<Entry>) {
    let mut updaters: Vec<usize> = (0..managers.len())
        .filter(|&i| managers[i].operation == Operation::Update)
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort_by(|&a, &b| managers[a].time.cmp(&managers[b].time));
    let mut remaining = updaters.len();
    let mut folded = vec![false; managers.len()];
    let mut buckets: Vec<Entry> = Vec::new();
    for &i in &updaters {
        if remaining <= MAX_UPDATE_MANAGERS {
            break;
        }
        folded[i] = true;
        let entry = &managers[i];
        match buckets
            .iter_mut()
            .find(|bucket| bucket.api_version == entry.api_version)
        {
            Some(bucket) => {
                bucket.set.union_with(&entry.set);
                bucket.time = bucket.time.take().max(entry.time.clone());
                // A second entry folded into the same bucket is one fewer.
                remaining -= 1;
            }
            None => buckets.push(Entry {
                manager: ANCIENT_CHANGES.into(),
                operation: Operation::Update,
                api_version: entry.api_version.clone(),
                subresource: String::new(),
                time: entry.time.clone(),
                set: entry.set.clone(),
            }),
        }
    }
    let mut kept: Vec<Entry> = std::mem::take(managers)
        .into_iter()
        .zip(folded)
        .filter(|(_, gone)| !gone)
        .map(|(entry, _)| entry)
        .collect();
    for bucket in buckets {
        match kept.iter_mut().find(|entry| entry.same_owner(&bucket)) {
            Some(entry) => {
                entry.set.union_with(&bucket.set);
                entry.time = entry.time.take().max(bucket.time);
            }
            None => kept.push(bucket),
        }
    }
    *managers = kept;
}

// ---------------------------------------------------------------------------
// Schema

/// The list and map extensions met while resolving one field's schema; the
/// first one seen wins, so a property's own extension overrides the one on
/// the type it refers to, as in kube-openapi's `schemaconv`.
#[derive(Debug, Clone, Copy, Default)]
struct Extensions<'s> {
    list_type: Option<&'s str>,
    map_keys: Option<&'s [Value]>,
    merge_key: Option<&'s str>,
    strategy: Option<&'s str>,
    map_type: Option<&'s str>,
    /// `runtime.RawExtension`, which kube treats as one atomic value.
    raw: bool,
}

/// A field's schema with `$ref`s resolved (`None` for fields the schema
/// does not describe) and the extensions found on the way.
#[derive(Debug, Clone, Copy, Default)]
struct Node<'s> {
    schema: Option<&'s Value>,
    ext: Extensions<'s>,
}

/// How a value is merged and how its fields are tracked.
#[derive(Debug, Clone, Copy)]
enum Kind<'s> {
    /// A scalar: owned and replaced whole.
    Leaf,
    /// An atomic list or map: owned and replaced whole.
    Atomic,
    /// An object with named fields (`properties`).
    Struct,
    /// A granular map (`additionalProperties`, or an object the schema does
    /// not describe): every key is owned on its own.
    Map,
    /// `x-kubernetes-list-type: set`: elements owned by value.
    Set,
    /// A map list: elements owned by their keys.
    Keyed(Keys<'s>),
}

#[derive(Debug, Clone, Copy)]
enum Keys<'s> {
    Listed(&'s [Value]),
    Merge(&'s str),
}

impl<'s> Keys<'s> {
    fn names(self) -> Vec<&'s str> {
        match self {
            Keys::Listed(keys) => keys.iter().filter_map(Value::as_str).collect(),
            Keys::Merge(key) => vec![key],
        }
    }
}

struct Types<'s> {
    schemas: &'s Map<String, Value>,
}

impl<'s> Types<'s> {
    fn root(&self, root: &str) -> Node<'s> {
        match Schemas::new(self.schemas).lookup(root) {
            Some(schema) => self.resolve(schema),
            None => Node::default(),
        }
    }

    /// The schema `schema` refers to, with the extensions met on the way.
    fn resolve(&self, schema: &'s Value) -> Node<'s> {
        let mut ext = Extensions::default();
        let resolved = Schemas::new(self.schemas).resolve(schema, |hop| {
            read_extensions(hop, &mut ext);
            if hop
                .get("$ref")
                .and_then(Value::as_str)
                .is_some_and(|r| r.ends_with("io.k8s.apimachinery.pkg.runtime.RawExtension"))
            {
                ext.raw = true;
            }
        });
        Node {
            schema: resolved,
            ext,
        }
    }

    /// A field's schema, and whether the parent declares it by name.
    fn field(&self, parent: &Node<'s>, name: &str) -> (Node<'s>, bool) {
        match parent
            .schema
            .and_then(|schema| Schemas::field(schema, name))
        {
            Some((field, declared)) => (self.resolve(field), declared),
            None => (Node::default(), false),
        }
    }

    fn items(&self, list: &Node<'s>) -> Node<'s> {
        list.schema
            .and_then(Schemas::items)
            .map(|items| self.resolve(items))
            .unwrap_or_default()
    }

    /// How `node` treats values; `sample` decides for values the schema does
    /// not describe (kube's "deduced" type: maps granular, lists atomic).
    fn kind(&self, node: &Node<'s>, sample: Option<&Value>) -> Kind<'s> {
        let deduced = match sample {
            Some(Value::Object(_)) => Kind::Map,
            Some(Value::Array(_)) => Kind::Atomic,
            _ => Kind::Leaf,
        };
        let Some(schema) = node.schema else {
            return deduced;
        };
        if node.ext.raw {
            return Kind::Atomic;
        }
        let atomic_map = node.ext.map_type == Some("atomic");
        let granular = |kind| if atomic_map { Kind::Atomic } else { kind };
        if schema.get("properties").is_some_and(Value::is_object) {
            return granular(Kind::Struct);
        }
        if schema
            .get("additionalProperties")
            .is_some_and(|values| values.is_object() || values == &Value::Bool(true))
        {
            return granular(Kind::Map);
        }
        let declared = schema.get("type").and_then(Value::as_str);
        if declared == Some("array") || schema.get("items").is_some() {
            return list_kind(&node.ext);
        }
        match declared {
            Some("object") => granular(Kind::Map),
            Some("string" | "integer" | "number" | "boolean") => Kind::Leaf,
            _ => deduced,
        }
    }

    /// The `FieldsV1` element naming one element of an associative list.
    fn element_pe(
        &self,
        kind: Kind<'s>,
        items: &Node<'s>,
        element: &Value,
    ) -> Result<String, String> {
        match kind {
            Kind::Keyed(keys) => {
                let names = keys.names();
                let Some(fields) = element.as_object() else {
                    return Err(match element {
                        Value::Null => {
                            "associative list with keys may not have a null element".into()
                        }
                        _ => "associative list with keys may not have non-map elements".into(),
                    });
                };
                let mut key = Map::new();
                for name in &names {
                    // A key field left out takes its schema default, as
                    // kube does: ports are keyed by protocol "TCP" even
                    // when the manifest does not say so.
                    if let Some(value) = fields.get(*name).or_else(|| self.key_default(items, name))
                    {
                        key.insert((*name).to_owned(), value.clone());
                    }
                }
                if key.is_empty() {
                    return Err(format!(
                        "associative list with keys has an element that omits all key fields {names:?} (and doesn't have default values for any key fields)"
                    ));
                }
                let mut pe = String::from("k:");
                write_json(&mut pe, &Value::Object(key), 0);
                Ok(pe)
            }
            _ => match element {
                Value::Null => Err(
                    "associative list without keys has an element that's an explicit null".into(),
                ),
                Value::Object(_) => {
                    Err("associative list without keys has an element that's a map type".into())
                }
                Value::Array(_) => {
                    Err("not supported: associative list with lists as elements".into())
                }
                scalar => {
                    let mut pe = String::from("v:");
                    write_json(&mut pe, scalar, 0);
                    Ok(pe)
                }
            },
        }
    }

    fn key_default(&self, items: &Node<'s>, name: &str) -> Option<&'s Value> {
        let field = items.schema?.get("properties")?.get(name)?;
        field
            .get("default")
            .or_else(|| self.resolve(field).schema?.get("default"))
    }

    /// Path elements for a stored list's elements; elements that cannot be
    /// keyed are tracked by position so that they are kept, not lost.
    fn lenient_pes(&self, kind: Kind<'s>, items: &Node<'s>, list: &[Value]) -> Vec<String> {
        list.iter()
            .enumerate()
            .map(|(i, element)| {
                self.element_pe(kind, items, element)
                    .unwrap_or_else(|_| format!("i:{i}"))
            })
            .collect()
    }

    // -- ToFieldSet ---------------------------------------------------------

    /// The fields an applied configuration sets (structured-merge-diff's
    /// `ToFieldSet`), checking it against the schema on the way: returns
    /// whether `value` is itself a leaf, which its parent then records.
    fn config_fields(
        &self,
        value: &Value,
        node: &Node<'s>,
        path: &mut Vec<String>,
        out: &mut Set,
        depth: usize,
    ) -> Result<bool, ApplyError> {
        if depth > MAX_DEPTH {
            return Err(ApplyError::Invalid(format!(
                "{}: the applied configuration nests deeper than {MAX_DEPTH} levels",
                shown(path)
            )));
        }
        let kind = self.kind(node, Some(value));
        match (kind, value) {
            (Kind::Atomic, _) | (_, Value::Null) => Ok(true),
            (Kind::Leaf, Value::Object(_) | Value::Array(_)) => Err(ApplyError::Invalid(format!(
                "{}: expected a scalar, got {}",
                shown(path),
                shape(value)
            ))),
            (Kind::Leaf, _) => Ok(true),
            (Kind::Struct | Kind::Map, Value::Object(fields)) => {
                for (name, child) in fields {
                    let (child_node, declared) = self.field(node, name);
                    path.push(format!("f:{name}"));
                    let leaf = self.config_fields(child, &child_node, path, out, depth + 1)?;
                    // Undeclared keys (map entries) are owned themselves;
                    // declared fields only through what they hold, unless
                    // they hold nothing.
                    if leaf || !declared || child.as_object().is_some_and(Map::is_empty) {
                        out.insert(path);
                    }
                    path.pop();
                }
                Ok(false)
            }
            (Kind::Struct | Kind::Map, _) => Err(ApplyError::Invalid(format!(
                "{}: expected a map, got {}",
                shown(path),
                shape(value)
            ))),
            (Kind::Set | Kind::Keyed(_), Value::Array(list)) => {
                let items = self.items(node);
                let mut seen = HashSet::new();
                for (i, element) in list.iter().enumerate() {
                    let pe = self.element_pe(kind, &items, element).map_err(|problem| {
                        ApplyError::Invalid(format!("{}: element {i}: {problem}", shown(path)))
                    })?;
                    if !seen.insert(pe.clone()) {
                        return Err(ApplyError::Invalid(format!(
                            "{}: duplicate entries for key {}",
                            shown(path),
                            display_path(std::slice::from_ref(&pe))
                        )));
                    }
                    path.push(pe);
                    self.config_fields(element, &items, path, out, depth + 1)?;
                    out.insert(path);
                    path.pop();
                }
                Ok(false)
            }
            (Kind::Set | Kind::Keyed(_), _) => Err(ApplyError::Invalid(format!(
                "{}: expected a list, got {}",
                shown(path),
                shape(value)
            ))),
        }
    }

    // -- Merge ----------------------------------------------------------------

    /// The configuration `config` merged into `live` (structured-merge-diff's
    /// `Merge` with the applied value winning). `None` means "no field".
    fn merge(
        &self,
        live: Option<&Value>,
        config: Option<&Value>,
        node: &Node<'s>,
        depth: usize,
    ) -> Option<Value> {
        let Some(config) = config else {
            return live.cloned();
        };
        if depth > MAX_DEPTH {
            return Some(config.clone());
        }
        let kind = self.kind(node, Some(config).filter(|c| !c.is_null()).or(live));
        if config.is_null() {
            // An explicit null: a granular map or list is left as it is (kube
            // reads null as "nothing to merge"), a leaf is cleared.
            let keeps = matches!(kind, Kind::Struct | Kind::Map | Kind::Set | Kind::Keyed(_))
                && !is_empty_container(live);
            return if keeps { live.cloned() } else { None };
        }
        match (kind, config) {
            (Kind::Struct | Kind::Map, Value::Object(fields)) => {
                let live = live.and_then(Value::as_object);
                let mut out = Map::new();
                if let Some(live) = live {
                    for (name, value) in live {
                        if !fields.contains_key(name) {
                            out.insert(name.clone(), value.clone());
                        }
                    }
                }
                for (name, value) in fields {
                    let (child, _) = self.field(node, name);
                    let old = live.and_then(|live| live.get(name));
                    if let Some(merged) = self.merge(old, Some(value), &child, depth + 1) {
                        out.insert(name.clone(), merged);
                    }
                }
                Some(Value::Object(out))
            }
            (Kind::Set | Kind::Keyed(_), Value::Array(list)) => {
                let live = live
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                if list.is_empty() && live.is_empty() {
                    return Some(config.clone());
                }
                Some(Value::Array(self.merge_list(kind, node, live, list, depth)))
            }
            _ => Some(config.clone()),
        }
    }

    /// Merges two associative lists element by element. The order is
    /// structured-merge-diff's: elements only the live list has stay where
    /// they were, the applied elements follow the applied order.
    fn merge_list(
        &self,
        kind: Kind<'s>,
        node: &Node<'s>,
        live: &[Value],
        config: &[Value],
        depth: usize,
    ) -> Vec<Value> {
        let items = self.items(node);
        let live_pes = self.lenient_pes(kind, &items, live);
        let config_pes = self.lenient_pes(kind, &items, config);
        // A duplicated live element is not merged: the applied one replaces
        // all of its copies.
        let mut in_live: HashMap<&str, Option<usize>> = HashMap::new();
        for (i, pe) in live_pes.iter().enumerate() {
            in_live
                .entry(pe)
                .and_modify(|slot| *slot = None)
                .or_insert(Some(i));
        }
        let mut in_config: HashMap<&str, usize> = HashMap::new();
        for (i, pe) in config_pes.iter().enumerate() {
            in_config.entry(pe).or_insert(i);
        }
        let mut shared: VecDeque<&str> = config_pes
            .iter()
            .map(String::as_str)
            .filter(|pe| in_live.contains_key(pe))
            .collect();
        let mut next_shared = shared.pop_front();
        let mut merged: HashSet<&str> = HashSet::new();
        let mut out = Vec::with_capacity(live.len().max(config.len()));
        let live_of = |pe: &str| in_live.get(pe).copied().flatten().map(|i| &live[i]);
        let (mut li, mut ci) = (0, 0);
        while li < live.len() || ci < config.len() {
            let start = (li, ci);
            if li < live.len() && ci < config.len() {
                let pe = live_pes[li].as_str();
                if pe == config_pes[ci] {
                    merged.insert(pe);
                    if let Some(value) =
                        self.merge(live_of(pe), Some(&config[ci]), &items, depth + 1)
                    {
                        out.push(value);
                    }
                    li += 1;
                    ci += 1;
                    next_shared = shared.pop_front();
                    continue;
                }
                if in_config.contains_key(pe) && next_shared.is_some_and(|next| next != pe) {
                    // Shared, but the applied order puts it later.
                    li += 1;
                    continue;
                }
            }
            if li < live.len() {
                let pe = live_pes[li].as_str();
                if !in_config.contains_key(pe) {
                    out.push(live[li].clone());
                    li += 1;
                    continue;
                } else if merged.contains(pe) {
                    li += 1;
                }
            }
            if ci < config.len() {
                let pe = config_pes[ci].as_str();
                merged.insert(pe);
                if let Some(value) = self.merge(live_of(pe), Some(&config[ci]), &items, depth + 1) {
                    out.push(value);
                }
                ci += 1;
                if next_shared == Some(pe) {
                    next_shared = shared.pop_front();
                }
            }
            if (li, ci) == start {
                // Cannot happen with consistent indexes; never spin.
                li += 1;
            }
        }
        out
    }

    // -- Prune ----------------------------------------------------------------

    /// Removes from `value` what the applier owned before (`last`) and owns
    /// no longer, unless somebody else (or the new configuration) owns it
    /// (`owned`). A named field counts as owned when anything under it is,
    /// as with kube's `EnsureNamedFieldsAreMembers`; a map entry or list
    /// element only when it is itself.
    fn prune(
        &self,
        value: &mut Value,
        node: &Node<'s>,
        last: &Set,
        owned: Option<&Set>,
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        let kind = self.kind(node, Some(value));
        match (kind, value) {
            (Kind::Struct | Kind::Map, Value::Object(fields)) => {
                let names: Vec<String> = fields.keys().cloned().collect();
                for name in names {
                    let pe = format!("f:{name}");
                    let (child_node, named) = self.field(node, &name);
                    let holds = |set: &Set| {
                        set.members.contains(&pe) || (named && set.children.contains_key(&pe))
                    };
                    if holds(last) && !owned.is_some_and(holds) {
                        fields.remove(&name);
                        continue;
                    }
                    let (Some(before), Some(child)) =
                        (last.children.get(&pe), fields.get_mut(&name))
                    else {
                        continue;
                    };
                    let had_content = !is_empty_container(Some(child));
                    let still_owned = owned.and_then(|owned| owned.children.get(&pe));
                    self.prune(child, &child_node, before, still_owned, depth + 1);
                    if had_content && is_empty_container(Some(child)) {
                        // Emptied by the prune: kube leaves nothing behind.
                        fields.remove(&name);
                    }
                }
            }
            (Kind::Set | Kind::Keyed(_), Value::Array(list)) => {
                let items = self.items(node);
                let pes = self.lenient_pes(kind, &items, list);
                let elements = std::mem::take(list);
                for (mut element, pe) in elements.into_iter().zip(pes) {
                    if last.members.contains(&pe)
                        && !owned.is_some_and(|owned| owned.members.contains(&pe))
                    {
                        continue;
                    }
                    if let Some(before) = last.children.get(&pe) {
                        let still_owned = owned.and_then(|owned| owned.children.get(&pe));
                        self.prune(&mut element, &items, before, still_owned, depth + 1);
                    }
                    list.push(element);
                }
            }
            _ => {}
        }
    }

    // -- Compare --------------------------------------------------------------

    /// What changed between two objects (structured-merge-diff's `Compare`),
    /// with `status` left out: main-resource writes do not manage it.
    fn changes(&self, old: Option<&Value>, new: &Value, root: &Node<'s>) -> Comparison {
        let old = old.map(without_status);
        let new = without_status(new);
        let mut out = Comparison::default();
        self.compare(
            old.as_ref(),
            Some(&new),
            root,
            &mut Vec::new(),
            Field::Entry,
            &mut out,
            0,
        );
        out
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one recursive walk, its state passed down"
    )]
    fn compare(
        &self,
        old: Option<&Value>,
        new: Option<&Value>,
        node: &Node<'s>,
        path: &mut Vec<String>,
        field: Field,
        out: &mut Comparison,
        depth: usize,
    ) {
        if old.is_none() && new.is_none() {
            return;
        }
        let kind = self.kind(node, new.filter(|v| !v.is_null()).or(old));
        let fits = |value: Option<&Value>| match (kind, value) {
            (_, None | Some(Value::Null)) => true,
            (Kind::Struct | Kind::Map, Some(value)) => value.is_object(),
            (Kind::Set | Kind::Keyed(_), Some(value)) => value.is_array(),
            _ => false,
        };
        // Both sides empty is a leaf too, so `{}` and `[]` are tracked.
        let leaf = !matches!(kind, Kind::Struct | Kind::Map | Kind::Set | Kind::Keyed(_))
            || !fits(old)
            || !fits(new)
            || (is_empty_container(old) && is_empty_container(new))
            || depth > MAX_DEPTH;
        if leaf {
            match (old, new) {
                (None, _) => out.added.insert(path),
                (_, None) => out.removed.insert(path),
                (Some(old), Some(new)) if old != new => out.modified.insert(path),
                _ => {}
            }
            return;
        }
        match kind {
            Kind::Struct | Kind::Map => {
                let empty = Map::new();
                let old_fields = old.and_then(Value::as_object).unwrap_or(&empty);
                let new_fields = new.and_then(Value::as_object).unwrap_or(&empty);
                let names: BTreeSet<&String> = old_fields.keys().chain(new_fields.keys()).collect();
                for name in names {
                    let (child, declared) = self.field(node, name);
                    let field = if !declared {
                        Field::Entry
                    } else if is_required(node, name) {
                        Field::Required
                    } else {
                        Field::Optional
                    };
                    path.push(format!("f:{name}"));
                    self.compare(
                        old_fields.get(name.as_str()),
                        new_fields.get(name.as_str()),
                        &child,
                        path,
                        field,
                        out,
                        depth + 1,
                    );
                    path.pop();
                }
            }
            _ => self.compare_lists(kind, node, old, new, path, out, depth),
        }
        // kube compares typed Go objects, in which a struct field, or a
        // field serialised without `omitempty` (required in the schema), is
        // always there: it is never added or removed itself, only what it
        // holds. Optional lists and maps, map entries and list elements are.
        let always_there = match field {
            Field::Required => true,
            Field::Optional => matches!(kind, Kind::Struct),
            Field::Entry => false,
        };
        let tracked = !path.is_empty() && !always_there;
        if tracked {
            match (old, new) {
                (None, _) => out.added.insert(path),
                (_, None) => out.removed.insert(path),
                _ => {}
            }
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one recursive walk, its state passed down"
    )]
    fn compare_lists(
        &self,
        kind: Kind<'s>,
        node: &Node<'s>,
        old: Option<&Value>,
        new: Option<&Value>,
        path: &mut Vec<String>,
        out: &mut Comparison,
        depth: usize,
    ) {
        let items = self.items(node);
        let old = old
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let new = new
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut order: Vec<String> = Vec::new();
        let mut olds: HashMap<String, Vec<&Value>> = HashMap::new();
        for (pe, element) in self.lenient_pes(kind, &items, old).into_iter().zip(old) {
            let copies = olds.entry(pe.clone()).or_default();
            if copies.is_empty() {
                order.push(pe);
            }
            copies.push(element);
        }
        let mut news: HashMap<String, Vec<&Value>> = HashMap::new();
        for (pe, element) in self.lenient_pes(kind, &items, new).into_iter().zip(new) {
            let copies = news.entry(pe.clone()).or_default();
            if copies.is_empty() && !olds.contains_key(&pe) {
                order.push(pe);
            }
            copies.push(element);
        }
        for pe in order {
            let before = olds.get(&pe).map(Vec::as_slice).unwrap_or_default();
            let after = news.get(&pe).map(Vec::as_slice).unwrap_or_default();
            path.push(pe);
            match (before.len(), after.len()) {
                (0..=1, 0..=1) => self.compare(
                    before.first().copied(),
                    after.first().copied(),
                    &items,
                    path,
                    Field::Entry,
                    out,
                    depth + 1,
                ),
                // Duplicated elements are compared as wholes.
                (2.., 2..) => {
                    if before != after {
                        out.modified.insert(path);
                    }
                }
                (2.., _) => {
                    if let Some(element) = after.first() {
                        self.compare(
                            None,
                            Some(element),
                            &items,
                            path,
                            Field::Entry,
                            out,
                            depth + 1,
                        );
                    }
                    out.removed.insert(path);
                }
                (_, 2..) => {
                    if let Some(element) = before.first() {
                        self.compare(
                            Some(element),
                            None,
                            &items,
                            path,
                            Field::Entry,
                            out,
                            depth + 1,
                        );
                    }
                    out.added.insert(path);
                }
            }
            path.pop();
        }
    }
}

fn read_extensions<'s>(schema: &'s Value, ext: &mut Extensions<'s>) {
    let text = |name: &str| schema.get(name).and_then(Value::as_str);
    ext.list_type = ext.list_type.or_else(|| text("x-kubernetes-list-type"));
    ext.merge_key = ext
        .merge_key
        .or_else(|| text("x-kubernetes-patch-merge-key"));
    ext.strategy = ext.strategy.or_else(|| text("x-kubernetes-patch-strategy"));
    ext.map_type = ext.map_type.or_else(|| text("x-kubernetes-map-type"));
    ext.map_keys = ext.map_keys.or_else(|| {
        schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
    });
}

/// A list's kind, as `schemaconv` reads it: the list type if there is one;
/// else a `merge` patch strategy makes it a map list on the merge key (a set
/// without one); a merge key alone also makes a map list.
fn list_kind<'s>(ext: &Extensions<'s>) -> Kind<'s> {
    match ext.list_type {
        Some("set") => Kind::Set,
        Some("map") => match ext.map_keys {
            Some(keys) if !keys.is_empty() && keys.iter().all(Value::is_string) => {
                Kind::Keyed(Keys::Listed(keys))
            }
            _ => Kind::Atomic,
        },
        Some(_) => Kind::Atomic,
        None => {
            let merge = ext
                .strategy
                .is_some_and(|strategy| strategy.split(',').any(|part| part.trim() == "merge"));
            match (merge, ext.merge_key) {
                (_, Some(key)) if merge || ext.strategy.is_none() => Kind::Keyed(Keys::Merge(key)),
                (true, None) => Kind::Set,
                _ => Kind::Atomic,
            }
        }
    }
}

/// What a compared value is to its parent.
#[derive(Debug, Clone, Copy)]
enum Field {
    /// A map entry, a list element, or the object itself.
    Entry,
    /// A field the parent's schema declares.
    Optional,
    /// A declared field the parent's schema lists as `required`.
    Required,
}

fn is_required(parent: &Node<'_>, name: &str) -> bool {
    parent
        .schema
        .and_then(|schema| schema.get("required"))
        .and_then(Value::as_array)
        .is_some_and(|required| required.iter().any(|field| field == name))
}

fn shown(path: &[String]) -> String {
    if path.is_empty() {
        "<root>".into()
    } else {
        display_path(path)
    }
}

/// What a write did, path by path.
#[derive(Debug, Default)]
struct Comparison {
    added: Set,
    modified: Set,
    removed: Set,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
    const NOW: &str = "2025-01-02T03:04:05Z";
    const LATER: &str = "2025-01-02T04:00:00Z";

    /// A cut-down Deployment schema in the shape kube-apiserver publishes at
    /// /openapi/v3: `allOf` wrappers around `$ref`s, list extensions on the
    /// property that holds the list, `x-kubernetes-map-type` on the type.
    fn schemas() -> Map<String, Value> {
        let schemas = json!({
            "io.k8s.api.apps.v1.Deployment": {
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {
                        "allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}],
                        "default": {}
                    },
                    "spec": {
                        "allOf": [{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"}],
                        "default": {}
                    },
                    "status": {
                        "allOf": [{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentStatus"}],
                        "default": {}
                    }
                }
            },
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "namespace": {"type": "string"},
                    "uid": {"type": "string"},
                    "resourceVersion": {"type": "string"},
                    "generation": {"type": "integer"},
                    "creationTimestamp": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Time"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string", "default": ""}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string", "default": ""}},
                    "finalizers": {
                        "type": "array",
                        "items": {"type": "string", "default": ""},
                        "x-kubernetes-list-type": "set",
                        "x-kubernetes-patch-strategy": "merge"
                    },
                    "managedFields": {
                        "type": "array",
                        "items": {"type": "object"},
                        "x-kubernetes-list-type": "atomic"
                    }
                }
            },
            "io.k8s.apimachinery.pkg.apis.meta.v1.Time": {"type": "string", "format": "date-time"},
            "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector": {
                "type": "object",
                "properties": {
                    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "matchExpressions": {"type": "array", "items": {"type": "object"}, "x-kubernetes-list-type": "atomic"}
                },
                "x-kubernetes-map-type": "atomic"
            },
            "io.k8s.api.apps.v1.DeploymentSpec": {
                "type": "object",
                "properties": {
                    "replicas": {"type": "integer", "format": "int32"},
                    "paused": {"type": "boolean"},
                    "gates": {
                        "type": "array",
                        "items": {"type": "object", "properties": {"id": {"type": "string"}, "on": {"type": "boolean"}}},
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["id"]
                    },
                    "selector": {
                        "allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"}]
                    },
                    "template": {
                        "allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodTemplateSpec"}],
                        "default": {}
                    }
                }
            },
            "io.k8s.api.apps.v1.DeploymentStatus": {
                "type": "object",
                "properties": {"replicas": {"type": "integer"}, "readyReplicas": {"type": "integer"}}
            },
            "io.k8s.api.core.v1.PodTemplateSpec": {
                "type": "object",
                "properties": {
                    "metadata": {
                        "allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}],
                        "default": {}
                    },
                    "spec": {
                        "allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}],
                        "default": {}
                    }
                }
            },
            "io.k8s.api.core.v1.PodSpec": {
                "type": "object",
                "required": ["containers"],
                "properties": {
                    "containers": {
                        "type": "array",
                        "items": {
                            "allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}],
                            "default": {}
                        },
                        "x-kubernetes-list-map-keys": ["name"],
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-patch-merge-key": "name",
                        "x-kubernetes-patch-strategy": "merge"
                    },
                    "nodeSelector": {
                        "type": "object",
                        "additionalProperties": {"type": "string", "default": ""},
                        "x-kubernetes-map-type": "atomic"
                    }
                }
            },
            "io.k8s.api.core.v1.Container": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "default": ""},
                    "image": {"type": "string"},
                    "args": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "atomic"},
                    "env": {
                        "type": "array",
                        "items": {"allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.EnvVar"}], "default": {}},
                        "x-kubernetes-patch-merge-key": "name",
                        "x-kubernetes-patch-strategy": "merge"
                    },
                    "ports": {
                        "type": "array",
                        "items": {"allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.ContainerPort"}], "default": {}},
                        "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-patch-merge-key": "containerPort",
                        "x-kubernetes-patch-strategy": "merge"
                    },
                    "securityContext": {"$ref": "#/components/schemas/io.k8s.api.core.v1.SecurityContext"}
                }
            },
            "io.k8s.api.core.v1.SecurityContext": {
                "type": "object",
                "properties": {"runAsUser": {"type": "integer"}}
            },
            "io.k8s.api.core.v1.EnvVar": {
                "type": "object",
                "properties": {"name": {"type": "string", "default": ""}, "value": {"type": "string"}}
            },
            "io.k8s.api.core.v1.ContainerPort": {
                "type": "object",
                "properties": {
                    "containerPort": {"type": "integer", "format": "int32", "default": 0},
                    "name": {"type": "string"},
                    "protocol": {"type": "string", "default": "TCP"}
                }
            }
        });
        match schemas {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn apply_as(
        live: Option<&Value>,
        applied: &Value,
        manager: &str,
        force: bool,
        now: &str,
    ) -> Result<Value, ApplyError> {
        let schemas = schemas();
        server_side_apply(&ApplyRequest {
            live,
            applied,
            manager,
            force,
            schemas: &schemas,
            root: DEPLOYMENT,
            api_version: "apps/v1",
            now,
        })
    }

    fn apply(live: Option<&Value>, applied: &Value, manager: &str) -> Value {
        apply_as(live, applied, manager, false, NOW).expect("apply succeeds")
    }

    fn update(old: Option<&Value>, new: &Value, manager: &str) -> Value {
        track_update(old, new, manager, "apps/v1", LATER, &schemas(), DEPLOYMENT)
    }

    fn entries(object: &Value) -> Vec<Value> {
        object["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The fieldsV1 of the entry for `manager` with `operation`.
    fn fields_of(object: &Value, manager: &str, operation: &str) -> Option<Value> {
        entries(object)
            .into_iter()
            .find(|e| e["manager"] == manager && e["operation"] == operation)
            .map(|e| e["fieldsV1"].clone())
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "template": {"spec": {"containers": [{"name": "web", "image": image}]}}
            }
        })
    }

    fn invalid(result: Result<Value, ApplyError>) -> String {
        match result {
            Err(ApplyError::Invalid(message)) => message,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn conflicts(result: Result<Value, ApplyError>) -> (Vec<FieldConflict>, String) {
        match result {
            Err(error @ ApplyError::Conflict { .. }) => {
                let message = error.to_string();
                let ApplyError::Conflict { conflicts } = error else {
                    unreachable!()
                };
                (conflicts, message)
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn create_by_apply_records_fields_as_kube_encodes_them() {
        let applied = deployment(2, "nginx:1.27");
        let created = apply(None, &applied, "kubectl");
        let entries = entries(&created);
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0],
            json!({
                "manager": "kubectl",
                "operation": "Apply",
                "apiVersion": "apps/v1",
                "time": NOW,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec":{"f:replicas":{},"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:image":{},"f:name":{}}}}}}}
            })
        );
        // The object is the configuration, plus the entry.
        let mut expected = applied.clone();
        expected["metadata"]["managedFields"] = json!(entries);
        assert_eq!(created, expected);
    }

    #[test]
    fn kubectl_server_side_body_for_a_deployment() {
        // What `kubectl apply --server-side -f web.yaml` (1.32) sends as the
        // apply-patch+yaml body: the manifest itself, as JSON, with the
        // namespace filled in and no directives.
        let body: Value = serde_json::from_str(
            r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"labels":{"app":"web"},"name":"web","namespace":"default"},"spec":{"replicas":2,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"image":"nginx:1.27","name":"web","ports":[{"containerPort":80}]}]}}}}"#,
        )
        .expect("valid JSON");
        let created = apply(None, &body, "kubectl");
        assert_eq!(
            fields_of(&created, "kubectl", "Apply"),
            Some(json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            ".": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                        }}}
                    }
                }
            }))
        );
        // Applying the same body again changes nothing and keeps the time.
        let again = apply_as(Some(&created), &body, "kubectl", false, LATER).expect("re-apply");
        assert_eq!(again, created);
    }

    #[test]
    fn reapply_without_a_field_deletes_it() {
        let created = apply(None, &deployment(2, "nginx"), "kubectl");
        let mut second = deployment(2, "nginx");
        second["spec"]
            .as_object_mut()
            .expect("spec")
            .remove("replicas");
        let updated = apply(Some(&created), &second, "kubectl");
        assert_eq!(updated["spec"].get("replicas"), None);
        assert_eq!(
            fields_of(&updated, "kubectl", "Apply"),
            Some(
                json!({"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:image":{},"f:name":{}}}}}}})
            )
        );
        // A label the applier stops applying goes; so does the emptied map.
        let mut labelled = deployment(2, "nginx");
        labelled["metadata"]["labels"] = json!({"app": "web"});
        let with_label = apply(Some(&updated), &labelled, "kubectl");
        assert_eq!(with_label["metadata"]["labels"], json!({"app": "web"}));
        let without = apply(Some(&with_label), &deployment(2, "nginx"), "kubectl");
        assert_eq!(without["metadata"].get("labels"), None);
        assert_eq!(without["metadata"]["name"], "web");
    }

    #[test]
    fn a_field_another_manager_owns_survives_when_the_applier_drops_it() {
        let created = apply(None, &deployment(2, "nginx"), "alice");
        let shared = apply(Some(&created), &deployment(2, "nginx"), "bob");
        // Same value: no conflict, both own it.
        assert!(
            fields_of(&shared, "alice", "Apply").expect("alice")["f:spec"]["f:replicas"]
                .is_object()
        );
        assert!(
            fields_of(&shared, "bob", "Apply").expect("bob")["f:spec"]["f:replicas"].is_object()
        );
        let mut no_replicas = deployment(2, "nginx");
        no_replicas["spec"]
            .as_object_mut()
            .expect("spec")
            .remove("replicas");
        let dropped = apply(Some(&shared), &no_replicas, "alice");
        assert_eq!(dropped["spec"]["replicas"], 2);
        assert_eq!(
            fields_of(&dropped, "alice", "Apply").expect("alice")["f:spec"].get("f:replicas"),
            None
        );
    }

    #[test]
    fn conflict_with_an_updater_is_named_as_kube_names_it() {
        let created = apply(None, &deployment(2, "nginx"), "kubectl");
        // `kubectl scale`: an ordinary write by manager "kubectl".
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(5);
        let scaled = update(Some(&created), &scaled, "kubectl");
        assert_eq!(
            fields_of(&scaled, "kubectl", "Update"),
            Some(json!({"f:spec": {"f:replicas": {}}}))
        );
        // The update took spec.replicas from the applier.
        assert_eq!(
            fields_of(&scaled, "kubectl", "Apply").expect("apply entry")["f:spec"]
                .get("f:replicas"),
            None
        );
        let (found, message) = conflicts(apply_as(
            Some(&scaled),
            &deployment(3, "nginx"),
            "kubectl",
            false,
            NOW,
        ));
        assert_eq!(
            found,
            vec![FieldConflict {
                manager: "kubectl".into(),
                field: ".spec.replicas".into(),
                api_version: Some("apps/v1".into()),
                subresource: None,
            }]
        );
        assert_eq!(
            message,
            "Apply failed with 1 conflict: conflict with \"kubectl\" using apps/v1: .spec.replicas"
        );
        assert_eq!(
            found[0].message(),
            "conflict with \"kubectl\" using apps/v1"
        );
        // Applying the value the updater set is no conflict: shared.
        let agreed = apply(Some(&scaled), &deployment(5, "nginx"), "kubectl");
        assert_eq!(agreed["spec"]["replicas"], 5);
        assert!(fields_of(&agreed, "kubectl", "Update").is_some());
    }

    #[test]
    fn force_takes_ownership() {
        let created = apply(None, &deployment(2, "nginx"), "kubectl");
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(5);
        scaled["metadata"]["labels"] = json!({"team": "a"});
        let scaled = update(Some(&created), &scaled, "kubectl-scale");
        let forced =
            apply_as(Some(&scaled), &deployment(3, "nginx"), "kubectl", true, NOW).expect("forced");
        assert_eq!(forced["spec"]["replicas"], 3);
        // The updater keeps the label, loses the replicas.
        assert_eq!(
            fields_of(&forced, "kubectl-scale", "Update"),
            Some(json!({"f:metadata": {"f:labels": {".": {}, "f:team": {}}}}))
        );
        assert!(
            fields_of(&forced, "kubectl", "Apply").expect("apply")["f:spec"]["f:replicas"]
                .is_object()
        );
        // Forced again when the updater owned only the replicas: its entry
        // goes away entirely.
        let mut rescaled = forced.clone();
        rescaled["spec"]["replicas"] = json!(7);
        let rescaled = update(Some(&forced), &rescaled, "hpa");
        let taken = apply_as(
            Some(&rescaled),
            &deployment(3, "nginx"),
            "kubectl",
            true,
            NOW,
        )
        .expect("forced");
        assert_eq!(fields_of(&taken, "hpa", "Update"), None);
    }

    #[test]
    fn track_update_moves_ownership_and_records_creates() {
        let created = update(None, &deployment(2, "nginx"), "kubectl-create");
        assert_eq!(
            entries(&created),
            vec![json!({
                "manager": "kubectl-create",
                "operation": "Update",
                "apiVersion": "apps/v1",
                "time": LATER,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec":{"f:replicas":{},"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:image":{},"f:name":{}}}}}}}
            })]
        );
        let mut edited = created.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        edited["metadata"]["labels"] = json!({"app": "web"});
        let edited = update(Some(&created), &edited, "kubectl-edit");
        assert_eq!(
            fields_of(&edited, "kubectl-edit", "Update"),
            Some(json!({
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:image": {}}}}}}
            }))
        );
        assert_eq!(
            fields_of(&edited, "kubectl-create", "Update"),
            Some(
                json!({"f:spec":{"f:replicas":{},"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:name":{}}}}}}})
            )
        );
        // An update that changes nothing owned leaves the entries alone.
        let mut bumped = edited.clone();
        bumped["metadata"]["resourceVersion"] = json!("42");
        let bumped = update(Some(&edited), &bumped, "someone");
        assert_eq!(entries(&bumped), entries(&edited));
        // Removing a container removes it from everyone's sets.
        let mut emptied = bumped.clone();
        emptied["spec"]["template"]["spec"]["containers"] = json!([]);
        let emptied = update(Some(&bumped), &emptied, "kubectl-edit");
        assert_eq!(
            fields_of(&emptied, "kubectl-create", "Update"),
            Some(json!({"f:spec":{"f:replicas":{}}}))
        );
        // Entries come out appliers first, then oldest first.
        let applied = apply_as(Some(&emptied), &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "annotations": {"a": "b"}}}), "zz", false, NOW).expect("apply");
        let order: Vec<(String, String)> = entries(&applied)
            .iter()
            .map(|e| {
                (
                    e["manager"].as_str().unwrap_or("").into(),
                    e["operation"].as_str().unwrap_or("").into(),
                )
            })
            .collect();
        assert_eq!(order[0], ("zz".into(), "Apply".into()));
        assert!(order[1..].iter().all(|(_, op)| op == "Update"));
    }

    #[test]
    fn map_lists_merge_by_key_and_keep_other_managers_elements() {
        let created = apply(None, &deployment(2, "nginx"), "alice");
        let sidecar = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "proxy", "image": "envoy", "env": [{"name": "A", "value": "1"}]}]}}}
        });
        let both = apply(Some(&created), &sidecar, "bob");
        let names: Vec<&str> = both["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["web", "proxy"]);
        // Alice changes her image; bob's container is untouched.
        let changed = apply(Some(&both), &deployment(2, "nginx:2"), "alice");
        assert_eq!(
            changed["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:2"}, {"name": "proxy", "image": "envoy", "env": [{"name": "A", "value": "1"}]}])
        );
        assert_eq!(
            fields_of(&changed, "bob", "Apply"),
            Some(
                json!({"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"proxy\"}":{".":{},"f:env":{"k:{\"name\":\"A\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{},"f:name":{}}}}}}})
            )
        );
        // Alice stops applying her container: it goes, bob's stays.
        let mut no_web = deployment(2, "nginx");
        no_web["spec"]["template"]["spec"]["containers"] = json!([]);
        let dropped = apply(Some(&changed), &no_web, "alice");
        assert_eq!(
            dropped["spec"]["template"]["spec"]["containers"],
            json!([{"name": "proxy", "image": "envoy", "env": [{"name": "A", "value": "1"}]}])
        );
        // Bob changing alice's image conflicts, naming the element by key.
        let mut steal = sidecar.clone();
        steal["spec"]["template"]["spec"]["containers"] = json!([{"name": "web", "image": "evil"}]);
        let (found, _) = conflicts(apply_as(Some(&changed), &steal, "bob", false, NOW));
        assert_eq!(
            found[0].field,
            ".spec.template.spec.containers[name=\"web\"].image"
        );
        assert_eq!(found[0].message(), "conflict with \"alice\"");
    }

    #[test]
    fn sets_union_atomic_lists_and_maps_replace() {
        let mut first = deployment(1, "nginx");
        first["metadata"]["finalizers"] = json!(["a.example/x"]);
        first["metadata"]["labels"] = json!({"app": "web"});
        first["spec"]["selector"] = json!({"matchLabels": {"app": "web", "tier": "fe"}});
        first["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["--a", "--b"]);
        let created = apply(None, &first, "alice");
        let alice = fields_of(&created, "alice", "Apply").expect("alice");
        assert_eq!(
            alice["f:metadata"]["f:finalizers"],
            json!({"v:\"a.example/x\"": {}})
        );
        assert_eq!(alice["f:spec"]["f:selector"], json!({}));
        assert_eq!(
            alice["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["f:args"],
            json!({})
        );
        let second = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "finalizers": ["b.example/y"], "labels": {"team": "t"}},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "web", "args": ["--c"]}]}}
            }
        });
        let merged = apply_as(Some(&created), &second, "bob", true, NOW).expect("forced");
        assert_eq!(
            merged["metadata"]["finalizers"],
            json!(["a.example/x", "b.example/y"])
        );
        assert_eq!(
            merged["metadata"]["labels"],
            json!({"app": "web", "team": "t"})
        );
        assert_eq!(
            merged["spec"]["selector"],
            json!({"matchLabels": {"app": "web"}})
        );
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"][0],
            json!({"name": "web", "image": "nginx", "args": ["--c"]})
        );
        // Alice lost the selector and args to bob's force.
        let alice = fields_of(&merged, "alice", "Apply").expect("alice");
        assert_eq!(alice["f:spec"].get("f:selector"), None);
        // Alice drops her finalizer; bob's stays.
        let mut third = first.clone();
        third["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("finalizers");
        let pruned = apply_as(Some(&merged), &third, "alice", true, NOW).expect("apply");
        assert_eq!(pruned["metadata"]["finalizers"], json!(["b.example/y"]));
    }

    #[test]
    fn status_and_server_metadata_in_the_body_are_ignored() {
        let mut live = deployment(2, "nginx");
        live["metadata"]["uid"] = json!("u-1");
        live["metadata"]["resourceVersion"] = json!("10");
        live["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
        live["status"] = json!({"replicas": 2});
        let created = apply(None, &deployment(2, "nginx"), "kubectl");
        let mut live_with_fields = live.clone();
        live_with_fields["metadata"]["managedFields"] =
            created["metadata"]["managedFields"].clone();
        let mut body = deployment(2, "nginx");
        body["status"] = json!({"replicas": 9});
        body["metadata"]["resourceVersion"] = json!("10");
        body["metadata"]["creationTimestamp"] = Value::Null;
        let applied = apply(Some(&live_with_fields), &body, "kubectl");
        assert_eq!(applied["status"], json!({"replicas": 2}));
        assert_eq!(applied["metadata"]["uid"], "u-1");
        assert_eq!(
            applied["metadata"]["creationTimestamp"],
            "2025-01-01T00:00:00Z"
        );
        let fields = fields_of(&applied, "kubectl", "Apply").expect("entry");
        assert_eq!(fields.get("f:status"), None);
        assert_eq!(fields.get("f:metadata"), None);
    }

    #[test]
    fn an_object_without_managed_fields_is_owned_by_before_first_apply() {
        let live = deployment(2, "nginx");
        let (found, message) = conflicts(apply_as(
            Some(&live),
            &deployment(3, "nginx"),
            "kubectl",
            false,
            NOW,
        ));
        assert_eq!(found.len(), 1);
        assert_eq!(
            message,
            "Apply failed with 1 conflict: conflict with \"before-first-apply\" using apps/v1: .spec.replicas"
        );
        // The same values are shared with it, not taken.
        let applied = apply(Some(&live), &deployment(2, "nginx"), "kubectl");
        assert!(fields_of(&applied, "before-first-apply", "Update").is_some());
        assert!(fields_of(&applied, "kubectl", "Apply").is_some());
    }

    #[test]
    fn several_conflicts_are_grouped_by_manager() {
        let created = apply(None, &deployment(2, "nginx"), "alice");
        let (found, message) = conflicts(apply_as(
            Some(&created),
            &deployment(3, "nginx:2"),
            "bob",
            false,
            NOW,
        ));
        assert_eq!(found.len(), 2);
        assert_eq!(
            message,
            "Apply failed with 2 conflicts: conflicts with \"alice\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn explicit_null_clears_a_leaf() {
        let created = apply(None, &deployment(2, "nginx"), "kubectl");
        let mut body = deployment(2, "nginx");
        body["spec"]["replicas"] = Value::Null;
        let cleared = apply(Some(&created), &body, "kubectl");
        assert_eq!(cleared["spec"].get("replicas"), None);
        assert_eq!(
            cleared["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx"
        );
    }

    #[test]
    fn stored_entries_are_read_leniently_and_merged() {
        let mut live = deployment(2, "nginx");
        live["spec"]["template"]["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 80, "protocol": "TCP"}]);
        live["metadata"]["managedFields"] = json!([
            // Keys in another order than this module writes them.
            {"manager": "other", "operation": "Update", "apiVersion": "apps/v1", "time": NOW, "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:ports": {"k:{\"protocol\":\"TCP\",\"containerPort\":80}": {".": {}, "f:protocol": {}}}}}}}}}},
            {"manager": "other", "operation": "Update", "apiVersion": "apps/v1", "time": NOW, "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {"f:replicas": {}}, "x:bogus": {}, "f:bad": 3}},
            {"manager": "weird", "operation": "Delete", "fieldsV1": {}},
            "not an entry"
        ]);
        let mut body = deployment(2, "nginx");
        body["spec"]["template"]["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 80, "protocol": "UDP"}]);
        let applied = apply(Some(&live), &body, "kubectl");
        let other = fields_of(&applied, "other", "Update").expect("merged entry");
        assert_eq!(
            other,
            json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:protocol": {}}}}}}}}})
        );
        assert_eq!(entries(&applied).len(), 2);
        assert_eq!(
            applied["spec"]["template"]["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 80, "protocol": "UDP"}])
        );
    }

    #[test]
    fn odd_inputs_are_errors_not_panics() {
        assert!(invalid(apply_as(None, &json!([1, 2]), "m", false, NOW)).contains("JSON object"));
        assert!(
            invalid(apply_as(None, &deployment(1, "x"), "", false, NOW)).contains("fieldManager")
        );
        assert!(
            invalid(apply_as(
                None,
                &deployment(1, "x"),
                &"m".repeat(129),
                false,
                NOW
            ))
            .contains("Too long")
        );
        let mut wrong_version = deployment(1, "x");
        wrong_version["apiVersion"] = json!("apps/v1beta1");
        assert_eq!(
            invalid(apply_as(None, &wrong_version, "m", false, NOW)),
            "Incorrect version specified in apply patch. Specified patch version: apps/v1beta1, expected: apps/v1"
        );
        let mut with_fields = deployment(1, "x");
        with_fields["metadata"]["managedFields"] = json!([]);
        assert_eq!(
            invalid(apply_as(None, &with_fields, "m", false, NOW)),
            "metadata.managedFields must be nil"
        );
        let mut spec_list = deployment(1, "x");
        spec_list["spec"] = json!([1, 2]);
        assert_eq!(
            invalid(apply_as(None, &spec_list, "m", false, NOW)),
            ".spec: expected a map, got a list"
        );
        let mut containers_map = deployment(1, "x");
        containers_map["spec"]["template"]["spec"]["containers"] = json!({"name": "web"});
        assert!(
            invalid(apply_as(None, &containers_map, "m", false, NOW)).contains("expected a list")
        );
        let mut unkeyed = deployment(1, "x");
        unkeyed["spec"]["gates"] = json!([{"id": "a"}, {"on": true}]);
        assert_eq!(
            invalid(apply_as(None, &unkeyed, "m", false, NOW)),
            ".spec.gates: element 1: associative list with keys has an element that omits all key fields [\"id\"] (and doesn't have default values for any key fields)"
        );
        // A key field with a schema default keys by the default, as in kube
        // (validation then rejects the empty container name).
        let mut unnamed = deployment(1, "x");
        unnamed["spec"]["template"]["spec"]["containers"] = json!([{"image": "x"}]);
        let keyed = apply(None, &unnamed, "m");
        assert!(fields_of(&keyed, "m", "Apply").expect("entry")["f:spec"]["f:template"]["f:spec"]["f:containers"]
            .get("k:{\"name\":\"\"}")
            .is_some());
        let mut scalar_element = deployment(1, "x");
        scalar_element["spec"]["template"]["spec"]["containers"] = json!(["web"]);
        assert!(
            invalid(apply_as(None, &scalar_element, "m", false, NOW)).contains("non-map elements")
        );
        let mut duplicated = deployment(1, "x");
        duplicated["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "a"}, {"name": "a"}]);
        assert_eq!(
            invalid(apply_as(None, &duplicated, "m", false, NOW)),
            ".spec.template.spec.containers: duplicate entries for key [name=\"a\"]"
        );
        let mut set_of_maps = deployment(1, "x");
        set_of_maps["metadata"]["finalizers"] = json!([{"a": 1}]);
        assert!(invalid(apply_as(None, &set_of_maps, "m", false, NOW)).contains("map type"));
        let mut replicas_map = deployment(1, "x");
        replicas_map["spec"]["replicas"] = json!({"n": 1});
        assert!(
            invalid(apply_as(None, &replicas_map, "m", false, NOW)).contains("expected a scalar")
        );
        // Nesting past the bound, in a field the schema does not describe.
        let mut deep = json!("bottom");
        for _ in 0..150 {
            deep = json!({ "x": deep });
        }
        let mut too_deep = deployment(1, "x");
        too_deep["spec"]["extra"] = deep.clone();
        assert!(invalid(apply_as(None, &too_deep, "m", false, NOW)).contains("deeper than 100"));
        // A stored object of the wrong shape is refused or read leniently.
        assert!(
            invalid(apply_as(
                Some(&json!("x")),
                &deployment(1, "x"),
                "m",
                false,
                NOW
            ))
            .contains("stored object")
        );
        let garbage = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "managedFields": {"not": "a list"}},
            "spec": {"replicas": "many", "template": {"spec": {"containers": [{"image": "no-name"}, 7, null, {"name": "web"}, {"name": "web"}]}}},
            "extra": deep
        });
        // The stored object predates tracking, so it is all
        // before-first-apply's; the apply forces its values.
        let fixed =
            apply_as(Some(&garbage), &deployment(1, "x"), "m", true, NOW).expect("forced apply");
        assert_eq!(fixed["spec"]["replicas"], 1);
        assert_eq!(
            fixed["spec"]["template"]["spec"]["containers"],
            json!([{"image": "no-name"}, 7, null, {"name": "web", "image": "x"}])
        );
        // track_update takes anything.
        assert_eq!(update(None, &json!([1]), "m"), json!([1]));
        let tracked = update(Some(&json!(3)), &garbage, "m");
        assert!(fields_of(&tracked, "m", "Update").is_some());
        let tracked = update(Some(&garbage), &deployment(1, "x"), "");
        assert!(fields_of(&tracked, "unknown", "Update").is_some());
    }

    #[test]
    fn a_write_may_reset_or_replace_managed_fields() {
        let created = apply(None, &deployment(2, "nginx"), "kubectl");
        let mut reset = created.clone();
        reset["metadata"]["managedFields"] = json!([]);
        let reset = update(Some(&created), &reset, "m");
        assert_eq!(reset["metadata"].get("managedFields"), None);
        // Sent back unchanged, as `kubectl replace` does: the stored entries.
        let mut same = created.clone();
        same["spec"]["replicas"] = json!(4);
        let same = update(Some(&created), &same, "m");
        assert_eq!(
            fields_of(&same, "m", "Update"),
            Some(json!({"f:spec": {"f:replicas": {}}}))
        );
        assert!(fields_of(&same, "kubectl", "Apply").is_some());
    }

    #[test]
    fn update_managers_are_capped() {
        let mut object = apply(None, &deployment(1, "nginx"), "kubectl");
        for i in 0..12 {
            let mut next = object.clone();
            next["metadata"]["annotations"][format!("a{i}")] = json!("x");
            let time = format!("2025-01-02T05:{i:02}:00Z");
            object = track_update(
                Some(&object),
                &next,
                &format!("writer-{i}"),
                "apps/v1",
                &time,
                &schemas(),
                DEPLOYMENT,
            );
        }
        let updaters: Vec<String> = entries(&object)
            .iter()
            .filter(|e| e["operation"] == "Update")
            .map(|e| e["manager"].as_str().unwrap_or("").into())
            .collect();
        assert_eq!(updaters.len(), MAX_UPDATE_MANAGERS);
        assert_eq!(updaters[0], ANCIENT_CHANGES);
        assert_eq!(
            fields_of(&object, ANCIENT_CHANGES, "Update"),
            Some(
                json!({"f:metadata": {"f:annotations": {".": {}, "f:a0": {}, "f:a1": {}, "f:a2": {}}}})
            )
        );
        assert!(fields_of(&object, "kubectl", "Apply").is_some());
    }

    #[test]
    fn folding_old_updaters_into_ancient_changes() {
        let entry = |i: usize| Entry {
            manager: format!("w{i}"),
            operation: Operation::Update,
            api_version: "apps/v1".into(),
            subresource: String::new(),
            time: Some(format!("2025-01-01T00:00:{i:02}Z")),
            set: {
                let mut set = Set::default();
                set.insert(&[format!("f:f{i}")]);
                set
            },
        };
        let mut managers: Vec<Entry> = (0..13).map(entry).collect();
        cap_update_managers(&mut managers);
        assert_eq!(managers.len(), MAX_UPDATE_MANAGERS);
        let bucket = managers
            .iter()
            .find(|e| e.manager == ANCIENT_CHANGES)
            .expect("bucket");
        assert_eq!(bucket.set.members.len(), 4);
        assert_eq!(bucket.time.as_deref(), Some("2025-01-01T00:00:03Z"));
        assert!(
            managers
                .iter()
                .all(|e| e.manager != "w0" && e.manager != "w3")
        );
    }

    #[test]
    fn path_elements_are_written_as_go_writes_them() {
        let mut pe = String::new();
        write_json(
            &mut pe,
            &json!({"name": "a<b>&\"c\"\u{2028}", "port": 80.0}),
            0,
        );
        assert_eq!(
            pe,
            r#"{"name":"a\u003cb\u003e\u0026\"c\"\u2028","port":80}"#
        );
        assert_eq!(
            canonical_pe(r#"k:{"protocol":"TCP","containerPort":80}"#).as_deref(),
            Some(r#"k:{"containerPort":80,"protocol":"TCP"}"#)
        );
        assert_eq!(canonical_pe("v:\"a\"").as_deref(), Some("v:\"a\""));
        assert_eq!(canonical_pe("i:03").as_deref(), Some("i:3"));
        assert_eq!(canonical_pe("k:[1]"), None);
        assert_eq!(canonical_pe("x"), None);
        assert_eq!(
            display_path(&[
                "f:spec".into(),
                "k:{\"containerPort\":80,\"protocol\":\"TCP\"}".into(),
                "v:\"x\"".into(),
                "i:2".into()
            ]),
            ".spec[containerPort=80,protocol=\"TCP\"][=\"x\"][2]"
        );
        let fields = json!({"f:a": {".": {}, "f:b": {}}, "f:c": {}});
        assert_eq!(Set::from_fields(&fields, 0).to_fields(), fields);
    }

    #[test]
    fn map_list_order_follows_the_applied_order() {
        let types = Types {
            schemas: &schemas(),
        };
        let node = types.root("io.k8s.api.core.v1.PodSpec");
        let (containers, _) = types.field(&node, "containers");
        let live: Vec<Value> = ["a", "b", "c"].iter().map(|n| json!({"name": n})).collect();
        let config: Vec<Value> = ["c", "a", "d"]
            .iter()
            .map(|n| json!({"name": n, "image": "i"}))
            .collect();
        let kind = types.kind(&containers, None);
        let merged = types.merge_list(kind, &containers, &live, &config, 0);
        let names: Vec<&str> = merged.iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names, ["b", "c", "a", "d"]);
    }
}
