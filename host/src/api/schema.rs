//! Walking Kubernetes' OpenAPI schemas (the documents `openapi` serves):
//! following `$ref` and the `allOf: [{$ref}]` wrappers Kubernetes puts
//! around referenced types, and finding a field's or a list item's schema.
//! Server-side apply, strategic merge patch and field validation all read
//! the schema this way, each noting the extensions it cares about on the
//! way.

use serde_json::{Map, Value};

/// Hops through `$ref`s before a schema is taken as circular.
const MAX_REF_HOPS: usize = 16;
/// Deeper objects than this are not walked (the store refuses them).
const MAX_DEPTH: usize = 64;

/// The schemas of one group-version, by name.
#[derive(Clone, Copy)]
pub struct Schemas<'s> {
    map: &'s Map<String, Value>,
}

impl<'s> Schemas<'s> {
    pub fn new(map: &'s Map<String, Value>) -> Schemas<'s> {
        Schemas { map }
    }

    /// The schema a `$ref` names.
    pub fn lookup(&self, reference: &str) -> Option<&'s Value> {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .or_else(|| reference.strip_prefix("#/definitions/"))
            .unwrap_or(reference);
        self.map.get(name)
    }

    /// Follows references from `node` to the schema that describes the
    /// value; `hop` sees every node passed on the way (where Kubernetes
    /// hangs its `x-kubernetes-…` extensions). `None` for a reference to
    /// nothing or a circle.
    pub fn resolve(
        &self,
        mut node: &'s Value,
        mut hop: impl FnMut(&'s Value),
    ) -> Option<&'s Value> {
        for _ in 0..MAX_REF_HOPS {
            hop(node);
            if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
                node = self.lookup(reference)?;
            } else if let Some(parts) = node.get("allOf").and_then(Value::as_array) {
                node = parts
                    .iter()
                    .find(|part| part.get("$ref").is_some())
                    .or_else(|| parts.first())?;
            } else {
                return node.is_object().then_some(node);
            }
        }
        None
    }

    /// A field of the object `parent` describes, and whether `parent`
    /// declares it by name (rather than typing all its values alike, as a
    /// map's `additionalProperties` does).
    pub fn field(parent: &'s Value, name: &str) -> Option<(&'s Value, bool)> {
        if let Some(field) = parent.get("properties").and_then(|p| p.get(name)) {
            return Some((field, true));
        }
        parent
            .get("additionalProperties")
            .filter(|v| v.is_object())
            .map(|values| (values, false))
    }

    /// The unresolved schema of a list's items.
    pub fn items(list: &'s Value) -> Option<&'s Value> {
        list.get("items")
    }

    /// Removes from `value` (an object of the schema `root` names) every
    /// field its schema does not know, returning their paths as
    /// Kubernetes names them (`spec.template.spec.containers[0].foo`).
    /// Where the schema keeps unknown fields, or does not say, nothing is
    /// removed.
    pub fn prune_unknown(&self, root: &str, value: &mut Value) -> Vec<String> {
        let mut unknown = Vec::new();
        if let Some(schema) = self.lookup(root) {
            self.prune(schema, value, &mut String::new(), &mut unknown, 0);
        }
        unknown
    }

    fn prune(
        &self,
        node: &'s Value,
        value: &mut Value,
        path: &mut String,
        unknown: &mut Vec<String>,
        depth: usize,
    ) {
        let mut keeps_unknown = false;
        let Some(schema) = self.resolve(node, |hop| {
            keeps_unknown |= hop
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        }) else {
            return;
        };
        if keeps_unknown || depth > MAX_DEPTH {
            return;
        }
        match value {
            Value::Object(map) => {
                let typed = schema.get("properties").is_some()
                    || schema.get("additionalProperties").is_some();
                if !typed {
                    return;
                }
                let mut gone = Vec::new();
                for (name, field) in map.iter_mut() {
                    let length = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(name);
                    match Schemas::field(schema, name) {
                        Some((child, _)) => self.prune(child, field, path, unknown, depth + 1),
                        None => {
                            unknown.push(path.clone());
                            gone.push(name.clone());
                        }
                    }
                    path.truncate(length);
                }
                for name in gone {
                    map.remove(&name);
                }
            }
            Value::Array(list) => {
                let Some(items) = Schemas::items(schema) else {
                    return;
                };
                for (i, item) in list.iter_mut().enumerate() {
                    let length = path.len();
                    path.push_str(&format!("[{i}]"));
                    self.prune(items, item, path, unknown, depth + 1);
                    path.truncate(length);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployments() -> &'static Map<String, Value> {
        let resource = crate::api::resources::by_kind("Deployment").unwrap();
        crate::api::openapi::schemas(resource)
    }

    #[test]
    fn unknown_fields_are_found_by_path_and_removed() {
        let schemas = Schemas::new(deployments());
        let mut object = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"any": "label"}, "colour": "blue"},
            "spec": {
                "replicas": 2,
                "replica": 3,
                "template": {"spec": {"containers": [
                    {"name": "a", "image": "x", "env": [{"name": "A", "value": "1", "secret": true}]},
                    {"name": "b", "image": "y", "sidecar": "no"},
                ]}},
            },
        });
        let unknown = schemas.prune_unknown("io.k8s.api.apps.v1.Deployment", &mut object);
        assert_eq!(
            unknown,
            [
                "metadata.colour",
                "spec.replica",
                "spec.template.spec.containers[0].env[0].secret",
                "spec.template.spec.containers[1].sidecar",
            ]
        );
        assert_eq!(
            object["metadata"]["labels"]["any"], "label",
            "a map's keys are its own"
        );
        assert_eq!(object["spec"]["replicas"], 2);
        assert!(object["spec"].get("replica").is_none());
        assert!(
            object["spec"]["template"]["spec"]["containers"][1]
                .get("sidecar")
                .is_none()
        );
    }

    #[test]
    fn circles_and_missing_references_end() {
        let map: Map<String, Value> = serde_json::from_value(json!({
            "A": {"$ref": "#/components/schemas/B"},
            "B": {"allOf": [{"$ref": "#/components/schemas/A"}]},
            "C": {"properties": {"x": {"$ref": "#/components/schemas/Nowhere"}}},
        }))
        .unwrap();
        let schemas = Schemas::new(&map);
        assert!(schemas.resolve(&map["A"], |_| {}).is_none());
        let mut value = json!({"x": {"y": 1}, "z": 2});
        assert_eq!(schemas.prune_unknown("C", &mut value), ["z"]);
        assert_eq!(value, json!({"x": {"y": 1}}));
    }
}
