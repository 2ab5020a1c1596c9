//! Errors as a Kubernetes API server sends them: a `metav1.Status` with a
//! reason, a code and, for invalid objects, the causes by field path, so
//! kubectl and client libraries print the messages people know. Internal
//! details are logged once here and never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One reason an object is invalid, as `details.causes[]` carries it.
#[derive(Debug, Clone, Serialize)]
pub struct Cause {
    #[serde(rename = "reason")]
    pub kind: &'static str,
    pub message: String,
    pub field: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        group: String,
        resource: String,
        name: String,
    },
    #[error("the server could not find the requested resource")]
    NoSuchPath,
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        group: String,
        resource: String,
        name: String,
    },
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {message}")]
    Conflict {
        group: String,
        resource: String,
        name: String,
        message: String,
    },
    /// A server-side apply taking fields other managers own.
    #[error("{message}")]
    ManagerConflict { message: String, causes: Vec<Cause> },
    #[error("{kind} \"{name}\" is invalid: {}", causes.iter().map(|c| if c.field.is_empty() { c.message.clone() } else { format!("{}: {}", c.field, c.message) }).collect::<Vec<_>>().join(", "))]
    Invalid {
        group: String,
        kind: String,
        name: String,
        causes: Vec<Cause>,
    },
    #[error("{0}")]
    BadRequest(String),
    /// Refused by a limit (a quota), as admission refuses it.
    #[error("{0}")]
    Forbidden(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error(
        "the body of the request was in an unknown format - accepted media types include: {accepted}"
    )]
    UnsupportedMediaType { accepted: String },
    #[error("the request body is too large: at most {limit} bytes")]
    TooLarge { limit: usize },
    #[error("too old resource version: {wanted} ({oldest})")]
    Gone { wanted: u64, oldest: u64 },
    #[error("an internal error occurred")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } | ApiError::NoSuchPath => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ManagerConflict { .. } => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NoSuchPath => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ManagerConflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::UnsupportedMediaType { .. } => "UnsupportedMediaType",
            ApiError::TooLarge { .. } => "RequestEntityTooLarge",
            ApiError::Gone { .. } => "Expired",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// The `metav1.Status` object.
    pub fn status(&self) -> serde_json::Value {
        let mut details = serde_json::Map::new();
        match self {
            ApiError::NotFound {
                group,
                resource,
                name,
            }
            | ApiError::AlreadyExists {
                group,
                resource,
                name,
            }
            | ApiError::Conflict {
                group,
                resource,
                name,
                ..
            } => {
                details.insert("name".into(), name.clone().into());
                if !group.is_empty() {
                    details.insert("group".into(), group.clone().into());
                }
                details.insert("kind".into(), resource.clone().into());
            }
            ApiError::ManagerConflict { causes, .. } => {
                details.insert(
                    "causes".into(),
                    serde_json::to_value(causes).expect("causes serialise"),
                );
            }
            ApiError::Invalid {
                group,
                kind,
                name,
                causes,
            } => {
                details.insert("name".into(), name.clone().into());
                if !group.is_empty() {
                    details.insert("group".into(), group.clone().into());
                }
                details.insert("kind".into(), kind.clone().into());
                details.insert(
                    "causes".into(),
                    serde_json::to_value(causes).expect("causes serialise"),
                );
            }
            _ => {}
        }
        let mut status = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        if !details.is_empty() {
            status["details"] = details.into();
        }
        status
    }
}

impl From<crate::state::StateError> for ApiError {
    fn from(e: crate::state::StateError) -> ApiError {
        match e {
            crate::state::StateError::Rejected(reason) => ApiError::BadRequest(reason),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!("API: {detail}");
        }
        let mut response = (self.code(), axum::Json(self.status())).into_response();
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"berth\""),
            );
        }
        response
    }
}

/// A successful delete's answer when the object is gone at once.
pub fn success(group: &str, kind: &str, name: &str, uid: &str) -> serde_json::Value {
    let mut details = serde_json::json!({"name": name, "kind": kind, "uid": uid});
    if !group.is_empty() {
        details["group"] = group.into();
    }
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
