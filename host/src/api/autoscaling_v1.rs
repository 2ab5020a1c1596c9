//! autoscaling/v1 HorizontalPodAutoscalers: the version `kubectl
//! autoscale` (up to 1.32) creates. HPAs are stored as autoscaling/v2;
//! v1 is a view of them, converted on the way in and out as
//! kube-apiserver converts: `targetCPUUtilizationPercentage` is a v2 CPU
//! Utilization metric, and `currentCPUUtilizationPercentage` that metric's
//! current value. An HPA with other metrics or a behavior shows only its
//! CPU target here (v2 has all of it). Create, get, list and delete are
//! served; to change an HPA, use v2.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::rest::{Params, Target};
use super::server::KubeApi;
use super::status::ApiError;

/// Serves `method` on the v1 path `segments` (after `/apis/autoscaling/v1`)
/// through the v2 resource.
pub async fn serve(
    api: Arc<KubeApi>,
    method: Method,
    segments: &[&str],
    params: Params,
    mut headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    let target: Target = super::rest::target("autoscaling", "v2", segments)?;
    if target.resource.kind != "HorizontalPodAutoscaler" || target.subresource.is_some() {
        return Err(ApiError::NoSuchPath);
    }
    let body = match (&method, &target.name) {
        (&Method::POST, None) => {
            let v1 = super::rest::parse_body(&headers, &body)?;
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            bytes::Bytes::from(serde_json::to_vec(&to_v2(v1)?).expect("JSON serialises"))
        }
        (&Method::GET, _) | (&Method::DELETE, Some(_)) => body,
        _ => return Err(ApiError::MethodNotAllowed),
    };
    let response = super::rest::serve(api, method, target, params, headers, body).await?;
    to_v1_response(response).await
}

/// A v1 object as v2: its CPU target a metric.
fn to_v2(mut v1: Value) -> Result<Value, ApiError> {
    let Some(object) = v1.as_object_mut() else {
        return Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        ));
    };
    object.insert("apiVersion".into(), "autoscaling/v2".into());
    object.remove("status");
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
        && let Some(percent) = spec.remove("targetCPUUtilizationPercentage")
        && !percent.is_null()
    {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": percent}}}]),
        );
    }
    Ok(v1)
}

/// A v2 HPA as v1.
fn to_v1(v2: &Value) -> Value {
    let mut v1 = v2.clone();
    let cpu_index = v2["spec"]["metrics"].as_array().and_then(|m| {
        m.iter().position(|m| {
            m["type"] == "Resource"
                && m["resource"]["name"] == "cpu"
                && m["resource"]["target"]["type"] == "Utilization"
        })
    });
    let Some(object) = v1.as_object_mut() else {
        return v1;
    };
    object.insert("apiVersion".into(), "autoscaling/v1".into());
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("metrics");
        spec.remove("behavior");
        if let Some(i) = cpu_index {
            spec.insert(
                "targetCPUUtilizationPercentage".into(),
                v2["spec"]["metrics"][i]["resource"]["target"]["averageUtilization"].clone(),
            );
        }
    }
    if let Some(status) = v2.get("status") {
        let mut v1_status = serde_json::Map::new();
        for field in [
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ] {
            if let Some(value) = status.get(field) {
                v1_status.insert(field.into(), value.clone());
            }
        }
        let current = status["currentMetrics"].as_array().and_then(|m| {
            m.iter().find_map(|m| {
                (m["type"] == "Resource" && m["resource"]["name"] == "cpu")
                    .then(|| m["resource"]["current"]["averageUtilization"].clone())
                    .filter(|v| !v.is_null())
            })
        });
        if let Some(current) = current {
            v1_status.insert("currentCPUUtilizationPercentage".into(), current);
        }
        object.insert("status".into(), Value::Object(v1_status));
    }
    v1
}

/// The v2 answer as v1: an object, a list of them; a Table or a Status
/// as it is.
async fn to_v1_response(response: Response) -> Result<Response, ApiError> {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::Internal(format!("reading the v2 answer: {e}")))?;
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(Response::from_parts(parts, axum::body::Body::from(bytes)));
    };
    match value["kind"].as_str() {
        Some("HorizontalPodAutoscaler") => value = to_v1(&value),
        Some("HorizontalPodAutoscalerList") => {
            value["apiVersion"] = "autoscaling/v1".into();
            if let Some(items) = value["items"].as_array_mut() {
                for item in items {
                    *item = to_v1(item);
                }
            }
        }
        _ => {}
    }
    let mut response = (parts.status, axum::Json(value)).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_LENGTH {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1_cpu_target_is_a_v2_metric_and_back() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50}});
        let v2 = to_v2(v1).unwrap();
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        assert!(v2["spec"].get("targetCPUUtilizationPercentage").is_none());
        let mut stored = v2.clone();
        stored["status"] = json!({"currentReplicas": 2, "desiredReplicas": 3,
            "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": 72, "averageValue": "72m"}}}]});
        let back = to_v1(&stored);
        assert_eq!(back["spec"]["targetCPUUtilizationPercentage"], 50);
        assert!(back["spec"].get("metrics").is_none());
        assert_eq!(back["status"]["currentCPUUtilizationPercentage"], 72);
        assert_eq!(back["status"]["desiredReplicas"], 3);
    }
}
