//! `pods/log`: a container's output, the current run's or (with
//! `previous`) the one before; with `follow`, streamed as it grows until
//! the pod is deleted or the container restarts.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::status::ApiError;
use crate::spec::Object;
use crate::state::Record;

/// What a log request asks for.
#[derive(Debug, Default)]
pub struct LogOptions {
    pub container: Option<String>,
    pub previous: bool,
    pub follow: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
}

use super::rest::flag;

fn number(params: &HashMap<String, String>, name: &str) -> Result<Option<usize>, ApiError> {
    params
        .get(name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse()
                .map_err(|_| ApiError::BadRequest(format!("{name} {v:?} is not a number")))
        })
        .transpose()
}

impl LogOptions {
    pub fn from_params(params: &HashMap<String, String>) -> Result<LogOptions, ApiError> {
        if flag(params, "timestamps")
            || params.contains_key("sinceSeconds")
            || params.contains_key("sinceTime")
        {
            return Err(ApiError::BadRequest(
                "berth keeps container output without timestamps: timestamps, sinceSeconds and sinceTime are not supported".into(),
            ));
        }
        Ok(LogOptions {
            container: params.get("container").filter(|c| !c.is_empty()).cloned(),
            previous: flag(params, "previous"),
            follow: flag(params, "follow"),
            tail_lines: number(params, "tailLines")?,
            limit_bytes: number(params, "limitBytes")?,
        })
    }
}

/// The Kubernetes route: `GET …/pods/NAME/log`.
pub async fn serve(
    api: Arc<super::KubeApi>,
    namespace: String,
    name: String,
    params: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let options = LogOptions::from_params(&params)?;
    pod_log(api.state.clone(), namespace, name, options).await
}

/// The last `n` lines of `bytes`.
fn tail(bytes: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut seen = 0;
    for (i, b) in trimmed.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &bytes[i + 1..];
            }
        }
    }
    bytes
}

pub async fn pod_log(
    state: Arc<ApiState>,
    namespace: String,
    name: String,
    options: LogOptions,
) -> Result<Response, ApiError> {
    let record = pod_record(&state, &namespace, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            group: String::new(),
            resource: "pods".into(),
            name: name.clone(),
        })?;
    let Object::Pod(pod) = &record.object else {
        return Err(ApiError::Internal(format!(
            "{name} is stored as a pod but is not one"
        )));
    };
    let names: Vec<&str> = pod.spec.all_containers().map(|c| c.name.as_str()).collect();
    // Without a name, the pod's one app container: its init containers
    // are named when wanted, as the API server has it.
    let apps: Vec<&str> = pod
        .spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let container = match (&options.container, apps.as_slice()) {
        (Some(c), _) if names.contains(&c.as_str()) => c.clone(),
        (Some(c), _) => {
            return Err(ApiError::BadRequest(format!(
                "container {c} is not valid for pod {name} (it has {})",
                names.join(", ")
            )));
        }
        (None, [only]) => (*only).to_owned(),
        (None, _) => {
            let inits: Vec<&str> = pod
                .spec
                .init_containers
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            let or_init = if inits.is_empty() {
                String::new()
            } else {
                format!(" or one of the init containers: [{}]", inits.join(" "))
            };
            return Err(ApiError::BadRequest(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]{or_init}",
                apps.join(" ")
            )));
        }
    };
    let dir = state.pods_dir.join(&record.uid);
    let current = current_run(&record.status, &container);
    let wanted = if options.previous {
        current.and_then(|run| run.checked_sub(1))
    } else {
        current
    };
    let Some(run) = wanted else {
        return Err(ApiError::BadRequest(if options.previous {
            format!("previous terminated container \"{container}\" in pod \"{name}\" not found")
        } else {
            format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
            )
        }));
    };
    let path = crate::state::log_path(&dir, &container, run);
    let read = |bytes: Vec<u8>| -> Vec<u8> {
        let mut out = match options.tail_lines {
            Some(n) => tail(&bytes, n).to_vec(),
            None => bytes,
        };
        if let Some(limit) = options.limit_bytes {
            out.truncate(limit);
        }
        out
    };
    if !options.follow {
        return match tokio::fs::read(&path).await {
            Ok(bytes) => Ok((StatusCode::OK, read(bytes)).into_response()),
            // A run that never wrote has no file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(StatusCode::OK.into_response())
            }
            Err(e) => Err(ApiError::Internal(format!("{}: {e}", path.display()))),
        };
    }
    // The first read honours tailLines; the rest streams from its end.
    let first: Vec<u8> = tokio::fs::read(&path).await.unwrap_or_default();
    let start = first.len() as u64;
    let opening = read(first);
    let uid = record.uid.clone();
    let opening = futures_util::stream::once(async move { Ok::<_, std::io::Error>(opening) });
    // The file being followed, by inode: the log may be rotated (renamed
    // to NAME.1) between two reads, and what was written to it after the
    // last read is then read from there.
    let inode = |meta: std::io::Result<std::fs::Metadata>| {
        use std::os::unix::fs::MetadataExt as _;
        meta.ok().map(|m| m.ino())
    };
    let start_inode = inode(tokio::fs::metadata(&path).await);
    let rest = futures_util::stream::unfold(
        (start, start_inode, false),
        move |(offset, following, done)| {
            let (state, path, container, uid, namespace, name) = (
                state.clone(),
                path.clone(),
                container.clone(),
                uid.clone(),
                namespace.clone(),
                name.clone(),
            );
            async move {
                if done {
                    return None;
                }
                let (mut offset, mut following) = (offset, following);
                loop {
                    let now_inode = inode(tokio::fs::metadata(&path).await);
                    if following.is_some() && now_inode != following {
                        // Rotated: the rest of the old file, then the new one.
                        let mut rotated = path.clone().into_os_string();
                        rotated.push(".1");
                        let rotated = std::path::PathBuf::from(rotated);
                        let old = if inode(tokio::fs::metadata(&rotated).await) == following {
                            tokio::fs::read(&rotated).await.unwrap_or_default()
                        } else {
                            Vec::new()
                        };
                        let tail = old.get(offset as usize..).unwrap_or_default().to_vec();
                        following = now_inode;
                        offset = 0;
                        if !tail.is_empty() {
                            return Some((Ok(tail), (offset, following, false)));
                        }
                    }
                    following = following.or(now_inode);
                    let bytes = tokio::fs::read(&path).await.unwrap_or_default();
                    if (bytes.len() as u64) > offset {
                        let chunk = bytes[offset as usize..].to_vec();
                        let next = bytes.len() as u64;
                        return Some((Ok::<_, std::io::Error>(chunk), (next, following, false)));
                    }
                    let now = pod_record(&state, &namespace, &name).await;
                    let still = matches!(
                        &now,
                        Ok(Some(r)) if r.uid == uid && current_run(&r.status, &container) == Some(run)
                    );
                    if !still {
                        // What it wrote between the last read and its end.
                        let bytes = tokio::fs::read(&path).await.unwrap_or_default();
                        let rest = bytes.get(offset as usize..).unwrap_or_default().to_vec();
                        return Some((Ok(rest), (offset, following, true)));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        },
    );
    use futures_util::StreamExt as _;
    Ok(axum::body::Body::from_stream(opening.chain(rest)).into_response())
}

/// Pod `name`'s record, read on the blocking pool.
async fn pod_record(
    state: &Arc<ApiState>,
    namespace: &str,
    name: &str,
) -> Result<Option<Record>, ApiError> {
    let (state, namespace, name) = (state.clone(), namespace.to_owned(), name.to_owned());
    tokio::task::spawn_blocking(move || {
        state
            .store
            .lock()
            .get(crate::spec::Kind::Pod, &namespace, &name)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("a store task failed: {e}")))?
    .map_err(ApiError::from)
}

/// The run of `container` whose output `logs` shows: the one running or
/// the one that finished (a completed pod's), or the last one to run while
/// the next waits (its restart count numbers the runs from 0).
fn current_run(status: &crate::spec::Status, container: &str) -> Option<u32> {
    let entry = status.pod()?.container(container)?;
    let count = u32::try_from(entry.restart_count).ok()?;
    let state = entry.state.as_ref();
    if state.is_some_and(|s| s.running.is_some() || s.terminated.is_some()) {
        Some(count)
    } else {
        count.checked_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 1), b"c");
        assert_eq!(tail(b"a\n", 5), b"a\n");
        assert_eq!(tail(b"a\nb\n", 0), b"");
    }
}
