//! authorization.k8s.io: `kubectl auth can-i` and tools that check their
//! access first ask with SelfSubjectAccessReview and
//! SelfSubjectRulesReview. berth has one identity, the admin token, which
//! may do everything, so every review is answered allowed.

use axum::Json;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authorization::v1::{
    NonResourceRule, ResourceRule, SelfSubjectAccessReview, SelfSubjectRulesReview,
    SubjectAccessReviewStatus, SubjectRulesReviewStatus,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

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
    let request = super::rest::parse_body(headers, body)?;
    // The answer carries no metadata, not even the `creationTimestamp:
    // null` kube-apiserver writes: k8s-openapi leaves an unset one out,
    // and clients read only the status.
    let answer = if kind == "SelfSubjectAccessReview" {
        Json(SelfSubjectAccessReview {
            spec: spec_of(kind, request)?,
            status: Some(SubjectAccessReviewStatus {
                allowed: true,
                reason: Some("berth's admin token may do everything".into()),
                ..SubjectAccessReviewStatus::default()
            }),
            ..SelfSubjectAccessReview::default()
        })
        .into_response()
    } else {
        Json(SelfSubjectRulesReview {
            spec: spec_of(kind, request)?,
            status: Some(everything()),
            ..SelfSubjectRulesReview::default()
        })
        .into_response()
    };
    Ok((StatusCode::CREATED, answer).into_response())
}

/// The spec of a review, which the answer repeats.
fn spec_of<T: DeserializeOwned>(kind: &str, mut request: Value) -> Result<T, ApiError> {
    let spec = request["spec"].take();
    if spec.is_null() {
        return Err(ApiError::BadRequest(format!("a {kind} needs a spec")));
    }
    serde_json::from_value(spec)
        .map_err(|e| ApiError::BadRequest(format!("the spec of a {kind}: {e}")))
}

/// Every verb on every resource and every non-resource URL.
fn everything() -> SubjectRulesReviewStatus {
    let all = || Some(vec!["*".to_owned()]);
    SubjectRulesReviewStatus {
        resource_rules: vec![ResourceRule {
            verbs: vec!["*".into()],
            api_groups: all(),
            resources: all(),
            ..ResourceRule::default()
        }],
        non_resource_rules: vec![NonResourceRule {
            verbs: vec!["*".into()],
            non_resource_urls: all(),
        }],
        incomplete: false,
        ..SubjectRulesReviewStatus::default()
    }
}
