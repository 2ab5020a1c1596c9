//! Discovery as kube-apiserver serves it: `/version`, the health checks,
//! `/api` and `/apis` in the legacy format or the aggregated one
//! (apidiscovery.k8s.io/v2, chosen by Accept, one request for all), and the
//! resource list of each group-version. Everything here derives from
//! [`super::resources::RESOURCES`].

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::resources::{RESOURCES, Resource, group_versions};

/// The Kubernetes minor berth's API follows; kubectl warns past one minor
/// of skew.
pub const KUBERNETES_VERSION: (u32, u32, u32) = (1, 32, 0);

pub fn version() -> Value {
    let (major, minor, patch) = KUBERNETES_VERSION;
    json!({
        "major": major.to_string(),
        "minor": minor.to_string(),
        "gitVersion": format!("v{major}.{minor}.{patch}+berth-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a (berth is Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const AGGREGATED_BETA: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Which aggregated format, if any, the client's Accept asks for first.
fn aggregated_wanted(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    for choice in accept.split(',') {
        let params: Vec<&str> = choice.split(';').map(str::trim).collect();
        let has = |p: &str| params.contains(&p);
        if params.first() != Some(&"application/json") {
            continue;
        }
        if has("as=APIGroupDiscoveryList") && has("g=apidiscovery.k8s.io") {
            if has("v=v2") {
                return Some(AGGREGATED);
            }
            if has("v=v2beta1") {
                return Some(AGGREGATED_BETA);
            }
        } else if params.len() == 1 {
            // Plain JSON came first: the legacy format.
            return None;
        }
    }
    None
}

fn with_type(value: Value, content_type: &'static str) -> Response {
    let mut response = axum::Json(value).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Lets a client cache the document and know when to fetch it again.
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

/// `GET /api`.
pub fn core(headers: &HeaderMap) -> Response {
    if let Some(content_type) = aggregated_wanted(headers) {
        return with_type(aggregated(true, content_type), content_type);
    }
    axum::Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }))
    .into_response()
}

/// `GET /apis`.
pub fn groups(headers: &HeaderMap) -> Response {
    if let Some(content_type) = aggregated_wanted(headers) {
        return with_type(aggregated(false, content_type), content_type);
    }
    let groups: Vec<Value> = named_groups()
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
                .collect();
            json!({
                "name": group,
                "versions": versions,
                "preferredVersion": versions[0],
            })
        })
        .collect();
    axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        .into_response()
}

/// `GET /apis/GROUP`: one APIGroup, or `None` when it is not served.
pub fn group(name: &str) -> Option<Value> {
    let (group, versions) = named_groups().into_iter().find(|(g, _)| *g == name)?;
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    Some(json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": group,
        "preferredVersion": versions[0], "versions": versions,
    }))
}

/// The named groups (not the core one) and their versions.
fn named_groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (group, version) in group_versions() {
        if group.is_empty() {
            continue;
        }
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, versions)) => versions.push(version),
            None => groups.push((group, vec![version])),
        }
    }
    groups.push(("authorization.k8s.io", vec!["v1"]));
    groups
}

fn subresource_kind(resource: &Resource, kind: &str) -> (&'static str, &'static str, String) {
    match kind {
        "Scale" => ("autoscaling", "v1", "Scale".to_owned()),
        "" => (resource.group, resource.version, resource.kind.to_owned()),
        other => (resource.group, resource.version, other.to_owned()),
    }
}

fn aggregated(core: bool, content_type: &str) -> Value {
    let api_version = if content_type == AGGREGATED {
        "apidiscovery.k8s.io/v2"
    } else {
        "apidiscovery.k8s.io/v2beta1"
    };
    let mut items = Vec::new();
    if core {
        items.push(json!({
            "metadata": {"creationTimestamp": null},
            "versions": [{"version": "v1", "resources": discovered("", "v1"), "freshness": "Current"}],
        }));
    } else {
        for (group, versions) in named_groups() {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| json!({"version": v, "resources": discovered(group, v), "freshness": "Current"}))
                .collect();
            items.push(json!({
                "metadata": {"name": group, "creationTimestamp": null},
                "versions": versions,
            }));
        }
    }
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": api_version,
        "metadata": {},
        "items": items,
    })
}

/// The resources of a group-version in the aggregated format.
fn discovered(group: &str, version: &str) -> Vec<Value> {
    let mut list: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| {
            let mut entry = json!({
                "resource": r.plural,
                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": r.verbs,
            });
            if !r.short_names.is_empty() {
                entry["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                entry["categories"] = json!(r.categories);
            }
            if !r.subresources.is_empty() {
                entry["subresources"] = r
                    .subresources
                    .iter()
                    .map(|(name, kind, verbs)| {
                        let (g, v, k) = subresource_kind(r, kind);
                        json!({
                            "subresource": name,
                            "responseKind": {"group": g, "version": v, "kind": k},
                            "verbs": verbs,
                        })
                    })
                    .collect();
            }
            entry
        })
        .collect();
    if group == "authorization.k8s.io" {
        for (plural, kind) in [
            ("selfsubjectaccessreviews", "SelfSubjectAccessReview"),
            ("selfsubjectrulesreviews", "SelfSubjectRulesReview"),
        ] {
            list.push(json!({
                "resource": plural,
                "responseKind": {"group": group, "version": version, "kind": kind},
                "scope": "Cluster",
                "singularResource": plural.trim_end_matches('s'),
                "verbs": ["create"],
            }));
        }
    }
    list
}

/// `GET /api/v1` or `/apis/GROUP/VERSION`: the legacy resource list, or
/// `None` when the group-version is not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let served = group_versions().contains(&(group, version))
        || (group == "authorization.k8s.io" && version == "v1");
    if !served {
        return None;
    }
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources.push(entry);
        for (name, kind, verbs) in r.subresources {
            let (g, v, k) = subresource_kind(r, kind);
            let mut sub = json!({
                "name": format!("{}/{name}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": k,
                "verbs": verbs,
            });
            if g != r.group || v != r.version {
                sub["group"] = g.into();
                sub["version"] = v.into();
            }
            resources.push(sub);
        }
    }
    if group == "authorization.k8s.io" {
        for (plural, kind) in [
            ("selfsubjectaccessreviews", "SelfSubjectAccessReview"),
            ("selfsubjectrulesreviews", "SelfSubjectRulesReview"),
        ] {
            resources.push(json!({
                "name": plural, "singularName": "", "namespaced": false,
                "kind": kind, "verbs": ["create"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_chooses_the_format() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"));
        assert_eq!(aggregated_wanted(&headers), Some(AGGREGATED));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, */*"),
        );
        assert_eq!(aggregated_wanted(&headers), None);
    }

    #[test]
    fn deployments_list_their_scale_subresource_in_autoscaling() {
        let list = resource_list("apps", "v1").unwrap();
        let scale = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
        assert!(resource_list("policy", "v1").is_none());
    }
}
