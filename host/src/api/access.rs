//! authorization.k8s.io: `kubectl auth can-i` and tools that check their
//! access first ask with SelfSubjectAccessReview and
//! SelfSubjectRulesReview. berth has one identity, the admin token, which
//! may do everything, so every review is answered allowed.

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::status::ApiError;

pub fn review(
    method: &Method,
    rest: &[&str],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let kind = match rest {
        ["selfsubjectaccessreviews"] => "SelfSubjectAccessReview",
        ["selfsubjectrulesreviews"] => "SelfSubjectRulesReview",
        _ => return Err(ApiError::NoSuchPath),
    };
    if method != Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    let request: Value = super::rest::parse_body(headers, body)?;
    if request["spec"].is_null() {
        return Err(ApiError::BadRequest(format!("a {kind} needs a spec")));
    }
    let status = if kind == "SelfSubjectAccessReview" {
        json!({"allowed": true, "reason": "berth's admin token may do everything"})
    } else {
        json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        })
    };
    let answer = json!({
        "kind": kind,
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": request["spec"],
        "status": status,
    });
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}
