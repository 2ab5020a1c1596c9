//! The stock service of examples/shop: how many of each item are on the shelf.
//!
//! `GET /stock` answers a JSON object of item → units, such as
//! `{"kettle":0,"mug":40,"teapot":12}`. Each count comes from an env var
//! named after the item (`STOCK_TEAPOT=3`) when the pod sets one, so a
//! manifest can change the stock without a rebuild; otherwise from
//! [`DEFAULT_STOCK`]. `GET /healthz` answers `ok` for readiness probes.

use serde_json::{Map, Value, json};
use wstd::http::{Body, Error, HeaderValue, Method, Request, Response, StatusCode};

const CONTENT_TYPE: &str = "content-type";

/// The items on sale and their counts when no env var sets them.
const DEFAULT_STOCK: [(&str, u64); 3] = [("teapot", 12), ("mug", 40), ("kettle", 0)];

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/stock") => stock(),
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        (_, "/stock" | "/healthz") => error(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
        _ => error(StatusCode::NOT_FOUND, "no such path"),
    };
    Ok(response)
}

/// The counts, each from its env var or the default.
fn stock() -> Response<Body> {
    let mut counts = Map::new();
    for (item, default) in DEFAULT_STOCK {
        let var = format!("STOCK_{}", item.to_ascii_uppercase());
        let count = match std::env::var(&var) {
            Ok(value) => match value.trim().parse::<u64>() {
                Ok(n) => n,
                // A typo in the manifest should be seen, not hidden behind
                // the default: fail the request and say which variable.
                Err(_) => {
                    eprintln!("{var}={value:?} is not a whole number");
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("{var} is not a whole number"),
                    );
                }
            },
            Err(_) => default,
        };
        counts.insert(item.to_owned(), count.into());
    }
    reply(
        StatusCode::OK,
        "application/json",
        Value::Object(counts).to_string(),
    )
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    reply(
        status,
        "application/json",
        json!({ "error": message }).to_string(),
    )
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
