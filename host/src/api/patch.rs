//! PATCH bodies as kube-apiserver applies them: RFC 6902 JSON patches and
//! RFC 7386 merge patches (both through the `json-patch` crate), and
//! Kubernetes' strategic merge patch, which `kubectl apply`, `kubectl patch`
//! and `kubectl edit` send by default. A strategic merge patch is a merge
//! patch whose lists are merged element by element where the schema says so
//! (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key` in the
//! OpenAPI v3 `components.schemas`), plus the directives kubectl writes:
//! `$patch`, `$retainKeys`, `$setElementOrder/FIELD` and
//! `$deleteFromPrimitiveList/FIELD`. The behaviour, element order included,
//! follows apimachinery's `strategicpatch` package as the server runs it;
//! where that package would store a directive verbatim, panic or error on
//! input it cannot make sense of, this module cleans up or reports an error
//! that names the field, so a kubectl user can tell which part of the patch
//! was at fault.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::schema::Schemas;

/// The deepest a strategic merge patch may nest: a bound on recursion, far
/// past anything a Kubernetes object needs.
const MAX_DEPTH: usize = 100;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder";
const DELETE_PRIMITIVES: &str = "$deleteFromPrimitiveList";

/// The patch formats a PATCH request may name in its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`, RFC 6902.
    Json,
    /// `application/merge-patch+json`, RFC 7386.
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
}

impl PatchType {
    /// The patch type a Content-Type header names; parameters after `;`
    /// (kubectl sends none, other clients add `charset=utf-8`) are ignored.
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let essence = ct.split(';').next().unwrap_or_default().trim();
        [Self::Json, Self::Merge, Self::StrategicMerge]
            .into_iter()
            .find(|kind| kind.content_type().eq_ignore_ascii_case(essence))
    }

    /// The media type, as an `Accept-Patch` header or an error lists it.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json-patch+json",
            Self::Merge => "application/merge-patch+json",
            Self::StrategicMerge => "application/strategic-merge-patch+json",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Json => "JSON patch",
            Self::Merge => "merge patch",
            Self::StrategicMerge => "strategic merge patch",
        }
    }
}

/// Why a patch could not be applied. Paths are written as kubectl users
/// read them: `spec.template.spec.containers[name="app"].env[0]`.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("invalid {kind} body: {source}")]
    InvalidBody {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} must be a JSON object, not {found}")]
    NotAnObject {
        what: &'static str,
        found: &'static str,
    },
    #[error("JSON patch {0}")]
    JsonPatch(#[from] json_patch::PatchError),
    #[error("{path}: list element has no merge key \"{key}\"")]
    MissingMergeKey { path: String, key: String },
    #[error("{path}: unknown directive \"$patch\": {value}; expected \"replace\" or \"delete\"")]
    UnknownDirective { path: String, value: String },
    #[error("{path}: invalid {directive}: {problem}")]
    InvalidDirective {
        path: String,
        directive: String,
        problem: &'static str,
    },
    #[error("{path}: field \"{field}\" is set by the patch but not listed in $retainKeys")]
    NotRetained { path: String, field: String },
    #[error("{path}: the patch lists elements in a different order than its $setElementOrder")]
    OrderMismatch { path: String },
    #[error("{path}: cannot merge a list whose elements {problem}")]
    ListElements { path: String, problem: &'static str },
    #[error("{path}: the schema merges this list but names no merge key for its elements")]
    NoMergeKey { path: String },
    #[error("{path}: the patch nests deeper than {MAX_DEPTH} levels")]
    TooDeep { path: String },
}

/// Applies a PATCH body of `kind` to `original` and returns the patched
/// object; `original` itself is left alone.
///
/// `schemas` is an OpenAPI v3 `components.schemas` map (keys like
/// "io.k8s.api.apps.v1.Deployment"); `root` the schema name of the object
/// being patched. Only strategic merge patches read them; a `root` that is
/// not in `schemas` makes every field unknown, merged as plain maps with
/// lists replaced.
pub fn apply_patch(
    kind: PatchType,
    original: &Value,
    patch: &[u8],
    schemas: &Map<String, Value>,
    root: &str,
) -> Result<Value, PatchError> {
    let invalid = |source| PatchError::InvalidBody {
        kind: kind.describe(),
        source,
    };
    match kind {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(patch).map_err(invalid)?;
            let mut doc = original.clone();
            // The all-or-nothing `patch` undoes failed operations and panics if
            // the undo fails; a failed patch throws the clone away anyway.
            json_patch::patch_unsafe(&mut doc, &ops.0)?;
            if !doc.is_object() {
                return Err(PatchError::NotAnObject {
                    what: "the patched object",
                    found: type_name(&doc),
                });
            }
            Ok(doc)
        }
        PatchType::Merge => {
            let patch: Value = serde_json::from_slice(patch).map_err(invalid)?;
            // RFC 7386 would let a non-object replace the whole document;
            // kube-apiserver refuses such a patch rather than store it.
            if !patch.is_object() {
                return Err(PatchError::NotAnObject {
                    what: "a merge patch",
                    found: type_name(&patch),
                });
            }
            let mut doc = original.clone();
            json_patch::merge(&mut doc, &patch);
            Ok(doc)
        }
        PatchType::StrategicMerge => {
            let patch: Value = serde_json::from_slice(patch).map_err(invalid)?;
            let Value::Object(patch) = patch else {
                return Err(PatchError::NotAnObject {
                    what: "a strategic merge patch",
                    found: type_name(&patch),
                });
            };
            let Value::Object(original) = original else {
                return Err(PatchError::NotAnObject {
                    what: "the object being patched",
                    found: type_name(original),
                });
            };
            let merger = Merger { schemas };
            let schema = merger.root(root);
            let merged = merger.merge_map(original.clone(), &patch, schema, &Path::ROOT, 0)?;
            // `$patch: delete` at the top leaves nothing; apimachinery answers
            // with an empty object too.
            Ok(Value::Object(merged.unwrap_or_default()))
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Where in the object the merge is, kept as a chain of borrowed segments so
/// that a path is only formatted when an error needs it.
#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    seg: Seg<'a>,
}

#[derive(Clone, Copy)]
enum Seg<'a> {
    Root,
    Field(&'a str),
    Index(usize),
    /// A merge-keyed list element, shown by its key as kubectl users know
    /// it rather than by a position that differs between patch and object.
    Keyed(&'a str, &'a Value, usize),
}

impl<'a> Path<'a> {
    const ROOT: Path<'static> = Path {
        parent: None,
        seg: Seg::Root,
    };

    fn field(&'a self, name: &'a str) -> Path<'a> {
        Path {
            parent: Some(self),
            seg: Seg::Field(name),
        }
    }

    fn index(&'a self, index: usize) -> Path<'a> {
        Path {
            parent: Some(self),
            seg: Seg::Index(index),
        }
    }

    fn keyed(&'a self, key: &'a str, value: &'a Value, index: usize) -> Path<'a> {
        Path {
            parent: Some(self),
            seg: Seg::Keyed(key, value, index),
        }
    }

    fn render(&self) -> String {
        let mut segs = Vec::new();
        let mut at = Some(self);
        while let Some(path) = at {
            segs.push(path.seg);
            at = path.parent;
        }
        let mut out = String::new();
        for seg in segs.into_iter().rev() {
            match seg {
                Seg::Root => {}
                Seg::Field(name) if is_plain(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                // Label and annotation keys hold dots; quoting keeps the
                // path unambiguous.
                Seg::Field(name) => out.push_str(&format!("[{}]", Value::from(name))),
                Seg::Keyed(key, value, _) if is_scalar(value) => {
                    out.push_str(&format!("[{key}={value}]"));
                }
                Seg::Index(index) | Seg::Keyed(_, _, index) => {
                    out.push_str(&format!("[{index}]"));
                }
            }
        }
        if out.is_empty() {
            "(root)".to_owned()
        } else {
            out
        }
    }
}

fn is_plain(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '$' | '/'))
}

fn is_scalar(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// What the schema says about one field.
#[derive(Clone, Copy, Default)]
struct FieldMeta<'s> {
    /// The field's schema with `$ref`s resolved; `None` for unknown fields.
    schema: Option<&'s Value>,
    /// Lists merge element by element instead of being replaced.
    merge: bool,
    /// Maps are replaced instead of merged.
    replace: bool,
    merge_key: Option<&'s str>,
    /// Whether a strategy was seen, so one found on the property wins over
    /// one on the schema it refers to.
    strategy_seen: bool,
}

struct Merger<'s> {
    schemas: &'s Map<String, Value>,
}

impl<'s> Merger<'s> {
    fn root(&self, root: &str) -> Option<&'s Value> {
        let schema = Schemas::new(self.schemas).lookup(root)?;
        self.resolve(schema, &mut FieldMeta::default())
    }

    /// The schema `node` refers to, noting the patch extensions met on
    /// the way.
    fn resolve(&self, node: &'s Value, meta: &mut FieldMeta<'s>) -> Option<&'s Value> {
        Schemas::new(self.schemas).resolve(node, |hop| read_extensions(hop, meta))
    }

    fn field(&self, parent: Option<&'s Value>, name: &str) -> FieldMeta<'s> {
        let mut meta = FieldMeta::default();
        if let Some((node, _)) = parent.and_then(|parent| Schemas::field(parent, name)) {
            meta.schema = self.resolve(node, &mut meta);
        }
        meta
    }

    fn items(&self, list: &FieldMeta<'s>) -> Option<&'s Value> {
        let items = Schemas::items(list.schema?)?;
        self.resolve(items, &mut FieldMeta::default())
    }

    /// apimachinery's mergeMap. `None` means the patch deleted the map.
    fn merge_map(
        &self,
        mut original: Map<String, Value>,
        patch: &Map<String, Value>,
        schema: Option<&'s Value>,
        path: &Path<'_>,
        depth: usize,
    ) -> Result<Option<Map<String, Value>>, PatchError> {
        if depth > MAX_DEPTH {
            return Err(PatchError::TooDeep {
                path: path.render(),
            });
        }
        if let Some(directive) = patch.get(DIRECTIVE) {
            return match directive.as_str() {
                Some("replace") => {
                    let mut rest = patch.clone();
                    rest.remove(DIRECTIVE);
                    // Merging into nothing rather than storing `rest` as is
                    // strips any nulls and directives nested in it.
                    self.merge_map(Map::new(), &rest, schema, path, depth + 1)
                }
                Some("delete") => Ok(None),
                Some(_) => Err(PatchError::UnknownDirective {
                    path: path.render(),
                    value: directive.to_string(),
                }),
                None => Err(PatchError::InvalidDirective {
                    path: path.render(),
                    directive: DIRECTIVE.to_owned(),
                    problem: "must be a string",
                }),
            };
        }

        if let Some(retain) = patch.get(RETAIN_KEYS) {
            retain_keys(&mut original, patch, retain, path)?;
        }

        // Ordered lists are merged together with their directive, before
        // the other fields, as apimachinery does.
        let mut ordered = HashSet::new();
        for (key, order) in patch {
            if let Some(field) = directive_field(key, SET_ORDER, path)?
                && self.set_element_order(
                    &mut original,
                    patch,
                    field,
                    order,
                    schema,
                    path,
                    depth,
                )?
            {
                ordered.insert(field);
            }
        }

        let mut deletions = Vec::new();
        for (key, value) in patch {
            if key == RETAIN_KEYS || key.starts_with(SET_ORDER) || ordered.contains(key.as_str()) {
                continue;
            }
            if let Some(field) = directive_field(key, DELETE_PRIMITIVES, path)? {
                deletions.push((key, field, value));
                continue;
            }
            if value.is_null() {
                original.remove(key);
                continue;
            }
            let meta = self.field(schema, key);
            let old = original.get_mut(key).map(std::mem::take);
            match self.merge_value(old, value, &meta, &path.field(key), depth + 1)? {
                Some(merged) => {
                    original.insert(key.clone(), merged);
                }
                None => {
                    original.remove(key);
                }
            }
        }
        // After the additions, so a patch that adds and removes a value
        // always ends without it (apimachinery's order here is random).
        for (key, field, values) in deletions {
            delete_from_primitive_list(&mut original, key, field, values, path)?;
        }
        Ok(Some(original))
    }

    /// Merges one field's patch value into its old value, `None` meaning
    /// the field goes away.
    fn merge_value(
        &self,
        original: Option<Value>,
        patch: &Value,
        meta: &FieldMeta<'s>,
        path: &Path<'_>,
        depth: usize,
    ) -> Result<Option<Value>, PatchError> {
        match (original, patch) {
            (_, Value::Null) => Ok(None),
            (Some(Value::Object(original)), Value::Object(patch)) if !meta.replace => Ok(self
                .merge_map(original, patch, meta.schema, path, depth)?
                .map(Value::Object)),
            (Some(Value::Array(original)), Value::Array(patch)) if meta.merge => Ok(Some(
                Value::Array(self.merge_list(original, patch, meta, path, depth)?),
            )),
            // Absent, of another type, or replaced by strategy.
            (_, patch) => self.fresh(patch, meta, path, depth),
        }
    }

    /// A patch value that has nothing to merge with. apimachinery stores it
    /// as sent, directives and nulls included; merging it into nothing
    /// gives what the patch means instead.
    fn fresh(
        &self,
        patch: &Value,
        meta: &FieldMeta<'s>,
        path: &Path<'_>,
        depth: usize,
    ) -> Result<Option<Value>, PatchError> {
        match patch {
            Value::Null => Ok(None),
            Value::Object(patch) => Ok(self
                .merge_map(Map::new(), patch, meta.schema, path, depth)?
                .map(Value::Object)),
            Value::Array(patch) if meta.merge => Ok(Some(Value::Array(self.merge_list(
                Vec::new(),
                patch,
                meta,
                path,
                depth,
            )?))),
            other => Ok(Some(other.clone())),
        }
    }

    /// apimachinery's mergeSlice, for a list whose strategy is merge.
    fn merge_list(
        &self,
        original: Vec<Value>,
        patch: &[Value],
        meta: &FieldMeta<'s>,
        path: &Path<'_>,
        depth: usize,
    ) -> Result<Vec<Value>, PatchError> {
        if depth > MAX_DEPTH {
            return Err(PatchError::TooDeep {
                path: path.render(),
            });
        }
        if original.is_empty() && patch.is_empty() {
            return Ok(original);
        }
        if !list_of_objects(&original, patch, path)? {
            // A set of scalars: the union, in the order apimachinery gives.
            let mut seen = HashSet::new();
            let merged: Vec<Value> = original
                .iter()
                .chain(patch)
                .filter(|v| seen.insert(canonical(v)))
                .cloned()
                .collect();
            let patch_order: Vec<_> = patch.iter().map(|v| Some(canonical(v))).collect();
            let server_order: Vec<_> = original.iter().map(|v| Some(canonical(v))).collect();
            return Ok(reorder(merged, &patch_order, &server_order, &|v| {
                Some(canonical(v))
            }));
        }

        let Some(key) = meta.merge_key else {
            return Err(PatchError::NoMergeKey {
                path: path.render(),
            });
        };
        let elem_schema = self.items(meta);

        let mut base = original;
        let mut rest = Vec::new();
        let mut replace = false;
        for (index, element) in patch.iter().enumerate() {
            let Value::Object(element) = element else {
                continue; // `list_of_objects` rules this out.
            };
            let Some(directive) = element.get(DIRECTIVE) else {
                rest.push((index, element));
                continue;
            };
            match directive.as_str() {
                Some("delete") => {
                    let Some(value) = element.get(key) else {
                        return Err(PatchError::MissingMergeKey {
                            path: path.index(index).render(),
                            key: key.to_owned(),
                        });
                    };
                    let doomed = canonical(value);
                    base.retain(|old| merge_key_of(old, key).as_ref() != Some(&doomed));
                }
                // The list becomes the patch's other elements; later `$patch`
                // elements are still checked, as apimachinery does.
                Some("replace") => replace = true,
                Some(_) => {
                    return Err(PatchError::UnknownDirective {
                        path: path.index(index).render(),
                        value: directive.to_string(),
                    });
                }
                None => {
                    return Err(PatchError::InvalidDirective {
                        path: path.index(index).render(),
                        directive: DIRECTIVE.to_owned(),
                        problem: "must be a string",
                    });
                }
            }
        }
        if replace {
            base.clear();
        }

        let server_order: Vec<_> = base.iter().map(|v| merge_key_of(v, key)).collect();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        for (at, k) in server_order.iter().enumerate() {
            if let Some(k) = k {
                by_key.entry(k.clone()).or_insert(at);
            }
        }
        let mut patch_order = Vec::with_capacity(rest.len());
        for (index, element) in rest {
            let Some(value) = element.get(key) else {
                return Err(PatchError::MissingMergeKey {
                    path: path.index(index).render(),
                    key: key.to_owned(),
                });
            };
            let id = canonical(value);
            let child = path.keyed(key, value, index);
            match by_key.get(&id) {
                Some(&at) => {
                    let old = match std::mem::take(&mut base[at]) {
                        Value::Object(old) => old,
                        _ => Map::new(),
                    };
                    let merged = self.merge_map(old, element, elem_schema, &child, depth + 1)?;
                    base[at] = Value::Object(merged.unwrap_or_default());
                }
                None => {
                    let fresh =
                        self.merge_map(Map::new(), element, elem_schema, &child, depth + 1)?;
                    by_key.insert(id.clone(), base.len());
                    base.push(Value::Object(fresh.unwrap_or_default()));
                }
            }
            patch_order.push(Some(id));
        }
        Ok(reorder(base, &patch_order, &server_order, &|v| {
            merge_key_of(v, key)
        }))
    }

    /// Handles `$setElementOrder/FIELD` together with FIELD: merges the
    /// list, then orders it as the directive says, keeping elements the
    /// directive does not name near their old neighbours. Returns whether
    /// FIELD was dealt with here.
    #[expect(
        clippy::too_many_arguments,
        reason = "the merge state is threaded through explicitly, like merge_map's"
    )]
    fn set_element_order(
        &self,
        original: &mut Map<String, Value>,
        patch: &Map<String, Value>,
        field: &str,
        order: &Value,
        schema: Option<&'s Value>,
        path: &Path<'_>,
        depth: usize,
    ) -> Result<bool, PatchError> {
        let list_path = path.field(field);
        let directive = format!("{SET_ORDER}/{field}");
        let Value::Array(order) = order else {
            return Err(PatchError::InvalidDirective {
                path: list_path.render(),
                directive,
                problem: "must be a list",
            });
        };
        let patch_list = match patch.get(field) {
            None => None,
            // Deleting the list outright makes its order moot.
            Some(Value::Null) => return Ok(false),
            Some(Value::Array(list)) => Some(list),
            Some(_) => {
                return Err(PatchError::InvalidDirective {
                    path: list_path.render(),
                    directive,
                    problem: "is given for a field the patch sets to something other than a list",
                });
            }
        };
        // Taken out rather than cloned; on an error the whole result is
        // thrown away, so the hole left behind is never seen.
        let server = match original.get_mut(field) {
            Some(Value::Array(list)) => Some(std::mem::take(list)),
            _ => None,
        };
        let meta = self.field(schema, field);

        let is_objects = |list: &[Value]| list.iter().any(Value::is_object);
        let keyed = meta.merge_key.filter(|_| {
            is_objects(order)
                || patch_list.is_some_and(|list| is_objects(list))
                || server.as_deref().is_some_and(is_objects)
        });
        let key_of = |v: &Value| match keyed {
            Some(key) => merge_key_of(v, key),
            None => Some(canonical(v)),
        };
        let order_path = path.field(&directive);
        let mut order_keys = Vec::with_capacity(order.len());
        for (index, entry) in order.iter().enumerate() {
            if let Some(key) = keyed
                && entry.get(key).is_none()
            {
                return Err(PatchError::MissingMergeKey {
                    path: order_path.index(index).render(),
                    key: key.to_owned(),
                });
            }
            order_keys.push(key_of(entry));
        }
        if let Some(list) = patch_list {
            check_order(list, &order_keys, keyed, &list_path)?;
        }
        let server_order: Vec<_> = server.iter().flatten().map(key_of).collect();

        let merged = match (patch_list, server) {
            (Some(list), server) if meta.merge => self.merge_list(
                server.unwrap_or_default(),
                list,
                &meta,
                &list_path,
                depth + 1,
            )?,
            (Some(list), _) => list.clone(),
            (None, Some(server)) => server,
            (None, None) => return Ok(true),
        };

        // Objects without a merge key cannot be matched to the directive;
        // such a list keeps the order the merge gave it.
        let ordered = if keyed.is_none() && is_objects(&merged) {
            merged
        } else {
            reorder(merged, &order_keys, &server_order, &key_of)
        };
        original.insert(field.to_owned(), Value::Array(ordered));
        Ok(true)
    }
}

fn read_extensions<'s>(node: &'s Value, meta: &mut FieldMeta<'s>) {
    if !meta.strategy_seen
        && let Some(strategy) = node
            .get("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
    {
        meta.strategy_seen = true;
        for part in strategy.split(',').map(str::trim) {
            match part {
                "merge" => meta.merge = true,
                "replace" => meta.replace = true,
                // retainKeys only tells kubectl to send `$retainKeys`; the
                // server acts on the directive wherever it appears.
                _ => {}
            }
        }
    }
    if meta.merge_key.is_none() {
        meta.merge_key = node
            .get("x-kubernetes-patch-merge-key")
            .and_then(Value::as_str);
    }
}

/// The FIELD of a `PREFIX/FIELD` directive key, `None` if `key` is not one.
fn directive_field<'k>(
    key: &'k str,
    prefix: &str,
    path: &Path<'_>,
) -> Result<Option<&'k str>, PatchError> {
    let Some(rest) = key.strip_prefix(prefix) else {
        return Ok(None);
    };
    match rest.strip_prefix('/') {
        Some(field) if !field.is_empty() => Ok(Some(field)),
        _ => Err(PatchError::InvalidDirective {
            path: path.render(),
            directive: key.to_owned(),
            problem: "must have the form PREFIX/FIELD",
        }),
    }
}

/// `$retainKeys`: drop the fields of `original` the list does not name.
/// The patch must not set a field it does not retain, or it would be
/// undoing itself.
fn retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    retain: &Value,
    path: &Path<'_>,
) -> Result<(), PatchError> {
    let invalid = || PatchError::InvalidDirective {
        path: path.render(),
        directive: RETAIN_KEYS.to_owned(),
        problem: "must be a list of field names",
    };
    let list = retain.as_array().ok_or_else(invalid)?;
    let keep = list
        .iter()
        .map(|v| v.as_str().ok_or_else(invalid))
        .collect::<Result<HashSet<&str>, _>>()?;
    for (key, value) in patch {
        let directive =
            key == RETAIN_KEYS || key.starts_with(SET_ORDER) || key.starts_with(DELETE_PRIMITIVES);
        if !value.is_null() && !directive && !keep.contains(key.as_str()) {
            return Err(PatchError::NotRetained {
                path: path.render(),
                field: key.clone(),
            });
        }
    }
    original.retain(|key, _| keep.contains(key.as_str()));
    Ok(())
}

fn delete_from_primitive_list(
    original: &mut Map<String, Value>,
    key: &str,
    field: &str,
    values: &Value,
    path: &Path<'_>,
) -> Result<(), PatchError> {
    let Value::Array(values) = values else {
        return Err(PatchError::InvalidDirective {
            path: path.field(key).render(),
            directive: key.to_owned(),
            problem: "must be a list of the values to remove",
        });
    };
    // Removing from a list that is not there leaves nothing to do;
    // apimachinery would store the removals as the list.
    if let Some(Value::Array(list)) = original.get_mut(field) {
        let doomed: HashSet<String> = values.iter().map(canonical).collect();
        list.retain(|v| !doomed.contains(&canonical(v)));
    }
    Ok(())
}

/// Whether a list to merge holds objects (else scalars); a mix of both, or
/// lists in a list, cannot be merged by key or by value.
fn list_of_objects(
    original: &[Value],
    patch: &[Value],
    path: &Path<'_>,
) -> Result<bool, PatchError> {
    let mut objects = None;
    for value in original.iter().chain(patch) {
        if value.is_array() {
            return Err(PatchError::ListElements {
                path: path.render(),
                problem: "are lists themselves",
            });
        }
        match objects {
            None => objects = Some(value.is_object()),
            Some(seen) if seen != value.is_object() => {
                return Err(PatchError::ListElements {
                    path: path.render(),
                    problem: "mix objects and other values",
                });
            }
            Some(_) => {}
        }
    }
    Ok(objects.unwrap_or(false))
}

/// apimachinery's validatePatchWithSetOrderList: the patch's elements must
/// appear in the directive, in the same relative order. Deletions and other
/// `$patch` elements are exempt.
fn check_order(
    list: &[Value],
    order: &[Option<String>],
    key: Option<&str>,
    path: &Path<'_>,
) -> Result<(), PatchError> {
    let mut at = 0;
    for (index, element) in list.iter().enumerate() {
        if element.get(DIRECTIVE).is_some() {
            continue;
        }
        let id = match key {
            Some(key) => match element.get(key) {
                Some(value) => canonical(value),
                None => {
                    return Err(PatchError::MissingMergeKey {
                        path: path.index(index).render(),
                        key: key.to_owned(),
                    });
                }
            },
            None => canonical(element),
        };
        match order[at..].iter().position(|o| o.as_ref() == Some(&id)) {
            Some(found) => at += found + 1,
            None => {
                return Err(PatchError::OrderMismatch {
                    path: path.render(),
                });
            }
        }
    }
    Ok(())
}

/// apimachinery's normalizeElementOrder: the elements the patch (or its
/// `$setElementOrder`) names come in that order; the others keep their
/// relative order from the live list, and each goes before a patch element
/// it preceded there. A new element thus lands ahead of any live element
/// it is compared with, which is why `kubectl patch` adding a container
/// without `$setElementOrder` puts it first.
fn reorder(
    merged: Vec<Value>,
    patch_order: &[Option<String>],
    server_order: &[Option<String>],
    key_of: &dyn Fn(&Value) -> Option<String>,
) -> Vec<Value> {
    let positions = |keys: &[Option<String>]| {
        let mut at = HashMap::new();
        for (index, key) in keys.iter().enumerate() {
            if let Some(key) = key {
                at.entry(key.clone()).or_insert(index);
            }
        }
        at
    };
    let in_patch = positions(patch_order);
    let in_server = positions(server_order);

    let mut named = Vec::new();
    let mut server_only = Vec::new();
    for value in merged {
        let key = key_of(&value);
        let server_at = key.as_ref().and_then(|k| in_server.get(k)).copied();
        match key.as_ref().and_then(|k| in_patch.get(k)) {
            Some(&patch_at) => named.push((patch_at, server_at, value)),
            None => server_only.push((server_at, value)),
        }
    }
    named.sort_by_key(|(patch_at, _, _)| *patch_at);
    server_only.sort_by_key(|(server_at, _)| server_at.unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(named.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = named.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (Some((Some(l), _)), Some((_, Some(r), _))) => l < r,
            (Some(_), Some(_)) => false,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_left {
            left.next().map(|(_, v)| v)
        } else {
            right.next().map(|(_, _, v)| v)
        };
        out.extend(next);
    }
    out
}

fn merge_key_of(value: &Value, key: &str) -> Option<String> {
    value.get(key).map(canonical)
}

/// A string equal for equal JSON values, for hashing and comparing merge
/// keys and set members: numbers compare by value (`80` matches `80.0`, as
/// Go's float64 would) and object keys in sorted order.
fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out, 0);
    out
}

fn write_canonical(value: &Value, out: &mut String, depth: usize) {
    if depth > MAX_DEPTH {
        // Past any depth a real key has; such values just compare equal.
        out.push('~');
        return;
    }
    match value {
        Value::Null => out.push('z'),
        Value::Bool(b) => out.push(if *b { 't' } else { 'f' }),
        Value::Number(n) => {
            out.push('n');
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    out.push_str(&(f as i64).to_string());
                }
                _ => out.push_str(&n.to_string()),
            }
            out.push(';');
        }
        Value::String(s) => {
            // Length-prefixed, so no content can be mistaken for structure.
            out.push_str(&format!("s{}:", s.len()));
            out.push_str(s);
        }
        Value::Array(items) => {
            out.push('[');
            for item in items {
                write_canonical(item, out, depth + 1);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for key in keys {
                out.push_str(&format!("{}:", key.len()));
                out.push_str(key);
                if let Some(v) = map.get(key) {
                    write_canonical(v, out, depth + 1);
                }
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";

    /// A cut-down Deployment schema in the shape kube-apiserver publishes at
    /// /openapi/v3: `allOf` wrappers around `$ref`s, patch extensions on
    /// the property that holds the list.
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
                    }
                }
            },
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string", "default": ""}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string", "default": ""}},
                    "finalizers": {
                        "type": "array",
                        "items": {"type": "string", "default": ""},
                        "x-kubernetes-list-type": "set",
                        "x-kubernetes-patch-strategy": "merge"
                    }
                }
            },
            "io.k8s.api.apps.v1.DeploymentSpec": {
                "type": "object",
                "properties": {
                    "replicas": {"type": "integer"},
                    "strategy": {
                        "allOf": [{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentStrategy"}],
                        "default": {},
                        "x-kubernetes-patch-strategy": "retainKeys"
                    },
                    "template": {
                        "allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodTemplateSpec"}],
                        "default": {}
                    }
                }
            },
            "io.k8s.api.apps.v1.DeploymentStrategy": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "rollingUpdate": {"$ref": "#/components/schemas/io.k8s.api.apps.v1.RollingUpdateDeployment"}
                }
            },
            "io.k8s.api.apps.v1.RollingUpdateDeployment": {
                "type": "object",
                "properties": {"maxSurge": {}, "maxUnavailable": {}}
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
                    "volumes": {
                        "type": "array",
                        "items": {
                            "allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.Volume"}],
                            "default": {}
                        },
                        "x-kubernetes-patch-merge-key": "name",
                        "x-kubernetes-patch-strategy": "merge,retainKeys"
                    },
                    "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}}
                }
            },
            "io.k8s.api.core.v1.Container": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "image": {"type": "string"},
                    "args": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "atomic"},
                    "env": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/io.k8s.api.core.v1.EnvVar"},
                        "x-kubernetes-patch-merge-key": "name",
                        "x-kubernetes-patch-strategy": "merge"
                    },
                    "ports": {
                        "type": "array",
                        "items": {
                            "allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.ContainerPort"}],
                            "default": {}
                        },
                        "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
                        "x-kubernetes-patch-merge-key": "containerPort",
                        "x-kubernetes-patch-strategy": "merge"
                    }
                }
            },
            "io.k8s.api.core.v1.EnvVar": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}}
            },
            "io.k8s.api.core.v1.ContainerPort": {
                "type": "object",
                "properties": {
                    "containerPort": {"type": "integer"},
                    "name": {"type": "string"},
                    "protocol": {"type": "string"}
                }
            },
            "io.k8s.api.core.v1.Volume": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "configMap": {"type": "object"},
                    "secret": {"type": "object"},
                    "emptyDir": {"type": "object"}
                }
            }
        });
        match schemas {
            Value::Object(map) => map,
            _ => unreachable!("the literal above is an object"),
        }
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "labels": {"app": "web", "tier": "front", "app.kubernetes.io/name": "web"},
                "finalizers": ["a", "b"]
            },
            "spec": {
                "replicas": 2,
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}
                },
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "nginx:1.25",
                                "args": ["--port", "80"],
                                "env": [
                                    {"name": "A", "value": "1"},
                                    {"name": "B", "value": "2"}
                                ],
                                "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}]
                            },
                            {"name": "sidecar", "image": "envoy:1.30"}
                        ],
                        "volumes": [
                            {"name": "cfg", "configMap": {"name": "web-cfg"}},
                            {"name": "tmp", "emptyDir": {}}
                        ]
                    }
                }
            }
        })
    }

    fn smp(original: &Value, patch: Value) -> Result<Value, PatchError> {
        apply_patch(
            PatchType::StrategicMerge,
            original,
            patch.to_string().as_bytes(),
            &schemas(),
            DEPLOYMENT,
        )
    }

    fn containers(object: &Value) -> &Value {
        &object["spec"]["template"]["spec"]["containers"]
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|element| element["name"].as_str())
            .collect()
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json"),
            Some(PatchType::StrategicMerge)
        );
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type(" Application/JSON-Patch+JSON ;x=y"),
            Some(PatchType::Json)
        );
        assert_eq!(PatchType::from_content_type("application/json"), None);
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            None
        );
        assert_eq!(PatchType::from_content_type(""), None);
        for kind in [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge] {
            assert_eq!(
                PatchType::from_content_type(kind.content_type()),
                Some(kind)
            );
        }
    }

    #[test]
    fn container_image_changes_by_name() {
        let original = deployment();
        let patched = smp(
            &original,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "sidecar", "image": "envoy:1.31"}
            ]}}}}),
        )
        .expect("patch applies");
        let list = containers(&patched);
        assert_eq!(names(list), ["app", "sidecar"]);
        assert_eq!(list[1]["image"], "envoy:1.31");
        // Everything the patch did not name is untouched.
        assert_eq!(list[0], containers(&original)[0]);
        assert_eq!(patched["spec"]["replicas"], 2);
        assert_eq!(patched["metadata"], original["metadata"]);
    }

    #[test]
    fn add_env_var_goes_first_without_set_element_order() {
        let patched = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "env": [{"name": "C", "value": "3"}]}
            ]}}}}),
        )
        .expect("patch applies");
        let env = &containers(&patched)[0]["env"];
        // apimachinery places elements new to the live list ahead of it.
        assert_eq!(names(env), ["C", "A", "B"]);
        assert_eq!(env[0], json!({"name": "C", "value": "3"}));
        assert_eq!(containers(&patched)[0]["image"], "nginx:1.25");
    }

    #[test]
    fn add_env_var_with_set_element_order_appends() {
        let patched = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                "containers": [{
                    "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "C"}],
                    "name": "app",
                    "env": [{"name": "C", "value": "3"}]
                }]
            }}}}),
        )
        .expect("patch applies");
        let list = containers(&patched);
        assert_eq!(names(list), ["app", "sidecar"]);
        assert_eq!(names(&list[0]["env"]), ["A", "B", "C"]);
        assert!(!patched.to_string().contains("$setElementOrder"));
    }

    #[test]
    fn delete_env_var_with_patch_delete() {
        let patched = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "env": [{"$patch": "delete", "name": "A"}]}
            ]}}}}),
        )
        .expect("patch applies");
        assert_eq!(
            containers(&patched)[0]["env"],
            json!([{"name": "B", "value": "2"}])
        );
        // Deleting what is not there is no error and changes nothing.
        let again = smp(
            &patched,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "env": [{"$patch": "delete", "name": "A"}]}
            ]}}}}),
        )
        .expect("patch applies");
        assert_eq!(again, patched);
    }

    #[test]
    fn set_element_order_reorders() {
        let patched = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]
            }}}}),
        )
        .expect("patch applies");
        assert_eq!(names(containers(&patched)), ["sidecar", "app"]);
        assert_eq!(containers(&patched)[1]["image"], "nginx:1.25");
    }

    #[test]
    fn set_element_order_keeps_unnamed_elements_by_their_neighbours() {
        let original = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a"}, {"name": "x"}, {"name": "b"}, {"name": "y"}
        ]}}}});
        // x and y are not named (another client added them): x preceded b
        // in the live list, so it stays ahead of b; y trails.
        let patched = smp(
            &original,
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}, {"name": "c"}],
                "containers": [{"name": "c", "image": "new"}]
            }}}}),
        )
        .expect("patch applies");
        assert_eq!(names(containers(&patched)), ["x", "b", "a", "c", "y"]);
    }

    #[test]
    fn set_element_order_for_primitives() {
        let patched = smp(
            &deployment(),
            json!({"metadata": {
                "$setElementOrder/finalizers": ["c", "a"],
                "finalizers": ["c"],
                "$deleteFromPrimitiveList/finalizers": ["b"]
            }}),
        )
        .expect("patch applies");
        assert_eq!(patched["metadata"]["finalizers"], json!(["c", "a"]));
    }

    #[test]
    fn set_element_order_must_agree_with_the_patch_list() {
        let err = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                "containers": [{"name": "sidecar", "image": "x"}, {"name": "app", "image": "y"}]
            }}}}),
        )
        .expect_err("order contradicts the list");
        assert!(matches!(err, PatchError::OrderMismatch { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "spec.template.spec.containers: the patch lists elements in a different order than its $setElementOrder"
        );
    }

    #[test]
    fn retain_keys_switches_strategy_to_recreate() {
        let patched = smp(
            &deployment(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        )
        .expect("patch applies");
        assert_eq!(patched["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(patched["spec"]["replicas"], 2);
    }

    #[test]
    fn retain_keys_switches_volume_source() {
        let patched = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"volumes": [{
                "$retainKeys": ["name", "secret"],
                "name": "cfg",
                "secret": {"secretName": "web-secret"}
            }]}}}}),
        )
        .expect("patch applies");
        assert_eq!(
            patched["spec"]["template"]["spec"]["volumes"],
            json!([
                {"name": "cfg", "secret": {"secretName": "web-secret"}},
                {"name": "tmp", "emptyDir": {}}
            ])
        );
    }

    #[test]
    fn retain_keys_rejects_fields_it_does_not_retain() {
        let err = smp(
            &deployment(),
            json!({"spec": {"strategy": {
                "$retainKeys": ["type"],
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1}
            }}}),
        )
        .expect_err("rollingUpdate is not retained");
        assert_eq!(
            err.to_string(),
            "spec.strategy: field \"rollingUpdate\" is set by the patch but not listed in $retainKeys"
        );
    }

    #[test]
    fn null_deletes_a_label() {
        let patched = smp(
            &deployment(),
            json!({"metadata": {"labels": {"tier": null, "gone": null, "app": "site"}}}),
        )
        .expect("patch applies");
        assert_eq!(
            patched["metadata"]["labels"],
            json!({"app": "site", "app.kubernetes.io/name": "web"})
        );
    }

    #[test]
    fn primitive_list_union() {
        let patched = smp(
            &deployment(),
            json!({"metadata": {"finalizers": ["b", "c"]}}),
        )
        .expect("patch applies");
        assert_eq!(patched["metadata"]["finalizers"], json!(["a", "b", "c"]));
        // Values new to the live list, with no live value named beside
        // them, go first, as apimachinery orders them.
        let patched = smp(
            &deployment(),
            json!({"metadata": {"finalizers": ["c", "a"]}}),
        )
        .expect("patch applies");
        assert_eq!(patched["metadata"]["finalizers"], json!(["c", "a", "b"]));
    }

    #[test]
    fn delete_from_primitive_list() {
        let patched = smp(
            &deployment(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "zzz"]}}),
        )
        .expect("patch applies");
        assert_eq!(patched["metadata"]["finalizers"], json!(["b"]));
        // No list, nothing to delete: the directive must not create one.
        let patched = smp(
            &json!({"metadata": {"name": "x"}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .expect("patch applies");
        assert_eq!(patched, json!({"metadata": {"name": "x"}}));
    }

    #[test]
    fn list_without_strategy_is_replaced() {
        let patched = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "args": ["--port", "8080", "--debug"]}
            ]}}}}),
        )
        .expect("patch applies");
        assert_eq!(
            containers(&patched)[0]["args"],
            json!(["--port", "8080", "--debug"])
        );
    }

    #[test]
    fn patch_replace_on_a_map() {
        let patched = smp(
            &deployment(),
            json!({"metadata": {"labels": {"$patch": "replace", "only": "this", "dropped": null}}}),
        )
        .expect("patch applies");
        assert_eq!(patched["metadata"]["labels"], json!({"only": "this"}));
        assert_eq!(patched["metadata"]["finalizers"], json!(["a", "b"]));
    }

    #[test]
    fn patch_delete_on_a_map() {
        let patched = smp(
            &deployment(),
            json!({"spec": {"strategy": {"$patch": "delete"}}}),
        )
        .expect("patch applies");
        assert!(patched["spec"].get("strategy").is_none());
        assert_eq!(patched["spec"]["replicas"], 2);
        // A delete for a map that is not there adds nothing.
        let patched = smp(
            &json!({"spec": {}}),
            json!({"spec": {"strategy": {"$patch": "delete"}}}),
        )
        .expect("patch applies");
        assert_eq!(patched, json!({"spec": {}}));
    }

    #[test]
    fn patch_replace_in_a_list() {
        let patched = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "env": [{"$patch": "replace"}, {"name": "Z", "value": "26"}]}
            ]}}}}),
        )
        .expect("patch applies");
        assert_eq!(
            containers(&patched)[0]["env"],
            json!([{"name": "Z", "value": "26"}])
        );
    }

    #[test]
    fn numeric_merge_keys_match() {
        let patched = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "ports": [{"containerPort": 80.0, "name": "web"}, {"containerPort": 443}]}
            ]}}}}),
        )
        .expect("patch applies");
        let ports = &containers(&patched)[0]["ports"];
        assert_eq!(ports.as_array().map(Vec::len), Some(2));
        assert_eq!(ports[0]["name"], "web");
        assert_eq!(ports[0]["protocol"], "TCP");
        assert_eq!(ports[1], json!({"containerPort": 443}));
    }

    #[test]
    fn new_fields_are_stored_without_directives_or_nulls() {
        let patched = smp(
            &json!({"metadata": {"name": "x"}}),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "i", "env": [
                    {"name": "A", "value": "1", "valueFrom": null},
                    {"$patch": "delete", "name": "B"}
                ]}
            ]}}}}),
        )
        .expect("patch applies");
        assert_eq!(
            patched["spec"],
            json!({"template": {"spec": {"containers": [
                {"name": "app", "image": "i", "env": [{"name": "A", "value": "1"}]}
            ]}}})
        );
    }

    #[test]
    fn unknown_fields_merge_maps_and_replace_lists() {
        let original = json!({
            "status": {"conditions": [{"type": "Ready"}], "extra": {"a": 1, "b": 2}},
            "metadata": {"finalizers": ["a"]}
        });
        let patch = json!({
            "status": {"conditions": [{"type": "Progressing"}], "extra": {"b": null, "c": 3}},
            "metadata": {"finalizers": ["b"]}
        });
        let patched = smp(&original, patch.clone()).expect("patch applies");
        assert_eq!(
            patched["status"],
            json!({"conditions": [{"type": "Progressing"}], "extra": {"a": 1, "c": 3}})
        );
        // finalizers is known, so it merges.
        assert_eq!(patched["metadata"]["finalizers"], json!(["b", "a"]));
        // With no schema at all every list is replaced.
        let plain = apply_patch(
            PatchType::StrategicMerge,
            &original,
            patch.to_string().as_bytes(),
            &schemas(),
            "no.such.Schema",
        )
        .expect("patch applies");
        assert_eq!(plain["metadata"]["finalizers"], json!(["b"]));
    }

    /// What `kubectl apply` (1.32) sends when the manifest's container
    /// `app` moves from nginx:1.25 to nginx:1.26 and loses env var B: the
    /// three-way patch against the last-applied annotation, with
    /// `$setElementOrder` lists for every merged list it touches and keys in
    /// Go's sorted order.
    #[test]
    fn kubectl_apply_patch_changing_image_and_removing_env() {
        let last_applied = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"annotations":{},"name":"web"},"spec":{"template":{"spec":{"containers":[{"env":[{"name":"A","value":"1"}],"image":"nginx:1.26","name":"app"}]}}}}"#;
        let body = format!(
            r#"{{"metadata":{{"annotations":{{"kubectl.kubernetes.io/last-applied-configuration":{}}}}},"spec":{{"template":{{"spec":{{"$setElementOrder/containers":[{{"name":"app"}}],"containers":[{{"$setElementOrder/env":[{{"name":"A"}}],"env":[{{"$patch":"delete","name":"B"}}],"image":"nginx:1.26","name":"app"}}]}}}}}}}}"#,
            Value::from(format!("{last_applied}\n"))
        );
        let patched = apply_patch(
            PatchType::StrategicMerge,
            &deployment(),
            body.as_bytes(),
            &schemas(),
            DEPLOYMENT,
        )
        .expect("kubectl's patch applies");
        let list = containers(&patched);
        // The sidecar was never in the manifest (say, injected): it stays.
        assert_eq!(names(list), ["app", "sidecar"]);
        assert_eq!(list[0]["image"], "nginx:1.26");
        assert_eq!(list[0]["env"], json!([{"name": "A", "value": "1"}]));
        assert_eq!(list[0]["ports"], containers(&deployment())[0]["ports"]);
        assert_eq!(
            patched["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            format!("{last_applied}\n")
        );
        assert!(!patched.to_string().contains("$setElementOrder"));
        assert!(!patched.to_string().contains("$patch"));
    }

    #[test]
    fn json_patch_round_trip() {
        let original = deployment();
        let ops = json!([
            {"op": "test", "path": "/spec/replicas", "value": 2},
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:1.27"},
            {"op": "add", "path": "/metadata/labels/env", "value": "prod"},
            {"op": "remove", "path": "/spec/template/spec/containers/1"}
        ]);
        let patched = apply_patch(
            PatchType::Json,
            &original,
            ops.to_string().as_bytes(),
            &Map::new(),
            "",
        )
        .expect("patch applies");
        assert_eq!(names(containers(&patched)), ["app"]);
        assert_eq!(containers(&patched)[0]["image"], "nginx:1.27");
        assert_eq!(patched["metadata"]["labels"]["env"], "prod");

        let failing = json!([{"op": "test", "path": "/spec/replicas", "value": 3}]);
        let err = apply_patch(
            PatchType::Json,
            &original,
            failing.to_string().as_bytes(),
            &Map::new(),
            "",
        )
        .expect_err("test op fails");
        assert!(matches!(err, PatchError::JsonPatch(_)), "{err}");
        assert!(err.to_string().contains("/spec/replicas"), "{err}");

        let err = apply_patch(
            PatchType::Json,
            &original,
            br#"{"op":"add"}"#,
            &Map::new(),
            "",
        )
        .expect_err("not a list of operations");
        assert!(matches!(err, PatchError::InvalidBody { .. }), "{err}");
        let err = apply_patch(
            PatchType::Json,
            &original,
            br#"[{"op":"replace","path":"","value":[]}]"#,
            &Map::new(),
            "",
        )
        .expect_err("an object cannot become an array");
        assert!(matches!(err, PatchError::NotAnObject { .. }), "{err}");
    }

    #[test]
    fn merge_patch_round_trip() {
        let patch = json!({
            "metadata": {"labels": {"tier": null, "env": "prod"}},
            "spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x"}]}}}
        });
        let patched = apply_patch(
            PatchType::Merge,
            &deployment(),
            patch.to_string().as_bytes(),
            &schemas(),
            DEPLOYMENT,
        )
        .expect("patch applies");
        // RFC 7386 replaces lists whatever the schema says.
        assert_eq!(
            containers(&patched),
            &json!([{"name": "only", "image": "x"}])
        );
        assert_eq!(
            patched["metadata"]["labels"],
            json!({"app": "web", "env": "prod", "app.kubernetes.io/name": "web"})
        );
        for body in ["[1]", "\"x\"", "null"] {
            let err = apply_patch(
                PatchType::Merge,
                &deployment(),
                body.as_bytes(),
                &Map::new(),
                "",
            )
            .expect_err("not an object");
            assert!(
                matches!(err, PatchError::NotAnObject { .. }),
                "{body}: {err}"
            );
        }
    }

    #[test]
    fn strategic_patch_must_be_an_object() {
        for body in ["[]", "\"x\"", "3", "null"] {
            let err = apply_patch(
                PatchType::StrategicMerge,
                &deployment(),
                body.as_bytes(),
                &schemas(),
                DEPLOYMENT,
            )
            .expect_err("not an object");
            assert!(
                matches!(err, PatchError::NotAnObject { .. }),
                "{body}: {err}"
            );
        }
        let err = apply_patch(
            PatchType::StrategicMerge,
            &deployment(),
            b"{not json",
            &schemas(),
            DEPLOYMENT,
        )
        .expect_err("not JSON");
        assert!(
            err.to_string()
                .starts_with("invalid strategic merge patch body"),
            "{err}"
        );
        let err = smp(&json!([1, 2]), json!({})).expect_err("original is not an object");
        assert!(matches!(err, PatchError::NotAnObject { .. }), "{err}");
    }

    #[test]
    fn merge_keyed_element_without_its_key_is_an_error() {
        let err = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"image": "nginx"}]}}}}),
        )
        .expect_err("no name");
        assert_eq!(
            err.to_string(),
            "spec.template.spec.containers[0]: list element has no merge key \"name\""
        );
        let err = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "env": [{"name": "A"}, {"$patch": "delete", "value": "2"}]}
            ]}}}}),
        )
        .expect_err("delete without a name");
        assert_eq!(
            err.to_string(),
            "spec.template.spec.containers[name=\"app\"].env[1]: list element has no merge key \"name\""
        );
    }

    #[test]
    fn unknown_patch_directive_is_an_error() {
        let err = smp(
            &deployment(),
            json!({"spec": {"strategy": {"$patch": "merge"}}}),
        )
        .expect_err("merge is no map directive");
        assert_eq!(
            err.to_string(),
            "spec.strategy: unknown directive \"$patch\": \"merge\"; expected \"replace\" or \"delete\""
        );
        let err = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"$patch": "remove", "name": "app"}]}}}}),
        )
        .expect_err("remove is no list directive");
        assert!(matches!(err, PatchError::UnknownDirective { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("spec.template.spec.containers[0]:"),
            "{err}"
        );
        let err = smp(&deployment(), json!({"$patch": "keep"})).expect_err("at the root");
        assert!(err.to_string().starts_with("(root):"), "{err}");
    }

    #[test]
    fn patch_delete_at_the_root_empties_the_object() {
        let patched = smp(&deployment(), json!({"$patch": "delete"})).expect("patch applies");
        assert_eq!(patched, json!({}));
    }

    #[test]
    fn paths_quote_dotted_keys() {
        let err = smp(
            &json!({"metadata": {"annotations": {"a.b/c": {"x": 1}}}}),
            json!({"metadata": {"annotations": {"a.b/c": {"$patch": 1}}}}),
        )
        .expect_err("$patch must be a string");
        assert_eq!(
            err.to_string(),
            "metadata.annotations[\"a.b/c\"]: invalid $patch: must be a string"
        );
    }

    #[test]
    fn odd_inputs_give_errors_or_results_never_panics() {
        let original = deployment();
        // Arrays where maps are expected, and maps where lists are, simply
        // replace the old value, as a merge patch would.
        let patched = smp(&original, json!({"spec": []})).expect("replaces");
        assert_eq!(patched["spec"], json!([]));
        let patched = smp(
            &original,
            json!({"spec": {"template": {"spec": {"containers": {"name": "app"}}}}}),
        )
        .expect("replaces");
        assert_eq!(containers(&patched), &json!({"name": "app"}));

        let errors = [
            json!({"spec": {"template": {"spec": {"containers": ["app"]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [[{"name": "app"}]]}}}}),
            json!({"spec": {"strategy": {"$retainKeys": "type", "type": "Recreate"}}}),
            json!({"spec": {"strategy": {"$retainKeys": [1], "type": "Recreate"}}}),
            json!({"spec": {"template": {"spec": {"$setElementOrder/containers": {"name": "app"}}}}}),
            json!({"spec": {"template": {"spec": {"$setElementOrder/containers": ["app"]}}}}),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}],
                "containers": "app"
            }}}}),
            json!({"spec": {"template": {"spec": {"$setElementOrder": []}}}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
            json!({"metadata": {"$deleteFromPrimitiveList/": ["a"]}}),
            json!({"metadata": {"labels": {"$patch": ["delete"]}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"$patch": null, "name": "app"}]}}}}),
            json!({"metadata": {"finalizers": [{"a": 1}]}}),
        ];
        for patch in errors {
            let result = smp(&original, patch.clone());
            assert!(result.is_err(), "{patch} gave {result:?}");
        }

        let fine = [
            json!({}),
            json!({"spec": {"template": {"spec": {"containers": [{"name": {"odd": ["key"]}}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"name": null}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": []}}}}),
            json!({"spec": {"template": {"spec": {"$setElementOrder/containers": []}}}}),
            json!({"spec": {"template": {"spec": {"$setElementOrder/nothing": [{"name": "x"}]}}}}),
            json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "ghost"}]}}}}),
            json!({"spec": {"$setElementOrder/replicas": [1]}}),
            json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [], "containers": null}}}}),
            json!({"metadata": {"$deleteFromPrimitiveList/name": ["web"]}}),
            json!({"metadata": {"finalizers": [null, 1, true, "a"]}}),
            json!({"$ref": "#/components/schemas/io.k8s.api.apps.v1.Deployment"}),
        ];
        for patch in fine {
            let result = smp(&original, patch.clone());
            assert!(result.is_ok(), "{patch} gave {result:?}");
        }
        assert_eq!(smp(&original, json!({})).ok(), Some(original.clone()));
    }

    #[test]
    fn cyclic_and_broken_schemas_are_survived() {
        let schemas = match json!({
            "Loop": {"$ref": "#/components/schemas/Loop"},
            "Node": {"properties": {
                "next": {"allOf": [{"$ref": "#/components/schemas/Node"}]},
                "items": {"type": "array", "x-kubernetes-patch-strategy": "merge",
                          "items": {"$ref": "#/components/schemas/Missing"}},
                "bad": {"x-kubernetes-patch-strategy": 7, "x-kubernetes-patch-merge-key": []}
            }}
        }) {
            Value::Object(map) => map,
            _ => unreachable!("the literal above is an object"),
        };
        let original = json!({"next": {"next": {"items": [{"k": 1}]}}, "bad": [1]});
        let patch = json!({"next": {"next": {"items": [{"k": 2}]}}, "bad": [2]});
        for root in ["Loop", "Node"] {
            let result = apply_patch(
                PatchType::StrategicMerge,
                &original,
                patch.to_string().as_bytes(),
                &schemas,
                root,
            );
            // Loop resolves to nothing, so the list is plain and replaced;
            // Node's merge list has no merge key, which the server reports.
            match root {
                "Loop" => assert_eq!(result.ok(), Some(patch.clone())),
                _ => assert!(matches!(result, Err(PatchError::NoMergeKey { .. }))),
            }
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut patch = json!({"leaf": 1});
        for _ in 0..110 {
            patch = json!({ "a": patch });
        }
        let err = smp(&json!({}), patch).expect_err("too deep");
        assert!(matches!(err, PatchError::TooDeep { .. }), "{err}");
        // Past serde_json's own limit the body is refused as unparsable.
        let body = format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200));
        let err = apply_patch(
            PatchType::StrategicMerge,
            &json!({}),
            body.as_bytes(),
            &schemas(),
            DEPLOYMENT,
        )
        .expect_err("too deep to parse");
        assert!(matches!(err, PatchError::InvalidBody { .. }), "{err}");
    }
}
