//! The distribution API's endpoints. Repository names may contain `/`, so
//! paths under `/v2/` are taken apart from the end: the last one or two
//! segments say which endpoint, everything before them is the name.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt as _, TryStreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use super::auth::Action;
use super::error::{ApiError, ApiResult, Code};
use super::uploads::AppendError;
use super::{AppState, MAX_MANIFEST_BYTES};
use crate::media;
use crate::names::{Hasher, is_sha256_digest, is_valid_name, is_valid_tag, split_digest};

type St = State<Arc<AppState>>;

const API_VERSION: &str = "Docker-Distribution-API-Version";
const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    media::DOCKER_MANIFEST,
    media::DOCKER_MANIFEST_LIST,
];

enum Endpoint<'a> {
    Blob(&'a str, &'a str),
    Manifest(&'a str, &'a str),
    UploadStart(&'a str),
    Upload(&'a str, &'a str),
    Tags(&'a str),
    Referrers(&'a str, &'a str),
}

fn endpoint(path: &str) -> Option<Endpoint<'_>> {
    let rest = path.strip_prefix("/v2/")?;
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Endpoint::Tags(name));
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Endpoint::UploadStart(name));
    }
    let (prefix, last) = rest.rsplit_once('/')?;
    if let Some(name) = prefix.strip_suffix("/blobs/uploads") {
        return Some(Endpoint::Upload(name, last));
    }
    let (name, kind) = prefix.rsplit_once('/')?;
    match kind {
        "blobs" => Some(Endpoint::Blob(name, last)),
        "manifests" => Some(Endpoint::Manifest(name, last)),
        "referrers" => Some(Endpoint::Referrers(name, last)),
        _ => None,
    }
}

fn check_name(name: &str) -> ApiResult<()> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::NameInvalid,
            format!("{name:?} is not a valid repository name"),
        ))
    }
}

fn check_digest(digest: &str) -> ApiResult<()> {
    if split_digest(digest).is_some() {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::DigestInvalid,
            format!("{digest:?} is not a sha256 or sha512 digest"),
        ))
    }
}

async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    repository: Option<&str>,
    action: Action,
) -> ApiResult<()> {
    match &state.auth {
        Some(auth) => auth.check(headers, repository, action).await,
        None => Ok(()),
    }
}

/// Runs storage work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

fn respond(status: StatusCode, headers: &[(&str, String)], body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let map = response.headers_mut();
    map.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            map.insert(
                header::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                value,
            );
        }
    }
    response
}

pub async fn base(State(state): St, headers: HeaderMap) -> Response {
    match authorize(&state, &headers, None, Action::Pull).await {
        Ok(()) => respond(
            StatusCode::OK,
            &[("content-type", "application/json".into())],
            Body::from("{}"),
        ),
        Err(e) => e.into_response(),
    }
}

pub async fn token(State(state): St, headers: HeaderMap, uri: Uri) -> Response {
    let Some(auth) = &state.auth else {
        return ApiError::new(Code::Unsupported, "this registry has no authentication")
            .into_response();
    };
    let scopes: Vec<String> = form_pairs(uri.query().unwrap_or(""))
        .into_iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    match auth.issue_token(&headers, &scopes).await {
        Ok(body) => respond(
            StatusCode::OK,
            &[("content-type", "application/json".into())],
            Body::from(body.to_string()),
        ),
        Err(e) => e.into_response(),
    }
}

/// Query pairs in order, repeated keys kept.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? << 4 | hex(bytes[i + 2])?))
            .flatten();
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn dispatch(
    State(state): St,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = uri.path().to_owned();
    let result = match endpoint(&path) {
        None => Err(ApiError::new(
            Code::Unsupported,
            format!("no endpoint {path}"),
        )),
        Some(endpoint) => route(&state, &method, endpoint, &query, &headers, body).await,
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn route(
    state: &Arc<AppState>,
    method: &Method,
    endpoint: Endpoint<'_>,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let name = match endpoint {
        Endpoint::Blob(n, _)
        | Endpoint::Manifest(n, _)
        | Endpoint::UploadStart(n)
        | Endpoint::Upload(n, _)
        | Endpoint::Tags(n)
        | Endpoint::Referrers(n, _) => n,
    };
    check_name(name)?;
    let action = if matches!(*method, Method::GET | Method::HEAD) {
        Action::Pull
    } else {
        Action::Push
    };
    authorize(state, headers, Some(name), action).await?;
    let unsupported = || {
        Err(ApiError::new(
            Code::Unsupported,
            format!("{method} is not supported here"),
        ))
    };
    match (endpoint, method.clone()) {
        (Endpoint::Blob(_, digest), Method::GET) => {
            get_blob(state, name, digest, headers, false).await
        }
        (Endpoint::Blob(_, digest), Method::HEAD) => {
            get_blob(state, name, digest, headers, true).await
        }
        (Endpoint::Blob(_, digest), Method::DELETE) => delete_blob(state, name, digest).await,
        (Endpoint::UploadStart(_), Method::POST) => {
            start_upload(state, name, query, headers, body).await
        }
        (Endpoint::Upload(_, id), Method::GET) => upload_status(state, name, id).await,
        (Endpoint::Upload(_, id), Method::PATCH) => {
            patch_upload(state, name, id, headers, body).await
        }
        (Endpoint::Upload(_, id), Method::PUT) => {
            finish_upload(state, name, id, query, headers, body).await
        }
        (Endpoint::Upload(_, id), Method::DELETE) => cancel_upload(state, name, id).await,
        (Endpoint::Manifest(_, reference), Method::GET) => {
            get_manifest(state, name, reference, false).await
        }
        (Endpoint::Manifest(_, reference), Method::HEAD) => {
            get_manifest(state, name, reference, true).await
        }
        (Endpoint::Manifest(_, reference), Method::PUT) => {
            put_manifest(state, name, reference, headers, body).await
        }
        (Endpoint::Manifest(_, reference), Method::DELETE) => {
            delete_manifest(state, name, reference).await
        }
        (Endpoint::Tags(_), Method::GET) => list_tags(state, name, query).await,
        (Endpoint::Referrers(_, digest), Method::GET) => {
            referrers(state, name, digest, query).await
        }
        _ => unsupported(),
    }
}

// Blobs.

/// `bytes=START-END`, `bytes=START-` or the suffix `bytes=-N` (the last
/// N bytes, the whole blob when N exceeds it, as RFC 9110 has it) against a
/// blob of `size` bytes.
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    if start.trim().is_empty() {
        let suffix: u64 = end.trim().parse().ok()?;
        let last = size.checked_sub(1)?;
        return (suffix > 0).then(|| (size - suffix.min(size), last));
    }
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = match end.trim() {
        "" => size.checked_sub(1)?,
        end => end.parse::<u64>().ok()?.min(size.checked_sub(1)?),
    };
    (start <= end && start < size).then_some((start, end))
}

/// Layers a manifest may name without their blobs being pushed: their
/// content is fetched from elsewhere (the descriptor's `urls`), as OCI's
/// non-distributable layers and Docker's foreign layers are.
fn non_distributable(descriptor: &serde_json::Value) -> bool {
    descriptor
        .get("mediaType")
        .and_then(|m| m.as_str())
        .is_some_and(|m| {
            m.starts_with("application/vnd.oci.image.layer.nondistributable.")
                || m == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        })
}

async fn get_blob(
    state: &AppState,
    name: &str,
    digest: &str,
    headers: &HeaderMap,
    head: bool,
) -> ApiResult<Response> {
    check_digest(digest)?;
    let size = state.storage.blob_size(name, digest).ok_or_else(|| {
        ApiError::new(Code::BlobUnknown, format!("blob {digest} is not in {name}"))
    })?;
    let mut common = vec![
        ("docker-content-digest", digest.to_owned()),
        ("content-type", "application/octet-stream".to_owned()),
        ("accept-ranges", "bytes".to_owned()),
        ("etag", format!("\"{digest}\"")),
    ];
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(value) => match parse_range(value, size) {
            Some(range) => Some(range),
            None => {
                return Ok(respond(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    &[("content-range", format!("bytes */{size}"))],
                    Body::empty(),
                ));
            }
        },
    };
    let (start, length, status) = match range {
        Some((start, end)) => {
            common.push(("content-range", format!("bytes {start}-{end}/{size}")));
            (start, end - start + 1, StatusCode::PARTIAL_CONTENT)
        }
        None => (0, size, StatusCode::OK),
    };
    common.push(("content-length", length.to_string()));
    if head {
        return Ok(respond(status, &common, Body::empty()));
    }
    let path = state
        .storage
        .blob_path(digest)
        .map_err(ApiError::internal)?;
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(ApiError::internal)?;
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(ApiError::internal)?;
    }
    let sent = state.metrics.sent.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(length), 256 << 10)
        .inspect_ok(move |chunk| {
            sent.inc_by(chunk.len() as u64);
        });
    Ok(respond(status, &common, Body::from_stream(stream)))
}

async fn delete_blob(state: &Arc<AppState>, name: &str, digest: &str) -> ApiResult<Response> {
    check_digest(digest)?;
    let (st, n, d) = (state.clone(), name.to_owned(), digest.to_owned());
    if blocking(move || st.storage.unlink_blob(&n, &d)).await? {
        Ok(respond(StatusCode::ACCEPTED, &[], Body::empty()))
    } else {
        Err(ApiError::new(
            Code::BlobUnknown,
            format!("blob {digest} is not in {name}"),
        ))
    }
}

// Uploads.

fn upload_headers(name: &str, id: &str, size: u64) -> Vec<(&'static str, String)> {
    vec![
        ("location", format!("/v2/{name}/blobs/uploads/{id}")),
        ("range", format!("0-{}", size.saturating_sub(1))),
        ("docker-upload-uuid", id.to_owned()),
        ("content-length", "0".to_owned()),
    ]
}

fn blob_created(name: &str, digest: &str) -> Response {
    respond(
        StatusCode::CREATED,
        &[
            ("location", format!("/v2/{name}/blobs/{digest}")),
            ("docker-content-digest", digest.to_owned()),
            ("content-length", "0".to_owned()),
        ],
        Body::empty(),
    )
}

async fn start_upload(
    state: &Arc<AppState>,
    name: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    // Cross-repository mount: 201 when the source has the blob and the
    // client may read it there; otherwise an ordinary upload starts (202).
    if let (Some(digest), Some(from)) = (query.get("mount"), query.get("from")) {
        check_digest(digest)?;
        check_name(from)?;
        let readable = authorize(state, headers, Some(from), Action::Pull)
            .await
            .is_ok();
        if readable && state.storage.blob_size(from, digest).is_some() {
            let (st, n, d) = (state.clone(), name.to_owned(), digest.clone());
            blocking(move || st.storage.link_blob(&n, &d)).await?;
            return Ok(blob_created(name, digest));
        }
    }
    let (st, n) = (state.clone(), name.to_owned());
    let id = blocking(move || st.storage.new_upload(&n)).await?;
    if let Some(digest) = query.get("digest") {
        // The whole blob in this one request.
        return finish(state, name, &id, digest, headers, body).await;
    }
    Ok(respond(
        StatusCode::ACCEPTED,
        &upload_headers(name, &id, 0),
        Body::empty(),
    ))
}

/// A storage error on upload `id`: its files gone (another request
/// finished or cancelled it meanwhile) is the client's BLOB_UPLOAD_UNKNOWN,
/// not the server's fault.
fn upload_error(id: &str, e: std::io::Error) -> ApiError {
    if e.kind() == std::io::ErrorKind::NotFound {
        upload_unknown(id)
    } else {
        ApiError::internal(e)
    }
}

fn upload_unknown(id: &str) -> ApiError {
    ApiError::new(
        Code::BlobUploadUnknown,
        format!("there is no upload {id} here"),
    )
}

async fn upload_status(state: &AppState, name: &str, id: &str) -> ApiResult<Response> {
    let data = state
        .storage
        .upload_data(name, id)
        .ok_or_else(|| upload_unknown(id))?;
    let session = state.uploads.session(id);
    let mut session = session.lock().await;
    session.load(&data).await.map_err(|e| upload_error(id, e))?;
    Ok(respond(
        StatusCode::NO_CONTENT,
        &upload_headers(name, id, session.size()),
        Body::empty(),
    ))
}

/// Appends a request body to upload `id`, honouring `Content-Range`: a
/// chunk must start where the upload ends (else 416, with the `Range` the
/// client should resume from).
async fn append(
    state: &AppState,
    name: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<u64> {
    let data = state
        .storage
        .upload_data(name, id)
        .ok_or_else(|| upload_unknown(id))?;
    let session = state.uploads.session(id);
    let mut session = session.lock().await;
    session.load(&data).await.map_err(|e| upload_error(id, e))?;
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(range) = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
    {
        let parsed = range
            .trim()
            .trim_start_matches("bytes ")
            .split_once('-')
            .and_then(|(s, e)| Some((s.parse::<u64>().ok()?, e.parse::<u64>().ok()?)));
        let in_order = parsed.is_some_and(|(start, end)| {
            start == session.size() && end >= start && length.is_none_or(|l| l == end - start + 1)
        });
        if !in_order {
            let mut error = ApiError::new(
                Code::RangeInvalid,
                format!(
                    "chunk {range} does not continue the upload, which has {} bytes",
                    session.size()
                ),
            );
            error
                .message
                .push_str("; resume from the Range header's end");
            return Err(error);
        }
    }
    let before = session.size();
    let appended = session.append(&data, body).await;
    state
        .metrics
        .received
        .inc_by(session.size().saturating_sub(before));
    match appended {
        Ok(_) => Ok(session.size()),
        Err(AppendError::Client(e)) => Err(ApiError::new(
            Code::BlobUploadInvalid,
            format!(
                "the upload stream failed after {} bytes: {e}",
                session.size()
            ),
        )),
        Err(AppendError::Disk(e)) => Err(upload_error(id, e)),
    }
}

async fn patch_upload(
    state: &AppState,
    name: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let size = append(state, name, id, headers, body).await?;
    Ok(respond(
        StatusCode::ACCEPTED,
        &upload_headers(name, id, size),
        Body::empty(),
    ))
}

async fn finish_upload(
    state: &Arc<AppState>,
    name: &str,
    id: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let digest = query
        .get("digest")
        .ok_or_else(|| ApiError::new(Code::DigestInvalid, "closing an upload needs ?digest="))?;
    finish(state, name, id, digest, headers, body).await
}

/// Appends the last chunk (if any), checks the digest and commits the blob.
/// A mismatch discards the upload: nothing is stored under either digest.
async fn finish(
    state: &Arc<AppState>,
    name: &str,
    id: &str,
    digest: &str,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if split_digest(digest).is_none() {
        discard(state, id).await;
        check_digest(digest)?;
    }
    append(state, name, id, headers, body).await?;
    let session = state.uploads.session(id);
    // Held until the blob is committed: a PATCH racing this close waits,
    // then finds the upload gone, and cannot add bytes after the check.
    let held = session.lock().await;
    let actual = if is_sha256_digest(digest) {
        held.digest()
    } else {
        // Uploads are hashed with sha256 as they arrive; another algorithm
        // is asked for only now, so the data is read once more for it.
        let data = state
            .storage
            .upload_data(name, id)
            .ok_or_else(|| upload_unknown(id))?;
        let want = digest.to_owned();
        blocking(move || {
            let mut hasher = Hasher::for_digest(&want).expect("checked above");
            let mut file = std::fs::File::open(&data)?;
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = std::io::Read::read(&mut file, &mut buf)?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(hasher.digest());
                }
                hasher.update(&buf[..n]);
            }
        })
        .await?
    };
    if actual != digest {
        drop(held);
        discard(state, id).await;
        return Err(ApiError::new(
            Code::DigestInvalid,
            format!("the upload's content has digest {actual}, not {digest}"),
        ));
    }
    let (st, n, i, d) = (
        state.clone(),
        name.to_owned(),
        id.to_owned(),
        digest.to_owned(),
    );
    let committed = blocking(move || st.storage.commit_upload(&n, &i, &d)).await;
    drop(held);
    committed?;
    state.uploads.forget(id);
    state.metrics.pushed.inc();
    Ok(blob_created(name, digest))
}

async fn discard(state: &Arc<AppState>, id: &str) {
    state.uploads.forget(id);
    let (st, i) = (state.clone(), id.to_owned());
    let _ = blocking(move || st.storage.delete_upload(&i)).await;
}

async fn cancel_upload(state: &Arc<AppState>, name: &str, id: &str) -> ApiResult<Response> {
    state
        .storage
        .upload_data(name, id)
        .ok_or_else(|| upload_unknown(id))?;
    discard(state, id).await;
    Ok(respond(StatusCode::NO_CONTENT, &[], Body::empty()))
}

// Manifests.

/// The digest a tag or digest reference names in `name`.
fn resolve(state: &AppState, name: &str, reference: &str) -> ApiResult<String> {
    let unknown = || {
        ApiError::new(
            Code::ManifestUnknown,
            format!("manifest {reference} is not in {name}"),
        )
    };
    // A reference that names nothing is unknown whatever its form, as the
    // distribution spec's conformance suite asks (a malformed one included).
    if reference.contains(':') {
        if split_digest(reference).is_some() && state.storage.has_manifest(name, reference) {
            return Ok(reference.to_owned());
        }
        return Err(unknown());
    }
    if !is_valid_tag(reference) {
        return Err(unknown());
    }
    state
        .storage
        .resolve_tag(name, reference)
        .ok_or_else(unknown)
}

async fn get_manifest(
    state: &Arc<AppState>,
    name: &str,
    reference: &str,
    head: bool,
) -> ApiResult<Response> {
    let digest = resolve(state, name, reference)?;
    let (st, n, d) = (state.clone(), name.to_owned(), digest.clone());
    let found = blocking(move || Ok(st.storage.manifest(&n, &d))).await?;
    let (media_type, bytes) = found.ok_or_else(|| {
        ApiError::new(
            Code::ManifestUnknown,
            format!("manifest {reference} is not in {name}"),
        )
    })?;
    let headers = [
        ("content-type", media_type),
        ("docker-content-digest", digest),
        ("content-length", bytes.len().to_string()),
    ];
    let body = if head {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    Ok(respond(StatusCode::OK, &headers, body))
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::ManifestInvalid, message)
}

/// How much of a too-large manifest is read and thrown away before the 413.
/// A client writes its whole body before it reads the answer; if the
/// connection closed under it with bytes unread, the kernel's reset could
/// reach it first and it would see a broken pipe instead of the error. Past
/// this much the client is sending nonsense and the reset is what it gets.
const MAX_DISCARDED_BYTES: usize = 64 << 20;

/// The manifest's bytes, or TooLarge once they pass [`MAX_MANIFEST_BYTES`].
async fn read_manifest(body: Body) -> ApiResult<Bytes> {
    let too_large = || {
        ApiError::new(
            Code::TooLarge,
            format!("manifests are limited to {MAX_MANIFEST_BYTES} bytes"),
        )
    };
    let broken = |e: axum::Error| invalid(format!("reading the manifest: {e}"));
    let mut stream = body.into_data_stream();
    let mut bytes = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(broken)?;
        if bytes.len() + chunk.len() > MAX_MANIFEST_BYTES {
            let mut seen = bytes.len() + chunk.len();
            while seen <= MAX_MANIFEST_BYTES + MAX_DISCARDED_BYTES {
                match stream.next().await {
                    Some(Ok(chunk)) => seen += chunk.len(),
                    Some(Err(_)) | None => break,
                }
            }
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes.freeze())
}

async fn put_manifest(
    state: &Arc<AppState>,
    name: &str,
    reference: &str,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let tag = if reference.contains(':') {
        check_digest(reference)?;
        None
    } else if is_valid_tag(reference) {
        Some(reference.to_owned())
    } else {
        return Err(invalid(format!("{reference:?} is not a valid tag")));
    };
    let bytes = read_manifest(body).await?;
    // A manifest pushed by digest is named with that digest's algorithm.
    let mut hasher = match &tag {
        None => Hasher::for_digest(reference).expect("checked above"),
        Some(_) => Hasher::sha256(),
    };
    hasher.update(&bytes);
    let digest = hasher.digest();
    if tag.is_none() && reference != digest {
        return Err(ApiError::new(
            Code::DigestInvalid,
            format!("the manifest's digest is {digest}, not {reference}"),
        ));
    }
    let document: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("the manifest is not JSON: {e}")))?;
    if !document.is_object() {
        return Err(invalid("the manifest is not a JSON object"));
    }
    let declared = document.get("mediaType").and_then(|m| m.as_str());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim());
    if let (Some(declared), Some(content_type)) = (declared, content_type)
        && declared != content_type
    {
        return Err(invalid(format!(
            "the manifest says its mediaType is {declared} but was sent as {content_type}"
        )));
    }
    let is_index = document.get("manifests").is_some();
    let media_type = declared
        .or(content_type)
        .unwrap_or(if is_index {
            MANIFEST_TYPES[1]
        } else {
            MANIFEST_TYPES[0]
        })
        .to_owned();
    if !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(invalid(format!(
            "unsupported manifest media type {media_type}"
        )));
    }
    if document.get("schemaVersion").and_then(|v| v.as_u64()) != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }

    // Everything the manifest names must already be here.
    let descriptor_digest = |d: &serde_json::Value| -> ApiResult<String> {
        let digest = d
            .get("digest")
            .and_then(|v| v.as_str())
            .ok_or_else(|| invalid("a descriptor has no digest"))?;
        check_digest(digest)?;
        Ok(digest.to_owned())
    };
    let listed = |key: &str| -> Vec<serde_json::Value> {
        document
            .get(key)
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    };
    if is_index {
        for m in listed("manifests") {
            let d = descriptor_digest(&m)?;
            if !state.storage.has_manifest(name, &d) {
                return Err(ApiError::new(
                    Code::ManifestBlobUnknown,
                    format!("manifest {d} named by the index is not in {name}"),
                ));
            }
        }
    } else {
        let config = document
            .get("config")
            .ok_or_else(|| invalid("the manifest has no config"))?;
        if !document.get("layers").is_some_and(|l| l.is_array()) {
            return Err(invalid("the manifest has no layers array"));
        }
        let layers = listed("layers");
        for (i, d) in std::iter::once(config.clone()).chain(layers).enumerate() {
            // The config is always pushed; only layers may live elsewhere.
            let elsewhere = i > 0 && non_distributable(&d);
            let d = descriptor_digest(&d)?;
            if !elsewhere && state.storage.blob_size(name, &d).is_none() {
                return Err(ApiError::new(
                    Code::ManifestBlobUnknown,
                    format!("blob {d} named by the manifest is not in {name}"),
                ));
            }
        }
    }

    let subject = match document.get("subject") {
        Some(s) => Some(descriptor_digest(s)?),
        None => None,
    };
    let referrer = subject.as_ref().map(|_| {
        let artifact_type = document
            .get("artifactType")
            .or_else(|| document.get("config").and_then(|c| c.get("mediaType")))
            .cloned();
        let mut descriptor = serde_json::json!({
            "mediaType": media_type,
            "digest": digest,
            "size": bytes.len(),
        });
        if let Some(t) = artifact_type {
            descriptor["artifactType"] = t;
        }
        if let Some(a) = document.get("annotations") {
            descriptor["annotations"] = a.clone();
        }
        descriptor
    });

    let (st, n, d, mt, sub) = (
        state.clone(),
        name.to_owned(),
        digest.clone(),
        media_type.clone(),
        subject.clone(),
    );
    blocking(move || {
        st.storage.put_manifest(
            &n,
            &d,
            &bytes,
            &mt,
            tag.as_deref(),
            sub.as_deref().zip(referrer.as_ref()),
        )
    })
    .await?;
    let mut headers = vec![
        ("location", format!("/v2/{name}/manifests/{digest}")),
        ("docker-content-digest", digest),
        ("content-length", "0".to_owned()),
    ];
    if let Some(subject) = subject {
        headers.push(("oci-subject", subject));
    }
    Ok(respond(StatusCode::CREATED, &headers, Body::empty()))
}

async fn delete_manifest(
    state: &Arc<AppState>,
    name: &str,
    reference: &str,
) -> ApiResult<Response> {
    let unknown = || {
        ApiError::new(
            Code::ManifestUnknown,
            format!("manifest {reference} is not in {name}"),
        )
    };
    let (st, n, r) = (state.clone(), name.to_owned(), reference.to_owned());
    let deleted = if reference.contains(':') {
        if split_digest(reference).is_none() {
            return Err(unknown());
        }
        blocking(move || st.storage.delete_manifest(&n, &r)).await?
    } else {
        if !is_valid_tag(reference) {
            return Err(unknown());
        }
        blocking(move || st.storage.delete_tag(&n, &r)).await?
    };
    if deleted {
        Ok(respond(StatusCode::ACCEPTED, &[], Body::empty()))
    } else {
        Err(unknown())
    }
}

// Discovery.

async fn list_tags(
    state: &Arc<AppState>,
    name: &str,
    query: &HashMap<String, String>,
) -> ApiResult<Response> {
    let tags = state.storage.tags(name).ok_or_else(|| {
        ApiError::new(Code::NameUnknown, format!("there is no repository {name}"))
    })?;
    let n = match query.get("n") {
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ApiError::new(Code::Unsupported, format!("n={n} is not a number")))?,
        ),
        None => None,
    };
    let after: Vec<String> = match query.get("last") {
        Some(last) => tags.into_iter().filter(|t| t > last).collect(),
        None => tags,
    };
    let page: Vec<String> = after
        .iter()
        .take(n.unwrap_or(usize::MAX))
        .cloned()
        .collect();
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if let (Some(n), Some(last)) = (n, page.last())
        && after.len() > page.len()
    {
        headers.push((
            "link",
            format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\""),
        ));
    }
    let body = serde_json::json!({"name": name, "tags": page});
    Ok(respond(
        StatusCode::OK,
        &headers,
        Body::from(body.to_string()),
    ))
}

async fn referrers(
    state: &Arc<AppState>,
    name: &str,
    digest: &str,
    query: &HashMap<String, String>,
) -> ApiResult<Response> {
    check_digest(digest)?;
    let mut found = state.storage.referrers(name, digest);
    let mut headers = vec![(
        "content-type",
        "application/vnd.oci.image.index.v1+json".to_owned(),
    )];
    if let Some(wanted) = query.get("artifactType") {
        found.retain(|d| d.get("artifactType").and_then(|t| t.as_str()) == Some(wanted));
        headers.push(("oci-filters-applied", "artifactType".to_owned()));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": found,
    });
    Ok(respond(
        StatusCode::OK,
        &headers,
        Body::from(index.to_string()),
    ))
}
