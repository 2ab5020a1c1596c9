//! The front end of examples/shop: the page, and a doorway to the API.
//!
//! Files come from `/static` in the guest's own filesystem, where the image
//! mounts its bundle (see examples/shop/front/berth.toml): `GET /` is
//! `/static/index.html`, `GET /app.js` is `/static/app.js`, with a content
//! type by extension. Anything under `/api/` is passed on to the api service
//! (`/api/products?x=1` → `http://api/products?x=1`, method and body kept)
//! and its status, content type and body passed back, so the page's scripts
//! talk to the one origin they were loaded from. `GET /healthz` answers `ok`
//! for readiness probes.

use std::io::ErrorKind;

use wstd::http::{Body, Client, Error, HeaderValue, Method, Request, Response, StatusCode};
use wstd::time::Duration;

const CONTENT_TYPE: &str = "content-type";

/// Where the image's files are mounted in the guest.
const STATIC_ROOT: &str = "/static";

/// The api service, by its bare service name (berth routes it in-process).
const API_ORIGIN: &str = "http://api";

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let path = request.uri().path();
    let response = if path == "/api" || path.starts_with("/api/") {
        proxy(request).await
    } else if request.method() != Method::GET {
        text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n")
    } else if path == "/healthz" {
        text(StatusCode::OK, "ok\n")
    } else {
        serve_file(path)
    };
    Ok(response)
}

/// Answers with the file under [`STATIC_ROOT`] that `path` names.
fn serve_file(path: &str) -> Response<Body> {
    // Decode first, so `%2e%2e` cannot slip past the `..` check.
    let Some(path) = percent_decode(path) else {
        return text(StatusCode::BAD_REQUEST, "malformed path\n");
    };
    // The sandbox only grants /static, so `..` could not escape it anyway;
    // refusing it keeps the answer a plain 400 rather than an odd 404.
    if path.contains("..") || path.contains('\0') {
        return text(StatusCode::BAD_REQUEST, "paths may not contain `..`\n");
    }
    let file = if path.ends_with('/') {
        format!("{STATIC_ROOT}{path}index.html")
    } else {
        format!("{STATIC_ROOT}{path}")
    };
    match std::fs::read(&file) {
        Ok(contents) => reply(StatusCode::OK, content_type(&file), contents.into()),
        // A directory named without its trailing `/` is not a file either.
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::IsADirectory) => {
            text(StatusCode::NOT_FOUND, "not found\n")
        }
        Err(e) => {
            eprintln!("reading {file}: {e}");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not read the file\n",
            )
        }
    }
}

fn content_type(file: &str) -> &'static str {
    let extension = file.rsplit_once('.').map_or("", |(_, ext)| ext);
    match extension.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// Passes the request on to the api service and its answer back.
async fn proxy(request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("", |pq| pq.as_str());
    // Strip `/api`; what remains is `/rest…`, `?query` or nothing.
    let rest = path_and_query
        .strip_prefix("/api")
        .unwrap_or(path_and_query);
    let url = if rest.starts_with('/') {
        format!("{API_ORIGIN}{rest}")
    } else {
        format!("{API_ORIGIN}/{rest}")
    };
    let mut outbound = Request::builder().method(parts.method).uri(&url);
    for name in [CONTENT_TYPE, "accept"] {
        if let Some(value) = parts.headers.get(name) {
            outbound = outbound.header(name, value);
        }
    }
    let Ok(outbound) = outbound.body(body) else {
        return text(StatusCode::BAD_REQUEST, "malformed request\n");
    };

    // The api waits up to 5 s for stock itself; give it a little longer so
    // its own 502 reaches the page rather than ours.
    let mut client = Client::new();
    client.set_connect_timeout(Duration::from_secs(2));
    client.set_first_byte_timeout(Duration::from_secs(8));
    let response = match client.send(outbound).await {
        Ok(response) => response,
        Err(e) => {
            eprintln!("{url}: {e:?}");
            return text(StatusCode::BAD_GATEWAY, "the api service did not answer\n");
        }
    };
    let status = response.status();
    let content_type = response.headers().get(CONTENT_TYPE).cloned();
    let mut body = response.into_body();
    // Read the whole answer before replying: a failure half-way then becomes
    // a 502 instead of a truncated 200.
    let contents = match body.contents().await {
        Ok(contents) => contents.to_vec(),
        Err(e) => {
            eprintln!("{url}: reading the answer: {e:?}");
            return text(
                StatusCode::BAD_GATEWAY,
                "the api service's answer broke off\n",
            );
        }
    };
    let mut reply = Response::new(contents.into());
    *reply.status_mut() = status;
    if let Some(content_type) = content_type {
        reply.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    reply
}

/// Undoes `%XX` escapes; `None` for a bad escape or a result that is not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    reply(status, "text/plain; charset=utf-8", message.into())
}

fn reply(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
