//! `/openapi/v3`: the documents in `openapi/`, derived from Kubernetes'
//! own schema by `host/openapi/generate.py` (see its README), embedded
//! compressed and served so. kubectl reads them to decide the
//! server validates fields (so `apply` sends `fieldValidation`) and for
//! `explain`; the strategic merge patch reads their merge keys.

use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::resources::Resource;

/// `(group-version path, gzipped document)`.
const DOCUMENTS: [(&str, &[u8]); 11] = [
    ("api/v1", include_bytes!("openapi/api__v1.json.gz")),
    (
        "apis/apps/v1",
        include_bytes!("openapi/apis__apps__v1.json.gz"),
    ),
    (
        "apis/authorization.k8s.io/v1",
        include_bytes!("openapi/apis__authorization.k8s.io__v1.json.gz"),
    ),
    (
        "apis/autoscaling/v1",
        include_bytes!("openapi/apis__autoscaling__v1.json.gz"),
    ),
    (
        "apis/autoscaling/v2",
        include_bytes!("openapi/apis__autoscaling__v2.json.gz"),
    ),
    (
        "apis/batch/v1",
        include_bytes!("openapi/apis__batch__v1.json.gz"),
    ),
    (
        "apis/discovery.k8s.io/v1",
        include_bytes!("openapi/apis__discovery.k8s.io__v1.json.gz"),
    ),
    (
        "apis/events.k8s.io/v1",
        include_bytes!("openapi/apis__events.k8s.io__v1.json.gz"),
    ),
    (
        "apis/networking.k8s.io/v1",
        include_bytes!("openapi/apis__networking.k8s.io__v1.json.gz"),
    ),
    (
        "apis/node.k8s.io/v1",
        include_bytes!("openapi/apis__node.k8s.io__v1.json.gz"),
    ),
    (
        "apis/storage.k8s.io/v1",
        include_bytes!("openapi/apis__storage.k8s.io__v1.json.gz"),
    ),
];

/// One group-version's document. Nothing of it is held unpacked but the
/// schemas, and those only once a write needs them, without their
/// descriptions: the documents themselves are served as they are embedded
/// (gzip) to clients that take gzip, as kubectl does.
struct Document {
    path: &'static str,
    gz: &'static [u8],
    /// The document's hash, as kube-apiserver puts in `serverRelativeURL`.
    hash: OnceLock<String>,
    schemas: OnceLock<Map<String, Value>>,
}

impl Document {
    fn text(&self) -> Vec<u8> {
        use std::io::Read as _;
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(self.gz)
            .read_to_end(&mut text)
            .expect("the embedded OpenAPI documents are gzip");
        text
    }

    fn hash(&self) -> &str {
        self.hash.get_or_init(|| {
            use sha2::Digest as _;
            hex::encode_upper(sha2::Sha512::digest(self.text()))
        })
    }

    fn schemas(&self) -> &Map<String, Value> {
        self.schemas.get_or_init(|| {
            let mut value: Value = serde_json::from_slice(&self.text())
                .expect("the embedded OpenAPI documents are JSON");
            let mut schemas = match value["components"]["schemas"].take() {
                Value::Object(schemas) => schemas,
                _ => Map::new(),
            };
            for schema in schemas.values_mut() {
                strip_descriptions(schema);
            }
            schemas
        })
    }
}

/// Removes the prose of a schema (what `kubectl explain` shows, which the
/// served document keeps): most of its size, and nothing apply, patch or
/// validation read. A field named `description` is an object, and stays.
fn strip_descriptions(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.get("description").is_some_and(Value::is_string) {
                map.remove("description");
            }
            map.values_mut().for_each(strip_descriptions);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

fn documents() -> &'static [Document] {
    static DOCS: OnceLock<Vec<Document>> = OnceLock::new();
    DOCS.get_or_init(|| {
        DOCUMENTS
            .iter()
            .map(|(path, gz)| Document {
                path,
                gz,
                hash: OnceLock::new(),
                schemas: OnceLock::new(),
            })
            .collect()
    })
}

/// `GET /openapi/v3`.
pub fn root() -> Response {
    let paths: Map<String, Value> = documents()
        .iter()
        .map(|d| {
            (
                d.path.to_owned(),
                json!({"serverRelativeURL": format!("/openapi/v3/{}?hash={}", d.path, d.hash())}),
            )
        })
        .collect();
    axum::Json(json!({"paths": paths})).into_response()
}

/// `GET /openapi/v3/{path}`: the document, cacheable forever when asked by
/// its hash, as kube-apiserver answers.
pub fn document(path: &str, query_hash: Option<&str>, headers: &HeaderMap) -> Response {
    let Some(doc) = documents().iter().find(|d| d.path == path) else {
        return super::status::ApiError::NoSuchPath.into_response();
    };
    let etag = format!("\"{}\"", doc.hash());
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| coding.split(';').next().is_some_and(|c| c.trim() == "gzip"));
    let mut response = if gzip {
        let mut response = (StatusCode::OK, doc.gz).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        response
    } else {
        (StatusCode::OK, doc.text()).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    let cache = if query_hash == Some(doc.hash()) {
        "public, immutable"
    } else {
        "no-cache, private"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

/// `GET /openapi/v2`: an empty document. kubectl 1.27 and 1.28 fetch it
/// before validating and give up if it fails; berth describes its schema
/// in v3 alone, from which kubectl learns that the server validates.
/// An empty protobuf message is an empty document; JSON clients get `{}`.
pub fn v2(headers: &HeaderMap) -> Response {
    let protobuf = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("protobuf"));
    let (content_type, body): (&'static str, &'static [u8]) = if protobuf {
        (
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            b"",
        )
    } else {
        ("application/json", b"{}")
    };
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The schemas of the document that serves `resource`.
pub fn schemas(resource: &Resource) -> &'static Map<String, Value> {
    static EMPTY: OnceLock<Map<String, Value>> = OnceLock::new();
    let path = if resource.group.is_empty() {
        format!("api/{}", resource.version)
    } else {
        format!("apis/{}/{}", resource.group, resource.version)
    };
    documents()
        .iter()
        .find(|d| d.path == path)
        .map_or_else(|| EMPTY.get_or_init(Map::new), Document::schemas)
}

/// The schema name of a resource's kind, as Kubernetes' definitions name
/// it (`io.k8s.api.apps.v1.Deployment`).
pub fn schema_name(resource: &Resource) -> String {
    let group = match resource.group {
        "" => "core",
        g => g.trim_end_matches(".k8s.io"),
    };
    format!("io.k8s.api.{group}.{}.{}", resource.version, resource.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_documents_are_the_generated_ones() {
        let index: Vec<String> = serde_json::from_str(include_str!("openapi/index.json")).unwrap();
        let embedded: Vec<&str> = DOCUMENTS.iter().map(|(path, _)| *path).collect();
        assert_eq!(index, embedded);
    }

    #[test]
    fn every_served_kind_has_its_schema() {
        // metrics.k8s.io is read-only and computed, as metrics-server's:
        // Kubernetes' own schema has no definition of it to derive from.
        for r in super::super::resources::RESOURCES
            .iter()
            .filter(|r| r.group != "metrics.k8s.io")
        {
            let name = schema_name(r);
            assert!(schemas(r).contains_key(&name), "{name}");
        }
        let apps = super::super::resources::find("apps", "v1", "deployments").unwrap();
        let spec = &schemas(apps)["io.k8s.api.apps.v1.DeploymentSpec"];
        assert_eq!(
            spec["properties"]["strategy"]["x-kubernetes-patch-strategy"],
            "retainKeys"
        );
    }
}
